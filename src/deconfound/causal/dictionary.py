"""The confounder dictionary: context prototypes Z (N×D) and their prior P(z) (N), as an artifact.

Saved as one safetensors file: tensors ``centres`` and ``prior``, and a JSON metadata record
(backbone, weights file hash, masking, number of clusters, data set fingerprint, ...) in the
file's header. Loading checks shapes, values and, when asked, the width a model expects.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from deconfound.errors import DeconfoundError
from deconfound.io import atomic_write

FORMAT = "deconfound-dictionary/1"


@dataclass
class ConfounderDictionary:
    """Cluster centres of masked-context embeddings and each cluster's share of the training set.

    Args:
        centres: (N, D) prototypes z_i.
        prior: (N,) P(z_i) = |cluster i| / |train|, summing to one.
        meta: how the dictionary was made (free-form, JSON-serialisable).
    """

    centres: torch.Tensor
    prior: torch.Tensor
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        problem = _problem(self.centres, self.prior)
        if problem:
            raise DeconfoundError(f"invalid confounder dictionary: {problem}")

    @property
    def size(self) -> int:
        """N, the number of prototypes."""
        return self.centres.shape[0]

    @property
    def dim(self) -> int:
        """D, the width of each prototype."""
        return self.centres.shape[1]

    def save(self, path: str | Path) -> Path:
        """Write the dictionary atomically to ``path`` (a ``.safetensors`` file)."""
        tensors = {"centres": self.centres.float().contiguous(), "prior": self.prior.float()}
        header = {"format": FORMAT, "meta": json.dumps(self.meta)}
        return atomic_write(path, lambda tmp: save_file(tensors, str(tmp), metadata=header))

    @classmethod
    def load(cls, path: str | Path, *, expected_dim: int | None = None) -> ConfounderDictionary:
        """Read a dictionary; with ``expected_dim``, refuse one whose width differs."""
        path = Path(path)
        if not path.is_file():
            raise DeconfoundError(
                f"dictionary {path} not found; build it with "
                "`deconfound dictionary build` or fix the path"
            )
        try:
            tensors = load_file(str(path))
            with safe_open(str(path), "pt") as f:
                header = f.metadata() or {}
        except (SafetensorError, OSError, ValueError) as e:
            raise DeconfoundError(f"{path}: not a safetensors dictionary ({e})") from None
        if header.get("format") != FORMAT or not {"centres", "prior"} <= set(tensors):
            raise DeconfoundError(
                f"{path}: not a confounder dictionary (format "
                f"{header.get('format')!r}, tensors {sorted(tensors)})"
            )
        problem = _problem(tensors["centres"], tensors["prior"])
        if problem:
            raise DeconfoundError(f"{path}: {problem}; rebuild the dictionary")
        centres = tensors["centres"]
        if expected_dim is not None and centres.shape[1] != expected_dim:
            raise DeconfoundError(
                f"{path}: dictionary width is {centres.shape[1]} but the model expects "
                f"{expected_dim}; rebuild it with the scene backbone the model was made for"
            )
        try:
            meta = json.loads(header.get("meta", "{}"))
        except json.JSONDecodeError as e:
            raise DeconfoundError(f"{path}: its metadata is not JSON ({e}); rebuild it") from None
        return cls(centres, tensors["prior"], meta)


def _problem(centres: torch.Tensor, prior: torch.Tensor) -> str | None:
    if centres.ndim != 2 or centres.shape[0] == 0:
        return f"centres must be a non-empty (N, D) matrix, got shape {tuple(centres.shape)}"
    if prior.shape != (centres.shape[0],):
        return f"prior has shape {tuple(prior.shape)}, expected ({centres.shape[0]},)"
    if not (torch.isfinite(centres).all() and torch.isfinite(prior).all()):
        return "it holds NaN or infinite values"
    if (prior < 0).any() or abs(float(prior.sum()) - 1.0) > 1e-4:
        return f"prior must be non-negative and sum to 1 (sums to {float(prior.sum()):.6f})"
    return None

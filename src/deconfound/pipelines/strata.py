"""Confounder strata of any split: each sample's context cluster in a confounder dictionary.

A sample's stratum is the nearest prototype of its person-masked context, embedded exactly as
the dictionary's were (backbone, weights, image size and masking from the dictionary's
metadata). Methods that need a training sample's stratum, and the re-weighted validation
metric, read these, never a data set's hidden confounder. Embeddings are cached beside the
dictionary: the training split's in ``<dictionary>.features/`` (where the build left them),
other samples' in ``<dictionary>.strata/<their fingerprint>/``.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np

from deconfound.causal.dictionary import ConfounderDictionary
from deconfound.config import Config, DictionaryConfig
from deconfound.data.sample import DatasetInfo, Sample
from deconfound.errors import DeconfoundError
from deconfound.models.weights import file_sha256, is_file_spec
from deconfound.pipelines.dictionary import (
    check_settings,
    embed_contexts,
    fingerprint,
    scene_backbone,
)


def assign_clusters(features: np.ndarray, centres: np.ndarray) -> np.ndarray:
    """The index of each row's nearest centre (Euclidean, as K-means assigns)."""
    c = np.asarray(centres, dtype=np.float64)
    norms = (c**2).sum(axis=1)
    out = np.empty(len(features), dtype=np.int64)
    for start in range(0, len(features), 4096):
        x = np.asarray(features[start : start + 4096], dtype=np.float64)
        out[start : start + len(x)] = np.argmin(norms[None, :] - 2 * x @ c.T, axis=1)
    return out


def embedding_settings(
    cfg: Config, loaded: ConfounderDictionary | None, path: str | Path | None
) -> tuple[DictionaryConfig, list[str]]:
    """How to embed the masked contexts: ``cfg.dictionary``, or as the dictionary was built
    (backbone, weights, masking, size, seed from its metadata); notes on what was assumed."""
    d = copy.deepcopy(cfg.dictionary)
    check_settings(d)
    if loaded is None:
        if d.weights and is_file_spec(d.weights) and not Path(d.weights).is_file():
            raise DeconfoundError(
                f"dictionary.weights={d.weights} (the scene backbone's weights) not found; give "
                "the file, name pretrained weights (dictionary.backbone=mobilenet_v2 "
                "dictionary.weights=IMAGENET1K_V1), or give a built dictionary: --dictionary PATH"
            )
        return d, []
    meta, notes = loaded.meta, []
    for key in ("backbone", "weights", "image_size", "mask_fill", "seed"):
        if key in meta:
            setattr(d, key, meta[key])
        else:
            notes.append(
                f"{path}'s metadata lacks '{key}'; used dictionary.{key}={getattr(d, key)}"
            )
    if d.weights and meta.get("weights_sha256"):
        weights = Path(d.weights)
        if not weights.is_file():
            raise DeconfoundError(
                f"{path} was built with scene backbone weights {weights}, which are not found; "
                "put that file back or rebuild the dictionary"
            )
        if file_sha256(weights) != meta["weights_sha256"]:
            raise DeconfoundError(
                f"{weights} has changed since {path} was built with it (another SHA-256); "
                "rebuild the dictionary with `deconfound dictionary build`"
            )
    return d, notes


def dictionary_strata(
    cfg: Config,
    samples: dict[str, list[Sample]],
    info: DatasetInfo,
    *,
    progress: bool = True,
    described: bool = False,
) -> tuple[dict[str, np.ndarray], int]:
    """Each split's strata (its samples' nearest prototypes in ``cfg.model.dictionary``) and
    the number of prototypes. With ``described``, a dictionary whose metadata does not say how
    it was embedded (not made by ``deconfound dictionary build``) is an error rather than
    embedded as ``cfg.dictionary`` says."""
    path = Path(str(cfg.model.dictionary))
    loaded = ConfounderDictionary.load(path)
    if described and "backbone" not in loaded.meta:
        raise DeconfoundError(
            f"{path}'s metadata does not say how its contexts were embedded; build it with "
            "`deconfound dictionary build`"
        )
    d, _ = embedding_settings(cfg, loaded, path)
    backbone = scene_backbone(d)
    if loaded.dim != backbone.num_features:
        raise DeconfoundError(
            f"{path}: dictionary width is {loaded.dim} but its scene backbone {d.backbone} "
            f"embeds {backbone.num_features}-d features; rebuild it with `deconfound "
            "dictionary build`"
        )
    embed_cfg = copy.deepcopy(cfg)
    embed_cfg.dictionary = d
    centres = loaded.centres.numpy()
    strata = {}
    for split, split_samples in samples.items():
        features, _ = embed_contexts(
            embed_cfg,
            split_samples,
            info,
            backbone,
            _cache(loaded, path, split_samples, cfg.data.root),
            split=split,
            progress=progress,
        )
        strata[split] = assign_clusters(features, centres)
    return strata, loaded.size


def _cache(dictionary: ConfounderDictionary, path: Path, samples: list[Sample], root: str) -> Path:
    """Where a split's embeddings are cached: the dictionary's own training samples' where the
    build left them, any other samples in a folder of their own (a cache holds one setting)."""
    mark = fingerprint(samples, root)
    if mark == dictionary.meta.get("dataset_fingerprint"):
        return Path(f"{path}.features")
    return Path(f"{path}.strata") / mark[:16]

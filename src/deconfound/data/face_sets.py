"""What the facial-expression readers share (:mod:`~deconfound.data.mixbasic`,
:mod:`~deconfound.data.rafdb`, :mod:`~deconfound.data.affectnet`,
:mod:`~deconfound.data.fer2013`): their splits, the carving of a validation split out of the
training data, and reading a text file's lines. In each of those sets a sample is one face
picture; the face box is the whole picture where the release ships aligned crops.

Where a data set has no validation split of its own, a ``val_fraction`` share of the training
groups (images, or sequences for ``mixbasic``) is held out, chosen by a hash seeded with
``seed``: the same every run, and mostly unchanged when images are added.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import replace
from pathlib import Path

from deconfound.data.sample import ImageRef, Sample
from deconfound.errors import ConfigError, DataError

SPLITS = ("train", "val", "test")


def held_out(groups: Iterable[str], fraction: float, seed: int) -> set[str]:
    """The groups that form the validation split: a ``fraction`` share of them (at least one
    when ``fraction`` > 0 and there are two or more, never all), the same for the same ``seed``."""
    unique = sorted(set(groups))
    if fraction <= 0 or len(unique) < 2:
        return set()
    k = min(max(round(fraction * len(unique)), 1), len(unique) - 1)
    ranked = sorted(unique, key=lambda g: hashlib.sha1(f"{seed}/{g}".encode()).digest())
    return set(ranked[:k])


def check_carving(val_fraction: float, seed: int) -> None:
    if not 0 <= val_fraction < 1:
        raise ConfigError(f"data.args.val_fraction must be in [0, 1), got {val_fraction}")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ConfigError(f"data.args.seed must be an integer, got {seed!r}")


def check_split(split: str, name: str) -> None:
    if split not in SPLITS:
        raise DataError(f"unknown split '{split}' for {name}; choose {', '.join(SPLITS)}")


def carve(
    samples: list[Sample], group_of: dict[ImageRef, str], split: str, what: str,
    val_fraction: float, seed: int,
) -> list[Sample]:  # fmt: skip
    """``train`` or ``val`` of the training ``samples``: val is the held-out groups."""
    val = held_out((group_of[s.image] for s in samples), val_fraction, seed)
    chosen = [s for s in samples if (group_of[s.image] in val) == (split == "val")]
    if split == "val" and not chosen and samples:
        if val_fraction == 0:
            raise DataError(
                f"{what}: the val split is empty because data.args.val_fraction is 0; set it "
                "above 0 (e.g. 0.1) to hold out part of train"
            )
        raise DataError(
            f"{what}: too few training groups to hold any out for val; add training data"
        )
    return [s if s.split == split else replace(s, split=split) for s in chosen]


def one_line_message(error: Exception) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def text_lines(path: Path) -> list[tuple[int, str]]:
    """The non-empty lines of the text file ``path`` with their numbers (from 1)."""
    try:
        with path.open(encoding="utf-8-sig") as f:
            return [(n, t) for n, t in enumerate(f, start=1) if t.strip()]
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not a text file ({e}); restore it") from None

"""FER2013: 48x48 grey faces, stored as pixel values in one CSV.

    <root>/fer2013.csv   columns emotion (0-6: Angry, Disgust, Fear, Happy, Sad, Surprise,
                         Neutral), pixels (2304 space-separated grey values of a 48x48 face) and
                         Usage (Training, PublicTest, PrivateTest: the train, val and test splits)

The pixels are decoded once into an N×48×48×3 uint8 array file per split in a cache folder,
named after the CSV's size and modification time, so an edited CSV is decoded again. Each sample
is one picture of those arrays; the face box is the whole picture.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import numpy as np

from deconfound.data.annotations import Problems, parse_int, read_rows
from deconfound.data.face_sets import SPLITS, check_split, one_line_message
from deconfound.data.sample import ArrayImage, Box, DatasetInfo, Sample
from deconfound.errors import DataError
from deconfound.io import atomic_write

log = logging.getLogger(__name__)

FER2013_CLASSES = ("Angry", "Disgust", "Fear", "Happy", "Sad", "Surprise", "Neutral")
FER2013_INFO = DatasetInfo(
    name="fer2013", classes=FER2013_CLASSES, task="multiclass", splits=SPLITS, boxes=("face",)
)
FER2013_USAGE = {"Training": "train", "PublicTest": "val", "PrivateTest": "test"}
FER2013_SIDE = 48
CACHE_FORMAT = 1


class Fer2013Reader:
    """Reads FER2013's ``fer2013.csv`` under ``root``, its pixels decoded once into a cache.

    Args:
        root: the folder holding ``fer2013.csv``.
        skip_bad: leave out (and count in ``problems``) bad rows instead of stopping.
        cache: the folder of the decoded arrays; default ``root/.deconfound-cache``.
    """

    info = FER2013_INFO

    def __init__(
        self, root: str | Path, skip_bad: bool = False, cache: str | Path | None = None
    ) -> None:
        self.root = Path(root)
        self.csv = self.root / "fer2013.csv"
        self.cache = Path(cache) if cache is not None else self.root / ".deconfound-cache"
        self.problems = Problems(skip_bad)
        self._labels: dict[str, list[int]] | None = None
        self._stem = ""

    def samples(self, split: str) -> list[Sample]:
        """Every face of ``split``, in CSV order, as pictures of the split's cache array."""
        check_split(split, "fer2013")
        labels = self._load()[split]
        array = self.cache / f"{self._stem}.{split}.npy"
        face = Box(0, 0, FER2013_SIDE, FER2013_SIDE)
        return [
            Sample(ArrayImage(array, i), None, face, (label,), None, split)
            for i, label in enumerate(labels)
        ]

    def cache_files(self) -> list[Path]:
        """The files of the current CSV's cache: one array per split, then the labels."""
        self._load()
        return [self.cache / f"{self._stem}.{s}.npy" for s in SPLITS] + [
            self.cache / f"{self._stem}.json"
        ]

    def _load(self) -> dict[str, list[int]]:
        """The labels per split, from the cache (decoding the CSV first when needed); the bad
        rows found while decoding are reported once per reader."""
        if self._labels is not None:
            return self._labels
        if not self.csv.is_file():
            raise DataError(
                f"{self.csv}: not found; FER2013 is one file, fer2013.csv, in data.root"
            )
        stat = self.csv.stat()
        key = f"{self.csv.resolve()}|{stat.st_size}|{stat.st_mtime_ns}"
        self._stem = f"fer2013-{hashlib.sha1(key.encode()).hexdigest()[:16]}"
        meta = self._cached() or self._build()
        problems = meta["problems"]
        for message in problems:
            self.problems.report(DataError(message))
        if problems:
            log.warning("fer2013: skipped %d bad row(s) (first: %s)", len(problems), problems[0])
        self._labels = meta["labels"]
        return self._labels

    def _cached(self) -> dict[str, Any] | None:
        """The cache's metadata if it is complete and matches its arrays, else None."""
        try:
            meta = json.loads((self.cache / f"{self._stem}.json").read_text())
            if meta.get("format") != CACHE_FORMAT:
                return None
            for split in SPLITS:
                array = np.load(self.cache / f"{self._stem}.{split}.npy", mmap_mode="r")
                if array.shape != (len(meta["labels"][split]), FER2013_SIDE, FER2013_SIDE, 3):
                    return None
        except (OSError, ValueError, KeyError, TypeError):
            return None
        return meta

    def _build(self) -> dict[str, Any]:
        grey: dict[str, list[np.ndarray]] = {s: [] for s in SPLITS}
        labels: dict[str, list[int]] = {s: [] for s in SPLITS}
        problems: list[str] = []
        log.info("fer2013: decoding %s into %s (once)", self.csv, self.cache)
        for n, row in read_rows(self.csv, ("emotion", "pixels", "Usage")):
            try:
                split, label, pixels = _fer_row(row, f"{self.csv}: row {n}")
            except DataError as e:
                if not self.problems.skip:
                    raise  # nothing is cached then
                problems.append(str(e))  # reported by _load, as when read from the cache
                continue
            grey[split].append(pixels)
            labels[split].append(label)
        meta = {"format": CACHE_FORMAT, "csv": str(self.csv.resolve()), "labels": labels,
                "problems": problems}  # fmt: skip
        try:
            self.cache.mkdir(parents=True, exist_ok=True)
            for split in SPLITS:
                self._write(f"{self._stem}.{split}.npy", lambda f, s=split: _save(f, grey[s]))
            self._write(f"{self._stem}.json", lambda f: f.write(json.dumps(meta).encode()))
        except OSError as e:
            raise DataError(
                f"{self.cache}: cannot write the FER2013 pixel cache ({one_line_message(e)}); pass "
                "data.args.cache=DIR with a writable folder"
            ) from None
        self._remove_stale()
        return meta

    def _write(self, name: str, write: Callable[[IO[bytes]], object]) -> None:
        """Write ``name`` in the cache all at once (:func:`deconfound.io.atomic_write`)."""

        def to(tmp: Path) -> None:
            with tmp.open("wb") as f:
                write(f)

        atomic_write(self.cache / name, to)

    def _remove_stale(self) -> None:
        """Remove the caches of earlier versions of this CSV."""
        for meta_path in self.cache.glob("fer2013-*.json"):
            stem = meta_path.name[: -len(".json")]
            if stem == self._stem:
                continue
            try:
                if json.loads(meta_path.read_text()).get("csv") != str(self.csv.resolve()):
                    continue
                for split in SPLITS:
                    (self.cache / f"{stem}.{split}.npy").unlink(missing_ok=True)
                meta_path.unlink()
            except (OSError, ValueError, AttributeError):
                continue


def _fer_row(row: dict[str, str | None], where: str) -> tuple[str, int, np.ndarray]:
    """(split, label, 48×48 uint8 pixels) of one FER2013 row."""
    usage = (row["Usage"] or "").strip()
    if usage not in FER2013_USAGE:
        raise DataError(f"{where}: unknown Usage '{usage}'; expected {', '.join(FER2013_USAGE)}")
    label = parse_int(row, "emotion", where)  # type: ignore[arg-type]
    if not 0 <= label < len(FER2013_CLASSES):
        raise DataError(f"{where}: emotion {label} must be 0-6 ({', '.join(FER2013_CLASSES)})")
    parts = (row["pixels"] or "").split()
    if len(parts) != FER2013_SIDE * FER2013_SIDE:
        raise DataError(
            f"{where}: {len(parts)} pixel values, expected {FER2013_SIDE * FER2013_SIDE} "
            f"({FER2013_SIDE}x{FER2013_SIDE}); fix or remove the row"
        )
    try:
        values = np.array(parts, dtype=np.int64)
    except ValueError:
        raise DataError(
            f"{where}: pixel value {_first_non_int(parts)!r} is not an integer"
        ) from None
    if values.min() < 0 or values.max() > 255:
        bad = values[(values < 0) | (values > 255)][0]
        raise DataError(f"{where}: pixel value {bad} is outside 0-255")
    return FER2013_USAGE[usage], label, values.astype(np.uint8).reshape(48, 48)


def _first_non_int(parts: list[str]) -> str:
    for part in parts:
        try:
            int(part)
        except ValueError:
            return part
    return ""


def _save(f: IO[bytes], grey: list[np.ndarray]) -> None:
    """Write grey pictures to the open file ``f`` as an N×48×48×3 uint8 ``.npy`` array,
    a chunk at a time."""
    shape = (len(grey), FER2013_SIDE, FER2013_SIDE, 3)
    header = {"descr": np.dtype(np.uint8).str, "fortran_order": False, "shape": shape}
    np.lib.format.write_array_header_1_0(f, header)
    for start in range(0, len(grey), 4096):
        chunk = np.stack(grey[start : start + 4096])
        f.write(np.repeat(chunk[..., None], 3, axis=3).tobytes())

"""EMOTIC (Kosti et al.): 26 emotion categories (multi-label) and valence/arousal/dominance for
each annotated person, read from either layout people have on disk.

* The official release: ``Annotations/Annotations.mat`` (one struct array per split: ``train``,
  ``val``, ``test``; every image record has ``filename``, ``folder``, ``image_size`` (``n_col``,
  ``n_row``), ``original_database`` and a ``person`` array) and the images under
  ``emotic/<folder>/<filename>``. A ``train`` person has ``body_bbox`` (x1, y1, x2, y2 in pixels),
  ``annotations_categories.categories``, ``annotations_continuous`` (``valence``, ``arousal``,
  ``dominance``), ``gender`` and ``age``; a ``val``/``test`` person has the annotators' lists plus
  ``combined_categories`` and ``combined_continuous``, which are its labels.
* The pre-processed layout of the popular PyTorch baseline: ``{split}.csv`` (columns ``Index,
  Folder, Filename, Image Size, BBox, Categorical_Labels, Continuous_Labels, Gender, Age``, lists
  as Python literals) with ``{split}_context_arr.npy`` (the whole images, resized),
  ``{split}_body_arr.npy`` (the body crops, resized), ``{split}_cat_arr.npy`` (N × 26 multi-hot)
  and ``{split}_cont_arr.npy`` (N × 3).

As in the common pipeline, boxes are clipped to the image, and people without categories or (by
default) with missing/NaN continuous labels are left out and counted (``dropped``).
"""

from __future__ import annotations

import ast
import logging
import math
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np

from deconfound.data.annotations import Problems, read_rows
from deconfound.data.sample import ArrayImage, Box, DatasetInfo, Sample
from deconfound.data.views import open_array
from deconfound.errors import DataError

log = logging.getLogger(__name__)

CATEGORIES: tuple[str, ...] = (
    "Affection", "Anger", "Annoyance", "Anticipation", "Aversion", "Confidence", "Disapproval",
    "Disconnection", "Disquietment", "Doubt/Confusion", "Embarrassment", "Engagement", "Esteem",
    "Excitement", "Fatigue", "Fear", "Happiness", "Pain", "Peace", "Pleasure", "Sadness",
    "Sensitivity", "Suffering", "Surprise", "Sympathy", "Yearning",
)  # fmt: skip
CONTINUOUS = ("valence", "arousal", "dominance")
SPLITS = ("train", "val", "test")
INFO = DatasetInfo(name="emotic", classes=CATEGORIES, task="multilabel", splits=SPLITS)
CSV_COLUMNS = (
    "Index", "Folder", "Filename", "Image Size", "BBox", "Categorical_Labels",
    "Continuous_Labels", "Gender", "Age",
)  # fmt: skip
ARRAYS = ("context", "body", "cat", "cont")

Layout = Literal["auto", "mat", "npy"]


class EmoticReader:
    """Reads EMOTIC under ``root`` in the official (``mat``) or pre-processed (``npy``) layout.

    Args:
        root: the release folder (holding ``Annotations/Annotations.mat`` and ``emotic/``), or
            the pre-processed folder (holding ``train.csv`` and the ``.npy`` arrays).
        layout: ``auto`` picks whichever of the two is under ``root``.
        images: where the images' folders are (official layout); default ``root/emotic``.
        require_continuous: leave out people without valence/arousal/dominance, as the common
            pipeline does (train 23 266, val 3 315, test 7 203 people on the full release).
        skip_bad: leave out (and count in ``problems``) bad people instead of stopping.
    """

    info = INFO

    def __init__(
        self,
        root: str | Path,
        layout: Layout = "auto",
        images: str | Path | None = None,
        require_continuous: bool = True,
        skip_bad: bool = False,
    ) -> None:
        self.root = Path(root)
        self.layout = _find_layout(self.root) if layout == "auto" else layout
        if self.layout not in ("mat", "npy"):
            raise DataError(f"unknown EMOTIC layout '{layout}'; choose auto, mat or npy")
        self.images = Path(images) if images is not None else self.root / "emotic"
        self.require_continuous = require_continuous
        self.problems = Problems(skip_bad)
        self.dropped: dict[str, int] = {}
        self._mat: dict[str, Any] | None = None

    def samples(self, split: str) -> list[Sample]:
        """Every kept person of ``split``, in file order."""
        if split not in SPLITS:
            raise DataError(f"unknown split '{split}' for EMOTIC; choose {', '.join(SPLITS)}")
        self.dropped[split] = 0
        rows = self._mat_people(split) if self.layout == "mat" else self._csv_rows(split)
        parse = self._mat_sample if self.layout == "mat" else self._npy_sample
        samples = self.problems.parse_all(rows, parse, split)
        if self.dropped[split]:
            log.info(
                "EMOTIC %s: left out %d people without labels (categories%s)",
                split, self.dropped[split], " or continuous" if self.require_continuous else "",
            )  # fmt: skip
        return samples

    def _kept(self, labels: tuple[int, ...], continuous: Any, split: str) -> bool:
        """Whether the common pipeline keeps a person with these labels (else counted)."""
        if labels and (continuous is not None or not self.require_continuous):
            return True
        self.dropped[split] += 1
        return False

    # -- the official release -----------------------------------------------------------------

    @property
    def mat_path(self) -> Path:
        return self.root / "Annotations" / "Annotations.mat"

    def _load_mat(self) -> dict[str, Any]:
        if self._mat is None:
            from scipy.io import loadmat

            path = self.mat_path
            if not path.is_file():
                raise DataError(f"{path}: EMOTIC annotations not found; check data.root")
            try:
                self._mat = loadmat(path, squeeze_me=True, struct_as_record=False)
            except Exception as e:  # scipy raises several types for a damaged file
                raise DataError(f"{path}: not a readable MATLAB file ({e}); restore it") from None
        return self._mat

    def _mat_people(self, split: str) -> Iterator[tuple[Any, str]]:
        mat = self._load_mat()
        if split not in mat:
            raise DataError(f"{self.mat_path}: no '{split}' struct array; is this Annotations.mat?")
        for i, record in enumerate(_as_list(mat[split]), start=1):
            where = f"{self.mat_path}: {split} image {i}"
            try:
                folder, filename = _text(record, "folder", where), _text(record, "filename", where)
                size = _image_size(record, where)
                people = _as_list(_field(record, "person", where))
            except DataError as e:
                self.problems.report(e)
                continue
            for j, person in enumerate(people, start=1):
                at = f"{where} ({folder}/{filename}) person {j}"
                yield (self.images / folder / filename, size, person, split), at

    def _mat_sample(self, row: tuple[Path, tuple[int, int], Any, str], where: str) -> Sample | None:
        path, size, person, split = row
        box = _clipped_box(_field(person, "body_bbox", where), size, where)
        labels = _category_indices(_mat_categories(person, where), where)
        continuous = _mat_continuous(person, where)
        if not self._kept(labels, continuous, split):
            return None
        if not path.is_file():
            raise DataError(f"{where}: image {path} not found; restore it or set data.args.images")
        return Sample(path, box, None, labels, None, split, continuous)

    # -- the pre-processed layout -------------------------------------------------------------

    def _csv_rows(self, split: str) -> Iterator[tuple[Any, str]]:
        csv_path = self.root / f"{split}.csv"
        arrays = {a: self.root / f"{split}_{a}_arr.npy" for a in ARRAYS}
        rows = list(read_rows(csv_path, CSV_COLUMNS))
        _check_arrays(arrays, len(rows), csv_path)
        cat = np.load(arrays["cat"], mmap_mode="r")
        for i, (row_no, row) in enumerate(rows):
            yield (i, row, arrays, cat[i], split), f"{csv_path}: row {row_no}"

    def _npy_sample(
        self, row: tuple[int, dict[str, str], dict[str, Path], np.ndarray, str], where: str
    ) -> Sample | None:
        i, cells, arrays, multi_hot, split = row
        if _literal(cells, "Index", where) != i:
            raise DataError(f"{where}: Index {cells['Index']} is not the row's position {i}")
        w, h = _pair(_literal(cells, "Image Size", where), "Image Size", where)
        box = _clipped_box(_literal(cells, "BBox", where), (w, h), where)
        labels = _category_indices(_literal(cells, "Categorical_Labels", where), where)
        expected = np.zeros(len(CATEGORIES))
        expected[list(labels)] = 1
        if not np.array_equal(np.asarray(multi_hot) > 0.5, expected > 0.5):
            raise DataError(
                f"{where}: Categorical_Labels disagree with row {i} of {arrays['cat']}; "
                "re-run the pre-processing"
            )
        continuous = _continuous(_literal(cells, "Continuous_Labels", where), where)
        if not self._kept(labels, continuous, split):
            return None
        context = open_array(arrays["context"])
        side_h, side_w = context.shape[1:3]
        return Sample(
            ArrayImage(arrays["context"], i),
            box.scale(side_w / w, side_h / h),
            None,
            labels,
            None,
            split,
            continuous,
            body_image=ArrayImage(arrays["body"], i),
            picture=f"{cells['Folder']}/{cells['Filename']}",
        )


def _find_layout(root: Path) -> str:
    if (root / "Annotations" / "Annotations.mat").is_file():
        return "mat"
    if (root / "train.csv").is_file() or (root / "test.csv").is_file():
        return "npy"
    raise DataError(
        f"{root}: no EMOTIC here; expected Annotations/Annotations.mat (the official release) "
        "or train.csv with *_arr.npy files (the pre-processed layout)"
    )


def _as_list(value: Any) -> list[Any]:
    """scipy's squeezed value as a list: a struct array, one struct, or nothing."""
    if isinstance(value, np.ndarray):
        return list(value.ravel())
    return [value]


def _field(struct: Any, name: str, where: str) -> Any:
    if not hasattr(struct, name):
        fields = getattr(struct, "_fieldnames", None)
        raise DataError(f"{where}: no field '{name}' (fields: {fields}); is this EMOTIC's file?")
    return getattr(struct, name)


def _text(struct: Any, name: str, where: str) -> str:
    value = _field(struct, name, where)
    if not isinstance(value, str) or not value:
        raise DataError(f"{where}: field '{name}' must be a non-empty string, got {value!r}")
    return value


def _image_size(record: Any, where: str) -> tuple[int, int]:
    size = _field(record, "image_size", where)
    try:
        w, h = int(_field(size, "n_col", where)), int(_field(size, "n_row", where))
    except (TypeError, ValueError):
        raise DataError(f"{where}: image_size must hold integers n_col, n_row") from None
    if w <= 0 or h <= 0:
        raise DataError(f"{where}: image_size {w}x{h} is not positive")
    return w, h


def _clipped_box(value: Any, size: tuple[int, int], where: str) -> Box:
    """The (x1, y1, x2, y2) pixel box clipped to the image, as the common pipeline does."""
    try:
        coords = [float(v) for v in np.asarray(value, dtype=float).ravel()]
    except (TypeError, ValueError):
        coords = []
    if len(coords) != 4 or not all(math.isfinite(c) for c in coords):
        raise DataError(f"{where}: body box must be 4 finite numbers x1 y1 x2 y2, got {value!r}")
    box = Box(*(int(c) for c in coords)).clip(size)  # truncating, as the pipeline does
    if box.width <= 0 or box.height <= 0:
        w, h = size
        raise DataError(
            f"{where}: body box {tuple(coords)} is empty inside the {w}x{h} image; fix or remove it"
        )
    return box


def _mat_categories(person: Any, where: str) -> list[str]:
    if hasattr(person, "combined_categories"):  # val / test: the combined annotation
        return _strings(person.combined_categories)
    names: list[str] = []
    for annotation in _as_list(_field(person, "annotations_categories", where)):
        if hasattr(annotation, "categories"):
            names += [n for n in _strings(annotation.categories) if n not in names]
    return names


def _strings(value: Any) -> list[str]:
    if isinstance(value, str):
        return [value] if value else []
    if isinstance(value, np.ndarray):
        return [str(v) for v in value.ravel() if isinstance(v, str) and v]
    return []


def _category_indices(names: Any, where: str) -> tuple[int, ...]:
    if not isinstance(names, (list, tuple)) or not all(isinstance(n, str) for n in names):
        raise DataError(f"{where}: categories must be a list of names, got {names!r}")
    unknown = [n for n in names if n not in CATEGORIES]
    if unknown:
        raise DataError(
            f"{where}: unknown category '{unknown[0]}'; EMOTIC's are {', '.join(CATEGORIES)}"
        )
    return tuple(sorted({CATEGORIES.index(n) for n in names}))


def _mat_continuous(person: Any, where: str) -> tuple[float, ...] | None:
    value = getattr(person, "combined_continuous", None)
    if value is None or not hasattr(value, "valence"):
        annotations = [
            a for a in _as_list(getattr(person, "annotations_continuous", None))
            if hasattr(a, "valence")
        ]  # fmt: skip
        if not annotations:
            return None
        per = [_continuous([getattr(a, d) for d in CONTINUOUS], where) for a in annotations]
        kept = [p for p in per if p is not None]
        return tuple(float(np.mean(c)) for c in zip(*kept, strict=True)) if kept else None
    return _continuous([getattr(value, d) for d in CONTINUOUS], where)


def _continuous(values: Any, where: str) -> tuple[float, ...] | None:
    """(valence, arousal, dominance), or None where missing or NaN."""
    try:
        out = tuple(float(np.asarray(v, dtype=float).ravel()[0]) for v in values)
    except (TypeError, ValueError, IndexError):
        return None
    if len(out) != len(CONTINUOUS) or not all(math.isfinite(v) for v in out):
        return None
    return out


def _literal(cells: dict[str, str], column: str, where: str) -> Any:
    """The Python literal in a cell; a ``nan`` in it (a missing continuous label) reads as None."""
    try:
        return ast.literal_eval(re.sub(r"\bnan\b", "None", cells[column].strip()))
    except (ValueError, SyntaxError):
        raise DataError(
            f"{where}: column '{column}' is not a Python literal: {cells[column]!r}"
        ) from None


def _pair(value: Any, column: str, where: str) -> tuple[int, int]:
    if (
        not isinstance(value, (list, tuple))
        or len(value) != 2
        or not all(isinstance(v, int) and v > 0 for v in value)
    ):
        raise DataError(f"{where}: column '{column}' must be [width, height], got {value!r}")
    return value[0], value[1]


def _check_arrays(arrays: dict[str, Path], rows: int, csv_path: Path) -> None:
    widths = {"cat": len(CATEGORIES), "cont": len(CONTINUOUS)}
    for name, path in arrays.items():
        if not path.is_file():
            raise DataError(
                f"{path}: not found (it goes with {csv_path}); re-run the preprocessing"
            )
        if name in widths:
            shape = np.load(path, mmap_mode="r").shape
            ok = len(shape) == 2 and shape[1] == widths[name]
            what = f"N x {widths[name]}"
        else:
            shape = open_array(path).shape
            ok, what = True, "N x H x W x 3"
        if not ok or shape[0] != rows:
            raise DataError(
                f"{path}: shape {shape}, expected {what} with N = {rows} (the rows of {csv_path})"
            )

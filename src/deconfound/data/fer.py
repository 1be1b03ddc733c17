"""Facial-expression data sets: IERN's mixed-data-set protocol (CK+, MMI, Oulu-CASIA), RAF-DB,
AffectNet and FER2013. Each sample is one face picture; the face box is the whole picture where
the release ships aligned crops.

``mixbasic`` (IERN's mixed protocol, as its public release prepares the three sets):

    <root>/<Source>/images/<file>      aligned face crops (PNG or JPEG, any size), one folder per
                                       source set: CKPlus, MMI, OuluCASIA
    <root>/emotion_labels.pkl          a pickled dict from "<source folder in lower case>_<file
                                       stem>" to the emotion (a name, or 0-5 in
                                       ``BASIC_EMOTIONS`` order); a ``.csv`` with columns
                                       ``key,emotion`` may be given instead
    <root>/train_ids_<fold>.csv        the training images of a fold, one per line, as a path
    <root>/test_ids_<fold>.csv         ending in <Source>/images/<file> (anything before those
                                       three parts, such as "MixBasic/", is ignored)

  The release's folds are bias100v1-3 and bias90v1-3 (how strongly each source is skewed towards
  some emotions); users may add their own lists. A sample's confounder is its source set. The
  validation split is carved out of the training list by sequence (the file stem without its last
  ``_`` part, e.g. ``S005_001``), so frames of one sequence never straddle train and val.

``rafdb`` (RAF-DB, basic emotions):

    <root>/EmoLabel/list_patition_label.txt   (sic) lines "train_00001.jpg 5", "test_0001.jpg 1";
                                              labels 1-7: Surprise, Fear, Disgust, Happiness,
                                              Sadness, Anger, Neutral
    <root>/Image/aligned/<stem>_aligned.jpg   the aligned 100x100 faces (the name as listed, or
                                              Image/original/<name>, is accepted too)

  The split is the name's prefix; val is carved out of train.

``affectnet`` (AffectNet, manually annotated part):

    <root>/training.csv, <root>/validation.csv   columns subDirectory_filePath, face_x, face_y,
                                                 face_width, face_height, facial_landmarks,
                                                 expression, valence, arousal
    <root>/Manually_Annotated_Images/<subDirectory_filePath>

  Expression codes 0-7 are Neutral, Happy, Sad, Surprise, Fear, Disgust, Anger, Contempt; 8-10
  (None, Uncertain, No-Face) are left out, as in the papers, and Contempt too for the 7-class
  protocol. ``validation.csv`` is the test split (the test set is not public); val is carved out
  of ``training.csv``. Valence and arousal (in [-1, 1]) are kept as continuous labels.

``fer2013`` (FER2013):

    <root>/fer2013.csv   columns emotion (0-6: Angry, Disgust, Fear, Happy, Sad, Surprise,
                         Neutral), pixels (2304 space-separated grey values of a 48x48 face) and
                         Usage (Training, PublicTest, PrivateTest: the train, val and test splits)

  The pixels are decoded once into an N×48×48×3 uint8 array file per split in a cache folder,
  named after the CSV's size and modification time, so an edited CSV is decoded again.

Where a data set has no validation split of its own, a ``val_fraction`` share of the training
groups (images, or sequences for ``mixbasic``) is held out, chosen by a hash seeded with
``seed``: the same every run, and mostly unchanged when images are added.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import pickle
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import replace
from pathlib import Path
from typing import IO, Any

import numpy as np

from deconfound.data.annotations import Problems, check_box, image_size, parse_int, read_rows
from deconfound.data.sample import (
    BASIC_EMOTIONS,
    ArrayImage,
    Box,
    DatasetInfo,
    ImageRef,
    Sample,
)
from deconfound.errors import ConfigError, DataError

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")


# --- shared -----------------------------------------------------------------------------------


def held_out(groups: Iterable[str], fraction: float, seed: int) -> set[str]:
    """The groups that form the validation split: a ``fraction`` share of them (at least one
    when ``fraction`` > 0 and there are two or more, never all), the same for the same ``seed``."""
    unique = sorted(set(groups))
    if fraction <= 0 or len(unique) < 2:
        return set()
    k = min(max(round(fraction * len(unique)), 1), len(unique) - 1)
    ranked = sorted(unique, key=lambda g: hashlib.sha1(f"{seed}/{g}".encode()).digest())
    return set(ranked[:k])


def _check_carving(val_fraction: float, seed: int) -> None:
    if not 0 <= val_fraction < 1:
        raise ConfigError(f"data.args.val_fraction must be in [0, 1), got {val_fraction}")
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise ConfigError(f"data.args.seed must be an integer, got {seed!r}")


def _check_split(split: str, name: str) -> None:
    if split not in SPLITS:
        raise DataError(f"unknown split '{split}' for {name}; choose {', '.join(SPLITS)}")


def _carve(
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


def _one_line(error: Exception) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def _text_lines(path: Path) -> list[tuple[int, str]]:
    """The non-empty lines of the text file ``path`` with their numbers (from 1)."""
    try:
        with path.open(encoding="utf-8-sig") as f:
            return [(n, t) for n, t in enumerate(f, start=1) if t.strip()]
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not a text file ({e}); restore it") from None


# --- IERN's mixed protocol ----------------------------------------------------------------------

MIXBASIC_INFO = DatasetInfo(
    name="mixbasic",
    classes=BASIC_EMOTIONS,
    task="multiclass",
    splits=SPLITS,
    boxes=("face",),
    observed_confounder=True,
)
MIXBASIC_SOURCES = ("CKPlus", "MMI", "OuluCASIA")
EMOTION_ALIASES: dict[str, int] = {
    "anger": 0, "angry": 0,
    "disgust": 1, "disgusted": 1,
    "fear": 2, "fearful": 2, "afraid": 2,
    "happiness": 3, "happy": 3,
    "sadness": 4, "sad": 4,
    "surprise": 5, "surprised": 5,
}  # fmt: skip
"""Every accepted spelling (lower case) of the six basic emotions → index in BASIC_EMOTIONS."""
OUTSIDE_PROTOCOL = ("contempt", "neutral")
Line = tuple[int, str]
"""A non-empty line of an id list: its number and its text."""


class _NoGlobalsUnpickler(pickle.Unpickler):
    """An unpickler that loads only pickle's built-in types."""

    # A dict of str keys and str/int values is written with pickle's own opcodes and needs no
    # globals at all. Anything that asks for one (a class, or a callable such as os.system that
    # a crafted file would run) is refused, so loading a labels file cannot execute code.
    def find_class(self, module: str, name: str) -> Any:
        raise pickle.UnpicklingError(
            f"it refers to {module}.{name}; a labels file may hold only plain str/int values"
        )


def emotion_index(value: object, key: str, where: str) -> int:
    """The ``BASIC_EMOTIONS`` index of a label value: a name or alias in any case, or 0-5."""
    if isinstance(value, str) and value.strip().isdigit():
        value = int(value.strip())
    if isinstance(value, int) and not isinstance(value, bool):
        if 0 <= value < len(BASIC_EMOTIONS):
            return value
    elif isinstance(value, str):
        name = value.strip().lower()
        if name in EMOTION_ALIASES:
            return EMOTION_ALIASES[name]
        if name in OUTSIDE_PROTOCOL:
            raise DataError(
                f"{where}: '{key}' is labelled {value.strip()}, which the six-emotion protocol "
                "does not use; remove it from the id list"
            )
    raise DataError(
        f"{where}: label {value!r} of '{key}' is not one of {', '.join(BASIC_EMOTIONS)} "
        f"(or 0-{len(BASIC_EMOTIONS) - 1}); fix the labels file"
    )


def read_labels(path: Path) -> dict[str, object]:
    """The label dict of a ``.pkl`` file (a pickled dict, loaded without any globals) or a
    ``.csv`` file with columns ``key,emotion``."""
    if not path.is_file():
        raise DataError(f"{path}: labels file not found; check data.root or data.args.labels")
    if path.suffix.lower() == ".csv":
        labels: dict[str, object] = {}
        first: dict[str, int] = {}
        for n, row in read_rows(path, ("key", "emotion")):
            key = (row["key"] or "").strip()
            if key in first:
                raise DataError(
                    f"{path}: row {n}: key '{key}' is also on row {first[key]}; keep one"
                )
            first[key] = n
            labels[key] = (row["emotion"] or "").strip()
        return labels
    try:
        with path.open("rb") as f:
            loaded = _NoGlobalsUnpickler(f).load()
    except Exception as e:  # a damaged or hostile pickle can fail in many ways
        raise DataError(
            f"{path}: not a plain pickled dict ({_one_line(e)}); save the labels as a dict of "
            "str keys and str/int values, or as a .csv with columns key,emotion"
        ) from None
    if not isinstance(loaded, dict):
        raise DataError(
            f"{path}: holds a {type(loaded).__name__}, not a dict from image key to emotion"
        )
    bad = next((k for k in loaded if not isinstance(k, str)), None)
    if bad is not None:
        raise DataError(f"{path}: key {bad!r} is not a string; keys look like 'ckplus_S005_001_…'")
    return loaded


def sequence_group(source: str, file: str) -> str:
    """The sequence a frame belongs to: its source and its file stem without the last ``_``
    part (``CKPlus/S005_001`` for ``S005_001_00000009.png``)."""
    return f"{source}/{Path(file).stem.rsplit('_', 1)[0]}"


def _image_id(text: str) -> tuple[str, str] | None:
    """``(source, file)`` of an id-list line, or None if it does not end in
    ``<Source>/images/<file>``."""
    parts = [p for p in text.replace("\\", "/").split("/") if p and p != "."]
    if len(parts) < 3 or parts[-2] != "images":
        return None
    return parts[-3], parts[-1]


class MixBasicReader:
    """Reads IERN's mixed-data-set protocol (CK+, MMI, Oulu-CASIA) under ``root``.

    Args:
        root: the folder holding the source folders, the labels file and the id lists.
        skip_bad: leave out (and count in ``problems``) bad lines instead of stopping.
        fold: the id lists to use: ``train_ids_<fold>.csv`` and ``test_ids_<fold>.csv``.
        sources: the source folders, in confounder order (a sample's confounder is the index
            of its source here).
        labels: the labels file (``.pkl`` or ``.csv``), relative to ``root``.
        val_fraction: share of the training sequences held out as ``val``.
        seed: which sequences are held out.
    """

    info = MIXBASIC_INFO

    def __init__(
        self,
        root: str | Path,
        skip_bad: bool = False,
        fold: str = "bias100v1",
        sources: Iterable[str] = MIXBASIC_SOURCES,
        labels: str | Path = "emotion_labels.pkl",
        val_fraction: float = 0.1,
        seed: int = 0,
    ) -> None:
        _check_carving(val_fraction, seed)
        self.sources: tuple[str, ...] = (sources,) if isinstance(sources, str) else tuple(sources)
        if not self.sources or len(set(self.sources)) != len(self.sources):
            raise ConfigError(f"data.args.sources must be distinct folder names, got {sources!r}")
        if not isinstance(fold, str) or not fold or "/" in fold or "\\" in fold:
            raise ConfigError(f"data.args.fold must be a fold name such as bias100v1, got {fold!r}")
        self.root = Path(root)
        self.fold = fold
        self.labels_path = self.root / labels
        self.val_fraction = val_fraction
        self.seed = seed
        self.problems = Problems(skip_bad)
        self._lines: dict[str, tuple[Path, list[tuple[Line, str]]]] | None = None
        self._labels: dict[str, object] | None = None
        self._parsed: dict[str, list[Sample]] = {}
        self._groups: dict[ImageRef, str] = {}

    def samples(self, split: str) -> list[Sample]:
        """Every image of ``split``: ``test`` is the fold's test list, ``train`` and ``val``
        share its training list, by sequence."""
        _check_split(split, "mixbasic")
        if split == "test":
            return self._list("test")
        train = self._list("train")
        what = str(self.root / f"train_ids_{self.fold}.csv")
        return _carve(train, self._groups, split, what, self.val_fraction, self.seed)

    def folds(self) -> list[str]:
        """The folds that have an id list under ``root``."""
        found = set()
        for prefix in ("train_ids_", "test_ids_"):
            found |= {p.stem[len(prefix) :] for p in self.root.glob(f"{prefix}*.csv")}
        return sorted(found)

    def _list(self, which: str) -> list[Sample]:
        """The samples of the train or test list, parsed once."""
        if which not in self._parsed:
            path, lines = self._read_lists()[which]
            self._parsed[which] = self.problems.parse_all(
                lines, self._parser(which), f"mixbasic {path.name}"
            )
        return self._parsed[which]

    def _read_lists(self) -> dict[str, tuple[Path, list[tuple[Line, str]]]]:
        """Both id lists' non-empty lines (with where they are), read once and checked for
        images that are in both."""
        if self._lines is not None:
            return self._lines
        if not self.root.is_dir():
            raise DataError(f"{self.root}: mixbasic root not found; check data.root")
        lines = {}
        for which in ("train", "test"):
            path = self.root / f"{which}_ids_{self.fold}.csv"
            if not path.is_file():
                found = ", ".join(self.folds()) or "none"
                raise DataError(
                    f"{path}: id list not found; the lists are named train_ids_<fold>.csv and "
                    f"test_ids_<fold>.csv (folds in {self.root}: {found}); set data.args.fold"
                )
            entries = [((n, t.strip()), f"{path}: line {n}") for n, t in _text_lines(path)]
            if not entries:
                raise DataError(
                    f"{path}: the id list is empty; list one image per line as "
                    "<Source>/images/<file>"
                )
            lines[which] = (path, entries)
        in_train: dict[tuple[str, str], int] = {}
        for (n, text), _ in lines["train"][1]:
            if (image := _image_id(text)) is not None:
                in_train.setdefault(image, n)
        for (_, text), where in lines["test"][1]:
            image = _image_id(text)
            if image is not None and image in in_train:
                raise DataError(
                    f"{where}: {image[0]}/images/{image[1]} is also in "
                    f"{lines['train'][0].name} (line {in_train[image]}); an image may be in "
                    "only one list, remove it from one"
                )
        self._lines = lines
        return lines

    def _parser(self, which: str) -> Callable[[Line, str], Sample]:
        """The parser of one list's lines (it remembers the images seen, to refuse repeats)."""
        seen: dict[tuple[str, str], int] = {}
        labels = self._label_dict()

        def parse(entry: Line, where: str) -> Sample:
            n, text = entry
            image = _image_id(text)
            if image is None:
                raise DataError(
                    f"{where}: {text!r} does not end in <Source>/images/<file>; fix the line"
                )
            source, file = image
            if source not in self.sources:
                raise DataError(
                    f"{where}: unknown source '{source}'; allowed: {', '.join(self.sources)} "
                    "(data.args.sources)"
                )
            if image in seen:
                raise DataError(f"{where}: same image as line {seen[image]}; remove the duplicate")
            seen[image] = n
            path = self.root / source / "images" / file
            w, h = image_size(path, where)
            key = f"{source.lower()}_{Path(file).stem}"
            if key not in labels:
                raise DataError(
                    f"{where}: no label for '{key}' in {self.labels_path.name}; add it or remove "
                    "the line"
                )
            label = emotion_index(labels[key], key, f"{where} ({self.labels_path.name})")
            self._groups[path] = sequence_group(source, file)
            return Sample(path, None, Box(0, 0, w, h), (label,), self.sources.index(source), which)

        return parse

    def _label_dict(self) -> dict[str, object]:
        if self._labels is None:
            self._labels = read_labels(self.labels_path)
        return self._labels


# --- RAF-DB -------------------------------------------------------------------------------------

RAFDB_CLASSES = ("Surprise", "Fear", "Disgust", "Happiness", "Sadness", "Anger", "Neutral")
RAFDB_INFO = DatasetInfo(
    name="rafdb", classes=RAFDB_CLASSES, task="multiclass", splits=SPLITS, boxes=("face",)
)
RAFDB_LIST = Path("EmoLabel") / "list_patition_label.txt"


class RafDbReader:
    """Reads RAF-DB's basic-emotion part under ``root``.

    Args:
        root: the release folder (holding ``EmoLabel/`` and ``Image/``).
        skip_bad: leave out (and count in ``problems``) bad lines instead of stopping.
        val_fraction: share of the training images held out as ``val``.
        seed: which images are held out.
    """

    info = RAFDB_INFO

    def __init__(
        self, root: str | Path, skip_bad: bool = False, val_fraction: float = 0.1, seed: int = 0
    ) -> None:
        _check_carving(val_fraction, seed)
        self.root = Path(root)
        self.val_fraction = val_fraction
        self.seed = seed
        self.problems = Problems(skip_bad)
        self._parsed: list[Sample] | None = None

    def samples(self, split: str) -> list[Sample]:
        """Every image of ``split``, in list order."""
        _check_split(split, "rafdb")
        parsed = self._read()
        if split == "test":
            return [s for s in parsed if s.split == "test"]
        train = [s for s in parsed if s.split == "train"]
        groups: dict[ImageRef, str] = {s.image: str(s.image) for s in train}
        what = str(self.root / RAFDB_LIST)
        return _carve(train, groups, split, what, self.val_fraction, self.seed)

    def _read(self) -> list[Sample]:
        if self._parsed is None:
            path = self.root / RAFDB_LIST
            if not path.is_file():
                raise DataError(
                    f"{path}: label list not found; RAF-DB keeps it as {RAFDB_LIST} under data.root"
                )
            lines = [(t, f"{path}: line {n}") for n, t in _text_lines(path)]
            if not lines:
                raise DataError(f"{path}: the label list is empty; restore it from the release")
            seen: dict[str, str] = {}

            def parse(text: str, where: str) -> Sample:
                parts = text.split()
                if len(parts) != 2:
                    raise DataError(
                        f"{where}: expected '<image name> <label>', got {text.strip()!r}"
                    )
                name, label = parts
                split = next((s for s in ("train", "test") if name.startswith(f"{s}_")), None)
                if split is None:
                    raise DataError(f"{where}: '{name}' starts with neither train_ nor test_")
                if not label.isdigit() or not 1 <= int(label) <= len(RAFDB_CLASSES):
                    raise DataError(
                        f"{where}: label '{label}' of {name} must be 1-7 (1 Surprise … 7 Neutral)"
                    )
                if name in seen:
                    raise DataError(f"{where}: {name} is listed twice (also {seen[name]})")
                seen[name] = where.rsplit(": ", 1)[-1]
                image = self._image(name, where)
                w, h = image_size(image, where)
                return Sample(image, None, Box(0, 0, w, h), (int(label) - 1,), None, split)

            self._parsed = self.problems.parse_all(lines, parse, "rafdb")
        return self._parsed

    def _image(self, name: str, where: str) -> Path:
        folder = self.root / "Image"
        tried = [
            folder / "aligned" / f"{Path(name).stem}_aligned.jpg",
            folder / "aligned" / name,
            folder / "original" / name,
        ]
        for path in tried:
            if path.is_file():
                return path
        raise DataError(
            f"{where}: image {name} not found as {', '.join(str(p) for p in tried)}; restore it "
            "or remove the line"
        )


# --- AffectNet ----------------------------------------------------------------------------------

AFFECTNET_CLASSES = ("Neutral", "Happy", "Sad", "Surprise", "Fear", "Disgust", "Anger", "Contempt")
AFFECTNET_INFO = DatasetInfo(
    name="affectnet", classes=AFFECTNET_CLASSES, task="multiclass", splits=SPLITS, boxes=("face",)
)
AFFECTNET_INFO_7 = DatasetInfo(
    name="affectnet",
    classes=AFFECTNET_CLASSES[:7],
    task="multiclass",
    splits=SPLITS,
    boxes=("face",),
)
AFFECTNET_COLUMNS = (
    "subDirectory_filePath", "face_x", "face_y", "face_width", "face_height", "expression",
    "valence", "arousal",
)  # fmt: skip
AFFECTNET_OTHER = ("None", "Uncertain", "No-Face")
"""Expression codes 8, 9, 10: not an emotion, left out by the data set's rules."""


class AffectNetReader:
    """Reads AffectNet's manually annotated images under ``root``.

    Args:
        root: the folder holding ``training.csv``, ``validation.csv`` and
            ``Manually_Annotated_Images/``.
        skip_bad: leave out (and count in ``problems``) bad rows instead of stopping.
        classes: 8 (the seven basic emotions, Neutral and Contempt) or 7 (without Contempt,
            whose rows are then left out).
        val_fraction: share of ``training.csv`` held out as ``val``.
        seed: which images are held out.

    ``dropped`` counts, per CSV file, the rows the data set's rules leave out (codes 8-10, and
    Contempt for 7 classes).
    """

    info = AFFECTNET_INFO

    def __init__(
        self,
        root: str | Path,
        skip_bad: bool = False,
        classes: int = 8,
        val_fraction: float = 0.1,
        seed: int = 0,
    ) -> None:
        _check_carving(val_fraction, seed)
        if classes not in (7, 8):
            raise ConfigError(f"data.args.classes must be 7 or 8 for AffectNet, got {classes!r}")
        self.root = Path(root)
        self.classes = classes
        self.info = AFFECTNET_INFO if classes == 8 else AFFECTNET_INFO_7
        self.val_fraction = val_fraction
        self.seed = seed
        self.problems = Problems(skip_bad)
        self.dropped: dict[str, int] = {}
        self._parsed: dict[str, list[Sample]] = {}

    def samples(self, split: str) -> list[Sample]:
        """Every kept face of ``split``: ``test`` is ``validation.csv``, ``train`` and ``val``
        share ``training.csv``."""
        _check_split(split, "affectnet")
        if split == "test":
            return self._read("validation.csv", "test")
        train = self._read("training.csv", "train")
        groups: dict[ImageRef, str] = {s.image: str(s.image) for s in train}
        what = str(self.root / "training.csv")
        return _carve(train, groups, split, what, self.val_fraction, self.seed)

    def _read(self, name: str, split: str) -> list[Sample]:
        if name in self._parsed:
            return self._parsed[name]
        path = self.root / name
        rows = ((row, f"{path}: row {n}") for n, row in read_rows(path, AFFECTNET_COLUMNS))
        left_out = [0]

        def parse(row: dict[str, str], where: str) -> Sample | None:
            code = parse_int(row, "expression", where)
            if not 0 <= code <= 10:
                raise DataError(f"{where}: expression {code} is not an AffectNet code (0-10)")
            if code >= self.classes:  # 8-10, or Contempt (7) for the 7-class protocol
                left_out[0] += 1
                return None
            va = (_unit_float(row, "valence", where), _unit_float(row, "arousal", where))
            rel = (row["subDirectory_filePath"] or "").strip()
            if not rel:
                raise DataError(f"{where}: column 'subDirectory_filePath' is empty")
            image = self.root / "Manually_Annotated_Images" / rel
            size = image_size(image, where)
            x, y = parse_int(row, "face_x", where), parse_int(row, "face_y", where)
            w, h = parse_int(row, "face_width", where), parse_int(row, "face_height", where)
            box = Box(x, y, x + w, y + h)
            clipped = box.clip(size)  # AffectNet's boxes may reach a little past the image
            if min(box.width, box.height, clipped.width, clipped.height) <= 0:
                check_box(box, size, "face box", where, image)
            return Sample(image, None, clipped, (code,), None, split, continuous=va)

        samples = self.problems.parse_all(rows, parse, f"affectnet {name}")
        if left_out[0]:
            rule = "coded None, Uncertain or No-Face" + (
                " or Contempt" if self.classes == 7 else ""
            )
            log.info("AffectNet %s: left out %d rows %s", name, left_out[0], rule)
        self.dropped[name] = left_out[0]
        self._parsed[name] = samples
        return samples


def _unit_float(row: dict[str, str], column: str, where: str) -> float:
    value = row.get(column)
    try:
        number = float(str(value).strip())
    except ValueError:
        number = math.nan
    if not -1 <= number <= 1:
        raise DataError(f"{where}: column '{column}' must be a number in [-1, 1], got {value!r}")
    return number


# --- FER2013 ------------------------------------------------------------------------------------

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
        _check_split(split, "fer2013")
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
                f"{self.cache}: cannot write the FER2013 pixel cache ({_one_line(e)}); pass "
                "data.args.cache=DIR with a writable folder"
            ) from None
        self._remove_stale()
        return meta

    def _write(self, name: str, write: Callable[[IO[bytes]], object]) -> None:
        """Write ``name`` in the cache all at once: to a temporary file, then renamed."""
        fd, tmp = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=self.cache)
        try:
            with os.fdopen(fd, "wb") as f:
                write(f)
            os.replace(tmp, self.cache / name)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

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

"""IERN's mixed-data-set protocol (CK+, MMI, Oulu-CASIA), as its public release prepares the
three sets. Each sample is one aligned face crop; the face box is the whole picture.

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
``_`` part, e.g. ``S005_001``), so frames of one sequence never straddle train and val: a
``val_fraction`` share of the training sequences, chosen by a hash seeded with ``seed``
(:func:`~deconfound.data.face_sets.held_out`).
"""

from __future__ import annotations

import pickle
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from deconfound.data.annotations import Problems, image_size, read_rows
from deconfound.data.face_sets import (
    SPLITS,
    carve,
    check_carving,
    check_split,
    one_line_message,
    text_lines,
)
from deconfound.data.sample import BASIC_EMOTIONS, Box, DatasetInfo, ImageRef, Sample
from deconfound.errors import ConfigError, DataError

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
            f"{path}: not a plain pickled dict ({one_line_message(e)}); save the labels as a dict "
            "of str keys and str/int values, or as a .csv with columns key,emotion"
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
        check_carving(val_fraction, seed)
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
        check_split(split, "mixbasic")
        if split == "test":
            return self._list("test")
        train = self._list("train")
        what = str(self.root / f"train_ids_{self.fold}.csv")
        return carve(train, self._groups, split, what, self.val_fraction, self.seed)

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
            entries = [((n, t.strip()), f"{path}: line {n}") for n, t in text_lines(path)]
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

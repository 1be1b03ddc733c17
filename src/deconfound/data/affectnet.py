"""AffectNet, its manually annotated part: one face box per image, with an expression and
valence and arousal.

    <root>/training.csv, <root>/validation.csv   columns subDirectory_filePath, face_x, face_y,
                                                 face_width, face_height, facial_landmarks,
                                                 expression, valence, arousal
    <root>/Manually_Annotated_Images/<subDirectory_filePath>

Expression codes 0-7 are Neutral, Happy, Sad, Surprise, Fear, Disgust, Anger, Contempt; 8-10
(None, Uncertain, No-Face) are left out, as in the papers, and Contempt too for the 7-class
protocol. ``validation.csv`` is the test split (the test set is not public); val is carved out
of ``training.csv``: a ``val_fraction`` share of its images, chosen by a hash seeded with
``seed`` (:func:`~deconfound.data.face_sets.held_out`). Valence and arousal (in [-1, 1]) are kept
as continuous labels.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path

from deconfound.data.annotations import Problems, check_box, image_size, parse_int, read_rows
from deconfound.data.face_sets import SPLITS, carve, check_carving, check_split
from deconfound.data.sample import Box, DatasetInfo, ImageRef, Sample
from deconfound.errors import ConfigError, DataError

log = logging.getLogger(__name__)

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
        check_carving(val_fraction, seed)
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
        check_split(split, "affectnet")
        if split == "test":
            return self._read("validation.csv", "test")
        train = self._read("training.csv", "train")
        groups: dict[ImageRef, str] = {s.image: str(s.image) for s in train}
        what = str(self.root / "training.csv")
        return carve(train, groups, split, what, self.val_fraction, self.seed)

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

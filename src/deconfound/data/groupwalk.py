"""GroupWalk (Mittal et al., EmotiCon 2020): people walking in groups, each tracked person labelled
Angry, Happy, Neutral or Sad; the papers report mAP over the four classes.

No public code reads GroupWalk's release, so this reader defines a manifest that users fill from
their copy: ``<root>/annotations.csv`` with one row per person per frame, columns

    frame      path of the extracted frame image, relative to root
    video      the video the frame comes from (keep a video in one split)
    person     the person's track id within the video
    x1,y1,x2,y2  the person's box in pixels (x2, y2 exclusive)
    emotion    Angry, Happy, Neutral or Sad
    split      train, val or test
"""

from __future__ import annotations

from pathlib import Path

from deconfound.data.annotations import (
    Problems,
    check_box,
    image_size,
    parse_box,
    read_rows,
)
from deconfound.data.sample import DatasetInfo, Sample
from deconfound.errors import DataError

CLASSES = ("Angry", "Happy", "Neutral", "Sad")
SPLITS = ("train", "val", "test")
COLUMNS = ("frame", "video", "person", "x1", "y1", "x2", "y2", "emotion", "split")
INFO = DatasetInfo(
    name="groupwalk", classes=CLASSES, task="multiclass", splits=SPLITS, headline="mAP"
)


class GroupWalkReader:
    """Reads the GroupWalk manifest under ``root``; a bad row stops reading, or with
    ``skip_bad`` is left out and counted (``problems``)."""

    info = INFO

    def __init__(self, root: str | Path, skip_bad: bool = False) -> None:
        self.root = Path(root)
        self.problems = Problems(skip_bad)
        self._sizes: dict[Path, tuple[int, int]] = {}

    def samples(self, split: str) -> list[Sample]:
        """Every person-frame of ``split``, in manifest order (a row whose split is none of
        GroupWalk's is reported with ``train``)."""
        if split not in SPLITS:
            raise DataError(f"unknown split '{split}' for GroupWalk; choose {', '.join(SPLITS)}")
        csv_path = self.root / "annotations.csv"
        rows = [
            (row, f"{csv_path}: row {n}")
            for n, row in read_rows(csv_path, COLUMNS)
            if row["split"].strip() == split
            or (split == SPLITS[0] and row["split"].strip() not in SPLITS)
        ]
        if not rows:
            raise DataError(f"{csv_path}: no rows for split '{split}'")
        return self.problems.parse_all(rows, self._sample, split)

    def _sample(self, row: dict[str, str], where: str) -> Sample:
        if row["split"].strip() not in SPLITS:
            raise DataError(
                f"{where}: unknown split '{row['split'].strip()}'; expected {', '.join(SPLITS)}"
            )
        path = self.root / row["frame"].strip()
        if path not in self._sizes:  # several people share a frame: read its header once
            self._sizes[path] = image_size(path, where)
        box = parse_box(row, "", where)
        check_box(box, self._sizes[path], "person box", where, path)
        emotion = row["emotion"].strip()
        by_name = {c.lower(): i for i, c in enumerate(CLASSES)}
        if emotion.lower() not in by_name:
            raise DataError(
                f"{where}: unknown emotion '{emotion}'; expected one of {', '.join(CLASSES)}"
            )
        return Sample(path, box, None, (by_name[emotion.lower()],), None, row["split"].strip())

"""Reader of the synthetic benchmark's ``annotations.csv`` (format in ``generate.py``)."""

from __future__ import annotations

from pathlib import Path

from deconfound.data.annotations import check_box, image_size, parse_box, parse_int, read_rows
from deconfound.data.sample import DatasetInfo, Sample
from deconfound.data.synthetic.generate import ANNOTATION_COLUMNS, PERSON_SPLITS
from deconfound.data.synthetic.render import EMOTIONS, SCENES
from deconfound.errors import DataError

INFO = DatasetInfo(name="synthetic", classes=EMOTIONS, task="multiclass", splits=PERSON_SPLITS)


class SyntheticReader:
    """Reads the synthetic set under ``root``, validating every row it returns."""

    info = INFO

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def samples(self, split: str) -> list[Sample]:
        """All samples of ``split``; raises :class:`DataError` on the first bad row."""
        if split not in PERSON_SPLITS:
            raise DataError(
                f"unknown split '{split}' for the synthetic set; "
                f"choose one of {', '.join(PERSON_SPLITS)}"
            )
        csv_path = self.root / "annotations.csv"
        out = []
        for row_no, row in read_rows(csv_path, ANNOTATION_COLUMNS):
            if row["split"] != split:
                continue
            out.append(self._sample(row, f"{csv_path}: row {row_no}"))
        if not out:
            raise DataError(f"{csv_path}: no rows for split '{split}'; re-generate the set")
        return out

    def _sample(self, row: dict[str, str], where: str) -> Sample:
        path = self.root / row["image"]
        size = image_size(path, where)
        person, face = parse_box(row, "person", where), parse_box(row, "face", where)
        check_box(person, size, "person box", where, path)
        check_box(face, size, "face box", where, path)
        emotion = row["emotion"].strip()
        if emotion not in EMOTIONS:
            raise DataError(
                f"{where}: unknown emotion '{emotion}'; expected one of {', '.join(EMOTIONS)}"
            )
        scene = parse_int(row, "scene", where)
        if not 0 <= scene < len(SCENES):
            raise DataError(f"{where}: scene id {scene} outside 0..{len(SCENES) - 1}")
        return Sample(path, person, face, (EMOTIONS.index(emotion),), scene, row["split"])

"""Readers of the synthetic benchmark: people in context (``annotations.csv``) and the person-free
scene pictures (``scenes.csv``); the format is described in ``generate.py``."""

from __future__ import annotations

from pathlib import Path

from deconfound.data.annotations import (
    Problems,
    check_box,
    image_size,
    parse_box,
    parse_int,
    read_rows,
)
from deconfound.data.sample import DatasetInfo, Sample
from deconfound.data.synthetic.generate import (
    ANNOTATION_COLUMNS,
    PERSON_SPLITS,
    SCENE_COLUMNS,
    SCENE_SPLITS,
)
from deconfound.data.synthetic.render import EMOTIONS, SCENES
from deconfound.errors import DataError

INFO = DatasetInfo(
    name="synthetic",
    classes=EMOTIONS,
    task="multiclass",
    splits=PERSON_SPLITS,
    boxes=("person", "face"),
    drawn=True,
)
SCENES_INFO = DatasetInfo(
    name="synthetic_scenes",
    classes=tuple(s.name for s in SCENES),
    task="multiclass",
    splits=SCENE_SPLITS,
    boxes=(),
    drawn=True,
)


def _rows(
    root: Path, csv_name: str, columns: tuple[str, ...], split: str, info: DatasetInfo
) -> list[tuple[dict[str, str], str]]:
    """The rows of ``split`` in ``csv_name``, each with its "file: row N" location; with the
    first split, also the rows whose split is none of the set's (for the parser to report)."""
    if split not in info.splits:
        raise DataError(
            f"unknown split '{split}' for the {info.name} set; "
            f"choose one of {', '.join(info.splits)}"
        )
    csv_path = root / csv_name
    rows = [
        (row, f"{csv_path}: row {row_no}")
        for row_no, row in read_rows(csv_path, columns)
        if row["split"] == split or (split == info.splits[0] and row["split"] not in info.splits)
    ]
    if not rows:
        raise DataError(f"{csv_path}: no rows for split '{split}'; re-generate the set")
    return rows


def _scene(row: dict[str, str], where: str) -> int:
    scene = parse_int(row, "scene", where)
    if not 0 <= scene < len(SCENES):
        raise DataError(f"{where}: scene id {scene} outside 0..{len(SCENES) - 1}")
    return scene


class _TableReader:
    """One CSV table of the set under ``root``, every row validated; a bad row stops reading,
    or with ``skip_bad`` is left out and counted (``problems``)."""

    info: DatasetInfo
    table: str
    columns: tuple[str, ...]

    def __init__(self, root: str | Path, skip_bad: bool = False) -> None:
        self.root = Path(root)
        self.problems = Problems(skip_bad)

    def samples(self, split: str) -> list[Sample]:
        """All samples of ``split``; raises :class:`DataError` on the first bad row."""
        rows = _rows(self.root, self.table, self.columns, split, self.info)
        return self.problems.parse_all(rows, self._checked, split)

    def _checked(self, row: dict[str, str], where: str) -> Sample:
        if row["split"] not in self.info.splits:
            raise DataError(
                f"{where}: unknown split '{row['split']}'; expected one of "
                f"{', '.join(self.info.splits)}"
            )
        return self._sample(row, where)

    def _sample(self, row: dict[str, str], where: str) -> Sample:
        raise NotImplementedError


class SyntheticReader(_TableReader):
    """Reads the people of the synthetic set under ``root`` (``annotations.csv``)."""

    info, table, columns = INFO, "annotations.csv", ANNOTATION_COLUMNS

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
        scene = _scene(row, where)
        return Sample(path, person, face, (EMOTIONS.index(emotion),), scene, row["split"])


class SyntheticScenesReader(_TableReader):
    """Reads the person-free scene pictures (``scenes.csv``, splits ``train`` and ``val``),
    labelled by scene type: the data a scene backbone is pretrained on."""

    info, table, columns = SCENES_INFO, "scenes.csv", SCENE_COLUMNS

    def _sample(self, row: dict[str, str], where: str) -> Sample:
        path = self.root / row["image"]
        image_size(path, where)
        scene = _scene(row, where)
        return Sample(path, None, None, (scene,), scene, row["split"])

"""RAF-DB, its basic-emotion part. Each sample is one aligned face; the face box is the whole
picture.

    <root>/EmoLabel/list_patition_label.txt   (sic) lines "train_00001.jpg 5", "test_0001.jpg 1";
                                              labels 1-7: Surprise, Fear, Disgust, Happiness,
                                              Sadness, Anger, Neutral
    <root>/Image/aligned/<stem>_aligned.jpg   the aligned 100x100 faces (the name as listed, or
                                              Image/original/<name>, is accepted too)

The split is the name's prefix; val is carved out of train: a ``val_fraction`` share of the
training images, chosen by a hash seeded with ``seed``
(:func:`~deconfound.data.face_sets.held_out`).
"""

from __future__ import annotations

from pathlib import Path

from deconfound.data.annotations import Problems, image_size
from deconfound.data.face_sets import SPLITS, carve, check_carving, check_split, text_lines
from deconfound.data.sample import Box, DatasetInfo, ImageRef, Sample
from deconfound.errors import DataError

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
        check_carving(val_fraction, seed)
        self.root = Path(root)
        self.val_fraction = val_fraction
        self.seed = seed
        self.problems = Problems(skip_bad)
        self._parsed: list[Sample] | None = None

    def samples(self, split: str) -> list[Sample]:
        """Every image of ``split``, in list order."""
        check_split(split, "rafdb")
        parsed = self._read()
        if split == "test":
            return [s for s in parsed if s.split == "test"]
        train = [s for s in parsed if s.split == "train"]
        groups: dict[ImageRef, str] = {s.image: str(s.image) for s in train}
        what = str(self.root / RAFDB_LIST)
        return carve(train, groups, split, what, self.val_fraction, self.seed)

    def _read(self) -> list[Sample]:
        if self._parsed is None:
            path = self.root / RAFDB_LIST
            if not path.is_file():
                raise DataError(
                    f"{path}: label list not found; RAF-DB keeps it as {RAFDB_LIST} under data.root"
                )
            lines = [(t, f"{path}: line {n}") for n, t in text_lines(path)]
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

"""CAER-S (Lee et al., 2019): about 70 000 TV-show frames in 7 classes, as
``<root>/train/<Class>/<image>`` and ``<root>/test/<Class>/<image>`` (``Train``/``Test`` and any
capitalisation of the class folders are accepted).

The frames come without face boxes. The face view is the main face (the largest one MTCNN finds),
and the context view is the frame with that face masked, as CAER-Net does. Boxes are detected once
(in batches of frames of one size, on the chosen device) and cached per split folder; boxes from
another detector can be given as a file of ``relpath,label,x1,y1,x2,y2`` lines instead: the
community files' layout is read as it is, with its paths matched to the frames on disk
regardless of case and of the class folders' spelling (``train/Angry/0001.png`` is the frame
``Train/Anger/0001.png``). Where no face is found, or the box file has no line for a frame, the
box falls back to :func:`~deconfound.data.faces.fallback_face` (counted in ``fallbacks`` and
logged, naming the first frames); a box file that matches none of a split's frames is an error.
The validation split is carved out of ``train``: a fixed share of its frames, chosen by a hash
of each file's path (so it does not change when files are added).
"""

from __future__ import annotations

import hashlib
import logging
import os
from pathlib import Path

from deconfound.data.annotations import Problems, image_size
from deconfound.data.faces import (
    DETECTORS,
    FALLBACK_RULE,
    FaceTable,
    Find,
    Found,
    detected,
    fallback_face,
    read_box_file,
)
from deconfound.data.sample import Box, DatasetInfo, Sample
from deconfound.errors import ConfigError, DataError
from deconfound.progress import show_progress

log = logging.getLogger(__name__)

CLASSES = ("Anger", "Disgust", "Fear", "Happy", "Neutral", "Sad", "Surprise")
ALIASES = {
    "angry": "Anger", "disgusted": "Disgust", "fearful": "Fear", "afraid": "Fear",
    "happiness": "Happy", "sadness": "Sad", "surprised": "Surprise",
}  # fmt: skip
"""Other spellings of the class names, as community copies and box files use them."""
SPLITS = ("train", "val", "test")
INFO = DatasetInfo(
    name="caer_s", classes=CLASSES, task="multiclass", splits=SPLITS, boxes=("face",)
)
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg")


class CaerSReader:
    """Reads CAER-S under ``root``.

    Args:
        root: the folder holding ``train/`` and ``test/``.
        val_fraction: share of ``train`` frames held out as ``val``.
        faces: a face box file (``relpath,label,x1,y1,x2,y2``, paths relative to ``root``);
            default: detect the faces with ``detector``.
        detector: the bundled face detector (``mtcnn``).
        device: where the detector runs (``cpu``, ``cuda``, ``auto``: cuda when there is one).
        batch_size: frames given to the detector at once (frames of one size run as one batch).
        cache_dir: where the per-split face tables go; default ``root/deconfound-faces``.
        progress: show a progress bar while detecting (where standard error is a terminal).
        skip_bad: leave out (and count in ``problems``) bad frames instead of stopping.
    """

    info = INFO

    def __init__(
        self,
        root: str | Path,
        val_fraction: float = 0.1,
        faces: str | Path | None = None,
        detector: str = "mtcnn",
        device: str = "auto",
        batch_size: int = 16,
        cache_dir: str | Path | None = None,
        progress: bool = True,
        skip_bad: bool = False,
    ) -> None:
        if not 0 <= val_fraction < 1:
            raise ConfigError(f"data.args.val_fraction must be in [0, 1), got {val_fraction}")
        if faces is None and detector not in DETECTORS:
            raise ConfigError(
                f"unknown face detector '{detector}'; choose {', '.join(DETECTORS)} or give "
                "data.args.faces=BOX_FILE"
            )
        self.root = Path(root)
        self.val_fraction = val_fraction
        self.faces = Path(faces) if faces is not None else None
        self.detector = detector
        if batch_size < 1:
            raise ConfigError(f"data.args.batch_size must be 1 or more, got {batch_size}")
        self.device, self.batch_size = device, batch_size
        self.cache_dir = (
            Path(cache_dir) if cache_dir is not None else self.root / "deconfound-faces"
        )
        self.progress = progress
        self.problems = Problems(skip_bad)
        self.fallbacks: dict[str, int] = {}
        self._tables: dict[str, FaceTable] = {}
        self._listings: dict[Path, dict[str, tuple[Path, int]]] = {}

    def samples(self, split: str) -> list[Sample]:
        """Every frame of ``split`` with its face box, in path order."""
        if split not in SPLITS:
            raise DataError(f"unknown split '{split}' for CAER-S; choose {', '.join(SPLITS)}")
        folder = self._folder("test" if split == "test" else "train")
        images = self._images(folder)
        if split != "test":
            images = {r: v for r, v in images.items() if self._is_val(r) == (split == "val")}
        table = self._table(folder, {r: path for r, (path, _) in images.items()})
        self.fallbacks[split] = 0
        missing: list[str] = []

        def parse(rel: str, where: str) -> Sample:
            path, label = images[rel]
            size, box = table.get(rel)
            if box is None:
                box = fallback_face(size)
                self.fallbacks[split] += 1
                missing.append(rel)
            elif problem := box.problem(size):
                raise DataError(f"{where}: face box {problem}; fix the box file")
            return Sample(path, None, box, (label,), None, split)

        rows = ((rel, f"{images[rel][0]}") for rel in images)
        samples = self.problems.parse_all(rows, parse, split)
        if missing and self.faces is not None and len(missing) == len(images):
            raise DataError(
                f"{self.faces}: none of the {len(images)} frames of {folder.name}/ "
                f"({split}) has a line (e.g. {missing[0]}); its paths must name the frames "
                "relative to data.root, as split/class/file"
            )
        if missing:
            why = "no line in the box file" if self.faces is not None else "no face found"
            log.warning(
                "CAER-S %s: %s for %d of %d frames (first: %s); used the fallback box (%s)",
                split, why, len(missing), len(images), ", ".join(missing[:3]), FALLBACK_RULE,
            )  # fmt: skip
        return samples

    def _folder(self, name: str) -> Path:
        if not self.root.is_dir():
            raise DataError(f"{self.root}: CAER-S root not found; check data.root")
        found = [p for p in self.root.iterdir() if p.is_dir() and p.name.lower() == name]
        if not found:
            raise DataError(f"{self.root}: no '{name}/' folder; CAER-S has train/ and test/")
        return found[0]

    def _images(self, folder: Path) -> dict[str, tuple[Path, int]]:
        """``relpath → (path, class index)`` for every image under ``folder``'s class folders
        (listed once: ``train`` and ``val`` share the listing)."""
        if folder not in self._listings:
            self._listings[folder] = self._list(folder)
        return self._listings[folder]

    def _list(self, folder: Path) -> dict[str, tuple[Path, int]]:
        images: dict[str, tuple[Path, int]] = {}
        for class_dir in sorted(p for p in folder.iterdir() if p.is_dir()):
            label = _class_index(class_dir.name)
            if label is None or class_dir.name.isdigit():
                raise DataError(
                    f"{class_dir}: unknown class folder; CAER-S's are {', '.join(CLASSES)}"
                )
            for path in sorted(class_dir.iterdir()):
                if path.suffix.lower() in IMAGE_SUFFIXES and not path.name.startswith("."):
                    images[path.relative_to(self.root).as_posix()] = (path, label)
        if not images:
            raise DataError(f"{folder}: no images in its class folders")
        return images

    def _is_val(self, rel: str) -> bool:
        h = int.from_bytes(hashlib.sha1(rel.encode()).digest()[:4], "big")
        return h / 2**32 < self.val_fraction

    def _table(self, folder: Path, images: dict[str, Path]) -> FaceTable:
        if self.faces is not None:
            boxes = read_box_file(self.faces)
            source = f"file:{hashlib.sha1(self.faces.read_bytes()).hexdigest()[:16]}"
            find, what = _from_file(boxes, self.faces), "reading face boxes"
        else:
            source, what = self.detector, f"detecting faces ({self.detector})"
            find = None
        cache = self.cache_dir / f"{folder.name.lower()}.{source.split(':')[0]}.json"
        table = self._tables.get(str(cache)) or FaceTable(cache, source)
        self._tables[str(cache)] = table
        todo = sum(rel not in table.faces for rel in images)
        if todo:
            if not os.access(self.cache_dir if self.cache_dir.exists() else self.root, os.W_OK):
                raise DataError(f"{self.cache_dir}: not writable; set data.args.cache_dir")
            if find is None:
                device = self._device()
                log.warning(
                    "CAER-S %s/: detecting the faces of %d frames with %s on %s, %d at a time "
                    "(once: cached in %s); give data.args.faces=BOX_FILE to use boxes you have",
                    folder.name, todo, self.detector, device, self.batch_size, table.cache,
                )  # fmt: skip
                find = detected(DETECTORS[self.detector](device=device))
            table.fill(images, find, what, show_progress(self.progress), self.batch_size)
        return table

    def _device(self) -> str:
        if self.device != "auto":
            return self.device
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"


def frame_key(rel: str) -> tuple[str, ...] | None:
    """What identifies a frame whatever the spelling: (split folder, class index, file name),
    lower-cased; None for a path that is not split/class/file."""
    parts = rel.replace("\\", "/").strip("/").split("/")
    if len(parts) < 3:
        return None
    label = _class_index(parts[-2])
    if label is None:
        return None
    return (parts[-3].lower(), str(label), parts[-1].lower())


def _from_file(boxes: dict[str, tuple[str, Box]], source: Path) -> Find:
    """A ``find`` for the face table that takes the boxes of a box file (no line: None),
    matching paths by :func:`frame_key`."""
    keyed = {frame_key(rel) or (rel.lower(),): value for rel, value in boxes.items()}

    def one(rel: str, path: Path) -> Found:
        size = image_size(path, str(path))
        value = keyed.get(frame_key(rel) or (rel.lower(),))
        if value is None:
            return size, None
        label, box = value
        folder = Path(rel).parent.name
        if _class_index(label) != _class_index(folder):
            raise DataError(
                f"{path}: the box file {source.name} labels it '{label}', its folder '{folder}'"
            )
        return size, box

    def find(batch: list[tuple[str, Path]]) -> list[Found | DataError]:
        out: list[Found | DataError] = []
        for rel, path in batch:
            try:
                out.append(one(rel, path))
            except DataError as e:
                out.append(e)
        return out

    return find


def _class_index(name: str) -> int | None:
    """A class given by name (any case, or a spelling of :data:`ALIASES`) or index."""
    if name.isdigit():
        return int(name) if int(name) < len(CLASSES) else None
    name = ALIASES.get(name.lower(), name)
    lowered = [c.lower() for c in CLASSES]
    return lowered.index(name.lower()) if name.lower() in lowered else None

"""Face boxes for images that come without them (CAER-S): a bundled detector, a box file, a
documented fallback, and a per-split cache so that detection runs once.

The bundled detector is MTCNN (Zhang et al., 2016) with the weights that ship inside the
``facenet-pytorch`` 2.5.3 wheel: nothing is downloaded. Users with a better detector give its
boxes as a file of ``relpath,label,x1,y1,x2,y2`` lines, the community format for CAER-S.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Protocol

import numpy as np
from PIL import Image
from tqdm import tqdm

from deconfound.data.sample import Box
from deconfound.data.views import load_image
from deconfound.errors import ConfigError, DataError
from deconfound.io import atomic_write_text

log = logging.getLogger(__name__)

Found = tuple[tuple[int, int], Box | None]
"""An image's (width, height) and main face box (None: no face)."""

Find = Callable[[list[tuple[str, Path]]], list["Found | DataError"]]
"""How a :class:`FaceTable` fills: (relpath, path) pairs to each one's :data:`Found`, or the
DataError met reading it."""

SAVE_EVERY = 200
"""Detections between two writes of the cache: an interrupted detection resumes from there."""


Faces = list[tuple[Box, float]]
"""The faces found in one picture: (box within the picture, score) pairs."""


class FaceDetector(Protocol):
    """Finds faces: ``detect_many(images) -> [faces of each image]``."""

    name: str

    def detect_many(self, images: list[Image.Image]) -> list[Faces]: ...


class MTCNNDetector:
    """MTCNN from ``facenet-pytorch`` (its bundled P/R/O-Net weights) on ``device``; faces
    scored below ``threshold`` or smaller than ``min_face`` pixels are ignored. Pictures of one
    size go through the networks together (:meth:`detect_many`). About 0.2 s per 600-pixel
    image on one CPU core."""

    name = "mtcnn"

    def __init__(self, threshold: float = 0.9, min_face: int = 20, device: str = "cpu") -> None:
        try:
            from facenet_pytorch import MTCNN
        except ImportError:
            raise ConfigError(
                "the mtcnn detector needs facenet-pytorch: pip install 'facenet-pytorch==2.5.3'"
            ) from None
        self.threshold, self.min_face = threshold, min_face
        self._mtcnn = MTCNN(keep_all=True, min_face_size=min_face, device=device)

    def detect(self, image: Image.Image) -> Faces:
        """The faces in one picture."""
        return self.detect_many([image])[0]

    def detect_many(self, images: list[Image.Image]) -> list[Faces]:
        """The faces in each picture; pictures of one size are detected as one batch."""
        out: list[Faces] = [[] for _ in images]
        by_size: dict[tuple[int, int], list[int]] = {}
        for i, image in enumerate(images):
            if min(image.size) >= self.min_face:  # (no face fits, and MTCNN fails, below)
                by_size.setdefault(image.size, []).append(i)
        for size, members in by_size.items():
            boxes, scores = self._mtcnn.detect([images[i] for i in members])
            for i, b, p in zip(members, boxes, scores, strict=True):
                out[i] = self._faces(b, p, size)
        return out

    def _faces(self, boxes: object, scores: object, size: tuple[int, int]) -> Faces:
        if boxes is None:
            return []
        faces = []  # under NumPy 2 MTCNN hands back object arrays: cast them
        boxes, scores = np.asarray(boxes, dtype=float), np.asarray(scores, dtype=float)
        for b, p in zip(boxes.reshape(-1, 4), scores.reshape(-1), strict=True):
            box = Box(*(round(v) for v in b)).clip(size)
            if p >= self.threshold and box.width > 0 and box.height > 0:
                faces.append((box, float(p)))
        return faces


DETECTORS: dict[str, type] = {"mtcnn": MTCNNDetector}
"""Face detectors by config name."""


def main_face(faces: Faces) -> Box | None:
    """The face a frame is about: the largest one (the labelled actor is usually in front)."""
    if not faces:
        return None
    return max(faces, key=lambda f: f[0].width * f[0].height)[0]


FALLBACK_RULE = "a square of side min(W, H)/2 centred horizontally at a third of the height"


def fallback_face(size: tuple[int, int]) -> Box:
    """Where the face is assumed when none is found (``FALLBACK_RULE``: where a TV frame's
    speaker usually is)."""
    w, h = size
    side = max(min(w, h) // 2, 1)
    x1, y1 = (w - side) // 2, max(h // 3 - side // 2, 0)
    return Box(x1, y1, x1 + side, y1 + side).clip(size)


def read_box_file(path: Path) -> dict[str, tuple[str, Box]]:
    """``relpath → (label, box)`` from lines ``relpath,label,x1,y1,x2,y2``."""
    if not path.is_file():
        raise DataError(f"{path}: face box file not found; fix data.args.faces")
    out = {}
    try:
        text = path.read_text(encoding="utf-8-sig")  # (a spreadsheet's byte-order mark)
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: not a text file ({e}); save it as UTF-8") from None
    for n, line in enumerate(text.splitlines(), start=1):
        if not line.strip():
            continue
        parts = [p.strip() for p in line.split(",")]
        try:
            rel, label = parts[0], parts[1]
            box = Box(*(int(float(v)) for v in parts[2:6]))
            if len(parts) != 6:
                raise ValueError
        except (ValueError, IndexError, TypeError):
            raise DataError(
                f"{path}: line {n} must be relpath,label,x1,y1,x2,y2, got {line!r}"
            ) from None
        out[rel.replace("\\", "/")] = (label, box)
    return out


class FaceTable:
    """Each image's size and face box (None: no face found) for one split, kept in a JSON cache
    ``{"source": ..., "faces": {relpath: [w, h, x1, y1, x2, y2]}}`` (box ``null`` when none)
    written atomically as it fills.

    ``source`` names where the boxes come from (a detector, or a box file's hash); a cache made
    from another source is started again. Images that could not be read are kept in
    ``errors`` (not cached), so the reader reports them on their own row.
    """

    def __init__(self, cache: Path, source: str) -> None:
        self.cache, self.source = cache, source
        self.faces: dict[str, list[int | None]] = {}
        self.errors: dict[str, str] = {}
        if cache.is_file():
            try:
                saved = json.loads(cache.read_text())
            except json.JSONDecodeError:
                saved = {}
            if saved.get("source") == source:
                self.faces = saved.get("faces", {})

    def save(self) -> None:
        payload = {"source": self.source, "faces": self.faces}
        atomic_write_text(self.cache, json.dumps(payload, separators=(",", ":")))

    def fill(
        self,
        images: Mapping[str, Path],
        find: Find,
        what: str,
        progress: bool = True,
        batch_size: int = 1,
    ) -> None:
        """``find([(relpath, path), ...]) -> [(size, box) or DataError, ...]`` for every image
        not in the table yet, ``batch_size`` at a time."""
        todo = [rel for rel in images if rel not in self.faces]
        if not todo:
            return
        log.info("%s: %d images (cached in %s)", what, len(todo), self.cache)
        bar = tqdm(total=len(todo), desc=what, unit="img", disable=not progress)
        since_save = 0
        for start in range(0, len(todo), batch_size):
            batch = todo[start : start + batch_size]
            for rel, found in zip(batch, find([(r, images[r]) for r in batch]), strict=True):
                if isinstance(found, DataError):
                    self.errors[rel] = str(found)
                    continue
                size, box = found
                self.faces[rel] = [*size, *(box.as_tuple() if box else (None,))]
            bar.update(len(batch))
            since_save += len(batch)
            if since_save >= SAVE_EVERY:
                self.save()
                since_save = 0
        bar.close()
        self.save()

    def get(self, rel: str) -> tuple[tuple[int, int], Box | None]:
        """The image's (width, height) and face box; raises the error met reading it."""
        if rel in self.errors:
            raise DataError(self.errors[rel])
        w, h, *coords = self.faces[rel]
        size = (int(w), int(h))  # type: ignore[arg-type]
        if coords[0] is None:
            return size, None
        return size, Box(*(int(c) for c in coords))  # type: ignore[arg-type]


def detected(detector: FaceDetector) -> Find:
    """A ``find`` for :meth:`FaceTable.fill` that runs ``detector`` on a batch of pictures and
    keeps each one's main face (an unreadable picture gives its DataError)."""

    def find(batch: list[tuple[str, Path]]) -> list[Found | DataError]:
        images: list[Image.Image] = []
        out: list[Found | DataError | None] = []
        for _, path in batch:
            try:
                images.append(load_image(path))
                out.append(None)
            except DataError as e:
                out.append(e)
        faces = iter(detector.detect_many(images)) if images else iter(())
        pictures = iter(images)
        return [e if e is not None else _main(next(pictures), next(faces)) for e in out]

    return find


def _main(image: Image.Image, faces: Faces) -> Found:
    return image.size, main_face(faces)

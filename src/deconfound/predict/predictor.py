"""The predictor: persons found, cut into the model's views, and classified in batches."""

from __future__ import annotations

import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import torch
from PIL import Image
from tqdm import tqdm

from deconfound.data import sidecars
from deconfound.data.augment import Augment
from deconfound.data.faces import DETECTORS, FaceDetector
from deconfound.data.sample import Box, Sample
from deconfound.data.views import load_image, make_views
from deconfound.errors import ConfigError, DataError

log = logging.getLogger(__name__)

BoxSource = Literal["given", "detected", "whole-image"]
ImageInput = str | os.PathLike[str] | Image.Image
BoxInput = Box | Sequence[int]

BOXED_VIEWS = ("body", "face", "context", "pose", "objects")
"""Views that depend on where the person is; a model reading none of them sees whole images."""

UP, DOWN, SIDE = 0.5, 6.0, 1.0
BODY_RULE = (
    f"the face box widened by {SIDE:g} face width on each side, raised by {UP:g} face height and "
    f"lowered by {DOWN:g} face heights (a standing person is about 7.5 heads tall), clipped to "
    "the image"
)
"""How a detected face gives a body box (for models trained on body boxes)."""


def body_from_face(face: Box, size: tuple[int, int]) -> Box:
    """The body box of a person whose face is ``face``, in an image of ``size`` (BODY_RULE)."""
    w, h = face.width, face.height
    grown = (face.x1 - SIDE * w, face.y1 - UP * h, face.x2 + SIDE * w, face.y2 + DOWN * h)
    return Box(*(round(v) for v in grown)).clip(size)


def face_from_body(body: Box) -> Box:
    """Where BODY_RULE puts the face in ``body`` (its inverse): for a data set that annotates
    both, when only the body box is known (given, or the whole image)."""
    w, h = body.width / (1 + 2 * SIDE), body.height / (UP + 1 + DOWN)
    x1, y1 = round(body.x1 + SIDE * w), round(body.y1 + UP * h)
    return Box(x1, y1, max(round(body.x2 - SIDE * w), x1 + 1), max(round(y1 + h), y1 + 1))


@dataclass(frozen=True)
class Prediction:
    """The emotions of one person (or why an image was skipped).

    Attributes:
        file: the image's path (``<image N>`` for an in-memory picture, N its input position).
        box: the person's box ``(x1, y1, x2, y2)`` in pixels, ``x2``/``y2`` exclusive: a body
            box, or a face box for a model trained on faces (its data set's
            ``DatasetInfo.boxes``); None when skipped.
        box_source: ``given``, ``detected`` (from a face the detector found) or ``whole-image``
            (no box given and no face found, detection off, or a whole-image model).
        face: the face the detector found (``box_source`` ``detected``; the body box ``box``
            was grown from it for a model trained on body boxes), else None.
        top_k: the most probable emotions with their probabilities, most probable first.
        probabilities: every class's probability in the data set's class order: a softmax over
            the classes of a multi-class data set, one sigmoid per class for a multi-label one
            (EMOTIC), where several emotions can be likely at once.
        error: why the image was skipped (``skip_bad``); None for a prediction.

    No model has a continuous head yet; one (EMOTIC's valence, arousal, dominance) would add a
    field mapping each dimension to its value, a key of :meth:`record` and CSV columns.
    """

    file: str
    box: tuple[int, int, int, int] | None
    box_source: BoxSource | None
    top_k: tuple[tuple[str, float], ...] = ()
    probabilities: Mapping[str, float] = field(default_factory=dict)
    error: str | None = None
    face: tuple[int, int, int, int] | None = None

    def record(self) -> dict[str, Any]:
        """This prediction as plain JSON-ready values (probabilities to 6 decimals)."""
        return {
            "file": self.file,
            "box": list(self.box) if self.box else None,
            "box_source": self.box_source,
            "face": list(self.face) if self.face else None,
            "top_k": [{"emotion": e, "probability": round(p, 6)} for e, p in self.top_k],
            "probabilities": {c: round(p, 6) for c, p in self.probabilities.items()},
            "error": self.error,
        }


@dataclass
class _Person:
    index: int  # its place in the output
    file: str
    box: Box
    source: BoxSource
    views: dict[str, torch.Tensor]
    face: Box | None = None  # the detector's, for a detected person


class Predictor:
    """A trained checkpoint ready to predict the emotions of the people in any image.

    Args:
        checkpoint: a checkpoint that ``deconfound train`` wrote (``best.ckpt``).
        device: where the model (and the face detector) run: ``cpu``, ``cuda``, ``cuda:1``.
        batch_size: persons per forward pass.
        detector: the face detector for images without a box (``mtcnn``, any
            :class:`~deconfound.data.faces.FaceDetector`), or None to take the whole image.
        top_k: emotions per prediction's ``top_k``.
        sidecar_root: the folder whose ``pose/``, ``depth/``, ``objects/`` and ``masks/`` hold
            the images' sidecar files (:mod:`deconfound.data.sidecars`), for models that read them.
        progress: show a progress bar over the images.
    """

    def __init__(
        self,
        checkpoint: str | os.PathLike[str],
        *,
        device: str = "cpu",
        batch_size: int = 32,
        detector: str | FaceDetector | None = "mtcnn",
        top_k: int = 3,
        sidecar_root: str | os.PathLike[str] | None = None,
        progress: bool = False,
    ) -> None:
        from deconfound.engine import load_module

        if batch_size < 1 or top_k < 1:
            raise ConfigError(f"batch size and top-k must be at least 1, got {batch_size}, {top_k}")
        if isinstance(detector, str) and detector not in DETECTORS:
            raise ConfigError(f"unknown face detector '{detector}'; choose {', '.join(DETECTORS)}")
        module = load_module(checkpoint)
        if not module.info.boxes:  # a set of person-free pictures: its classes are not emotions
            raise ConfigError(
                f"{checkpoint}: a model of {module.info.name} (pictures without people, e.g. "
                "the scene classifier behind a dictionary) does not recognise emotions; give an "
                "emotion model's checkpoint"
            )
        if module.info.drawn:
            log.warning(
                "%s was trained on a drawn data set (%s): it has seen drawn figures only and "
                "cannot read photographs",
                checkpoint,
                module.info.name,
            )
        try:
            self.module = module.to(device).eval()
        except (RuntimeError, AssertionError) as e:
            raise ConfigError(f"cannot use device '{device}' ({e}); try --device cpu") from None
        self.device, self.batch_size, self.progress = device, batch_size, progress
        self.info = module.info
        self.top_k = min(top_k, self.info.num_classes)
        self.views = tuple(module.model.views)
        data = module.cfg.data
        missing = [v for v in self.views if v not in data.view_sizes]
        if missing:
            raise ConfigError(f"{checkpoint}: data.view_sizes lacks a size for view(s) {missing}")
        self.sizes = {v: data.view_sizes[v] for v in self.views}
        self.fill = data.mask_fill
        self.frame = Augment(data.augment).frame  # the scale the model was evaluated at
        self.root = Path(sidecar_root) if sidecar_root is not None else None
        kinds = [k for k in sidecars.KINDS if sidecars.VIEW_OF[k] in self.views]
        if kinds and self.root is None:
            raise ConfigError(
                f"{checkpoint}: the model reads {' and '.join(kinds)} files (made by "
                f"{' and '.join(sidecars.TOOLS[k] for k in kinds)}); give the folder that holds "
                "them with --sidecars DIR (sidecar_root), laid out as deconfound.data.sidecars says"
            )
        self.boxes = self.info.boxes
        self.needs_box = any(v in BOXED_VIEWS for v in self.views)
        self._detector = detector

    @property
    def classes(self) -> tuple[str, ...]:
        """The emotions, in the order of :attr:`Prediction.probabilities`."""
        return self.info.classes

    @property
    def detector(self) -> FaceDetector | None:
        """The face detector, made on first use."""
        if isinstance(self._detector, str):
            self._detector = DETECTORS[self._detector](device=self.device)
        return self._detector

    def predict(
        self,
        images: Iterable[ImageInput],
        boxes: Sequence[BoxInput | None] | None = None,
        *,
        skip_bad: bool = False,
    ) -> list[Prediction]:
        """The predictions of every person in ``images``, image by image.

        Args:
            images: image files or RGB-convertible PIL images.
            boxes: a person box per image (None, or a None entry: find the people), in the
                box kind the model was trained on (:attr:`Prediction.box`).
            skip_bad: leave out an image that cannot be read or whose box does not fit (its
                record holds the ``error``; a warning names it) instead of raising DataError.
        """
        images = list(images)
        wanted: list[BoxInput | None] = list(boxes) if boxes is not None else [None] * len(images)
        if len(wanted) != len(images):
            raise ValueError(f"got {len(wanted)} boxes for {len(images)} images")
        out: list[Prediction | None] = []
        pending: list[_Person] = []
        bar = tqdm(images, desc="predict", unit="img", disable=not self.progress)
        for i, (image, box) in enumerate(zip(bar, wanted, strict=True)):
            name = f"<image {i}>" if isinstance(image, Image.Image) else str(image)
            try:
                people = self._people(name, image, box, len(out))
            except DataError as e:
                if not skip_bad:
                    raise
                log.warning("skipped %s", e)
                out.append(Prediction(name, None, None, error=str(e)))
                continue
            out += [None] * len(people)  # filled in by _run
            pending += people
            while len(pending) >= self.batch_size:
                self._run(pending[: self.batch_size], out)
                pending = pending[self.batch_size :]
        self._run(pending, out)
        return [p for p in out if p is not None]

    def _people(self, name: str, image: ImageInput, box: BoxInput | None, at: int) -> list[_Person]:
        """The image's persons, each cut into the model's views; ``at``: the first's index."""
        picture = read_image(image, name)
        size, found = picture.size, []
        if box is not None:
            given = box if isinstance(box, Box) else Box(*(int(v) for v in box))
            problem = given.problem(size)
            if problem:
                raise DataError(f"{name}: box {problem}; give a box inside the image, or none")
            found = [self._sample(name, given, "given", size)]
        elif self.needs_box and self.detector is not None:
            smallest = getattr(self.detector, "min_face", 0)
            if min(size) < smallest:
                log.warning(
                    "%s: %dx%d pixels is smaller than the smallest face the %s detector finds "
                    "(%d pixels): predicted on the whole image (box_source whole-image)",
                    name, *size, self.detector.name, smallest,
                )  # fmt: skip
            faces = sorted((f for f, _ in self.detector.detect(picture)), key=Box.as_tuple)
            found = [self._sample(name, f, "detected", size) for f in faces]
        if not found:
            found = [self._sample(name, Box(0, 0, *size), "whole-image", size)]
        sizes, fill, root = self.sizes, self.fill, self.root
        return [
            _Person(
                at + n,
                name,
                shown,
                source,
                self.frame(make_views(s, sizes, fill, root, picture)),
                face,
            )
            for n, (s, shown, source, face) in enumerate(found)
        ]

    def _sample(
        self, name: str, box: Box, source: BoxSource, size: tuple[int, int]
    ) -> tuple[Sample, Box, BoxSource, Box | None]:
        """A sample with the boxes the training data carried, the box a record shows, where it
        came from, and the face the detector found (None unless ``source`` is detected)."""
        if source == "detected":  # box is a face
            person, face = body_from_face(box, size), box
        elif "person" in self.boxes:  # box is a body
            person, face = box, face_from_body(box)
        else:
            person, face = None, box
        person = person if "person" in self.boxes else None
        face = face if "face" in self.boxes else None
        sample = Sample(Path(name), person, face, labels=())
        return sample, person or face or box, source, box if source == "detected" else None

    def _run(self, people: list[_Person], out: list[Prediction | None]) -> None:
        """Predict ``people`` in one batch, into their places in ``out``."""
        if not people:
            return
        views = {v: torch.stack([p.views[v] for p in people]).to(self.device) for v in self.views}
        with torch.inference_mode():
            logits = self.module(views)
        multiclass = self.info.task == "multiclass"
        probs = (logits.softmax(-1) if multiclass else logits.sigmoid()).float().cpu()
        for person, row in zip(people, probs, strict=True):
            values, indices = row.topk(self.top_k)
            top = tuple((self.classes[i], float(v)) for v, i in zip(values, indices, strict=True))
            full = dict(zip(self.classes, map(float, row), strict=True))
            box, face = person.box.as_tuple(), person.face and person.face.as_tuple()
            out[person.index] = Prediction(person.file, box, person.source, top, full, face=face)


def read_image(image: ImageInput, name: str) -> Image.Image:
    """``image`` decoded as RGB as training decodes it (``views.load_image``: orientation, bit
    depth, transparency); a missing or corrupt file is a one-line DataError."""
    if isinstance(image, Image.Image):
        return load_image(image)
    if not Path(image).is_file():
        raise DataError(f"{name}: image not found; check the path or leave it out")
    return load_image(
        Path(image), fix="replace the file, leave it out, or skip bad images (--skip-bad)"
    )

"""The record every reader produces, and the facts a data set declares about itself."""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

Task = Literal["multiclass", "multilabel"]

BASIC_EMOTIONS: tuple[str, ...] = ("Anger", "Disgust", "Fear", "Happiness", "Sadness", "Surprise")
"""The six basic emotions of the posed facial-expression sets (CK+, MMI, Oulu-CASIA), in the
label order of IERN's mixed-data-set protocol."""
Metric = Literal["accuracy", "mAP"]


@dataclass(frozen=True)
class Box:
    """A pixel box ``(x1, y1, x2, y2)``, ``x2``/``y2`` exclusive, as PIL's ``crop`` takes it."""

    x1: int
    y1: int
    x2: int
    y2: int

    @property
    def width(self) -> int:
        return self.x2 - self.x1

    @property
    def height(self) -> int:
        return self.y2 - self.y1

    def as_tuple(self) -> tuple[int, int, int, int]:
        return (self.x1, self.y1, self.x2, self.y2)

    def clip(self, image_size: tuple[int, int]) -> Box:
        """This box cut to an image of ``(width, height)`` (it may become empty)."""
        w, h = image_size
        return Box(
            min(max(self.x1, 0), w), min(max(self.y1, 0), h),
            min(max(self.x2, 0), w), min(max(self.y2, 0), h),
        )  # fmt: skip

    def scale(self, sx: float, sy: float) -> Box:
        """This box in an image resized by ``sx`` horizontally and ``sy`` vertically."""
        return Box(int(self.x1 * sx), int(self.y1 * sy), int(self.x2 * sx), int(self.y2 * sy))

    def problem(self, image_size: tuple[int, int]) -> str | None:
        """Why this box cannot be used on an image of ``(width, height)`` (a phrase such as
        "(0, 0, 9, 9) lies outside the 8x8 image"), or None if it can."""
        w, h = image_size
        if self.width <= 0 or self.height <= 0:
            return f"{self.as_tuple()} has non-positive size"
        if self.x1 < 0 or self.y1 < 0 or self.x2 > w or self.y2 > h:
            return f"{self.as_tuple()} lies outside the {w}x{h} image"
        return None


@dataclass(frozen=True)
class ArrayImage:
    """Picture ``index`` of a NumPy array file of N×H×W×3 uint8 pictures (``.npy``), as the
    pre-processed EMOTIC layout stores its images."""

    path: Path
    index: int

    def __str__(self) -> str:
        return f"{self.path}[{self.index}]"


ImageRef = Path | ArrayImage
"""Where a picture is: an image file, or one picture of an array file."""


def image_name(image: ImageRef, root: str | os.PathLike[str]) -> str:
    """A stable name of ``image`` relative to the data set's ``root`` (for fingerprints)."""
    if isinstance(image, ArrayImage):
        return f"{os.path.relpath(image.path, root)}[{image.index}]"
    return os.path.relpath(image, root)


@dataclass(frozen=True)
class Sample:
    """One annotated person in one image.

    Attributes:
        image: the image (a file, or a picture in an array file).
        person: the person's body box (None where only the face is known, as in CAER-S, or for
            a picture without people, e.g. a scene set).
        face: the face box, when known.
        labels: class indices (one for a multi-class task, any number for multi-label).
        confounder: the sample's stratum of the confounder, where a data set knows it: the
            hidden scene of the synthetic context sets, the source data set (or rendering style)
            of the mixed facial-expression sets. IERN trains on it; CCIM's dictionary reports
            its purity against it.
        split: the split the sample belongs to.
        continuous: continuous labels where the data set has them (EMOTIC: valence, arousal,
            dominance on 1–10).
        body_image: a ready-made body crop, used instead of cropping ``person`` from ``image``
            (the pre-processed EMOTIC layout ships one).
        picture: the original picture's name where ``image`` is a per-person copy of it (the
            pre-processed EMOTIC layout's rows), so that people of one picture are known to
            share it; None: ``image`` itself is the picture.
    """

    image: ImageRef
    person: Box | None
    face: Box | None
    labels: tuple[int, ...]
    confounder: int | None = None
    split: str = ""
    continuous: tuple[float, ...] | None = None
    body_image: ImageRef | None = None
    picture: str | None = None

    @property
    def scene(self) -> ImageRef | str:
        """What identifies the sample's picture: ``picture``, else ``image``."""
        return self.picture if self.picture is not None else self.image

    @property
    def hidden(self) -> Box | None:
        """The region the context view hides: the body box, else the face box."""
        return self.person if self.person is not None else self.face


@dataclass(frozen=True)
class DatasetInfo:
    """Facts about a data set that the engine needs: its classes, task type and metric."""

    name: str
    classes: tuple[str, ...]
    task: Task = "multiclass"
    splits: tuple[str, ...] = field(default=("train", "val", "test"))
    headline: Metric | None = None
    boxes: tuple[Literal["person", "face"], ...] = ("person",)
    """The boxes its samples carry, as its reader makes them (``person``: a body box): those
    a model crops and whose context view hides them (EMOTIC the body, CAER-S the face)."""
    observed_confounder: bool = False
    """Whether its samples' ``confounder`` is something a user of the data set knows (the
    source data set of the mixed facial-expression sets), which training may use, rather than
    a hidden ground truth only evaluation may read (the synthetic context set's scene)."""
    drawn: bool = False
    """Whether its pictures are drawn by deconfound's generators rather than photographs: a
    model trained on it cannot read photographs, and random weights are no omission there."""

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def metric(self) -> Metric:
        """The headline metric: ``headline`` where the data set's papers chose one (GroupWalk:
        mAP over its 4 classes), else accuracy for multi-class and mAP for multi-label."""
        if self.headline is not None:
            return self.headline
        return "accuracy" if self.task == "multiclass" else "mAP"

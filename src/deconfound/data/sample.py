"""The record every reader produces, and the facts a data set declares about itself."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

Task = Literal["multiclass", "multilabel"]


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

    def problem(self, image_size: tuple[int, int]) -> str | None:
        """Why this box cannot be used on an image of ``(width, height)``, or None if it can."""
        w, h = image_size
        if self.width <= 0 or self.height <= 0:
            return f"box {self.as_tuple()} has non-positive size"
        if self.x1 < 0 or self.y1 < 0 or self.x2 > w or self.y2 > h:
            return f"box {self.as_tuple()} lies outside the {w}x{h} image"
        return None


@dataclass(frozen=True)
class Sample:
    """One annotated person in one image.

    Attributes:
        image: path of the image file.
        person: the person's body box (None for a picture without people, e.g. a scene set).
        face: the face box, when known.
        labels: class indices (one for a multi-class task, any number for multi-label).
        context: hidden context (scene) id, where a data set knows it (the synthetic sets do).
        split: the split the sample belongs to.
    """

    image: Path
    person: Box | None
    face: Box | None
    labels: tuple[int, ...]
    context: int | None = None
    split: str = ""


@dataclass(frozen=True)
class DatasetInfo:
    """Facts about a data set that the engine needs: its classes, task type and metric."""

    name: str
    classes: tuple[str, ...]
    task: Task = "multiclass"
    splits: tuple[str, ...] = field(default=("train", "val", "test"))

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def metric(self) -> str:
        """The headline metric: accuracy for multi-class, mean average precision for multi-label."""
        return "accuracy" if self.task == "multiclass" else "mAP"

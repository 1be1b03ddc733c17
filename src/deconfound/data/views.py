"""Views: what each model stream sees of a sample (body crop, face crop, masked context, whole
image; pose keypoints, depth map and object proposals from sidecar files).

A picture view is a square uint8 tensor (3, S, S); models normalise it themselves. Masking the
person out of the context is :func:`mask_box`, the one function the context streams and the
confounder dictionary builder share.
"""

from __future__ import annotations

import typing
from collections.abc import Callable, Mapping
from functools import lru_cache
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import Image, ImageFilter

from deconfound.data import sidecars
from deconfound.data.sample import ArrayImage, Box, ImageRef, Sample
from deconfound.errors import ConfigError, DataError

Fill = Literal["zeros", "mean", "blur"]
FILLS: tuple[str, ...] = typing.get_args(Fill)


def mask_box(image: Image.Image, box: Box, fill: Fill = "zeros") -> Image.Image:
    """A copy of ``image`` with ``box`` hidden: filled with black, the image's mean colour, or
    the same region of a heavily blurred copy of the image."""
    out = image.copy()
    region = box.as_tuple()
    if fill == "zeros":
        out.paste((0, 0, 0), region)
    elif fill == "mean":
        mean = np.asarray(image).reshape(-1, 3).mean(axis=0)
        out.paste(tuple(int(v) for v in mean), region)
    elif fill == "blur":
        blurred = image.filter(ImageFilter.GaussianBlur(max(box.width, box.height) / 2))
        out.paste(blurred.crop(region), region)  # the surroundings bleed in, the person fades
    else:
        raise DataError(f"unknown mask fill '{fill}'; choose {', '.join(FILLS)}")
    return out


class Source:
    """One sample on its way to views: its image is decoded at most once, only if a view needs
    the pixels (or is given already decoded, as ``image``, in RGB); ``root`` (the data set's)
    locates the sample's sidecar files."""

    def __init__(
        self,
        sample: Sample,
        root: Path | None = None,
        fill: Fill = "zeros",
        image: Image.Image | None = None,
    ) -> None:
        self.sample, self.root, self.fill = sample, root, fill
        self._image: Image.Image | None = image

    @property
    def image(self) -> Image.Image:
        if self._image is None:
            self._image = load_image(self.sample.image)
        return self._image

    def image_size(self) -> tuple[int, int]:
        """(width, height), from the header when the pixels are not decoded yet."""
        if self._image is not None or isinstance(self.sample.image, ArrayImage):
            return self.image.size
        try:
            with Image.open(self.sample.image) as im:
                return im.size
        except (OSError, ValueError) as e:
            raise DataError(f"{self.sample.image}: cannot read image ({e})") from None


def body(src: Source, size: int) -> torch.Tensor:
    """The person's body box (or the sample's ready-made body crop), resized to ``size``²."""
    sample = src.sample
    if sample.body_image is not None:
        return to_tensor(load_image(sample.body_image).resize((size, size), Image.BILINEAR))
    if sample.person is None:
        raise DataError(f"{sample.image}: no person box, but the model needs the body view")
    return _crop(src.image, sample.person, size)


def face(src: Source, size: int) -> torch.Tensor:
    """The face box, resized; samples without a face box cannot give this view."""
    if src.sample.face is None:
        raise DataError(f"{src.sample.image}: no face box, but the model needs the face view")
    return _crop(src.image, src.sample.face, size)


def context(src: Source, size: int) -> torch.Tensor:
    """The whole image with the person (or, where only the face is known, the face) masked out,
    resized."""
    if src.sample.hidden is None:
        raise DataError(f"{src.sample.image}: no person or face box to mask for the context view")
    masked = mask_box(src.image, src.sample.hidden, src.fill)
    return to_tensor(masked.resize((size, size), Image.BILINEAR))


def whole(src: Source, size: int) -> torch.Tensor:
    """The whole image, person included, resized."""
    return to_tensor(src.image.resize((size, size), Image.BILINEAR))


def pose(src: Source, size: int) -> torch.Tensor:
    """(size, 3) float keypoints of the person (``size`` = the layout's keypoint count): x, y
    relative to the person box and confidence, from the pose file (see ``sidecars``)."""
    path = sidecars.locate("pose", src.sample.image, src.root)
    return sidecars.read_pose(path, src.sample.hidden, size)


def depth(src: Source, size: int) -> torch.Tensor:
    """(1, size, size) uint8 depth map of the whole image, from the depth file."""
    return sidecars.read_depth(sidecars.locate("depth", src.sample.image, src.root), size)


def objects(src: Source, size: int) -> torch.Tensor:
    """(size, 5) float region nodes: the person's box, then up to ``size`` − 1 object proposals
    from the objects file, as image fractions with a validity flag."""
    path = sidecars.locate("objects", src.sample.image, src.root)
    return sidecars.read_objects(path, src.sample.hidden, src.image_size(), size)


def _crop(image: Image.Image, box: Box, size: int) -> torch.Tensor:
    return to_tensor(image.crop(box.as_tuple()).resize((size, size), Image.BILINEAR))


VIEWS: dict[str, Callable[[Source, int], torch.Tensor]] = {
    "body": body,
    "face": face,
    "context": context,
    "whole": whole,
    "pose": pose,
    "depth": depth,
    "objects": objects,
}
"""Every view by name: ``fn(source, size) -> tensor``. Picture views give (3, size, size)
uint8; ``depth`` (1, size, size) uint8; ``pose`` and ``objects`` float tables of ``size``
rows."""


def check_views(*views: str) -> tuple[str, ...]:
    """``views`` as a tuple, each checked to be a known view name (for model constructors)."""
    for view in views:
        if view not in VIEWS:
            raise ConfigError(f"unknown view '{view}'; choose one of {', '.join(VIEWS)}")
    return views


def load_image(
    image: ImageRef, fix: str = "restore the file or remove its annotation"
) -> Image.Image:
    """Decode ``image`` as RGB; a corrupt or missing file is a one-line DataError ending in
    ``fix``."""
    if isinstance(image, ArrayImage):
        return Image.fromarray(np.asarray(open_array(image.path)[image.index]))
    try:
        with Image.open(image) as im:
            return im.convert("RGB")
    except (OSError, ValueError) as e:
        raise DataError(f"{image}: cannot decode image ({e}); {fix}") from None


@lru_cache(maxsize=16)
def open_array(path: Path) -> np.ndarray:
    """The N×H×W×3 uint8 picture array in ``path``, memory-mapped (opened once per process)."""
    try:
        array = np.load(path, mmap_mode="r")
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: cannot read the array file ({e}); restore it") from None
    if array.ndim != 4 or array.shape[-1] != 3 or array.dtype != np.uint8:
        raise DataError(
            f"{path}: expected N×H×W×3 uint8 pictures, found {array.dtype} {array.shape}"
        )
    return array


def to_tensor(image: Image.Image) -> torch.Tensor:
    """(3, H, W) uint8 tensor of an RGB image."""
    return torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1)


def make_views(
    sample: Sample,
    sizes: Mapping[str, int],
    fill: Fill = "zeros",
    root: str | Path | None = None,
    image: Image.Image | None = None,
) -> dict[str, torch.Tensor]:
    """Cut every view named in ``sizes`` (name → size) from ``sample``, decoding its image at
    most once (not at all when ``image``, the sample's picture in RGB, is given); ``root`` (the
    data set's) is needed by views read from sidecar files."""
    unknown = set(sizes) - set(VIEWS)
    if unknown:
        raise DataError(f"unknown view(s) {sorted(unknown)}; choose from {', '.join(VIEWS)}")
    src = Source(sample, Path(root) if root is not None else None, fill, image)
    return {name: VIEWS[name](src, size) for name, size in sizes.items()}

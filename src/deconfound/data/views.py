"""Views: what each model stream sees of a sample (body crop, face crop, masked context, whole).

A view is a square uint8 tensor (3, S, S); models normalise it themselves. Masking the person out
of the context is :func:`mask_box`, the one function the context streams and the confounder
dictionary builder share.
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

from deconfound.data.sample import ArrayImage, Box, ImageRef, Sample
from deconfound.errors import DataError

Fill = Literal["zeros", "mean", "blur"]
FILLS: tuple[str, ...] = typing.get_args(Fill)
ViewName = Literal["body", "face", "context", "whole"]


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


def body(image: Image.Image, sample: Sample, size: int, fill: Fill = "zeros") -> Image.Image:
    """The person's body box (or the sample's ready-made body crop), resized to ``size``²."""
    if sample.body_image is not None:
        return load_image(sample.body_image).resize((size, size), Image.BILINEAR)
    if sample.person is None:
        raise DataError(f"{sample.image}: no person box, but the model needs the body view")
    return image.crop(sample.person.as_tuple()).resize((size, size), Image.BILINEAR)


def face(image: Image.Image, sample: Sample, size: int, fill: Fill = "zeros") -> Image.Image:
    """The face box, resized; samples without a face box cannot give this view."""
    if sample.face is None:
        raise DataError(f"{sample.image}: no face box, but the model needs the face view")
    return image.crop(sample.face.as_tuple()).resize((size, size), Image.BILINEAR)


def context(image: Image.Image, sample: Sample, size: int, fill: Fill = "zeros") -> Image.Image:
    """The whole image with the person (or, where only the face is known, the face) masked out,
    resized."""
    if sample.hidden is None:
        raise DataError(f"{sample.image}: no person or face box to mask for the context view")
    masked = mask_box(image, sample.hidden, fill)
    return masked.resize((size, size), Image.BILINEAR)


def whole(image: Image.Image, sample: Sample, size: int, fill: Fill = "zeros") -> Image.Image:
    """The whole image, person included, resized."""
    return image.resize((size, size), Image.BILINEAR)


VIEWS: dict[str, Callable[[Image.Image, Sample, int, Fill], Image.Image]] = {
    "body": body,
    "face": face,
    "context": context,
    "whole": whole,
}


def load_image(image: ImageRef) -> Image.Image:
    """Decode ``image`` as RGB; a corrupt or missing file is a one-line DataError."""
    if isinstance(image, ArrayImage):
        return Image.fromarray(np.asarray(open_array(image.path)[image.index]))
    try:
        with Image.open(image) as im:
            return im.convert("RGB")
    except (OSError, ValueError) as e:
        raise DataError(
            f"{image}: cannot decode image ({e}); restore the file or remove its annotation"
        ) from None


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
    sample: Sample, sizes: Mapping[str, int], fill: Fill = "zeros"
) -> dict[str, torch.Tensor]:
    """Decode ``sample`` once and cut every view named in ``sizes`` (name → side in pixels)."""
    unknown = set(sizes) - set(VIEWS)
    if unknown:
        raise DataError(f"unknown view(s) {sorted(unknown)}; choose from {', '.join(VIEWS)}")
    image = load_image(sample.image)
    return {name: to_tensor(VIEWS[name](image, sample, size, fill)) for name, size in sizes.items()}

"""Views: what each model stream sees of a sample (body crop, face crop, masked context, whole
image; pose keypoints, depth map, object proposals and person mask from sidecar files).

A picture view is a square uint8 tensor (3, S, S); models normalise it themselves. Masking the
person out of the context is :func:`mask_box`, the one function the context streams and the
confounder dictionary builder share.
"""

from __future__ import annotations

import re
import typing
import warnings
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from functools import lru_cache
from pathlib import Path
from typing import Literal

import numpy as np
import torch
from PIL import ExifTags, Image, ImageFilter, ImageOps

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
    the pixels; or it is given as ``image`` (RGB: decoded already, or redrawn by a training
    method), and then every picture view is cut from it, the body view too (a ready-made body
    crop is not read). ``root`` (the data set's) locates the sample's sidecar files."""

    def __init__(
        self,
        sample: Sample,
        root: Path | None = None,
        fill: Fill = "zeros",
        image: Image.Image | None = None,
    ) -> None:
        self.sample, self.root, self.fill = sample, root, fill
        self._image: Image.Image | None = image
        self.given = image is not None

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
            with open_image(self.sample.image) as im:
                return displayed_size(im)
        except (OSError, ValueError) as e:
            raise DataError(f"{self.sample.image}: cannot read image ({e})") from None


def body(src: Source, size: int) -> torch.Tensor:
    """The person's body box (or the sample's ready-made body crop, unless the picture is
    given), resized to ``size``²."""
    sample = src.sample
    if sample.body_image is not None and not (src.given and sample.person is not None):
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


def mask(src: Source, size: int) -> torch.Tensor:
    """(1, size, size) uint8 person mask of the whole image, 255 on the person and 0 elsewhere,
    from the masks file."""
    path = sidecars.locate("masks", src.sample.image, src.root)
    person = sidecars.read_mask(path, src.image_size())
    picture = Image.fromarray(person.astype(np.uint8) * 255).resize((size, size), Image.NEAREST)
    return torch.from_numpy(np.asarray(picture).copy())[None]


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
    "mask": mask,
}
"""Every view by name: ``fn(source, size) -> tensor``. Picture views give (3, size, size)
uint8; ``depth`` and ``mask`` (1, size, size) uint8; ``pose`` and ``objects`` float tables of
``size`` rows."""


def check_views(*views: str) -> tuple[str, ...]:
    """``views`` as a tuple, each checked to be a known view name (for model constructors)."""
    for view in views:
        if view not in VIEWS:
            raise ConfigError(f"unknown view '{view}'; choose one of {', '.join(VIEWS)}")
    return views


def load_image(
    image: ImageRef | Image.Image, fix: str = "restore the file or remove its annotation"
) -> Image.Image:
    """Decode ``image`` (a file, a picture of an array file, or a PIL image) as 8-bit RGB,
    as displayed; a corrupt or missing file is a one-line DataError ending in ``fix``.

    Every image that deconfound reads goes through here (training and evaluation views, the
    dictionary build, the bias report, ``data check``, ``predict`` and its drawings):

    - the EXIF orientation is applied (``ImageOps.exif_transpose``): a phone photo stored
      sideways is read upright, and boxes refer to that displayed picture (as
      :func:`displayed_size` gives its size from the header);
    - 16-bit and 32-bit integer pixels (modes ``I;16*``, ``I``) are scaled to 8 bits (65535 to
      255; 32-bit values beyond 16 bits by their maximum), float pixels (``F``) taken as 0..1
      when they lie there, else as 0..255; not clipped, which would read them as white;
    - transparent pixels (``RGBA``, ``LA``, ``PA``, a palette or colour key with transparency)
      are composed on **black**: the colour of a masked person (``mask_fill: zeros``), so that
      a cut-out's missing background reads as nothing rather than as a white scene;
    - CMYK, palette, grey and the other modes are converted by Pillow;
    - an image with more pixels than Pillow's decompression-bomb limit
      (``PIL.Image.MAX_IMAGE_PIXELS``) is refused, naming the file.
    """
    if isinstance(image, ArrayImage):
        return Image.fromarray(np.asarray(open_array(image.path)[image.index]))
    try:
        if isinstance(image, Image.Image):
            return _to_rgb(ImageOps.exif_transpose(image))
        with open_image(image) as im:
            im.load()
            return _to_rgb(ImageOps.exif_transpose(im))
    except DataError:
        raise
    except Exception as e:  # whatever a damaged file makes Pillow raise
        raise DataError(f"{image}: cannot decode image ({_reason(e)}); {fix}") from None


def _reason(e: Exception) -> str:
    text = " ".join(str(e).split())
    return text if isinstance(e, OSError | ValueError) else f"{type(e).__name__}: {text}"


warnings.filterwarnings("ignore", category=Image.DecompressionBombWarning)
"""(:func:`open_image` refuses those images itself, in one line: a warning would only repeat it
on several lines.)"""


@contextmanager
def open_image(path: str | Path) -> Iterator[Image.Image]:
    """``path`` opened by Pillow (its header read, its pixels not yet decoded); an image with
    more pixels than Pillow's decompression-bomb limit is a one-line DataError. Pillow's own
    errors for an unreadable file (OSError, ValueError) are the caller's to word."""
    limit = Image.MAX_IMAGE_PIXELS
    try:
        with Image.open(path) as im:
            if limit is not None and im.width * im.height > limit:
                raise Image.DecompressionBombError(f"({im.width * im.height} pixels)")
            yield im
    except Image.DecompressionBombError as e:  # Pillow's own beyond twice the limit
        found = re.search(r"\((\d+) pixels\)", str(e))
        pixels = f"{int(found[1]):,} pixels" if found else "its size"
        raise DataError(
            f"{path}: {pixels} exceed Pillow's decompression-bomb limit of {limit:,} "
            "(PIL.Image.MAX_IMAGE_PIXELS); downscale the image or leave it out"
        ) from None


TRANSPOSED = (5, 6, 7, 8)
"""EXIF orientations that swap width and height (a quarter turn, with or without a flip)."""


def displayed_size(im: Image.Image) -> tuple[int, int]:
    """(width, height) of an opened image as :func:`load_image` gives it, from the header: with
    its EXIF orientation applied."""
    if im.format == "TIFF":  # Pillow gives a TIFF's size, and its pixels, as displayed
        return im.size
    # for a PNG, Image.getexif of the base class: the PNG's own would decode the pixels to look
    # for EXIF after them; the EXIF before them (where Pillow and cameras put it) is read
    exif = Image.Image.getexif(im) if im.format == "PNG" else im.getexif()
    orientation = exif.get(ExifTags.Base.Orientation, 1)
    w, h = im.size
    return (h, w) if orientation in TRANSPOSED else (w, h)


def _to_rgb(im: Image.Image) -> Image.Image:
    """``im`` as 8-bit RGB (see :func:`load_image`)."""
    if im.mode in ("I", "F") or im.mode.startswith("I;16"):
        a = np.asarray(im).astype(np.float64)
        if im.mode == "F":
            top = 1.0 if a.size and a.min() >= 0 and a.max() <= 1 else 255.0
        else:
            top = max(65535.0, float(a.max(initial=0)))
        grey = np.round(np.clip(a / top, 0, 1) * 255).astype(np.uint8)
        return Image.fromarray(grey).convert("RGB")
    if im.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in im.info:
        rgba = im.convert("RGBA")
        black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
        return Image.alpha_composite(black, rgba).convert("RGB")
    return im.convert("RGB")


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
    most once (not at all when ``image``, the sample's picture in RGB, is given: every picture
    view is then cut from it, see :class:`Source`); ``root`` (the data set's) is needed by
    views read from sidecar files."""
    unknown = set(sizes) - set(VIEWS)
    if unknown:
        raise DataError(f"unknown view(s) {sorted(unknown)}; choose from {', '.join(VIEWS)}")
    src = Source(sample, Path(root) if root is not None else None, fill, image)
    return {name: VIEWS[name](src, size) for name, size in sizes.items()}

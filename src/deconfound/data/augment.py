"""Random augmentation of a sample's decoded views (``data.augment``), for the training split.

It runs on the uint8 views after the cache and never changes them in place. Every random
number comes from the ``numpy.random.Generator`` the caller passes, so the output is a pure
function of (views, generator state): a run resumed after a kill augments each later sample as
the uninterrupted run did, whatever torch's or Python's global random state.

The draws, in order: views in sorted name order (only those augmented: named in
``AugmentConfig.views`` and uint8 (C, H, W) with C = 1 or 3); for each view, the crop's 4
numbers (when the crop is on), the jitter coin (3-channel views, when a jitter op is on), the
op order (``shuffled`` only: a permutation of the view's ops), then each op's numbers in that
order: flip 1, affine 6, brightness, contrast, saturation and hue 1 each, blur 2. An op draws
its numbers whether or not its coin comes up, so the draws of one view do not depend on the
pixels or on which ops fired. 1-channel views (depth, mask) get the crop, the flip and the
affine only; ``mask`` is resampled with nearest-neighbour interpolation, the others bilinearly.

Views that are not augmented (evaluation, prediction) get :meth:`Augment.frame`: with the crop
on, the centred square of the training crops' mean area, resized as they are, so that a model
sees one scale at training and at evaluation (``AugmentConfig.eval_crop``).
"""

from __future__ import annotations

import math

import numpy as np
import torch
import torchvision.transforms.v2.functional as F
from torchvision.transforms import InterpolationMode

from deconfound.config import AUGMENT_VIEWS, AugmentConfig

OPS = ("flip", "affine", "brightness", "contrast", "saturation", "hue", "blur")
"""The ops after the crop, in the ``fixed`` order."""

GEOMETRIC = ("flip", "affine")
"""The ops 1-channel views get (besides the crop)."""

JITTER = ("brightness", "contrast", "saturation", "hue")
"""The colour ops, applied together with probability ``jitter_p``."""

NEAREST_VIEWS = frozenset({"mask"})
"""Views resampled with nearest-neighbour interpolation (labels, not intensities)."""


class Augment:
    """The random augmentation an :class:`~deconfound.config.AugmentConfig` describes.

    ``enabled`` is False when every op is off; calling it then returns the views as they are.
    ``framed`` is True when :meth:`frame` changes the views it is given.
    """

    def __init__(self, cfg: AugmentConfig) -> None:
        self.cfg = cfg
        self.crop = cfg.crop_scale != [1.0, 1.0] or cfg.crop_ratio != [1.0, 1.0]
        jitter = cfg.jitter_p > 0
        on = {
            "flip": cfg.flip_p > 0,
            "affine": cfg.affine_p > 0
            and (
                cfg.affine_degrees > 0
                or cfg.affine_translate > 0
                or cfg.affine_scale != [1.0, 1.0]
                or cfg.affine_shear > 0
            ),
            "brightness": jitter and cfg.brightness != [1.0, 1.0],
            "contrast": jitter and cfg.contrast != [1.0, 1.0],
            "saturation": jitter and cfg.saturation != [1.0, 1.0],
            "hue": jitter and cfg.hue > 0,
            "blur": cfg.blur_p > 0,
        }
        self.ops: tuple[str, ...] = tuple(op for op in OPS if on[op])
        self.enabled = self.crop or bool(self.ops)
        self.frame_area = sum(cfg.crop_scale) / 2 if self.crop and cfg.eval_crop else 1.0
        self.framed = self.frame_area < 1.0
        self.views = frozenset(AUGMENT_VIEWS if cfg.views is None else cfg.views)
        self._log_ratio = (math.log(cfg.crop_ratio[0]), math.log(cfg.crop_ratio[1]))

    def __call__(
        self, views: dict[str, torch.Tensor], rng: np.random.Generator
    ) -> dict[str, torch.Tensor]:
        """``views`` with each augmented one replaced by a new uint8 tensor of its shape, its
        random numbers drawn from ``rng``; the others (pose, objects...) are passed through."""
        out = dict(views)
        if not self.enabled:
            return out
        for name in sorted(views):
            image = views[name]
            if name in self.views and _is_image(image):
                out[name] = self._augment(image, rng, name in NEAREST_VIEWS)
        return out

    def frame(self, views: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """``views`` as evaluation sees them: each view that training augments cut to its
        centred square of area ``frame_area`` (the mean of ``crop_scale``) and resized back to
        its size; the others, or all when ``framed`` is False, as they are."""
        if not self.framed:
            return views
        out = dict(views)
        for name in views:
            image = views[name]
            if name in self.views and _is_image(image):
                mode = (
                    InterpolationMode.NEAREST
                    if name in NEAREST_VIEWS
                    else InterpolationMode.BILINEAR
                )
                out[name] = self._centre(image, mode)
        return out

    def _centre(self, image: torch.Tensor, mode: InterpolationMode) -> torch.Tensor:
        height, width = image.shape[-2:]
        side = math.sqrt(height * width * self.frame_area)
        w, h = min(width, max(1, round(side))), min(height, max(1, round(side)))
        top, left = (height - h) // 2, (width - w) // 2
        return F.resized_crop(image, top, left, h, w, [height, width], interpolation=mode)

    def _augment(
        self, image: torch.Tensor, rng: np.random.Generator, nearest: bool
    ) -> torch.Tensor:
        cfg = self.cfg
        mode = InterpolationMode.NEAREST if nearest else InterpolationMode.BILINEAR
        colour = image.shape[0] == 3
        if self.crop:
            image = self._crop(image, rng.random(4), mode)
        ops = self.ops if colour else tuple(op for op in self.ops if op in GEOMETRIC)
        jitter = colour and any(op in JITTER for op in ops) and rng.random() < cfg.jitter_p
        if cfg.order == "shuffled":
            ops = tuple(ops[i] for i in rng.permutation(len(ops)))
        for op in ops:
            if op == "flip":
                if rng.random() < cfg.flip_p:
                    image = F.horizontal_flip(image)
            elif op == "affine":
                image = self._affine(image, rng.random(6), mode)
            elif op == "blur":
                coin, u = rng.random(2)
                if coin < cfg.blur_p:
                    image = _blur(image, _between(cfg.blur_sigma, u))
            elif op == "hue":
                shift = cfg.hue * (2 * rng.random() - 1)
                if jitter:
                    image = F.adjust_hue(image, shift)
            else:
                factor = _between(getattr(cfg, op), rng.random())
                if jitter:
                    image = _ADJUST[op](image, factor)
        return image

    def _crop(self, image: torch.Tensor, u: np.ndarray, mode: InterpolationMode) -> torch.Tensor:
        """A random region of area fraction in ``crop_scale`` and width/height ratio in
        ``crop_ratio`` (clamped to the image), resized back to the image's size."""
        height, width = image.shape[-2:]
        area = height * width * _between(self.cfg.crop_scale, u[0])
        ratio = math.exp(_between(self._log_ratio, u[1]))
        w = min(width, max(1, round(math.sqrt(area * ratio))))
        h = min(height, max(1, round(math.sqrt(area / ratio))))
        if (h, w) == (height, width):
            return image
        top = min(int(u[2] * (height - h + 1)), height - h)
        left = min(int(u[3] * (width - w + 1)), width - w)
        return F.resized_crop(image, top, left, h, w, [height, width], interpolation=mode)

    def _affine(self, image: torch.Tensor, u: np.ndarray, mode: InterpolationMode) -> torch.Tensor:
        """Rotation, shift (x, y), zoom and x shear drawn from ``u`` (after the coin, ``u[0]``);
        what comes in from outside the image is 0."""
        cfg = self.cfg
        if u[0] >= cfg.affine_p:
            return image
        height, width = image.shape[-2:]
        shift = cfg.affine_translate * (2 * u[2:4] - 1)
        return F.affine(
            image,
            angle=cfg.affine_degrees * (2 * u[1] - 1),
            translate=[float(shift[0] * width), float(shift[1] * height)],
            scale=_between(cfg.affine_scale, u[4]),
            shear=[cfg.affine_shear * (2 * u[5] - 1), 0.0],
            interpolation=mode,
            fill=[0.0],
        )


def _is_image(view: torch.Tensor) -> bool:
    return view.dtype == torch.uint8 and view.ndim == 3 and view.shape[0] in (1, 3)


def _between(bounds: list[float] | tuple[float, float], u: float) -> float:
    """The point a fraction ``u`` of the way from ``bounds[0]`` to ``bounds[1]``."""
    lo, hi = bounds
    return lo + (hi - lo) * float(u)


def _blur(image: torch.Tensor, sigma: float) -> torch.Tensor:
    """Gaussian blur of standard deviation ``sigma`` pixels (kernel out to 3 sigma)."""
    size = min(2 * math.ceil(3 * sigma) + 1, 2 * min(image.shape[-2:]) - 1)
    return F.gaussian_blur(image, [size, size], [sigma, sigma])


_ADJUST = {
    "brightness": F.adjust_brightness,
    "contrast": F.adjust_contrast,
    "saturation": F.adjust_saturation,
}

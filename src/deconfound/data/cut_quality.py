"""Person cuts as worse segmenters give them: how ``paste`` can be measured with masks that are
not pixel-exact (the synthetic set's are written by the renderer; on photographs a segmenter
makes them).

Each degradation is a pure function of the exact cut and of what a user could have instead of
a segmenter's mask: the person box, or pose keypoints. Sizes are shares of the person's height
(the cut's, or the box's), so a large and a small person are degraded alike.

- ``exact``: the cut as it is.
- ``eroded`` / ``dilated``: the cut shrunk / grown by ``share`` of the person's height (a
  segmenter that misses the person's rim / takes a band of background with it).
- ``ellipse``: the ellipse inscribed in the person box (a box ∩ ellipse: no mask at all).
- ``keypoints``: the convex hull of the person's pose keypoints (OpenPose JSON), grown by
  ``share`` of the box's height (joints are centres: the hull alone misses the limbs' width).
- ``box``: the whole person box (keeps all the background inside it).
"""

from __future__ import annotations

import typing
from typing import Literal

import numpy as np
from PIL import Image, ImageDraw
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError

from deconfound.data.sample import Box

CutQuality = Literal["exact", "eroded", "dilated", "ellipse", "keypoints", "box"]
CUT_QUALITIES: tuple[str, ...] = typing.get_args(CutQuality)


def person_height(cut: np.ndarray) -> int:
    """The height in pixels of the rows that ``cut`` (bool (H, W)) spans (0 when empty)."""
    rows = np.nonzero(cut.any(axis=1))[0]
    return int(rows[-1] - rows[0] + 1) if len(rows) else 0


def shrink(cut: np.ndarray, share: float) -> np.ndarray:
    """``cut`` without the pixels closer than ``share`` of its height to its outside."""
    r = share * person_height(cut)
    return cut & (ndimage.distance_transform_edt(cut) > r)


def expand(cut: np.ndarray, share: float) -> np.ndarray:
    """``cut`` with every pixel within ``share`` of its height of it."""
    r = share * person_height(cut)
    return cut | (ndimage.distance_transform_edt(~cut) <= r)


def ellipse(box: Box, shape: tuple[int, int]) -> np.ndarray:
    """The ellipse inscribed in ``box``, a bool array of ``shape`` (H, W)."""
    ys, xs = np.ogrid[: shape[0], : shape[1]]
    cx, cy = (box.x1 + box.x2 - 1) / 2, (box.y1 + box.y2 - 1) / 2
    rx, ry = max(box.width / 2, 0.5), max(box.height / 2, 0.5)
    return ((xs - cx) / rx) ** 2 + ((ys - cy) / ry) ** 2 <= 1


def keypoint_hull(points: np.ndarray, shape: tuple[int, int], margin: float) -> np.ndarray:
    """The convex hull of ``points`` ((K, 2) x, y in pixels), grown by ``margin`` pixels, as a
    bool array of ``shape`` (H, W); empty for fewer than three points in general position."""
    image = Image.new("1", (shape[1], shape[0]))
    try:
        hull = points[ConvexHull(points).vertices]
    except (QhullError, ValueError):
        return np.zeros(shape, dtype=bool)
    ImageDraw.Draw(image).polygon([tuple(p) for p in hull.tolist()], fill=1)
    inside = np.asarray(image, dtype=bool)
    return inside | (ndimage.distance_transform_edt(~inside) <= margin)


def degrade(
    cut: np.ndarray,
    quality: str,
    share: float,
    box: Box | None = None,
    keypoints: np.ndarray | None = None,
) -> np.ndarray:
    """``cut`` as ``quality`` gives it (module docstring); ``box`` is needed by ``ellipse``,
    ``keypoints`` and ``box``, ``keypoints`` ((K, 2) pixels of the detected joints) by
    ``keypoints``."""
    if quality == "exact":
        return cut
    if quality == "eroded":
        return shrink(cut, share)
    if quality == "dilated":
        return expand(cut, share)
    if box is None:
        raise ValueError(f"a '{quality}' cut needs the person box")
    if quality == "ellipse":
        return ellipse(box, cut.shape)
    if quality == "box":
        out = np.zeros(cut.shape, dtype=bool)
        b = box.clip((cut.shape[1], cut.shape[0]))
        out[b.y1 : b.y2, b.x1 : b.x2] = True
        return out
    if quality == "keypoints":
        if keypoints is None:
            raise ValueError("a 'keypoints' cut needs the person's keypoints")
        return keypoint_hull(keypoints, cut.shape, share * box.height)
    raise ValueError(f"unknown cut quality '{quality}'; choose {', '.join(CUT_QUALITIES)}")

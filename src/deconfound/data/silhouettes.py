"""A picture's people as a label map (:func:`deconfound.data.sidecars.read_people`): which
pixels are an annotated person's own, and how far around each person a hidden region reaches.

Two rules, used alike by ``paste`` (which cuts) and ``annotate`` (which counts matches):

- **Own person** (:func:`own_person`). With an instance mask, the instance that best fits the
  sample's box: for a body box the instance with the highest intersection over union with the
  box's area (at least :data:`MIN_BODY_IOU`), for a face box (CAER-S) the instance covering most
  of the face (at least :data:`MIN_FACE_COVER` of it), so the whole actor is the person, not
  the face alone. With a union mask, whose people are not told apart: the mask inside a body
  box, or the mask's connected regions that reach into a face box.
- **Growth** (:func:`grow`). A person hidden from a background is grown by a share of its own
  height (each instance by its own; a union mask's persons by the height they span together),
  so a mask's blurred edge hides as much of a large person as of a small one.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from deconfound.data.sample import Box
from deconfound.data.sidecars import UNKNOWN

MIN_BODY_IOU = 0.2
"""The least intersection over union of an instance with a body box that makes it the box's
person (a standing person's silhouette fills about half of its box: IoU about 0.5)."""

MIN_FACE_COVER = 0.3
"""The least share of a face box an instance must cover to be that face's person."""

GROWTH = 0.025
"""The share of a person's height by which it is grown before it is hidden (at least 1 px):
2 px for the synthetic set's 66–96 px people, as the fixed growth before it."""


def _box_area(box: Box, shape: tuple[int, int]) -> tuple[slice, slice, int]:
    b = box.clip((shape[1], shape[0]))
    return slice(b.y1, b.y2), slice(b.x1, b.x2), max(b.width, 0) * max(b.height, 0)


def own_person(labels: np.ndarray, box: Box, face: bool = False) -> np.ndarray | None:
    """The pixels of the person annotated by ``box`` (a face box with ``face``) as a bool
    array of ``labels``' shape, by the module's rule; None where no person fits the box."""
    rows, cols, area = _box_area(box, labels.shape)
    if area == 0:
        return None
    inside = labels[rows, cols]
    counts = np.bincount(inside.ravel(), minlength=256)
    instances = [k for k in range(1, UNKNOWN) if counts[k]]
    if instances:
        totals = np.bincount(labels.ravel(), minlength=256)
        if face:
            scores = {k: counts[k] / area for k in instances}
            least = MIN_FACE_COVER
        else:
            scores = {k: counts[k] / (area + totals[k] - counts[k]) for k in instances}
            least = MIN_BODY_IOU
        best = max(instances, key=lambda k: (scores[k], -k))
        return labels == best if scores[best] >= least else None
    if not counts[UNKNOWN]:
        return None
    union = labels == UNKNOWN
    if not face:
        out = np.zeros_like(union)
        out[rows, cols] = union[rows, cols]
        return out
    regions, _ = ndimage.label(union)
    touched = np.unique(regions[rows, cols])
    return np.isin(regions, touched[touched > 0])


def people_of(labels: np.ndarray) -> list[np.ndarray]:
    """Each person of ``labels`` as a bool array: every instance, and the persons of unknown
    identity (a union mask's) together as one."""
    out = [labels == k for k in np.unique(labels) if 0 < k < UNKNOWN]
    unknown = labels == UNKNOWN
    return out + ([unknown] if unknown.any() else [])


def grow(labels: np.ndarray, share: float = GROWTH) -> np.ndarray:
    """Every person of ``labels`` (bool (H, W)) grown by ``share`` of its own height (at least
    one pixel; none with ``share`` = 0) in every direction; the persons of a union mask by the
    height of the region they span together (a union's parts are not told apart)."""
    out = labels > 0
    if share <= 0 or not out.any():
        return out
    h, w = labels.shape
    for person in people_of(labels):
        ys = np.nonzero(person.any(axis=1))[0]
        r = max(1, round(share * (ys[-1] - ys[0] + 1)))
        xs = np.nonzero(person.any(axis=0))[0]
        y1, y2 = max(ys[0] - r, 0), min(ys[-1] + r + 1, h)
        x1, x2 = max(xs[0] - r, 0), min(xs[-1] + r + 1, w)
        grown = ndimage.maximum_filter(person[y1:y2, x1:x2], size=2 * r + 1, mode="constant")
        out[y1:y2, x1:x2] |= grown
    return out

"""Sidecar files of the synthetic benchmark, in the formats real tools write, so that models
which read pose keypoints, depth maps or object proposals run on it, and the ``paste`` method
can cut the person out: OpenPose ``--write_json`` keypoints (BODY_25), 8-bit depth PNGs,
object-detector boxes and 8-bit person masks. They are made from the true geometry of what was
drawn (:class:`SceneLayout`, :class:`DrawnPerson`), not estimated.

For an image ``images/<split>/<name>.png`` (a path relative to the set's root):

- ``pose/images/<split>/<name>_keypoints.json``: see :func:`openpose_json`;
- ``depth/images/<split>/<name>.png``: see :func:`depth_map`;
- ``objects/images/<split>/<name>.json``: see :func:`proposals_json`;
- ``masks/images/<split>/<name>.png``: see :func:`person_mask`.
"""

from __future__ import annotations

import json
from pathlib import Path, PurePosixPath

import numpy as np
from PIL import Image, ImageDraw

from deconfound.data.sidecars import candidates
from deconfound.data.synthetic.render import DrawnPerson, SceneLayout

SKY_DEPTH = 255
HORIZON_DEPTH = 200
NEAR_DEPTH = 20
"""Depth-map values: the sky, the ground at the horizon, the ground at the bottom row."""

OBJECT_SCORE = 1.0
"""The score of every object proposal (the objects are known, not detected)."""


def sidecar_paths(root: Path, image: str) -> tuple[Path, Path, Path, Path]:
    """The (pose, depth, objects, mask) files of ``image``, a POSIX path relative to ``root``,
    where the readers look for them (:func:`deconfound.data.sidecars.candidates`; depth as
    PNG)."""
    stem = str(PurePosixPath(image).with_suffix(""))
    (pose,), (_, depth), (objects,), (mask,) = (
        candidates(k, root, stem) for k in ("pose", "depth", "objects", "masks")
    )
    return pose, depth, objects, mask


def openpose_json(person: DrawnPerson) -> str:
    """OpenPose's ``--write_json`` output for an image holding ``person``: one entry in
    ``people`` whose ``pose_keypoints_2d`` lists the BODY_25 joints as flat x, y, confidence
    triples in image pixels; the face, hand and 3-D lists are empty."""
    flat = [round(v, 2) for keypoint in person.keypoints for v in keypoint]
    entry = {
        "person_id": [-1],
        "pose_keypoints_2d": flat,
        "face_keypoints_2d": [],
        "hand_left_keypoints_2d": [],
        "hand_right_keypoints_2d": [],
        "pose_keypoints_3d": [],
        "face_keypoints_3d": [],
        "hand_left_keypoints_3d": [],
        "hand_right_keypoints_3d": [],
    }
    return json.dumps({"version": 1.3, "people": [entry]}, separators=(",", ":"))


def ground_depth(row: int, layout: SceneLayout) -> int:
    """The depth value of the ground at image row ``row``: :data:`HORIZON_DEPTH` at the horizon
    (and for rows above it), falling linearly to :data:`NEAR_DEPTH` at the bottom row."""
    below = max(0, row - layout.horizon)
    span = max(1, layout.size - 1 - layout.horizon)
    return round(HORIZON_DEPTH - (HORIZON_DEPTH - NEAR_DEPTH) * min(1.0, below / span))


def depth_map(layout: SceneLayout, person: DrawnPerson | None = None) -> Image.Image:
    """An 8-bit ("L") distance map of the picture, 0 nearest, 255 farthest: the sky at
    :data:`SKY_DEPTH`, the ground from the horizon to the bottom row (:func:`ground_depth`),
    each object's shape, in drawing order, at the ground depth of its bottom row, and then the
    person's box at the ground depth of the box's bottom row (where the feet stand)."""
    size = layout.size
    column = np.array(
        [SKY_DEPTH if y < layout.horizon else ground_depth(y, layout) for y in range(size)],
        dtype=np.uint8,
    )
    img = Image.fromarray(np.ascontiguousarray(np.broadcast_to(column[:, None], (size, size))))
    d = ImageDraw.Draw(img)
    for obj in layout.objects:
        box = obj.box(size)
        if box.width > 0 and box.height > 0:
            obj.paint(d, ground_depth(box.y2 - 1, layout))
    if person is not None:
        box = person.person.clip((size, size))
        if box.width > 0 and box.height > 0:
            fill = ground_depth(box.y2 - 1, layout)
            d.rectangle((box.x1, box.y1, box.x2 - 1, box.y2 - 1), fill=fill)
    return img


def proposals_json(layout: SceneLayout) -> str:
    """Object-detector output for the picture: ``{"boxes": [[x1, y1, x2, y2], ...], "scores":
    [...], "labels": [...]}`` with integer pixel boxes (``x2``/``y2`` exclusive, clipped to the
    image; objects outside it left out), label = the object's shape name (e.g. "circle")."""
    boxes, labels = [], []
    for obj in layout.objects:
        box = obj.box(layout.size)
        if box.width > 0 and box.height > 0:
            boxes.append(list(box.as_tuple()))
            labels.append(obj.shape)
    out = {"boxes": boxes, "scores": [OBJECT_SCORE] * len(boxes), "labels": labels}
    return json.dumps(out, separators=(",", ":"))


def person_mask(layout: SceneLayout, person: DrawnPerson) -> Image.Image:
    """The person's 8-bit ("L") mask at the picture's size: 255 on every pixel the person was
    drawn on (its silhouette before the image's noise), 0 elsewhere."""
    return person.silhouette((layout.size, layout.size))


def write_sidecars(root: Path, image: str, layout: SceneLayout, person: DrawnPerson) -> None:
    """Write the four sidecar files of ``image`` (relative to ``root``); their folders must
    exist."""
    pose, depth, objects, mask = sidecar_paths(root, image)
    pose.write_text(openpose_json(person))
    depth_map(layout, person).save(depth, compress_level=1)
    objects.write_text(proposals_json(layout))
    person_mask(layout, person).save(mask, compress_level=1)

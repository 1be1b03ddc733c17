"""Inputs that other tools make for an image, read from files beside the data set.

Some base models need more than pixels: EmotiCon reads pose keypoints and a depth map, GNN-CNN
reads object proposals. In the original work these come from OpenPose, a monocular depth network
and an object detector; here they are files under the data set's root, one per image, at the
image's path relative to the root without its suffix (``<stem>``):

- ``pose/<stem>_keypoints.json``: OpenPose's ``--write_json`` output (``people[*].
  pose_keypoints_2d`` = x, y, confidence per keypoint; BODY_25, COCO-18, or the COCO-17 that
  ``deconfound annotate`` writes from torchvision's Keypoint R-CNN). The skeleton with the most
  confident keypoints inside the sample's person box is the sample's.
- ``depth/<stem>.npy`` (a 2-D array) or ``depth/<stem>.png`` (8- or 16-bit grey): a depth map of
  any resolution, e.g. from MiDaS or MegaDepth; it is min-max normalised per image and read as
  given, so keep one polarity across a data set (MiDaS/DPT write inverse depth, bright = near;
  MegaDepth and the synthetic set depth, bright = far).
- ``objects/<stem>.json``: ``{"boxes": [[x1, y1, x2, y2], ...], "scores": [...]}`` in image
  pixels (any detector's output, e.g. torchvision's Faster R-CNN); ``scores`` is optional.
- ``masks/<stem>.png``: the image's people, any resolution with the image's aspect ratio, in
  one of two forms. A *union* mask: 8-bit grey (or 1-bit), person where the value is above 127
  (e.g. a person segmenter's output saved as 0/255), covering every person in the image. An
  *instance* mask (what ``deconfound annotate`` writes): a palette PNG whose index is 0 where
  no one is, k (1..254) on the k-th person, 255 on a person of unknown identity (PASCAL VOC's
  ``SegmentationObject`` convention). The ``paste`` training method cuts the sample's own
  person out with it (:mod:`deconfound.data.paste`, :mod:`deconfound.data.silhouettes`).

For a picture inside an array file (the pre-processed EMOTIC layout) ``<stem>`` is
``<array file stem>/<index, 6 digits>``. The synthetic generator writes all four.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from deconfound.data.sample import ArrayImage, Box, ImageRef
from deconfound.errors import DataError
from deconfound.io import atomic_write

TOOLS = {
    "pose": "OpenPose --write_json",
    "depth": "a monocular depth network",
    "objects": "an object detector",
    "masks": "a person segmenter",
}
"""Each sidecar kind (a folder under the data set's root) and the tool that makes its files."""

KINDS = tuple(TOOLS)

VIEW_OF = {"pose": "pose", "depth": "depth", "objects": "objects", "masks": "mask"}
"""The view (:data:`deconfound.data.views.VIEWS`) that reads each sidecar kind."""


def stem(image: ImageRef, root: Path) -> str:
    """``image``'s path under ``root`` without suffix (``<array stem>/<index>`` for arrays)."""
    if isinstance(image, ArrayImage):
        rel = Path(os.path.relpath(image.path, root))
        return str(rel.with_suffix("") / f"{image.index:06d}")
    return str(Path(os.path.relpath(image, root)).with_suffix(""))


def candidates(kind: str, root: Path, stem: str) -> list[Path]:
    """Where the ``kind`` file (pose, depth, objects, masks) of the image ``stem`` may be, in
    order."""
    folder, name = (root / kind / stem).parent, Path(stem).name
    return {
        "pose": [folder / f"{name}_keypoints.json"],
        "depth": [folder / f"{name}.npy", folder / f"{name}.png"],
        "objects": [folder / f"{name}.json"],
        "masks": [folder / f"{name}.png"],
    }[kind]


def locate(kind: str, image: ImageRef, root: Path | None) -> Path:
    """The existing sidecar file of ``kind`` (pose, depth, objects, masks) for ``image``."""
    if root is None:
        raise DataError(
            f"the {VIEW_OF[kind]} view needs the data set's root to find its {kind} files"
        )
    names = candidates(kind, root, stem(image, root))
    for path in names:
        if path.is_file():
            return path
    raise DataError(
        f"{names[0]}: {kind} file for {image} not found; make it with {TOOLS[kind]} "
        f"(see deconfound.data.sidecars for the layout)"
    )


def read_json(path: Path) -> Any:
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise DataError(f"{path}: not readable JSON ({e}); write it again") from None


def read_pose(path: Path, box: Box | None, keypoints: int | None = None) -> torch.Tensor:
    """(keypoints, 3) float32: the skeleton that best fits ``box``, with x and y relative to the
    box (0..1 inside it) and the confidence; zeros when no skeleton falls inside the box.
    ``keypoints`` None: as many as the file's first skeleton has (0 when it holds no one)."""
    data = read_json(path)
    people = data.get("people") if isinstance(data, dict) else None
    if not isinstance(people, list):
        raise DataError(f"{path}: no 'people' list; expected OpenPose's --write_json output")
    if keypoints is None:
        first = people[0] if people and isinstance(people[0], dict) else {}
        flat = first.get("pose_keypoints_2d")
        keypoints = len(flat) // 3 if isinstance(flat, list) else 0
    out = torch.zeros(keypoints, 3)
    best = 0.0
    for person in people:
        flat = person.get("pose_keypoints_2d") if isinstance(person, dict) else None
        if not isinstance(flat, list) or len(flat) != 3 * keypoints:
            n = len(flat) if isinstance(flat, list) else 0
            raise DataError(
                f"{path}: pose_keypoints_2d has {n} values, expected {3 * keypoints} "
                f"({keypoints} keypoints); set data.view_sizes.pose to the layout's keypoint "
                "count (BODY_25: 25, COCO: 18)"
            )
        try:
            k = torch.tensor(flat, dtype=torch.float32).view(keypoints, 3)
        except (TypeError, ValueError):
            raise DataError(f"{path}: pose_keypoints_2d holds non-numbers") from None
        if not torch.isfinite(k).all():
            raise DataError(f"{path}: pose_keypoints_2d holds NaN or infinity")
        if box is not None:
            k[:, 0] = (k[:, 0] - box.x1) / box.width
            k[:, 1] = (k[:, 1] - box.y1) / box.height
        inside = ((k[:, :2] >= 0) & (k[:, :2] <= 1)).all(dim=1) & (k[:, 2] > 0)
        score = float(k[inside, 2].sum())
        if score > best:
            best, out = score, k
    out[out[:, 2] <= 0] = 0.0  # undetected keypoints: no position either
    return out


def read_depth(path: Path, size: int) -> torch.Tensor:
    """(1, size, size) uint8 depth map, min-max normalised (a constant map gives zeros)."""
    try:
        if path.suffix == ".npy":
            depth = np.load(path).astype(np.float32)
        else:
            from deconfound.data.views import open_image  # (views imports this module)

            with open_image(path) as im:  # (refuses a decompression bomb in one line)
                depth = np.asarray(im, dtype=np.float32)
    except (OSError, ValueError) as e:
        raise DataError(f"{path}: cannot read the depth map ({e}); write it again") from None
    if depth.ndim == 3 and depth.shape[-1] in (1, 3, 4):
        depth = depth[..., 0]
    if depth.ndim != 2 or depth.size == 0:
        raise DataError(f"{path}: a depth map must be 2-D, found shape {depth.shape}")
    if not np.isfinite(depth).all():
        raise DataError(f"{path}: depth map holds NaN or infinity; write it again")
    low, span = depth.min(), np.ptp(depth)
    scaled = (depth - low) * (255.0 / span) if span > 0 else np.zeros_like(depth)
    picture = Image.fromarray(scaled.round().astype(np.uint8)).resize((size, size), Image.BILINEAR)
    return torch.from_numpy(np.asarray(picture).copy())[None]


def read_objects(
    path: Path, person: Box | None, image_size: tuple[int, int], rows: int
) -> torch.Tensor:
    """(rows, 5) float32 region nodes: row 0 the person, then the proposals by falling score;
    columns x1, y1, x2, y2 as fractions of the image and 1 for a real row (0 = padding)."""
    data = read_json(path)
    boxes = data.get("boxes") if isinstance(data, dict) else None
    if not isinstance(boxes, list):
        raise DataError(f"{path}: no 'boxes' list; expected {{\"boxes\": [[x1, y1, x2, y2], ...]}}")
    scores = data.get("scores", [1.0] * len(boxes))
    if not isinstance(scores, list) or len(scores) != len(boxes):
        raise DataError(f"{path}: 'scores' must list one number per box")
    w, h = image_size
    found: list[tuple[float, Box]] = []
    for i, (b, s) in enumerate(zip(boxes, scores, strict=True)):
        try:
            x1, y1, x2, y2 = (float(v) for v in b)
            score = float(s)
        except (TypeError, ValueError):
            raise DataError(f"{path}: box {i} is not four numbers with a score") from None
        if not all(np.isfinite([x1, y1, x2, y2, score])):
            raise DataError(f"{path}: box {i} holds NaN or infinity")
        box = Box(round(x1), round(y1), round(x2), round(y2)).clip(image_size)
        if box.width > 0 and box.height > 0:
            found.append((score, box))
    found.sort(key=lambda item: -item[0])
    nodes = ([person] if person is not None else []) + [b for _, b in found]
    out = torch.zeros(rows, 5)
    for row, box in enumerate(nodes[:rows]):
        out[row] = torch.tensor([box.x1 / w, box.y1 / h, box.x2 / w, box.y2 / h, 1.0])
    return out


MASK_MODES = ("L", "1", "P")
"""The PIL modes a mask file may have: 8-bit grey or 1-bit (a union mask), palette (instances)."""

UNKNOWN = 255
"""The label of a person pixel whose person is not told: an instance mask's void, and every
person pixel of a union mask."""


def read_mask(path: Path, image_size: tuple[int, int]) -> np.ndarray:
    """The person mask in ``path`` as a bool (H, W) array at the image's ``(W, H)`` size: True
    on every person (see :func:`read_people`)."""
    return read_people(path, image_size) > 0


def read_people(path: Path, image_size: tuple[int, int]) -> np.ndarray:
    """The people in the mask file ``path`` as a uint8 (H, W) label map at the image's
    ``(W, H)`` size: 0 where no one is, k on the k-th person of an instance mask, and
    :data:`UNKNOWN` on the persons of a union mask (value above 127). A file of another
    resolution but the image's aspect ratio (give or take a pixel) is resized to it,
    nearest-neighbour."""
    fix = "save it as an 8-bit grey PNG, 255 on the person and 0 elsewhere"
    from deconfound.data.views import open_image  # (views imports this module)

    try:
        with open_image(path) as im:  # (refuses a decompression bomb in one line)
            im.load()
            if im.mode not in MASK_MODES:
                raise DataError(
                    f"{path}: a mask must be 8-bit grey or a palette of instances, found mode "
                    f"{im.mode}; {fix}"
                )
            if im.mode == "P":
                mask = Image.fromarray(np.asarray(im, dtype=np.uint8))
            else:
                grey = np.asarray(im.convert("L")) > 127
                mask = Image.fromarray(np.where(grey, UNKNOWN, 0).astype(np.uint8))
    except FileNotFoundError:
        raise DataError(
            f"{path}: mask file not found; make it with {TOOLS['masks']} "
            "(see deconfound.data.sidecars for the layout)"
        ) from None
    except (OSError, ValueError, SyntaxError, EOFError) as e:
        raise DataError(f"{path}: cannot read the mask ({e}); {fix}") from None
    (w, h), (mw, mh) = image_size, mask.size
    if abs(mh * w - h * mw) > max(w, h, mw, mh):  # the aspect ratios differ by over a pixel
        raise DataError(
            f"{path}: a {mw}x{mh} mask does not fit the {w}x{h} image (another aspect ratio); "
            "write the mask of this image, at its size or scaled evenly"
        )
    if mask.size != (w, h):
        mask = mask.resize((w, h), Image.NEAREST)
    return np.asarray(mask)


PALETTE = [0, 0, 0] + [
    channel
    for k in range(1, 256)
    for channel in ((k * 97) % 256, (k * 57 + 80) % 256, (k * 181 + 160) % 256)
]
"""The colours of an instance mask written here (index 0 black): only for looking at it."""


def write_people(path: Path, labels: np.ndarray) -> None:
    """Write the uint8 (H, W) label map ``labels`` (0: no one, k: the k-th person) as an
    instance mask (a palette PNG), atomically."""
    picture = Image.fromarray(np.ascontiguousarray(labels, dtype=np.uint8), mode="P")
    picture.putpalette(PALETTE)
    atomic_write(path, lambda tmp: picture.save(tmp, format="PNG", compress_level=1))

"""Data sets in the official layouts whose pictures hold people painted in known colours, and a
"detector" that finds them by colour: the ground truth for paste and annotate tests.

Every person is a pure-colour silhouette (a head and a body ellipse) inside its box, each
person of a picture in its own colour (:data:`COLOURS`), so a test knows every person's
pixels; :func:`colour_detector` answers in torchvision's detection format (masks, boxes,
keypoints) from those colours alone.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from formats import Person, Record, picture, write_caer_s, write_emotic_mat, write_emotic_npy
from formats import write_groupwalk as write_manifest
from PIL import Image

COLOURS = [(255, 0, 255), (0, 255, 255), (255, 255, 0)]
"""The colours of a picture's first, second and third person."""


def silhouette(box: tuple[int, int, int, int], shape: tuple[int, int]) -> np.ndarray:
    """A person's pixels inside ``box`` (x1, y1, x2, y2): a head ellipse on a body ellipse."""
    x1, y1, x2, y2 = box
    ys, xs = np.mgrid[0 : shape[0], 0 : shape[1]]
    cx, w, h = (x1 + x2) / 2, x2 - x1, y2 - y1
    head = ((xs - cx) / (w / 4)) ** 2 + ((ys - (y1 + h / 6)) / (h / 6)) ** 2 <= 1
    trunk = ((xs - cx) / (w / 2.2)) ** 2 + ((ys - (y1 + 0.62 * h)) / (0.36 * h)) ** 2 <= 1
    return head | trunk


def paint(image: Image.Image, boxes: list[tuple[int, int, int, int]]) -> Image.Image:
    """``image`` with a person in each box, the k-th in ``COLOURS[k]``, the first in front."""
    pixels = np.asarray(image.convert("RGB")).copy()
    for k in reversed(range(len(boxes))):
        pixels[silhouette(boxes[k], pixels.shape[:2])] = COLOURS[k]
    return Image.fromarray(pixels)


def people_in(pixels: np.ndarray, tolerance: int = 8) -> list[np.ndarray]:
    """Each painted person of an (H, W, 3) uint8 picture as a bool mask (absent ones left out)."""
    out = []
    for colour in COLOURS:
        mask = (np.abs(pixels.astype(int) - colour) <= tolerance).all(axis=2)
        if mask.sum() > 4:
            out.append(mask)
    return out


def colour_detector(calls: list[int] | None = None, fail_after: int | None = None):
    """A detector in torchvision's interface that finds the painted people: a soft mask, a
    box, 17 keypoints spread over the silhouette's box, scores 0.9. ``calls`` counts pictures
    seen; after ``fail_after`` calls it raises KeyboardInterrupt (a killed run)."""
    seen = []

    def detect(images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        if fail_after is not None and len(seen) >= fail_after:
            raise KeyboardInterrupt
        seen.append(len(images))
        if calls is not None:
            calls.append(len(images))
        outputs = []
        for image in images:
            pixels = (image.permute(1, 2, 0) * 255).round().byte().cpu().numpy()
            masks = people_in(pixels)
            boxes, points = [], []
            for m in masks:
                ys, xs = np.nonzero(m)
                boxes.append([xs.min(), ys.min(), xs.max() + 1, ys.max() + 1])
                t = np.linspace(0.1, 0.9, 17)
                px = xs.min() + t * (xs.max() - xs.min())
                py = ys.min() + t * (ys.max() - ys.min())
                points.append(np.stack([px, py, np.ones(17)], axis=1))
            n = len(masks)
            h, w = pixels.shape[:2]
            outputs.append(
                {
                    "boxes": torch.tensor(np.array(boxes, dtype=np.float32).reshape(n, 4)),
                    "labels": torch.ones(n, dtype=torch.int64),
                    "scores": torch.full((n,), 0.9),
                    "masks": torch.tensor(
                        np.array(masks, dtype=np.float32).reshape(n, 1, h, w) * 0.9
                    ),
                    "keypoints": torch.tensor(np.array(points, dtype=np.float32).reshape(n, 17, 3)),
                    "keypoints_scores": torch.full((n, 17), 3.0),
                }
            )
        return outputs

    return detect


EMOTIC_BOXES = [(8, 10, 56, 70), (36, 6, 88, 74)]  # the first person reaches into the second's box
EMOTIC_SIZE = (96, 80)


def _emotic_records(split: str, n: int) -> list[Record]:
    def person(k: int) -> Person:
        vad = (5.0, 5.0, 5.0)
        cats = [["Happiness"]] if k == 0 else [["Sadness"]]
        return Person(EMOTIC_BOXES[k], cats, [vad], cats[0], vad)

    return [
        Record("images", f"{split}_{i}.png", EMOTIC_SIZE, [person(0), person(1)]) for i in range(n)
    ]


def write_emotic(root: Path, layout: str) -> Path:
    """EMOTIC in the ``mat`` or ``npy`` layout, three pictures a split, two painted people in
    each (the npy layout's context arrays painted at their scale)."""
    splits = {s: _emotic_records(s, 3) for s in ("train", "val", "test")}
    if layout == "mat":
        write_emotic_mat(root, splits)
        for records in splits.values():
            for i, r in enumerate(records):
                path = root / "emotic" / r.folder / r.filename
                paint(picture(*r.size, seed=i), EMOTIC_BOXES).save(path)
        return root
    for split, records in splits.items():
        write_emotic_npy(root, split, records, context=64, body=32)
        path = root / f"{split}_context_arr.npy"
        arr = np.load(path)
        sx, sy = 64 / EMOTIC_SIZE[0], 64 / EMOTIC_SIZE[1]
        boxes = [
            (round(a * sx), round(b * sy), round(c * sx), round(d * sy))
            for a, b, c, d in EMOTIC_BOXES
        ]
        for row in range(len(arr)):
            arr[row] = np.asarray(paint(Image.fromarray(arr[row]), boxes))
        np.save(path, arr)
    return root


CAER_SIZE = (120, 90)
CAER_BOXES = [(40, 8, 80, 88), (90, 30, 116, 88)]  # the actor, a passer-by


def caer_face(box: tuple[int, int, int, int]) -> tuple[int, int, int, int]:
    """The face box of the person in ``box`` (the head ellipse's box)."""
    x1, y1, x2, y2 = box
    w, h = x2 - x1, y2 - y1
    cx = (x1 + x2) / 2
    return round(cx - w / 4), y1, round(cx + w / 4), round(y1 + h / 3)


def write_caer(root: Path) -> Path:
    """CAER-S (``train/<Class>``, ``test/<Class>``) with an actor and a passer-by painted in
    every frame, and a face-box file of the actors' faces (``faces.csv``)."""
    frames = {"train": {"Happy": [False] * 3, "Sad": [False] * 3}, "test": {"Happy": [False]}}
    written = write_caer_s(root, frames, size=CAER_SIZE)
    lines = []
    for rel, path in written.items():
        paint(Image.open(path), CAER_BOXES).save(path)
        label = rel.split("/")[1]
        lines.append(f"{rel},{label},{','.join(map(str, caer_face(CAER_BOXES[0])))}")
    (root / "faces.csv").write_text("\n".join(lines) + "\n")
    return root


GROUPWALK_BOXES = [(4, 6, 30, 60), (40, 4, 70, 62)]


def write_groupwalk(root: Path) -> Path:
    """GroupWalk's manifest with two painted people a frame, both annotated."""
    rows = []
    for split in ("train", "val", "test"):
        for f in range(3):
            frame = f"frames/{split}_{f}.png"
            for k, box in enumerate(GROUPWALK_BOXES):
                rows.append(
                    {"frame": frame, "video": f"{split}{f}", "person": k,
                     "x1": box[0], "y1": box[1], "x2": box[2], "y2": box[3],
                     "emotion": ("Happy", "Sad")[k], "split": split}
                )  # fmt: skip
    write_manifest(root, rows, size=(96, 64))
    for row in rows:
        path = root / row["frame"]
        if row["person"] == 0:
            paint(Image.open(path), GROUPWALK_BOXES).save(path)
    return root

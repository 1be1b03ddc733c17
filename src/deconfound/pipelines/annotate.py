"""``deconfound annotate``: the sidecar files that real models make, for a data set on disk.

- **masks**: each picture's people from torchvision's Mask R-CNN (``maskrcnn_resnet50_fpn``,
  COCO's ``person``), written as an instance mask (``masks/<stem>.png``, a palette PNG: 0 no
  one, k the k-th most confident person; :mod:`deconfound.data.sidecars`). ``paste`` then cuts
  each sample's own person, matched to its box (:func:`~deconfound.data.silhouettes.
  own_person`; on CAER-S the instance that holds the face, so the whole actor).
- **pose**: each person's 17 COCO keypoints from torchvision's Keypoint R-CNN
  (``keypointrcnn_resnet50_fpn``), written as OpenPose's ``--write_json`` layout
  (``pose/<stem>_keypoints.json``, 51 values a person) with the confidence
  sigmoid(torchvision's keypoint score), 0 where that score is negative (EmotiCon then reads
  the keypoint as missing); EmotiCon reads them with ``keypoints: 17`` and
  ``data.view_sizes.pose: 17``.

Depth maps have no torchvision model; ``docs/datasets.md`` names the tools and the format read.

Pictures are decoded once per kind and given to the detector in batches (on the GPU when
asked); each file is written atomically as its batch finishes and existing files are skipped,
so a stopped run resumes where it stopped. Detections scored below ``threshold`` are dropped,
and a mask is the detector's soft mask above 0.5 (torchvision's own rule).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

import numpy as np
import torch
import torchvision
from torch import nn
from tqdm import tqdm

from deconfound.data import sidecars
from deconfound.data.sample import ImageRef, Sample
from deconfound.data.silhouettes import own_person
from deconfound.data.views import Source, load_image
from deconfound.errors import ConfigError, DeconfoundError
from deconfound.io import atomic_write_text
from deconfound.models.weights import (
    fetch_torchvision,
    is_file_spec,
    read_state_dict,
    torchvision_weights,
)

log = logging.getLogger(__name__)

KINDS = ("masks", "pose")
"""What ``annotate`` makes: the sidecar kinds with a torchvision model."""

ARCHS = {"masks": "maskrcnn_resnet50_fpn", "pose": "keypointrcnn_resnet50_fpn"}
"""The torchvision detector of each kind."""

PERSON = 1
"""COCO's ``person`` label in torchvision's detectors (Mask R-CNN's 91 and Keypoint R-CNN's 2)."""

KEYPOINTS = 17
"""COCO's keypoints a person (Keypoint R-CNN's output)."""

MAX_PEOPLE = 254
"""People an instance mask holds at most (palette indices 1..254; 255 is a person of unknown
identity)."""

Detection = dict[str, torch.Tensor]
Detector = Callable[[list[torch.Tensor]], list[Detection]]
"""torchvision's detection interface: float (3, H, W) pictures in 0..1 to one dict a picture
(``boxes``, ``labels``, ``scores`` and ``masks`` or ``keypoints``/``keypoints_scores``)."""


class _Reader(Protocol):
    root: Path

    def samples(self, split: str) -> list[Sample]: ...


@dataclass
class Annotated:
    """What :func:`annotate` did for one kind: pictures seen, files written and skipped (made
    before), people (samples) and how many got a person of their own (a matched instance, or a
    skeleton inside their box), the first few that did not, and the seconds it took."""

    kind: str
    pictures: int = 0
    written: int = 0
    skipped: int = 0
    people: int = 0
    matched: int = 0
    unmatched: list[str] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def without(self) -> int:
        return self.people - self.matched


def load_detector(
    kind: str, weights: str | None, device: str, size: int = 800, max_people: int = 100
) -> nn.Module:
    """The torchvision detector of ``kind`` (:data:`ARCHS`) in eval mode on ``device``, with
    ``weights``: a torchvision weights name (``DEFAULT``, ``COCO_V1``, read through
    torchvision's hub cache, offline once there), a local file, or None (random: for testing
    the plumbing only). Pictures are resized to ``size`` pixels on their shorter side; at most
    ``max_people`` detections a picture are kept (torchvision's default: 100)."""
    if kind not in ARCHS:
        raise ConfigError(f"unknown annotation '{kind}'; choose {', '.join(KINDS)}")
    arch = ARCHS[kind]
    model = torchvision.models.get_model(
        arch,
        weights=None,
        weights_backbone=None,
        min_size=size,
        max_size=round(size * 1333 / 800),
        box_detections_per_img=max_people,
    )
    if weights is not None:
        if is_file_spec(weights):
            state, source = read_state_dict(weights), str(weights)
        else:
            named = torchvision_weights(arch, weights)
            state, source = fetch_torchvision(named), f"{type(named).__name__}.{named.name}"
        missing, unexpected = model.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise DeconfoundError(
                f"{source}: not the weights of torchvision's {arch} ({len(missing)} missing "
                f"keys, e.g. {missing[:2]}; {len(unexpected)} unexpected, e.g. {unexpected[:2]})"
            )
        log.info("%s: %s weights from %s", kind, arch, source)
    else:
        log.warning("%s: %s with random weights: its files say nothing about people", kind, arch)
    return model.eval().to(device)


def annotate(
    reader: _Reader,
    splits: Sequence[str],
    detectors: Mapping[str, Detector],
    *,
    device: str = "cpu",
    batch_size: int = 4,
    threshold: float = 0.5,
    progress: bool = False,
) -> list[Annotated]:
    """Write the sidecar files of every kind in ``detectors`` (kind → detector) for every
    picture of ``splits``, skipping files that exist; one :class:`Annotated` a kind."""
    if batch_size < 1:
        raise ConfigError(f"--batch-size must be 1 or more, got {batch_size}")
    samples = [s for split in splits for s in reader.samples(split)]
    pictures = list(dict.fromkeys(s.image for s in samples))
    done = []
    for kind, detector in detectors.items():
        if kind not in KINDS:
            raise ConfigError(f"unknown annotation '{kind}'; choose {', '.join(KINDS)}")
        start = time.perf_counter()
        result = Annotated(kind, pictures=len(pictures))
        target = {p: _target(kind, p, reader.root) for p in pictures}
        todo = [p for p in pictures if not target[p].is_file()]
        result.skipped = len(pictures) - len(todo)
        bar = tqdm(total=len(todo), desc=f"annotate {kind}", unit="img", disable=not progress)
        for batch in _batches(todo, batch_size):
            images = [load_image(p) for p in batch]
            tensors = [_to_tensor(im, device) for im in images]
            with torch.inference_mode():
                outputs = detector(tensors)
            for p, im, out in zip(batch, images, outputs, strict=True):
                write = _write_masks if kind == "masks" else _write_pose
                write(target[p], _people(out, threshold), im.size)
            result.written += len(batch)
            bar.update(len(batch))
        bar.close()
        _count_matches(result, samples, target, reader.root)
        result.seconds = time.perf_counter() - start
        done.append(result)
    return done


def _target(kind: str, image: ImageRef, root: Path) -> Path:
    return sidecars.candidates(kind, root, sidecars.stem(image, root))[0]


def _batches(items: list[ImageRef], size: int) -> Iterable[list[ImageRef]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _to_tensor(image: object, device: str) -> torch.Tensor:
    pixels = torch.from_numpy(np.asarray(image, dtype=np.uint8).copy()).permute(2, 0, 1)
    return pixels.to(device).float().div_(255)


def _people(out: Detection, threshold: float) -> Detection:
    """The detections of people scored at least ``threshold``, most confident first, on the
    CPU."""
    keep = (out["labels"] == PERSON) & (out["scores"] >= threshold)
    order = torch.argsort(out["scores"][keep], descending=True)
    return {k: v[keep][order].detach().cpu() for k, v in out.items() if v.shape[:1] == keep.shape}


def _write_masks(path: Path, people: Detection, size: tuple[int, int]) -> None:
    """The instance mask of ``people`` (k = the k-th most confident; where two overlap, the
    more confident one)."""
    w, h = size
    labels = np.zeros((h, w), dtype=np.uint8)
    masks = people.get("masks", torch.zeros(0, 1, h, w))[:MAX_PEOPLE]
    for k in range(len(masks) - 1, -1, -1):
        labels[(masks[k, 0] > 0.5).numpy()] = k + 1
    sidecars.write_people(path, labels)


def _write_pose(path: Path, people: Detection, size: tuple[int, int]) -> None:
    """OpenPose's ``--write_json`` layout with each person's 17 COCO keypoints."""
    points = people.get("keypoints", torch.zeros(0, KEYPOINTS, 3))
    scores = people.get("keypoints_scores", torch.zeros(points.shape[:2]))
    confidence = torch.where(scores > 0, torch.sigmoid(scores), torch.zeros_like(scores))
    rows = []
    for xy, c in zip(points[..., :2], confidence, strict=True):
        triples = torch.cat([xy, c[:, None]], dim=1).flatten()
        rows.append({"person_id": [-1], "pose_keypoints_2d": [round(float(v), 2) for v in triples]})
    atomic_write_text(path, json.dumps({"version": 1.3, "people": rows}))


def _count_matches(
    result: Annotated, samples: Sequence[Sample], target: Mapping[ImageRef, Path], root: Path
) -> None:
    """How many ``samples`` find their own person in the files (every file read back as the
    readers read it)."""
    for s in samples:
        if s.hidden is None:
            continue
        result.people += 1
        path = target[s.image]
        if result.kind == "masks":
            labels = sidecars.read_people(path, Source(s, root).image_size())
            found = own_person(labels, s.hidden, face=s.person is None) is not None
        else:
            skeleton = sidecars.read_pose(path, s.hidden)  # as many keypoints as it has
            found = bool((skeleton[:, 2] > 0).any())
        if found:
            result.matched += 1
        elif len(result.unmatched) < 5:
            result.unmatched.append(f"{s.image} {s.hidden.as_tuple()}")

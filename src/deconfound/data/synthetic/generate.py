"""Write the synthetic confounded benchmark to disk: PNG images, annotation CSVs and sidecars.

Confounding: every scene type has a preferred emotion. In ``train``, ``val`` and ``test_iid`` the
scene is drawn uniformly and the emotion is the scene's preferred one with probability ``rho``
(otherwise uniform over the others), so P(emotion = preferred | scene) = rho. In
``test_balanced`` scene and emotion are independent; in ``test_anti`` the preferred emotion never
occurs. ``scenes`` holds person-free pictures labelled only by scene type, every fifth one in
its ``val`` part (for pretraining a scene backbone, as Places365 is used for real data).

Every image is drawn from its own random stream, seeded by (seed, split, index): the output is
identical for a given seed whatever the number of worker processes.

Every person image ``images/<split>/<name>.png`` (not the ``scenes`` ones) has four sidecar
files, made from the true drawn geometry, in the formats real tools write (see ``sidecars.py``):

- ``pose/images/<split>/<name>_keypoints.json``: OpenPose ``--write_json`` output, one person
  with 25 BODY_25 (x, y, confidence) triples in ``pose_keypoints_2d`` (image pixels);
- ``depth/images/<split>/<name>.png``: an 8-bit grayscale depth map at the image's size, 0
  nearest, 255 farthest (sky 255, ground 200 at the horizon to 20 at the bottom row, objects and
  the person's box at the ground depth of their bottom row);
- ``objects/images/<split>/<name>.json``: ``{"boxes": [[x1, y1, x2, y2], ...], "scores": [...],
  "labels": [...]}``, the scene objects' integer pixel boxes (x2/y2 exclusive) and shape names;
- ``masks/images/<split>/<name>.png``: the person's true mask, an 8-bit grayscale PNG at the
  image's size, 255 on every pixel the person was drawn on and 0 elsewhere (the silhouette
  before the image's noise; it lies inside the person box). Drawing it takes no random number,
  so the images are those of format 3.

Format 4 added the masks: :func:`generate` does not reuse a set of an older format.
"""

from __future__ import annotations

import csv
import json
import os
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from deconfound.data.sample import Box
from deconfound.data.synthetic.render import (
    EMOTIONS,
    SCENES,
    add_noise,
    draw_person,
    draw_scene,
    sample_expression,
)
from deconfound.data.synthetic.sidecars import sidecar_paths, write_sidecars
from deconfound.errors import DataError
from deconfound.io import read_meta, staged_folder

FORMAT = "deconfound-synthetic/4"
PERSON_SPLITS = ("train", "val", "test_iid", "test_balanced", "test_anti")
CONFOUNDED_SPLITS = ("train", "val", "test_iid")
ANNOTATION_COLUMNS = (
    "image",
    "split",
    "person_x1",
    "person_y1",
    "person_x2",
    "person_y2",
    "face_x1",
    "face_y1",
    "face_x2",
    "face_y2",
    "emotion",
    "scene",
)
SCENE_COLUMNS = ("image", "split", "scene")
SCENE_SPLITS = ("train", "val")


def default_sizes() -> dict[str, int]:
    return {
        "train": 4200,
        "val": 700,
        "test_iid": 1400,
        "test_balanced": 1400,
        "test_anti": 1400,
        "scenes": 2800,
    }


@dataclass(frozen=True)
class SynthConfig:
    """What a synthetic set is made from; two sets with equal configs are identical.

    Args:
        rho: P(emotion = the scene's preferred emotion | scene) in the confounded splits.
        seed: seed of every random draw.
        image_size: side of the square images, in pixels.
        sizes: number of images per split (``scenes`` included).
        ambiguity: share of people whose arms show a random emotion (the face stays true).
    """

    rho: float = 0.8
    seed: int = 0
    image_size: int = 128
    sizes: dict[str, int] = field(default_factory=default_sizes)
    ambiguity: float = 0.25

    def __post_init__(self) -> None:
        if not 0.0 <= self.rho <= 1.0:
            raise DataError(f"rho must lie in [0, 1], got {self.rho}")
        if self.image_size < 32:
            raise DataError(f"image_size must be at least 32 pixels, got {self.image_size}")
        unknown = set(self.sizes) - {*PERSON_SPLITS, "scenes"}
        if unknown:
            raise DataError(f"unknown synthetic split(s) {sorted(unknown)}")


def preferred_emotion(scene: int) -> int:
    """Index of the emotion that scene type ``scene`` favours."""
    return EMOTIONS.index(SCENES[scene].preferred)


def plan_split(split: str, n: int, rho: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Draw (emotion, scene) index arrays of length ``n`` for ``split``, confounded as described
    in the module docstring."""
    rng = np.random.default_rng([seed, _split_id(split), 0])
    k, m = len(EMOTIONS), len(SCENES)
    scenes = rng.integers(m, size=n)
    preferred = np.array([preferred_emotion(s) for s in scenes], dtype=np.int64)
    shift = rng.integers(1, k, size=n)  # a uniformly drawn *other* emotion
    other = (preferred + shift) % k
    if split in CONFOUNDED_SPLITS:
        emotions = np.where(rng.random(n) < rho, preferred, other)
    elif split == "test_balanced":
        emotions = rng.integers(k, size=n)
    elif split == "test_anti":
        emotions = other
    else:
        raise DataError(f"unknown synthetic split '{split}'")
    return emotions.astype(np.int64), scenes.astype(np.int64)


def _split_id(split: str) -> int:
    return (*PERSON_SPLITS, "scenes").index(split)


def _render(job: tuple[str, int, int, int, Path, str, SynthConfig]) -> tuple[Box, Box] | None:
    """Draw and save one image ``rel`` under ``root`` (and a person image's sidecars); return its
    (person, face) boxes, or None for a scene image."""
    split, index, emotion, scene, root, rel, cfg = job
    rng = np.random.default_rng([cfg.seed, _split_id(split), index + 1])
    img, layout = draw_scene(SCENES[scene], cfg.image_size, rng)
    person = None
    if emotion >= 0:
        expression = sample_expression(EMOTIONS[emotion], rng, ambiguity=cfg.ambiguity)
        person = draw_person(img, expression, rng)
    add_noise(img, rng).save(root / rel, compress_level=1)
    if person is None:
        return None
    write_sidecars(root, rel, layout, person)
    return person.person, person.face


def generate(
    root: str | Path,
    cfg: SynthConfig | None = None,
    *,
    workers: int | None = None,
    progress: bool = True,
) -> Path:
    """Write the benchmark under ``root`` (cached: an identical existing set is reused).

    The set is written to ``<root>.partial`` and renamed into place when complete, so an
    interrupted run (or a full disk, said in one line) leaves no half-written set behind; the
    next call starts it again.
    """
    cfg = cfg or SynthConfig()
    root = Path(root)
    meta_path = root / "meta.json"
    if meta_path.exists():
        meta = read_meta(meta_path)
        if meta.get("config") == asdict(cfg) and meta.get("format") == FORMAT:
            return root
        if meta.get("format") != FORMAT:
            raise DataError(
                f"{root} holds a synthetic set in an older format ({meta.get('format')}); "
                "delete it to have it drawn again"
            )
        raise DataError(
            f"{root} holds a synthetic set made with other settings "
            f"({meta.get('config')}); choose another directory or delete it"
        )
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise DataError(f"{root} exists and is not a synthetic set; choose an empty directory")
    with staged_folder(root) as tmp:
        jobs, rows, scene_rows = _plan_jobs(tmp, cfg)
        workers = workers or min(4, os.cpu_count() or 1)
        with ProcessPoolExecutor(workers) as pool:
            results = pool.map(_render, jobs, chunksize=64)
            boxes = list(tqdm(results, total=len(jobs), desc="drawing", disable=not progress))
        for row, box in zip(rows, boxes[: len(rows)], strict=True):
            assert box is not None
            row.update(_box_columns("person", box[0]) | _box_columns("face", box[1]))
        _write_csv(tmp / "annotations.csv", ANNOTATION_COLUMNS, rows)
        _write_csv(tmp / "scenes.csv", SCENE_COLUMNS, scene_rows)
        meta = {
            "format": FORMAT,
            "config": asdict(cfg),
            "emotions": list(EMOTIONS),
            "scenes": [{"name": s.name, "preferred": s.preferred} for s in SCENES],
            "measured_rho": _measured_rho(rows),
        }
        (tmp / "meta.json").write_text(json.dumps(meta, indent=2))
    return root


def _plan_jobs(tmp: Path, cfg: SynthConfig) -> tuple[list, list[dict], list[dict]]:
    jobs, rows, scene_rows = [], [], []
    for split in PERSON_SPLITS:
        n = cfg.sizes.get(split, 0)
        if n == 0:
            continue
        (tmp / "images" / split).mkdir(parents=True)
        for sidecar in sidecar_paths(tmp, f"images/{split}/any.png"):
            sidecar.parent.mkdir(parents=True)
        emotions, scenes = plan_split(split, n, cfg.rho, cfg.seed)
        for i, (e, s) in enumerate(zip(emotions, scenes, strict=True)):
            rel = f"images/{split}/{i:05d}.png"
            jobs.append((split, i, int(e), int(s), tmp, rel, cfg))
            rows.append({"image": rel, "split": split, "emotion": EMOTIONS[e], "scene": int(s)})
    n = cfg.sizes.get("scenes", 0)
    if n:
        (tmp / "images" / "scenes").mkdir(parents=True)
        rng = np.random.default_rng([cfg.seed, _split_id("scenes"), 0])
        for i, s in enumerate(rng.integers(len(SCENES), size=n)):
            rel = f"images/scenes/{i:05d}.png"
            jobs.append(("scenes", i, -1, int(s), tmp, rel, cfg))
            split = "val" if i % 5 == 4 else "train"
            scene_rows.append({"image": rel, "split": split, "scene": int(s)})
    return jobs, rows, scene_rows


def _box_columns(prefix: str, box: Box) -> dict[str, int]:
    return dict(
        zip(
            (f"{prefix}_x1", f"{prefix}_y1", f"{prefix}_x2", f"{prefix}_y2"),
            box.as_tuple(),
            strict=True,
        )
    )


def _write_csv(path: Path, columns: tuple[str, ...], rows: list[dict]) -> None:
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def _measured_rho(rows: list[dict]) -> dict[str, float]:
    """Per split, the share of people showing their scene's preferred emotion."""
    out: dict[str, float] = {}
    for split in PERSON_SPLITS:
        hits = [
            EMOTIONS.index(r["emotion"]) == preferred_emotion(r["scene"])
            for r in rows
            if r["split"] == split
        ]
        if hits:
            out[split] = round(float(np.mean(hits)), 4)
    return out

"""The synthetic benchmark: reproducible, confounded as asked, boxes that hold the person."""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY
from PIL import Image, ImageDraw

from deconfound.data.synthetic import (
    EMOTIONS,
    PERSON_SPLITS,
    SCENES,
    SynthConfig,
    generate,
    plan_split,
    preferred_emotion,
)
from deconfound.data.synthetic.render import (
    BODY_25,
    PROTOTYPES,
    SceneObject,
    _draw_shape,
    draw_person,
    sample_expression,
)
from deconfound.data.synthetic.sidecars import NEAR_DEPTH, sidecar_paths
from deconfound.errors import DataError


def _rows(root: Path) -> list[dict[str, str]]:
    with (root / "annotations.csv").open() as f:
        return list(csv.DictReader(f))


def _preferred_share(rows: list[dict[str, str]], split: str) -> float:
    hits = [
        EMOTIONS.index(r["emotion"]) == preferred_emotion(int(r["scene"]))
        for r in rows
        if r["split"] == split
    ]
    return float(np.mean(hits))


def test_same_seed_same_bytes_other_seed_other_images(tmp_path: Path) -> None:
    small = replace(TINY, sizes={"train": 20, "test_anti": 5, "scenes": 3})
    a = generate(tmp_path / "a", small, progress=False, workers=1)
    b = generate(tmp_path / "b", small, progress=False, workers=2)
    c = generate(tmp_path / "c", replace(small, seed=2), progress=False)
    assert (a / "annotations.csv").read_bytes() == (b / "annotations.csv").read_bytes()
    for path in sorted((a / "images").rglob("*.png")):
        assert path.read_bytes() == (b / path.relative_to(a)).read_bytes()
    assert (a / "annotations.csv").read_bytes() != (c / "annotations.csv").read_bytes()
    first = "images/train/00000.png"
    assert not np.array_equal(np.asarray(Image.open(a / first)), np.asarray(Image.open(c / first)))


@pytest.mark.parametrize("rho", [0.8, 0.5])
def test_written_annotations_have_the_asked_confounding(tmp_path: Path, rho: float) -> None:
    cfg = SynthConfig(
        rho=rho,
        seed=3,
        image_size=32,
        sizes={"train": 1500, "test_balanced": 1400, "test_anti": 300},
    )
    rows = _rows(generate(tmp_path / "s", cfg, progress=False))
    assert abs(_preferred_share(rows, "train") - rho) <= 0.03
    assert abs(_preferred_share(rows, "test_balanced") - 1 / len(EMOTIONS)) <= 0.03
    assert _preferred_share(rows, "test_anti") == 0.0
    # the balanced split is balanced over emotions and over scenes
    emotions = [r["emotion"] for r in rows if r["split"] == "test_balanced"]
    counts = np.array([emotions.count(e) for e in EMOTIONS])
    assert counts.min() > 0.7 * counts.mean()
    meta = json.loads((tmp_path / "s" / "meta.json").read_text())
    assert meta["measured_rho"]["train"] == pytest.approx(_preferred_share(rows, "train"), abs=1e-4)


def test_plan_every_scene_prefers_a_real_emotion_and_each_emotion_is_preferred() -> None:
    assert len(SCENES) > len(EMOTIONS)
    assert {preferred_emotion(s) for s in range(len(SCENES))} == set(range(len(EMOTIONS)))
    emotions, scenes = plan_split("test_anti", 5000, 0.8, seed=0)
    assert not np.any(emotions == np.array([preferred_emotion(s) for s in scenes]))


@pytest.mark.parametrize("emotion", EMOTIONS)
def test_person_lies_inside_its_box(emotion: str) -> None:
    for seed in range(25):
        rng = np.random.default_rng(seed)
        canvas = Image.new("RGB", (96, 96), (0, 255, 0))
        drawn = draw_person(canvas, sample_expression(emotion, rng), rng)
        person, face = drawn.person, drawn.face
        changed = np.any(np.asarray(canvas) != (0, 255, 0), axis=2)
        ys, xs = np.nonzero(changed)
        assert xs.min() >= person.x1 and xs.max() < person.x2
        assert ys.min() >= person.y1 and ys.max() < person.y2
        assert person.x1 >= 0 and person.x2 <= 96 and person.y1 >= 0 and person.y2 <= 96
        assert person.x1 <= face.x1 < face.x2 <= person.x2
        assert person.y1 <= face.y1 < face.y2 <= person.y2
        assert changed[face.y1 : face.y2, face.x1 : face.x2].mean() > 0.5  # the head fills its box
        assert len(drawn.keypoints) == len(BODY_25)
        for x, y, c in drawn.keypoints:
            assert person.x1 <= x < person.x2 and person.y1 <= y < person.y2 and 0 < c <= 1


@pytest.mark.parametrize("shape", sorted({s.shape for s in SCENES}))
def test_scene_object_lies_inside_its_box(shape: str) -> None:
    rng = np.random.default_rng(0)
    for _ in range(50):
        r, x, y = 64 * rng.uniform(0.04, 0.11), rng.uniform(0, 64), rng.uniform(0, 64)
        canvas = Image.new("RGB", (64, 64))
        _draw_shape(ImageDraw.Draw(canvas), shape, x, y, r, (255, 255, 255))
        ys, xs = np.nonzero(np.asarray(canvas).any(axis=2))
        box = SceneObject(shape, x, y, r).box(64)
        assert xs.min() >= box.x1 and xs.max() < box.x2
        assert ys.min() >= box.y1 and ys.max() < box.y2


def test_expressions_differ_between_emotions() -> None:
    faces = {
        e: np.array([p.mouth_curve, p.mouth_open, p.brow_slope, p.eye_open])
        for e, p in PROTOTYPES.items()
    }
    for a in EMOTIONS:
        for b in EMOTIONS:
            if a < b:
                assert np.abs(faces[a] - faces[b]).max() >= 0.3, (a, b)


def _some_person_rows(root: Path) -> list[dict[str, str]]:
    """The first two rows of every person split."""
    rows = _rows(root)
    return [r for split in PERSON_SPLITS for r in [r for r in rows if r["split"] == split][:2]]


def _box(row: dict[str, str], prefix: str) -> tuple[int, int, int, int]:
    x1, y1, x2, y2 = (int(row[f"{prefix}_{c}"]) for c in ("x1", "y1", "x2", "y2"))
    return x1, y1, x2, y2


def test_every_person_image_and_no_scene_image_has_sidecars(tiny_root: Path) -> None:
    for row in _rows(tiny_root):
        assert all(p.is_file() for p in sidecar_paths(tiny_root, row["image"])), row["image"]
    with (tiny_root / "scenes.csv").open() as f:
        scene_images = [r["image"] for r in csv.DictReader(f)]
    assert scene_images
    for image in scene_images:
        assert not any(p.exists() for p in sidecar_paths(tiny_root, image)), image
    assert sidecar_paths(tiny_root, "images/train/00012.png")[0] == (
        tiny_root / "pose/images/train/00012_keypoints.json"
    )


def test_pose_sidecar_is_openpose_body25_on_the_drawn_person(tiny_root: Path) -> None:
    for row in _some_person_rows(tiny_root):
        pose = json.loads(sidecar_paths(tiny_root, row["image"])[0].read_text())
        assert pose["version"] == 1.3 and len(pose["people"]) == 1
        person = pose["people"][0]
        assert person["person_id"] == [-1] and person["face_keypoints_2d"] == []
        flat = person["pose_keypoints_2d"]
        assert len(flat) == 3 * 25
        joints = {name: flat[3 * i : 3 * i + 3] for i, name in enumerate(BODY_25)}
        px1, py1, px2, py2 = _box(row, "person")
        fx1, fy1, fx2, fy2 = _box(row, "face")
        for name in ("RWrist", "LWrist", "RElbow", "LElbow", "RHip", "LHip", "MidHip"):
            x, y, c = joints[name]
            assert px1 <= x < px2 and py1 <= y < py2 and c == 1.0, (row["image"], name)
        for name in ("Nose", "REye", "LEye"):
            x, y, c = joints[name]
            assert fx1 <= x < fx2 and fy1 <= y < fy2 and c > 0, (row["image"], name)
        # the person faces the viewer: its right side is on the image's left
        assert joints["RShoulder"][0] < joints["Neck"][0] < joints["LShoulder"][0]
        assert joints["REye"][0] < joints["LEye"][0] and joints["RHip"][0] < joints["LHip"][0]


def test_depth_sidecar_is_a_grey_map_with_the_person_nearer_than_the_sky(tiny_root: Path) -> None:
    for row in _some_person_rows(tiny_root):
        depth = Image.open(sidecar_paths(tiny_root, row["image"])[1])
        assert depth.mode == "L"
        assert depth.size == Image.open(tiny_root / row["image"]).size
        d = np.asarray(depth)
        x1, y1, x2, y2 = _box(row, "person")
        sky = d[: d.shape[0] // 4]  # the horizon lies in the lower half
        assert d[y1:y2, x1:x2].mean() < sky.mean()
        assert (d[-1] == NEAR_DEPTH).all()  # whatever stands on the bottom row is nearest


def test_objects_sidecar_boxes_are_non_empty_and_inside_the_image(tiny_root: Path) -> None:
    for row in _some_person_rows(tiny_root):
        objects = json.loads(sidecar_paths(tiny_root, row["image"])[2].read_text())
        w, h = Image.open(tiny_root / row["image"]).size
        assert len(objects["boxes"]) >= 1
        assert len(objects["boxes"]) == len(objects["scores"]) == len(objects["labels"])
        for x1, y1, x2, y2 in objects["boxes"]:
            assert 0 <= x1 < x2 <= w and 0 <= y1 < y2 <= h
        assert set(objects["labels"]) == {SCENES[int(row["scene"])].shape}
        assert all(0 < s <= 1 for s in objects["scores"])


def test_generation_is_cached_and_refuses_other_settings(tiny_root: Path) -> None:
    stamp = (tiny_root / "annotations.csv").stat().st_mtime_ns
    assert generate(tiny_root, TINY, progress=False) == tiny_root
    assert (tiny_root / "annotations.csv").stat().st_mtime_ns == stamp
    with pytest.raises(DataError, match="other settings"):
        generate(tiny_root, replace(TINY, rho=0.5), progress=False)


def test_an_interrupted_generation_is_redone(tmp_path: Path) -> None:
    small = replace(TINY, sizes={"train": 7})
    partial = tmp_path / "set.partial"
    (partial / "images").mkdir(parents=True)
    (partial / "junk.png").write_bytes(b"half")
    root = generate(tmp_path / "set", small, progress=False)
    assert not partial.exists()
    assert len(_rows(root)) == 7 and not (root / "junk.png").exists()


def test_bad_settings_are_refused() -> None:
    with pytest.raises(DataError, match="rho"):
        SynthConfig(rho=1.5)
    with pytest.raises(DataError, match="unknown synthetic split"):
        SynthConfig(sizes={"tain": 10})

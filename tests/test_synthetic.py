"""The synthetic benchmark: reproducible, confounded as asked, boxes that hold the person."""

from __future__ import annotations

import csv
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from conftest import TINY
from PIL import Image

from deconfound.data.synthetic import (
    EMOTIONS,
    SCENES,
    SynthConfig,
    generate,
    plan_split,
    preferred_emotion,
)
from deconfound.data.synthetic.render import PROTOTYPES, draw_person, sample_expression
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
        person, face = draw_person(canvas, sample_expression(emotion, rng), rng)
        changed = np.any(np.asarray(canvas) != (0, 255, 0), axis=2)
        ys, xs = np.nonzero(changed)
        assert xs.min() >= person.x1 and xs.max() < person.x2
        assert ys.min() >= person.y1 and ys.max() < person.y2
        assert person.x1 >= 0 and person.x2 <= 96 and person.y1 >= 0 and person.y2 <= 96
        assert person.x1 <= face.x1 < face.x2 <= person.x2
        assert person.y1 <= face.y1 < face.y2 <= person.y2
        assert changed[face.y1 : face.y2, face.x1 : face.x2].mean() > 0.5  # the head fills its box


def test_expressions_differ_between_emotions() -> None:
    faces = {
        e: np.array([p.mouth_curve, p.mouth_open, p.brow_slope, p.eye_open])
        for e, p in PROTOTYPES.items()
    }
    for a in EMOTIONS:
        for b in EMOTIONS:
            if a < b:
                assert np.abs(faces[a] - faces[b]).max() >= 0.3, (a, b)


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

"""The synthetic facial-expression benchmark: IERN's layout, the folds' confounding, a real
source shortcut and a real expression, reproducible and cached."""

from __future__ import annotations

import json
import pickle
import re
from collections import Counter
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from deconfound.data.sample import BASIC_EMOTIONS
from deconfound.data.synthetic_faces import (
    FOLDS,
    FORMAT,
    STYLES,
    FaceSynthConfig,
    SyntheticFacesReader,
    draw_face,
    generate,
    home_source,
    missing_source,
    plan_folds,
    sample_identity,
)
from deconfound.errors import DataError

SMALL = FaceSynthConfig(size=32, subjects=6, frames=2, bias=0.6, seed=3)  # release folds
HOME = replace(SMALL, design="home")
SOURCES = tuple(s.name for s in STYLES)
ID = re.compile(r"^SyntheticFaces/(\w+)/images/(S(\d{3})_(\d{3})_(\d{8}))\.png$")


@pytest.fixture(scope="module")
def small_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small set (6 subjects a source, 2 frames, 32 pixels); treat as read-only."""
    return generate(tmp_path_factory.mktemp("faces") / "small", SMALL, workers=1, progress=False)


@pytest.fixture(scope="module")
def home_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """SMALL with the home fold design; treat as read-only."""
    return generate(tmp_path_factory.mktemp("faces") / "home", HOME, workers=1, progress=False)


def _ids(root: Path, split: str, fold: str) -> list[str]:
    text = (root / f"{split}_ids_{fold}.csv").read_text()
    assert text.endswith("\n")
    return text.splitlines()


def _parse(line: str) -> tuple[int, int, int, int]:
    """(source, subject, emotion, frame) of an id line."""
    m = ID.match(line)
    assert m, line
    return SOURCES.index(m[1]), int(m[3]), int(m[4]) - 1, int(m[5])


def _labels(root: Path) -> dict[str, str]:
    with (root / "emotion_labels.pkl").open("rb") as f:
        return pickle.load(f)


def test_layout_and_file_formats(small_root: Path) -> None:
    meta = json.loads((small_root / "meta.json").read_text())
    assert meta["format"] == FORMAT and meta["config"] == SMALL.__dict__
    assert meta["sources"] == list(SOURCES) and meta["folds"] == list(FOLDS)
    assert meta["emotions"] == list(BASIC_EMOTIONS)
    labels = _labels(small_root)
    assert type(labels) is dict
    assert all(type(k) is str and type(v) is str for k, v in labels.items())
    assert set(labels.values()) == set(BASIC_EMOTIONS)
    images = sorted(small_root.glob("*/images/*.png"))
    n = len(SOURCES) * SMALL.subjects * len(BASIC_EMOTIONS) * SMALL.frames
    assert len(images) == len(labels) == meta["images"] == n
    for path in images[:: len(images) // 10]:
        with Image.open(path) as img:
            assert img.format == "PNG" and img.mode == "RGB" and img.size == (32, 32)
    for fold in FOLDS:
        for split in ("train", "test"):
            lines = _ids(small_root, split, fold)
            assert len(lines) == len(set(lines)) == meta["counts"][fold][split]
            for line in lines:
                emotion = _parse(line)[2]
                m = ID.match(line)
                assert m is not None
                assert (small_root / line.split("/", 1)[1]).is_file()
                assert labels[f"{m[1].lower()}_{m[2]}"] == BASIC_EMOTIONS[emotion]


def test_the_reader_reads_it(small_root: Path) -> None:
    reader = SyntheticFacesReader(small_root, fold="bias90v2")
    assert reader.folds() == sorted(FOLDS)
    test = reader.samples("test")
    assert len(test) == len(_ids(small_root, "test", "bias90v2"))
    assert {s.confounder for s in test} == {0, 1, 2}
    for s in test:  # the release design: every test picture is a held-out pair's
        assert s.confounder == missing_source(s.labels[0], "bias90v2")


PAIR = SMALL.subjects * SMALL.frames  # pictures of one (source, emotion) pair


@pytest.mark.parametrize("version", [1, 2, 3])
def test_release_folds_hold_out_each_sources_two_missing_emotions(
    small_root: Path, version: int
) -> None:
    meta = json.loads((small_root / "meta.json").read_text())
    train = [_parse(line) for line in _ids(small_root, "train", f"bias100v{version}")]
    test = [_parse(line) for line in _ids(small_root, "test", f"bias100v{version}")]
    held = {(s, e) for s, _, e, _ in test}
    assert len(held) == len(BASIC_EMOTIONS)  # one held-out source per emotion
    assert Counter(s for s, _ in held) == {0: 2, 1: 2, 2: 2}  # each source misses two
    assert held == {(missing_source(e, version), e) for e in range(len(BASIC_EMOTIONS))}
    assert not held & {(s, e) for s, _, e, _ in train}
    for e in range(len(BASIC_EMOTIONS)):  # each emotion trained from the two other sources
        assert {s for s, _, e2, _ in train if e2 == e} == set(range(3)) - {
            missing_source(e, version)
        }
    n = len(SOURCES) * len(BASIC_EMOTIONS) * PAIR
    assert len(test) == len(BASIC_EMOTIONS) * PAIR and len(train) == n - len(test)
    assert {p for _, p, _, _ in train} == {p for _, p, _, _ in test}  # people in both lists
    names = meta["held_out_sources"][f"bias100v{version}"]
    assert names == {BASIC_EMOTIONS[e]: SOURCES[s] for s, e in held}
    assert meta["counts"][f"bias100v{version}"]["train_held_out_share"] == 0.0


@pytest.mark.parametrize("version", [1, 2, 3])
def test_release_bias90_moves_a_share_of_each_held_out_pairs_sequences_into_training(
    small_root: Path, version: int
) -> None:
    train90 = _ids(small_root, "train", f"bias90v{version}")
    test90 = _ids(small_root, "test", f"bias90v{version}")
    test100 = _ids(small_root, "test", f"bias100v{version}")
    assert set(_ids(small_root, "train", f"bias100v{version}")) <= set(train90)
    assert set(test90) <= set(test100) and not set(train90) & set(test90)
    moved = [_parse(line) for line in set(train90) - set(test90) if line in test100]
    assert sorted(moved) == sorted(_parse(line) for line in set(test100) - set(test90))
    moved_per_pair = Counter((s, e) for s, _, e, _ in moved)
    share = round((1 - SMALL.bias) * SMALL.subjects) * SMALL.frames  # 2 of 6 sequences, 4 faces
    assert moved_per_pair == {(missing_source(e, version), e): share for e in range(6)}
    # whole sequences: no (source, person, emotion) has frames on both sides
    sequences = {
        side: {_parse(line)[:3] for line in ids}
        for side, ids in (("train", train90), ("test", test90))
    }
    assert sequences["test"] and not sequences["train"] & sequences["test"]
    meta = json.loads((small_root / "meta.json").read_text())["counts"][f"bias90v{version}"]
    assert meta["train_held_out_share"] == round(len(moved) / len(train90), 4)


def test_default_release_bias90_moves_ten_percent() -> None:
    cfg = FaceSynthConfig()
    pair = cfg.subjects * cfg.frames
    for fold, (train, test) in plan_folds(cfg).items():
        if fold.startswith("bias90"):
            moved = Counter(
                (i.source, i.emotion) for i in train if i.source == missing_source(i.emotion, fold)
            )
            assert set(moved.values()) == {round(0.1 * pair)}  # 12 of 120
            assert len(test) == 6 * (pair - round(0.1 * pair))


@pytest.mark.parametrize("version", [1, 2, 3])
def test_bias100_trains_on_home_pairs_and_tests_on_the_others(
    home_root: Path, version: int
) -> None:
    fold = f"bias100v{version}"
    train = [_parse(line) for line in _ids(home_root, "train", fold)]
    test = [_parse(line) for line in _ids(home_root, "test", fold)]
    assert all(s == home_source(e, version) for s, _, e, _ in train)
    assert all(s != home_source(e, version) for s, _, e, _ in test)
    for source in range(len(SOURCES)):
        train_people = {p for s, p, _, _ in train if s == source}
        test_people = {p for s, p, _, _ in test if s == source}
        assert train_people and test_people and not train_people & test_people
        assert len(train_people | test_people) == SMALL.subjects
    # every emotion is trained (from its home) and tested (from both other sources)
    assert Counter(e for _, _, e, _ in train).keys() == set(range(len(BASIC_EMOTIONS)))
    for e in range(len(BASIC_EMOTIONS)):
        assert {s for s, _, e2, _ in test if e2 == e} == set(range(3)) - {home_source(e, version)}


def test_each_pair_is_home_once_and_each_source_home_to_two_emotions() -> None:
    for version in (1, 2, 3):
        homes = Counter(home_source(e, version) for e in range(len(BASIC_EMOTIONS)))
        assert homes == {0: 2, 1: 2, 2: 2}
    for e in range(len(BASIC_EMOTIONS)):
        assert sorted(home_source(e, v) for v in (1, 2, 3)) == [0, 1, 2]


def _check_bias90(train: list[tuple[int, int, int, int]], bias: float, version: int) -> None:
    for e in range(len(BASIC_EMOTIONS)):
        home = home_source(e, version)
        per_source = Counter(s for s, _, e2, _ in train if e2 == e)
        n_home, total = per_source[home], sum(per_source.values())
        others = [per_source[s] for s in range(3) if s != home]
        assert others[0] == others[1] > 0
        assert abs(others[0] - n_home * (1 - bias) / (2 * bias)) <= 0.5  # the share, rounded
        assert abs(n_home / total - bias) <= 1 / total + 1e-9


@pytest.mark.parametrize("version", [1, 2, 3])
def test_bias90_mixes_in_a_little_of_the_other_sources(home_root: Path, version: int) -> None:
    train = [_parse(line) for line in _ids(home_root, "train", f"bias90v{version}")]
    _check_bias90(train, HOME.bias, version)
    bias100 = _ids(home_root, "train", f"bias100v{version}")
    assert set(bias100) <= set(_ids(home_root, "train", f"bias90v{version}"))
    assert _ids(home_root, "test", f"bias90v{version}") == _ids(
        home_root, "test", f"bias100v{version}"
    )
    tested = {p[:2] for p in (_parse(line) for line in _ids(home_root, "test", "bias100v1"))}
    assert not {p[:2] for p in train} & tested  # no test subject in training


def test_default_home_config_bias90_share_is_0_9() -> None:
    cfg = FaceSynthConfig(design="home")
    for fold, (train, _) in plan_folds(cfg).items():
        if fold.startswith("bias90"):
            version = int(fold[-1])
            _check_bias90([(i.source, i.subject, i.emotion, i.frame) for i in train], 0.9, version)


def _tree(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in root.rglob("*") if p.is_file()}


def test_same_config_same_bytes_whatever_the_workers(tmp_path: Path) -> None:
    tiny = replace(SMALL, subjects=3, frames=1)
    a = _tree(generate(tmp_path / "a", tiny, workers=1, progress=False))
    b = _tree(generate(tmp_path / "b", tiny, workers=2, progress=False))
    assert a == b
    c = _tree(generate(tmp_path / "c", replace(tiny, seed=4), workers=1, progress=False))
    assert a.keys() == c.keys()
    first = "Studio/images/S001_001_00000001.png"
    assert a[first] != c[first]


def test_the_source_is_a_shortcut(home_root: Path) -> None:
    """A nearest-centroid classifier on the mean colour tells the source of unseen people."""
    small_root = home_root
    held_out = json.loads((small_root / "meta.json").read_text())["test_subjects"]
    feats: dict[bool, list[np.ndarray]] = {True: [], False: []}
    sources: dict[bool, list[int]] = {True: [], False: []}
    for s, name in enumerate(SOURCES):
        for path in sorted((small_root / name / "images").glob("*.png")):
            test = int(path.name[1:4]) in held_out[name]
            feats[test].append(np.asarray(Image.open(path), dtype=np.float64).mean((0, 1)))
            sources[test].append(s)
    x, y = np.array(feats[False]), np.array(sources[False])
    centroids = np.stack([x[y == s].mean(0) for s in range(len(SOURCES))])
    xt, yt = np.array(feats[True]), np.array(sources[True])
    pred = np.argmin(((xt[:, None] - centroids[None]) ** 2).sum(-1), axis=1)
    assert (pred == yt).mean() >= 0.9


@pytest.mark.parametrize("style", range(len(STYLES)))
def test_the_expression_changes_the_mouth_not_the_background(style: int) -> None:
    happy, sad = BASIC_EMOTIONS.index("Happiness"), BASIC_EMOTIONS.index("Sadness")
    st, size = STYLES[style], 48
    cx, cy = size * (0.5 + st.offset[0]), size * (0.5 + st.offset[1])
    unit = st.scale * size / 2  # the head's half-height
    for k in range(4):
        identity = sample_identity(np.random.default_rng([11, k]))
        a, b = (
            np.asarray(draw_face(e, style, identity, np.random.default_rng([12, k]), size), float)
            for e in (happy, sad)
        )
        diff = np.abs(a - b).mean(-1)
        mouth = diff[
            int(cy + 0.3 * unit) : int(cy + 0.8 * unit), int(cx - 0.5 * unit) : int(cx + 0.5 * unit)
        ]
        corner = diff[:8, :8].mean()
        assert corner == 0.0  # equally seeded streams: the same background and noise
        assert mouth.mean() > 5.0
        assert diff[size // 2 :].mean() > corner
        if style == 0:  # the studio's big centred face has its mouth in the lower third
            assert diff[2 * size // 3 :].mean() > 1.0


def test_every_emotion_looks_different() -> None:
    identity = sample_identity(np.random.default_rng(0))
    faces = [
        np.asarray(draw_face(e, 0, identity, np.random.default_rng(1), 48, intensity=1.0), float)
        for e in range(len(BASIC_EMOTIONS))
    ]
    for i in range(len(faces)):
        for j in range(i):
            assert np.abs(faces[i] - faces[j]).mean() > 0.5, (BASIC_EMOTIONS[i], BASIC_EMOTIONS[j])


def test_generation_is_cached_and_refuses_other_settings(small_root: Path) -> None:
    stamps = {p: p.stat().st_mtime_ns for p in small_root.rglob("*")}
    assert generate(small_root, SMALL, progress=False) == small_root
    assert {p: p.stat().st_mtime_ns for p in small_root.rglob("*")} == stamps
    with pytest.raises(DataError, match="other settings") as err:
        generate(small_root, replace(SMALL, seed=9), progress=False)
    assert "\n" not in str(err.value) and "another root or delete it" in str(err.value)
    assert {p: p.stat().st_mtime_ns for p in small_root.rglob("*")} == stamps


def test_another_format_or_a_foreign_folder_is_refused(tmp_path: Path) -> None:
    old = tmp_path / "old"
    old.mkdir()
    (old / "meta.json").write_text(json.dumps({"format": "deconfound-synthetic-faces/1"}))
    with pytest.raises(DataError, match="split sequences between train and test.*delete it") as err:
        generate(old, SMALL, progress=False)
    assert "\n" not in str(err.value)
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("mine")
    with pytest.raises(DataError, match="not a synthetic face set"):
        generate(foreign, SMALL, progress=False)


def test_an_interrupted_generation_is_redone(tmp_path: Path) -> None:
    tiny = replace(SMALL, subjects=2, frames=1)
    partial = tmp_path / "set.partial"
    partial.mkdir()
    (partial / "junk.png").write_bytes(b"half")
    root = generate(tmp_path / "set", tiny, workers=1, progress=False)
    assert not partial.exists() and not (root / "junk.png").exists()
    assert len(list(root.glob("*/images/*.png"))) == 3 * 2 * 6


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [("bias", 0.2, "bias"), ("subjects", 1, "subjects"), ("test_subjects", 1.0, "test_subjects"),
     ("frames", 0, "frames"), ("size", 8, "size")],
)  # fmt: skip
def test_bad_settings_are_refused(field: str, value: float, message: str) -> None:
    with pytest.raises(DataError, match=message):
        FaceSynthConfig(**{field: value})

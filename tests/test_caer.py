"""CAER-S: the folder tree read back, faces found by the bundled detector on a real photo and
cached, the documented fallback counted, box files, and bad input refused in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from conftest import one_epoch_overrides
from formats import face_photo, write_caer_s

from deconfound.config import load_config
from deconfound.data import faces as faces_mod
from deconfound.data.caer import CLASSES, CaerSReader
from deconfound.data.faces import MTCNNDetector, fallback_face
from deconfound.data.sample import Box
from deconfound.engine import train
from deconfound.errors import DataError

FRAMES = {
    "Train": {
        "Happy": [True, False, True, True],
        "Sad": [True, True, False, True],
        "anger": [True, True, True, True],  # any capitalisation of the class folders
    },
    "Test": {"Happy": [True], "Sad": [False]},
}


@pytest.fixture(scope="module")
def caer_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("caer") / "CAER-S"
    write_caer_s(root, FRAMES)
    return root


@pytest.fixture(scope="module")
def detected(caer_root: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    """Faces detected once (about 0.05 s per frame): the cache directory and the samples."""
    cache = tmp_path_factory.mktemp("faces")
    reader = CaerSReader(caer_root, val_fraction=0.25, cache_dir=cache, progress=False)
    samples = {s: reader.samples(s) for s in ("train", "val", "test")}
    return cache, {"samples": samples, "fallbacks": reader.fallbacks}


def test_the_bundled_detector_finds_the_face_in_a_real_photo() -> None:
    photo = face_photo()
    faces = MTCNNDetector().detect(photo)
    assert len(faces) == 1
    box, score = faces[0]
    assert score > 0.99
    # Grace Hopper's face lies in the upper middle of the 512 x 600 picture
    assert 150 < box.x1 < 200 and 100 < box.y1 < 150 and 330 < box.x2 < 380 and 320 < box.y2 < 370


def test_tree_reads_back_with_faces_and_fallbacks(caer_root: Path, detected) -> None:
    _, found = detected
    samples = found["samples"]
    train_val = samples["train"] + samples["val"]
    assert len(train_val) == 12 and len(samples["test"]) == 2
    assert {s.labels[0] for s in train_val} == {CLASSES.index(c) for c in ("Happy", "Sad", "Anger")}
    for s in train_val + samples["test"]:
        assert s.person is None and s.face is not None
        has_face = FRAMES[s.image.parent.parent.name][s.image.parent.name][
            sorted(p.name for p in s.image.parent.iterdir()).index(s.image.name)
        ]
        if has_face:  # the photo was pasted at the top centre, 150 px high
            assert s.face != fallback_face((200, 150)) and s.face.y1 < 60 and 60 < s.face.x1 < 110
        else:
            assert s.face == fallback_face((200, 150))
    fallbacks = found["fallbacks"]
    assert fallbacks["train"] + fallbacks["val"] == 2 and fallbacks["test"] == 1


def test_val_is_a_fixed_hash_share_of_train(caer_root: Path, detected) -> None:
    cache, found = detected
    train, val = found["samples"]["train"], found["samples"]["val"]
    assert not {s.image for s in train} & {s.image for s in val}
    assert 1 <= len(val) <= 6
    again = CaerSReader(caer_root, val_fraction=0.25, cache_dir=cache, progress=False)
    assert again.samples("val") == val


def test_detection_is_cached_per_split(caer_root: Path, detected, monkeypatch) -> None:
    cache, found = detected
    saved = json.loads((cache / "train.mtcnn.json").read_text())
    assert saved["source"] == "mtcnn" and len(saved["faces"]) == 12

    def no_detector(*args, **kwargs):
        raise AssertionError("the cached boxes should have been used")

    monkeypatch.setitem(faces_mod.DETECTORS, "mtcnn", no_detector)
    reader = CaerSReader(caer_root, val_fraction=0.25, cache_dir=cache, progress=False)
    assert reader.samples("train") == found["samples"]["train"]


def test_box_file_replaces_detection(caer_root: Path, tmp_path: Path) -> None:
    boxes = tmp_path / "boxes.csv"
    boxes.write_text("Train/Happy/0000.png,Happy,10,20,60,80\nTest/Sad/0013.png,4,1,2,3,4\n")
    reader = CaerSReader(caer_root, val_fraction=0, faces=boxes, cache_dir=tmp_path, progress=False)
    train = {s.image.name: s.face for s in reader.samples("train")}
    assert train["0000.png"] == Box(10, 20, 60, 80)
    assert train["0001.png"] == fallback_face((200, 150))  # not in the file
    assert reader.fallbacks["train"] == 11


@pytest.mark.parametrize(
    ("lines", "expected"),
    [
        ("Train/Happy/0000.png,Sad,1,2,3,4\n", r"0000.png: the box file boxes.csv labels it 'Sad', its folder 'Happy'"),  # noqa: E501
        ("Train/Happy/0000.png,Happy,1,2,300,4\n", r"0000.png: face box \(1, 2, 300, 4\) lies outside the 200x150 image"),  # noqa: E501
        ("Train/Happy/0000.png,Happy,1,2\n", r"boxes.csv: line 1 must be relpath,label,x1,y1,x2,y2"),  # noqa: E501
    ],
)  # fmt: skip
def test_bad_box_files_are_one_line(
    caer_root: Path, tmp_path: Path, lines: str, expected: str
) -> None:
    boxes = tmp_path / "boxes.csv"
    boxes.write_text(lines)
    reader = CaerSReader(caer_root, val_fraction=0, faces=boxes, cache_dir=tmp_path, progress=False)
    with pytest.raises(DataError, match=expected) as e:
        reader.samples("train")
    assert "\n" not in str(e.value)


def test_bad_trees_are_one_line(tmp_path: Path) -> None:
    write_caer_s(tmp_path / "a", {"train": {"Joy": [False]}})
    with pytest.raises(DataError, match=r"Joy: unknown class folder; CAER-S's are Anger"):
        CaerSReader(tmp_path / "a", faces=tmp_path / "x").samples("train")
    write_caer_s(tmp_path / "b", {"train": {"Happy": [False]}})
    with pytest.raises(DataError, match=r"no 'test/' folder"):
        CaerSReader(tmp_path / "b").samples("test")


def test_a_corrupt_frame_is_reported_on_its_row(caer_root: Path, tmp_path: Path) -> None:
    import shutil

    root = Path(shutil.copytree(caer_root, tmp_path / "copy"))
    bad = root / "Test/Sad/0013.png"
    bad.write_bytes(bad.read_bytes()[:100])  # truncated
    with pytest.raises(DataError, match=r"0013.png: cannot decode image"):
        CaerSReader(root, cache_dir=tmp_path / "c", progress=False).samples("test")
    reader = CaerSReader(root, cache_dir=tmp_path / "c", progress=False, skip_bad=True)
    assert len(reader.samples("test")) == 1 and len(reader.problems.messages) == 1


def test_the_caer_config_trains_on_face_and_masked_context(caer_root: Path, tmp_path: Path) -> None:
    boxes = tmp_path / "boxes.csv"
    frames = sorted(p.relative_to(caer_root).as_posix() for p in caer_root.rglob("*.png"))
    boxes.write_text("".join(f"{rel},{rel.split('/')[1]},60,0,140,94\n" for rel in frames))
    overrides = one_epoch_overrides(caer_root, tmp_path, "{face: 24, context: 32}")
    args = f"data.args={{val_fraction: 0.25, faces: {boxes}, cache_dir: {tmp_path}}}"
    cfg = load_config("caer_s", [*overrides, args])
    assert 0 <= train(cfg).best_score <= 1


def test_the_community_box_layout_is_read_whatever_the_spelling(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    root = tmp_path / "CAER-S"
    write_caer_s(
        root, {"Train": {"Anger": [True] * 3, "Happy": [True] * 2}, "Test": {"Sad": [True]}}
    )
    boxes = tmp_path / "boxes.csv"
    boxes.write_text(  # lower-case split folder, 'Angry' for Anger, one frame left out
        "train/Angry/0000.png,Angry,10,20,60,80\n"
        "train/angry/0001.PNG,0,11,20,60,80\n"
        "train/Happy/0003.png,Happy,12,20,60,80\n"
        "train/Happy/0004.png,3,13,20,60,80\n"
    )
    reader = CaerSReader(
        root, val_fraction=0, faces=boxes, cache_dir=tmp_path / "c", progress=False
    )
    with caplog.at_level("WARNING"):
        train = {s.image.name: s.face for s in reader.samples("train")}
    assert [train[f"000{i}.png"].x1 for i in (0, 1, 3, 4)] == [10, 11, 12, 13]  # type: ignore[union-attr]
    assert train["0002.png"] == fallback_face((200, 150)) and reader.fallbacks["train"] == 1
    assert "no line in the box file for 1 of 5 frames (first: Train/Anger/0002.png)" in caplog.text
    with pytest.raises(DataError, match=r"none of the 1 frames of Test/ \(test\) has a line") as e:
        reader.samples("test")
    assert "\n" not in str(e.value)


def test_batched_detection_equals_one_frame_at_a_time() -> None:
    photo = face_photo()
    small = photo.resize((256, 300))
    detector = MTCNNDetector()
    alone = [detector.detect(im) for im in (photo, small, photo, small.crop((0, 0, 10, 10)))]
    together = detector.detect_many([photo, small, photo, small.crop((0, 0, 10, 10))])
    assert len(together) == 4 and together[3] == [] and together[0] == together[2]
    for a, b in zip(alone, together, strict=True):
        assert [f[0] for f in a] == [f[0] for f in b]
        assert all(abs(x[1] - y[1]) < 1e-4 for x, y in zip(a, b, strict=True))

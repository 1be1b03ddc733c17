"""deconfound predict and the Predictor API: boxes given, detected or the whole image; the views
of training; outputs that parse back; drawings; one-line errors for bad images and box files."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_overrides
from formats import face_photo
from PIL import Image

from deconfound.cli import main
from deconfound.config import load_config
from deconfound.data import READERS, Box, EmotionDataModule, dataset_info
from deconfound.data.faces import MTCNNDetector
from deconfound.data.synthetic import SynthConfig, SyntheticReader, generate
from deconfound.engine import EmotionModule, load_module, train
from deconfound.errors import ConfigError
from deconfound.predict import (
    Prediction,
    Predictor,
    body_from_face,
    collect_inputs,
    face_from_body,
)
from deconfound.predict.files import PALETTE, annotate

MICRO = SynthConfig(
    rho=0.8,
    seed=2,
    image_size=48,
    sizes={"train": 14, "val": 7, "test_iid": 7, "test_balanced": 0, "test_anti": 0, "scenes": 0},
)
"""A synthetic set just big enough to train a checkpoint on (the shared tiny set takes longer
to draw than this whole file takes to run)."""


@pytest.fixture(scope="module")
def micro(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The micro set's root and an EMOT-Net checkpoint trained on it for one epoch."""
    base = tmp_path_factory.mktemp("predict")
    root = generate(base / "data", MICRO, progress=False)
    result = train(load_config("emotnet_synthetic", run_overrides(root, base / "runs", epochs=1)))
    return root, result.best_checkpoint


@pytest.fixture(scope="module")
def photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Grace Hopper's photo (matplotlib's sample), downscaled so that detection is quick."""
    path = tmp_path_factory.mktemp("photo") / "grace.jpg"
    face_photo().resize((128, 150)).save(path)
    return path


@pytest.fixture(scope="module")
def detector() -> MTCNNDetector:
    return MTCNNDetector()


def synthetic_images(root: Path, n: int) -> list[Path]:
    return [s.image for s in SyntheticReader(root).samples("test_iid")[:n]]


def untrained(tmp_path: Path, config: str, *overrides: str) -> Path:
    """A checkpoint of a bundled config's model as built (no data needed, no training)."""
    cfg = load_config(config, list(overrides)).to_dict()
    module = EmotionModule(cfg, load_weights=False)
    path = tmp_path / f"{config}.ckpt"
    torch.save({"hyper_parameters": {"config": cfg}, "state_dict": module.state_dict()}, path)
    return path


def check(pred: Prediction, classes: tuple[str, ...], k: int = 3, multiclass: bool = True) -> None:
    """A valid prediction: probabilities of the data set's classes, the top k sorted."""
    assert pred.error is None and tuple(pred.probabilities) == classes
    probs = list(pred.probabilities.values())
    assert all(0.0 <= p <= 1.0 for p in probs)
    if multiclass:
        assert sum(probs) == pytest.approx(1.0, abs=1e-5)
    best = [p for _, p in pred.top_k]
    assert len(best) == k and best == sorted(best, reverse=True) and best[0] == max(probs)
    assert all(pred.probabilities[emotion] == p for emotion, p in pred.top_k)


@pytest.mark.parametrize("crop", [False, True])
def test_given_boxes_give_the_views_and_outputs_of_training(
    micro: tuple[Path, Path], tmp_path: Path, crop: bool
) -> None:
    """Those of the test split, framed as evaluation frames them where training crops."""
    root, ckpt = micro
    if crop:
        crop_overrides = [*run_overrides(root, tmp_path), "data.augment={crop_scale: [0.64, 0.64]}"]
        ckpt = untrained(tmp_path, "emotnet_synthetic", *crop_overrides)
    samples = SyntheticReader(root).samples("test_iid")[:4]
    predictor = Predictor(ckpt, batch_size=3)  # two batches
    preds = predictor.predict([s.image for s in samples], [s.person for s in samples])
    module = load_module(ckpt)
    data = EmotionDataModule(module.cfg.data, module.model.views).dataset("test_iid")
    assert (data.augment is not None) == crop  # the frame, where training crops
    views = {v: torch.stack([data[i][0][v] for i in range(4)]) for v in module.model.views}
    with torch.no_grad():
        expected = module(views).softmax(-1)
    for pred, sample, row in zip(preds, samples, expected, strict=True):
        check(pred, SyntheticReader.info.classes)
        assert pred.box == sample.person.as_tuple() and pred.box_source == "given"
        assert list(pred.probabilities.values()) == pytest.approx(row.tolist(), abs=1e-6)


def test_without_boxes_faces_are_detected_or_the_whole_image_taken(
    micro: tuple[Path, Path], photo: Path, detector: MTCNNDetector
) -> None:
    root, ckpt = micro
    (synthetic,) = synthetic_images(root, 1)  # drawn people: no face a detector finds
    picture = Image.open(photo)
    found, whole, in_memory = Predictor(ckpt, detector=detector).predict(
        [photo, synthetic, picture]
    )
    (face,) = [box for box, _ in detector.detect(picture.convert("RGB"))]
    body = body_from_face(face, (128, 150))
    assert found.box_source == "detected" and found.box == body.as_tuple()
    assert found.face == face.as_tuple() and found.record()["face"] == list(face.as_tuple())
    assert body.x1 <= face.x1 and body.y1 <= face.y1 and body.x2 >= face.x2 and body.y2 > face.y2
    assert whole.box_source == "whole-image" and whole.box == (0, 0, 48, 48)
    assert whole.face is None and whole.record()["face"] is None
    assert in_memory.file == "<image 2>" and in_memory.box == found.box
    assert list(in_memory.probabilities.values()) == pytest.approx(
        list(found.probabilities.values()), abs=1e-6
    )
    for pred in (found, whole, in_memory):
        check(pred, SyntheticReader.info.classes)
    (undetected,) = Predictor(ckpt, detector=None).predict([photo])
    assert undetected.box_source == "whole-image" and undetected.box == (0, 0, 128, 150)


def test_a_face_model_takes_the_face_and_a_multilabel_one_sigmoids(
    tmp_path: Path, photo: Path, detector: MTCNNDetector
) -> None:
    (face,) = [box for box, _ in detector.detect(Image.open(photo).convert("RGB"))]
    faces = Predictor(untrained(tmp_path, "faces_synthetic"), detector=detector, top_k=2)
    (pred,) = faces.predict([photo])
    assert pred.box == face.as_tuple() and pred.box_source == "detected"
    assert pred.face == pred.box  # a face model's box is the face itself
    check(pred, dataset_info("synthetic_faces").classes, k=2)
    iern = Predictor(untrained(tmp_path, "iern_synthetic"), detector=detector, top_k=2)
    (adjusted,) = iern.predict([photo])  # IERN's stratum-averaged prediction
    assert adjusted.box == pred.box
    check(adjusted, dataset_info("synthetic_faces").classes, k=2)
    emotic = untrained(
        tmp_path, "emotic", "model.args.backbone=small_cnn", "data.view_sizes={body: 32, whole: 32}"
    )
    (pred,) = Predictor(emotic, detector=detector, top_k=5).predict([photo])
    check(pred, dataset_info("emotic").classes, k=5, multiclass=False)
    assert sum(pred.probabilities.values()) > 2  # 26 sigmoids, not a softmax


def test_a_model_that_reads_sidecar_files_needs_their_folder(
    micro: tuple[Path, Path], tmp_path: Path
) -> None:
    root, _ = micro
    ckpt = untrained(tmp_path, "gnncnn_synthetic")
    with pytest.raises(ConfigError, match="reads objects files .* --sidecars DIR"):
        Predictor(ckpt)
    (pred,) = Predictor(ckpt, detector=None, sidecar_root=root).predict(synthetic_images(root, 1))
    check(pred, SyntheticReader.info.classes)


def test_the_cli_agrees_with_the_api_and_its_outputs_parse_back(
    micro: tuple[Path, Path], photo: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    root, ckpt = micro
    a, b = synthetic_images(root, 2)
    folder = tmp_path / "in"
    (folder / "sub").mkdir(parents=True)
    shutil.copy(a, folder / "a.png")
    shutil.copy(b, folder / "sub" / "b.png")
    box = SyntheticReader(root).samples("test_iid")[0].person
    boxes = tmp_path / "boxes.csv"
    x1, y1, x2, y2 = box.as_tuple()
    boxes.write_text(f"file,x1,y1,x2,y2\nin/a.png,{x1},{y1},{x2},{y2}\n{photo},,,,\n")
    inputs = [str(folder), str(boxes)]
    out = tmp_path / "preds.jsonl"
    assert (
        main(["predict", "--checkpoint", str(ckpt), *inputs, "--out", str(out), "--no-progress"])
        == 0
    )
    assert "4 prediction(s) from 4 image(s)" in capsys.readouterr().out
    api = Predictor(ckpt).predict(*collect_inputs(inputs))
    records = [json.loads(line) for line in out.read_text().splitlines()]
    assert records == [p.record() for p in api]
    sources = ["whole-image", "whole-image", "given", "detected"]  # a.png, sub/b.png, the CSV's
    assert [r["box_source"] for r in records] == sources
    assert records[2]["box"] == list(box.as_tuple())

    table = tmp_path / "preds.csv"
    argv = [
        "predict",
        "--checkpoint",
        str(ckpt),
        *inputs,
        "--out",
        str(table),
        "--top-k",
        "2",
        "--no-progress",
    ]
    assert main(argv) == 0
    with table.open() as f:
        rows = list(csv.DictReader(f))
    assert "emotion_2" in rows[0] and "emotion_3" not in rows[0]
    for row, pred in zip(rows, api, strict=True):
        assert row["file"] == pred.file and row["box_source"] == pred.box_source
        assert tuple(int(row[c]) for c in ("x1", "y1", "x2", "y2")) == pred.box
        face = [row[f"face_{c}"] for c in ("x1", "y1", "x2", "y2")]
        assert face == ([str(v) for v in pred.face] if pred.face else [""] * 4)
        assert row["emotion_1"] == pred.top_k[0][0]
        assert float(row["probability_2"]) == pytest.approx(pred.top_k[1][1], abs=1e-6)
        for emotion, p in pred.probabilities.items():
            assert float(row[f"p_{emotion}"]) == pytest.approx(p, abs=1e-6)

    capsys.readouterr()  # without --out: JSON lines on stdout
    assert main(["predict", "--checkpoint", str(ckpt), str(a), "--no-progress"]) == 0
    (line,) = capsys.readouterr().out.splitlines()
    assert json.loads(line)["file"] == str(a)


def test_draw_writes_annotated_copies_of_the_right_size(
    micro: tuple[Path, Path], photo: Path, tmp_path: Path
) -> None:
    root, ckpt = micro
    (synthetic,) = synthetic_images(root, 1)
    drawn, out = tmp_path / "drawn", tmp_path / "p.jsonl"
    argv = [
        "predict",
        "--checkpoint",
        str(ckpt),
        str(photo),
        str(synthetic),
        "--out",
        str(out),
        "--no-progress",
    ]
    assert main([*argv, "--draw", str(drawn)]) == 0
    sources = [photo.resolve(), synthetic.resolve()]
    base = Path(os.path.commonpath([s.parent for s in sources]))  # kept below it
    for source in sources:
        copy = drawn / source.relative_to(base)
        with Image.open(copy) as im, Image.open(source) as original:
            assert im.size == original.size
            assert im.convert("RGB").tobytes() != original.convert("RGB").tobytes()
    out.unlink()
    assert main([*argv, "--draw", str(base)]) == 2  # would overwrite the images
    assert not out.exists()


def test_a_bad_image_is_one_line_and_skip_bad_goes_on(
    micro: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    caplog: pytest.LogCaptureFixture,
) -> None:
    root, ckpt = micro
    (good,) = synthetic_images(root, 1)
    folder = tmp_path / "in"
    folder.mkdir()
    shutil.copy(good, folder / "good.png")
    (folder / "bad.png").write_bytes(b"\x89PNG\r\n\x1a\n but not a picture")
    out = tmp_path / "p.jsonl"
    argv = [
        "predict",
        "--checkpoint",
        str(ckpt),
        str(folder),
        str(tmp_path / "gone.jpg"),
        "--out",
        str(out),
    ]
    assert main([*argv, "--no-progress"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("deconfound: error:") and "\n" not in err
    assert f"{folder / 'bad.png'}: cannot decode image" in err and "--skip-bad" in err
    assert not out.exists() and not list(tmp_path.glob(".*.tmp"))

    assert main([*argv, "--no-progress", "--skip-bad"]) == 0
    bad, ok, gone = (json.loads(line) for line in out.read_text().splitlines())
    assert bad["error"].startswith(f"{folder / 'bad.png'}: cannot decode image")
    assert bad["box"] is None and bad["top_k"] == [] and ok["error"] is None and ok["top_k"]
    missing = f"{tmp_path / 'gone.jpg'}: image not found; check the path or leave it out"
    assert gone["error"] == missing
    warnings = [r.getMessage() for r in caplog.records if r.getMessage().startswith("skipped")]
    assert len(warnings) == 2 and "bad.png" in warnings[0] and "gone.jpg" in warnings[1]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("file,x1,y1,x2\nimg.png,1,2,3\n", "line 1: no column y2"),
        ("file,x1,y1,x2,y2\nimg.png,1,2,three,4\n", "line 2: the box must be four pixel numbers"),
        ("file,x1,y1,x2,y2\nimg.png,1,2,,4\n", "line 2: the box must be four pixel numbers"),
        ("file,x1,y1,x2,y2\nimg.png,,,,\nimg.png,0,0,99,20\n", "line 3: box (0, 0, 99, 20) lies"),
        ("file,x1,y1,x2,y2\nimg.png,9,9,9,20\n", "line 2: box (9, 9, 9, 20) has non-positive"),
        ("file,x1,y1,x2,y2\n", "no rows below the header"),
    ],
)
def test_a_malformed_box_file_is_one_line(
    text: str,
    message: str,
    micro: tuple[Path, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
) -> None:
    root, ckpt = micro
    shutil.copy(synthetic_images(root, 1)[0], tmp_path / "img.png")
    boxes = tmp_path / "boxes.csv"
    boxes.write_text(text)
    out = tmp_path / "p.csv"
    assert (
        main(["predict", "--checkpoint", str(ckpt), str(boxes), "--out", str(out), "--no-progress"])
        == 2
    )
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"deconfound: error: {boxes}: ") and message in err and "\n" not in err
    assert not out.exists()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["img.png", "--out", "p.txt"], "--out p.txt: name a file ending in .jsonl or .csv"),
        (["img.png", "--top-k", "0"], "batch size and top-k must be at least 1"),
        (["img.png", "--draw", "boxes.csv"], "--draw boxes.csv is a file"),
        (["nothing*.png"], "nothing*.png: no image matches this pattern"),
        (["empty"], "empty: no images"),
    ],
)
def test_other_user_errors_are_one_line(
    args: list[str],
    message: str,
    micro: tuple[Path, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    root, ckpt = micro
    monkeypatch.chdir(tmp_path)
    Path("empty").mkdir()
    Path("boxes.csv").write_text("file,x1,y1,x2,y2\n")
    shutil.copy(synthetic_images(root, 1)[0], "img.png")
    assert main(["predict", "--checkpoint", str(ckpt), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("deconfound: error:") and message in err and "\n" not in err


def test_a_foreign_checkpoint_is_named(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    torch.save({"state_dict": {}}, tmp_path / "foreign.ckpt")
    Image.new("RGB", (8, 8)).save(tmp_path / "img.png")
    assert (
        main(["predict", "--checkpoint", str(tmp_path / "foreign.ckpt"), str(tmp_path / "img.png")])
        == 2
    )
    assert "foreign.ckpt: not a deconfound checkpoint" in capsys.readouterr().err


def test_every_data_set_names_its_boxes_and_the_body_rule_inverts() -> None:
    for reader in READERS.values():
        assert set(reader.info.boxes) <= {"person", "face"}, reader.info.name
    face = Box(100, 50, 140, 100)
    body = body_from_face(face, (1000, 1000))
    assert body == Box(60, 25, 180, 400)
    assert face_from_body(body) == face
    assert body_from_face(face, (150, 300)) == Box(60, 25, 150, 300)  # clipped to the image


def test_the_drawing_marks_the_detected_face_inside_its_body_box() -> None:
    picture = Image.new("RGB", (400, 400))
    body, face = (20, 20, 380, 390), (150, 200, 250, 300)
    pred = Prediction("x.png", body, "detected", (("happy", 0.9),), face=face)
    with_face = np.asarray(annotate(picture, [pred]))
    without = np.asarray(annotate(picture, [dataclasses.replace(pred, face=None)]))
    ys, xs = np.nonzero((with_face != without).any(axis=-1))
    assert ys.min() == 200 and ys.max() == 299 and xs.min() == 150 and xs.max() == 249
    inside = with_face[205:295, 155:245]
    assert not inside.any()  # an outline: the face itself is not covered
    assert (with_face[299, 200] == PALETTE[0]).all() and (with_face[250, 150] == PALETTE[0]).all()
    same = dataclasses.replace(pred, face=body)  # a face model: the box is the face, drawn once
    assert np.array_equal(np.asarray(annotate(picture, [same])), without)

"""Facial-expression readers: IERN's mixed protocol, RAF-DB, AffectNet and FER2013, read back from
tiny copies in their real formats; bad input refused in one line, or skipped and counted."""

from __future__ import annotations

import os
import pickle
from collections import OrderedDict
from pathlib import Path

import numpy as np
import pytest
from formats import write_affectnet, write_fer2013, write_mixbasic, write_rafdb

from deconfound.config import DataConfig
from deconfound.data.affectnet import AffectNetReader
from deconfound.data.datamodule import EmotionDataModule, open_reader
from deconfound.data.face_sets import held_out
from deconfound.data.fer2013 import Fer2013Reader
from deconfound.data.mixbasic import MixBasicReader, sequence_group
from deconfound.data.rafdb import RafDbReader
from deconfound.data.sample import BASIC_EMOTIONS, ArrayImage, Box
from deconfound.data.views import load_image
from deconfound.errors import DataError

# ids of the training and test lists, with their labels in every accepted spelling
TRAIN = {
    "CKPlus/images/S005_001_00000009.png": ("angry", 0),
    "CKPlus/images/S005_001_00000010.png": ("Anger", 0),
    "CKPlus/images/S010_002_00000014.png": ("HAPPY", 3),
    "CKPlus/images/S010_002_00000015.png": ("happiness", 3),
    "CKPlus/images/S022_003_00000020.png": (4, 4),
    "MMI/images/S001_012_0001.jpg": ("disgusted", 1),
    "MMI/images/S001_012_0002.jpg": ("Disgust", 1),
    "MMI/images/S002_013_0001.jpg": ("surprised", 5),
    "OuluCASIA/images/P001_Happy_005.jpeg": ("afraid", 2),
    "OuluCASIA/images/P001_Happy_006.jpeg": ("Fearful", 2),
    "OuluCASIA/images/P002_Sadness_003.jpeg": ("sad", 4),
    "OuluCASIA/images/P003_Surprise_001.jpeg": (5, 5),
}
TEST = {
    "CKPlus/images/S100_001_00000011.png": ("sadness", 4),
    "MMI/images/S030_001_0001.jpg": ("fear", 2),
    "OuluCASIA/images/P050_Fear_002.jpeg": ("surprise", 5),
}
SOURCES = ("CKPlus", "MMI", "OuluCASIA")


def key(image_id: str) -> str:
    source, _, file = image_id.split("/")
    return f"{source.lower()}_{Path(file).stem}"


def mix_labels(**extra: object) -> dict:
    return {key(i): v for i, (v, _) in {**TRAIN, **TEST}.items()} | extra


@pytest.fixture(scope="module")
def mix_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("mix")
    write_mixbasic(root, list(TRAIN), list(TEST), mix_labels())
    write_mixbasic(root, list(TRAIN)[:3], list(TEST), mix_labels(), fold="bias90v1")
    return root


def one_line(e: pytest.ExceptionInfo[DataError]) -> str:
    assert "\n" not in str(e.value)
    return str(e.value)


# --- mixbasic -----------------------------------------------------------------------------------


def test_mixbasic_reads_each_split(mix_root: Path) -> None:
    reader = MixBasicReader(mix_root, val_fraction=0.25)
    assert reader.sources == SOURCES
    train, val, test = (reader.samples(s) for s in ("train", "val", "test"))
    for samples, ids, split in ((train + val, TRAIN, None), (test, TEST, "test")):
        got = {s.image.relative_to(mix_root).as_posix(): s for s in samples}
        assert set(got) == set(ids)
        for image_id, s in got.items():
            assert s.labels == (ids[image_id][1],)
            assert s.confounder == SOURCES.index(image_id.split("/")[0])
            assert s.face == Box(0, 0, 40, 48) and s.person is None
            if split:
                assert s.split == split
    assert {s.split for s in train} == {"train"} and {s.split for s in val} == {"val"}
    assert reader.info.classes == BASIC_EMOTIONS and reader.info.name == "mixbasic"


def test_mixbasic_val_keeps_sequences_whole_and_is_seeded(mix_root: Path) -> None:
    reader = MixBasicReader(mix_root, val_fraction=0.25, seed=3)
    train, val = reader.samples("train"), reader.samples("val")

    def groups(samples):
        return {sequence_group(s.image.parent.parent.name, s.image.name) for s in samples}

    assert val and not groups(train) & groups(val)
    assert len(groups(val)) == 2  # a quarter of the 8 sequences
    assert sequence_group("CKPlus", "S005_001_00000009.png") == "CKPlus/S005_001"
    again = MixBasicReader(mix_root, val_fraction=0.25, seed=3)
    assert again.samples("val") == val
    seeds = {frozenset(held_out(map(str, range(20)), 0.25, s)) for s in range(5)}
    assert len(seeds) > 1  # the seed picks the groups
    assert held_out(["a", "b"], 0.01, 0) and not held_out(["a"], 0.5, 0)


def test_mixbasic_val_fraction_zero_has_no_val(mix_root: Path) -> None:
    reader = MixBasicReader(mix_root, val_fraction=0)
    assert len(reader.samples("train")) == len(TRAIN)
    with pytest.raises(DataError, match=r"val_fraction is 0; set it above 0") as e:
        reader.samples("val")
    one_line(e)


def test_mixbasic_lists_are_parsed_once(mix_root: Path, monkeypatch) -> None:
    reader = MixBasicReader(mix_root)
    reader.samples("train")
    monkeypatch.setattr("deconfound.data.mixbasic.image_size", None)  # would fail if called again
    reader.samples("val")
    reader.samples("train")


def test_a_missing_fold_names_the_file_and_the_folds(mix_root: Path) -> None:
    with pytest.raises(DataError) as e:
        MixBasicReader(mix_root, fold="bias90v3").samples("test")
    message = one_line(e)
    assert "train_ids_bias90v3.csv: id list not found" in message
    assert "train_ids_<fold>.csv and test_ids_<fold>.csv" in message
    assert "bias100v1, bias90v1" in message


def test_an_image_in_both_lists_is_a_leak(tmp_path: Path) -> None:
    leaked = "MMI/images/S002_013_0001.jpg"
    write_mixbasic(tmp_path, list(TRAIN), [*TEST, leaked], mix_labels())
    with pytest.raises(DataError, match=r"test_ids_bias100v1.csv: line 4: ") as e:
        MixBasicReader(tmp_path).samples("train")
    assert f"{leaked} is also in train_ids_bias100v1.csv (line 8)" in one_line(e)


def test_the_restricted_unpickler_refuses_globals(tmp_path: Path) -> None:
    class Hostile:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    labels = tmp_path / "emotion_labels.pkl"
    write_mixbasic(tmp_path, list(TRAIN), list(TEST), mix_labels())
    for payload in (Hostile(), OrderedDict(mix_labels())):
        labels.write_bytes(pickle.dumps(payload))
        with pytest.raises(DataError, match=r"emotion_labels.pkl: not a plain pickled dict") as e:
            MixBasicReader(tmp_path).samples("test")
        assert "refers to" in one_line(e)
    assert not (tmp_path / "pwned").exists()
    labels.write_bytes(pickle.dumps(list(mix_labels())))
    with pytest.raises(DataError, match=r"holds a list, not a dict"):
        MixBasicReader(tmp_path).samples("test")


def test_labels_from_a_csv_with_int_values(tmp_path: Path) -> None:
    labels = {key(i): str(index) for i, (_, index) in {**TRAIN, **TEST}.items()}
    write_mixbasic(tmp_path, list(TRAIN), list(TEST), labels, labels_file="labels.csv")
    reader = MixBasicReader(tmp_path, labels="labels.csv", val_fraction=0)
    got = {s.image.name: s.labels[0] for s in reader.samples("train")}
    assert got == {Path(i).name: index for i, (_, index) in TRAIN.items()}


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ({"MMI/images/S001_012_0001.jpg": "MMI/S001_012_0001.jpg"}, r"line 6: 'MixBasic/MMI/S001_012_0001.jpg' does not end in <Source>/images/<file>"),  # noqa: E501
        ({"MMI/images/S001_012_0001.jpg": "JAFFE/images/KA.AN1.39.png"}, r"line 6: unknown source 'JAFFE'; allowed: CKPlus, MMI, OuluCASIA"),  # noqa: E501
        ({"MMI/images/S001_012_0001.jpg": "MMI/images/S001_012_0001.jpg\nMixBasic/MMI/images/S001_012_0001.jpg"}, r"line 7: same image as line 6"),  # noqa: E501
        ({"MMI/images/S001_012_0001.jpg": "MMI/images/gone.jpg"}, r"line 6: image .*gone.jpg not found"),  # noqa: E501
        ({"CKPlus/images/S022_003_00000020.png": "CKPlus/images/S099_001_00000001.png"}, r"line 5: no label for 'ckplus_S099_001_00000001' in emotion_labels.pkl"),  # noqa: E501
    ],
)  # fmt: skip
def test_bad_id_lines_are_one_line_or_skipped(
    mix_root: Path, tmp_path: Path, change: dict[str, str], expected: str
) -> None:
    import shutil

    root = Path(shutil.copytree(mix_root, tmp_path / "copy"))
    if "S099" in next(iter(change.values())):
        (root / "CKPlus/images/S099_001_00000001.png").write_bytes(
            (root / "CKPlus/images/S005_001_00000009.png").read_bytes()
        )
    lines = [change.get(i, i) for i in TRAIN]
    (root / "train_ids_bias100v1.csv").write_text("".join(f"MixBasic/{t}\n" for t in lines))
    with pytest.raises(DataError, match=expected) as e:
        MixBasicReader(root, val_fraction=0).samples("train")
    assert "train_ids_bias100v1.csv: line" in one_line(e)
    reader = MixBasicReader(root, val_fraction=0, skip_bad=True)
    written = sum(t.count("\n") + 1 for t in lines)
    assert len(reader.samples("train")) == written - 1
    assert len(reader.problems.messages) == 1


def test_bad_labels_and_empty_lists(tmp_path: Path) -> None:
    write_mixbasic(
        tmp_path, list(TRAIN), list(TEST), mix_labels(ckplus_S100_001_00000011="Contempt")
    )
    with pytest.raises(DataError, match=r"'ckplus_S100_001_00000011' is labelled Contempt") as e:
        MixBasicReader(tmp_path).samples("test")
    assert "remove it from the id list" in one_line(e)
    write_mixbasic(tmp_path, list(TRAIN), list(TEST), mix_labels(mmi_S030_001_0001=6))
    with pytest.raises(DataError, match=r"label 6 of 'mmi_S030_001_0001' is not one of Anger"):
        MixBasicReader(tmp_path).samples("test")
    reader = MixBasicReader(tmp_path, skip_bad=True)
    assert len(reader.samples("test")) == 2 and len(reader.problems.messages) == 1
    (tmp_path / "test_ids_bias100v1.csv").write_text("\n\n")
    with pytest.raises(DataError, match=r"test_ids_bias100v1.csv: the id list is empty"):
        MixBasicReader(tmp_path).samples("train")


def test_open_reader_and_the_data_module_give_source_confounders(mix_root: Path) -> None:
    cfg = DataConfig(
        dataset="mixbasic",
        root=str(mix_root),
        args={"fold": "bias100v1"},
        view_sizes={"face": 32},
        batch_size=64,
    )
    reader = open_reader(cfg)
    assert isinstance(reader, MixBasicReader) and reader.fold == "bias100v1"
    train = reader.samples("train")
    views, y, confounder = next(iter(EmotionDataModule(cfg, ("face",)).loader("train")))
    assert views["face"].shape == (len(train), 3, 32, 32)
    assert y.tolist() == [s.labels[0] for s in train]
    assert confounder.tolist() == [s.confounder for s in train]
    assert set(confounder.tolist()) <= {0, 1, 2}


# --- RAF-DB -------------------------------------------------------------------------------------

RAF = [("train_00001.jpg", 1), ("train_00002.jpg", 5), ("train_00003.jpg", 7)]
RAF += [(f"train_{i:05d}.jpg", 4) for i in range(4, 12)]
RAF += [("test_0001.jpg", 6), ("test_0002.jpg", 2)]


def test_rafdb_labels_splits_and_images(tmp_path: Path) -> None:
    write_rafdb(tmp_path, RAF)
    reader = RafDbReader(tmp_path)
    train, val, test = (reader.samples(s) for s in ("train", "val", "test"))
    assert len(train) + len(val) == 11 and len(val) == 1 and len(test) == 2
    labels = {s.image.name: reader.info.classes[s.labels[0]] for s in train + val + test}
    assert labels["train_00001_aligned.jpg"] == "Surprise"
    assert labels["train_00002_aligned.jpg"] == "Sadness"
    assert labels["train_00003_aligned.jpg"] == "Neutral"
    assert labels["test_0001_aligned.jpg"] == "Anger" and labels["test_0002_aligned.jpg"] == "Fear"
    s = test[0]
    assert s.face == Box(0, 0, 100, 100) and s.person is None and s.confounder is None
    assert s.split == "test" and {v.split for v in val} == {"val"}
    assert RafDbReader(tmp_path).samples("val") == val


def test_rafdb_original_images_and_bad_lines(tmp_path: Path) -> None:
    labels = write_rafdb(tmp_path, RAF[:2] + RAF[-1:], folder="original")
    assert len(RafDbReader(tmp_path).samples("test")) == 1
    text = labels.read_text()
    for bad, expected in (
        ("train_00001.jpg 8\n", r"line 4: label '8' of train_00001.jpg must be 1-7"),
        ("train_00009.jpg 3\n", r"line 4: image train_00009.jpg not found as .*aligned"),
        ("train_00001.jpg\n", r"line 4: expected '<image name> <label>'"),
        ("val_0001.jpg 2\n", r"line 4: 'val_0001.jpg' starts with neither train_ nor test_"),
    ):
        labels.write_text(text + bad)
        with pytest.raises(DataError, match=expected) as e:
            RafDbReader(tmp_path).samples("test")
        assert "list_patition_label.txt: line 4" in one_line(e)
        reader = RafDbReader(tmp_path, skip_bad=True, val_fraction=0)
        assert len(reader.samples("train")) == 2 and len(reader.problems.messages) == 1
    labels.unlink()
    with pytest.raises(DataError, match=r"list_patition_label.txt: label list not found"):
        RafDbReader(tmp_path).samples("train")


# --- AffectNet ----------------------------------------------------------------------------------


def affect_row(name: str, code: int, box=(10, 8, 50, 48), va=(0.5, -0.25)) -> dict:
    x, y, w, h = box
    return {
        "subDirectory_filePath": f"{len(name) % 7}/{name}.jpg", "face_x": x, "face_y": y,
        "face_width": w, "face_height": h, "expression": code, "valence": va[0],
        "arousal": va[1],
    }  # fmt: skip


AFFECT = {
    "training.csv": [affect_row(f"t{code}", code) for code in range(11)]
    + [affect_row(f"h{i}", 1, va=(0.1 * i, -0.1 * i)) for i in range(9)]
    + [affect_row("edge", 2, box=(60, 40, 30, 40))],  # reaches past the 80x64 image
    "validation.csv": [
        affect_row("v0", 0),
        affect_row("v7", 7),
        affect_row("v10", 10, va=(-2, -2)),
    ],
}


@pytest.fixture(scope="module")
def affect_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("affectnet")
    write_affectnet(root, AFFECT)
    return root


def test_affectnet_keeps_emotions_and_valence_arousal(affect_root: Path) -> None:
    reader = AffectNetReader(affect_root)
    train, val, test = (reader.samples(s) for s in ("train", "val", "test"))
    assert len(train) + len(val) == 8 + 9 + 1 and len(val) == 2
    assert [s.labels for s in test] == [(0,), (7,)]
    assert reader.dropped == {"training.csv": 3, "validation.csv": 1}
    by_name = {s.image.stem: s for s in train + val}
    assert by_name["h3"].continuous == pytest.approx((0.3, -0.3))
    assert by_name["t4"].face == Box(10, 8, 60, 56) and by_name["t4"].labels == (4,)
    assert by_name["edge"].face == Box(60, 40, 80, 64)  # clipped to the image
    assert by_name["t0"].image == affect_root / "Manually_Annotated_Images/2/t0.jpg"
    assert reader.info.num_classes == 8 and "t8" not in by_name and "t10" not in by_name
    seven = AffectNetReader(affect_root, classes=7)
    assert [s.labels for s in seven.samples("test")] == [(0,)]
    assert seven.info.num_classes == 7 and seven.dropped == {"validation.csv": 2}


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        (affect_row("v0", 3, box=(90, 70, 10, 10)), r"face box \(90, 70, 100, 80\) lies outside the 80x64 image"),  # noqa: E501
        (affect_row("v0", 3, box=(5, 5, 0, 10)), r"face box \(5, 5, 5, 15\) has non-positive size"),
        (affect_row("v0", 3, va=(1.5, 0)), r"column 'valence' must be a number in \[-1, 1\], got '1.5'"),  # noqa: E501
        (affect_row("v0", 12), r"expression 12 is not an AffectNet code"),
        (affect_row("missing", 3), r"image .*missing.jpg not found"),
    ],
)  # fmt: skip
def test_bad_affectnet_rows_are_one_line(affect_root: Path, tmp_path: Path, row, expected) -> None:
    import shutil

    root = Path(shutil.copytree(affect_root, tmp_path / "copy"))
    write_affectnet(root, {"validation.csv": [affect_row("v0", 0), row]})
    (root / "Manually_Annotated_Images/0/missing.jpg").unlink(missing_ok=True)
    with pytest.raises(DataError, match=expected) as e:
        AffectNetReader(root).samples("test")
    assert "validation.csv: row 3: " in one_line(e)
    reader = AffectNetReader(root, skip_bad=True)
    assert len(reader.samples("test")) == 1 and len(reader.problems.messages) == 1


# --- FER2013 ------------------------------------------------------------------------------------


def fer_rows(n: int = 9) -> list[tuple[object, object, str]]:
    rng = np.random.default_rng(0)
    usage = ("Training", "Training", "Training", "PublicTest", "PrivateTest")
    return [(i % 7, rng.integers(0, 256, 2304), usage[i % 5]) for i in range(n)]


def test_fer2013_decodes_exactly_into_a_cache(tmp_path: Path) -> None:
    rows = fer_rows()
    write_fer2013(tmp_path, rows)
    reader = Fer2013Reader(tmp_path)
    train, val, test = (reader.samples(s) for s in ("train", "val", "test"))
    assert (len(train), len(val), len(test)) == (6, 2, 1)
    expected = [r for r in rows if r[2] == "PublicTest"]
    for s, (emotion, pixels, _) in zip(val, expected, strict=True):
        assert isinstance(s.image, ArrayImage) and s.split == "val"
        assert s.labels == (emotion,) and s.face == Box(0, 0, 48, 48) and s.person is None
        decoded = np.asarray(load_image(s.image))
        assert decoded.shape == (48, 48, 3)
        for channel in range(3):
            assert (decoded[..., channel] == np.asarray(pixels).reshape(48, 48)).all()
    assert train[0].image.path.parent == tmp_path / ".deconfound-cache"
    assert reader.info.classes[train[1].labels[0]] == "Disgust"


def test_fer2013_cache_is_reused_and_rebuilt_after_an_edit(tmp_path: Path) -> None:
    csv_path = write_fer2013(tmp_path / "data", fer_rows())
    cache = tmp_path / "cache"
    files = Fer2013Reader(tmp_path / "data", cache=str(cache)).cache_files()
    mtimes = [f.stat().st_mtime_ns for f in files]
    os.utime(files[0], ns=(1, 1))  # a rewrite would move it on
    again = Fer2013Reader(tmp_path / "data", cache=str(cache))
    assert again.cache_files() == files and files[0].stat().st_mtime_ns == 1
    assert [f.stat().st_mtime_ns for f in files[1:]] == mtimes[1:]
    assert len(again.samples("train")) == 6
    write_fer2013(tmp_path / "data", fer_rows(12))
    os.utime(csv_path, ns=(10**18, 10**18))
    edited = Fer2013Reader(tmp_path / "data", cache=str(cache))
    assert edited.cache_files() != files and len(edited.samples("train")) == 8
    assert sorted(cache.iterdir()) == sorted(edited.cache_files())  # the old cache is gone


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        ((3, "1 2 3", "Training"), r"row 4: 3 pixel values, expected 2304"),
        ((3, " ".join(["7"] * 2303 + ["x"]), "Training"), r"row 4: pixel value 'x' is not an integer"),  # noqa: E501
        ((3, " ".join(["7"] * 2303 + ["256"]), "Training"), r"row 4: pixel value 256 is outside 0-255"),  # noqa: E501
        ((7, " ".join(["7"] * 2304), "Training"), r"row 4: emotion 7 must be 0-6"),
        ((3, " ".join(["7"] * 2304), "Validation"), r"row 4: unknown Usage 'Validation'"),
    ],
)  # fmt: skip
def test_bad_fer2013_rows_are_one_line_or_skipped(tmp_path: Path, row, expected) -> None:
    rows = fer_rows(5)
    write_fer2013(tmp_path, [*rows[:2], row, *rows[2:]])
    with pytest.raises(DataError, match=expected) as e:
        Fer2013Reader(tmp_path).samples("train")
    assert "fer2013.csv: row 4: " in one_line(e)
    assert not (tmp_path / ".deconfound-cache").exists() or not any(
        (tmp_path / ".deconfound-cache").glob("*.npy")
    )
    reader = Fer2013Reader(tmp_path, skip_bad=True)
    train = reader.samples("train")
    assert len(train) == 3 and len(reader.problems.messages) == 1
    assert np.load(train[0].image.path).shape == (3, 48, 48, 3)
    strict = Fer2013Reader(tmp_path)  # the cache keeps the problem: still refused
    with pytest.raises(DataError, match=expected):
        strict.samples("test")


def test_fer2013_unwritable_cache_says_where_to_put_it(tmp_path: Path) -> None:
    write_fer2013(tmp_path, fer_rows(3))
    (tmp_path / "file").write_text("")
    with pytest.raises(DataError, match=r"cannot write the FER2013 pixel cache") as e:
        Fer2013Reader(tmp_path, cache=str(tmp_path / "file" / "cache")).samples("train")
    assert "data.args.cache=DIR" in one_line(e)

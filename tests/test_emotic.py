"""EMOTIC: both on-disk layouts read back exactly, every bad input refused in one line, the
metric equal to scikit-learn's, and the engine training on it from the bundled config."""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import one_epoch_overrides
from formats import Person, Record, write_emotic_mat, write_emotic_npy
from PIL import Image

from deconfound.config import load_config
from deconfound.data import Box, make_views
from deconfound.data.emotic import CATEGORIES, EmoticReader
from deconfound.data.sample import ArrayImage
from deconfound.engine import evaluate, load_module, train
from deconfound.engine.metrics import make_metrics
from deconfound.errors import DataError

NAN = float("nan")


def records() -> dict[str, list[Record]]:
    """Two train images (one with two people, one whose box leaves the image, one person with
    NaN valence), val/test people with two annotators and combined labels."""
    train = [
        Record("mscoco/images", "a.jpg", (64, 48), [
            Person((5, 4, 30, 40), [["Happiness", "Peace"]], [(6, 5, 7)]),
            Person((-3, 10, 70, 47.6), [["Anger"]], [(3, 8, 6)], gender="Male"),
        ]),
        Record("framesdb/images", "b.jpg", (50, 60), [
            Person((1, 1, 20, 30), [["Fatigue"]], [(NAN, 5, 5)]),
            Person((2, 3, 40, 50), [["Yearning", "Doubt/Confusion"]], [(4, 4, 4)]),
        ]),
    ]  # fmt: skip
    held_out = [
        Record("emodb_small/images", "c.jpg", (40, 40), [
            Person((2, 2, 30, 30), [["Pain"], ["Suffering", "Pain"]], [(2, 3, 4), (3, 4, 5)],
                   combined=["Pain", "Suffering"], combined_continuous=(2.5, 3.5, 4.5)),
            Person((0, 0, 10, 10), [[]], [(5, 5, 5)], combined=[], combined_continuous=(5, 5, 5)),
        ]),
        Record("ade20k/images", "d.jpg", (30, 20), [
            Person((1, 1, 29, 19), [["Surprise"]], [(7, 7, 7)], combined=["Surprise"],
                   combined_continuous=(7, 7, 7)),
        ]),
    ]  # fmt: skip
    return {"train": train, "val": held_out, "test": held_out}


@pytest.fixture(scope="module")
def emotic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("emotic")
    write_emotic_mat(root, records())
    return root


@pytest.fixture(scope="module")
def emotic_pre(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("emotic_pre")
    for split, recs in records().items():
        write_emotic_npy(root, split, recs)
    return root


def idx(*names: str) -> tuple[int, ...]:
    return tuple(sorted(CATEGORIES.index(n) for n in names))


def test_official_layout_reads_back_every_person(emotic_root: Path) -> None:
    reader = EmoticReader(emotic_root)
    assert reader.layout == "mat"
    train = reader.samples("train")
    images = emotic_root / "emotic"
    assert [(s.image, s.person, s.labels, s.continuous) for s in train] == [
        (images / "mscoco/images/a.jpg", Box(5, 4, 30, 40), idx("Happiness", "Peace"), (6, 5, 7)),
        # the box leaving the 64 x 48 image is clipped to it, as the common pipeline does
        (images / "mscoco/images/a.jpg", Box(0, 10, 64, 47), idx("Anger"), (3, 8, 6)),
        (images / "framesdb/images/b.jpg", Box(2, 3, 40, 50), idx("Yearning", "Doubt/Confusion"),
         (4, 4, 4)),
    ]  # fmt: skip
    assert reader.dropped["train"] == 1  # the NaN valence
    test = reader.samples("test")
    # val/test take the combined annotation; the person without categories is left out
    assert [(s.labels, s.continuous, s.split) for s in test] == [
        (idx("Pain", "Suffering"), (2.5, 3.5, 4.5), "test"),
        (idx("Surprise"), (7, 7, 7), "test"),
    ]
    assert reader.dropped["test"] == 1
    assert len(reader.samples("val")) == 2


def test_people_without_continuous_labels_can_be_kept(emotic_root: Path) -> None:
    reader = EmoticReader(emotic_root, require_continuous=False)
    train = reader.samples("train")
    assert len(train) == 4 and train[2].continuous is None
    assert reader.dropped["train"] == 0


def test_preprocessed_layout_reads_the_same_people(emotic_root: Path, emotic_pre: Path) -> None:
    official, pre = EmoticReader(emotic_root), EmoticReader(emotic_pre)
    assert pre.layout == "npy"
    for split in ("train", "val", "test"):
        a, b = official.samples(split), pre.samples(split)
        assert [(s.labels, s.continuous) for s in a] == [(s.labels, s.continuous) for s in b]
    first = pre.samples("train")[0]
    assert first.image == ArrayImage(emotic_pre / "train_context_arr.npy", 0)
    assert first.body_image == ArrayImage(emotic_pre / "train_body_arr.npy", 0)
    assert first.person == Box(5, 4, 30, 40).scale(224 / 64, 224 / 48)
    # the views come from the arrays: the whole view is the stored context picture, the body
    # view the stored body crop
    views = make_views(first, {"whole": 224, "body": 128, "context": 224})
    context = np.load(emotic_pre / "train_context_arr.npy")[0]
    body = np.load(emotic_pre / "train_body_arr.npy")[0]
    assert torch.equal(views["whole"], torch.from_numpy(context).permute(2, 0, 1))
    assert torch.equal(views["body"], torch.from_numpy(body).permute(2, 0, 1))
    x1, y1, x2, y2 = first.person.as_tuple()
    assert views["context"][:, y1:y2, x1:x2].sum() == 0  # the person is masked out


def test_views_of_the_official_layout_crop_the_clipped_box(emotic_root: Path) -> None:
    sample = EmoticReader(emotic_root).samples("train")[1]
    views = make_views(sample, {"body": 16})
    with Image.open(sample.image) as im:
        expected = im.convert("RGB").crop((0, 10, 64, 47)).resize((16, 16), Image.BILINEAR)
    assert torch.equal(
        views["body"], torch.from_numpy(np.asarray(expected).copy()).permute(2, 0, 1)
    )


def _damaged(root: Path, tmp: Path) -> Path:
    return Path(shutil.copytree(root, tmp / "copy"))


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        ("missing_image", r"train image 2 \(framesdb/images/b.jpg\) person 2: image .* not found"),
        ("unknown_category", r"train image 1 \(mscoco/images/a.jpg\) person 1: unknown category 'Joy'"),  # noqa: E501
        ("box_outside", r"train image 1 .* person 1: body box .* is empty inside the 64x48 image"),
        ("missing_split", r"no 'test' struct array"),
        ("corrupt_mat", r"Annotations.mat: not a readable MATLAB file"),
        ("no_annotations", r"no EMOTIC here; expected Annotations/Annotations.mat"),
    ],
)  # fmt: skip
def test_bad_official_input_is_one_line_naming_the_person(
    emotic_root: Path, tmp_path: Path, damage: str, expected: str
) -> None:
    recs = records()
    root = tmp_path / "emotic"
    if damage == "unknown_category":
        recs["train"][0].people[0].categories = [["Joy"]]
    if damage == "box_outside":
        recs["train"][0].people[0].box = (70, 50, 90, 60)
    if damage == "missing_split":
        del recs["test"]
    write_emotic_mat(root, recs)
    if damage == "missing_image":
        (root / "emotic/framesdb/images/b.jpg").unlink()
    if damage == "corrupt_mat":
        (root / "Annotations/Annotations.mat").write_bytes(b"MATLAB 5.0 MAT-file, truncated")
    if damage == "no_annotations":
        shutil.rmtree(root / "Annotations")
    with pytest.raises(DataError, match=expected) as e:
        EmoticReader(root).samples("test" if damage == "missing_split" else "train")
    assert "\n" not in str(e.value)


def test_skip_bad_leaves_out_and_counts_bad_people(tmp_path: Path) -> None:
    recs = records()
    recs["train"][0].people[0].categories = [["Joy"]]
    write_emotic_mat(tmp_path, recs)
    (tmp_path / "emotic/framesdb/images/b.jpg").unlink()
    reader = EmoticReader(tmp_path, skip_bad=True)
    samples = reader.samples("train")
    assert [s.labels for s in samples] == [idx("Anger")]
    assert len(reader.problems.messages) == 2
    assert "unknown category 'Joy'" in reader.problems.messages[0]


@pytest.mark.parametrize(
    ("damage", "expected"),
    [
        ("cat_disagrees", r"train.csv: row 2: Categorical_Labels disagree with row 0"),
        ("missing_array", r"train_body_arr.npy: not found"),
        ("short_array", r"train_context_arr.npy: shape \(2, 224, 224, 3\), expected N x H x W x 3 with N = 4"),  # noqa: E501
        ("bad_literal", r"train.csv: row 3: column 'BBox' is not a Python literal"),
        ("wide_cat", r"train_cat_arr.npy: shape \(4, 27\), expected N x 26"),
    ],
)  # fmt: skip
def test_bad_preprocessed_input_is_one_line(
    emotic_pre: Path, tmp_path: Path, damage: str, expected: str
) -> None:
    root = _damaged(emotic_pre, tmp_path)
    cat = root / "train_cat_arr.npy"
    if damage == "cat_disagrees":
        arr = np.load(cat)
        arr[0, 0] = 1 - arr[0, 0]
        np.save(cat, arr)
    if damage == "missing_array":
        (root / "train_body_arr.npy").unlink()
    if damage == "short_array":
        np.save(root / "train_context_arr.npy", np.load(root / "train_context_arr.npy")[:2])
    if damage == "bad_literal":
        lines = (root / "train.csv").read_text().splitlines()
        lines[2] = lines[2].replace('"[0, 10, 64, 47]"', '"[0, 10, 64"')
        (root / "train.csv").write_text("\n".join(lines) + "\n")
    if damage == "wide_cat":
        np.save(cat, np.zeros((4, 27)))
    with pytest.raises(DataError, match=expected) as e:
        EmoticReader(root).samples("train")
    assert "\n" not in str(e.value)


def test_map_equals_scikit_learn() -> None:
    """The engine's mAP is scikit-learn's average precision per category, averaged — ties and
    all — to 1e-6, as EMOTIC's common evaluation computes it."""
    from sklearn.metrics import average_precision_score

    from deconfound.data.emotic import INFO

    rng = np.random.default_rng(0)
    n = 500
    y = (rng.random((n, 26)) < rng.uniform(0.02, 0.4, 26)).astype(int)
    y[0] = 1  # every category has a positive
    scores = np.round(rng.random((n, 26)) * 0.5 + 0.5 * y * rng.random((n, 26)), 2)  # ties
    metric = make_metrics(INFO, "test/")
    for chunk in np.array_split(np.arange(n), 7):  # in batches, as during evaluation
        metric.update(torch.from_numpy(scores[chunk]).float(), torch.from_numpy(y[chunk]))
    ours = float(metric.compute()["test/mAP"])
    sklearn = np.mean([average_precision_score(y[:, c], scores[:, c]) for c in range(26)])
    assert math.isclose(ours, sklearn, abs_tol=1e-6), (ours, sklearn)


@pytest.mark.parametrize("layout", ["official", "preprocessed"])
def test_the_emotic_config_trains_and_evaluates(
    emotic_root: Path, emotic_pre: Path, tmp_path: Path, layout: str
) -> None:
    root = emotic_root if layout == "official" else emotic_pre
    views = "{body: 32, whole: 32, context: 32}"
    cfg = load_config("emotic", one_epoch_overrides(root, tmp_path, views, batch=2))
    result = train(cfg)
    assert 0 <= result.best_score <= 1
    metrics = evaluate(load_module(result.best_checkpoint), ["test"])
    assert set(metrics["test"]) == {"loss", "mAP"}

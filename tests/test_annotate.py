"""``deconfound annotate`` and ``paste`` on the real readers: instance masks and COCO-17 pose
files written from a detector's outputs, each annotated person matched to its own instance,
files skipped when they exist and a killed run resumed; every view a model reads of a pasted
picture keeps the sample's own person and nothing else of the picture."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from people import (
    caer_face,
    colour_detector,
    people_in,
    silhouette,
    write_caer,
    write_emotic,
    write_groupwalk,
)
from PIL import Image

from deconfound.cli import main
from deconfound.data import make_views
from deconfound.data.caer import CaerSReader
from deconfound.data.emotic import EmoticReader
from deconfound.data.groupwalk import GroupWalkReader
from deconfound.data.paste import PersonPaste
from deconfound.data.sample import Box
from deconfound.data.sidecars import locate, read_people, read_pose
from deconfound.data.silhouettes import grow, own_person
from deconfound.data.views import load_image
from deconfound.pipelines.annotate import annotate, load_detector

SPLITS = ("train", "val", "test")


def _reader(kind: str, root: Path):
    if kind == "caer_s":
        return CaerSReader(root, val_fraction=0.0, faces=root / "faces.csv", progress=False)
    if kind == "groupwalk":
        return GroupWalkReader(root)
    return EmoticReader(root)


def _write(kind: str, root: Path) -> Path:
    if kind == "caer_s":
        return write_caer(root)
    if kind == "groupwalk":
        return write_groupwalk(root)
    return write_emotic(root, kind.split("_")[1])


LAYOUTS = ("emotic_mat", "emotic_npy", "caer_s", "groupwalk")


@pytest.fixture(scope="module", params=LAYOUTS)
def annotated(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory):
    """A layout with painted people, annotated (masks and pose) by the colour detector."""
    kind = request.param
    root = _write(kind, tmp_path_factory.mktemp(kind) / "set")
    reader = _reader(kind, root)
    splits = ("train", "test") if kind == "caer_s" else SPLITS
    detector = colour_detector()
    results = annotate(reader, splits, {"masks": detector, "pose": detector}, batch_size=2)
    return kind, root, reader, splits, results


def test_annotate_writes_files_the_readers_accept_and_matches_everyone(annotated) -> None:
    _, root, reader, splits, results = annotated
    samples = [s for split in splits for s in reader.samples(split)]
    pictures = len({s.image for s in samples})
    for r in results:
        assert (r.pictures, r.written, r.skipped) == (pictures, pictures, 0), r
        assert r.people == len(samples) and r.matched == len(samples) and not r.unmatched, r
    for s in samples:
        original = np.asarray(load_image(s.image))
        truth = people_in(original)
        labels = read_people(locate("masks", s.image, root), original.shape[1::-1])
        assert len(np.unique(labels)) == len(truth) + 1  # one instance each, and no one
        mine = own_person(labels, s.hidden, face=s.person is None)
        assert mine is not None and any(np.array_equal(mine, t) for t in truth)
        skeleton = read_pose(locate("pose", s.image, root), s.hidden, 17)
        assert (skeleton[:, 2] > 0).any()


def test_paste_cuts_only_the_samples_own_person_in_every_view(annotated) -> None:
    kind, root, reader, _, _ = annotated
    samples = reader.samples("train")
    paste = PersonPaste.from_reader(reader, "train")
    sizes = {"body": 32, "context": 32, "whole": 32} if kind != "caer_s" else {"face": 16}
    sizes |= {"context": 32, "whole": 32}
    for i, s in enumerate(samples):
        original = np.asarray(load_image(s.image))
        truth = people_in(original)
        own = max(truth, key=lambda m: m[_area(s.hidden, m.shape)].sum())
        for seed in range(3):
            out = np.asarray(paste(i, np.random.default_rng(seed)))
            assert np.array_equal(out[own], original[own])  # the person's pixels kept
            others = [m for m in truth if not np.array_equal(m, own)]
            assert others and len(people_in(out)) == 1  # no one else's
            rest = ~grow(own.astype(np.uint8) * 255, 0.1)
            assert (out[rest] == original[rest]).all(axis=1).mean() < 0.2  # the rest replaced
            views = make_views(s, sizes, "zeros", root, Image.fromarray(out))
            whole = np.asarray(Image.fromarray(out).resize((32, 32), Image.BILINEAR))
            assert np.array_equal(views["whole"].permute(1, 2, 0).numpy(), whole)
            if "body" in views:  # cut from the pasted picture, never a ready-made crop
                assert s.person is not None
                body = (
                    Image.fromarray(out).crop(s.person.as_tuple()).resize((32, 32), Image.BILINEAR)
                )
                assert np.array_equal(views["body"].permute(1, 2, 0).numpy(), np.asarray(body))
        if kind == "caer_s":  # the whole actor, not the face alone
            assert own.sum() > 3 * _area(s.hidden, own.shape).sum()
            assert np.array_equal(paste.cut(i), own)


def _area(box: Box | None, shape: tuple[int, ...]) -> np.ndarray:
    assert box is not None
    out = np.zeros(shape[:2], dtype=bool)
    out[box.y1 : box.y2, box.x1 : box.x2] = True
    return out


def test_npy_layout_body_view_comes_from_the_pasted_picture(tmp_path: Path) -> None:
    root = write_emotic(tmp_path / "npy", "npy")
    reader = EmoticReader(root)
    annotate(reader, ["train"], {"masks": colour_detector()})
    s = reader.samples("train")[0]
    out = PersonPaste.from_reader(reader, "train")(0, np.random.default_rng(0))
    pasted = make_views(s, {"body": 32}, "zeros", root, out)["body"]
    plain = make_views(s, {"body": 32}, "zeros", root)["body"]  # the ready-made crop
    assert s.body_image is not None and not torch.equal(pasted, plain)


def test_annotate_skips_what_exists_and_resumes_after_a_kill(tmp_path: Path) -> None:
    root = write_groupwalk(tmp_path / "gw")
    reader = GroupWalkReader(root)
    with pytest.raises(KeyboardInterrupt):
        annotate(reader, SPLITS, {"masks": colour_detector(fail_after=2)}, batch_size=2)
    written = sorted((root / "masks").rglob("*.png"))
    assert len(written) == 4 and not list((root / "masks").rglob("*.tmp"))
    calls: list[int] = []
    (again,) = annotate(reader, SPLITS, {"masks": colour_detector(calls)}, batch_size=2)
    assert sum(calls) == 9 - 4 and (again.written, again.skipped) == (5, 4)
    assert again.matched == again.people == 18
    calls.clear()
    (last,) = annotate(reader, SPLITS, {"masks": colour_detector(calls)}, batch_size=2)
    assert not calls and (last.written, last.skipped) == (0, 9)


def test_annotate_counts_people_without_an_instance(tmp_path: Path) -> None:
    root = write_groupwalk(tmp_path / "gw")
    blind = colour_detector()

    def half_blind(images):  # finds only the first person of each picture
        outputs = blind(images)
        return [{k: v[:1] for k, v in out.items()} for out in outputs]

    (r,) = annotate(GroupWalkReader(root), ["train"], {"masks": half_blind})
    assert (r.people, r.matched, r.without) == (6, 3, 3) and len(r.unmatched) == 3


def test_own_person_rules() -> None:
    labels = np.zeros((40, 60), dtype=np.uint8)
    a = silhouette((4, 2, 30, 38), labels.shape)
    b = silhouette((22, 4, 56, 38), labels.shape)
    labels[b], labels[a] = 2, 1  # a in front
    assert np.array_equal(own_person(labels, Box(4, 2, 30, 38)), labels == 1)
    assert np.array_equal(own_person(labels, Box(22, 4, 56, 38)), labels == 2)
    face = Box(*caer_face((22, 4, 56, 38)))
    assert np.array_equal(own_person(labels, face, face=True), labels == 2)  # the whole person
    assert own_person(labels, Box(0, 0, 3, 3)) is None  # no one there
    union = np.where(labels > 0, 255, 0).astype(np.uint8)  # a union mask: who is who unknown
    cut = own_person(union, Box(22, 4, 56, 38))
    assert cut is not None and cut[a & (np.arange(60) >= 22)].any()  # the mask inside the box
    apart = np.zeros_like(union)
    apart[silhouette((2, 2, 20, 38), apart.shape)] = 255
    apart[silhouette((36, 2, 58, 38), apart.shape)] = 255
    face = Box(*caer_face((36, 2, 58, 38)))
    assert np.array_equal(
        own_person(apart, face, face=True), silhouette((36, 2, 58, 38), apart.shape)
    )


def test_grow_by_a_share_of_each_persons_height() -> None:
    labels = np.zeros((100, 100), dtype=np.uint8)
    labels[10:90, 10:20] = 1  # 80 px tall: grown by 4 at 0.05
    labels[10:30, 60:70] = 2  # 20 px tall: grown by 1
    grown = grow(labels, 0.05)
    assert grown[6:94, 6:24].all() and not grown[5, 10] and not grown[10, 24]
    assert grown[9:31, 59:71].all() and not grown[8, 60] and not grown[10, 71]
    assert np.array_equal(grow(labels, 0.0), labels > 0)


def test_a_randomly_initialised_torchvision_detector_runs_the_plumbing(tmp_path: Path) -> None:
    root = write_groupwalk(tmp_path / "gw")
    torch.manual_seed(0)
    masks = load_detector("masks", None, "cpu", size=64, max_people=3)
    pose = load_detector("pose", None, "cpu", size=64, max_people=3)
    reader = GroupWalkReader(root)
    results = annotate(reader, ["test"], {"masks": masks, "pose": pose})
    assert [r.written for r in results] == [3, 3]
    for s in reader.samples("test"):  # whatever random weights found, the readers read it
        size = Image.open(s.image).size
        read_people(locate("masks", s.image, root), size)
        read_pose(locate("pose", s.image, root), s.hidden, 17)


def test_cli_annotate_prints_its_summary(tmp_path: Path, capsys, monkeypatch) -> None:
    root = write_caer(tmp_path / "caer")
    import deconfound.pipelines.annotate as pipeline

    monkeypatch.setattr(pipeline, "load_detector", lambda *a, **k: colour_detector())
    argv = ["annotate", str(root), "--dataset", "caer_s", "--make", "masks", "pose"]
    argv += ["--arg", f"faces={root / 'faces.csv'}", "--no-progress"]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "| masks | 7 | 7 | 0 | 7 | 7 | 0 |" in out and "| pose | 7 | 7 | 0 | 7 | 7 | 0 |" in out
    assert main(argv) == 0
    assert "| masks | 7 | 0 | 7 | 7 | 7 | 0 |" in capsys.readouterr().out


def test_paste_trains_on_a_real_reader_and_builds_no_training_view_cache(tmp_path: Path) -> None:
    from conftest import one_epoch_overrides

    from deconfound.config import load_config
    from deconfound.engine import train

    root = write_groupwalk(tmp_path / "gw")
    annotate(GroupWalkReader(root), SPLITS, {"masks": colour_detector()})
    overrides = one_epoch_overrides(root, tmp_path / "runs", "{body: 32, whole: 32}")
    cfg = load_config("groupwalk", [*overrides, "model.intervention=paste", "data.cache=disk"])
    assert 0 <= train(cfg).best_score <= 1
    caches = root / ".deconfound-cache" / "views" / "groupwalk"
    built = {p.name.split(".")[0] for p in caches.iterdir()}
    assert any(name.startswith("val") for name in built)
    assert not any(name.startswith("train") for name in built), built


def test_paste_refuses_views_read_from_files_of_the_original_scene() -> None:
    from deconfound.config import load_config
    from deconfound.errors import ConfigError
    from deconfound.methods import get_method

    cfg = load_config("emotic_emoticon", ["model.intervention=paste"])
    method = get_method(cfg.model)
    with pytest.raises(ConfigError, match="reads the depth of the original picture"):
        method.compose(None, "train", "zeros", ("body", "pose", "context", "depth"))  # type: ignore[arg-type]


def test_data_check_accepts_what_annotate_wrote(tmp_path: Path, capsys) -> None:
    root = write_groupwalk(tmp_path / "gw")
    detector = colour_detector()
    annotate(GroupWalkReader(root), SPLITS, {"masks": detector, "pose": detector})
    argv = ["data", "check", str(root), "--dataset", "groupwalk", "--sidecar", "masks"]
    assert main([*argv, "--sidecar", "pose", "--keypoints", "17"]) == 0
    assert "no problems found" in capsys.readouterr().out

"""Person masks: the ``masks`` sidecar files, the synthetic set's true masks, and the person
pasted onto another background (the ``paste`` method's data)."""

from __future__ import annotations

import logging
import pickle
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY
from formats import picture
from PIL import Image

from deconfound.cli import main
from deconfound.data import VIEWS, Box, Sample, make_views
from deconfound.data.paste import PersonPaste, composite, hide
from deconfound.data.sidecars import KINDS, TOOLS, VIEW_OF, locate, read_mask
from deconfound.data.synthetic import PERSON_SPLITS, SyntheticReader, generate
from deconfound.data.synthetic.generate import FORMAT
from deconfound.data.synthetic.render import draw_person, sample_expression
from deconfound.errors import DataError

W, H = 24, 16


def _save_mask(path: Path, mask: np.ndarray, mode: str = "L") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    grey = Image.fromarray(mask.astype(np.uint8) * 255)
    (grey.convert("1") if mode == "1" else grey).save(path)
    return path


def _blob(w: int = W, h: int = H) -> np.ndarray:
    """A person-like blob: an ellipse in the middle of a ``w``×``h`` picture."""
    ys, xs = np.mgrid[0:h, 0:w]
    return ((xs - w / 2 + 0.5) / (w / 4)) ** 2 + ((ys - h / 2 + 0.5) / (h / 3)) ** 2 <= 1


@pytest.mark.parametrize(("size", "mode"), [((W, H), "L"), ((48, 32), "L"), ((12, 8), "1")])
def test_read_mask_any_resolution_of_the_images_aspect(
    tmp_path: Path, size: tuple[int, int], mode: str
) -> None:
    truth = _blob(*size)
    mask = read_mask(_save_mask(tmp_path / "m.png", truth, mode), (W, H))
    assert mask.dtype == bool and mask.shape == (H, W)
    expected = np.asarray(Image.fromarray(truth).resize((W, H), Image.NEAREST))
    assert np.array_equal(mask, expected)
    odd = read_mask(_save_mask(tmp_path / "odd.png", _blob(33, 17)), (65, 33))  # rounded half
    assert odd.shape == (33, 65) and odd.any()


def test_read_mask_threshold_is_above_127(tmp_path: Path) -> None:
    grey = np.array([[0, 127, 128, 255]], dtype=np.uint8)
    Image.fromarray(grey).save(tmp_path / "m.png")
    assert read_mask(tmp_path / "m.png", (4, 1)).tolist() == [[False, False, True, True]]


def _write(path: Path, what: str) -> Path:
    if what == "corrupt":
        _save_mask(path, _blob())
        path.write_bytes(path.read_bytes()[:40])
    elif what == "junk":
        path.write_bytes(b"not a png at all")
    elif what == "aspect":
        _save_mask(path, _blob(W, W))
    elif what == "I;16":
        Image.fromarray((_blob() * 65535).astype(np.uint16)).save(path)
    elif what == "I":  # 32-bit grey: not a PNG mode, a TIFF under the mask's name
        Image.fromarray((_blob() * 255).astype(np.int32)).save(path, format="TIFF")
    else:
        Image.fromarray(np.zeros((H, W), dtype=np.uint8)).convert(what).save(path)
    return path


@pytest.mark.parametrize(
    ("what", "message"),
    [
        ("missing", "mask file not found; make it with a person segmenter"),
        ("corrupt", "cannot read the mask"),
        ("junk", "cannot read the mask"),
        ("aspect", "does not fit the 24x16 image"),
        ("RGB", "found mode RGB"),
        ("RGBA", "found mode RGBA"),
        ("LA", "found mode LA"),
        ("I;16", "found mode I;16"),
        ("I", "found mode I"),
    ],
)
def test_bad_masks_are_one_line_errors_naming_the_file(
    tmp_path: Path, what: str, message: str
) -> None:
    path = tmp_path / "m.png"
    if what != "missing":
        _write(path, what)
    with pytest.raises(DataError, match=message) as e:
        read_mask(path, (W, H))
    assert str(e.value).startswith(str(path)) and "\n" not in str(e.value)


def test_masks_are_a_sidecar_kind_read_by_the_mask_view(tmp_path: Path) -> None:
    assert "masks" in KINDS and TOOLS["masks"] == "a person segmenter"
    assert set(VIEW_OF) == set(KINDS) and all(VIEW_OF[k] in VIEWS for k in KINDS)
    image = tmp_path / "frames" / "a.png"
    image.parent.mkdir()
    picture(W, H, 0).save(image)
    sample = Sample(image, Box(4, 2, 20, 14), None, (0,))
    with pytest.raises(DataError, match="a.png: masks file for .* not found"):
        make_views(sample, {"mask": 8}, root=tmp_path)
    _save_mask(tmp_path / "masks" / "frames" / "a.png", _blob(W * 2, H * 2))
    assert locate("masks", image, tmp_path) == tmp_path / "masks/frames/a.png"
    view = make_views(sample, {"mask": 8}, root=tmp_path)["mask"]
    assert view.shape == (1, 8, 8) and view.dtype == torch.uint8
    assert set(view.unique().tolist()) == {0, 255} and view[0, 4, 4] == 255 and view[0, 0, 0] == 0


def test_composite_keeps_the_person_and_replaces_the_rest() -> None:
    image, background = picture(W, H, 1), picture(W, H, 2)
    mask = _blob()
    out = np.asarray(composite(image, mask, background))
    assert out.shape == (H, W, 3) and out.dtype == np.uint8
    assert np.array_equal(out[mask], np.asarray(image)[mask])
    assert np.array_equal(out[~mask], np.asarray(background)[~mask])
    big = picture(2 * W, 2 * H, 3)
    resized = np.asarray(big.resize((W, H), Image.BILINEAR))
    out = np.asarray(composite(image, mask, big.convert("L")))  # any mode, any size
    assert np.array_equal(out[mask], np.asarray(image)[mask])
    grey = np.asarray(big.convert("L").convert("RGB").resize((W, H), Image.BILINEAR))
    assert np.array_equal(out[~mask], grey[~mask]) and not np.array_equal(grey, resized)
    with pytest.raises(ValueError, match="shape"):
        composite(image, mask[:-1], background)


def test_hide_fills_only_the_mask() -> None:
    grown = np.zeros((H, W), dtype=bool)
    grown[3:8, 5:10] = True
    pixels = np.asarray(picture(W, H, 4))
    for fill in ("zeros", "mean", "blur"):
        out = hide(pixels, grown, fill)
        assert np.array_equal(out[~grown], pixels[~grown]), fill
    assert not hide(pixels, grown, "zeros")[grown].any()


# A tiny set of four images (two people in the third), each a plain colour with its people
# drawn in another; the masks are the people's true pixels.
COLOURS = [(200, 30, 30), (30, 200, 30), (30, 30, 200), (200, 200, 30)]
PERSON = (250, 250, 250)
BOXES = [Box(2, 2, 12, 14), Box(12, 1, 22, 15), Box(1, 3, 9, 15), Box(6, 2, 18, 14)]


def _tiny_set(root: Path, masks: bool = True) -> list[Sample]:
    samples = []
    for k, colour in enumerate(COLOURS):
        pixels = np.full((H, W, 3), colour, dtype=np.uint8)
        people = [BOXES[k]] + ([Box(14, 4, 22, 14)] if k == 2 else [])
        mask = np.zeros((H, W), dtype=bool)
        for b in people:
            mask[b.y1 + 1 : b.y2 - 1, b.x1 + 2 : b.x2 - 2] = True  # inside the box
        pixels[mask] = PERSON
        pixels[mask & (np.arange(W) % 2 == 0)] = (10, 10, 10)  # not a plain person
        path = root / "images" / f"{k}.png"
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(pixels).save(path)
        if masks:
            _save_mask(root / "masks" / "images" / f"{k}.png", mask)
        samples += [Sample(path, b, None, (k,)) for b in people]
    return samples


def test_paste_is_deterministic_never_its_own_image_and_keeps_the_person(tmp_path: Path) -> None:
    samples = _tiny_set(tmp_path)
    paste = PersonPaste(samples, tmp_path)
    again = pickle.loads(pickle.dumps(paste))
    for i, sample in enumerate(samples):
        own = np.asarray(Image.open(sample.image).convert("RGB"))
        cut = paste.cut(i)
        assert cut.any() and not cut[~_box_of(sample.person)].any()
        seen = set()
        rng, rng2 = np.random.default_rng(i), np.random.default_rng(i)
        for _ in range(12):
            out = paste(i, rng)
            assert out.size == (W, H) and out.mode == "RGB"
            assert np.array_equal(np.asarray(out), np.asarray(again(i, rng2)))
            out = np.asarray(out)
            assert np.array_equal(out[cut], own[cut])
            corner = tuple(int(v) for v in out[~cut][0])
            seen.add(corner)
            assert corner != tuple(own[0, 0])  # never sample i's own image, nor a fellow's
        assert len(seen) >= 2  # different backgrounds for different draws


def _box_of(box: Box | None) -> np.ndarray:
    assert box is not None
    inside = np.zeros((H, W), dtype=bool)
    inside[box.y1 : box.y2, box.x1 : box.x2] = True
    return inside


def test_a_backgrounds_own_people_are_hidden_with_the_fill(tmp_path: Path) -> None:
    samples = _tiny_set(tmp_path)
    paste = PersonPaste(samples, tmp_path, fill="zeros")
    for k in range(len(samples)):
        background = paste.background(k)
        assert not (background == PERSON).all(axis=2).any()  # no person pixel left
        assert (background == 0).all(axis=2).any()
    mean = PersonPaste(samples, tmp_path, fill="mean").background(0)
    assert not (mean == PERSON).all(axis=2).any() and not (mean == 0).all(axis=2).any()


def test_paste_onto_given_pictures(tmp_path: Path) -> None:
    samples = _tiny_set(tmp_path)
    scenes = []
    for k in range(3):
        path = tmp_path / "scenes" / f"{k}.png"
        path.parent.mkdir(exist_ok=True)
        picture(2 * W, 2 * H, 10 + k).save(path)  # another size: resized
        scenes.append(path)
    paste = PersonPaste(samples, tmp_path, scenes)
    out = np.asarray(paste(0, np.random.default_rng(0)))
    cut = paste.cut(0)
    own = np.asarray(Image.open(samples[0].image).convert("RGB"))
    assert np.array_equal(out[cut], own[cut])
    choices = [
        np.asarray(Image.open(p).convert("RGB").resize((W, H), Image.BILINEAR)) for p in scenes
    ]
    assert any(np.array_equal(out[~cut], c[~cut]) for c in choices)


def test_missing_masks_are_an_error_or_the_box_with_one_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    samples = _tiny_set(tmp_path, masks=False)
    with pytest.raises(DataError, match=r"masks/images/0.png: mask file for .* \(5 of 5") as e:
        PersonPaste(samples, tmp_path)
    assert "missing_mask: box" in str(e.value) and "\n" not in str(e.value)
    with caplog.at_level(logging.WARNING, logger="deconfound.data.paste"):
        paste = PersonPaste(samples, tmp_path, missing_mask="box")
        rng = np.random.default_rng(0)
        for i in range(len(samples)):
            for _ in range(3):
                paste(i, rng)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "keeps the background inside the box" in warnings[0].message
    assert np.array_equal(paste.cut(0), _box_of(samples[0].person))


@pytest.fixture(scope="module")
def small_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic set of 5 images per split."""
    cfg = replace(TINY, sizes={s: 5 for s in (*PERSON_SPLITS, "scenes")})
    return generate(tmp_path_factory.mktemp("masks") / "set", cfg, progress=False, workers=1)


def test_synthetic_set_has_a_true_mask_per_person_image(small_root: Path) -> None:
    reader = SyntheticReader(small_root)
    for split in PERSON_SPLITS:
        for sample in reader.samples(split):
            assert isinstance(sample.image, Path) and sample.person is not None
            rel = sample.image.relative_to(small_root)
            mask = Image.open(small_root / "masks" / rel)
            assert mask.mode == "L" and mask.size == Image.open(sample.image).size
            m = np.asarray(mask)
            assert set(np.unique(m).tolist()) == {0, 255}
            person = _inside(sample.person, m.shape)
            assert not m[~person].any()  # all of it inside the person box
            share = (m[person] > 0).mean()
            assert 0.2 < share < 0.9, (rel, share)
            face = _inside(sample.face, m.shape)
            assert (m[face] > 0).mean() > 0.5  # the head fills its box
    assert not (small_root / "masks" / "images" / "scenes").exists()
    assert '"format": "deconfound-synthetic/4"' in (small_root / "meta.json").read_text()
    assert FORMAT == "deconfound-synthetic/4"


def _inside(box: Box | None, shape: tuple[int, ...]) -> np.ndarray:
    assert box is not None
    out = np.zeros(shape[:2], dtype=bool)
    out[box.y1 : box.y2, box.x1 : box.x2] = True
    return out


def test_the_silhouette_is_what_the_person_drew() -> None:
    for seed in range(10):
        rng = np.random.default_rng(seed)
        canvas = Image.new("RGB", (64, 64), (0, 255, 0))
        drawn = draw_person(canvas, sample_expression("happy", rng), rng)
        changed = np.any(np.asarray(canvas) != (0, 255, 0), axis=2)
        silhouette = np.asarray(drawn.silhouette((64, 64))) > 0
        assert np.array_equal(changed, silhouette)


def test_paste_on_the_synthetic_set_from_the_reader(small_root: Path, tmp_path: Path) -> None:
    reader = SyntheticReader(small_root)
    train = reader.samples("train")
    for backgrounds in (None, "train", "val", "scenes", str(small_root / "images" / "scenes")):
        paste = PersonPaste.from_reader(reader, "train", backgrounds, fill="blur")
        out = np.asarray(paste(1, np.random.default_rng(0)))
        own = np.asarray(Image.open(train[1].image).convert("RGB"))
        cut = paste.cut(1)
        assert 0 < cut.mean() < 0.5 and np.array_equal(out[cut], own[cut])
        assert not np.array_equal(out, own)
    with pytest.raises(DataError, match="backgrounds must name a split of synthetic"):
        PersonPaste.from_reader(reader, "train", str(tmp_path / "nowhere"))
    with pytest.raises(DataError, match="no background images"):
        PersonPaste.from_reader(reader, "train", str(tmp_path))


def test_data_check_reads_the_masks(small_root: Path, tmp_path: Path, capsys) -> None:
    copy = tmp_path / "copy"
    copy.mkdir()
    for name in ("annotations.csv", "scenes.csv", "meta.json", "images", "masks"):
        (copy / name).symlink_to(small_root / name)
    argv = ["data", "check", str(copy), "--dataset", "synthetic", "--split", "val"]
    assert main([*argv, "--sidecar", "masks"]) == 0
    (copy / "masks").unlink()
    capsys.readouterr()
    assert main([*argv, "--sidecar", "masks"]) == 1
    err = capsys.readouterr().err
    assert "5 problem(s)" in err and "masks file for" in err and "a person segmenter" in err

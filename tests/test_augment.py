"""Augmentation of decoded views: a pure function of (views, generator), off by default."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as F

from deconfound.config import AugmentConfig, load_config
from deconfound.data.augment import Augment
from deconfound.errors import ConfigError

IERN = [
    "data.augment.crop_scale=[0.765625, 0.765625]",  # a 224 crop of 256, as a fraction of the area
    "data.augment.flip_p=0.5",
    "data.augment.blur_p=0.5",
    "data.augment.blur_sigma=[0.1, 1.5]",
    "data.augment.brightness=[0.8, 1.2]",
    "data.augment.contrast=[0.75, 1.5]",
    "data.augment.affine_degrees=10",
    "data.augment.affine_translate=0.2",
    "data.augment.affine_scale=[0.8, 1.2]",
    "data.augment.affine_shear=8",
    "data.augment.order=shuffled",
]


def views(size: int = 24, seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    picture = torch.randint(0, 256, (3, size, size), dtype=torch.uint8, generator=g)
    return {
        "body": picture,
        "whole": picture.clone(),
        "depth": torch.randint(0, 256, (1, size, size), dtype=torch.uint8, generator=g),
        "mask": (torch.rand(1, size, size, generator=g) > 0.5).to(torch.uint8) * 255,
        "pose": torch.rand(17, 3, generator=g),
        "objects": torch.rand(5, 5, generator=g),
    }


def full() -> Augment:
    return Augment(load_config(None, [*IERN, "data.augment.hue=0.1"]).data.augment)


def rng(seed: int) -> np.random.Generator:
    return np.random.default_rng(seed)


def test_the_same_seed_gives_the_same_output_whatever_the_global_random_state() -> None:
    aug, v = full(), views()
    torch.manual_seed(1)
    first = aug(v, rng(7))
    torch.manual_seed(2)
    np.random.seed(2)
    second = aug(v, rng(7))
    assert all(torch.equal(first[k], second[k]) for k in v)
    other = aug(v, rng(8))
    assert not all(torch.equal(first[k], other[k]) for k in ("body", "whole", "depth"))


def test_the_output_keeps_dtype_and_shape_and_leaves_the_input_alone() -> None:
    aug = full()
    for size in (16, 48, 64):
        v = views(size)
        before = {k: t.clone() for k, t in v.items()}
        for seed in range(5):
            out = aug(v, rng(seed))
            assert list(out) == list(v)
            for k, t in out.items():
                assert t.dtype == v[k].dtype and t.shape == v[k].shape
        assert all(torch.equal(before[k], v[k]) for k in v)


def test_a_disabled_config_is_the_identity() -> None:
    aug = Augment(AugmentConfig())
    assert not aug.enabled
    v = views()
    out = aug(v, rng(0))
    assert all(out[k] is v[k] for k in v)
    assert not Augment(AugmentConfig(flip_p=0.0, blur_p=0.0, jitter_p=0.0)).enabled
    assert not Augment(AugmentConfig(brightness=[1.5, 2.0], jitter_p=0.0)).enabled
    assert Augment(AugmentConfig(crop_scale=[0.5, 1.0])).enabled


def test_flip_with_probability_one_flips_the_last_dimension() -> None:
    v = views()
    out = Augment(AugmentConfig(flip_p=1.0))(v, rng(0))
    for k in ("body", "whole", "depth", "mask"):
        assert torch.equal(out[k], torch.flip(v[k], dims=[-1]))


def test_a_fixed_brightness_is_torchvisions_adjust_brightness() -> None:
    v = views()
    for f in (0.5, 1.3):
        out = Augment(AugmentConfig(brightness=[f, f]))(v, rng(0))
        assert torch.equal(out["body"], F.adjust_brightness(v["body"], f))


def test_non_picture_views_are_passed_through() -> None:
    v = views()
    out = full()(v, rng(0))
    assert out["pose"] is v["pose"] and out["objects"] is v["objects"]


def test_one_channel_views_get_only_the_geometric_ops() -> None:
    v = views()
    colour = AugmentConfig(
        brightness=[0.5, 0.6], contrast=[1.5, 2.0], hue=0.3, blur_p=1.0, order="shuffled"
    )
    out = Augment(colour)(v, rng(0))
    assert torch.equal(out["depth"], v["depth"]) and torch.equal(out["mask"], v["mask"])
    assert not torch.equal(out["body"], v["body"])
    turned = Augment(AugmentConfig(affine_degrees=30, affine_translate=0.1))(v, rng(0))
    assert not torch.equal(turned["depth"], v["depth"])
    assert set(turned["mask"].unique().tolist()) <= {0, 255}  # nearest-neighbour: still a mask


def test_each_view_draws_its_own_flip() -> None:
    aug = Augment(AugmentConfig(flip_p=0.5))
    v = views()
    flipped = [torch.equal(aug(v, rng(s))["body"], aug(v, rng(s))["whole"]) for s in range(20)]
    assert not all(flipped) and any(flipped)


def test_only_the_named_views_are_augmented() -> None:
    v = views()
    out = Augment(AugmentConfig(flip_p=1.0, views=["whole"]))(v, rng(0))
    assert torch.equal(out["whole"], torch.flip(v["whole"], dims=[-1]))
    assert all(out[k] is v[k] for k in v if k != "whole")


def test_the_crop_is_a_region_of_the_drawn_size_resized_back() -> None:
    size, side = 16, 8
    picture = views(size)["body"]
    aug = Augment(AugmentConfig(crop_scale=[0.25, 0.25]))
    candidates = [
        F.resized_crop(picture, top, left, side, side, [size, size])
        for top in range(size - side + 1)
        for left in range(size - side + 1)
    ]
    outs = [aug({"body": picture}, rng(s))["body"] for s in range(6)]
    for out in outs:
        assert any(torch.equal(out, c) for c in candidates)
    assert len({tuple(o.flatten().tolist()) for o in outs}) > 1


def test_ierns_release_transform_is_expressible() -> None:
    cfg = load_config(None, IERN).data.augment
    assert cfg.order == "shuffled" and cfg.blur_sigma == [0.1, 1.5]
    aug = Augment(cfg)
    assert aug.ops == ("flip", "affine", "brightness", "contrast", "blur") and aug.crop
    out = aug({"face": views(32)["body"]}, rng(0))
    assert out["face"].shape == (3, 32, 32)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("flip_p=1.5", "'data.augment.flip_p' must be a number in \\[0, 1\\]"),
        ("blur_p=-0.1", "'data.augment.blur_p' must be a number in \\[0, 1\\]"),
        ("hue=0.6", "'data.augment.hue' must be a number in \\[0, 0.5\\]"),
        ("affine_degrees=-3", "'data.augment.affine_degrees' must be a number in"),
        ("brightness=[1.2, 0.8]", "'data.augment.brightness' must be \\[lo, hi\\]"),
        ("contrast=[1]", "'data.augment.contrast' must be \\[lo, hi\\]"),
        ("saturation=[-1, 1]", "'data.augment.saturation' must be \\[lo, hi\\] with 0 <= lo"),
        ("crop_scale=[0.5, 1.5]", "'data.augment.crop_scale' must be .* <= 1"),
        ("crop_ratio=[0, 1]", "'data.augment.crop_ratio' must be \\[lo, hi\\] with 0 < lo"),
        ("blur_sigma=[1, x]", "'data.augment.blur_sigma' must be \\[lo, hi\\]"),
        ("order=random", "unknown data.augment.order 'random'; choose one of fixed, shuffled"),
        ("views=[pose]", "'data.augment.views' cannot augment 'pose'; choose from body"),
        ("flip=0.5", "unknown key 'data.augment.flip'"),
    ],
)
def test_bad_values_are_named(override: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as err:
        load_config(None, [f"data.augment.{override}"])
    assert "\n" not in str(err.value)


def _square(size: int = 48, side: int = 16) -> torch.Tensor:
    """A black picture with a white square of ``side`` pixels in its centre."""
    picture = torch.zeros(3, size, size, dtype=torch.uint8)
    lo = (size - side) // 2
    picture[:, lo : lo + side, lo : lo + side] = 255
    return picture


def _extent(picture: torch.Tensor) -> tuple[float, float, float]:
    """Width of the bright region on its middle row, and its brightness centroid (x, y)."""
    bright = picture[0].float() / 255
    row = bright[bright.sum(1).argmax()]
    ys, xs = torch.meshgrid(torch.arange(48.0), torch.arange(48.0), indexing="ij")
    total = bright.sum()
    return (
        float((row > 0.5).sum()),
        float((bright * xs).sum() / total),
        float((bright * ys).sum() / total),
    )


def test_evaluation_sees_the_training_crops_scale_centred() -> None:
    """The release crops 224 of a 256 resize at training and the centre 224 at test: one
    scale. Here the training crop (share 0.766 of the area, resized back) and the evaluation
    frame show the square equally large, and the frame sits at the mean training crop."""
    aug = Augment(AugmentConfig(crop_scale=[0.765625, 0.765625]))
    picture = {"face": _square()}
    framed = aug.frame(picture)["face"]
    crops = [aug(picture, rng(seed))["face"] for seed in range(200)]
    width, x, y = _extent(framed)
    assert width == pytest.approx(16 / 0.875, abs=1)  # 18.3 pixels: the crops' zoom
    assert all(abs(_extent(c)[0] - width) <= 1 for c in crops)
    mean = torch.stack(crops).float().mean(0).to(torch.uint8)
    _, mx, my = _extent(mean)
    assert (mx, my) == (pytest.approx(x, abs=0.5), pytest.approx(y, abs=0.5))
    assert (x, y) == (pytest.approx(23.5, abs=0.5), pytest.approx(23.5, abs=0.5))
    assert _extent(picture["face"])[0] == 16  # without the frame: the smaller, whole view
    whole = Augment(AugmentConfig(crop_scale=[0.765625, 0.765625], eval_crop=False))
    assert not whole.framed and whole.frame(picture) is picture
    assert not Augment(AugmentConfig(flip_p=0.5)).framed  # no crop, nothing to match


def test_a_crop_range_frames_at_its_mean_area() -> None:
    aug = Augment(AugmentConfig(crop_scale=[0.5, 1.0]))
    assert aug.frame_area == 0.75
    framed = aug.frame({"face": _square(), "pose": torch.ones(17, 3)})
    assert _extent(framed["face"])[0] == pytest.approx(16 / 0.75**0.5, abs=1)
    assert torch.equal(framed["pose"], torch.ones(17, 3))


def test_augment_null_turns_augmentation_off() -> None:
    cfg = load_config("faces_synthetic", ["data.augment=null"])
    aug = Augment(cfg.data.augment)
    assert not aug.enabled and not aug.framed

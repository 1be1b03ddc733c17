"""Person cuts as worse segmenters give them: each degradation does what its name says, and
``paste`` pastes the degraded cut."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from deconfound.config import ModelConfig
from deconfound.data.cut_quality import degrade, ellipse, expand, keypoint_hull, shrink
from deconfound.data.paste import PersonPaste
from deconfound.data.sample import Box
from deconfound.data.synthetic import SyntheticReader
from deconfound.errors import ConfigError
from deconfound.methods import Paste


def _person() -> np.ndarray:
    cut = np.zeros((100, 80), dtype=bool)
    cut[10:90, 30:50] = True  # 80 px tall
    return cut


def test_eroded_and_dilated_cuts_move_the_rim_by_a_share_of_the_height() -> None:
    cut = _person()
    small, large = shrink(cut, 0.05), expand(cut, 0.05)  # 4 px
    assert (small <= cut).all() and (cut <= large).all()
    assert small.sum() == (80 - 8) * (20 - 8)
    assert large[10:90, 26:54].all() and not large[10:90, 25].any()


def test_the_ellipse_lies_in_its_box_and_touches_its_sides() -> None:
    box = Box(20, 10, 60, 90)
    e = ellipse(box, (100, 80))
    ys, xs = np.nonzero(e)
    assert xs.min() >= 20 and xs.max() < 60 and ys.min() >= 10 and ys.max() < 90
    assert e[50, 21] and e[50, 58] and e[11, 40] and e[88, 40]
    assert not e[11, 21]  # a corner of the box


def test_the_keypoint_hull_covers_its_points_and_widens_by_the_margin() -> None:
    points = np.array([[40.0, 10.0], [30.0, 50.0], [50.0, 50.0], [40.0, 90.0]])
    hull = keypoint_hull(points, (100, 80), margin=3)
    assert all(hull[int(y), int(x)] for x, y in points)
    assert hull[50, 27] and not hull[50, 25]
    assert not keypoint_hull(points[:2], (100, 80), 3).any()  # no area: an empty cut


def test_degrade_asks_for_what_a_cut_needs() -> None:
    with pytest.raises(ValueError, match="person box"):
        degrade(_person(), "ellipse", 0.05)
    with pytest.raises(ValueError, match="keypoints"):
        degrade(_person(), "keypoints", 0.05, Box(0, 0, 10, 10))
    box = Box(30, 10, 50, 90)
    assert degrade(_person(), "box", 0.05, box).sum() == 80 * 20


@pytest.mark.parametrize("cut", ["eroded", "dilated", "ellipse", "keypoints", "box"])
def test_paste_pastes_the_degraded_cut(cut: str, tiny_root: Path) -> None:
    reader = SyntheticReader(tiny_root)
    exact = PersonPaste.from_reader(reader, "train")
    worse = PersonPaste.from_reader(reader, "train", cut=cut, cut_share=0.05)
    i, k = 0, 5
    a, b = exact.cut(i), worse.cut(i)
    iou = (a & b).sum() / (a | b).sum()
    assert 0.3 < iou < 1.0  # another cut of the same person
    picture = np.asarray(worse.onto(i, k))
    person = np.asarray(exact.onto(i, k))
    assert np.array_equal(picture[a & b], person[a & b])  # both keep the person's own pixels
    assert not np.array_equal(picture[a ^ b], person[a ^ b])  # the rim differs
    if cut in ("eroded",):
        assert (b <= a).all()
    if cut in ("dilated", "box"):
        assert (a <= b).all()


def test_a_cut_that_is_not_known_is_refused() -> None:
    for args in ({"cut": "lasso"}, {"cut": "eroded", "cut_share": 1.5}):
        with pytest.raises(ConfigError, match="cut"):
            Paste(ModelConfig(name="emotnet", intervention="paste", intervention_args=args))

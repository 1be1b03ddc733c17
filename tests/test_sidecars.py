"""Pose, depth and object-proposal files read as views, in the formats the tools write."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from deconfound.data import Box, Sample, make_views
from deconfound.data.sample import ArrayImage
from deconfound.data.sidecars import locate, read_depth, read_objects, read_pose, stem
from deconfound.errors import DataError

BOX = Box(10, 20, 30, 60)  # 20 wide, 40 tall


def _openpose(path: Path, *skeletons: list[float]) -> Path:
    people = [{"person_id": [-1], "pose_keypoints_2d": list(s)} for s in skeletons]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps({"version": 1.3, "people": people}))
    return path


def _skeleton(x: float, y: float, k: int = 18, c: float = 0.9) -> list[float]:
    return [v for _ in range(k) for v in (x, y, c)]


def test_pose_takes_the_skeleton_inside_the_person_box(tmp_path: Path) -> None:
    elsewhere, inside = _skeleton(100, 100), _skeleton(20, 40)
    inside[3:6] = [0, 0, 0]  # keypoint 1 not detected
    path = _openpose(tmp_path / "a_keypoints.json", elsewhere, inside)
    pose = read_pose(path, BOX, 18)
    assert pose.shape == (18, 3) and pose.dtype == torch.float32
    assert torch.allclose(pose[0], torch.tensor([0.5, 0.5, 0.9]))  # centre of the box
    assert pose[1].tolist() == [0.0, 0.0, 0.0]
    nobody = read_pose(_openpose(tmp_path / "b_keypoints.json", elsewhere), BOX, 18)
    assert not nobody.any()  # no skeleton in the box: an unknown pose, not someone else's


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ({"version": 1.3}, "no 'people' list"),
        ({"people": [{"pose_keypoints_2d": [1.0] * 75}]}, "has 75 values, expected 54"),
        ({"people": [{"pose_keypoints_2d": ["a"] * 54}]}, "non-numbers"),
        ({"people": [{"pose_keypoints_2d": [float("nan")] * 54}]}, "NaN"),
    ],
)
def test_bad_pose_files_are_named(tmp_path: Path, content: dict, message: str) -> None:
    path = tmp_path / "x_keypoints.json"
    path.write_text(json.dumps(content))
    with pytest.raises(DataError, match=f"{path}.*{message}"):
        read_pose(path, BOX, 18)
    path.write_text("{not json")
    with pytest.raises(DataError, match="not readable JSON"):
        read_pose(path, BOX, 18)


def test_depth_maps_from_npy_and_16_bit_png_normalise_alike(tmp_path: Path) -> None:
    ramp = np.tile(np.linspace(1.0, 9.0, 16, dtype=np.float32), (8, 1))  # 8 x 16, far on the right
    np.save(tmp_path / "d.npy", ramp)
    Image.fromarray((ramp * 1000).astype(np.uint16)).save(tmp_path / "d.png")
    a, b = read_depth(tmp_path / "d.npy", 8), read_depth(tmp_path / "d.png", 8)
    assert a.shape == (1, 8, 8) and a.dtype == torch.uint8
    assert a[0, 0, 0] <= 20 and a[0, 0, -1] >= 235  # min-max normalised (then resized)
    assert (a.int() - b.int()).abs().max() <= 1
    np.save(tmp_path / "flat.npy", np.full((4, 4), 3.0))
    assert not read_depth(tmp_path / "flat.npy", 4).any()
    np.save(tmp_path / "nan.npy", np.array([[1.0, np.nan]]))
    with pytest.raises(DataError, match="nan.npy: depth map holds NaN"):
        read_depth(tmp_path / "nan.npy", 4)
    np.save(tmp_path / "cube.npy", np.zeros((2, 3, 4, 5)))
    with pytest.raises(DataError, match="must be 2-D"):
        read_depth(tmp_path / "cube.npy", 4)


def test_objects_put_the_person_first_then_proposals_by_score(tmp_path: Path) -> None:
    path = tmp_path / "o.json"
    boxes = [[0, 0, 10, 10], [50, 50, 120, 90], [5, 5, 5, 30], [20, 0, 40, 10]]
    path.write_text(json.dumps({"boxes": boxes, "scores": [0.3, 0.9, 0.8, 0.5]}))
    nodes = read_objects(path, BOX, (100, 80), rows=4)
    assert nodes.shape == (4, 5)
    assert torch.allclose(nodes[0], torch.tensor([0.1, 0.25, 0.3, 0.75, 1.0]))
    assert torch.allclose(nodes[1], torch.tensor([0.5, 0.625, 1.0, 1.0, 1.0]))  # clipped
    assert torch.allclose(
        nodes[2], torch.tensor([0.2, 0.0, 0.4, 0.125, 1.0])
    )  # the empty one dropped
    assert torch.allclose(nodes[3, :4], torch.tensor([0.0, 0.0, 0.1, 0.125]))
    padded = read_objects(path, BOX, (100, 80), rows=8)
    assert padded[:, 4].tolist() == [1, 1, 1, 1, 0, 0, 0, 0] and not padded[4:].any()
    path.write_text(json.dumps({"boxes": [[1, 2, 3]]}))
    with pytest.raises(DataError, match="box 0 is not four numbers"):
        read_objects(path, BOX, (100, 80), rows=4)
    path.write_text(json.dumps({"boxes": [[1, 2, 3, 4]], "scores": []}))
    with pytest.raises(DataError, match="one number per box"):
        read_objects(path, BOX, (100, 80), rows=4)


def test_sidecars_are_found_beside_the_image_and_missing_ones_named(tmp_path: Path) -> None:
    image = tmp_path / "images" / "train" / "001.png"
    image.parent.mkdir(parents=True)
    Image.new("RGB", (100, 80), (90, 120, 30)).save(image)
    assert stem(image, tmp_path) == "images/train/001"
    assert stem(ArrayImage(tmp_path / "train_context_arr.npy", 7), tmp_path) == (
        "train_context_arr/000007"
    )
    sample = Sample(image, BOX, None, (0,))
    with pytest.raises(DataError, match=r"pose/images/train/001_keypoints.json: pose file .* "
                       "not found; make it with OpenPose"):  # fmt: skip
        make_views(sample, {"pose": 18}, root=tmp_path)
    with pytest.raises(DataError, match="needs the data set's root"):
        locate("depth", image, None)
    _openpose(tmp_path / "pose/images/train/001_keypoints.json", _skeleton(20, 40))
    (tmp_path / "depth/images/train").mkdir(parents=True)
    np.save(tmp_path / "depth/images/train/001.npy", np.random.default_rng(0).random((40, 50)))
    (tmp_path / "objects/images/train").mkdir(parents=True)
    (tmp_path / "objects/images/train/001.json").write_text(json.dumps({"boxes": []}))
    views = make_views(sample, {"pose": 18, "depth": 16, "objects": 3, "body": 8}, root=tmp_path)
    assert {k: tuple(v.shape) for k, v in views.items()} == {
        "pose": (18, 3), "depth": (1, 16, 16), "objects": (3, 5), "body": (3, 8, 8),
    }  # fmt: skip
    assert views["objects"][:, 4].tolist() == [1, 0, 0]

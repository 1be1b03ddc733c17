"""The synthetic reader validates every row; views cut what each stream needs."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from deconfound.data import Box, MemoryViews, Sample, ViewDataset, make_views, mask_box
from deconfound.data.synthetic import EMOTIONS, INFO, SyntheticReader
from deconfound.errors import DataError


def _edit_row(root: Path, index: int, **changes: str) -> int:
    """Change row ``index`` (0-based, data rows) of annotations.csv; return its row number."""
    path = root / "annotations.csv"
    with path.open() as f:
        reader = csv.DictReader(f)
        fields, rows = reader.fieldnames, list(reader)
    rows[index].update(changes)
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=fields)
        writer.writeheader()
        writer.writerows(rows)
    return index + 2


def test_reader_returns_every_row_of_a_split(tiny_root: Path) -> None:
    samples = SyntheticReader(tiny_root).samples("test_iid")
    assert len(samples) == 140
    s = samples[0]
    assert s.image.is_file() and s.split == "test_iid"
    assert 0 <= s.labels[0] < len(EMOTIONS) and s.confounder is not None
    assert s.person.width > 0 and s.face is not None


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"image": "images/train/missing.png"}, "not found"),
        ({"person_x2": "500"}, "outside the 64x64 image"),
        ({"face_x2": "0", "face_x1": "5"}, "non-positive size"),
        ({"emotion": "joy"}, "unknown emotion 'joy'"),
        ({"person_y1": "ten"}, "must be an integer"),
        ({"scene": "99"}, "scene id 99"),
    ],
)
def test_reader_rejects_a_bad_row_naming_file_and_row(
    tiny_copy: Path, changes: dict[str, str], message: str
) -> None:
    row = _edit_row(tiny_copy, 3, **changes)
    with pytest.raises(DataError, match=message) as err:
        SyntheticReader(tiny_copy).samples("train")
    text = str(err.value)
    assert f"annotations.csv: row {row}" in text and "\n" not in text


def test_reader_rejects_a_missing_column_and_a_missing_file(tiny_copy: Path) -> None:
    path = tiny_copy / "annotations.csv"
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0].replace(",emotion", ",feeling"), *lines[1:]]))
    with pytest.raises(DataError, match="missing column"):
        SyntheticReader(tiny_copy).samples("train")
    path.unlink()
    with pytest.raises(DataError, match="annotation file not found"):
        SyntheticReader(tiny_copy).samples("train")


def test_reader_rejects_an_unknown_split(tiny_root: Path) -> None:
    with pytest.raises(DataError, match="unknown split 'tset'"):
        SyntheticReader(tiny_root).samples("tset")


def test_a_truncated_image_fails_with_its_name(tiny_copy: Path) -> None:
    sample = SyntheticReader(tiny_copy).samples("val")[0]
    data = sample.image.read_bytes()
    sample.image.write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=f"{sample.image.name}: cannot decode image"):
        make_views(sample, {"body": 16})


def _sample(tmp_path: Path) -> Sample:
    img = np.full((40, 60, 3), 200, np.uint8)
    img[10:30, 20:30] = (255, 0, 0)  # the "person"
    path = tmp_path / "x.png"
    Image.fromarray(img).save(path)
    return Sample(path, Box(20, 10, 30, 30), Box(22, 10, 28, 16), (3,), None, "test")


def test_mask_box_hides_exactly_the_box(tmp_path: Path) -> None:
    sample = _sample(tmp_path)
    image = Image.open(sample.image).convert("RGB")
    zeros = np.asarray(mask_box(image, sample.person, "zeros"))
    assert (zeros[10:30, 20:30] == 0).all() and (zeros[:10] == 200).all()
    mean = np.asarray(mask_box(image, sample.person, "mean"))
    expected = np.asarray(image).reshape(-1, 3).mean(0).astype(int)
    assert (mean[20, 25] == expected).all()
    blur = np.asarray(mask_box(image, sample.person, "blur"))
    assert 0 < blur[20, 25, 1] < 200 and (blur[:10] == 200).all()
    with pytest.raises(DataError, match="unknown mask fill"):
        mask_box(image, sample.person, "noise")  # type: ignore[arg-type]


def test_views_have_the_asked_sizes_and_content(tmp_path: Path) -> None:
    sample = _sample(tmp_path)
    views = make_views(sample, {"body": 8, "face": 4, "context": 16, "whole": 16})
    assert {k: tuple(v.shape) for k, v in views.items()} == {
        "body": (3, 8, 8),
        "face": (3, 4, 4),
        "context": (3, 16, 16),
        "whole": (3, 16, 16),
    }
    assert all(v.dtype == torch.uint8 for v in views.values())
    assert (views["body"][0] == 255).all() and (views["body"][1] == 0).all()  # all red person
    assert views["context"][0].min() == 0 and views["whole"][0].min() > 0
    no_face = Sample(sample.image, sample.person, None, (0,))
    with pytest.raises(DataError, match="no face box"):
        make_views(no_face, {"face": 4})
    with pytest.raises(DataError, match="unknown view"):
        make_views(sample, {"torso": 4})


def test_view_dataset_caches_decoded_views(tiny_root: Path) -> None:
    samples = SyntheticReader(tiny_root).samples("val")[:4]
    ds = ViewDataset(samples, INFO, {"body": 16, "whole": 16}, cache=MemoryViews())
    views, y, z = ds[2]
    assert y.item() == samples[2].labels[0]
    assert z.item() == -1  # the synthetic scene is hidden: it never reaches a batch
    again = ds[2][0]
    assert again["body"] is views["body"]  # served from the cache
    plain = ViewDataset(samples, INFO, {"body": 16, "whole": 16})
    assert torch.equal(plain[2][0]["whole"], views["whole"])

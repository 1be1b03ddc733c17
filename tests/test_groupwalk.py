"""GroupWalk: the manifest read back, bad rows refused in one line, mAP as the headline metric."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import one_epoch_overrides
from formats import write_groupwalk

from deconfound.config import load_config
from deconfound.data.groupwalk import CLASSES, GroupWalkReader
from deconfound.data.sample import Box
from deconfound.engine import evaluate, load_module, train
from deconfound.errors import DataError


def rows() -> list[dict]:
    out = []
    for i in range(24):
        split = ("train", "train", "val", "test")[i % 4]
        out.append(
            {
                "frame": f"frames/v{i // 4}/{i % 3:03d}.jpg",
                "video": f"v{i // 4}",
                "person": i % 2,
                "x1": 4 + i % 3, "y1": 6, "x2": 30 + i, "y2": 60,
                "emotion": CLASSES[i % 4] if i % 5 else CLASSES[i % 4].lower(),
                "split": split,
            }
        )  # fmt: skip
    return out


@pytest.fixture(scope="module")
def groupwalk_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("groupwalk")
    write_groupwalk(root, rows())
    return root


def test_manifest_reads_back_exactly(groupwalk_root: Path) -> None:
    reader = GroupWalkReader(groupwalk_root)
    assert reader.info.metric == "mAP"
    for split in ("train", "val", "test"):
        expected = [r for r in rows() if r["split"] == split]
        got = reader.samples(split)
        assert [(s.image, s.person, s.labels, s.split) for s in got] == [
            (
                groupwalk_root / r["frame"],
                Box(r["x1"], r["y1"], r["x2"], r["y2"]),
                (CLASSES.index(r["emotion"].capitalize()),),
                split,
            )
            for r in expected
        ]


@pytest.mark.parametrize(
    ("edit", "expected"),
    [
        ({"emotion": "Bored"}, r"annotations.csv: row 2: unknown emotion 'Bored'"),
        ({"x2": 500}, r"annotations.csv: row 2: person box .* lies outside the 96x64 image"),
        ({"x1": 40, "x2": 30}, r"annotations.csv: row 2: person box .* has non-positive size"),
        ({"frame": "frames/missing.jpg"}, r"annotations.csv: row 2: image .*missing.jpg not found"),
        ({"y1": "six"}, r"row 2: column 'y1' must be an integer"),
    ],
)
def test_bad_rows_are_one_line(tmp_path: Path, edit: dict, expected: str) -> None:
    bad = rows()
    write_groupwalk(tmp_path, bad)
    bad[0] |= edit
    write_groupwalk(tmp_path, bad)
    (tmp_path / "frames/missing.jpg").unlink(missing_ok=True)
    with pytest.raises(DataError, match=expected) as e:
        GroupWalkReader(tmp_path).samples("train")
    assert "\n" not in str(e.value)
    reader = GroupWalkReader(tmp_path, skip_bad=True)
    assert len(reader.samples("train")) == 11 and len(reader.problems.messages) == 1


def test_the_groupwalk_config_trains_with_map(groupwalk_root: Path, tmp_path: Path) -> None:
    overrides = one_epoch_overrides(groupwalk_root, tmp_path, "{body: 32, whole: 32}")
    cfg = load_config("groupwalk", overrides)
    result = train(cfg)
    assert 0 <= result.best_score <= 1
    metrics = evaluate(load_module(result.best_checkpoint), ["test"])["test"]
    assert {"accuracy", "mAP"} <= set(metrics)

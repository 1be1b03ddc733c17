"""``deconfound data check``: a summary table for a sound copy; for a damaged one, every problem
on its own line naming the file, and a non-zero exit status."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
from formats import write_emotic_mat, write_groupwalk
from test_emotic import records
from test_groupwalk import rows

from deconfound.cli import main


def test_a_sound_copy_gets_a_table_and_status_0(tmp_path: Path, capsys) -> None:
    write_emotic_mat(tmp_path, records())
    assert main(["data", "check", str(tmp_path), "--dataset", "emotic"]) == 0
    out = capsys.readouterr().out
    lines = out.splitlines()
    assert lines[1].split() == ["train", "val", "test"]
    assert lines[2].split() == ["samples", "3", "2", "2"]
    happiness = next(line for line in lines if line.startswith("Happiness"))
    assert happiness.split() == ["Happiness", "1", "33.3%", "0", "0.0%", "0", "0.0%"]
    assert "people left out for lack of labels: {'train': 1, 'val': 1, 'test': 1}" in out
    assert "no problems found" in out


def test_every_problem_is_listed_and_the_status_is_1(tmp_path: Path, capsys) -> None:
    bad = rows()
    bad[0]["emotion"] = "Bored"  # an unknown label
    bad[4]["x2"] = 500  # a box outside its frame
    write_groupwalk(tmp_path, bad)
    with (tmp_path / "annotations.csv").open() as f:
        kept = [r for r in csv.DictReader(f) if r["split"] != "val"]  # a missing split
    write_groupwalk(tmp_path, kept)
    truncated = tmp_path / bad[1]["frame"]  # its header reads, its pixels do not
    truncated.write_bytes(truncated.read_bytes()[: truncated.stat().st_size // 2])
    assert main(["data", "check", str(tmp_path), "--dataset", "groupwalk"]) == 1
    captured = capsys.readouterr()
    problems = captured.err.splitlines()
    assert problems[0] == "4 problem(s):"
    text = "\n".join(problems)
    assert "row 2: unknown emotion 'Bored'" in text
    assert "row 5: person box (5, 6, 500, 60) lies outside the 96x64 image" in text
    assert f"{truncated}: cannot decode image" in text
    assert "split 'val': " in text and "no rows for split 'val'" in text
    assert "samples" in captured.out  # the table of the readable splits is still printed


def test_unknown_dataset_and_missing_root_are_one_line(tmp_path: Path, capsys) -> None:
    assert main(["data", "check", str(tmp_path), "--dataset", "imagenet"]) == 2
    assert "unknown dataset 'imagenet'" in capsys.readouterr().err
    assert main(["data", "check", str(tmp_path / "nope"), "--dataset", "emotic"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "nope: not found" in err


@pytest.mark.parametrize("reader_args", [["--arg", "val_fraction=2"], ["--arg", "colour=red"]])
def test_reader_options_are_checked(tmp_path: Path, capsys, reader_args: list[str]) -> None:
    (tmp_path / "train").mkdir()
    assert main(["data", "check", str(tmp_path), "--dataset", "caer_s", *reader_args]) == 2
    err = capsys.readouterr().err
    assert "val_fraction" in err and err.count("\n") == 1


def test_sidecar_files_are_checked_on_request(tiny_copy: Path, capsys) -> None:
    argv = ["data", "check", str(tiny_copy), "--dataset", "synthetic", "--split", "val"]
    sidecars = ["--sidecar", "pose", "--sidecar", "depth", "--sidecar", "objects"]
    assert main([*argv, *sidecars]) == 0
    (tiny_copy / "pose/images/val/00003_keypoints.json").unlink()
    (tiny_copy / "depth/images/val/00004.png").write_bytes(b"not a png")
    (tiny_copy / "objects/images/val/00005.json").write_text('{"boxes": [[1, 2]]}')
    capsys.readouterr()
    assert main([*argv, *sidecars]) == 1
    err = capsys.readouterr().err
    assert "3 problem(s)" in err
    assert "00003_keypoints.json: pose file" in err and "not found" in err
    assert "00004.png: cannot read the depth map" in err
    assert "00005.json: box 0 is not four numbers" in err
    assert main([*argv, "--sidecar", "objects"]) == 1  # only the kinds asked for
    assert "1 problem(s)" in capsys.readouterr().err
    assert main([*argv, *sidecars, "--keypoints", "18"]) == 1  # BODY_25 files read as COCO
    assert "expected 54 (18 keypoints)" in capsys.readouterr().err

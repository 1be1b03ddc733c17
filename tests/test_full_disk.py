"""A full file system under each writer: one line naming the path, and nothing half-written.

The disk is a small tmpfs mounted for the test (root can mount one; elsewhere these tests are
skipped, since no portable way fills a real file system without filling the machine's)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_bad_inputs import fails, fast

from deconfound.io import DiskFullError, atomic_write


def _mount(folder: Path, size: str) -> bool:
    folder.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(folder)],
        capture_output=True,
        check=False,
    )
    return done.returncode == 0


@pytest.fixture
def small_disk(
    tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    """A tmpfs of ``request.param`` (default 600 kB) at ``tmp_path/disk``; the test runs in
    ``tmp_path``."""
    monkeypatch.chdir(tmp_path)
    disk = tmp_path / "disk"
    if not _mount(disk, getattr(request, "param", "600k")):
        pytest.skip("cannot mount a tmpfs here (needs root)")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], check=False)


def _left(disk: Path) -> list[str]:
    """Files a failed writer left on the disk: temporaries, partial sets, any checkpoint."""
    return sorted(
        str(p.relative_to(disk))
        for p in disk.rglob("*")
        if p.is_file() and (p.name.endswith((".tmp", ".ckpt")) or ".partial" in str(p))
    )


def test_atomic_write_on_a_full_disk_is_one_line_and_leaves_nothing(small_disk: Path) -> None:
    target = small_disk / "report" / "big.bin"
    with pytest.raises(DiskFullError) as caught:
        atomic_write(target, lambda tmp: tmp.write_bytes(b"x" * 2_000_000))
    message = str(caught.value)
    assert "\n" not in message and str(target) in message and "free there" in message
    assert not target.exists() and list(target.parent.iterdir()) == []


def test_synth_on_a_full_disk_names_the_set_and_leaves_no_partial_set(
    small_disk: Path, capsys: pytest.CaptureFixture
) -> None:
    out = small_disk / "set"
    fails(capsys, ["synth", "--out", str(out), "--size", "train=400"], str(out), "no space left")
    assert list(small_disk.iterdir()) == []


def test_view_cache_that_cannot_fit_says_how_much_it_needs(
    small_disk: Path,
    tiny_copy: Path,
    capsys: pytest.CaptureFixture,
) -> None:
    argv = ["train", "--config", "emotnet_synthetic", *fast(tiny_copy), "dictionary.weights=null"]
    lines = fails(capsys, [*argv, f"data.cache_dir={small_disk}"], "the view cache needs")
    assert "data.cache_dir" in lines[0] and str(small_disk) in lines[0]
    views = [p for p in small_disk.rglob("*") if p.is_file()]
    assert not [p for p in views if p.name in ("views.bin", "done.bin")], views


@pytest.mark.parametrize("small_disk", ["160k"], indirect=True)
def test_checkpoint_on_a_full_disk_is_one_line_and_leaves_no_partial_checkpoint(
    small_disk: Path,
    tiny_copy: Path,
    capsys: pytest.CaptureFixture,
) -> None:
    argv = ["train", "--config", "emotnet_synthetic", *fast(tiny_copy), "data.cache=memory"]
    argv += ["dictionary.weights=null", f"out_dir={small_disk}"]
    lines = fails(capsys, argv, "no space left on the device")
    assert ".ckpt" in lines[0] and str(small_disk) in lines[0]
    assert _left(small_disk) == []


@pytest.mark.parametrize("small_disk", ["64k"], indirect=True)
def test_dictionary_on_a_full_disk_is_one_line_and_leaves_nothing_partial(
    small_disk: Path,
    tiny_copy: Path,
    capsys: pytest.CaptureFixture,
) -> None:
    argv = ["dictionary", "build", "--config", "emotnet_synthetic", f"data.root={tiny_copy}"]
    argv += ["dictionary.weights=null", "dictionary.image_size=32", "dictionary.num_clusters=4"]
    argv += ["data.cache=memory", f"model.dictionary={small_disk / 'd.safetensors'}"]
    lines = fails(capsys, argv, "no space left on the device")
    assert str(small_disk) in lines[0]
    assert _left(small_disk) == [] and not (small_disk / "d.safetensors").exists()

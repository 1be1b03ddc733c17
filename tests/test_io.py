"""Atomic writes: complete or absent, never half written, with the usual file mode."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from deconfound.io import atomic_write, atomic_write_text


def test_atomic_write_keeps_the_old_file_when_writing_fails(tmp_path: Path) -> None:
    path = atomic_write_text(tmp_path / "a" / "f.txt", "old")
    mask = os.umask(0o022)
    try:
        atomic_write_text(path, "new")
    finally:
        os.umask(mask)
    assert path.read_text() == "new" and path.stat().st_mode & 0o777 == 0o644

    def half(tmp: Path) -> None:
        tmp.write_text("half")
        raise OSError("disk full")

    with pytest.raises(OSError, match="disk full"):
        atomic_write(path, half)
    assert path.read_text() == "new" and [p.name for p in path.parent.iterdir()] == ["f.txt"]

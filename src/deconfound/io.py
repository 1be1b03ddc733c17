"""Atomic writes (an artifact is either complete on disk or absent, never half written), and
reading a generated set's metadata."""

from __future__ import annotations

import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path

from deconfound.errors import ConfigError, DataError


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it into place."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual mode
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)
    return path


def check_writable(path: str | Path, what: str) -> Path:
    """``path``, after making sure that it can be written: the nearest part of it that exists
    must be a folder (or, for ``path`` itself, a file) in which a file can be created. A
    command calls this for each of its outputs before it starts working, so that a read-only
    or impossible output location stops it at once, not after the work, in one line naming
    ``what`` (the option, e.g. ``--out``) and the reason. Nothing is left behind."""
    path = Path(path)
    existing = path
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    folder = existing if existing.is_dir() else existing.parent
    if existing != path and not existing.is_dir():
        raise ConfigError(
            f"{what} {path}: {existing} is a file, not a folder; choose another place"
        )
    try:  # a probe file, removed at once: the only test that holds for root and read-only mounts
        fd, probe = tempfile.mkstemp(prefix=".deconfound-probe-", dir=folder)
        os.close(fd)
        os.unlink(probe)
    except OSError as e:
        raise ConfigError(
            f"{what} {path}: cannot write in {folder} ({e.strerror or e}); choose another place "
            "or make it writable"
        ) from None
    return path


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def read_meta(path: str | Path) -> dict:
    """The JSON object in ``path`` (a generated set's ``meta.json``); an unreadable one is a
    one-line DataError."""
    try:
        meta = json.loads(Path(path).read_text())
    except (OSError, ValueError) as e:
        raise DataError(f"{path} is unreadable ({e}); use another root or delete it") from None
    return meta


def atomic_write_text(path: str | Path, text: str) -> Path:
    """Write ``text`` to ``path`` atomically."""
    return atomic_write(path, lambda tmp: tmp.write_text(text))

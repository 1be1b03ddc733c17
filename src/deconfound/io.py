"""Atomic writes (an artifact is either complete on disk or absent, never half written), a
full disk said in one line, and reading a generated set's metadata."""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from deconfound.errors import ConfigError, DataError, DeconfoundError


class DiskFullError(DeconfoundError):
    """A file system ran out of space (or quota) while deconfound wrote to it."""


def atomic_write(path: str | Path, write: Callable[[Path], None]) -> Path:
    """Call ``write(tmp)`` on a temporary file beside ``path``, then rename it into place.

    Whatever stops the write leaves nothing behind; a full disk is a :class:`DiskFullError`
    naming ``path``."""
    path = Path(path)
    tmp: Path | None = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
        tmp = Path(tmp_name)
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600 files; give the usual mode
        os.replace(tmp, path)
    except Exception as e:
        if no_space(e, path.parent):  # (asked while the partial file still takes its space)
            raise disk_full(path) from None
        raise
    finally:
        if tmp is not None:
            tmp.unlink(missing_ok=True)
    return path


@contextmanager
def staged_folder(root: str | Path) -> Iterator[Path]:
    """A folder written whole or not at all: the block writes into ``<root>.partial``, which is
    renamed to ``root`` when the block ends and removed when anything stops it (a full disk
    is then a :class:`DiskFullError` naming ``root``)."""
    root = Path(root)
    tmp = root.with_name(root.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        yield tmp
    except BaseException as e:
        full = isinstance(e, Exception) and no_space(e, tmp)
        shutil.rmtree(tmp, ignore_errors=True)
        if full:
            raise disk_full(root) from None
        raise
    root.parent.mkdir(parents=True, exist_ok=True)
    if root.exists():
        root.rmdir()
    tmp.rename(root)


_NO_SPACE = (errno.ENOSPC, errno.EDQUOT)
LOW_SPACE = 1 << 20
"""Bytes free under which a failed write is put down to a full disk: torch's writer, for one,
reports ENOSPC as a RuntimeError without an errno ("iostream error", "unexpected pos")."""


def no_space(error: BaseException, where: str | Path) -> bool:
    """Whether ``error``, raised while writing under ``where``, comes from a full file system:
    it (or an error it was raised from) says so, or next to nothing is left free there."""
    seen: BaseException | None = error
    for _ in range(16):  # (a chain of causes; bounded, since one can loop)
        if isinstance(seen, OSError) and seen.errno in _NO_SPACE:
            return True
        seen = seen and (seen.__cause__ or seen.__context__)
    try:
        return free_space(where) < LOW_SPACE
    except OSError:
        return False


def disk_full(path: str | Path) -> DiskFullError:
    """The one-line error for a full file system under ``path``: how much is free there, and
    what to do."""
    return DiskFullError(
        f"{path}: no space left on the device ({human_bytes(free_space(path))} free there); "
        "free some space or write to another file system"
    )


def free_space(path: str | Path) -> int:
    """Bytes free for this user on the file system of ``path`` (or of its nearest existing
    folder)."""
    return shutil.disk_usage(nearest_existing(Path(path).absolute())).free


def nearest_existing(path: Path) -> Path:
    """``path`` itself if it exists, else its nearest existing parent."""
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def human_bytes(n: float) -> str:
    """``n`` bytes for a person: 512 B, 3.4 MB, 29.1 GB."""
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if abs(n) < 1000 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000
    raise AssertionError  # (unreachable)


def check_writable(path: str | Path, what: str) -> Path:
    """``path``, after making sure that it can be written: the nearest part of it that exists
    must be a folder (or, for ``path`` itself, a file) in which a file can be created. A
    command calls this for each of its outputs before it starts working, so that a read-only
    or impossible output location stops it at once, not after the work, in one line naming
    ``what`` (the option, e.g. ``--out``) and the reason. Nothing is left behind."""
    path = Path(path)
    existing = nearest_existing(path)
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

"""A training run's hold on its folder: one run at a time (a lock), nothing left of a run that
failed before it saved anything, and signals (SIGTERM, Ctrl-C) turned into one line that says
what was kept."""

from __future__ import annotations

import fcntl
import functools
import os
import shutil
import signal
import socket
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from lightning.pytorch.utilities.exceptions import SIGTERMException

from deconfound.distributed import global_rank
from deconfound.errors import DeconfoundError, Stopped
from deconfound.io import check_writable

F = TypeVar("F", bound=Callable[..., Any])

LOCK = ".lock"
"""The lock file of a run folder while a run trains in it (removed when it ends); it holds the
process id and host of that run."""


def holds_run_folder(train: F) -> F:
    """``train(cfg, ...)`` inside :func:`run_folder` of ``cfg.run_dir``, once this machine is
    known to have the hardware ``cfg.trainer`` asks for (before anything is read or made)."""

    @functools.wraps(train)
    def wrapper(cfg: Any, *args: Any, **kwargs: Any) -> Any:
        from deconfound.engine.run import check_hardware  # (run.py imports this module)

        check_hardware(cfg.trainer)
        with run_folder(Path(cfg.run_dir)):
            return train(cfg, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


@contextmanager
def run_folder(run_dir: Path) -> Iterator[None]:
    """Hold ``run_dir`` while a training run works in it.

    - It is created (with its missing parents) and locked (``<run_dir>/.lock``, ``flock``): a
      second run into the same folder while one trains there is refused in one line naming
      the folder and the other process, instead of both mixing their files.
    - A run that fails or is stopped before it saved a checkpoint (``last.ckpt``: bad data found
      on the first decoded image, a refused option, Ctrl-C in the first epoch) removes the
      folders it created: no half-made run folder is left.
    - SIGTERM (Lightning stops at the end of the batch) and Ctrl-C become :class:`Stopped`,
      whose message says whether ``last.ckpt`` (the last finished epoch, from which the same
      command resumes exactly) was kept.

    With several processes only process 0 creates, locks and cleans up (it alone writes).
    """
    last = run_dir / "checkpoints" / "last.ckpt"
    if global_rank() != 0:
        with _stopped(last):
            yield
        return
    check_writable(run_dir, "the run folder (out_dir/name)")
    created = _make_folders(run_dir)
    lock = _lock(run_dir)
    try:
        with _stopped(last):
            yield
    except BaseException:
        if created and not last.is_file():
            _remove(created)
        raise
    finally:
        _unlock(lock, run_dir / LOCK)


def _make_folders(run_dir: Path) -> list[Path]:
    """Create ``run_dir`` and its missing parents; the ones this process created, outermost
    first (a folder another process made at the same moment is not among them)."""
    missing = []
    folder = run_dir
    while not folder.exists() and folder != folder.parent:
        missing.append(folder)
        folder = folder.parent
    created = []
    for folder in reversed(missing):
        try:
            folder.mkdir()
        except FileExistsError:
            continue
        created.append(folder)
    if not run_dir.is_dir():
        raise DeconfoundError(f"the run folder {run_dir} is a file; give out_dir or name another")
    return created


def _remove(created: list[Path]) -> None:
    """Remove the folders of ``created`` (outermost first) that this run made: the run folder
    with its contents, its parents if they are empty."""
    innermost, *parents = reversed(created)
    shutil.rmtree(innermost, ignore_errors=True)
    for folder in parents:
        try:
            folder.rmdir()
        except OSError:  # something else is in it now
            return


def _lock(run_dir: Path) -> int:
    """An open file descriptor holding the exclusive lock of ``run_dir``; a DeconfoundError
    naming the process that holds it."""
    path = run_dir / LOCK
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(fd, 200, 0).decode(errors="replace").strip() or "another process"
            os.close(fd)
            raise DeconfoundError(
                f"{run_dir} is in use by another training run ({holder}); wait for it to end, "
                "or give this run another name"
            ) from None
        try:  # the file a finished run removed after this one opened it is not the lock
            if os.stat(path).st_ino == os.fstat(fd).st_ino:
                break
        except FileNotFoundError:
            pass
        os.close(fd)
    os.ftruncate(fd, 0)
    os.write(fd, f"process {os.getpid()} on {socket.gethostname()}\n".encode())
    return fd


def _unlock(fd: int, path: Path) -> None:
    path.unlink(missing_ok=True)  # before the lock is released: see _lock
    os.close(fd)


@contextmanager
def _stopped(last: Path) -> Iterator[None]:
    """Turn what stops a run from outside into :class:`Stopped`, saying what was kept."""
    try:
        yield
    except SIGTERMException:  # Lightning's, raised at the end of a batch after SIGTERM
        raise Stopped(f"terminated (SIGTERM); {_kept(last)}", 143) from None
    except SystemExit as e:
        if not isinstance(e.__context__, KeyboardInterrupt):
            raise
        # Lightning turns Ctrl-C into exit status 1, ignoring further Ctrl-C: undo that
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGINT, signal.default_int_handler)
        raise Stopped(f"interrupted; {_kept(last)}", 130) from None
    except KeyboardInterrupt:
        raise Stopped(f"interrupted; {_kept(last)}", 130) from None
    except Stopped as e:
        raise Stopped(f"{e}; {_kept(last)}", e.status) from None


def _kept(last: Path) -> str:
    if last.is_file():
        return f"{last} holds the last finished epoch: run the same command again to resume"
    return "no epoch had finished, so nothing was kept"

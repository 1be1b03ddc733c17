"""Decoded views kept between epochs: in memory (per process) or on disk (memory-mapped, shared).

:class:`DiskViews` holds the views of every sample of one split, uint8 pictures (and the float
tables of the pose and objects views) exactly as :func:`deconfound.data.views.make_views` cuts
them, in one file of fixed-size records, ``views.bin``, memory-mapped read-only by every
process that uses it: the DataLoader's workers, the ranks of a distributed run and every later
run with the same settings (a sweep's seeds decode nothing). The operating system's page cache
holds it once for all of them.

A cache folder, ``<cache_dir>/<split>-<settings>/``, is named after the split, the view sizes
and the mask fill; its ``manifest.json`` records the samples it was built from (their image
names, boxes and labels, and the size and modification time of every file a view reads). Built
in parallel, in chunks: ``done.bin`` marks each chunk written, so a killed build resumes where
it stopped, and the manifest says ``complete`` only once every chunk is. A cache whose samples
or files changed, or whose ``views.bin`` does not have the size its manifest says (truncated),
is rebuilt, never used; a build stopped by bad data (a corrupt image) leaves nothing behind.
Processes building the same cache at once take turns (``flock`` on its folder): one builds,
the others then read.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import json
import logging
import multiprocessing
import os
from collections.abc import Iterator, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import torch
from tqdm import tqdm

from deconfound.data import sidecars
from deconfound.data.sample import ArrayImage, ImageRef, Sample
from deconfound.data.views import Fill, make_views
from deconfound.errors import ConfigError, DataError
from deconfound.io import DiskFullError, atomic_write_text, free_space, human_bytes

log = logging.getLogger(__name__)

FORMAT = "deconfound-views/1"
CHUNK = 256
"""Samples per chunk of a build: the unit of parallel work and of resuming."""
SIDECAR_VIEWS = ("pose", "depth", "objects", "mask")
"""Views read from sidecar files (whose size and time the manifest also records)."""

Views = dict[str, torch.Tensor]


class ViewStore(Protocol):
    """Where a :class:`~deconfound.data.datamodule.ViewDataset` keeps decoded views."""

    def get(self, i: int) -> Views | None: ...

    def put(self, i: int, views: Views) -> None: ...


class MemoryViews:
    """Views kept in this process's memory once decoded (each DataLoader worker keeps its own)."""

    def __init__(self) -> None:
        self._views: dict[int, Views] = {}

    def get(self, i: int) -> Views | None:
        return self._views.get(i)

    def put(self, i: int, views: Views) -> None:
        self._views[i] = views


class DiskViews:
    """The views of a split, read from a complete cache folder (see the module docstring);
    :meth:`open` builds or completes it first."""

    def __init__(self, folder: Path) -> None:
        manifest = _read_manifest(folder)
        if manifest is None or not manifest.get("complete"):
            raise DataError(f"{folder}: not a complete view cache; build it with DiskViews.open")
        self.folder, self.n = folder, manifest["n"]
        self.record = manifest["record_bytes"]
        self.layout: list[dict[str, Any]] = manifest["layout"]
        self._array: np.memmap | None = None  # opened in the process that reads (after fork)

    @classmethod
    def open(
        cls,
        cache_dir: str | Path,
        split: str,
        samples: Sequence[Sample],
        sizes: Mapping[str, int],
        fill: Fill = "zeros",
        root: str | Path | None = None,
        *,
        workers: int | None = None,
        chunk: int = CHUNK,
        progress: bool = False,
    ) -> DiskViews:
        """The cache of ``split`` under ``cache_dir``, built (with ``workers`` processes: by
        default one per CPU this process may use, each decoding ``chunk`` samples at a time)
        or completed if it is missing, stale, damaged or unfinished."""
        sizes = dict(sorted(sizes.items()))
        settings = {"format": FORMAT, "sizes": sizes, "fill": fill}
        tag = hashlib.sha256(json.dumps(settings).encode()).hexdigest()[:12]
        folder = Path(cache_dir) / f"{split}-{tag}"
        key = samples_key(samples, sizes, root)
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise ConfigError(
                f"{folder}: cannot write the view cache ({e.strerror or e}); set data.cache_dir "
                "to a writable folder, or data.cache to memory"
            ) from None
        with _locked(folder):
            if not _usable(folder, key):
                job = _Job(folder / "views.bin", samples, sizes, fill, root, chunk)
                try:
                    _build(folder, key, settings, job, workers, progress)
                except Exception:  # bad data: the fixed file changes the key, so drop it all
                    for name in ("manifest.json", "done.bin", "views.bin"):
                        (folder / name).unlink(missing_ok=True)
                    raise  # (a kill or Ctrl-C keeps the finished chunks, to resume)
        return cls(folder)

    def __len__(self) -> int:
        return self.n

    def get(self, i: int) -> Views:
        if self._array is None:
            self._array = np.memmap(
                self.folder / "views.bin", np.uint8, "r", shape=(self.n, self.record)
            )
        row = self._array[i]
        return {
            part["view"]: torch.from_numpy(
                row[part["offset"] : part["offset"] + part["nbytes"]]
                .view(part["dtype"])
                .reshape(part["shape"])
                .copy()
            )
            for part in self.layout
        }

    def put(self, i: int, views: Views) -> None:
        raise TypeError("a DiskViews cache is read-only once built")

    def __getstate__(self) -> dict[str, Any]:  # workers open their own memory map
        return {**self.__dict__, "_array": None}


def samples_key(
    samples: Sequence[Sample], sizes: Mapping[str, int], root: str | Path | None
) -> str:
    """A hash of what the views of ``samples`` are cut from: each sample's image name and
    boxes, and the size and modification time of its image (and body image, and the
    sidecar files of the sidecar views in ``sizes``)."""
    h = hashlib.sha256()
    base = Path(root) if root is not None else None
    kinds = [v for v in SIDECAR_VIEWS if v in sizes]
    kinds = ["masks" if v == "mask" else v for v in kinds]
    for s in samples:
        files = [_file_of(s.image)] + ([_file_of(s.body_image)] if s.body_image else [])
        for kind in kinds:
            try:
                files.append(sidecars.locate(kind, s.image, base))
            except DataError:
                files.append(None)
        record = [
            str(s.image),
            [_box(b) for b in (s.person, s.face, s.hidden)],
            [_stamp(f) for f in files],
        ]
        h.update(json.dumps(record).encode())
    return f"{len(samples)}:{h.hexdigest()[:32]}"


def _file_of(image: ImageRef) -> Path:
    return image.path if isinstance(image, ArrayImage) else Path(image)


def _box(box: Any) -> list[float] | None:
    return list(box.as_tuple()) if box is not None else None


def _stamp(path: Path | None) -> list[int] | None:
    if path is None:
        return None
    try:
        st = path.stat()
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def _read_manifest(folder: Path) -> dict[str, Any] | None:
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) and manifest.get("format") == FORMAT else None


def _usable(folder: Path, key: str) -> bool:
    """Whether ``folder`` holds a complete cache of the samples ``key`` names, of full size."""
    manifest = _read_manifest(folder)
    if manifest is None or manifest.get("key") != key or not manifest.get("complete"):
        return False
    size = manifest["n"] * manifest["record_bytes"]
    ok = _size(folder / "views.bin") == size
    if not ok:
        log.warning("view cache %s is damaged (views.bin not %d bytes): rebuilding", folder, size)
    return ok


@contextmanager
def _locked(folder: Path) -> Iterator[None]:
    """Hold the exclusive lock of ``folder`` itself (no lock file is left behind)."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)  # blocks while another process builds
        yield
    finally:
        os.close(fd)


def _build(
    folder: Path, key: str, settings: dict[str, Any], job: _Job, workers: int | None, progress: bool
) -> None:
    n, data, done_path = len(job.samples), job.data, folder / "done.bin"
    if n == 0:
        raise DataError(f"{folder}: no samples to cache")
    manifest = _read_manifest(folder)
    chunks = -(-n // job.chunk)
    resume = (
        manifest is not None
        and manifest.get("key") == key
        and manifest.get("chunk") == job.chunk
        and manifest.get("boot") == _boot_id()
        and _size(data) == manifest["n"] * manifest["record_bytes"]
        and _size(done_path) == chunks
    )
    if resume:
        job.layout, job.record = manifest["layout"], manifest["record_bytes"]  # type: ignore[index]
    else:
        job.layout, job.record = _layout(job.decode(0))
        for path in (data, done_path, folder / "manifest.json"):
            path.unlink(missing_ok=True)
        data.touch()
        done_path.touch()
        manifest = {
            **settings,
            "key": key,
            "n": n,
            "chunk": job.chunk,
            "boot": _boot_id(),
            "record_bytes": job.record,
            "layout": job.layout,
        }
        atomic_write_text(folder / "manifest.json", json.dumps({**manifest, "complete": False}))
    _reserve(folder, {data: n * job.record, done_path: chunks})
    done = np.memmap(done_path, np.uint8, "r+", shape=(chunks,))
    todo = [c for c in range(chunks) if not done[c]]
    if todo:
        log.info("view cache %s: decoding %d of %d chunks", folder, len(todo), chunks)
    count = min(workers or len(os.sched_getaffinity(0)), len(todo))
    bar = tqdm(total=len(todo), desc=f"caching {folder.name}", unit="chunk", disable=not progress)
    with bar:
        for c in _map(job, todo, count):
            done[c] = 1  # in the page cache, with the chunk: both outlive a killed process
            bar.update()
    del done
    with data.open("rb+") as f:  # on disk before the manifest says complete
        os.fsync(f.fileno())
    atomic_write_text(folder / "manifest.json", json.dumps({**manifest, "complete": True}))


def _reserve(folder: Path, sizes: dict[Path, int]) -> None:
    """Give each file its size in blocks allocated on disk now: memory-mapped writes into a
    sparse file on a full disk kill the writing process (SIGBUS), so a cache that cannot fit
    stops here, in one line saying how much it needs."""
    need = sum(max(0, size - os.stat(p).st_blocks * 512) for p, size in sizes.items())
    free = free_space(folder)
    full = DiskFullError(
        f"{folder}: the view cache needs {human_bytes(need)} more and {human_bytes(free)} are "
        "free there; set data.cache_dir to a folder with room (or data.cache=memory)"
    )
    if need > free:
        raise full
    for path, size in sizes.items():
        with path.open("r+b") as f:
            try:
                os.posix_fallocate(f.fileno(), 0, size)
            except OSError as e:
                if e.errno in (errno.ENOSPC, errno.EDQUOT):
                    raise full from None
                f.truncate(size)  # a file system that cannot allocate ahead: sparse, as before


def _map(job: _Job, chunks: list[int], workers: int) -> Iterator[int]:
    if workers <= 1:
        yield from map(job, chunks)
        return
    method = "fork" if "fork" in multiprocessing.get_all_start_methods() else "spawn"
    pool = ProcessPoolExecutor(workers, mp_context=multiprocessing.get_context(method))
    try:
        yield from pool.map(job, chunks)
    finally:  # on an error, the chunks not started yet are not decoded in vain
        pool.shutdown(wait=True, cancel_futures=True)


def _boot_id() -> str:
    """This boot of the machine: an unfinished build resumes only within it, since chunks
    still in the page cache (not yet on disk) do not survive a crash of the machine."""
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return ""


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return -1


def _layout(views: Views) -> tuple[list[dict[str, Any]], int]:
    layout, offset = [], 0
    for name, tensor in sorted(views.items()):
        array = tensor.numpy()
        layout.append(
            {
                "view": name,
                "dtype": array.dtype.str,
                "shape": list(array.shape),
                "offset": offset,
                "nbytes": array.nbytes,
            }
        )
        offset += -(-array.nbytes // 8) * 8  # 8-byte aligned, for the float tables
    return layout, offset


class _Job:
    """Decode one chunk of samples into the cache file (in a worker process)."""

    def __init__(
        self,
        data: Path,
        samples: Sequence[Sample],
        sizes: Mapping[str, int],
        fill: Fill,
        root: str | Path | None,
        chunk: int,
    ) -> None:
        self.data, self.chunk = data, chunk
        self.samples, self.sizes, self.fill, self.root = samples, sizes, fill, root
        self.layout: list[dict[str, Any]] = []
        self.record = 0

    def decode(self, i: int) -> Views:
        return make_views(self.samples[i], self.sizes, self.fill, self.root)

    def __call__(self, chunk: int) -> int:
        n = len(self.samples)
        start, stop = chunk * self.chunk, min((chunk + 1) * self.chunk, n)
        array = np.memmap(self.data, np.uint8, "r+", shape=(n, self.record))
        for i in range(start, stop):
            views = self.decode(i)
            row = array[i]
            for part in self.layout:
                value = views[part["view"]].numpy()
                if value.dtype.str != part["dtype"] or list(value.shape) != part["shape"]:
                    raise DataError(
                        f"{self.samples[i].image}: its {part['view']} view is {value.dtype} "
                        f"{list(value.shape)}, the others' {part['dtype']} {part['shape']}"
                    )
                row[part["offset"] : part["offset"] + part["nbytes"]] = value.reshape(-1).view(
                    np.uint8
                )
        return chunk

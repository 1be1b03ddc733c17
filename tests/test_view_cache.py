"""The persistent decoded-view cache: exact content, rebuilt when stale or damaged, shared by
processes, resumed after a kill."""

from __future__ import annotations

import json
import multiprocessing
import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from deconfound.config import load_config
from deconfound.data import DiskViews, EmotionDataModule, make_views
from deconfound.data import view_cache as vc
from deconfound.data.synthetic import SyntheticReader

SIZES = {"body": 16, "whole": 20, "context": 12, "mask": 8, "depth": 8, "pose": 25, "objects": 4}


def _samples(root: Path, n: int = 9) -> list:
    return SyntheticReader(root).samples("train")[:n]


def _fresh(samples: list, root: Path, sizes: dict = SIZES, fill: str = "zeros") -> list[dict]:
    return [make_views(s, sizes, fill, root) for s in samples]  # type: ignore[arg-type]


def _same(cache: DiskViews, fresh: list[dict]) -> bool:
    assert len(cache) == len(fresh)
    for i, views in enumerate(fresh):
        got = cache.get(i)
        assert got.keys() == views.keys()
        for name, value in views.items():
            if got[name].dtype != value.dtype or not torch.equal(got[name], value):
                return False
    return True


def test_cache_holds_the_freshly_decoded_views_bit_for_bit(tiny_copy: Path, tmp_path: Path):
    samples = _samples(tiny_copy)
    cache = DiskViews.open(tmp_path / "c", "train", samples, SIZES, root=tiny_copy, chunk=4)
    assert _same(cache, _fresh(samples, tiny_copy))  # pictures, masks and float tables alike
    assert {p["view"] for p in cache.layout} == set(SIZES)
    again = DiskViews.open(tmp_path / "c", "train", samples, SIZES, root=tiny_copy, chunk=4)
    assert again.folder == cache.folder


def _manifest(cache: DiskViews) -> dict:
    return json.loads((cache.folder / "manifest.json").read_text())


def test_changed_samples_sizes_or_fill_rebuild(tiny_copy: Path, tmp_path: Path, monkeypatch):
    samples = _samples(tiny_copy)
    first = DiskViews.open(tmp_path / "c", "train", samples, SIZES, root=tiny_copy, chunk=4)
    built = []
    real = vc._Job.__call__
    monkeypatch.setattr(vc._Job, "__call__", lambda job, c: built.append(c) or real(job, c))

    def reopen(s=samples, sizes=SIZES, fill="zeros") -> DiskViews:
        built.clear()
        return DiskViews.open(
            tmp_path / "c",
            "train",
            s,
            sizes,
            fill,
            root=tiny_copy,
            chunk=4,
            workers=1,  # type: ignore[arg-type]
        )

    assert reopen().folder == first.folder and built == []  # unchanged: nothing decoded
    fewer = samples[1:]
    cache = reopen(fewer)
    assert (
        built == [0, 1] and cache.folder == first.folder and _same(cache, _fresh(fewer, tiny_copy))
    )
    sizes = {**SIZES, "body": 24}
    cache = reopen(sizes=sizes)
    assert cache.folder != first.folder and _same(cache, _fresh(samples, tiny_copy, sizes))
    cache = reopen(fill="mean")
    assert cache.folder != first.folder
    assert _same(cache, _fresh(samples, tiny_copy, fill="mean"))
    image = Path(samples[3].image)  # a file changed on disk: rebuilt too
    os.utime(image, ns=(image.stat().st_atime_ns, image.stat().st_mtime_ns + 10**9))
    reopen()
    assert built == [0, 1, 2]


def test_truncated_cache_is_detected_and_rebuilt(tiny_copy: Path, tmp_path: Path, caplog):
    samples = _samples(tiny_copy)
    cache = DiskViews.open(tmp_path / "c", "train", samples, SIZES, root=tiny_copy, chunk=4)
    data = cache.folder / "views.bin"
    with data.open("r+b") as f:
        f.truncate(data.stat().st_size // 2)
    again = DiskViews.open(tmp_path / "c", "train", samples, SIZES, root=tiny_copy, chunk=4)
    assert "damaged" in caplog.text
    assert _same(again, _fresh(samples, tiny_copy))
    (cache.folder / "manifest.json").write_text("{not json")  # an unreadable manifest too
    third = DiskViews.open(tmp_path / "c", "train", samples, SIZES, root=tiny_copy, chunk=4)
    assert _manifest(third)["complete"] and _same(third, _fresh(samples, tiny_copy))


def _digests(cache: DiskViews) -> list[str]:
    return [
        "".join(f"{k}:{v.numpy().tobytes().hex()[:64]}{v.sum().item()}" for k, v in views.items())
        for views in (cache.get(i) for i in range(len(cache)))
    ]


def test_two_processes_reading_at_once_see_the_same_tensors(tiny_copy: Path, tmp_path: Path):
    samples = _samples(tiny_copy)
    cache = DiskViews.open(tmp_path / "c", "train", samples, SIZES, root=tiny_copy, chunk=4)
    with multiprocessing.get_context("spawn").Pool(2) as pool:  # fresh processes, own maps
        seen = pool.map(_digests, [cache, cache])
    assert seen[0] == seen[1] == _digests(cache)


def test_the_data_module_serves_cached_views_to_two_workers(tiny_root: Path, tmp_path: Path):
    cfg = load_config(
        "emotnet_synthetic",
        [
            f"data.root={tiny_root}",
            f"data.cache_dir={tmp_path / 'cache'}",
            "data.view_sizes={body: 16, whole: 16}",
            "data.num_workers=2",
            "data.batch_size=8",
        ],
    )
    data = EmotionDataModule(cfg.data, ("body", "whole"))
    dataset = data.dataset("val")
    assert isinstance(dataset.cache, DiskViews)
    assert dataset.cache.folder.parent.parent == tmp_path / "cache"
    batches = list(data.loader("val"))
    got = torch.cat([views["whole"] for views, _, _ in batches])
    fresh = torch.stack([v["whole"] for v in _fresh(dataset.samples, tiny_root, {"whole": 16})])
    assert torch.equal(got, fresh)


KILLER = """
import os, signal, sys
from pathlib import Path
from deconfound.data import DiskViews
from deconfound.data import view_cache as vc
from deconfound.data.synthetic import SyntheticReader
root, out = Path(sys.argv[1]), Path(sys.argv[2])
real = vc._Job.__call__
def call(job, c):
    if c == 2:
        os.kill(os.getpid(), signal.SIGKILL)  # killed in the middle of the build
    return real(job, c)
vc._Job.__call__ = call
samples = SyntheticReader(root).samples("train")[:9]
sizes = {sizes}
DiskViews.open(out, "train", samples, sizes, root=root, chunk=2, workers=1)
"""


def test_a_killed_build_resumes(tiny_copy: Path, tmp_path: Path, monkeypatch):
    script = KILLER.replace("{sizes}", repr(SIZES))
    proc = subprocess.run(
        [sys.executable, "-c", script, str(tiny_copy), str(tmp_path / "c")], check=False
    )
    assert proc.returncode == -signal.SIGKILL
    (folder,) = [p for p in (tmp_path / "c").iterdir() if p.is_dir()]
    assert not json.loads((folder / "manifest.json").read_text())["complete"]
    assert list(np.fromfile(folder / "done.bin", np.uint8)) == [1, 1, 0, 0, 0]
    with pytest.raises(Exception, match="not a complete view cache"):
        DiskViews(folder)
    built = []
    real = vc._Job.__call__
    monkeypatch.setattr(vc._Job, "__call__", lambda job, c: built.append(c) or real(job, c))
    samples = _samples(tiny_copy)
    cache = DiskViews.open(
        tmp_path / "c", "train", samples, SIZES, root=tiny_copy, chunk=2, workers=1
    )
    assert built == [2, 3, 4]  # only what the killed build had not written
    assert _same(cache, _fresh(samples, tiny_copy))


def test_cache_settings_and_an_unwritable_cache_dir(tiny_root: Path, tmp_path: Path) -> None:
    base = [f"data.root={tiny_root}", "data.view_sizes={body: 16, whole: 16}"]
    old = load_config("emotnet_synthetic", [*base, "data.cache=true"])
    assert old.data.cache == "memory"  # configs and checkpoints from before the disk cache
    assert load_config("emotnet_synthetic", [*base, "data.cache=false"]).data.cache == "none"
    with pytest.raises(Exception, match="data.cache .ram.; choose one of disk, memory, none"):
        load_config("emotnet_synthetic", [*base, "data.cache=ram"])
    blocked = tmp_path / "file"
    blocked.write_text("not a folder")
    cfg = load_config("emotnet_synthetic", [*base, f"data.cache_dir={blocked / 'cache'}"])
    with pytest.raises(Exception, match="cannot write the view cache.*data.cache_dir"):
        EmotionDataModule(cfg.data, ("body", "whole")).dataset("val")

"""Resumption: a training process killed mid-epoch (SIGKILL: no chance to clean up) and started
again ends with exactly the weights and metrics of a run with the same seed that was never
interrupted, and leaves no temporary files behind."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import run_overrides

from deconfound.config import load_config
from deconfound.data.datamodule import EpochShuffle
from deconfound.engine import evaluate, load_module, train

EPOCHS = 4
TIMEOUT = 180.0  # seconds for one training process, on a busy machine


def _train_command(root: Path, out: Path) -> list[str]:
    """``deconfound train`` of the bundled EMOT-Net config on the tiny set, in a new process."""
    overrides = run_overrides(root, out, epochs=EPOCHS)
    cli = [sys.executable, "-m", "deconfound.cli"]
    return [*cli, "train", "--config", "emotnet_synthetic", *overrides]


def _mtime(path: Path) -> int | None:
    try:
        return path.stat().st_mtime_ns
    except FileNotFoundError:
        return None


def _wait_for_write(
    proc: subprocess.Popen[bytes], path: Path, before: int | None, log: Path
) -> int:
    """Wait until ``path`` exists with an mtime other than ``before`` (i.e. was written again);
    the new mtime."""
    deadline = time.monotonic() + TIMEOUT
    while (now := _mtime(path)) is None or now == before:
        if proc.poll() is not None:
            pytest.fail(f"training ended (rc {proc.returncode}) too early:\n{log.read_text()}")
        if time.monotonic() > deadline:
            pytest.fail(f"{path} was not written in {TIMEOUT} s")
        time.sleep(0.005)
    return now


def _kill_mid_epoch(command: list[str], last: Path, log: Path) -> None:
    """Run ``command`` and SIGKILL it a quarter of the way through its third epoch: after the
    checkpoints of the first two epochs (``last``) were written, however slow the machine is.
    (A quarter, not a half: under a varying load the third and fourth epochs may run much
    faster than the second, and the kill must still come before the run ends.)"""
    with log.open("wb") as out:
        proc = subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT)
    try:
        first = _wait_for_write(proc, last, None, log)  # epoch 0 saved
        second = _wait_for_write(proc, last, first, log)  # epoch 1 saved
        time.sleep((second - first) / 4e9)  # a quarter of an epoch (with its validation) later
        assert proc.poll() is None, f"training ended before the kill:\n{log.read_text()}"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL


def _load(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=False)


def _best_score(ckpt: dict[str, Any]) -> float:
    """The best validation score that the checkpoint's best-model callback had seen."""
    (state,) = [s for s in ckpt["callbacks"].values() if s.get("monitor") == "val/accuracy"]
    return float(state["best_model_score"])


def test_a_run_killed_mid_epoch_resumes_to_the_uninterrupted_result(
    tiny_root: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "killed" / "tiny"
    last = run_dir / "checkpoints" / "last.ckpt"
    command = _train_command(tiny_root, tmp_path / "killed")

    _kill_mid_epoch(command, last, tmp_path / "killed.log")
    saved_epoch = _load(last)["epoch"]
    assert 1 <= saved_epoch < EPOCHS - 1  # killed after a checkpoint, with epochs left to do
    (last.parent / ".last.ckpt.x1y2z3.tmp").write_bytes(b"half")  # as a kill mid-save leaves

    done = subprocess.run(command, capture_output=True, text=True, timeout=TIMEOUT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert (run_dir / "logs" / "version_1").is_dir()  # a second session did the rest
    leftovers = [str(p) for p in run_dir.rglob(".*.tmp")]
    assert not leftovers, leftovers  # no temporary files, a killed writer's included
    resumed = _load(last)

    cfg = load_config("emotnet_synthetic", run_overrides(tiny_root, tmp_path / "reference", EPOCHS))
    reference_last = train(cfg).run_dir / "checkpoints" / "last.ckpt"
    reference = _load(reference_last)

    assert (resumed["epoch"], resumed["global_step"]) == (EPOCHS - 1, EPOCHS * 13)
    assert (reference["epoch"], reference["global_step"]) == (EPOCHS - 1, EPOCHS * 13)
    # the same weights: bitwise on CPU (the tolerance leaves room for other kernels) ...
    assert resumed["state_dict"].keys() == reference["state_dict"].keys()
    for key, value in reference["state_dict"].items():
        torch.testing.assert_close(resumed["state_dict"][key], value, atol=1e-6, rtol=0)
    # ... the same final validation metrics, and the same best score on the way
    got = evaluate(load_module(last), ["val"])["val"]
    want = evaluate(load_module(reference_last), ["val"])["val"]
    assert got.keys() == want.keys() and "accuracy" in got
    for name, value in want.items():
        assert got[name] == pytest.approx(value, abs=1e-6), name
    assert _best_score(resumed) == pytest.approx(_best_score(reference), abs=1e-6)


def test_the_training_order_is_a_function_of_seed_and_epoch() -> None:
    def order(seed: int, epoch: int, sampler: EpochShuffle | None = None) -> list[int]:
        sampler = sampler or EpochShuffle(range(50), seed)
        sampler.set_epoch(epoch)
        return list(sampler)

    torch.manual_seed(1)
    first = order(0, 3)
    torch.manual_seed(2)  # the global random state plays no part ...
    assert order(0, 3) == first and sorted(first) == list(range(50))
    reused = EpochShuffle(range(50), 0)
    order(0, 5, reused)
    assert order(0, 3, reused) == first  # ... nor what the sampler gave before
    assert order(0, 4) != first and order(1, 3) != first and order(1, 2) != order(0, 3)

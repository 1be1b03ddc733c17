"""Several processes (DDP on CPU, gloo): two processes train like one, evaluate a checkpoint
exactly as one (no sample padded in, predictions gathered from both), resume from last.ckpt,
and share the dictionary build out, each embedding only its chunks, into the dictionary that one
process builds. Plus the pieces: the samplers' shares, the process-group set-up, the options.

The two-process runs are one torchrun launch (``distributed_job.py`` in each process, going
through the command line), so that the processes start (and import torch) only once.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import signal
import subprocess
import sys
import warnings
from pathlib import Path
from typing import Any

import pytest
import torch
from conftest import run_overrides
from distributed_job import BROKEN

import deconfound.pipelines.dictionary as build_mod
from deconfound.causal import ConfounderDictionary
from deconfound.config import TrainerConfig, load_config
from deconfound.data.datamodule import EmotionDataModule, EpochShuffle
from deconfound.distributed import ALONE, join_peers
from deconfound.engine import evaluate, load_module, train
from deconfound.errors import ConfigError, DeconfoundError
from deconfound.pipelines.dictionary import build_dictionary

EPOCHS = 2
CHUNK = 64  # images per feature chunk: 419 training images make 7 chunks
TIMEOUT = 300.0  # seconds for the whole torchrun launch, on a busy machine
SPLITS = ["val", "test_iid"]

ACCURACY_TOLERANCE, LOSS_TOLERANCE = 0.15, 0.15
"""How far the metrics of a two-process run (batch 16 per process) may be from those of a
one-process run (batch 32), on 69 validation and 139 test images after 2 epochs: accuracy
(overall and mean per class) within 0.15, loss within 15 %. Both see the same global batches
(``EpochShuffle``) from the same initial weights but are different runs all the same: the
batch-norm statistics are those of 16 samples, not 32, and the dropout masks differ. Measured:
0.044 and 2.3 % apart at most (a one-process run with another seed: 0.14 and 45 %)."""


@pytest.fixture(scope="module")
def odd_root(tiny_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny set less one image of train, val and test_iid: 419, 69 and 139 images, so
    that two processes cannot share them evenly (a padded-in sample would change the metrics)."""
    root = Path(shutil.copytree(tiny_root, tmp_path_factory.mktemp("odd") / "tiny"))
    table = root / "annotations.csv"
    with table.open(newline="") as f:
        reader = csv.DictReader(f)
        columns, rows = reader.fieldnames, list(reader)
    for split in ("train", "val", "test_iid"):
        rows.remove(next(r for r in rows if r["split"] == split))
    with table.open("w", newline="") as f:
        writer = csv.DictWriter(f, columns)  # type: ignore[arg-type]
        writer.writeheader()
        writer.writerows(rows)
    return root


def _overrides(root: Path, out: Path, *extra: str) -> list[str]:
    return [
        *run_overrides(root, out, epochs=EPOCHS),
        "trainer.accelerator=cpu",
        f"model.dictionary={out / 'dict.safetensors'}",
        "dictionary.weights=null",
        "dictionary.num_clusters=14",
        "dictionary.image_size=32",
        "optim.scheduler=none",  # a run stopped after an epoch then resumes as if uninterrupted
        *extra,
    ]


@pytest.fixture(scope="module")
def one(odd_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """One process: the dictionary, a run (batch 32) and its best checkpoint's metrics."""
    out = tmp_path_factory.mktemp("one")
    cfg = load_config("emotnet_synthetic", _overrides(odd_root, out))
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(build_mod, "CHUNK", CHUNK)
        built = build_dictionary(cfg, progress=False)
    run = train(cfg)
    return {
        "dictionary": built,
        "checkpoint": run.best_checkpoint,
        "metrics": evaluate(load_module(run.best_checkpoint), SPLITS),
    }


@pytest.fixture(scope="module")
def two(
    odd_root: Path, one: dict[str, Any], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """Two processes (one torchrun launch): the dictionary build, a run (batch 16 per process)
    stopped after an epoch and resumed, and the evaluation of the one-process checkpoint.
    What each process saw, by rank, and where the outputs are.

    A launch whose worker dies of a signal (seen once in CI: gloo aborting a process with
    "terminate called without an active exception", not reproduced in 8 runs alone) is started
    again once, in a new folder, with a warning; any other failure, or a second, fails."""
    for attempt in (1, 2):
        out = tmp_path_factory.mktemp("two")
        rc, log = _launch_two(odd_root, out, one["checkpoint"])
        if rc == 0:
            break
        if attempt == 1 and _died_of_a_signal(log):
            warnings.warn(
                f"torchrun: a worker died of a signal, launched again:\n{log[-2000:]}", stacklevel=1
            )
            continue
        pytest.fail(f"torchrun failed ({rc}):\n{log[-6000:]}")
    seen = [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]
    return {"out": out, "seen": seen}


def _launch_two(root: Path, out: Path, checkpoint: Path) -> tuple[int | str, str]:
    """Run the jobs in two processes; the launch's exit status and log."""
    ddp = ["trainer.devices=2", "trainer.strategy=ddp"]
    base = _overrides(root, out, *ddp)
    config = ["--config", "emotnet_synthetic"]
    splits = [a for s in SPLITS for a in ("--split", s)]
    broken = f"model.dictionary={out / 'broken' / 'dict.safetensors'}"
    jobs = [
        ("build@broken1", ["dictionary", "build", *config, *base, broken]),
        ("build", ["dictionary", "build", *config, *base]),
        ("train", ["train", *config, *base, "data.batch_size=16", "trainer.max_epochs=1"]),
        ("resume", ["train", *config, *base, "data.batch_size=16"]),
        ("evaluate", ["evaluate", "--checkpoint", str(checkpoint), "--json", *splits, *ddp]),
    ]
    job = Path(__file__).with_name("distributed_job.py")
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2"]
    log = out / "torchrun.log"
    rc: int | str
    with log.open("wb") as f:  # a session of its own: a time-out kills the workers too
        launch = subprocess.Popen(
            [*torchrun, str(job), str(out), str(CHUNK), json.dumps(jobs)],
            stdout=f,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            rc = launch.wait(timeout=TIMEOUT)
        except subprocess.TimeoutExpired:
            os.killpg(launch.pid, signal.SIGKILL)
            launch.wait()
            rc = f"killed after {TIMEOUT:.0f} s"
    return rc, log.read_text(errors="replace")


def _died_of_a_signal(log: str) -> bool:
    """Whether torchrun says a worker was ended by a signal of its own (abort, segfault)."""
    return any(f"({name})" in log for name in ("SIGABRT", "SIGSEGV", "SIGBUS"))


def test_two_processes_evaluate_a_checkpoint_exactly_as_one(one: dict, two: dict) -> None:
    first, second = (s["evaluate"] for s in two["seen"])
    assert first["status"] == second["status"] == 0
    assert second["stdout"] == ""  # process 1 prints nothing
    # each image seen once, by one process or the other (EMOT-Net embeds two views of each)
    assert (first["embedded"], second["embedded"]) == (2 * (35 + 70), 2 * (34 + 69))
    metrics = json.loads(first["stdout"])
    for split in SPLITS:  # 69 and 139 images: a sample padded in would change every figure
        expected = one["metrics"][split]
        assert metrics[split]["accuracy"] == expected["accuracy"]
        assert metrics[split]["mean_class_accuracy"] == expected["mean_class_accuracy"]
        assert metrics[split]["loss"] == pytest.approx(expected["loss"], rel=1e-6)  # sum order


def test_two_processes_train_and_resume_like_one(one: dict, two: dict) -> None:
    for job in ("train", "resume"):
        first, second = (s[job] for s in two["seen"])
        assert first["status"] == second["status"] == 0 and second["stdout"] == ""
    run = two["out"] / "tiny"
    last = torch.load(run / "checkpoints" / "last.ckpt", weights_only=False)
    assert last["epoch"] == EPOCHS - 1  # resumed after the first epoch, to the last
    assert len(list((run / "logs").glob("version_*/metrics.csv"))) == 2  # one per session
    assert not list(run.rglob("*.tmp"))
    metrics = evaluate(load_module(run / "checkpoints" / "best.ckpt"), SPLITS)
    for split in SPLITS:
        got, expected = metrics[split], one["metrics"][split]
        assert expected["accuracy"] > 0.4  # both learnt (chance: 1/7), so the check means something
        for name in ("accuracy", "mean_class_accuracy"):
            assert got[name] == pytest.approx(expected[name], abs=ACCURACY_TOLERANCE), (split, name)
        assert got["loss"] == pytest.approx(expected["loss"], rel=LOSS_TOLERANCE), split


def test_two_processes_share_the_dictionary_build(one: dict, two: dict) -> None:
    first, second = (s["build"] for s in two["seen"])
    assert first["status"] == second["status"] == 0
    # 7 chunks of 64 (the last of 35): process 0 embeds chunks 0, 2, 4, 6, process 1 the others
    assert (first["embedded"], second["embedded"]) == (3 * 64 + 35, 3 * 64)
    assert "dictionary:" in first["stdout"] and second["stdout"] == ""
    built = ConfounderDictionary.load(two["out"] / "dict.safetensors")
    expected = one["dictionary"].dictionary
    assert torch.allclose(built.centres, expected.centres, atol=1e-5)
    assert torch.equal(built.prior, expected.prior)
    assert (two["out"] / "dict.clusters.png").is_file()


def test_a_process_that_fails_stops_the_others_with_its_message(two: dict) -> None:
    first, second = (s["build@broken1"] for s in two["seen"])
    assert first["status"] == second["status"] == 2
    assert second["stderr"].endswith(f"deconfound: error: {BROKEN}\n")
    assert first["stderr"].endswith(f"deconfound: error: process 1 of 2 failed: {BROKEN}\n")
    assert not (two["out"] / "broken" / "dict.safetensors").exists()


def test_processes_share_each_global_batch_and_evaluate_each_sample_once(
    odd_root: Path, tmp_path: Path
) -> None:
    order = list(EpochShuffle(range(419), seed=3))
    shares = [list(EpochShuffle(range(419), seed=3, num_replicas=2, rank=r)) for r in (0, 1)]
    assert len(shares[0]) == len(shares[1]) == 209
    for k in range(419 // 32):  # the k-th batches of 16 make the k-th batch of 32 of one process
        together = shares[0][16 * k : 16 * (k + 1)] + shares[1][16 * k : 16 * (k + 1)]
        assert sorted(together) == sorted(order[32 * k : 32 * (k + 1)])

    cfg = load_config("emotnet_synthetic", run_overrides(odd_root, tmp_path))
    data = EmotionDataModule(cfg.data, ["body", "whole"])
    seen = [list(data.loader("val", replicas=2, rank=r).sampler) for r in (0, 1)]  # type: ignore[arg-type]
    assert sorted(seen[0] + seen[1]) == list(range(69))  # none twice, none left out
    with pytest.raises(ConfigError, match="split 'val' has 69 samples, fewer than the 70"):
        data.loader("val", replicas=70, rank=0)


def test_a_process_alone_or_a_half_set_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("WORLD_SIZE", "RANK", "MASTER_ADDR", "MASTER_PORT"):
        monkeypatch.delenv(name, raising=False)
    with join_peers() as peers:
        assert peers == ALONE
        with peers.together():
            pass
        assert peers.from_rank_zero(lambda: 7) == 7
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    with (
        pytest.raises(DeconfoundError, match="not MASTER_ADDR and MASTER_PORT; start the"),
        join_peers(),
    ):
        pass


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"strategy": "fsdp"}, "unknown trainer.strategy 'fsdp'; choose one of auto, ddp"),
        ({"num_nodes": 0}, "'trainer.num_nodes' must be at least 1"),
        ({"sync_batchnorm": True, "accelerator": "cpu"}, "sync_batchnorm' needs GPUs"),
    ],
)
def test_distributed_options_are_checked(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        TrainerConfig(**options)

"""Shared fixtures: a tiny synthetic set written once per session in the real on-disk format."""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from pretrained import seed_torch_hub

from deconfound.data.synthetic import SynthConfig, generate

TINY = SynthConfig(
    rho=0.8,
    seed=1,
    image_size=64,
    sizes={
        "train": 420,
        "val": 70,
        "test_iid": 140,
        "test_balanced": 70,
        "test_anti": 70,
        "scenes": 14,
    },
)


@pytest.fixture(autouse=True, scope="session")
def _quiet() -> None:
    for name in ("lightning.pytorch", "lightning.fabric", "lightning_utilities"):
        logging.getLogger(name).setLevel(logging.WARNING)


@pytest.fixture(autouse=True, scope="session")
def _torch_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Every test (and process it starts) finds torchvision's ImageNet MobileNetV2 file in a
    session hub cache of its own, never the user's (a test may set another TORCH_HOME)."""
    before = os.environ.get("TORCH_HOME")
    os.environ["TORCH_HOME"] = str(seed_torch_hub(tmp_path_factory.mktemp("torch-home")))
    yield
    if before is None:
        os.environ.pop("TORCH_HOME", None)
    else:
        os.environ["TORCH_HOME"] = before


@pytest.fixture(scope="session")
def tiny_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small synthetic set (64-pixel images); treat as read-only."""
    return generate(tmp_path_factory.mktemp("data") / "tiny", TINY, progress=False)


@pytest.fixture
def tiny_copy(tiny_root: Path, tmp_path: Path) -> Path:
    """A private copy of the tiny set that a test may damage."""
    return Path(shutil.copytree(tiny_root, tmp_path / "copy"))


def run_overrides(root: Path, out: Path, epochs: int = 2) -> list[str]:
    """Config overrides that train the bundled EMOT-Net config on the tiny set in seconds."""
    return [
        f"data.root={root}",
        "data.view_sizes={body: 32, whole: 32}",
        "data.batch_size=32",
        f"trainer.max_epochs={epochs}",
        "trainer.progress_bar=false",
        "trainer.accelerator=cpu",
        f"out_dir={out}",
        "name=tiny",
    ]


def one_epoch_overrides(
    root: Path,
    out: Path,
    views: str,
    batch: int = 4,
    streams: tuple[str, ...] = ("body", "context"),
) -> list[str]:
    """Overrides that train a bundled real-data config for one epoch on a tiny copy, with
    ``views`` (a YAML mapping of view sizes) and a small CPU backbone whose ``streams`` (the
    base model's ``<stream>_weights`` arguments; ``weights`` for single_stream) start from
    random weights instead of the config's pretrained ones."""
    weights = [f"model.args.{s}_weights=null" for s in streams] or ["model.args.weights=null"]
    return [
        *weights,
        f"data.root={root}",
        f"data.view_sizes={views}",
        f"data.batch_size={batch}",
        "data.num_workers=0",
        "model.args.backbone=small_cnn",
        "trainer.max_epochs=1",
        "trainer.accelerator=cpu",
        "trainer.progress_bar=false",
        f"out_dir={out}",
    ]

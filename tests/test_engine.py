"""The training engine: a short run learns, an interrupted run resumes, NaN stops it clearly."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from conftest import run_overrides

from deconfound.config import load_config
from deconfound.data import EmotionDataModule
from deconfound.engine import EmotionModule, evaluate, load_module, train
from deconfound.errors import DeconfoundError


def test_a_short_run_learns_and_its_checkpoint_evaluates(tiny_root: Path, tmp_path: Path) -> None:
    cfg = load_config("emotnet_synthetic", run_overrides(tiny_root, tmp_path, epochs=8))
    result = train(cfg)
    assert result.best_checkpoint.is_file() and (result.run_dir / "config.yaml").is_file()
    assert (result.run_dir / "logs" / "version_0" / "metrics.csv").is_file()
    module = load_module(result.best_checkpoint)
    metrics = evaluate(module, ["test_iid", "test_anti"])
    chance = 1 / 7
    assert metrics["test_iid"]["accuracy"] > 3 * chance, metrics
    assert 0.0 <= metrics["test_anti"]["accuracy"] <= 1.0
    # the reloaded module predicts exactly as the trained one saved it
    again = evaluate(load_module(result.best_checkpoint), ["test_iid"])
    assert again["test_iid"]["accuracy"] == metrics["test_iid"]["accuracy"]


def test_an_interrupted_run_resumes_from_its_last_checkpoint(
    tiny_root: Path, tmp_path: Path
) -> None:
    overrides = run_overrides(tiny_root, tmp_path, epochs=1)
    first = train(load_config("emotnet_synthetic", overrides))
    last = first.run_dir / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=False)["epoch"] == 0
    saved = first.run_dir / "config.yaml"  # written before an option was added: still resumes
    saved.write_text(saved.read_text().replace("  intervention_args: {}\n", ""))
    assert "intervention_args" not in saved.read_text()
    train(load_config("emotnet_synthetic", [*overrides, "trainer.max_epochs=2"]))
    assert torch.load(last, weights_only=False)["epoch"] == 1
    epochs = set()
    for log in sorted(first.run_dir.glob("logs/version_*/metrics.csv")):  # one per session
        with log.open() as f:
            epochs |= {row["epoch"] for row in csv.DictReader(f) if row.get("val/accuracy")}
    assert epochs == {"0", "1"}
    with pytest.raises(DeconfoundError, match="last.ckpt was saved with optim.lr=0.002, not 0.1"):
        train(load_config("emotnet_synthetic", [*overrides, "optim.lr=0.1"]))
    assert not list(last.parent.glob("*.tmp"))  # atomic writes leave no temporaries


def test_a_nan_loss_stops_training_with_a_clear_message(tiny_root: Path, tmp_path: Path) -> None:
    cfg = load_config("emotnet_synthetic", run_overrides(tiny_root, tmp_path))
    module = EmotionModule(cfg.to_dict())
    with torch.no_grad():
        module.model.head.bias.fill_(float("nan"))
    views = {v: torch.zeros(4, 3, 32, 32, dtype=torch.uint8) for v in ("body", "whole")}
    with pytest.raises(FloatingPointError, match="training loss became nan.*lower optim.lr"):
        y = torch.zeros(4, dtype=torch.long)
        module.training_step((views, y, y - 1), 0)


def test_a_missing_or_foreign_checkpoint_is_named(tmp_path: Path) -> None:
    with pytest.raises(DeconfoundError, match="not found"):
        load_module(tmp_path / "none.ckpt")
    torch.save({"state_dict": {}}, tmp_path / "foreign.ckpt")
    with pytest.raises(DeconfoundError, match="foreign.ckpt: not a deconfound checkpoint"):
        load_module(tmp_path / "foreign.ckpt")


def test_select_last_scores_the_last_epoch_and_best_the_best(
    tiny_root: Path, tmp_path: Path
) -> None:
    overrides = run_overrides(tiny_root, tmp_path, epochs=3)
    last_cfg = load_config("emotnet_synthetic", [*overrides, "trainer.select=last"])
    last = train(last_cfg)
    assert last.selected.name == "last.ckpt"
    state = torch.load(last.selected, weights_only=False)
    batches = len(EmotionDataModule(last_cfg.data, ("body", "whole")).train_dataloader())
    assert state["epoch"] == 2 and state["global_step"] == 3 * batches  # after the third epoch
    best = train(load_config("emotnet_synthetic", [*overrides, "name=b", "trainer.select=best"]))
    assert best.selected == best.best_checkpoint != best.run_dir / "checkpoints" / "last.ckpt"


def test_input_normalisation_is_a_config_setting_kept_by_the_checkpoint(
    tiny_root: Path, tmp_path: Path
) -> None:
    half = ["model.input_mean=[0.5, 0.5, 0.5]", "model.input_std=[0.25, 0.5, 0.5]"]
    cfg = load_config("emotnet_synthetic", [*run_overrides(tiny_root, tmp_path, epochs=1), *half])
    result = train(cfg)
    module = load_module(result.selected)
    backbones = [m for m in module.modules() if hasattr(m, "set_normalisation")]
    assert backbones
    x = torch.full((1, 3, 4, 4), 255, dtype=torch.uint8)
    for b in backbones:
        assert torch.allclose(b.normalise(x)[0, :, 0, 0], torch.tensor([2.0, 1.0, 1.0]))
    with pytest.raises(DeconfoundError, match="'model.input_std' must be three numbers"):
        load_config("emotnet_synthetic", ["model.input_std=[0.5, 0, 0.5]"])


def test_limit_train_batches_stops_each_epoch_early_and_validates_fully(
    tiny_root: Path, tmp_path: Path
) -> None:
    overrides = [*run_overrides(tiny_root, tmp_path, epochs=2), "trainer.limit_train_batches=3"]
    result = train(load_config("emotnet_synthetic", overrides))
    last = torch.load(result.run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    assert last["epoch"] == 1 and last["global_step"] == 2 * 3  # 420 samples: 14 batches an epoch
    with pytest.raises(DeconfoundError, match="'trainer.limit_train_batches' must be at least 1"):
        load_config("emotnet_synthetic", [*overrides, "trainer.limit_train_batches=0"])

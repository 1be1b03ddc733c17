"""The speed switches ``trainer.channels_last`` and ``trainer.precision`` train the same model."""

from __future__ import annotations

from pathlib import Path

import torch
from conftest import run_overrides

from deconfound.config import load_config
from deconfound.engine import EmotionModule, load_module, train


def test_channels_last_and_bf16_train_to_the_plain_result(tiny_root: Path, tmp_path: Path) -> None:
    def run(name: str, *extra: str) -> tuple[float, torch.nn.Module]:
        overrides = [*run_overrides(tiny_root, tmp_path, epochs=1), f"name={name}", *extra]
        result = train(load_config("emotnet_synthetic", overrides))
        return result.best_score, load_module(result.best_checkpoint).model

    plain, plain_model = run("plain")
    last, last_model = run("cl", "trainer.channels_last=true")
    half, _ = run("bf16", "trainer.precision=bf16-mixed")
    # the same arithmetic in another memory order: equal up to float summation order, which
    # training amplifies a little
    assert abs(last - plain) <= 0.02, (plain, last)
    other = last_model.state_dict()
    for name, a in plain_model.state_dict().items():
        torch.testing.assert_close(a.float(), other[name].float(), rtol=0.05, atol=0.01, msg=name)
    # bf16 autocast rounds activations to 8 bits of mantissa: close, not equal
    assert abs(half - plain) <= 0.1, (plain, half)


def test_channels_last_puts_the_convolutions_in_that_order(tiny_root: Path, tmp_path: Path) -> None:
    overrides = [*run_overrides(tiny_root, tmp_path), "trainer.channels_last=true"]
    module = EmotionModule(load_config("emotnet_synthetic", overrides).to_dict())
    module.setup("fit")
    convs = [m.weight for m in module.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)

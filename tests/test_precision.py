"""The speed switches ``trainer.channels_last`` and ``trainer.precision`` train the same model."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import torch
from conftest import run_overrides

from deconfound.config import load_config
from deconfound.engine import EmotionModule, load_module, train


def test_channels_last_and_bf16_train_to_the_plain_result(tiny_root: Path, tmp_path: Path) -> None:
    """What the switches promise, with bounds that hold on any CPU: the same function computed
    (the same weights give the same outputs, up to the rounding each switch implies), and
    training runs that take the same steps from the same start and score alike. Not the trained
    weights and statistics themselves: another CPU's kernels sum in another order, training
    amplifies those last-bit differences, and a BatchNorm's running mean may then differ by a
    few hundredths (it did: 0.029), whatever the memory order."""

    def run(name: str, *extra: str) -> tuple[float, EmotionModule, int]:
        overrides = [*run_overrides(tiny_root, tmp_path, epochs=1), f"name={name}", *extra]
        result = train(load_config("emotnet_synthetic", overrides))
        steps = torch.load(result.best_checkpoint, weights_only=False)["global_step"]
        return result.best_score, load_module(result.best_checkpoint), steps

    plain, plain_module, steps = run("plain")
    last, last_module, last_steps = run("cl", "trainer.channels_last=true")
    half, half_module, half_steps = run("bf16", "trainer.precision=bf16-mixed")
    assert steps == last_steps == half_steps > 0

    # 1. The same weights, the same function. In channels-last order a convolution sums the
    # same float32 products in another order: each logit, a sum of n ~ 10^3 products, moves by
    # at most ~n * 2^-24 of its terms' magnitude (~1e-4 of the logits' scale), far less in
    # practice (2e-7 measured). Under bf16 autocast each convolution and linear layer rounds
    # its operands to bf16's 8 significant bits (unit roundoff u = 2^-8), which perturbs its
    # output by at most ~2u relatively, to first order; through the network those errors add
    # up at most once per layer: 2u * layers of the logits' scale (0.4 % measured).
    model = plain_module.model
    draw = torch.Generator().manual_seed(0)
    views = {v: torch.randint(0, 256, (16, 3, 32, 32), generator=draw).byte() for v in model.views}
    layers = sum(isinstance(m, torch.nn.Conv2d | torch.nn.Linear) for m in model.modules())
    with torch.inference_mode():
        want = model(views)
        scale = want.abs().max().item()
        as_last = copy.deepcopy(model).to(memory_format=torch.channels_last)
        in_order = {v: x.contiguous(memory_format=torch.channels_last) for v, x in views.items()}
        got = as_last(in_order)
        assert (got - want).abs().max().item() <= 1e-4 * scale
        with torch.autocast("cpu", dtype=torch.bfloat16):
            got = model(views).float()
        assert (got - want).abs().max().item() <= 2 * 2**-8 * layers * scale

    # 2. Training: the same start and the same number of steps. Adam(W) moves each weight by
    # at most lr * |m/sqrt(v)| per step t (bias-corrected; the schedule only lowers lr), and
    # for b1^2 < b2 that ratio is at most, whatever the gradients (Cauchy-Schwarz),
    # (1 - b1)/(1 - b1^t) * sqrt((1 - b2^t)/(1 - b2)) * sqrt((1 - (b1^2/b2)^t)/(1 - b1^2/b2)),
    # growing with t (1.07 at t = 13). So two runs from the same initial weights differ by at
    # most 2 * ratio * lr per weight and step (decoupled weight decay shrinks that difference).
    # A run that started elsewhere would be off by the scale of the initial weights, ~0.1.
    # (1.3e-2 and 2.7e-2 measured, against 5.7e-2 for 13 steps.)
    o = plain_module.cfg.optim
    assert o.optimizer in ("adam", "adamw")
    (b1, b2), t = o.betas, steps
    ratio = (1 - b1) / (1 - b1**t) * math.sqrt((1 - b2**t) / (1 - b2))
    ratio *= math.sqrt((1 - (b1**2 / b2) ** t) / (1 - b1**2 / b2))
    bound = 2 * ratio * max(o.lr, o.backbone_lr or 0) * steps + 1e-6
    weights = dict(plain_module.model.named_parameters())
    for other in (last_module, half_module):
        for name, value in other.model.named_parameters():
            assert (value.float() - weights[name].float()).abs().max().item() <= bound, name

    # 3. ... and scores alike on the 70 validation images: channels-last within 3 images
    # (equal on the machines measured), bf16 within 7 (its rounding steers training more: 2)
    assert abs(last - plain) <= 3 / 70 + 1e-6, (plain, last)
    assert abs(half - plain) <= 7 / 70 + 1e-6, (plain, half)


def test_channels_last_puts_the_convolutions_in_that_order(tiny_root: Path, tmp_path: Path) -> None:
    overrides = [*run_overrides(tiny_root, tmp_path), "trainer.channels_last=true"]
    module = EmotionModule(load_config("emotnet_synthetic", overrides).to_dict())
    module.setup("fit")
    convs = [m.weight for m in module.modules() if isinstance(m, torch.nn.Conv2d)]
    assert convs and all(w.is_contiguous(memory_format=torch.channels_last) for w in convs)

"""Training-step time with mixed precision (AMP) and channels_last vs plain fp32, as ratios
measured in one run.

    python benchmarks/mixed_precision.py [--models emotnet caernet] [--batch N] [--steps N]
                                         [--size PX] [--device auto|cpu|cuda]

Defaults: batch 32 at 224 px, 10 steps on a GPU; batch 8 at 112 px, 5 steps on a CPU.

Each base model with its paper backbone (+ CCIM-dot on a 1024 x 2048 dictionary, as trained in
the papers' configs) takes optimiser steps in four variants, interleaved so that drift in machine
load hits all alike: fp32; fp32 with channels_last (the model and its image views); AMP (bf16
autocast; fp16 with a gradient scaler on a GPU too, ``trainer.precision: 16-mixed``) and AMP +
channels_last. Prints median step times and their ratio to fp32. On a CPU without bf16 units
AMP is expected to be slower, not faster: the figures that matter come from a GPU.
The config switches: ``trainer.precision`` (``bf16-mixed``, ``16-mixed``) and
``trainer.channels_last``.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections.abc import Callable

import torch

from deconfound.causal import ConfounderDictionary
from deconfound.config import ModelConfig
from deconfound.losses import cross_entropy
from deconfound.methods import create_model
from deconfound.models import CONTEXT_MODELS

Step = Callable[[], None]


def to_channels_last(views: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """The image views (4-D tensors) in channels-last memory order, the others as they are."""
    return {
        k: v.contiguous(memory_format=torch.channels_last) if v.dim() == 4 else v
        for k, v in views.items()
    }


def random_views(batch: int, size: int, device: torch.device) -> dict[str, torch.Tensor]:
    """Random image views (uint8, as the data loader hands them) for the image-only models."""
    g = torch.Generator().manual_seed(0)
    face = size * 3 // 7  # 96 px faces beside 224 px bodies, as in the papers' configs
    shapes = {"body": size, "whole": size, "context": size, "face": face}
    return {
        v: torch.randint(0, 256, (batch, 3, s, s), dtype=torch.uint8, generator=g).to(device)
        for v, s in shapes.items()
    }


def make_step(
    name: str,
    views: dict[str, torch.Tensor],
    device: torch.device,
    dtype: torch.dtype | None,
    channels_last: bool,
) -> Step:
    """One optimiser step of ``name`` + CCIM-dot with the given autocast dtype and layout."""
    torch.manual_seed(0)
    dictionary = ConfounderDictionary(torch.randn(1024, 2048).relu(), torch.full((1024,), 1 / 1024))
    model = create_model(ModelConfig(name=name, intervention="ccim_dot"), 7, dictionary=dictionary)
    model = model.to(device).train()
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
        views = to_channels_last(views)
    opt = torch.optim.AdamW(model.parameters(), lr=1e-4)
    scaler = torch.amp.GradScaler(device.type, enabled=dtype == torch.float16)
    y = torch.randint(0, 7, (next(iter(views.values())).shape[0],), device=device)

    def step() -> None:
        autocast = torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext()
        with autocast:
            logits, _ = model.forward_train(views)
            loss = cross_entropy(logits.float(), y)
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    return step


def median_times(steps: dict[str, Step], n: int, device: torch.device) -> dict[str, float]:
    """Median seconds per call of each step, the steps interleaved, after two warm-up rounds."""
    times: dict[str, list[float]] = {k: [] for k in steps}
    for i in range(n + 2):
        for key, step in steps.items():
            if device.type == "cuda":
                torch.cuda.synchronize()
            start = time.perf_counter()
            step()
            if device.type == "cuda":
                torch.cuda.synchronize()
            if i >= 2:
                times[key].append(time.perf_counter() - start)
    return {k: statistics.median(t) for k, t in times.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["emotnet", "caernet"], choices=CONTEXT_MODELS)
    p.add_argument("--batch", type=int, help="default: 32 on a GPU, 8 on a CPU")
    p.add_argument("--steps", type=int, help="default: 10 on a GPU, 5 on a CPU")
    p.add_argument(
        "--size", type=int, help="image views' side, default: 224 on a GPU, 112 on a CPU"
    )
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    args = p.parse_args()
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    device = torch.device(args.device)
    gpu = device.type == "cuda"
    args.batch = args.batch or (32 if gpu else 8)
    args.steps = args.steps or (10 if gpu else 5)
    args.size = args.size or (224 if gpu else 112)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
        where = torch.cuda.get_device_name(device)
    else:
        where = f"CPU, {torch.get_num_threads()} threads"
    amp = {"bf16": torch.bfloat16}
    if device.type == "cuda":
        amp["fp16"] = torch.float16
    print(f"{where}; batch {args.batch}, {args.size} px, {args.steps} steps; median step time")
    views = random_views(args.batch, args.size, device)
    for name in args.models:
        variants: dict[str, Step] = {"fp32": make_step(name, views, device, None, False)}
        variants["fp32+cl"] = make_step(name, views, device, None, True)
        for label, dtype in amp.items():
            variants[label] = make_step(name, views, device, dtype, False)
            variants[f"{label}+cl"] = make_step(name, views, device, dtype, True)
        t = median_times(variants, args.steps, device)
        base = t["fp32"]
        print(
            f"  {name:<8} fp32 {base * 1e3:.1f} ms; "
            + "; ".join(
                f"{k} {v * 1e3:.1f} ms (x{base / v:.2f})" for k, v in t.items() if k != "fp32"
            )
        )
        del variants
    print("(xN = speed-up over fp32: fp32 time / variant time)")


if __name__ == "__main__":
    main()

"""Training-step time of each base model + CCIM over the base model alone, as ratios measured in
one run.

    python benchmarks/ccim_overhead.py [--batch 32] [--steps 20] [--settings demo paper]
                                       [--models emotnet caernet gnncnn emoticon]

Two settings: the demo's (small_cnn streams on 48-pixel views, a 32 × 128 dictionary) and the
papers' shape (each model's paper backbone on 224-pixel views, 96 for faces, with a
1024 × 2048 dictionary as built from ResNet-152 Places365 features; fewer steps, it is slow on
a CPU). For each model the variants' steps are interleaved and the median taken, so drift in
machine load hits all of them alike. Where steps take seconds their noise exceeds CCIM's cost,
so the intervention's forward and backward are also timed alone on a joint feature h: the base
step plus that is the overhead the whole-step ratio can only estimate.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from deconfound.causal import ConfounderDictionary
from deconfound.config import ModelConfig
from deconfound.losses import cross_entropy, multiplicative
from deconfound.methods import create_model
from deconfound.models import CONTEXT_MODELS

SETTINGS = {
    "demo": {"backbone": "small_cnn", "size": 48, "face": 32, "dictionary": (32, 128)},
    "paper": {"backbone": None, "size": 224, "face": 96, "dictionary": (1024, 2048)},
}
VARIANTS = ("none", "ccim_dot", "ccim_add")


def random_views(batch: int, size: int, face: int) -> dict[str, torch.Tensor]:
    """Random inputs for every view any base model reads."""
    g = torch.Generator().manual_seed(0)
    views = {
        v: torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, generator=g)
        for v in ("body", "whole", "context")
    }
    views["face"] = torch.randint(0, 256, (batch, 3, face, face), dtype=torch.uint8, generator=g)
    views["depth"] = torch.randint(0, 256, (batch, 1, size, size), dtype=torch.uint8, generator=g)
    views["pose"] = torch.rand(batch, 25, 3, generator=g)
    nodes = torch.rand(batch, 16, 4, generator=g).sort(dim=-1).values  # x1 < x2, y1 < y2
    views["objects"] = torch.cat([nodes, torch.ones(batch, 16, 1)], dim=-1)
    return views


def step_times(model_name: str, setting: dict, batch: int, steps: int) -> dict[str, float]:
    """Median seconds per optimiser step of ``model_name`` with each variant."""
    torch.manual_seed(0)
    n, d = setting["dictionary"]
    dictionary = ConfounderDictionary(torch.randn(n, d).relu(), torch.full((n,), 1 / n))
    views = random_views(batch, setting["size"], setting["face"])
    y = torch.randint(0, 7, (batch,))
    args = {"backbone": setting["backbone"]} if setting["backbone"] else {}
    runs = {}
    for variant in VARIANTS:
        cfg = ModelConfig(name=model_name, args=args, intervention=variant)
        model = create_model(cfg, 7, dictionary=dictionary).train()
        runs[variant] = (model, torch.optim.AdamW(model.parameters(), lr=1e-4))
    times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for i in range(steps + 2):  # two warm-up rounds
        for variant, (model, opt) in runs.items():
            start = time.perf_counter()
            logits, modality_logits = model.forward_train(views)
            loss = cross_entropy(logits, y)
            if modality_logits:
                loss = loss + multiplicative(modality_logits, y, task="multiclass")
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if i >= 2:
                times[variant].append(time.perf_counter() - start)
    return {v: statistics.median(t) for v, t in times.items()}


def ccim_alone(model_name: str, setting: dict, batch: int, steps: int) -> float:
    """Median seconds of CCIM-dot's forward + backward + head on a joint feature h alone: the
    part of a step the intervention adds, measured without a backbone's noise around it."""
    torch.manual_seed(0)
    n, d = setting["dictionary"]
    dictionary = ConfounderDictionary(torch.randn(n, d).relu(), torch.full((n,), 1 / n))
    args = {"backbone": setting["backbone"]} if setting["backbone"] else {}
    cfg = ModelConfig(name=model_name, args=args, intervention="ccim_dot")
    model = create_model(cfg, 7, dictionary=dictionary).train()
    h = torch.randn(batch, model.base.num_features, requires_grad=True)
    y = torch.randint(0, 7, (batch,))
    times = []
    for i in range(steps + 2):
        start = time.perf_counter()
        cross_entropy(model.head(model.intervention(h)), y).backward()
        if i >= 2:
            times.append(time.perf_counter() - start)
    return statistics.median(times)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=20, help="timed steps (the paper setting: 1/4)")
    p.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    p.add_argument("--models", nargs="+", default=list(CONTEXT_MODELS), choices=CONTEXT_MODELS)
    args = p.parse_args()
    print(f"batch {args.batch}, {torch.get_num_threads()} threads, median step time")
    for name in args.settings:
        s = SETTINGS[name]
        steps = args.steps if name == "demo" else max(3, args.steps // 4)
        print(
            f"{name}: {s['backbone'] or 'paper backbones'} @ {s['size']}px (faces {s['face']}), "
            f"dictionary {s['dictionary'][0]} x {s['dictionary'][1]}, {steps} steps"
        )
        for model in args.models:
            t = step_times(model, s, args.batch, steps)
            alone = ccim_alone(model, s, args.batch, 50)
            print(
                f"  {model:<9} {t['none'] * 1e3:8.1f} ms; "
                + "; ".join(
                    f"+{v} {t[v] * 1e3:.1f} ms (x{t[v] / t['none']:.3f})" for v in VARIANTS[1:]
                )
                + f"; CCIM-dot alone {alone * 1e3:.2f} ms (x{1 + alone / t['none']:.4f})"
            )


if __name__ == "__main__":
    main()

"""Training-step time of EMOT-Net + CCIM over EMOT-Net alone, as ratios measured in one run.

    python benchmarks/ccim_overhead.py [--batch 32] [--steps 20]

Two settings: the demo's (small_cnn streams on 48-pixel views, a 32 × 128 dictionary) and the
papers' shape (ResNet-18 streams on 224-pixel views, a 1024 × 2048 dictionary as built from
ResNet-152 Places365 features; fewer steps, it is slow on a CPU). The variants' steps are
interleaved and the median taken, so drift in machine load hits all of them alike.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from deconfound.causal import ConfounderDictionary
from deconfound.config import ModelConfig
from deconfound.models import create_model

SETTINGS = {
    "demo": {"backbone": "small_cnn", "size": 48, "dictionary": (32, 128)},
    "paper": {"backbone": "resnet18", "size": 224, "dictionary": (1024, 2048)},
}
VARIANTS = ("none", "ccim_dot", "ccim_add")


def step_times(setting: dict, batch: int, steps: int) -> dict[str, float]:
    """Median seconds per optimiser step for each variant."""
    torch.manual_seed(0)
    n, d = setting["dictionary"]
    dictionary = ConfounderDictionary(torch.randn(n, d).relu(), torch.full((n,), 1 / n))
    size = setting["size"]
    views = {
        v: torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8)
        for v in ("body", "whole")
    }
    y = torch.randint(0, 7, (batch,))
    runs = {}
    for variant in VARIANTS:
        cfg = ModelConfig(args={"backbone": setting["backbone"]}, intervention=variant)
        model = create_model(cfg, 7, dictionary=dictionary).train()
        runs[variant] = (model, torch.optim.AdamW(model.parameters(), lr=1e-4))
    times: dict[str, list[float]] = {v: [] for v in VARIANTS}
    for i in range(steps + 2):  # two warm-up rounds
        for variant, (model, opt) in runs.items():
            start = time.perf_counter()
            loss = F.cross_entropy(model(views), y)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            if i >= 2:
                times[variant].append(time.perf_counter() - start)
    return {v: statistics.median(t) for v, t in times.items()}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--steps", type=int, default=20, help="timed steps (the paper setting: 1/4)")
    p.add_argument("--settings", nargs="+", default=list(SETTINGS), choices=list(SETTINGS))
    args = p.parse_args()
    print(f"batch {args.batch}, {torch.get_num_threads()} threads, median step time")
    for name in args.settings:
        steps = args.steps if name == "demo" else max(3, args.steps // 4)
        t = step_times(SETTINGS[name], args.batch, steps)
        s = SETTINGS[name]
        print(
            f"  {name:<6} {s['backbone']} @ {s['size']}px, dictionary {s['dictionary'][0]} x "
            f"{s['dictionary'][1]}: EMOT-Net {t['none'] * 1e3:.1f} ms; "
            + "; ".join(f"+{v} {t[v] * 1e3:.1f} ms (x{t[v] / t['none']:.3f})" for v in VARIANTS[1:])
        )


if __name__ == "__main__":
    main()

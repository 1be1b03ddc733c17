"""Data-loading and step-time figures for the EMOT-Net demo config, as ratios from one run.

    python benchmarks/data_loading.py [--n 1000]

Prints samples/s of a full pass over the training split with the decoded-view cache cold (every
sample decoded from PNG) and warm (served from memory), and the time of one training step of
EMOT-Net at batch 64 against the time to load that batch, so it is clear which one bounds an epoch.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from deconfound.config import load_config
from deconfound.data import EmotionDataModule
from deconfound.data.synthetic import SynthConfig, generate
from deconfound.methods import create_model


def _pass(loader: torch.utils.data.DataLoader) -> float:
    start = time.perf_counter()
    n = sum(len(y) for _, y, _ in loader)
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--n", type=int, default=1000, help="training images to generate")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        root = generate(Path(tmp) / "set", SynthConfig(sizes={"train": args.n}), progress=False)
        cfg = load_config("emotnet_synthetic", [f"data.root={root}"])
        model = create_model(cfg.model, 7)
        data = EmotionDataModule(cfg.data, model.views)
        loader = data.loader("train")
        cold, warm = _pass(loader), _pass(loader)
        views, y, _ = next(iter(loader))
        opt = torch.optim.AdamW(model.parameters())
        for i in range(13):
            if i == 3:
                start = time.perf_counter()
            loss = torch.nn.functional.cross_entropy(model(views), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        step = (time.perf_counter() - start) / 10
    batch = cfg.data.batch_size
    print(f"torch threads: {torch.get_num_threads()}, batch {batch}, views {data.sizes}")
    print(f"decode + crop (cold cache): {cold:8.0f} samples/s")
    print(f"cached views (warm cache):  {warm:8.0f} samples/s   warm/cold = {warm / cold:.1f}x")
    load = batch / cold
    print(
        f"EMOT-Net train step:        {batch / step:8.0f} samples/s   "
        f"cold batch load / train step = {load / step:.2f}"
    )


if __name__ == "__main__":
    main()

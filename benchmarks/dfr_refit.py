"""What limits DFR on the benchmark: the size of the set its last layer is refitted on.

Reads a benchmark's (or the demo's) ``results.json``; for every ``dfr`` run of one dictionary
source (its checkpoint under the plain rule) it takes the base model's features (the plain
training underneath DFR) and refits the last layer, group-balanced over (context cluster,
label) as DFR does (:func:`deconfound.methods.dfr.fit_last_layer`), on: the held-out half of
the validation split (what ``dfr`` does), the whole validation split, and the whole training
split; beside the plain head and a probe fitted on half of ``test_anti`` itself and scored on
the other half (the most any last layer on these features could reach there). Prints
``test_iid`` and ``test_anti`` accuracy, mean ± std over the runs.

    python benchmarks/dfr_refit.py runs/ev11/results.json [--dictionary imagenet] [--ceilings]
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader

from deconfound.data import EmotionDataModule
from deconfound.engine import load_module
from deconfound.methods.dfr import fit_last_layer
from deconfound.pipelines.strata import dictionary_strata

SPLITS = ("train", "val", "test_iid", "test_anti")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results", type=Path)
    p.add_argument("--dictionary", default="imagenet")
    p.add_argument("--ceilings", action="store_true", help="the runs on the unconfounded draw")
    args = p.parse_args()
    logging.disable(logging.WARNING)
    results = json.loads(args.results.read_text())
    trained_on = "unconfounded" if args.ceilings else "confounded"
    runs = [
        r
        for r in results["runs"]
        if r["method"] == "dfr" and r["dictionary"] == args.dictionary
        and r["trained_on"] == trained_on
    ]  # fmt: skip
    scores: dict[str, list[tuple[float, float]]] = {}
    for r in runs:
        for name, pair in refits(r, results, args.dictionary).items():
            scores.setdefault(name, []).append(pair)
    print(f"{len(runs)} dfr runs ({trained_on}); test_iid, test_anti: mean ± std over the runs")
    for name, pairs in scores.items():
        a = np.array(pairs)
        print(f"  {name:40s} {a[:, 0].mean():.3f} ± {a[:, 0].std(ddof=1):.3f}   "
              f"{a[:, 1].mean():.3f} ± {a[:, 1].std(ddof=1):.3f}")  # fmt: skip


def refits(run: dict, results: dict, source: str) -> dict[str, tuple[float, float]]:
    """(test_iid, test_anti) accuracy of each last layer on ``run``'s features."""
    rho = f"rho{run['rho']:g}"
    root = results["settings"][rho]["data"]
    module = load_module(run["checkpoints"]["plain"], [f"data.root={root}", "data.synthetic={}"])
    cfg = module.cfg
    cfg.model.dictionary = results["settings"][rho][source]["path"]
    data = EmotionDataModule(cfg.data, module.model.views)
    samples = {s: data.dataset(s).samples for s in SPLITS}
    strata, _ = dictionary_strata(cfg, samples, data.info, progress=False)
    net = module.model
    features = {}
    with torch.no_grad():
        for s in SPLITS:
            batches = [(net.features(v), y) for v, y, _ in DataLoader(data.dataset(s), 128)]
            features[s] = tuple(torch.cat(t).numpy() for t in zip(*batches, strict=True))
    data.set_held_out(module.method.held_out_share, cfg.trainer.seed)
    held = data.held_out
    assert held is not None

    def accuracy(weight: np.ndarray, bias: np.ndarray) -> tuple[float, float]:
        out = []
        for s in ("test_iid", "test_anti"):
            h, y = features[s]
            out.append(float(((h @ weight.T + bias).argmax(1) == y).mean()))
        return out[0], out[1]

    def refit(split: str, rows: np.ndarray) -> tuple[float, float]:
        h, y = features[split]
        groups = strata[split] * 7 + y
        return accuracy(*fit_last_layer(h[rows], y[rows], groups[rows], 7, module.method.options.c))

    head = net.classifier.head
    n_val, n_train = len(features["val"][1]), len(features["train"][1])
    h, y = features["test_anti"]
    probe = fit_last_layer(h[::2], y[::2], np.zeros(len(y[::2]), int), 7, 1.0)
    return {
        "plain head": accuracy(head.weight.detach().numpy(), head.bias.detach().numpy()),
        f"refit on the held-out half of val ({len(held)})": refit("val", held),
        f"refit on all of val ({n_val})": refit("val", np.arange(n_val)),
        f"refit on all of train ({n_train})": refit("train", np.arange(n_train)),
        "probe on test_anti (other half)": (
            float("nan"),
            float(((h[1::2] @ probe[0].T + probe[1]).argmax(1) == y[1::2]).mean()),
        ),
    }


if __name__ == "__main__":
    main()

"""How well the context-swap gap on ``test_iid`` predicts the ``test_anti`` drop.

Reads a benchmark's (or the demo's) ``results.json``; for every run of one dictionary source
it measures the context-swap gap (:mod:`deconfound.diagnostics.swap`) of the run's checkpoint
on ``test_iid``, strata from that source's dictionary, and prints each run's gap beside its
drop (``test_iid`` − ``test_anti``, the selection rule of the table) and Spearman's rank
correlation between the two, over the confounded runs and over all runs (ceilings included).
A user of EMOTIC has the gap but not the drop: this says how far to trust it.

    python benchmarks/swap_gap_vs_anti.py runs/ev7/results.json [--dictionary imagenet]
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from pathlib import Path

import numpy as np
from scipy import stats

from deconfound.config import load_config
from deconfound.data import EmotionDataModule
from deconfound.diagnostics.swap import context_swap_gap
from deconfound.engine import load_module
from deconfound.pipelines.strata import dictionary_strata

SPLIT = "test_iid"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results", type=Path)
    p.add_argument("--dictionary", default="imagenet", help="the dictionary source's runs")
    p.add_argument("--resamples", type=int, default=200)
    args = p.parse_args()
    logging.disable(logging.WARNING)
    results = json.loads(args.results.read_text())
    runs = [r for r in results["runs"] if r["dictionary"] == args.dictionary]
    rho = f"rho{runs[0]['rho']:g}"
    root = results["settings"][rho]["data"]
    path = results["settings"][rho][args.dictionary]["path"]
    on_root = [f"data.root={root}", "data.synthetic={}"]  # the drawn set, as it is
    cfg = load_config(f"{results['settings']['model']}_synthetic", on_root)
    cfg.model.dictionary = path
    samples = EmotionDataModule(cfg.data, ()).reader.samples(SPLIT)
    strata, _ = dictionary_strata(cfg, {SPLIT: samples}, EmotionDataModule(cfg.data, ()).info)
    start = time.perf_counter()
    rows = []
    for r in runs:
        module = load_module(r["checkpoint"], on_root)  # a ceiling's too: the confounded set
        gap = context_swap_gap(module, SPLIT, strata[SPLIT], resamples=args.resamples)
        m = r["metrics"]
        drop = m[SPLIT]["accuracy"] - m["test_anti"]["accuracy"]
        rows.append((r["method"], r["trained_on"], r["seed"], gap.gap, drop))
        print(f"{r['method']:12s} {r['trained_on']:12s} seed {r['seed']:2d}  swap gap "
              f"{gap.gap:+.3f} [{gap.ci95[0]:+.3f}, {gap.ci95[1]:+.3f}]  drop {drop:+.3f}",
              flush=True)  # fmt: skip
    for what, kept in (
        ("confounded runs", [x for x in rows if x[1] == "confounded"]),
        ("all runs (ceilings included)", rows),
    ):
        g, d = np.array([x[3] for x in kept]), np.array([x[4] for x in kept])
        rank = stats.spearmanr(g, d)
        print(f"{what}: Spearman {rank.statistic:.3f} (p {rank.pvalue:.2g}), n {len(kept)}")
    print(f"{len(rows)} runs in {time.perf_counter() - start:.0f} s")


if __name__ == "__main__":
    main()

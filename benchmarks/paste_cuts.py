"""Where ``paste`` stops working: person pasting trained with cuts as worse segmenters give them.

The synthetic set's masks are exact (the renderer writes them); on photographs a segmenter
makes them. Each cut (:mod:`deconfound.data.cut_quality`) is one ``paste`` configuration; each
trains with every seed at the demo's size on one drawn set, beside the plain model, and is
scored on ``test_iid`` and ``test_anti`` (best plain-validation checkpoint). The table gives
each cut's agreement with the exact one (intersection over union over the training people),
its ``test_anti`` mean ± sd over the seeds, the difference from ``none`` with a 95 %
t-interval, and ``test_iid``. Writes ``<out>/results.json`` and ``<out>/results.md``; finished
runs are reused.

    python benchmarks/paste_cuts.py --out runs/paste-cuts --seed 7 --rho 0.8 --seeds 5
"""

from __future__ import annotations

import argparse
import copy
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from deconfound.config import Config, load_config
from deconfound.data import EmotionDataModule
from deconfound.data.paste import PersonPaste
from deconfound.engine import evaluate, load_module, train
from deconfound.io import atomic_write_text
from deconfound.pipelines.benchmark import draw_synthetic
from deconfound.pipelines.demo import DEMO

CUTS = (
    "exact",
    "eroded:0.05",
    "eroded:0.1",
    "dilated:0.05",
    "dilated:0.1",
    "dilated:0.2",
    "keypoints:0.05",
    "keypoints:0.1",
    "ellipse",
    "box",
)
"""``quality[:share]`` of every row (share: of the person's height)."""
SPLITS = ("test_iid", "test_anti")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", type=Path, default=Path("runs/paste-cuts"))
    p.add_argument("--seed", type=int, default=7, help="data seed; models use seed..seed+n-1")
    p.add_argument("--seeds", type=int, default=5)
    p.add_argument("--rho", type=float, default=0.8)
    p.add_argument("--cuts", nargs="+", default=list(CUTS))
    args = p.parse_args()
    logging.disable(logging.WARNING)
    start = time.perf_counter()
    drawn = [f"data.synthetic.rho={args.rho}", f"data.synthetic.seed={args.seed}", *DEMO]
    base = load_config("emotnet_synthetic", [*drawn, "trainer.progress_bar=false"])
    base.data.root = str(draw_synthetic(args.out / "data", base.data.synthetic))
    base.out_dir = str(args.out / "runs")
    data = EmotionDataModule(base.data, ("body", "whole"))
    seeds = range(args.seed, args.seed + args.seeds)
    rows: dict[str, dict[str, Any]] = {}
    for row in ["none", *args.cuts]:
        scores = [_run(base, data, row, s) for s in seeds]
        rows[row] = {
            "iou": None if row == "none" else _agreement(data, row),
            **{split: [x[split]["accuracy"] for x in scores] for split in SPLITS},
        }
        print(row, {k: np.round(v, 3).tolist() for k, v in rows[row].items() if v is not None})
    results = {
        "data": base.data.root,
        "rho": args.rho,
        "seeds": list(seeds),
        "rows": rows,
        "seconds": round(time.perf_counter() - start, 1),
    }
    atomic_write_text(args.out / "results.json", json.dumps(results, indent=2) + "\n")
    table = _table(results)
    atomic_write_text(args.out / "results.md", table + "\n")
    print(table)


def _options(row: str) -> dict[str, Any]:
    quality, _, share = row.partition(":")
    return {"cut": quality, **({"cut_share": float(share)} if share else {})}


def _run(base: Config, data: EmotionDataModule, row: str, seed: int) -> dict[str, dict[str, float]]:
    cfg = copy.deepcopy(base)
    cfg.trainer.seed = seed
    if row != "none":
        cfg.model.intervention, cfg.model.intervention_args = "paste", _options(row)
    cfg.name = f"{row.replace(':', '-')}-seed{seed}"
    done = cfg.run_dir / "scores.json"
    if done.is_file():
        return json.loads(done.read_text())
    result = train(cfg, data)
    scores = evaluate(load_module(result.best_checkpoint), list(SPLITS), data)
    atomic_write_text(done, json.dumps(scores) + "\n")
    return scores


def _agreement(data: EmotionDataModule, row: str) -> float:
    """Mean intersection over union of the row's cut with the exact one, training people."""
    exact = PersonPaste.from_reader(data.reader, "train")
    worse = PersonPaste.from_reader(data.reader, "train", **_options(row))
    ious = []
    for i in range(0, len(exact), 7):  # every 7th person: the mean to about 0.005
        a, b = exact.cut(i), worse.cut(i)
        ious.append((a & b).sum() / max((a | b).sum(), 1))
    return float(np.mean(ious))


def _table(results: dict[str, Any]) -> str:
    rows = results["rows"]
    plain = np.array(rows["none"]["test_anti"])
    lines = [
        f"paste with worse cuts: rho {results['rho']:g}, data {results['data']}, seeds "
        f"{results['seeds']} ({results['seconds']:.0f} s)",
        "",
        "| cut | IoU with exact | test_anti | vs none [95 % CI] | test_iid |",
        "|---|---|---|---|---|",
    ]
    for row, r in rows.items():
        anti, iid = np.array(r["test_anti"]), np.array(r["test_iid"])
        sd = anti.std(ddof=1) if len(anti) > 1 else 0.0
        if row == "none":
            versus, iou = "", ""
        else:
            d = anti - plain
            half = stats.t.ppf(0.975, len(d) - 1) * d.std(ddof=1) / np.sqrt(len(d))
            versus = f"{d.mean():+.3f} [{d.mean() - half:+.3f}, {d.mean() + half:+.3f}]"
            iou = f"{r['iou']:.3f}"
        lines.append(
            f"| {row} | {iou} | {anti.mean():.3f} ± {sd:.3f} | {versus} | {iid.mean():.3f} |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()

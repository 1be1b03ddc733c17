"""What JTT's first run finds: its error set against the training samples that contradict the
shortcut (the synthetic set's hidden scene, read here for evaluation only, by no method).

Reads a benchmark's (or the demo's) ``results.json``; for every confounded ``jtt`` run, the
first run's errors on the training split (as JTT reads them), how many of them contradict the
scene's favoured emotion (precision), how many of those samples they catch (recall), and the
share of the upsampled epoch whose label is still its scene's favoured emotion.

    python benchmarks/jtt_errors.py runs/ev11/results.json
"""

from __future__ import annotations

import argparse
import json
import logging
from pathlib import Path

import numpy as np

from deconfound.data import EmotionDataModule
from deconfound.data.synthetic.generate import preferred_emotion
from deconfound.engine import load_module
from deconfound.engine.run import training_logits


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results", type=Path)
    args = p.parse_args()
    logging.disable(logging.WARNING)
    results = json.loads(args.results.read_text())
    for run in results["runs"]:
        if run["method"] != "jtt" or run["trained_on"] != "confounded":
            continue
        root = results["settings"][f"rho{run['rho']:g}"]["data"]
        folder = Path(run["checkpoints"]["last"]).parent.parent
        first = folder.with_name(f"{folder.name}-first") / "checkpoints" / "last.ckpt"
        module = load_module(first, [f"data.root={root}", "data.synthetic={}"])
        data = EmotionDataModule(module.cfg.data, module.model.views)
        logits, targets = training_logits(module, data)
        errors = (logits.argmax(-1) != targets).numpy()
        samples = data.dataset(module.cfg.data.train_split).samples
        conflict = np.array([s.labels[0] != preferred_emotion(s.confounder) for s in samples])
        upweight = run["config"]["model"]["intervention_args"].get("upweight", 6)
        repeats = np.where(errors, upweight, 1)
        aligned = repeats[~conflict].sum() / repeats.sum()
        print(
            f"seed {run['seed']}: first run {1 - errors.mean():.3f} on train; {errors.sum()} "
            f"errors, {(errors & conflict).sum() / max(errors.sum(), 1):.0%} of them against "
            f"the scene, catching {(errors & conflict).sum() / conflict.sum():.0%} of the "
            f"{conflict.sum()} such samples; upsampled epoch: {aligned:.0%} follow the scene "
            f"(raw: {1 - conflict.mean():.0%})"
        )


if __name__ == "__main__":
    main()

"""What each method costs per training step over the plain model, as ratios measured in one run.

    python benchmarks/method_cost.py [--model emotnet] [--steps 30] [--repeats 2]

Each method trains its model (the benchmark's shape: small_cnn streams on 48-pixel views, the
32-cluster dictionary) through the real engine on the synthetic set for ``--steps`` batches
of 64; two times are taken per step: the step itself (forward, backward, optimiser: from
Lightning's batch start to batch end) and the whole step with its loading (from one batch end
to the next: a method that redraws its training pictures, such as ``paste``, pays there). The
methods run in turn, ``--repeats`` times, and the median of all their steps is kept, so that
drift in the machine's load hits them alike. The data, the scene backbone and the dictionary
are those of ``deconfound benchmark --out runs/benchmark`` at ρ 0.8 (made if missing, reused
if there).
"""

from __future__ import annotations

import argparse
import copy
import statistics
import time
from pathlib import Path
from typing import Any

from lightning.pytorch.callbacks import Callback

from deconfound.config import load_config
from deconfound.data import EmotionDataModule
from deconfound.engine.module import EmotionModule
from deconfound.engine.run import make_trainer, prepare_data
from deconfound.methods import CONTEXT_METHODS, METHODS, Method
from deconfound.pipelines.benchmark import build_benchmark_dictionary, draw_synthetic, views_for

TIMED = tuple(m for m in CONTEXT_METHODS if METHODS[m].first_run is Method.first_run)
"""Every context method but those trained after a first run (JTT: its steps are plain
steps, on an upsampled epoch, after a first plain run of ``first_epochs``)."""


class StepTimer(Callback):
    """Seconds of each training step (batch start → end) and of each step with its loading
    (batch end → next batch end), after ``skip`` warm-up steps."""

    def __init__(self, skip: int = 3) -> None:
        self.skip, self.step, self.whole = skip, [], []
        self._start = self._end = 0.0

    def on_train_batch_start(self, trainer: Any, module: Any, batch: Any, i: int) -> None:
        self._start = time.perf_counter()

    def on_train_batch_end(self, trainer: Any, module: Any, out: Any, batch: Any, i: int) -> None:
        now = time.perf_counter()
        if i >= self.skip:
            self.step.append(now - self._start)
            self.whole.append(now - self._end)
        self._end = now


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--model", default="emotnet")
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument(
        "--out", default="runs/benchmark", help="where the data and dictionary are (made if not)"
    )
    args = p.parse_args()
    out = Path(args.out)
    cfg = load_config(
        f"{args.model}_synthetic", ["data.synthetic.rho=0.8", "data.synthetic.seed=0"]
    )
    cfg.data.root = str(draw_synthetic(out / "data", cfg.data.synthetic))
    where = out / "rho0.8"
    cfg.out_dir = str(where / "runs")
    cfg.trainer.progress_bar = False
    build_benchmark_dictionary(cfg, "oracle", where, ["trainer.progress_bar=false"], 0.8)
    data = EmotionDataModule(cfg.data, views_for(cfg, CONTEXT_METHODS))
    for _ in data.loader(cfg.data.train_split):  # decode every view once: all methods start warm
        pass
    times: dict[str, dict[str, list[float]]] = {m: {"step": [], "whole": []} for m in TIMED}
    for _ in range(args.repeats):
        for method in TIMED:
            run = copy.deepcopy(cfg)
            run.model.intervention = method
            run.trainer.max_epochs = 1
            module = EmotionModule(run.to_dict())
            prepare_data(run, module, data)
            timer = StepTimer()
            trainer = make_trainer(run, callbacks=[timer])
            trainer.limit_train_batches = args.steps + timer.skip
            trainer.limit_val_batches = 0
            trainer.fit(module, datamodule=data)
            times[method]["step"] += timer.step
            times[method]["whole"] += timer.whole
    base = {k: statistics.median(times["none"][k]) for k in ("step", "whole")}
    print(f"{args.model}, batch {cfg.data.batch_size}, {args.steps} steps x {args.repeats}:")
    print(f"{'method':<10} {'step ms':>9} {'x none':>8} {'with loading ms':>16} {'x none':>8}")
    for method, t in times.items():
        step, whole = statistics.median(t["step"]), statistics.median(t["whole"])
        print(
            f"{method:<10} {step * 1e3:>9.1f} {step / base['step']:>8.2f} "
            f"{whole * 1e3:>16.1f} {whole / base['whole']:>8.2f}"
        )


if __name__ == "__main__":
    main()

"""``deconfound demo``: the context bias of a plain model on the synthetic benchmark.

Generates the synthetic set (cached under ``<out>/data``), trains EMOT-Net on ``train``, evaluates
it on ``test_iid``, ``test_balanced`` and ``test_anti``, and writes ``results.json``
(method → split → metric) and ``results.png`` under ``<out>``. The drop from ``test_iid`` to
``test_anti`` is the context bias the causal interventions remove.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from deconfound.config import load_config
from deconfound.data import dataset_info, synthetic_root
from deconfound.data.synthetic import SynthConfig
from deconfound.diagnostics import format_table, plot_split_metrics
from deconfound.diagnostics.plots import Results
from deconfound.engine import evaluate, load_module, train
from deconfound.io import atomic_write_text

log = logging.getLogger(__name__)

DEMO_CONFIG = "emotnet_synthetic"
QUICK = [
    "trainer.max_epochs=6",
    "data.synthetic.sizes={train: 1400, val: 350, test_iid: 700, test_balanced: 700, "
    "test_anti: 700, scenes: 0}",
]


def run_demo(
    out: str | Path = "runs/demo",
    *,
    rho: float = 0.8,
    seed: int = 0,
    quick: bool = False,
    overrides: list[str] | None = None,
) -> Results:
    """Run the demo and return its results (method → split → metric → value)."""
    out = Path(out)
    settings = [f"data.synthetic.rho={rho}", f"data.synthetic.seed={seed}", f"trainer.seed={seed}"]
    cfg = load_config(DEMO_CONFIG, settings + (QUICK if quick else []) + (overrides or []))
    data_root = synthetic_root(out / "data", SynthConfig(**cfg.data.synthetic))
    method = cfg.model.intervention
    cfg.data.root = str(data_root)
    cfg.out_dir = str(out / "runs")
    cfg.name = f"{cfg.model.name}-{method}-seed{seed}"
    log.info("data: %s", data_root)
    result = train(cfg)
    module = load_module(result.best_checkpoint)
    results: Results = {method: evaluate(module, cfg.data.test_splits)}
    info = dataset_info(cfg.data.dataset)
    atomic_write_text(out / "results.json", json.dumps(results, indent=2) + "\n")
    plot_split_metrics(
        results,
        info.metric,
        out / "results.png",
        chance=1 / info.num_classes,
        title=f"{cfg.model.name} on the synthetic benchmark (rho={rho}, seed={seed})",
    )
    print(format_table(results, info.metric))
    print(f"results: {out / 'results.json'}, plot: {out / 'results.png'}")
    return results

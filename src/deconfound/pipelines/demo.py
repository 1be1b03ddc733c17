"""``deconfound demo``: bias on the synthetic benchmarks, and the interventions against it.

**Context** (the default, :func:`run_demo`): a context-aware base model (``--model``: EMOT-Net
by default) on the synthetic emotion-in-context set, trained plain (``none``), with CCIM
(``ccim_dot``) and with person pasting (``paste``), 3 seeds each, each beside its ceiling (the
same method trained on an unconfounded draw), with the dictionary of torchvision's ImageNet
MobileNetV2: :func:`deconfound.pipelines.benchmark.run_benchmark` at one ρ, which writes
``<out>/results.json``, ``results.md`` (the table) and ``results.png``, the dictionary's
``clusters.png`` under ``<out>/rho<ρ>/imagenet/``, and prints the table.

**IERN** (``--method iern``, :func:`run_iern_demo`): a face classifier on the synthetic
confounded facial-expression set (three source styles; fold ``bias90v1`` by default: in
training 90 % of each emotion's pictures come from one source), trained plain (``none``), with
adversarial data-set confusion alone (``confusion``: IERN without the backdoor adjustment) and
as IERN (``iern``); evaluated on ``val`` (the training distribution) and ``test`` (the
emotion × source pairs that training shows rarely or never); written to ``<out>/faces/``.

Every stage is cached or resumable: running the demo again reuses what is complete.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np

from deconfound.config import Config, apply_override, construct, from_dict, load_config
from deconfound.data import EmotionDataModule, dataset_info, synthetic_root
from deconfound.data.synthetic_faces import FaceSynthConfig
from deconfound.data.synthetic_faces import generate as generate_faces
from deconfound.diagnostics import format_table, plot_split_metrics
from deconfound.engine import evaluate, load_module, train
from deconfound.errors import ConfigError
from deconfound.io import atomic_write_text
from deconfound.methods import create_model
from deconfound.pipelines.benchmark import CONFOUNDED, run_benchmark
from deconfound.progress import show_progress

log = logging.getLogger(__name__)

METHODS = ("none", "ccim_dot", "paste")
"""The context demo's methods: the plain model, CCIM, and the method of the library that
removed most of the bias in the benchmark (README, "Which method removes the bias")."""
IERN_METHODS: dict[str, str] = {
    "none": "faces_synthetic",
    "confusion": "iern_synthetic",
    "iern": "iern_synthetic",
}
"""The IERN demo's methods and the configs whose model section each takes."""
IERN_QUICK = ["trainer.max_epochs=7"]
DEMO = [
    "data.synthetic.sizes={train: 2100, val: 350, test_iid: 700, test_balanced: 700, "
    "test_anti: 700, scenes: 1400}",
    "trainer.max_epochs=5",
    "trainer.channels_last=true",
]
"""The context demo's size, so that it runs in under 5 minutes on 2 CPU cores: half the
benchmark's training set, a sixth of its test splits, 5 epochs instead of 10 (the benchmark,
``deconfound benchmark``, keeps the configs' full size)."""

SplitMetrics = dict[str, dict[str, float]]  # split -> metric -> value


def run_demo(
    out: str | Path = "runs/demo",
    *,
    model: str = "emotnet",
    rho: float = 0.8,
    dictionaries: tuple[str, ...] = ("imagenet",),
    seed: int = 0,
    seeds: int = 3,
    methods: tuple[str, ...] = METHODS,
    quick: bool = False,
    overrides: list[str] | None = None,
) -> dict[str, Any]:
    """The context demo: :func:`deconfound.pipelines.benchmark.run_benchmark` at one ρ with
    ``methods`` and their ceilings; returns what it writes to ``<out>/results.json``."""
    if "none" not in methods:
        methods = ("none", *methods)
    overrides = [*([] if quick else DEMO), *(overrides or [])]
    results = run_benchmark(
        out,
        model=model,
        methods=methods,
        rhos=(rho,),
        dictionaries=dictionaries,
        seed=seed,
        seeds=seeds,
        quick=quick,
        overrides=overrides,
    )
    print(
        "Removing the bias costs some test_iid accuracy: the shortcut is right on test_iid, and "
        "the ceilings, trained where the scene says nothing, sit at the same level on every "
        "split."
    )
    print(next_steps(results, rho, seed))
    return results


def next_steps(results: dict[str, Any], rho: float, seed: int) -> str:
    """The follow-up commands on the demo's own outputs, with their real paths: predict with
    the method that removed most of the bias, and the bias report of every method's model
    side by side (the first seed's)."""
    where = results["settings"][f"rho{rho:g}"]
    source = results["settings"]["dictionaries"][0]
    runs = {
        r["method"]: r["checkpoint"]
        for r in results["runs"]
        if r["seed"] == seed and r["trained_on"] == CONFOUNDED and r["dictionary"] == source
    }
    best = next((m for m in ("paste", *runs) if m in runs), "none")
    test_anti = Path(where["data"]) / "images" / "test_anti" / "0000*.png"  # ten pictures
    compared = " ".join(f"--checkpoint {c}" for c in runs.values())
    return "\n".join(
        [
            f"data: {where['data']}",
            "next:",
            f"  .venv/bin/deconfound predict --checkpoint {runs[best]} {test_anti} "
            "--out predictions.jsonl --draw drawn/",
            f"  .venv/bin/deconfound bias-report --dictionary {where[source]['path']} "
            f"{compared} --out report/ data.root={where['data']}",
        ]
    )


def run_iern_demo(
    out: str | Path = "runs/demo",
    *,
    fold: str = "bias90v1",
    seed: int = 0,
    seeds: int = 3,
    methods: tuple[str, ...] = ("none", "iern"),
    quick: bool = False,
    overrides: list[str] | None = None,
) -> dict[str, Any]:
    """The IERN demo (see the module docstring); returns what it writes to
    ``<out>/faces/results.json``. The set is drawn with ``seed`` into ``<out>/data``."""
    start = time.perf_counter()
    for m in methods:
        if m not in IERN_METHODS:
            choices = ", ".join(IERN_METHODS)
            raise ConfigError(f"demo: unknown method '{m}' for IERN; choose from {choices}")
    if seeds < 1:
        raise ConfigError(f"demo: --seeds must be at least 1, got {seeds}")
    out = Path(out)
    data_settings = [f"data.args.fold={fold}", f"data.synthetic.seed={seed}"]
    quick_settings = IERN_QUICK if quick else []
    cfg = load_config("faces_synthetic", data_settings + quick_settings + (overrides or []))
    faces = construct(FaceSynthConfig, cfg.data.synthetic, "data.synthetic")
    root = synthetic_root(out / "data", faces)
    cfg.data.root = str(generate_faces(root, faces, progress=show_progress()))
    cfg.out_dir = str(out / "runs")
    log.info("data: %s", cfg.data.root)
    data = EmotionDataModule(cfg.data, _views(cfg))
    given = cfg.model.intervention_args  # from the overrides: for IERN and its ablation
    runs = {
        m: [
            f"model.intervention={m}",
            f"model.intervention_args={_iern_args(m, given)}",
        ]
        for m in methods
    }
    per_seed = _train_seeds(cfg, data, runs, seed, seeds)
    return _report(
        per_seed,
        cfg,
        out / "faces",
        {"settings": {"fold": fold, "data_seed": seed}},
        f"face classifiers on the synthetic facial-expression set ({fold}",
        start,
    )


def _iern_args(method: str, given: dict[str, Any]) -> dict[str, Any]:
    """The IERN demo method's ``intervention_args``: its config's, updated with ``given``."""
    if method == "none":
        return {}
    return {**load_config(IERN_METHODS[method]).model.intervention_args, **given}


def _train_seeds(
    cfg: Config,
    data: EmotionDataModule,
    runs: dict[str, list[str]],
    seed: int,
    seeds: int,
) -> dict[str, dict[int, SplitMetrics]]:
    """Train ``cfg`` with each method's overrides and each seed ``seed`` … ``seed + seeds - 1``
    on ``data``; the test-split metrics of each run's best checkpoint, by method and seed."""
    per_seed: dict[str, dict[int, SplitMetrics]] = {m: {} for m in runs}
    for method, method_overrides in runs.items():
        for s in range(seed, seed + seeds):
            run = copy.deepcopy(cfg)
            for item in method_overrides:
                run = _override(run, item)
            if run.model.intervention in ("none", "iern"):
                run.model.dictionary = None  # not part of these models' config
            run.trainer.seed = s
            run.name = f"{cfg.model.name}-{method}-seed{s}"
            result = train(run, data)
            module = load_module(result.selected)  # trainer.select: best or last
            per_seed[method][s] = evaluate(module, cfg.data.test_splits, data)
    return per_seed


def _override(cfg: Config, item: str) -> Config:
    raw = cfg.to_dict()
    apply_override(raw, item)
    return from_dict(Config, raw, "demo")


def _report(
    per_seed: dict[str, dict[int, SplitMetrics]],
    cfg: Config,
    results_dir: Path,
    extra: dict[str, Any],
    title: str,
    start: float,
) -> dict[str, Any]:
    """Write ``results.json`` (per seed, mean and standard deviation per method) and
    ``results.png`` to ``results_dir``, print the table; returns the results."""
    info = dataset_info(cfg.data.dataset)
    methods = list(per_seed)
    seeds = sorted(next(iter(per_seed.values())))
    mean = {m: _reduce(per_seed[m], np.mean) for m in methods}
    std = {m: _reduce(per_seed[m], _sample_std) for m in methods}  # over seeds, ddof 1
    extra["settings"]["seeds"] = seeds
    results = {
        **extra,
        "metric": info.metric,
        "methods": {m: {"per_seed": per_seed[m], "mean": mean[m], "std": std[m]} for m in methods},
        "seconds": round(time.perf_counter() - start, 1),
    }
    atomic_write_text(results_dir / "results.json", json.dumps(results, indent=2) + "\n")
    n = len(seeds)
    plot_split_metrics(
        mean,
        info.metric,
        results_dir / "results.png",
        std=std,
        chance=1 / info.num_classes,
        title=f"{title}; mean ± std of {n} seed{'s' if n > 1 else ''})",
    )
    print(format_table(mean, info.metric, std))
    print(f"results: {results_dir / 'results.json'}, plot: {results_dir / 'results.png'}")
    return results


def _sample_std(values: Any) -> float:
    return float(np.std(values, ddof=1)) if len(values) > 1 else 0.0


def _views(cfg: Config) -> tuple[str, ...]:
    """The views the configured base model reads."""
    plain = copy.deepcopy(cfg.model)
    plain.intervention, plain.intervention_args = "none", {}
    return create_model(plain, 1, load_weights=False).views


def _reduce(per_seed: dict[int, SplitMetrics], fn: Any) -> SplitMetrics:
    """Split → metric → ``fn`` over seeds."""
    runs = list(per_seed.values())
    return {
        split: {metric: float(fn([r[split][metric] for r in runs])) for metric in runs[0][split]}
        for split in runs[0]
    }

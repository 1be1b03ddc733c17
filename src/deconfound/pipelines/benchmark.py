"""``deconfound benchmark``: methods × seeds (× confounding strengths) on the synthetic benchmark,
measured side by side, with a generated table.

For each strength ρ the synthetic set is drawn once, the scene backbone pretrained once and the
confounder dictionary built once; every method then trains with every seed on that set. A
reference — the plain model trained on an *unconfounded* draw of the same generator (every
scene as likely with every emotion), evaluated on the confounded set's test splits — says how
far a de-confounded model could get: it is for evaluation only, since a user has no such
copy of their data. Finished runs are kept (``<run>/result.json``) and skipped when the
benchmark is run again; an interrupted run resumes from its last checkpoint.

Outputs under ``out``: ``results.json`` (every run's metrics, checkpoint and config),
``results.md`` (the table: :func:`results_table`), ``results.png``.
"""

from __future__ import annotations

import copy
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from deconfound.config import Config, construct, load_config
from deconfound.data import EmotionDataModule, dataset_info, synthetic_root
from deconfound.data.synthetic import SynthConfig, generate
from deconfound.data.synthetic.render import EMOTIONS
from deconfound.diagnostics import plot_cluster_classes, plot_split_metrics
from deconfound.engine import evaluate, load_module, train
from deconfound.errors import ConfigError
from deconfound.io import atomic_write_text
from deconfound.methods import CONTEXT_METHODS, METHODS
from deconfound.models import CONTEXT_MODELS, create_base
from deconfound.pipelines.dictionary import build_dictionary
from deconfound.progress import show_progress

log = logging.getLogger(__name__)

SCENE_CONFIG = "scenes_synthetic"
SCENE_PREFIX = "scenes."
REFERENCE = "reference"
QUICK = [
    "trainer.max_epochs=6",
    "data.synthetic.sizes={train: 1400, val: 350, test_iid: 700, test_balanced: 700, "
    "test_anti: 700, scenes: 1400}",
]
DEFAULT_METHODS = CONTEXT_METHODS
SplitMetrics = dict[str, dict[str, float]]  # split -> metric -> value


def run_benchmark(
    out: str | Path = "runs/benchmark",
    *,
    model: str = "emotnet",
    methods: tuple[str, ...] = DEFAULT_METHODS,
    rhos: tuple[float, ...] = (0.8,),
    seed: int = 0,
    seeds: int = 3,
    reference: bool = True,
    quick: bool = False,
    overrides: list[str] | None = None,
) -> dict[str, Any]:
    """Run (or complete) the benchmark and write its results; returns ``results.json``'s
    content. Data are drawn with ``seed``; models train with seeds ``seed`` … ``seed + seeds
    − 1``. ``overrides`` apply to every run's config, except those starting with ``scenes.``,
    which apply (without the prefix) to the scene classifier's."""
    start = time.perf_counter()
    _check(model, methods, seeds)
    out = Path(out)
    scene_overrides = [
        o.removeprefix(SCENE_PREFIX) for o in overrides or [] if o.startswith(SCENE_PREFIX)
    ]
    model_overrides = [o for o in overrides or [] if not o.startswith(SCENE_PREFIX)]
    runs: list[dict[str, Any]] = []
    settings: dict[str, Any] = {
        "model": model,
        "data_seed": seed,
        "seeds": list(range(seed, seed + seeds)),
    }
    names = [*methods, *([REFERENCE] if reference else [])]
    total, done = len(rhos) * len(names) * seeds, 0
    for rho in rhos:
        cfg = load_config(
            f"{model}_synthetic",
            [f"data.synthetic.rho={rho}", f"data.synthetic.seed={seed}"]
            + (QUICK if quick else [])
            + model_overrides,
        )
        where = out / f"rho{rho:g}"
        cfg.data.root = str(draw_synthetic(out / "data", cfg.data.synthetic))
        cfg.out_dir = str(where / "runs")
        settings[f"rho{rho:g}"] = {"data": cfg.data.root}
        dictionary = build_scene_dictionary(cfg, where, scene_overrides, rho)
        settings[f"rho{rho:g}"]["dictionary"] = dictionary
        data = EmotionDataModule(cfg.data, views_for(cfg, methods))
        for name in names:
            # the reference's set is drawn, and its views decoded, once for all its seeds
            train_data = _reference_data(cfg, data) if name == REFERENCE else data
            for s in range(seed, seed + seeds):
                done += 1
                print(f"run {done}/{total}: rho={rho:g} {name}, seed {s}", flush=True)
                record = _run(cfg, data, train_data, name, s, rho)
                runs.append(record)
    info = dataset_info("synthetic")
    results = {
        "format": "deconfound-benchmark/1",
        "settings": settings,
        "metric": info.metric,
        "runs": runs,
        "seconds": round(time.perf_counter() - start, 1),
    }
    atomic_write_text(out / "results.json", json.dumps(results, indent=2) + "\n")
    table = results_table(results)
    atomic_write_text(out / "results.md", table + "\n")
    _plot(results, out / "results.png")
    print(table)
    print(
        f"results: {out / 'results.json'}, table: {out / 'results.md'}, plot: {out / 'results.png'}"
    )
    return results


def _check(model: str, methods: tuple[str, ...], seeds: int) -> None:
    if model not in CONTEXT_MODELS:
        raise ConfigError(f"unknown model '{model}'; choose from {', '.join(CONTEXT_MODELS)}")
    for m in methods:
        if m not in CONTEXT_METHODS:
            raise ConfigError(f"unknown method '{m}'; choose from {', '.join(CONTEXT_METHODS)}")
    if "none" not in methods:
        raise ConfigError("the benchmark compares every method with 'none': include it")
    if seeds < 1:
        raise ConfigError(f"--seeds must be at least 1, got {seeds}")


def draw_synthetic(base: Path, settings: dict[str, Any]) -> Path:
    synth = construct(SynthConfig, settings, "data.synthetic")
    return generate(synthetic_root(base, synth), synth, progress=show_progress())


def _reference_data(cfg: Config, data: EmotionDataModule) -> EmotionDataModule:
    """The reference's training data: the same generator, every scene as likely with every
    emotion (an unconfounded draw) of the training and validation splits only (it is tested on
    the confounded set's), cut into ``data``'s views."""
    unconfounded = copy.deepcopy(cfg.data)
    sizes = construct(SynthConfig, cfg.data.synthetic, "data.synthetic").sizes
    kept = {s: sizes[s] for s in (cfg.data.train_split, cfg.data.val_split) if s in sizes}
    unconfounded.synthetic = {**cfg.data.synthetic, "rho": 1 / len(EMOTIONS), "sizes": kept}
    unconfounded.test_splits = []
    unconfounded.root = str(draw_synthetic(Path(cfg.data.root).parent, unconfounded.synthetic))
    return EmotionDataModule(unconfounded, data.sizes)


def _run(
    cfg: Config,
    data: EmotionDataModule,
    train_data: EmotionDataModule,
    name: str,
    seed: int,
    rho: float,
) -> dict[str, Any]:
    """Train one (method, seed) on ``train_data`` (``data`` but for the unconfounded
    reference) unless finished, evaluate it on ``data``'s splits; its record."""
    run = copy.deepcopy(cfg)
    run.model.intervention = "none" if name == REFERENCE else name
    run.data = copy.deepcopy(train_data.cfg)
    run.trainer.seed = seed
    run.name = f"{cfg.model.name}-{name}-seed{seed}"
    config = run.to_dict()
    done = run.run_dir / "result.json"
    if done.is_file():
        record = json.loads(done.read_text())
        if record.get("config") == config:
            return record
    started = time.perf_counter()
    result = train(run, train_data)
    module = load_module(result.selected)
    splits = [cfg.data.val_split, *cfg.data.test_splits]
    metrics = evaluate(module, splits, data)  # the confounded set's splits, for every run
    record = {
        "method": name,
        "seed": seed,
        "rho": rho,
        "metrics": metrics,
        "val_score": result.best_score,
        "monitor": run.trainer.monitor,
        "checkpoint": str(result.selected),
        "seconds": round(time.perf_counter() - started, 1),
        "config": config,
    }
    atomic_write_text(done, json.dumps(record, indent=2) + "\n")
    return record


def views_for(cfg: Config, methods: tuple[str, ...]) -> tuple[str, ...]:
    """The views any of ``methods`` reads with the configured base model (decoded once)."""
    base = create_base(cfg.model, load_weights=False).views
    extra = [v for m in methods for v in METHODS[m].extra_views]
    return tuple(dict.fromkeys((*base, *extra)))


def build_scene_dictionary(
    cfg: Config, where: Path, scene_overrides: list[str], rho: float
) -> dict[str, Any]:
    """Pretrain the scene backbone on the set's person-free pictures, then build the dictionary
    into ``<where>/dictionary.safetensors`` (set as ``cfg.model.dictionary``); its summary."""
    scene = load_config(SCENE_CONFIG, scene_overrides)
    scene.data.root = cfg.data.root
    scene.data.synthetic = cfg.data.synthetic  # the same set, if it is still to be drawn
    scene.out_dir = cfg.out_dir
    scene.name = "scenes"
    scene_result = train(scene)
    log.info("scene classifier: val accuracy %.4f", scene_result.best_score)
    cfg.model.dictionary = str(where / "dictionary.safetensors")
    cfg.dictionary.backbone = scene.model.args["backbone"]
    cfg.dictionary.image_size = scene.data.view_sizes["whole"]
    cfg.dictionary.weights = str(scene_result.best_checkpoint)
    built = build_dictionary(cfg, progress=show_progress(cfg.trainer.progress_bar))
    info = dataset_info(cfg.data.dataset)
    plot = plot_cluster_classes(
        built.cluster_counts,
        info.classes,
        where / "clusters.png",
        title=f"emotions per context cluster (train, rho={rho:g})",
    )
    log.info("dictionary: %s; ARI vs scene type %.3f", built.path, built.ari)
    return {
        "path": str(built.path),
        "num_clusters": built.dictionary.size,
        "dim": built.dictionary.dim,
        "ari_vs_scene": built.ari,
        "scene_val_accuracy": scene_result.best_score,
        "plot": str(plot),
    }


# --- the generated table ---------------------------------------------------------------------


def summarise(results: dict[str, Any]) -> dict[str, Any]:
    """Per ρ and method, per split: the seeds' values, mean, sample standard deviation (ddof
    1) and 95 % t-interval of the mean; the paired difference to ``none`` over the seeds both
    have (mean and 95 % t-interval); and the share of the ``test_anti`` gap between ``none``
    and the reference that the method closes, (m − none) / (reference − none) of the means."""
    metric = results["metric"]
    out: dict[str, Any] = {}
    for rho in sorted({r["rho"] for r in results["runs"]}):
        runs = [r for r in results["runs"] if r["rho"] == rho]
        by_method: dict[str, dict[int, SplitMetrics]] = {}
        for r in runs:
            by_method.setdefault(r["method"], {})[r["seed"]] = r["metrics"]
        splits = list(next(iter(runs))["metrics"])
        rows: dict[str, Any] = {}
        for method, per_seed in by_method.items():
            row: dict[str, Any] = {}
            for split in splits:
                values = np.array([per_seed[s][split][metric] for s in sorted(per_seed)])
                cell = _interval(values)
                if "none" in by_method and method != "none":
                    common = sorted(set(per_seed) & set(by_method["none"]))
                    diff = np.array(
                        [
                            per_seed[s][split][metric] - by_method["none"][s][split][metric]
                            for s in common
                        ]
                    )
                    cell["vs_none"] = _interval(diff)
                row[split] = cell
            rows[method] = row
        anti = "test_anti"
        if REFERENCE in rows and "none" in rows and anti in splits:
            gap = rows[REFERENCE][anti]["mean"] - rows["none"][anti]["mean"]
            for method, row in rows.items():
                if method not in ("none", REFERENCE) and gap > 0:
                    row["gap_closed"] = (row[anti]["mean"] - rows["none"][anti]["mean"]) / gap
        out[f"{rho:g}"] = {"splits": splits, "methods": rows}
    return out


def _interval(values: np.ndarray) -> dict[str, Any]:
    """Mean, sample std and 95 % t-interval of the mean of ``values`` (half-width 0 for one)."""
    n = len(values)
    mean = float(values.mean())
    std = float(values.std(ddof=1)) if n > 1 else 0.0
    half = float(stats.t.ppf(0.975, n - 1) * std / np.sqrt(n)) if n > 1 else 0.0
    return {
        "values": [float(v) for v in values],
        "mean": mean,
        "std": std,
        "ci95": [mean - half, mean + half],
    }


def results_table(results: dict[str, Any]) -> str:
    """The Markdown table of :func:`summarise` (one section per ρ): every split's mean ± std
    [95 % interval], then each split's paired difference to ``none`` [95 % interval] and the
    share of the ``test_anti`` gap to the reference closed."""
    metric = results["metric"]
    seeds = results["settings"].get("seeds", [])
    lines = [
        f"{metric} of {results['settings'].get('model', '')} on the synthetic benchmark; "
        f"{len(seeds)} seeds; mean ± std (ddof 1) [95 % t-interval]; Δ = paired difference "
        "to none over the seeds; gap closed = share of the test_anti gap between none and the "
        "reference (the plain model trained on an unconfounded draw, evaluation only).",
    ]
    for rho, section in summarise(results).items():
        splits, rows = section["splits"], section["methods"]
        lines += ["", f"### rho = {rho}", ""]
        head = ["method", *splits, *(f"Δ {s}" for s in splits if s != "val"), "gap closed"]
        lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
        for method, row in rows.items():
            cells = [method]
            for s in splits:
                c = row[s]
                cells.append(
                    f"{c['mean']:.3f} ± {c['std']:.3f} [{c['ci95'][0]:.3f}, {c['ci95'][1]:.3f}]"
                )
            for s in splits:
                if s == "val":
                    continue
                d = row[s].get("vs_none")
                cells.append(
                    f"{d['mean']:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]" if d else ""
                )
            gap = row.get("gap_closed")
            cells.append(f"{gap:.0%}" if gap is not None else "")
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _plot(results: dict[str, Any], path: Path) -> None:
    """One bar chart per run of the benchmark's first ρ: mean ± std per split and method."""
    summary = summarise(results)
    rho, section = next(iter(summary.items()))
    metric = results["metric"]
    mean = {
        m: {s: {metric: row[s]["mean"]} for s in section["splits"]}
        for m, row in section["methods"].items()
    }
    std = {
        m: {s: {metric: row[s]["std"]} for s in section["splits"]}
        for m, row in section["methods"].items()
    }
    plot_split_metrics(
        mean,
        metric,
        path,
        std=std,
        chance=1 / len(EMOTIONS),
        title=f"{results['settings'].get('model')} on the synthetic benchmark "
        f"(rho={rho}; mean ± std)",
        legend_outside=True,
    )

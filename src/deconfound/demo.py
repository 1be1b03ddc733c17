"""``deconfound demo``: bias on the synthetic benchmarks, and the interventions against it.

**CCIM** (the default, :func:`run_demo`): a context-aware base model on the synthetic
emotion-in-context set. Under ``<out>`` (the data, the scene backbone and the dictionary are
shared by every base model):

1. draws the synthetic set (cached in ``data/``);
2. pretrains the scene backbone on its person-free ``scenes`` pictures (``runs/scenes``; the
   stand-in for Places365);
3. builds the confounder dictionary from the person-masked training images with that backbone
   (``dictionary.safetensors``, and ``clusters.png``: the emotions in each cluster);
4. trains the base model (``--model``: EMOT-Net by default, or any in ``CONTEXT_MODELS``) with each
   intervention (``none``, ``ccim_dot``, ``ccim_add``) and each seed, evaluates it on
   ``test_iid``, ``test_balanced`` and ``test_anti``;
5. writes ``<model>/results.json`` (per seed, mean and standard deviation per method) and
   ``<model>/results.png``, and prints the table.

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

from deconfound.causal.build import build_dictionary
from deconfound.config import Config, apply_override, construct, from_dict, load_config
from deconfound.data import EmotionDataModule, dataset_info, synthetic_root
from deconfound.data.synthetic import SynthConfig, generate
from deconfound.data.synthetic_faces import FaceSynthConfig
from deconfound.data.synthetic_faces import generate as generate_faces
from deconfound.diagnostics import format_table, plot_cluster_classes, plot_split_metrics
from deconfound.engine import evaluate, load_module, train
from deconfound.errors import ConfigError
from deconfound.io import atomic_write_text
from deconfound.models import CONTEXT_MODELS, create_model

log = logging.getLogger(__name__)

SCENE_CONFIG = "scenes_synthetic"
QUICK = [
    "trainer.max_epochs=6",
    "data.synthetic.sizes={train: 1400, val: 350, test_iid: 700, test_balanced: 700, "
    "test_anti: 700, scenes: 1400}",
]
METHODS = ("none", "ccim_dot", "ccim_add")
IERN_METHODS: dict[str, list[str]] = {
    "none": [],
    "confusion": ["model.intervention=iern", "model.intervention_args.adjust=false"],
    "iern": ["model.intervention=iern"],
}
"""The IERN demo's methods as overrides of ``faces_synthetic``."""
IERN_QUICK = ["trainer.max_epochs=7"]
SCENE_PREFIX = "scenes."

SplitMetrics = dict[str, dict[str, float]]  # split -> metric -> value


def run_demo(
    out: str | Path = "runs/demo",
    *,
    model: str = "emotnet",
    rho: float = 0.8,
    seed: int = 0,
    seeds: int = 3,
    methods: tuple[str, ...] = METHODS,
    quick: bool = False,
    overrides: list[str] | None = None,
) -> dict[str, Any]:
    """Run the demo; returns what it writes to ``results.json``.

    The data set is drawn with ``seed``; the models are trained with seeds ``seed`` …
    ``seed + seeds - 1``. ``overrides`` apply to the model's config, except those starting
    with ``scenes.``, which apply (without the prefix) to the scene classifier's config.
    """
    start = time.perf_counter()
    if model not in CONTEXT_MODELS:
        choices = ", ".join(CONTEXT_MODELS)
        raise ConfigError(f"demo: unknown model '{model}'; choose from {choices}")
    for m in methods:
        if m not in METHODS:
            choices = ", ".join(dict.fromkeys([*METHODS, *IERN_METHODS]))
            raise ConfigError(f"demo: unknown method '{m}'; choose from {choices}")
    if seeds < 1:
        raise ConfigError(f"demo: --seeds must be at least 1, got {seeds}")
    out = Path(out)
    scene_overrides = [
        o.removeprefix(SCENE_PREFIX) for o in overrides or [] if o.startswith(SCENE_PREFIX)
    ]
    model_overrides = [o for o in overrides or [] if not o.startswith(SCENE_PREFIX)]
    data_settings = [f"data.synthetic.rho={rho}", f"data.synthetic.seed={seed}"]
    cfg = load_config(
        f"{model}_synthetic", data_settings + (QUICK if quick else []) + model_overrides
    )
    synth = construct(SynthConfig, cfg.data.synthetic, "data.synthetic")
    cfg.data.root = str(generate(synthetic_root(out / "data", synth), synth))
    cfg.out_dir = str(out / "runs")
    log.info("data: %s", cfg.data.root)

    dictionary = None
    if any(m != "none" for m in methods):
        dictionary = _build_dictionary(cfg, out, scene_overrides)  # sets cfg.model.dictionary

    data = EmotionDataModule(cfg.data, _views(cfg))  # views decoded once for every run
    runs = {m: [f"model.intervention={m}"] for m in methods}
    per_seed = _train_seeds(cfg, data, runs, seed, seeds)
    return _report(
        per_seed,
        cfg,
        out / model,
        {"settings": {"model": model, "rho": rho, "data_seed": seed}, "dictionary": dictionary},
        f"{cfg.model.name} on the synthetic benchmark (rho={rho}",
        start,
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
    cfg.data.root = str(generate_faces(synthetic_root(out / "data", faces), faces))
    cfg.out_dir = str(out / "runs")
    log.info("data: %s", cfg.data.root)
    data = EmotionDataModule(cfg.data, _views(cfg))
    per_seed = _train_seeds(cfg, data, {m: IERN_METHODS[m] for m in methods}, seed, seeds)
    return _report(
        per_seed,
        cfg,
        out / "faces",
        {"settings": {"fold": fold, "data_seed": seed}},
        f"face classifiers on the synthetic facial-expression set ({fold}",
        start,
    )


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
            module = load_module(result.best_checkpoint)
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
    std = {m: _reduce(per_seed[m], np.std) for m in methods}  # over seeds, ddof = 0
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


def _views(cfg: Config) -> tuple[str, ...]:
    """The views the configured base model reads."""
    plain = copy.deepcopy(cfg.model)
    plain.intervention = "none"
    return create_model(plain, 1, load_weights=False).views


def _build_dictionary(cfg: Config, out: Path, scene_overrides: list[str]) -> dict[str, Any]:
    """Pretrain the scene backbone, then build the dictionary with it into
    ``<out>/dictionary.safetensors`` (set as ``cfg.model.dictionary``); returns its summary."""
    scene = load_config(SCENE_CONFIG, scene_overrides)
    scene.data.root = cfg.data.root
    scene.data.synthetic = cfg.data.synthetic  # the same set, if it is still to be drawn
    scene.out_dir = cfg.out_dir
    scene.name = "scenes"
    scene_result = train(scene)
    log.info("scene classifier: val accuracy %.4f", scene_result.best_score)
    cfg.model.dictionary = str(out / "dictionary.safetensors")
    cfg.dictionary.backbone = scene.model.args["backbone"]
    cfg.dictionary.image_size = scene.data.view_sizes["whole"]
    cfg.dictionary.weights = str(scene_result.best_checkpoint)
    built = build_dictionary(cfg, progress=cfg.trainer.progress_bar)
    info = dataset_info(cfg.data.dataset)
    plot = plot_cluster_classes(
        built.cluster_counts,
        info.classes,
        out / "clusters.png",
        title=f"emotions per context cluster (train, rho={cfg.data.synthetic.get('rho')})",
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


def _reduce(per_seed: dict[int, SplitMetrics], fn: Any) -> SplitMetrics:
    """Split → metric → ``fn`` over seeds."""
    runs = list(per_seed.values())
    return {
        split: {metric: float(fn([r[split][metric] for r in runs])) for metric in runs[0][split]}
        for split in runs[0]
    }

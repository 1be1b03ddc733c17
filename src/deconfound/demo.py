"""``deconfound demo``: a base model's context bias on the synthetic benchmark, and CCIM against it.

Under ``<out>`` (the data, the scene backbone and the dictionary are shared by every base model):

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
from deconfound.config import Config, load_config
from deconfound.data import EmotionDataModule, dataset_info, synthetic_root
from deconfound.data.synthetic import SynthConfig, generate
from deconfound.diagnostics import format_table, plot_cluster_classes, plot_split_metrics
from deconfound.engine import evaluate, load_module, train
from deconfound.errors import ConfigError
from deconfound.io import atomic_write_text
from deconfound.models import CONTEXT_MODELS, INTERVENTIONS, create_model

log = logging.getLogger(__name__)

SCENE_CONFIG = "scenes_synthetic"
QUICK = [
    "trainer.max_epochs=6",
    "data.synthetic.sizes={train: 1400, val: 350, test_iid: 700, test_balanced: 700, "
    "test_anti: 700, scenes: 1400}",
]
METHODS = ("none", "ccim_dot", "ccim_add")
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
        if m not in INTERVENTIONS:
            raise ConfigError(f"demo: unknown method '{m}'; choose from {', '.join(INTERVENTIONS)}")
    if seeds < 1:
        raise ConfigError(f"demo: --seeds must be at least 1, got {seeds}")
    out = Path(out)
    scene_overrides = [
        o.removeprefix(SCENE_PREFIX) for o in overrides or [] if o.startswith(SCENE_PREFIX)
    ]
    model_overrides = [o for o in overrides or [] if not o.startswith(SCENE_PREFIX)]
    settings = [f"data.synthetic.rho={rho}", f"data.synthetic.seed={seed}"]
    cfg = load_config(f"{model}_synthetic", settings + (QUICK if quick else []) + model_overrides)
    synth = SynthConfig(**cfg.data.synthetic)
    cfg.data.root = str(generate(synthetic_root(out / "data", synth), synth))
    cfg.out_dir = str(out / "runs")
    log.info("data: %s", cfg.data.root)
    info = dataset_info(cfg.data.dataset)

    dictionary = None
    if any(m != "none" for m in methods):
        dictionary = _build_dictionary(cfg, out, scene_overrides)  # sets cfg.model.dictionary

    data = EmotionDataModule(cfg.data, _views(cfg))  # views decoded once for every run
    per_seed: dict[str, dict[int, SplitMetrics]] = {m: {} for m in methods}
    for method in methods:
        for s in range(seed, seed + seeds):
            run = copy.deepcopy(cfg)
            run.model.intervention = method
            if method == "none":
                run.model.dictionary = None  # not part of a plain model's config
            run.trainer.seed = s
            run.name = f"{cfg.model.name}-{method}-seed{s}"
            result = train(run, data)
            module = load_module(result.best_checkpoint)
            per_seed[method][s] = evaluate(module, cfg.data.test_splits, data)

    mean = {m: _reduce(per_seed[m], np.mean) for m in methods}
    std = {m: _reduce(per_seed[m], np.std) for m in methods}  # over seeds, ddof = 0
    results = {
        "settings": {
            "model": model,
            "rho": rho,
            "data_seed": seed,
            "seeds": list(range(seed, seed + seeds)),
        },
        "metric": info.metric,
        "dictionary": dictionary,
        "methods": {m: {"per_seed": per_seed[m], "mean": mean[m], "std": std[m]} for m in methods},
        "seconds": round(time.perf_counter() - start, 1),
    }
    results_dir = out / model
    atomic_write_text(results_dir / "results.json", json.dumps(results, indent=2) + "\n")
    plot_split_metrics(
        mean,
        info.metric,
        results_dir / "results.png",
        std=std,
        chance=1 / info.num_classes,
        title=f"{cfg.model.name} on the synthetic benchmark (rho={rho}; mean ± std of "
        f"{seeds} seed{'s' if seeds > 1 else ''})",
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

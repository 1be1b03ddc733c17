"""``deconfound benchmark``: methods × seeds (× confounding strengths × dictionaries) on the
synthetic benchmark, measured side by side, with a generated table.

For each strength ρ the synthetic set is drawn once and, for each dictionary source, the
confounder dictionary built once; every method then trains with every seed on that set.

- **Dictionaries** (:data:`DICTIONARIES`): ``imagenet`` (the default) embeds the person-masked
  pictures with torchvision's ImageNet MobileNetV2, a network that never saw the generator nor
  its scene types, as a user of EMOTIC would; ``oracle`` pretrains a scene classifier on the
  generator's person-free pictures labelled with the hidden scene type (the confounder's own
  values), for comparison only.
- **Ceilings**: every method (``ceilings="all"``), or only the plain one (``"plain"``), also
  trains on an *unconfounded* draw of the same generator (every scene as likely with every
  emotion) and is evaluated on the confounded set's test splits. A method's own ceiling says
  how far it could get without the bias; ``none``'s ceiling (the *reference*) says how far a
  plain reader of the person gets. Evaluation only: a user has no such copy of their data.
- **Selection rules** (:data:`RULES`): each run keeps its best checkpoint under plain
  validation accuracy, the cluster-reweighted validation accuracy and the worst-group
  validation accuracy, and its last one; each is evaluated, and the table shows every method
  under every rule.

Finished runs are kept (``<run>/result.json``) and skipped when the benchmark is run again; an
interrupted run resumes from its last checkpoint.

Outputs under ``out``: ``results.json`` (every run's metrics under every rule, checkpoints and
config), ``results.md`` (the table: :func:`results_table`), ``results.png``.
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
from deconfound.methods import CONTEXT_METHODS, METHODS, resolved_args
from deconfound.models import CONTEXT_MODELS, create_base
from deconfound.pipelines.dictionary import build_dictionary
from deconfound.progress import show_progress

log = logging.getLogger(__name__)

SCENE_CONFIG = "scenes_synthetic"
SCENE_PREFIX = "scenes."
REFERENCE = "reference"
"""The plain model's ceiling: ``none`` trained on the unconfounded draw."""
CONFOUNDED, UNCONFOUNDED = "confounded", "unconfounded"
DICTIONARIES = {
    "imagenet": [
        "dictionary.backbone=mobilenet_v2",
        "dictionary.weights=IMAGENET1K_V1",
        "dictionary.image_size=128",
    ],
    "oracle": [],  # the scene classifier pretrained on the hidden scene types (SCENE_CONFIG)
}
"""Where the benchmark's confounder dictionary comes from: the dictionary options of each
source (overrides of the model config's, before the user's own)."""
CEILINGS = ("all", "plain", "off")
RULES = ("plain", "reweighted", "worst_group", "last")
"""The checkpoint selection rules every run is scored under (``trainer.monitor``'s and the
last epoch's)."""
DEFAULT_RULE = "plain"
"""The rule of the headline columns (see the README for the evidence behind it)."""
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
    dictionaries: tuple[str, ...] = ("imagenet",),
    seed: int = 0,
    seeds: int = 3,
    ceilings: str = "all",
    quick: bool = False,
    overrides: list[str] | None = None,
) -> dict[str, Any]:
    """Run (or complete) the benchmark and write its results; returns ``results.json``'s
    content. Data are drawn with ``seed``; models train with seeds ``seed`` … ``seed + seeds
    − 1``. ``overrides`` apply to every run's config, except those starting with ``scenes.``,
    which apply (without the prefix) to the oracle's scene classifier's."""
    start = time.perf_counter()
    _check(model, methods, seeds, dictionaries, ceilings)
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
        "dictionaries": list(dictionaries),
        "ceilings": ceilings,
        "rules": list(RULES),
        "default_rule": DEFAULT_RULE,
    }
    jobs = [
        (name, trained_on)
        for name in methods
        for trained_on in (CONFOUNDED, UNCONFOUNDED)
        if trained_on == CONFOUNDED or ceilings == "all" or (ceilings == "plain" and name == "none")
    ]
    total, done = len(rhos) * len(dictionaries) * len(jobs) * seeds, 0
    for rho in rhos:
        drawn = [f"data.synthetic.rho={rho}", f"data.synthetic.seed={seed}"]
        drawn += QUICK if quick else []
        base = load_config(f"{model}_synthetic", drawn + model_overrides)
        base.data.root = str(draw_synthetic(out / "data", base.data.synthetic))
        settings[f"rho{rho:g}"] = {"data": base.data.root}
        data = EmotionDataModule(base.data, views_for(base, methods))
        unconfounded = _unconfounded_data(base, data) if len(jobs) > len(methods) else None
        for source in dictionaries:
            where = out / f"rho{rho:g}" / source
            # the source's dictionary options first: the user's overrides may change them
            cfg = load_config(f"{model}_synthetic", drawn + DICTIONARIES[source] + model_overrides)
            cfg.data.root = base.data.root
            cfg.out_dir = str(where / "runs")
            summary = build_benchmark_dictionary(cfg, source, where, scene_overrides, rho)
            settings[f"rho{rho:g}"][source] = summary
            for name, trained_on in jobs:
                train_data = data if trained_on == CONFOUNDED else unconfounded
                assert train_data is not None
                for s in range(seed, seed + seeds):
                    done += 1
                    what = name if trained_on == CONFOUNDED else f"{name} (ceiling)"
                    print(f"run {done}/{total}: rho={rho:g} {source} {what}, seed {s}", flush=True)
                    runs.append(_run(cfg, data, train_data, name, trained_on, s, rho, source))
    info = dataset_info("synthetic")
    results = {
        "format": "deconfound-benchmark/2",
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


def _check(
    model: str, methods: tuple[str, ...], seeds: int, dictionaries: tuple[str, ...], ceilings: str
) -> None:
    if model not in CONTEXT_MODELS:
        raise ConfigError(f"unknown model '{model}'; choose from {', '.join(CONTEXT_MODELS)}")
    for m in methods:
        if m not in CONTEXT_METHODS:
            raise ConfigError(f"unknown method '{m}'; choose from {', '.join(CONTEXT_METHODS)}")
    if "none" not in methods:
        raise ConfigError("the benchmark compares every method with 'none': include it")
    if seeds < 1:
        raise ConfigError(f"--seeds must be at least 1, got {seeds}")
    for d in dictionaries:
        if d not in DICTIONARIES:
            raise ConfigError(f"unknown dictionary '{d}'; choose from {', '.join(DICTIONARIES)}")
    if not dictionaries:
        raise ConfigError("give at least one dictionary source")
    if ceilings not in CEILINGS:
        raise ConfigError(f"unknown ceilings '{ceilings}'; choose from {', '.join(CEILINGS)}")


def draw_synthetic(base: Path, settings: dict[str, Any]) -> Path:
    synth = construct(SynthConfig, settings, "data.synthetic")
    return generate(synthetic_root(base, synth), synth, progress=show_progress())


def _unconfounded_data(cfg: Config, data: EmotionDataModule) -> EmotionDataModule:
    """The ceilings' training data: the same generator, every scene as likely with every
    emotion (an unconfounded draw) of the training and validation splits only (they are tested
    on the confounded set's), cut into ``data``'s views."""
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
    trained_on: str,
    seed: int,
    rho: float,
    source: str,
) -> dict[str, Any]:
    """Train one (method, seed) on ``train_data`` (``data``, or the unconfounded draw for a
    ceiling) unless finished, and evaluate the checkpoint of every selection rule on ``data``'s
    splits; its record (``metrics``: under :data:`DEFAULT_RULE`; ``by_rule``: under each)."""
    run = copy.deepcopy(cfg)
    run.model.intervention = name
    run.model.intervention_args = resolved_args(run.model)  # as train records them
    run.data = copy.deepcopy(train_data.cfg)
    run.trainer.seed = seed
    run.trainer.keep_best_by = [r for r in RULES if r != "last"]
    ceiling = "" if trained_on == CONFOUNDED else "-ceiling"
    run.name = f"{cfg.model.name}-{name}{ceiling}-seed{seed}"
    config = run.to_dict()
    done = run.run_dir / "result.json"
    if done.is_file():
        record = json.loads(done.read_text())
        if record.get("config") == config:
            return record
    started = time.perf_counter()
    result = train(run, train_data)
    splits = [cfg.data.val_split, *cfg.data.test_splits]
    by_rule = {}
    for rule in RULES:  # the confounded set's splits, for every run
        by_rule[rule] = evaluate(load_module(result.by_rule[rule]), splits, data)
    record = {
        "method": name,
        "trained_on": trained_on,
        "dictionary": source,
        "seed": seed,
        "rho": rho,
        "metrics": by_rule[DEFAULT_RULE],
        "by_rule": by_rule,
        "val_score": result.best_score,
        "checkpoint": str(result.by_rule[DEFAULT_RULE]),
        "checkpoints": {rule: str(path) for rule, path in result.by_rule.items()},
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


def build_benchmark_dictionary(
    cfg: Config, source: str, where: Path, scene_overrides: list[str], rho: float
) -> dict[str, Any]:
    """Build the dictionary of ``source`` from the training split into
    ``<where>/dictionary.safetensors`` (set as ``cfg.model.dictionary``); its summary. The
    oracle first pretrains the scene backbone on the set's person-free pictures labelled with
    their hidden scene types; ``imagenet`` takes the configured backbone and weights as they
    are."""
    summary: dict[str, Any] = {}
    if source == "oracle":
        scene = load_config(SCENE_CONFIG, scene_overrides)
        scene.data.root = cfg.data.root
        scene.data.synthetic = cfg.data.synthetic  # the same set, if it is still to be drawn
        scene.out_dir = str(where.parent / "scenes")
        scene.name = "scenes"
        scene_result = train(scene)
        log.info("scene classifier: val accuracy %.4f", scene_result.best_score)
        cfg.dictionary.backbone = scene.model.args["backbone"]
        cfg.dictionary.image_size = scene.data.view_sizes["whole"]
        cfg.dictionary.weights = str(scene_result.best_checkpoint)
        summary["scene_val_accuracy"] = scene_result.best_score
    cfg.model.dictionary = str(where / "dictionary.safetensors")
    built = build_dictionary(cfg, progress=show_progress(cfg.trainer.progress_bar))
    info = dataset_info(cfg.data.dataset)
    plot = plot_cluster_classes(
        built.cluster_counts,
        info.classes,
        where / "clusters.png",
        title=f"emotions per context cluster (train, rho={rho:g}, {source})",
    )
    log.info("dictionary: %s; ARI vs scene type %.3f", built.path, built.ari)
    return {
        "path": str(built.path),
        "backbone": cfg.dictionary.backbone,
        "weights": cfg.dictionary.weights,
        "image_size": cfg.dictionary.image_size,
        "num_clusters": built.dictionary.size,
        "dim": built.dictionary.dim,
        "ari_vs_scene": built.ari,
        **summary,
        "plot": str(plot),
    }


# --- the generated table ---------------------------------------------------------------------

ANTI = "test_anti"
BOOTSTRAP = 2000


def summarise(results: dict[str, Any]) -> dict[str, Any]:
    """Per ρ, dictionary source and selection rule: per method, per split, the seeds' values,
    mean, sample standard deviation (ddof 1) and 95 % t-interval of the mean, and the paired
    difference to ``none`` over the seeds both have; the same for each method's ceiling (the
    method trained on the unconfounded draw); and the share of the ``test_anti`` gap that a
    method closes, (m − none) / (ceiling − none) of the means, against its own ceiling
    (``gap_own``) and against ``none``'s (``gap_reference``), each with a 95 % bootstrap
    interval over the seeds (:func:`_gap`)."""
    metric = results["metric"]
    out: dict[str, Any] = {}
    for rho in sorted({r["rho"] for r in results["runs"]}):
        for source in dict.fromkeys(r["dictionary"] for r in results["runs"] if r["rho"] == rho):
            runs = [r for r in results["runs"] if r["rho"] == rho and r["dictionary"] == source]
            splits = list(runs[0]["metrics"])
            rules: dict[str, Any] = {}
            for rule in RULES:
                table: dict[str, dict[str, dict[int, dict[str, float]]]] = {}
                for r in runs:
                    values = {s: r["by_rule"][rule][s][metric] for s in splits}
                    table.setdefault(r["trained_on"], {}).setdefault(r["method"], {})
                    table[r["trained_on"]][r["method"]][r["seed"]] = values
                rules[rule] = _section(table, splits)
            out.setdefault(f"{rho:g}", {})[source] = {"splits": splits, "rules": rules}
    return out


def _section(
    table: dict[str, dict[str, dict[int, dict[str, float]]]], splits: list[str]
) -> dict[str, Any]:
    """One rule's rows: ``methods`` (trained on the confounded set) and ``ceilings``."""
    confounded, ceilings = table.get(CONFOUNDED, {}), table.get(UNCONFOUNDED, {})
    none = confounded.get("none", {})
    rows: dict[str, Any] = {"methods": {}, "ceilings": {}}
    for kind, group in (("methods", confounded), ("ceilings", ceilings)):
        for method, per_seed in group.items():
            row: dict[str, Any] = {}
            for split in splits:
                cell = _interval(np.array([per_seed[s][split] for s in sorted(per_seed)]))
                common = sorted(set(per_seed) & set(none))
                if kind == "methods" and method != "none" and common:
                    diff = [per_seed[s][split] - none[s][split] for s in common]
                    cell["vs_none"] = _interval(np.array(diff))
                row[split] = cell
            rows[kind][method] = row
    if ANTI in splits and none:
        for method, per_seed in confounded.items():
            if method == "none":
                continue
            row = rows["methods"][method]
            for key, ceiling in (("gap_own", method), ("gap_reference", "none")):
                if ceiling in ceilings:
                    row[key] = _gap(per_seed, none, ceilings[ceiling])
    return rows


def _gap(
    method: dict[int, dict[str, float]],
    none: dict[int, dict[str, float]],
    ceiling: dict[int, dict[str, float]],
) -> dict[str, Any] | None:
    """The share of ``test_anti``'s gap between ``none`` and ``ceiling`` that ``method``
    closes, (m − none) / (ceiling − none) of the means over the seeds all three have, with a
    95 % percentile interval from resampling those seeds (paired, :data:`BOOTSTRAP` draws,
    fixed seed); None when the ceiling does not lie above ``none``."""
    seeds = sorted(set(method) & set(none) & set(ceiling))
    if not seeds:
        return None
    m, n, c = (np.array([d[s][ANTI] for s in seeds]) for d in (method, none, ceiling))
    gap = c.mean() - n.mean()
    if gap <= 0:
        return None
    draws = np.random.default_rng(0).integers(0, len(seeds), (BOOTSTRAP, len(seeds)))
    num, den = m[draws].mean(1) - n[draws].mean(1), c[draws].mean(1) - n[draws].mean(1)
    ratios = np.where(den > 0, num / np.where(den > 0, den, 1), np.nan)
    low, high = np.nanpercentile(ratios, [2.5, 97.5])
    return {"mean": float((m.mean() - n.mean()) / gap), "ci95": [float(low), float(high)]}


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
    """The Markdown tables of :func:`summarise`, one section per ρ and dictionary: under the
    default rule, every split's mean ± std [95 % interval], each split's paired difference to
    ``none``, the ceilings and the share of the ``test_anti`` gap closed (against the method's
    own ceiling and against the reference's); then ``test_anti`` (and ``test_iid``) of every
    method under every selection rule."""
    metric = results["metric"]
    settings = results["settings"]
    seeds = settings.get("seeds", [])
    lines = [
        f"{metric} of {settings.get('model', '')} on the synthetic benchmark; {len(seeds)} seeds "
        f"(data seed {settings.get('data_seed')}); mean ± std (ddof 1) [95 % t-interval]; "
        "Δ = paired difference to none over the seeds; ceiling = the same method trained on an "
        "unconfounded draw (evaluation only; the reference is none's); gap closed = (method − "
        "none) / (ceiling − none) on test_anti, against the method's own ceiling and against "
        f"the reference's [95 % bootstrap interval over the seeds]. Checkpoints chosen by "
        f"{DEFAULT_RULE} validation accuracy unless the rule table says otherwise.",
    ]
    for rho, sources in summarise(results).items():
        for source, section in sources.items():
            d = settings.get(f"rho{rho}", {}).get(source, {})
            ari = (
                f"; ARI vs the hidden scene {d['ari_vs_scene']:.3f}" if "ari_vs_scene" in d else ""
            )
            lines += [
                "",
                f"### rho = {rho}, dictionary: {source} ({d.get('backbone', '?')}{ari})",
                "",
            ]
            lines += _main_table(section["splits"], section["rules"][DEFAULT_RULE])
            lines += ["", "Selection rules: test_anti mean ± std (test_iid mean)", ""]
            lines += _rule_table(section)
    return "\n".join(lines)


def _cell(c: dict[str, Any]) -> str:
    return f"{c['mean']:.3f} ± {c['std']:.3f} [{c['ci95'][0]:.3f}, {c['ci95'][1]:.3f}]"


def _delta(d: dict[str, Any]) -> str:
    return f"{d['mean']:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]"


def _main_table(splits: list[str], rows: dict[str, Any]) -> list[str]:
    tests = [s for s in splits if s != "val"]
    ceiling_splits = [s for s in ("test_iid", ANTI) if s in splits]
    head = [
        "method",
        *splits,
        *(f"Δ {s}" for s in tests),
        *(f"ceiling {s}" for s in ceiling_splits),
        "gap closed (own ceiling)",
        "gap closed (reference)",
    ]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method, row in rows["methods"].items():
        ceiling = rows["ceilings"].get(method, {})
        cells = [method, *(_cell(row[s]) for s in splits)]
        for s in tests:
            d = row[s].get("vs_none")
            cells.append(
                f"{d['mean']:+.3f} [{d['ci95'][0]:+.3f}, {d['ci95'][1]:+.3f}]" if d else ""
            )
        for s in ceiling_splits:
            cells.append(f"{ceiling[s]['mean']:.3f} ± {ceiling[s]['std']:.3f}" if ceiling else "")
        for key in ("gap_own", "gap_reference"):
            g = row.get(key)
            cells.append(f"{g['mean']:.0%} [{g['ci95'][0]:.0%}, {g['ci95'][1]:.0%}]" if g else "")
        lines.append("| " + " | ".join(cells) + " |")
    if "none" in rows["ceilings"]:
        ref = rows["ceilings"]["none"]
        cells = [REFERENCE, *(_cell(ref[s]) for s in splits)]
        cells += [""] * (len(head) - len(cells))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _rule_table(section: dict[str, Any]) -> list[str]:
    head = ["method", *RULES]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    first = section["rules"][RULES[0]]
    names = [(m, "methods") for m in first["methods"]]
    names += [(m, "ceilings") for m in first["ceilings"]]
    for method, kind in names:
        label = (
            method
            if kind == "methods"
            else (REFERENCE if method == "none" else f"{method} (ceiling)")
        )
        cells = [label]
        for rule in RULES:
            row = section["rules"][rule][kind][method]
            anti, iid = row.get(ANTI), row.get("test_iid")
            text = f"{anti['mean']:.3f} ± {anti['std']:.3f}" if anti else ""
            cells.append(text + (f" ({iid['mean']:.3f})" if iid else ""))
        lines.append("| " + " | ".join(cells) + " |")
    return lines


def _plot(results: dict[str, Any], path: Path) -> None:
    """One bar chart of the first ρ and dictionary, under the default rule: mean ± std per
    split of every method and of the reference."""
    summary = summarise(results)
    rho, sources = next(iter(summary.items()))
    source, section = next(iter(sources.items()))
    rows = section["rules"][DEFAULT_RULE]
    shown = dict(rows["methods"])
    if "none" in rows["ceilings"]:
        shown[REFERENCE] = rows["ceilings"]["none"]
    metric = results["metric"]
    mean = {m: {s: {metric: row[s]["mean"]} for s in section["splits"]} for m, row in shown.items()}
    std = {m: {s: {metric: row[s]["std"]} for s in section["splits"]} for m, row in shown.items()}
    plot_split_metrics(
        mean,
        metric,
        path,
        std=std,
        chance=1 / len(EMOTIONS),
        title=f"{results['settings'].get('model')} on the synthetic benchmark "
        f"(rho={rho}, {source} dictionary; mean ± std)",
        legend_outside=True,
    )

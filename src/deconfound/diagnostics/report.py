"""``deconfound bias-report``: how strongly a data set's context predicts its emotions, and how
much the accuracy of one or more models depends on it.

Four measurements, written to one folder as PNG figures, a self-contained HTML page
(``report.html``) and ``report.json``:

1. **clusters**: each training sample's person-masked image is embedded by the scene backbone
   and put in a context cluster: the nearest centre of a confounder dictionary, or K-means
   clusters made as ``deconfound dictionary build`` makes them. P(emotion | cluster), and the
   dependence between cluster and emotion (normalised and adjusted mutual information,
   Cramér's V);
2. **a context-only probe**: logistic regression from those embeddings to the emotion, fitted on
   the training split and scored on it and on the validation and test splits
   (``data.test_splits``), against chance;
3. **models** (one per checkpoint, side by side): their metrics on those splits
   (``engine.evaluate``), their confusion matrices (multi-class) or per-class average
   precision (multi-label), and where the data set records each sample's scene and the emotion
   it favours (the synthetic set), the share of their errors that answer that emotion;
4. **what an intervention does** (per CCIM checkpoint): the entropy of its attention λ over
   the prototypes, how often λ's argmax is the sample's own context cluster, the share of the
   expected confounder g in the fused feature, and the metric with g frozen at its training
   mean (``diagnostics.intervention``).

Each headline figure (NMI, Cramér's V, the probe's and the models' metric per held-out split)
comes with its 95 % bootstrap interval over the samples (``diagnostics.bias``'s
``INTERVAL``), and the report records how it was made: the command, the resolved config, the
versions and the date (``provenance``).
"""

from __future__ import annotations

import logging
import os
import platform
import shutil
import tempfile
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Subset

from deconfound.causal.dictionary import ConfounderDictionary
from deconfound.causal.kmeans import kmeans
from deconfound.config import Config, apply_override, from_dict, load_config
from deconfound.data.datamodule import EmotionDataModule, EpochShuffle, Reader, open_reader
from deconfound.data.sample import DatasetInfo, Sample
from deconfound.diagnostics.bias import (
    INTERVAL,
    RESAMPLES,
    class_ap,
    cluster_stats,
    confusion,
    context_probe,
    score_interval,
)
from deconfound.diagnostics.intervention import ccim_numbers, ccim_of, model_pass, scene_errors
from deconfound.errors import DataError, DeconfoundError
from deconfound.pipelines.dictionary import (
    confounders,
    embed_contexts,
    label_matrix,
    scene_backbone,
)
from deconfound.pipelines.strata import assign_clusters, embedding_settings

log = logging.getLogger(__name__)

DEFAULT_CONFIG = "emotnet_synthetic"
"""The data set a report reads when given no config: the demo's synthetic confounded set."""
FORMAT = "deconfound-bias-report/2"


@dataclass(frozen=True)
class BiasReport:
    """A written report: its files, its numbers (``report.json``'s content), and the arrays
    behind them (not in the JSON): each training sample's cluster, and per split the masked-
    context embeddings and the (N, C) multi-hot labels."""

    out_dir: Path
    html: Path
    json: Path
    figures: dict[str, Path]
    numbers: dict[str, Any]
    assignments: np.ndarray
    features: dict[str, np.ndarray]
    labels: dict[str, np.ndarray]


def bias_report(
    cfg: Config | str | Path = DEFAULT_CONFIG,
    *,
    out_dir: str | Path,
    dictionary: str | Path | None = None,
    checkpoints: Sequence[str | Path] = (),
    overrides: list[str] | None = None,
    progress: bool = True,
    command: str | None = None,
) -> BiasReport:
    """Measure the context bias of ``cfg``'s data set (a config, or a config's name or path with
    ``overrides``) and of the model of each of ``checkpoints`` (side by side); write the report
    to ``out_dir``, recording ``command`` (the command line that made it) in its provenance.

    Clusters come from ``dictionary`` (its samples assigned to the nearest centre, embedded with
    the backbone, weights and masking its metadata names), else from K-means as ``cfg``'s
    ``dictionary`` section says. Nothing is written unless every part succeeds.
    """
    from deconfound.diagnostics.report_page import write_report

    cfg = _resolve(cfg, overrides)
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise DeconfoundError(f"--out {out} is a file; give a folder for the report")
    loaded = ConfounderDictionary.load(dictionary) if dictionary else None
    if isinstance(checkpoints, str | Path):
        checkpoints = [checkpoints]
    modules = [_load_model(c, cfg) for c in checkpoints]
    reader = open_reader(cfg.data)
    info, train = reader.info, cfg.data.train_split
    samples = _samples(cfg, reader)
    labels = {s: label_matrix(v, info.num_classes) for s, v in samples.items()}
    _check_classes(labels[train], info, cfg)
    k = loaded.size if loaded is not None else cfg.dictionary.num_clusters
    if k > len(samples[train]):
        raise DeconfoundError(
            f"dictionary.num_clusters={k} exceeds the {len(samples[train])} training samples; "
            "lower it"
        )
    d, notes = embedding_settings(cfg, loaded, dictionary)
    features, meta = _features(
        replace(cfg, dictionary=d), samples, info, loaded, dictionary, progress
    )
    if loaded is not None:
        notes += _provenance(loaded, meta, dictionary)
        centres = loaded.centres.numpy()
    else:
        centres = kmeans(features[train], k, backend=d.kmeans, iters=d.iters, seed=d.seed).centres
    strata = {s: assign_clusters(f, centres) for s, f in features.items()}
    assignments = strata[train]
    embedding = ("backbone", "weights", "weights_sha256", "mask_fill", "image_size")
    numbers: dict[str, Any] = {
        "format": FORMAT,
        "dataset": _dataset_numbers(cfg, info, samples),
        "embedding": {key: meta[key] for key in embedding},
        "clusters": {
            "source": "dictionary" if loaded is not None else "kmeans",
            "dictionary": str(dictionary) if dictionary else None,
            **cluster_stats(assignments, labels[train], k, info, confounders(samples[train])),
        },
        "probe": context_probe(features, labels, train, info),
        "models": [
            {"label": label, **_model_numbers(m, c, cfg, samples, info, features, loaded, strata)}
            for label, m, c in zip(_labels(checkpoints), modules, checkpoints, strict=True)
        ],
        "interval": {**INTERVAL, "resamples": RESAMPLES},
        "notes": notes,
        "provenance": _made_by(cfg, command),
    }
    files = write_report(out, numbers, info)
    figures = {name: path for name, path in files.items() if name not in ("html", "json")}
    return BiasReport(
        out, files["html"], files["json"], figures, numbers, assignments, features, labels
    )


def group_scores(scores: np.ndarray, targets: np.ndarray, strata: np.ndarray) -> dict[str, float]:
    """Re-weighted and worst-group accuracy (:mod:`deconfound.engine.metrics`) of the class
    ``scores`` (N, C) against ``targets`` (N,) with the samples' context clusters."""
    from deconfound.engine.metrics import reweighted_accuracy, worst_group_accuracy

    y, z = torch.as_tensor(targets).long(), torch.as_tensor(strata).long()
    correct = torch.as_tensor(scores).argmax(-1) == y
    return {
        "accuracy_reweighted": float(reweighted_accuracy(correct, y, z)),
        "accuracy_worst_group": float(worst_group_accuracy(correct, y, z)),
    }


def _scored_rows(loader: Any) -> np.ndarray:
    """The split's sample indices that ``loader`` serves, in its order."""
    dataset = loader.dataset
    if isinstance(dataset, Subset):
        return np.asarray(dataset.indices)
    return np.arange(len(dataset))


def _swap_gaps(
    module: Any, splits: list[str], strata: dict[str, np.ndarray], data: EmotionDataModule
) -> tuple[dict[str, Any] | None, str | None]:
    """The context-swap gap of each split, or (None, why) where the data have no masks."""
    from deconfound.diagnostics.swap import context_swap_gap

    try:
        gaps = {s: context_swap_gap(module, s, strata[s], data=data).as_dict() for s in splits}
    except DataError as e:
        return None, str(e)
    return gaps, None


def iern_numbers(module: Any, data: EmotionDataModule, split: str) -> dict[str, Any] | None:
    """An IERN model's diagnostics over ``split`` of ``data``; None for any other model. Its
    batches are mixed as training mixes them (a seeded shuffle; without augmentation): in
    training mode the batch-norm layers normalise by the batch, and batches of the split in
    order (one person, one source each) would show another model."""
    from torch.utils.data import DataLoader

    from deconfound.diagnostics.iern import diagnose
    from deconfound.models.classifier import IERNClassifier

    if not isinstance(module.model, IERNClassifier):
        return None
    dataset = data.dataset(split)
    order = EpochShuffle(dataset, seed=0)  # plain indices: no augmentation drawn
    loader = DataLoader(dataset, batch_size=data.cfg.batch_size, sampler=order)
    net = module.model  # left as it was: buffers, mode, gradients and random stream
    device = next(net.parameters()).device
    batches = (
        ({k: v.to(device) for k, v in views.items()}, y.to(device), z.to(device))
        for views, y, z in loader
    )
    numbers = diagnose(net, batches, module.loss)
    return {"split": split, "method": module.cfg.model.intervention, **numbers}


def _labels(checkpoints: Sequence[str | Path]) -> list[str]:
    """A short name per checkpoint: its run's folder (``runs/NAME/checkpoints/best.ckpt`` →
    NAME; another file than best.ckpt adds its stem), numbered where names repeat."""
    names = []
    for c in map(Path, checkpoints):
        run = c.parent.parent.name if c.parent.name == "checkpoints" else c.parent.name
        names.append(run if c.name == "best.ckpt" else f"{run}/{c.stem}" if run else c.stem)
    return [
        f"{name} ({names[:i].count(name) + 1})" if names.count(name) > 1 else name
        for i, name in enumerate(names)
    ]


def _made_by(cfg: Config, command: str | None) -> dict[str, Any]:
    """The report's provenance: the command, the resolved config, the versions, the date."""
    import sklearn

    from deconfound import __version__

    return {
        "command": command,
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "deconfound": __version__,
        "python": platform.python_version(),
        "torch": torch.__version__,
        "scikit-learn": sklearn.__version__,
        "host": platform.node(),
        "config": cfg.to_dict(),
    }


def _resolve(cfg: Config | str | Path, overrides: list[str] | None) -> Config:
    if not isinstance(cfg, Config):
        return load_config(cfg, overrides)
    if not overrides:
        return cfg
    raw = cfg.to_dict()
    for item in overrides:
        apply_override(raw, item)
    return from_dict(Config, raw, "overrides")


def _load_model(checkpoint: str | Path, cfg: Config) -> Any:
    """The checkpoint's module, refused when it was trained on another data set."""
    from deconfound.engine.run import load_module

    if not Path(checkpoint).is_file():
        raise DeconfoundError(
            f"checkpoint {checkpoint} not found; give a .ckpt file that `deconfound train` "
            "wrote (runs/NAME/checkpoints/best.ckpt)"
        )
    module = load_module(checkpoint)
    trained_on = module.cfg.data.dataset
    if trained_on != cfg.data.dataset:
        raise DeconfoundError(
            f"checkpoint {checkpoint} was trained on data set '{trained_on}', not on "
            f"'{cfg.data.dataset}'; give the config of its data set (--config) or a checkpoint "
            f"trained on {cfg.data.dataset}"
        )
    return module


def _samples(cfg: Config, reader: Reader) -> dict[str, list[Sample]]:
    """The training split's samples, then those of the config's validation and test splits
    (``data.test_splits``: every held-out split of the synthetic set) that are not empty."""
    train = cfg.data.train_split
    names = dict.fromkeys([train, cfg.data.val_split, *cfg.data.test_splits])
    samples = {s: reader.samples(s) for s in names}
    if not samples[train]:
        raise DataError(f"{cfg.data.root}: split '{train}' holds no samples; check data.root")
    samples = {s: v for s, v in samples.items() if v}
    if len(samples) == 1:
        raise DataError(
            f"{cfg.data.root}: no held-out split with samples ({', '.join(list(names)[1:])}); "
            "name one in data.val_split or data.test_splits"
        )
    return samples


def _check_classes(labels: np.ndarray, info: DatasetInfo, cfg: Config) -> None:
    """Refuse a training split in which no class can be told from another."""
    counts = labels.sum(axis=0)
    usable = (counts > 0) & (counts < len(labels)) if info.task == "multilabel" else counts > 0
    if usable.sum() < (1 if info.task == "multilabel" else 2):
        present = [c for c, n in zip(info.classes, counts, strict=True) if n] or ["none"]
        raise DataError(
            f"{cfg.data.root}: split '{cfg.data.train_split}' has {len(labels)} samples of "
            f"class(es) {', '.join(present)} only; a bias report needs at least two classes "
            "present, so give the full data set (data.root, data.train_split)"
        )


def _features(
    cfg: Config,
    samples: dict[str, list[Sample]],
    info: DatasetInfo,
    loaded: ConfounderDictionary | None,
    dictionary: str | Path | None,
    progress: bool = True,
) -> tuple[dict[str, np.ndarray], dict[str, Any]]:
    """Each split's masked-context embeddings by the scene backbone ``cfg.dictionary`` names
    (refused when its width is not the dictionary's), and the training split's record of how
    they were made. Computed in a temporary folder; the training split starts from the chunks
    a dictionary build cached (linked, so they are never changed), which ``embed_contexts``
    uses when they were made with the same settings."""
    backbone = scene_backbone(cfg.dictionary, info)
    if loaded is not None and loaded.dim != backbone.num_features:
        raise DeconfoundError(
            f"{dictionary}: dictionary width is {loaded.dim} but its scene backbone "
            f"{cfg.dictionary.backbone} embeds {backbone.num_features}-d features; rebuild it "
            "with `deconfound dictionary build` (or give the dictionary made for this backbone)"
        )
    reuse = dictionary or cfg.model.dictionary
    features, meta = {}, {}
    with tempfile.TemporaryDirectory(prefix="deconfound-report-") as tmp:
        for split, split_samples in samples.items():
            cache = Path(tmp, split)
            if split == cfg.data.train_split and reuse:
                _link_tree(Path(f"{reuse}.features"), cache)
            features[split], m = embed_contexts(
                cfg, split_samples, info, backbone, cache, split=split, progress=progress
            )
            meta = meta or m
    return features, meta


def _link_tree(source: Path, target: Path) -> None:
    """Hard links (copies across filesystems) of the files under ``source`` in ``target``."""
    if not source.is_dir():
        return
    for f in source.rglob("*"):
        if f.is_file() and not f.name.startswith("."):
            dest = target / f.relative_to(source)
            dest.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(f, dest)
            except OSError:
                shutil.copy2(f, dest)


def _provenance(loaded: ConfounderDictionary, meta: dict[str, Any], path: Any) -> list[str]:
    """Notes where the dictionary was built from other data than this training split."""
    built = loaded.meta
    if "dataset_fingerprint" not in built:
        return []
    if built["dataset_fingerprint"] == meta["dataset_fingerprint"]:
        return []
    return [
        f"{path} was built from {built.get('dataset')} '{built.get('split')}' "
        f"({built.get('num_samples')} samples), not from this training split; its clusters "
        "are used as given"
    ]


def _dataset_numbers(cfg: Config, info: DatasetInfo, samples: dict[str, list[Sample]]) -> dict:
    return {
        "name": info.name,
        "root": str(cfg.data.root),
        "task": info.task,
        "metric": info.metric,
        "classes": list(info.classes),
        "train_split": cfg.data.train_split,
        "splits": {s: len(v) for s, v in samples.items()},
    }


def _model_numbers(
    module: Any,
    checkpoint: Any,
    cfg: Config,
    samples: dict[str, list[Sample]],
    info: DatasetInfo,
    features: dict[str, np.ndarray],
    loaded: ConfounderDictionary | None,
    strata: dict[str, np.ndarray],
) -> dict[str, Any]:
    """The model's metrics on the held-out splits of ``samples`` (``engine.evaluate``), the
    headline metric's interval per split, and per split its confusion matrix (multi-class) or
    per-class average precision and prevalence (multi-label), and the share of its errors
    toward the scene's emotion (None where the data set does not know it); for a CCIM model,
    what its intervention does (``ccim``; else None); for an IERN model, its diagnostics on the
    training split (``iern``, :mod:`deconfound.diagnostics.iern`; else None). One pass over
    those splits (and, for CCIM or IERN, the training split) besides ``evaluate``'s.

    Bias without a ``test_anti`` split: per evaluated split the scores per (context cluster,
    label) (``groups``: re-weighted and worst-group accuracy, multi-class sets), and per test
    split the context-swap gap (``swap_gap``, :mod:`deconfound.diagnostics.swap`; two more
    passes, on pictures composited from the person masks; None with the reason in
    ``swap_gap_missing`` where the split has no masks). Validation samples that a method
    keeps for itself (DFR's refitting half) are left out, as ``evaluate`` leaves them out."""
    from deconfound.engine.run import evaluate

    splits = list(samples)[1:]
    data_cfg = replace(
        module.cfg.data,  # the views, sizes and masking the model was trained with
        root=cfg.data.root,
        args=cfg.data.args,
        skip_bad=cfg.data.skip_bad,
        synthetic=cfg.data.synthetic,
        batch_size=cfg.data.batch_size,
        num_workers=cfg.data.num_workers,
    )
    data = EmotionDataModule(data_cfg, module.model.views)
    out: dict[str, Any] = {
        "checkpoint": str(checkpoint),
        "model": module.cfg.model.name,
        "intervention": module.cfg.model.intervention,
        "metric": info.metric,
        "splits": evaluate(module, splits, data),
    }
    ccim, train = ccim_of(module), cfg.data.train_split
    loaders = {s: data.loader(s) for s in splits}
    rows = {s: _scored_rows(loader) for s, loader in loaders.items()}  # evaluate's samples
    passes = model_pass(module, loaders, info.task, data.loader(train) if ccim else None)
    out["intervals"] = {
        s: score_interval(p.scores, p.targets, info.metric) for s, p in passes.items()
    }
    if info.task == "multiclass":
        out["confusion"] = {
            s: confusion(p.scores, p.targets, info.num_classes).tolist() for s, p in passes.items()
        }
    else:
        out["class_ap"] = {
            s: class_ap(p.scores, p.targets, info.classes) for s, p in passes.items()
        }
    scenes = {s: confounders([samples[s][i] for i in rows[s]]) for s in splits}  # (no method's)
    out["scene_errors"] = scene_errors(passes, scenes, info, cfg.data.dataset)
    out["groups"] = (
        {s: group_scores(p.scores, p.targets, strata[s][rows[s]]) for s, p in passes.items()}
        if info.task == "multiclass"
        else None
    )
    tests = [s for s in splits if s in cfg.data.test_splits]
    out["swap_gap"], out["swap_gap_missing"] = _swap_gaps(module, tests, strata, data)
    out["ccim"] = None
    out["iern"] = iern_numbers(module, data, train)
    if ccim is None:
        return out
    model_centres = ccim.confounders.detach().cpu().float()
    same = (
        loaded is not None
        and loaded.centres.shape == model_centres.shape
        and bool(torch.allclose(loaded.centres.float(), model_centres))
    )
    out["ccim"] = ccim_numbers(ccim, passes, features, info, train, same)
    return out

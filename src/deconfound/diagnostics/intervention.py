"""What a model's intervention does, measured: one pass of the model's forward pieces over the
report's splits gives its scores (for the confusions) and, for CCIM, its attention λ over the
prototypes, the expected confounder g and the metric with g frozen at its training mean; where a
data set records each sample's scene and the emotion that scene favours, the share of errors
that answer that emotion (for any model).

The hidden scene is read by evaluation only: no method sees it."""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader

from deconfound.causal.ccim import CCIM
from deconfound.data.sample import DatasetInfo
from deconfound.data.synthetic.generate import preferred_emotion
from deconfound.pipelines.strata import assign_clusters

SCENE_PREFERENCES: dict[str, Callable[[int], int]] = {"synthetic": preferred_emotion}
"""Data set name → the class that each hidden scene (``Sample.confounder``) favours, for the
context data sets that know it: the data-set-level hook of the scene-error share."""


def scene_preference(dataset: str) -> Callable[[int], int] | None:
    """For a context data set whose samples record their hidden scene (``Sample.confounder``),
    the emotion index each scene favours (scene → class); None for every other data set."""
    return SCENE_PREFERENCES.get(dataset)


@dataclass(frozen=True)
class SplitPass:
    """One split through the model: per sample its scores (N, C: softmax for multi-class,
    sigmoid for multi-label) and target; for CCIM also λ (N, prototypes), ‖h W_h‖ and ‖g W_g‖
    (N,), and the scores with g frozen (N, C)."""

    scores: np.ndarray
    targets: np.ndarray
    weights: np.ndarray | None = None
    h_norm: np.ndarray | None = None
    g_norm: np.ndarray | None = None
    frozen_scores: np.ndarray | None = None


def ccim_of(module: torch.nn.Module) -> CCIM | None:
    """The model's CCIM (``module.model.intervention``), or None when it has none."""
    intervention = getattr(getattr(module, "model", None), "intervention", None)
    return intervention if isinstance(intervention, CCIM) else None


def model_pass(
    module: torch.nn.Module,
    loaders: dict[str, DataLoader],
    task: str,
    train_loader: DataLoader | None = None,
) -> dict[str, SplitPass]:
    """Each of ``loaders``' splits through ``module`` in eval mode, batched, once. For a CCIM
    model, ``train_loader`` (the training split) is run first for the mean of g over it."""
    module.eval()
    ccim = ccim_of(module)
    device = next(module.parameters()).device
    g_mean = None
    if ccim is not None:
        if train_loader is None:
            raise ValueError("a CCIM model's pass needs the training split's loader")
        g_mean = _mean_confounder(module, ccim, train_loader, device)
    return {
        split: _split_pass(module, ccim, loader, task, device, g_mean)
        for split, loader in loaders.items()
    }


def _to(views: dict[str, torch.Tensor], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: v.to(device) for k, v in views.items()}


def _mean_confounder(
    module: torch.nn.Module, ccim: CCIM, loader: DataLoader, device: torch.device
) -> torch.Tensor:
    """The mean of g = Σ_i λ_i z_i P(z_i) over ``loader``'s samples (D,)."""
    total, count = torch.zeros(ccim.confounders.shape[1], dtype=torch.float64), 0
    with torch.inference_mode():
        for views, _, _ in loader:
            h = module.model.base.forward_features(_to(views, device))
            total += ccim.expected_confounder(h).double().sum(0).cpu()
            count += len(h)
    return (total / max(count, 1)).float()


def _split_pass(
    module: torch.nn.Module,
    ccim: CCIM | None,
    loader: DataLoader,
    task: str,
    device: torch.device,
    g_mean: torch.Tensor | None,
) -> SplitPass:
    def score(logits: torch.Tensor) -> torch.Tensor:
        logits = logits.float().cpu()
        return logits.softmax(-1) if task == "multiclass" else logits.sigmoid()

    parts: dict[str, list[torch.Tensor]] = {}

    def keep(**tensors: torch.Tensor) -> None:
        for name, t in tensors.items():
            parts.setdefault(name, []).append(t.float().cpu() if t.is_floating_point() else t)

    with torch.inference_mode():
        for views, y, _ in loader:
            keep(targets=y)
            if ccim is None or g_mean is None:  # g_mean is None without CCIM
                keep(scores=score(module(_to(views, device))))
                continue
            model = module.model
            h = model.base.forward_features(_to(views, device))
            lam = ccim.weights(h)
            g = lam @ (ccim.confounders * ccim.prior)
            frozen = g_mean.to(device=g.device, dtype=g.dtype).expand_as(g)
            keep(
                scores=score(model.head(ccim.fuse(h, g))),
                frozen_scores=score(model.head(ccim.fuse(h, frozen))),
                weights=lam,
                h_norm=(h @ ccim.w_h).norm(dim=1),
                g_norm=(g @ ccim.w_g).norm(dim=1),
            )
    return SplitPass(**{name: torch.cat(ts).numpy() for name, ts in parts.items()})


def split_metric(scores: np.ndarray, targets: np.ndarray, info: DatasetInfo) -> float:
    """The data set's headline metric of ``scores`` as ``engine.evaluate`` computes it."""
    from deconfound.engine.metrics import make_metrics

    metrics = make_metrics(info, "")  # multi-label targets as integers, as evaluate gives them
    return float(metrics(torch.from_numpy(scores), torch.from_numpy(targets).long())[info.metric])


def ccim_numbers(
    ccim: CCIM,
    passes: dict[str, SplitPass],
    features: dict[str, np.ndarray],
    info: DatasetInfo,
    train_split: str,
    same_dictionary: bool,
) -> dict[str, Any]:
    """Per split: the mean entropy of λ (nats, and as a share of log N), how often λ's argmax
    is the sample's own context cluster (the nearest of CCIM's prototypes to its masked-context
    embedding in ``features``), the mean share ‖g W_g‖ / (‖h W_h‖ + ‖g W_g‖), and the metric as
    is and with g frozen at its ``train_split`` mean. ``same_dictionary``: the report's context
    clusters are CCIM's prototypes (else the agreement uses CCIM's prototypes with a note)."""
    centres = ccim.confounders.detach().float().cpu().numpy()
    n = len(centres)
    notes = []
    width = next(iter(features.values())).shape[1]
    comparable = width == centres.shape[1]
    if not comparable:
        notes.append(
            f"the report's masked-context embeddings are {width}-d but this model's dictionary "
            f"is {centres.shape[1]}-d, so λ's argmax is not compared with the context cluster; "
            "give --dictionary the model's dictionary"
        )
    elif not same_dictionary:
        notes.append(
            "the report's context clusters are not this model's dictionary; λ's argmax is "
            "compared with the nearest of the model's own prototypes to the report's masked-"
            "context embeddings, which is meaningful only if the model's dictionary was built "
            "with the same scene backbone and masking (give --dictionary the model's dictionary)"
        )
    splits: dict[str, Any] = {}
    for split, p in passes.items():
        assert p.weights is not None and p.h_norm is not None and p.g_norm is not None
        assert p.frozen_scores is not None
        entropy = float(_entropy(p.weights).mean())
        own = own_majority = None
        if comparable and split in features and len(features[split]) == len(p.weights):
            clusters = assign_clusters(features[split], centres)
            own = float((p.weights.argmax(axis=1) == clusters).mean())
            own_majority = float(np.bincount(clusters, minlength=n).max() / len(clusters))
        as_is = split_metric(p.scores, p.targets, info)
        frozen = split_metric(p.frozen_scores, p.targets, info)
        total = p.h_norm + p.g_norm
        share = np.divide(p.g_norm, total, out=np.zeros_like(total), where=total > 0)
        splits[split] = {
            "n": len(p.weights),
            "lambda_entropy": entropy,
            "lambda_entropy_share": entropy / math.log(n) if n > 1 else None,
            "argmax_is_own_cluster": own,
            "own_cluster_majority": own_majority,
            "g_norm_share": float(share.mean()),
            "metric_as_is": as_is,
            "metric_g_frozen": frozen,
            "metric_difference": frozen - as_is,
        }
    return {
        "kind": "ccim",
        "attention": ccim.attention,
        "prototypes": n,
        "log_prototypes": math.log(n),
        "metric": info.metric,
        "train_split": train_split,
        "splits": splits,
        "notes": notes,
    }


def _entropy(weights: np.ndarray) -> np.ndarray:
    """−Σ_i λ_i log λ_i per row (nats), 0 log 0 = 0."""
    w = weights.astype(np.float64)
    logs = np.log(w, out=np.zeros_like(w), where=w > 0)
    return -(w * logs).sum(axis=1)


def scene_errors(
    passes: dict[str, SplitPass],
    scenes: dict[str, np.ndarray | None],
    info: DatasetInfo,
    dataset: str,
) -> dict[str, Any] | None:
    """Per split, the share of the (multi-class) model's errors whose predicted class is the
    emotion the sample's scene favours, beside chance: 1/(C−1) (``chance``), and the share if
    each error fell uniformly on the C−1 wrong classes (``uniform_errors``; 1/(C−1) where the
    true emotion is never the favoured one, as in the synthetic ``test_anti``, lower where it
    may be). ``scenes``: each split's hidden scene per sample, in the pass's order (None where
    unknown). None unless the data set records the scenes and knows what they favour."""
    prefer = scene_preference(dataset)
    if prefer is None or info.task != "multiclass" or info.num_classes < 2:
        return None
    out: dict[str, Any] = {}
    for split, p in passes.items():
        known = scenes.get(split)
        if known is None or len(known) != len(p.targets):
            return None
        preferred = np.array([prefer(int(s)) for s in known], dtype=np.int64)
        truth, predicted = p.targets.astype(np.int64), p.scores.argmax(axis=1)
        wrong = predicted != truth
        errors = int(wrong.sum())
        toward = int((predicted[wrong] == preferred[wrong]).sum())
        possible = float((truth[wrong] != preferred[wrong]).mean()) if errors else None
        out[split] = {
            "errors": errors,
            "to_preferred": toward,
            "share": toward / errors if errors else None,
            "chance": 1 / (info.num_classes - 1),
            "uniform_errors": None if possible is None else possible / (info.num_classes - 1),
        }
    return {"dataset": dataset, "splits": out}

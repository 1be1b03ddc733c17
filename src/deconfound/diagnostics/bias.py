"""The measurements of a bias report, on arrays: context clusters against emotions, a
context-only probe, a model's confusions (its scores come from ``diagnostics.intervention``'s
pass). ``diagnostics.report`` feeds them from a data set."""

from __future__ import annotations

import warnings
from typing import Any

import numpy as np

from deconfound.data.sample import DatasetInfo

PROBE = {"C": 1.0, "max_iter": 2000}
"""The context-only probe: standardised features, then ``LogisticRegression(**PROBE)``."""


def cluster_stats(
    assignments: np.ndarray,
    labels: np.ndarray,
    num_clusters: int,
    info: DatasetInfo,
    contexts: np.ndarray | None = None,
) -> dict[str, Any]:
    """Class counts per cluster (``counts``: clusters × classes) and how much cluster and
    emotion depend on each other: normalised and adjusted mutual information (``nmi``,
    ``ami``), Cramér's V and the χ² test of independence, and ``purity`` (the share of samples
    of their cluster's most frequent class). Multi-label: NMI and Cramér's V per class (cluster
    vs. the class's presence) and their means. With ``contexts`` (the data set's hidden
    context per sample), also their agreement with the clusters (``ari_vs_context``) and, for
    multi-class data, their own NMI with the emotion (``nmi_context_emotion``)."""
    from sklearn.metrics import adjusted_mutual_info_score as ami
    from sklearn.metrics import adjusted_rand_score
    from sklearn.metrics import normalized_mutual_info_score as nmi

    counts = np.zeros((num_clusters, labels.shape[1]), dtype=np.int64)
    np.add.at(counts, assignments, labels)
    sizes = np.bincount(assignments, minlength=num_clusters)
    out: dict[str, Any] = {
        "num_clusters": num_clusters,
        "empty_clusters": int((sizes == 0).sum()),
        "sizes": sizes.tolist(),
        "counts": counts.tolist(),
    }
    if info.task == "multiclass":
        y = labels.argmax(axis=1)
        out |= {"nmi": float(nmi(y, assignments)), "ami": float(ami(y, assignments))}
        out |= _chi2(counts)
        out["purity"] = float(counts.max(axis=1).sum() / len(y))
    else:
        per_class = {}
        for c, name in enumerate(info.classes):
            if 0 < labels[:, c].sum() < len(labels):
                table = np.stack([sizes - counts[:, c], counts[:, c]], axis=1)
                per_class[name] = {"nmi": float(nmi(labels[:, c], assignments)), **_chi2(table)}
        out["per_class"] = per_class
        for key in ("nmi", "cramers_v"):
            out[key] = float(np.mean([v[key] for v in per_class.values()]))
    if contexts is not None:
        out["ari_vs_context"] = float(adjusted_rand_score(contexts, assignments))
        if info.task == "multiclass":
            out["nmi_context_emotion"] = float(nmi(labels.argmax(axis=1), contexts))
    return out


def _chi2(table: np.ndarray) -> dict[str, float]:
    """Cramér's V and the χ² test of a contingency table, without its empty rows and columns."""
    from scipy.stats import chi2_contingency
    from scipy.stats.contingency import association

    table = table[table.sum(axis=1) > 0][:, table.sum(axis=0) > 0]
    if min(table.shape) < 2:
        return {"cramers_v": 0.0, "chi2": 0.0, "p_value": 1.0}
    chi2, p, _, _ = chi2_contingency(table, correction=False)
    v = association(table, method="cramer", correction=False)
    return {"cramers_v": float(v), "chi2": float(chi2), "p_value": float(p)}


def context_probe(
    features: dict[str, np.ndarray],
    labels: dict[str, np.ndarray],
    train_split: str,
    info: DatasetInfo,
) -> dict[str, Any]:
    """A logistic-regression probe from the masked-context embeddings (split → (N, D)) to the
    emotion (split → (N, C) multi-hot), fitted on ``train_split``, scored on every split.

    Multi-class: accuracy; chance is the accuracy of always answering the training split's
    most frequent class (``majority``) and 1/C (``uniform``). Multi-label: mAP over the classes
    present in the split (one-vs-rest probes of the classes both present and absent in
    training); chance is those classes' mean prevalence (a random score's expected AP).
    """
    from sklearn.linear_model import LogisticRegression
    from sklearn.multiclass import OneVsRestClassifier
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = features[train_split], labels[train_split]
    metric = "accuracy" if info.task == "multiclass" else "mAP"
    out: dict[str, Any] = {"metric": metric, "train_split": train_split, "splits": {}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # convergence warnings: the probe is a measurement
        if info.task == "multiclass":
            probe = make_pipeline(StandardScaler(), LogisticRegression(**PROBE))
            probe.fit(x, y.argmax(axis=1))
            majority = int(y.sum(axis=0).argmax())
            out["majority_class"] = info.classes[majority]
            for split, xs in features.items():
                truth = labels[split].argmax(axis=1)
                out["splits"][split] = {
                    "n": len(truth),
                    "accuracy": float((probe.predict(xs) == truth).mean()),
                    "majority": float((truth == majority).mean()),
                    "uniform": 1 / info.num_classes,
                }
            return out
        usable = np.flatnonzero((y.sum(axis=0) > 0) & (y.sum(axis=0) < len(y)))
        probe = make_pipeline(StandardScaler(), OneVsRestClassifier(LogisticRegression(**PROBE)))
        probe.fit(x, y[:, usable])
        for split, xs in features.items():
            scores = probe.predict_proba(xs)
            out["splits"][split] = _multilabel_probe(scores, labels[split], usable)
    return out


def _multilabel_probe(scores: np.ndarray, truth: np.ndarray, usable: np.ndarray) -> dict:
    from sklearn.metrics import average_precision_score

    present = [i for i, c in enumerate(usable) if truth[:, c].any()]
    aps = [average_precision_score(truth[:, usable[i]], scores[:, i]) for i in present]
    prevalence = [truth[:, usable[i]].mean() for i in present]
    return {
        "n": len(truth),
        "mAP": float(np.mean(aps)) if aps else None,
        "prevalence": float(np.mean(prevalence)) if aps else None,
        "classes": len(present),
    }


def confusion(scores: np.ndarray, targets: np.ndarray, num_classes: int) -> np.ndarray:
    """(true class, predicted class) counts of the highest-scoring predictions."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (targets.astype(np.int64), scores.argmax(axis=1)), 1)
    return matrix


def class_ap(scores: np.ndarray, targets: np.ndarray, classes: tuple[str, ...]) -> dict:
    """Per class present in ``targets`` (N, C multi-hot): its average precision and
    prevalence."""
    from sklearn.metrics import average_precision_score

    return {
        name: {
            "ap": float(average_precision_score(targets[:, c], scores[:, c])),
            "prevalence": float(targets[:, c].mean()),
        }
        for c, name in enumerate(classes)
        if targets[:, c].any()
    }

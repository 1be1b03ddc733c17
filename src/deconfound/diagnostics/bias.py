"""The measurements of a bias report, on arrays: context clusters against emotions, a
context-only probe, a model's confusions (its scores come from ``diagnostics.intervention``'s
pass). ``diagnostics.report`` feeds them from a data set."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import Any

import numpy as np

from deconfound.data.sample import DatasetInfo

PROBE = {"C": 1.0, "max_iter": 2000}
"""The context-only probe: standardised features, then ``LogisticRegression(**PROBE)``."""
INTERVAL = {
    "method": "bootstrap over samples: percentile for the metrics, basic for NMI and V",
    "level": 0.95,
    "seed": 0,
}
"""The intervals. Resampling with replacement repeats samples, which inflates a plug-in
dependence (a resample's NMI and Cramér's V lie above the sample's): the basic (reflected)
interval corrects that shift, which the percentile interval would carry over."""
RESAMPLES = {"accuracy": 1000, "dependence": 1000, "mAP": 200}
"""Resamples of each interval's bootstrap: fewer for mAP, whose every resample recomputes
one average precision per class."""


def interval(
    statistic: Callable[[np.ndarray], Any], n: int, resamples: int, method: str = "percentile"
) -> list[Any] | None:
    """The ``INTERVAL`` of ``statistic(indices)`` (a statistic of the samples at ``indices``,
    drawn with replacement from ``range(n)``): SciPy's bootstrap (``method``: percentile or
    basic), seeded; [low, high], or one such pair per value where ``statistic`` returns an
    array; None for fewer than 2 samples."""
    from scipy.stats import bootstrap

    if n < 2:
        return None
    result = bootstrap(
        (np.arange(n),),
        statistic,
        vectorized=False,
        n_resamples=resamples,
        confidence_level=INTERVAL["level"],
        method=method,
        rng=np.random.default_rng(INTERVAL["seed"]),
    )
    low, high = result.confidence_interval
    if np.ndim(low):
        return [[float(a), float(b)] for a, b in zip(low, high, strict=True)]
    return [float(low), float(high)]


def score(scores: np.ndarray, targets: np.ndarray, metric: str) -> float | None:
    """``metric`` of ``scores`` (N, C) against ``targets``: ``accuracy`` of the argmax against
    class indices (N,), or ``mAP``, scikit-learn's average precision averaged over the classes
    present in ``targets`` (multi-hot (N, C), or class indices one-vs-rest); None when no
    class is present."""
    from sklearn.metrics import average_precision_score

    if metric == "accuracy":
        return float((scores.argmax(axis=1) == targets).mean())
    if targets.ndim == 1:
        targets = np.eye(scores.shape[1], dtype=np.int64)[targets]
    present = np.flatnonzero(targets.any(axis=0))
    if not len(present):
        return None
    return float(np.mean([average_precision_score(targets[:, c], scores[:, c]) for c in present]))


def score_interval(scores: np.ndarray, targets: np.ndarray, metric: str) -> list[float] | None:
    """The ``INTERVAL`` of :func:`score` over the samples."""
    if metric == "accuracy":  # the mean of a 0/1 vector: the argmax taken once, not per resample
        correct = (scores.argmax(axis=1) == targets).astype(np.float64)
        return interval(lambda i: float(correct[i].mean()), len(correct), RESAMPLES[metric])

    def resampled(i: np.ndarray) -> float:
        value = score(scores[i], targets[i], metric)
        return np.nan if value is None else value

    return interval(resampled, len(targets), RESAMPLES[metric])


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
    vs. the class's presence) and their means. ``nmi_interval`` and ``cramers_v_interval``:
    their ``INTERVAL`` over the samples. With ``contexts`` (the data set's hidden context per
    sample), also their agreement with the clusters (``ari_vs_context``) and, for multi-class
    data, their own NMI with the emotion (``nmi_context_emotion``)."""
    from sklearn.metrics import adjusted_mutual_info_score as ami
    from sklearn.metrics import adjusted_rand_score
    from sklearn.metrics import normalized_mutual_info_score as nmi

    counts = _counts(assignments, labels, num_clusters)
    sizes = np.bincount(assignments, minlength=num_clusters)
    out: dict[str, Any] = {
        "num_clusters": num_clusters,
        "empty_clusters": int((sizes == 0).sum()),
        "sizes": sizes.tolist(),
        "counts": counts.tolist(),
    }
    if info.task == "multiclass":
        y = labels.argmax(axis=1)
        out |= {"nmi": _nmi(counts), "ami": float(ami(y, assignments))}
        out |= _chi2(counts)
        out["purity"] = float(counts.max(axis=1).sum() / len(y))
    else:
        usable = _varying(labels)
        out["per_class"] = {
            info.classes[c]: {"nmi": _nmi(table), **_chi2(table)}
            for c, table in zip(usable, _presence_tables(counts, sizes, usable), strict=True)
        }
        for key in ("nmi", "cramers_v"):
            out[key] = float(np.mean([v[key] for v in out["per_class"].values()]))
    out |= _dependence_intervals(assignments, labels, num_clusters, info.task)
    if contexts is not None:
        out["ari_vs_context"] = float(adjusted_rand_score(contexts, assignments))
        if info.task == "multiclass":
            out["nmi_context_emotion"] = float(nmi(labels.argmax(axis=1), contexts))
    return out


def _varying(labels: np.ndarray) -> np.ndarray:
    """The classes of multi-hot ``labels`` (N, C) both present and absent: those a
    one-vs-rest measurement can tell apart."""
    present = labels.sum(axis=0)
    return np.flatnonzero((present > 0) & (present < len(labels)))


def _counts(assignments: np.ndarray, labels: np.ndarray, num_clusters: int) -> np.ndarray:
    """Clusters × classes counts of multi-hot ``labels``."""
    counts = np.zeros((num_clusters, labels.shape[1]), dtype=np.int64)
    np.add.at(counts, assignments, labels)
    return counts


def _presence_tables(counts: np.ndarray, sizes: np.ndarray, classes: np.ndarray) -> list:
    """Per class of ``classes``: the clusters × (absent, present) table."""
    return [np.stack([sizes - counts[:, c], counts[:, c]], axis=1) for c in classes]


def _nmi(table: np.ndarray) -> float:
    """Normalised mutual information of a contingency table (scikit-learn's arithmetic-mean
    normalisation, as ``normalized_mutual_info_score``)."""
    from scipy.stats import entropy
    from sklearn.metrics import mutual_info_score

    rows, cols = entropy(table.sum(axis=1)), entropy(table.sum(axis=0))
    if rows == 0 or cols == 0:
        return 1.0 if rows == cols else 0.0
    return float(mutual_info_score(None, None, contingency=table) / ((rows + cols) / 2))


def _dependence_intervals(
    assignments: np.ndarray, labels: np.ndarray, num_clusters: int, task: str
) -> dict[str, list[float] | None]:
    """The ``INTERVAL`` of NMI and of Cramér's V (multi-label: of their means over the
    classes present and absent in the sample)."""

    def tables(i: np.ndarray) -> list[np.ndarray]:
        counts = _counts(assignments[i], labels[i], num_clusters)
        if task == "multiclass":
            return [counts]
        sizes = np.bincount(assignments[i], minlength=num_clusters)
        return _presence_tables(counts, sizes, _varying(labels[i]))

    def statistic(i: np.ndarray) -> np.ndarray:
        found = [(_nmi(t), _chi2(t)["cramers_v"]) for t in tables(i)]
        return np.mean(found, axis=0) if found else np.full(2, np.nan)

    pairs = interval(statistic, len(assignments), RESAMPLES["dependence"], method="basic")
    if pairs is None:
        return {"nmi_interval": None, "cramers_v_interval": None}
    return {"nmi_interval": pairs[0], "cramers_v_interval": pairs[1]}


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
                scores = np.zeros((len(xs), info.num_classes))
                scores[:, probe.classes_] = probe.predict_proba(xs)  # classes seen in training
                value = score(scores, truth, "accuracy")
                out["splits"][split] = {
                    "n": len(truth),
                    "accuracy": value,
                    "interval": _held_out(split, train_split, value, scores, truth, "accuracy"),
                    "majority": float((truth == majority).mean()),
                    "uniform": 1 / info.num_classes,
                }
            return out
        usable = _varying(y)
        probe = make_pipeline(StandardScaler(), OneVsRestClassifier(LogisticRegression(**PROBE)))
        probe.fit(x, y[:, usable])
        for split, xs in features.items():
            scores, truth = probe.predict_proba(xs), labels[split][:, usable]
            present, value = truth.any(axis=0), score(scores, truth, "mAP")
            out["splits"][split] = {
                "n": len(truth),
                "mAP": value,
                "interval": _held_out(split, train_split, value, scores, truth, "mAP"),
                "prevalence": float(truth[:, present].mean()) if present.any() else None,
                "classes": int(present.sum()),
            }
    return out


def _held_out(
    split: str,
    train_split: str,
    value: float | None,
    scores: np.ndarray,
    truth: np.ndarray,
    metric: str,
) -> list[float] | None:
    """The interval of the probe's ``value`` on a held-out split (None on the one it was
    fitted on, and where no class is present: ``value`` None)."""
    if split == train_split or value is None:
        return None
    return score_interval(scores, truth, metric)


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

"""The demo's and the bias report's pictures: a metric on each test split (one bar per method),
the emotion distribution of each confounder-dictionary cluster, a confusion matrix, average
precision per class."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from deconfound.io import atomic_write

Results = dict[str, dict[str, dict[str, float]]]  # method -> split -> metric -> value
Intervals = dict[str, dict[str, list[float] | None]]  # method -> split -> [low, high]


def plot_split_metrics(
    results: Results,
    metric: str,
    path: str | Path,
    *,
    std: Results | None = None,
    interval: Intervals | None = None,
    chance: float | None = None,
    title: str = "",
    legend_outside: bool = False,
) -> Path:
    """Save a grouped bar chart of ``metric`` per split (x) and method (bars) as a PNG, with
    ``std`` (symmetric) or ``interval`` (a method's [low, high] per split, where it has one)
    as error bars when given, and the legend right of the axes with ``legend_outside`` (else
    inside, lower left)."""
    methods = list(results)
    splits = list(next(iter(results.values())))
    width = 0.8 / len(methods)
    legend_width = 1.7 if legend_outside else 0.0
    group = max(1.6, 0.42 * len(methods))  # inches per split: room for each bar's label
    fig, ax = plt.subplots(figsize=(1.8 + group * len(splits) + legend_width, 3.6), dpi=120)
    for i, method in enumerate(methods):
        xs = [j + (i - (len(methods) - 1) / 2) * width for j in range(len(splits))]
        ys = [results[method][s][metric] for s in splits]
        err: Any = [std[method][s][metric] for s in splits] if std else None
        if interval is not None:
            bounds = [
                interval.get(method, {}).get(s) or (y, y) for s, y in zip(splits, ys, strict=True)
            ]
            pairs = [[y - lo, hi - y] for y, (lo, hi) in zip(ys, bounds, strict=True)]
            err = np.clip(np.array(pairs).T, 0, None)  # a point outside its interval: none
        bars = ax.bar(xs, ys, width, yerr=err, capsize=3, label=method)
        ax.bar_label(bars, fmt="%.3f", fontsize=8 if len(methods) < 5 else 7, padding=2)
    if chance is not None:
        ax.axhline(chance, color="grey", linestyle="--", linewidth=1, label="chance")
    ax.set_xticks(range(len(splits)), splits)
    ax.set_ylim(0, 1.08)
    ax.set_ylabel(metric)
    ax.set_title(title, fontsize=10)
    if legend_outside:
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
    else:
        ax.legend(fontsize=8, loc="lower left")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
    return Path(path)


def format_table(results: Results, metric: str, std: Results | None = None) -> str:
    """A plain-text table of ``metric`` (± ``std`` when given): one row per method, one column
    per split."""
    splits = list(next(iter(results.values())))
    width = max(len(m) for m in [*results, "method"])
    col = 17 if std else 13
    lines = ["  ".join([f"{'method':<{width}}", *(f"{s:>{col}}" for s in splits)])]
    for method, by_split in results.items():
        cells = []
        for s in splits:
            cell = f"{by_split[s][metric]:.4f}"
            if std:
                cell += f" ± {std[method][s][metric]:.4f}"
            cells.append(f"{cell:>{col}}")
        lines.append("  ".join([f"{method:<{width}}", *cells]))
    return "\n".join(lines)


def plot_cluster_classes(
    counts: np.ndarray,
    classes: tuple[str, ...] | list[str],
    path: str | Path,
    *,
    max_rows: int = 48,
    title: str = "",
    show_counts: bool = False,
) -> Path:
    """Save a heat map of P(class | cluster) as a PNG: one row per dictionary cluster (the
    ``max_rows`` largest, largest first, labelled with their share of the samples, and with
    ``show_counts`` their number of samples), one column per class. ``counts`` is (clusters,
    classes)."""
    counts = np.asarray(counts, dtype=np.float64)
    sizes = counts.sum(axis=1)
    order = np.argsort(-sizes, kind="stable")[:max_rows]
    order = order[sizes[order] > 0]
    share = counts[order] / sizes[order, None]
    fig, ax = plt.subplots(figsize=(1.6 + 0.55 * len(classes), 1.2 + 0.2 * len(order)), dpi=120)
    image = ax.imshow(share, aspect="auto", cmap="magma", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right", fontsize=8)
    prior = sizes[order] / sizes.sum()
    rows = [f"z{i} ({p:.1%})" for i, p in zip(order, prior, strict=True)]
    if show_counts:
        n = sizes[order]
        rows = [f"z{i}  n={c:.0f} ({p:.1%})" for i, c, p in zip(order, n, prior, strict=True)]
    ax.set_yticks(range(len(order)), rows)
    ax.tick_params(axis="y", labelsize=6)
    ax.set_xlabel("class")
    ax.set_ylabel("cluster (share of training samples)")
    shown = "" if len(order) == len(counts) else f", {len(order)} largest of {len(counts)}"
    ax.set_title(f"{title}{shown}", fontsize=9)
    fig.colorbar(image, ax=ax, label="P(class | cluster)", fraction=0.05)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
    return Path(path)


def plot_confusion(
    matrix: np.ndarray, classes: tuple[str, ...], path: str | Path, *, title: str = ""
) -> Path:
    """Save a confusion matrix (rows: true class, columns: predicted) as a PNG, each row
    normalised to the share of its class, cells labelled with their counts."""
    totals = matrix.sum(axis=1, keepdims=True)
    share = np.divide(matrix, totals, out=np.zeros(matrix.shape), where=totals > 0)
    side = 1.4 + 0.45 * len(classes)
    fig, ax = plt.subplots(figsize=(side + 0.8, side), dpi=110)
    image = ax.imshow(share, cmap="Blues", vmin=0, vmax=1)
    if len(classes) <= 12:
        for (i, j), n in np.ndenumerate(matrix):
            colour = "white" if share[i, j] > 0.55 else "#222222"
            ax.text(j, i, str(n), ha="center", va="center", fontsize=7, color=colour)
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(len(classes)), classes, fontsize=8)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title, fontsize=10)
    fig.colorbar(image, ax=ax, fraction=0.046, label="share of the true class")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
    return Path(path)


def plot_class_ap(
    per_class: dict[str, dict[str, float]], path: str | Path, *, title: str = ""
) -> Path:
    """Save horizontal bars of each class's average precision, with its prevalence (the AP of
    a random score) marked, as a PNG."""
    names = list(per_class)
    ap = [per_class[n]["ap"] for n in names]
    prevalence = [per_class[n]["prevalence"] for n in names]
    fig, ax = plt.subplots(figsize=(6.4, 1.0 + 0.24 * len(names)), dpi=110)
    ax.barh(range(len(names)), ap, color="#4c72b0", label="average precision")
    ax.scatter(prevalence, range(len(names)), color="#dd8452", marker="|", s=120, label="chance")
    ax.set_yticks(range(len(names)), names, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png"))
    plt.close(fig)
    return Path(path)

"""The demo's pictures: a metric on each test split (one bar per method), and the emotion
distribution of each confounder-dictionary cluster."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from deconfound.io import atomic_write

Results = dict[str, dict[str, dict[str, float]]]  # method -> split -> metric -> value


def plot_split_metrics(
    results: Results,
    metric: str,
    path: str | Path,
    *,
    std: Results | None = None,
    chance: float | None = None,
    title: str = "",
) -> Path:
    """Save a grouped bar chart of ``metric`` per split (x) and method (bars) as a PNG, with
    ``std`` as error bars when given."""
    methods = list(results)
    splits = list(next(iter(results.values())))
    width = 0.8 / len(methods)
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(splits), 3.6), dpi=120)
    for i, method in enumerate(methods):
        xs = [j + (i - (len(methods) - 1) / 2) * width for j in range(len(splits))]
        ys = [results[method][s][metric] for s in splits]
        err = [std[method][s][metric] for s in splits] if std else None
        bars = ax.bar(xs, ys, width, yerr=err, capsize=3, label=method)
        ax.bar_label(bars, fmt="%.3f", fontsize=8, padding=2)
    if chance is not None:
        ax.axhline(chance, color="grey", linestyle="--", linewidth=1, label="chance")
    ax.set_xticks(range(len(splits)), splits)
    ax.set_ylim(0, 1.08)
    ax.set_ylabel(metric)
    ax.set_title(title, fontsize=10)
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
) -> Path:
    """Save a heat map of P(class | cluster) as a PNG: one row per dictionary cluster (the
    ``max_rows`` largest, largest first, labelled with their share of the samples), one column
    per class. ``counts`` is (clusters, classes)."""
    counts = np.asarray(counts, dtype=np.float64)
    sizes = counts.sum(axis=1)
    order = np.argsort(-sizes, kind="stable")[:max_rows]
    order = order[sizes[order] > 0]
    share = counts[order] / sizes[order, None]
    fig, ax = plt.subplots(figsize=(1.6 + 0.55 * len(classes), 1.2 + 0.2 * len(order)), dpi=120)
    image = ax.imshow(share, aspect="auto", cmap="magma", vmin=0, vmax=1)
    ax.set_xticks(range(len(classes)), classes, rotation=45, ha="right", fontsize=8)
    prior = sizes[order] / sizes.sum()
    ax.set_yticks(range(len(order)), [f"z{i} ({p:.1%})" for i, p in zip(order, prior, strict=True)])
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

"""The demo's picture: a metric on each test split, one bar per method."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt

from deconfound.io import atomic_write

Results = dict[str, dict[str, dict[str, float]]]  # method -> split -> metric -> value


def plot_split_metrics(
    results: Results, metric: str, path: str | Path, *, chance: float | None = None, title: str = ""
) -> Path:
    """Save a grouped bar chart of ``metric`` per split (x) and method (bars) as a PNG."""
    methods = list(results)
    splits = list(next(iter(results.values())))
    width = 0.8 / len(methods)
    fig, ax = plt.subplots(figsize=(1.8 + 1.6 * len(splits), 3.6), dpi=120)
    for i, method in enumerate(methods):
        xs = [j + (i - (len(methods) - 1) / 2) * width for j in range(len(splits))]
        ys = [results[method][s][metric] for s in splits]
        bars = ax.bar(xs, ys, width, label=method)
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


def format_table(results: Results, metric: str) -> str:
    """A plain-text table of ``metric``: one row per method, one column per split."""
    splits = list(next(iter(results.values())))
    width = max(len(m) for m in [*results, "method"])
    lines = ["  ".join([f"{'method':<{width}}", *(f"{s:>13}" for s in splits)])]
    for method, by_split in results.items():
        lines.append(
            "  ".join([f"{method:<{width}}", *(f"{by_split[s][metric]:>13.4f}" for s in splits)])
        )
    return "\n".join(lines)

"""Figures and tables that show bias: metrics per test split, classes per context cluster."""

from deconfound.diagnostics.plots import format_table, plot_cluster_classes, plot_split_metrics

__all__ = ["format_table", "plot_cluster_classes", "plot_split_metrics"]

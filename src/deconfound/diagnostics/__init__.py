"""Figures and tables that show bias: metrics per test split, and more to come."""

from deconfound.diagnostics.plots import format_table, plot_split_metrics

__all__ = ["format_table", "plot_split_metrics"]

"""Metrics chosen by the data set's task: accuracy (multi-class) or mean average precision."""

from __future__ import annotations

from torchmetrics import MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassAveragePrecision,
    MultilabelAveragePrecision,
)

from deconfound.data.sample import DatasetInfo


def make_metrics(info: DatasetInfo, prefix: str) -> MetricCollection:
    """The metric collection for ``info``, its names prefixed (``val/accuracy``, ``test/mAP``).

    Multi-class: overall (micro) accuracy and the mean of per-class accuracies, plus the mean
    of per-class average precisions where the data set's headline metric is mAP (GroupWalk).
    Multi-label: macro-averaged average precision over classes, as in EMOTIC's evaluation
    (equal to scikit-learn's ``average_precision_score`` per class, averaged).
    """
    if info.task == "multiclass":
        metrics = {
            "accuracy": MulticlassAccuracy(info.num_classes, average="micro"),
            "mean_class_accuracy": MulticlassAccuracy(info.num_classes, average="macro"),
        }
        if info.metric == "mAP":
            metrics["mAP"] = MulticlassAveragePrecision(info.num_classes, average="macro")
    else:
        metrics = {"mAP": MultilabelAveragePrecision(info.num_classes, average="macro")}
    return MetricCollection(metrics, prefix=prefix)

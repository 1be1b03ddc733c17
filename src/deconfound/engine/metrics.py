"""Metrics chosen by the data set's task: accuracy (multi-class) or mean average precision, and
the re-weighted validation accuracy that checkpoint selection may use."""

from __future__ import annotations

import torch
from torchmetrics import Metric, MetricCollection
from torchmetrics.classification import (
    MulticlassAccuracy,
    MulticlassAveragePrecision,
    MultilabelAveragePrecision,
)
from torchmetrics.utilities import dim_zero_cat

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


MIN_GROUP = 5
"""Groups with fewer validation samples are left out of the worst-group accuracy."""


class ReweightedAccuracy(Metric):
    """Accuracy with every (stratum z, label y) pair weighted by w = P(y) P(z) / P(y, z), the
    shares measured on the evaluated samples themselves: the accuracy the model would have if
    labels were independent of the strata, where each pair occurs.

    Since w · n(z, y) = n(y) n(z) / n, it equals Σ n(y) n(z) acc(z, y) / Σ n(y) n(z) over the
    pairs present, acc(z, y) being the accuracy within the pair. On a confounded validation
    split it tracks accuracy on unconfounded data better than plain accuracy does (plain
    accuracy rewards the shortcut), so it is a choice for checkpoint selection
    (``trainer.monitor: reweighted``). Samples are gathered from every process.
    """

    full_state_update = False

    def __init__(self) -> None:
        super().__init__()
        self.add_state("pred", default=[], dist_reduce_fx="cat")
        self.add_state("target", default=[], dist_reduce_fx="cat")
        self.add_state("stratum", default=[], dist_reduce_fx="cat")

    def update(self, pred: torch.Tensor, target: torch.Tensor, stratum: torch.Tensor) -> None:
        self.pred.append(pred.detach().long())
        self.target.append(target.detach().long())
        self.stratum.append(stratum.detach().long())

    def compute(self) -> torch.Tensor:
        pred, y, z = (dim_zero_cat(s) for s in (self.pred, self.target, self.stratum))
        return reweighted_accuracy(pred == y, y, z)


class WorstGroupAccuracy(ReweightedAccuracy):
    """The lowest accuracy over groups (label y, aligned or not), where a sample is *aligned*
    when y is its stratum's most frequent label among the evaluated samples (its context's
    majority label: the shortcut's answer) and *conflicting* otherwise; groups with fewer than
    ``min_count`` samples are left out (see :func:`worst_group_accuracy`)."""

    def __init__(self, min_count: int = MIN_GROUP) -> None:
        super().__init__()
        self.min_count = min_count

    def compute(self) -> torch.Tensor:
        pred, y, z = (dim_zero_cat(s) for s in (self.pred, self.target, self.stratum))
        return worst_group_accuracy(pred == y, y, z, self.min_count)


def worst_group_accuracy(
    correct: torch.Tensor, target: torch.Tensor, stratum: torch.Tensor, min_count: int = MIN_GROUP
) -> torch.Tensor:
    """See :class:`WorstGroupAccuracy`: (N,) correctness, labels and strata → a scalar (NaN when
    no group has ``min_count`` samples).

    Why (label, aligned) and not (stratum, label): with a dictionary's 32 clusters and 7
    emotions there are 224 (stratum, label) groups, and on a confounded validation split of
    700 pictures the rare pairs, those the shortcut gets wrong, hold one or two samples each,
    so their minimum is noise (or only the common pairs pass a size threshold). Pooling each
    label's samples by whether their context agrees with it keeps the shortcut's failures as
    one group per label, the bias-conflicting groups of the debiasing literature."""
    classes = int(target.max()) + 1
    strata = int(stratum.max()) + 1
    counts = torch.bincount(stratum * classes + target, minlength=strata * classes)
    majority = counts.view(strata, classes).argmax(1)  # (strata,) each context's usual label
    aligned = (majority[stratum] == target).long()
    group = target * 2 + aligned
    n = torch.bincount(group, minlength=2 * classes).double()
    hits = torch.bincount(group, weights=correct.double(), minlength=2 * classes)
    kept = n >= min_count
    if not kept.any():
        return torch.tensor(float("nan"))
    return (hits[kept] / n[kept]).min().float()


def reweighted_accuracy(
    correct: torch.Tensor, target: torch.Tensor, stratum: torch.Tensor
) -> torch.Tensor:
    """See :class:`ReweightedAccuracy`: (N,) correctness, labels and strata → a scalar."""
    classes = int(target.max()) + 1
    cell = stratum * classes + target  # (N,)
    cells = (int(stratum.max()) + 1) * classes
    n = torch.bincount(cell, minlength=cells).double()  # n(z, y), flattened
    hits = torch.bincount(cell, weights=correct.double(), minlength=cells)
    n_zy = n.view(-1, classes)
    n_z, n_y = n_zy.sum(1, keepdim=True), n_zy.sum(0, keepdim=True)
    weight = (n_z * n_y).flatten() * (n > 0)
    acc = torch.where(n > 0, hits / n.clamp(min=1), torch.zeros_like(n))
    return ((weight * acc).sum() / weight.sum()).float()

"""Deep feature reweighting, DFR (Kirichenko, Izmailov and Wilson, ICLR 2023, "Last Layer
Re-Training is Sufficient for Robustness to Spurious Correlations").

The base model is trained by plain empirical risk minimisation; only its last layer is then
fitted again, on held-out samples in which every group weighs the same, so that the features
learnt with the shortcut are kept while the shortcut's weight in the decision is undone.

Our choices (the paper's DFR^Tr_Val variant, with what differs said):

- **Held-out set**: a random share (``holdout``, half by default, as the paper's tuning split)
  of the *validation* split, drawn from the run's seed; never a test split. Those samples are
  never scored: validation, checkpoint selection and ``deconfound evaluate`` of the
  validation split use the other part only.
- **Groups**: (context cluster of the dictionary, label), as for GroupDRO.
- **Balance by weights, not by subsampling**: the paper subsamples every group to the size of
  its smallest and averages the fits of several draws. With 32 clusters × 7 labels most groups
  hold one or two held-out samples, so subsampling would keep a handful of samples; each sample
  is weighted by 1 / (its group's size) instead, which balances the groups in expectation the
  same way without discarding any.
- **The fit**: scikit-learn's L1-regularised multinomial logistic regression (``l1_ratio`` 1,
  the paper's penalty) on standardised features, at a fixed ``C`` (the paper tunes it on half
  of the validation data; we do not tune on the benchmark).
- **When**: before every validation of the run, on the features of that epoch, so that every
  checkpoint a selection rule keeps is a DFR model, scored on samples the refit did not see;
  the plain head keeps training underneath and only the refitted one predicts.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader

from deconfound.causal import ConfounderDictionary
from deconfound.config import number
from deconfound.errors import ConfigError
from deconfound.methods.base import Method, Trainee


class LastLayerRefit(nn.Module):
    """A classifier whose prediction goes through a last layer fitted apart (``weight``,
    ``bias``; buffers, saved in checkpoints) once :meth:`set_last_layer` was called; before,
    and in training, it is the classifier itself.

    Args:
        classifier: an :class:`~deconfound.models.classifier.EmotionClassifier` (``base``,
            ``head``) without intervention.
    """

    def __init__(self, classifier: nn.Module) -> None:
        super().__init__()
        self.classifier = classifier
        head: nn.Linear = classifier.head  # type: ignore[assignment]
        self.register_buffer("weight", torch.zeros_like(head.weight))  # (C, D)
        self.register_buffer("bias", torch.zeros_like(head.bias))  # (C,)
        self.register_buffer("fitted", torch.tensor(False))

    @property
    def base(self) -> nn.Module:
        return self.classifier.base  # type: ignore[return-value]

    @property
    def views(self) -> tuple[str, ...]:
        return self.classifier.views  # type: ignore[return-value]

    def features(self, views: dict[str, torch.Tensor]) -> torch.Tensor:
        """The last layer's input (B, D)."""
        return self.classifier.base.forward_features(views)  # type: ignore[operator]

    def forward_train(
        self, views: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        return self.classifier.forward_train(views)  # type: ignore[operator]

    def forward(self, views: dict[str, torch.Tensor]) -> torch.Tensor:
        if not bool(self.fitted):
            return self.classifier(views)
        return nn.functional.linear(self.features(views), self.weight, self.bias)

    def set_last_layer(self, weight: torch.Tensor, bias: torch.Tensor) -> None:
        self.weight.copy_(weight)
        self.bias.copy_(bias)
        self.fitted.fill_(True)


def balanced_weights(groups: np.ndarray) -> np.ndarray:
    """Per sample 1 / (size of its group), scaled to mean 1: every group present weighs the
    same in a weighted loss."""
    _, index, counts = np.unique(groups, return_inverse=True, return_counts=True)
    w = 1.0 / counts[index]
    return w * len(w) / w.sum()


def fit_last_layer(
    features: np.ndarray, labels: np.ndarray, groups: np.ndarray, num_classes: int, c: float
) -> tuple[np.ndarray, np.ndarray]:
    """(weight (classes, D), bias (classes,)) of an L1-regularised multinomial logistic
    regression of ``labels`` on ``features``, every group weighing the same
    (:func:`balanced_weights`); fitted on standardised features and mapped back to the raw
    ones. A class absent from the samples gets a bias below every other: never predicted."""
    from sklearn.linear_model import LogisticRegression

    mean, std = features.mean(0), features.std(0) + 1e-6
    if len(np.unique(labels)) < 2:
        raise ConfigError(
            f"method 'dfr': its {len(labels)} held-out validation samples hold one class only; "
            "raise model.intervention_args.holdout or give a larger validation split"
        )
    fit = LogisticRegression(
        l1_ratio=1.0, C=c, solver="saga", max_iter=2000, tol=1e-3, random_state=0
    )  # (seeded: every process of a distributed run, and a resumed run, fits the same layer)
    fit.fit((features - mean) / std, labels, sample_weight=balanced_weights(groups))
    coef, intercept = fit.coef_, fit.intercept_
    if len(fit.classes_) == 2:  # scikit-learn keeps one row for two classes
        coef = np.stack([-coef[0], coef[0]]) / 2
        intercept = np.array([-intercept[0], intercept[0]]) / 2
    weight = np.zeros((num_classes, features.shape[1]))
    bias = np.full(num_classes, -np.inf)
    weight[fit.classes_] = coef / std
    bias[fit.classes_] = intercept - (coef / std) @ mean
    bias[~np.isfinite(bias)] = bias[np.isfinite(bias)].min() - 100.0
    return weight, bias


@dataclass(frozen=True)
class DFROptions:
    """Args:
    holdout: share of the validation split the last layer is refitted on (never scored).
    c: inverse L1 regularisation strength of the refit (scikit-learn's ``C``).
    """

    holdout: float = 0.5
    c: float = 1.0

    def __post_init__(self) -> None:
        for key in ("holdout", "c"):
            number(getattr(self, key), f"model.intervention_args.{key}")
        if not 0 < self.holdout < 1:
            raise ConfigError(
                f"model.intervention_args.holdout must lie in (0, 1), got {self.holdout}"
            )
        if not self.c > 0:
            raise ConfigError(f"model.intervention_args.c must be positive, got {self.c}")


class DFR(Method):
    """Plain training, then the last layer refitted on group-balanced held-out validation
    samples before each validation (module docstring)."""

    name: ClassVar[str] = "dfr"
    needs_strata: ClassVar[bool] = True
    multiclass_only: ClassVar[bool] = True
    Options = DFROptions

    def build(
        self,
        num_classes: int,
        *,
        task: str = "multiclass",
        load_weights: bool = True,
        dictionary: ConfounderDictionary | None = None,
    ) -> nn.Module:
        return LastLayerRefit(super().build(num_classes, task=task, load_weights=load_weights))

    @property
    def held_out_share(self) -> float:
        return float(self.options.holdout)

    def before_validation(self, module: Trainee, held_out: DataLoader | None) -> None:
        if held_out is None:
            raise ConfigError("method 'dfr' found no held-out validation samples to refit on")
        net: LastLayerRefit = module.model  # type: ignore[assignment]
        device = net.weight.device
        feats, labels, strata = [], [], []
        with torch.no_grad():
            for views, y, z in held_out:
                views = {k: v.to(device) for k, v in views.items()}
                feats.append(net.features(views).float().cpu())
                labels.append(y)
                strata.append(z)
        z = torch.cat(strata).numpy()
        if len(z) == 0 or z.min() < 0:
            raise ConfigError(
                "method 'dfr' needs each held-out sample's context cluster: give model.dictionary"
            )
        y = torch.cat(labels).numpy()
        weight, bias = fit_last_layer(
            torch.cat(feats).numpy(), y, z * module.num_classes + y, module.num_classes,
            self.options.c,
        )  # fmt: skip
        net.set_last_layer(torch.as_tensor(weight), torch.as_tensor(bias))

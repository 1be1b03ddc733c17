"""The two standard baselines against a known spurious attribute, with the context cluster as
that attribute: importance re-weighting and group distributionally robust optimisation.

Both group the training samples by (stratum z, label y), z being the sample's context cluster
in the confounder dictionary (or the confounder a data set states). Multi-class data only.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import torch

from deconfound.data.datamodule import Batch
from deconfound.errors import ConfigError
from deconfound.methods.base import Method, Trainee, check_strata, per_sample_loss


def independence_weights(
    strata: np.ndarray, labels: np.ndarray, shape: tuple[int, int]
) -> np.ndarray:
    """(strata, classes) table of w(z, y) = P(y) P(z) / P(y, z), the empirical shares of the
    given samples; 0 for pairs that never occur. Weighted so, the samples' labels are
    independent of their strata (Shimodaira 2000's importance weights for that target)."""
    counts = np.zeros(shape, dtype=np.float64)
    np.add.at(counts, (strata, labels), 1.0)
    n = counts.sum()
    p_z, p_y = counts.sum(1, keepdims=True) / n, counts.sum(0, keepdims=True) / n
    joint = counts / n
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(counts > 0, p_y * p_z / joint, 0.0)


class Reweight(Method):
    """Empirical risk re-weighted by w(z, y) = P(y) P(z) / P(y, z) (:func:`independence_weights`
    of the training split): in expectation, training on a distribution where the label does not
    depend on the context cluster. The loss is the weighted mean of the samples' cross-entropy
    in each batch, Σ w ℓ / Σ w (self-normalised: rare pairs' weights reach tens when clusters
    are many, and an unnormalised sum would scale the step size with them)."""

    name: ClassVar[str] = "reweight"
    needs_strata: ClassVar[bool] = True
    multiclass_only: ClassVar[bool] = True

    def setup(
        self, module: Trainee, strata: np.ndarray | None, targets: Any, num_strata: int
    ) -> None:
        assert strata is not None
        table = independence_weights(strata, np.asarray(targets), (num_strata, module.num_classes))
        self.table = torch.tensor(table, dtype=torch.float32)
        self.num_strata = num_strata

    def training_step(self, module: Trainee, batch: Batch) -> torch.Tensor:
        views, y, z = batch
        check_strata(z, self.num_strata, self.name)
        logits, modality_logits = module.model.forward_train(views)
        w = self.table.to(logits.device)[z, y]  # (B,)
        main = (w * per_sample_loss(logits, y, "multiclass")).sum() / w.sum().clamp(min=1e-12)
        return module.supervised_loss(logits, modality_logits, y, main=main)


@dataclass(frozen=True)
class GroupDROOptions:
    """Args:
    eta: step size of the exponentiated-gradient ascent on the group weights q (0.01 in
        Sagawa et al.'s experiments)."""

    eta: float = 0.01

    def __post_init__(self) -> None:
        if not self.eta > 0:
            raise ConfigError(f"model.intervention_args.eta must be positive, got {self.eta}")


class GroupDRO(Method):
    """Group DRO (Sagawa et al., ICLR 2020, "Distributionally Robust Neural Networks"): groups
    g = (context cluster, label); the loss is Σ_g q_g ℓ_g over the groups in the batch, with q
    moved towards the worst groups by q_g ← q_g exp(η ℓ_g), normalised, at every step. q is
    saved with the training state, so that a resumed run goes on with it.

    Group count: clusters × labels, 32 × 7 = 224 groups with the synthetic configs' dictionary
    (the paper's Waterbirds and CelebA have 4), many of them empty or of a few samples when the
    confounding is strong. The paper selects its checkpoint by worst-group validation accuracy:
    ``trainer.monitor=worst_group`` (groups (label, agrees with its cluster's usual label); the
    benchmark's rule table shows every method under it)."""

    name: ClassVar[str] = "groupdro"
    needs_strata: ClassVar[bool] = True
    multiclass_only: ClassVar[bool] = True
    Options = GroupDROOptions

    def setup(
        self, module: Trainee, strata: np.ndarray | None, targets: Any, num_strata: int
    ) -> None:
        self.num_strata = num_strata
        groups = num_strata * module.num_classes
        if getattr(self, "q", None) is None or len(self.q) != groups:
            self.q = torch.full((groups,), 1.0 / groups, dtype=torch.float64)

    def training_step(self, module: Trainee, batch: Batch) -> torch.Tensor:
        views, y, z = batch
        check_strata(z, self.num_strata, self.name)
        logits, modality_logits = module.model.forward_train(views)
        losses = per_sample_loss(logits, y, "multiclass")  # (B,)
        g = z * module.num_classes + y
        present, index = torch.unique(g, return_inverse=True)
        sums = torch.zeros(len(present), device=losses.device).index_add(0, index, losses)
        group_loss = sums / torch.bincount(index, minlength=len(present))  # (G_batch,)
        q = self.q.to(losses.device)
        q[present] = q[present] * torch.exp(self.options.eta * group_loss.detach().double())
        self.q = (q / q.sum()).cpu()
        main = (self.q.to(losses.device)[present].float() * group_loss).sum()
        module.log("train/worst_group_loss", group_loss.max(), batch_size=len(y))
        return module.supervised_loss(logits, modality_logits, y, main=main)

    def state(self) -> dict[str, Any]:
        return {"q": self.q.clone()} if getattr(self, "q", None) is not None else {}

    def load_state(self, state: dict[str, Any]) -> None:
        if "q" in state:
            self.q = state["q"].clone()

"""Counterfactual inference against the context's direct effect, after CLEF (Yang et al.,
CVPR 2024, "Robust Emotion Recognition in Context Debiasing").

A context-only branch (a backbone on the person-masked ``context`` view) is trained beside the
base model. The factual outcome fuses both, Y(x, c) = Z_m(x, c) + Z_c(c) (logits add: a product
of the two branches' distributions), and is trained with the data set's loss, as is the context
branch alone, so that it captures what the context by itself says of the emotion. The
prediction is the total indirect effect, TIE = TE − NDE = Y(x, c) − Y(x*, c): the factual
outcome minus the counterfactual one in which the context keeps its value and the person
takes the reference value x*.

Choices of ours, where we could not read the paper's details: the additive fusion above; the
reference outcome of the main branch, Z_m(x*, ·), is the mean of its training logits (a running
average kept in the checkpoint, as batch-norm statistics are), so TIE = Z_m(x, c) − mean Z_m.
With that fusion the context branch acts through training: the main branch is fitted to what
the context branch does not already explain, and its ranking at prediction is its own.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from deconfound.causal import ConfounderDictionary
from deconfound.data.datamodule import Batch
from deconfound.methods.base import Method, Trainee
from deconfound.models.classifier import EmotionClassifier
from deconfound.models.single import SingleStream


class CounterfactualClassifier(nn.Module):
    """The base model's classifier (``main``) and a context-only classifier (``context``).

    ``forward`` gives TIE = Z_m − reference (see the module docstring); ``factual`` the fused
    training logits and the context branch's own.

    Args:
        main: the base model's classifier, Z_m(x, c).
        context: the context-only classifier, Z_c(c).
        momentum: of the running mean of Z_m that stands for Z_m(x*, ·).
    """

    def __init__(self, main: EmotionClassifier, context: EmotionClassifier, momentum: float = 0.01):
        super().__init__()
        self.main, self.context, self.momentum = main, context, momentum
        self.register_buffer("reference", torch.zeros(main.head.out_features))  # (C,)

    @property
    def views(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys((*self.main.views, *self.context.views)))

    def factual(self, views: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(Y(x, c) = Z_m + Z_c, Z_c), each (B, classes); in training it also moves the
        reference towards the batch's mean Z_m."""
        z_m, z_c = self.main(views), self.context(views)
        if self.training:
            with torch.no_grad():
                self.reference.lerp_(z_m.detach().mean(0).to(self.reference), self.momentum)
        return z_m + z_c, z_c

    def forward(self, views: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.main(views) - self.reference  # TIE: (B, classes)


@dataclass(frozen=True)
class ClefOptions:
    """Args:
    context_view: the context branch's view (person hidden).
    context_weight: weight of the context branch's own loss.
    momentum: see :class:`CounterfactualClassifier`.
    """

    context_view: str = "context"
    context_weight: float = 1.0
    momentum: float = 0.01


class Clef(Method):
    """Counterfactual inference (module docstring): train the fused outcome and the context
    branch, predict the total indirect effect. The context branch uses the base model's
    backbone (``model.args.backbone``)."""

    name: ClassVar[str] = "clef"
    extra_views: ClassVar[tuple[str, ...]] = ("context",)
    Options = ClefOptions

    def build(
        self,
        num_classes: int,
        *,
        task: str = "multiclass",
        load_weights: bool = True,
        dictionary: ConfounderDictionary | None = None,
    ) -> nn.Module:
        o: ClefOptions = self.options
        main = EmotionClassifier(self.base(load_weights), num_classes)
        backbone = self.cfg.args.get("backbone", "resnet18")
        context = SingleStream(view=o.context_view, backbone=backbone)
        return CounterfactualClassifier(
            main, EmotionClassifier(context, num_classes), momentum=o.momentum
        )

    def training_step(self, module: Trainee, batch: Batch) -> torch.Tensor:
        views, y, _ = batch
        net: CounterfactualClassifier = module.model  # type: ignore[assignment]
        fused, z_c = net.factual(views)
        context_loss = module.loss(z_c, y)
        module.log("train/context_loss", context_loss, batch_size=len(y))
        main = module.loss(fused, y) + self.options.context_weight * context_loss
        return module.supervised_loss(fused, [], y, main=main)

    def backbone_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        net: CounterfactualClassifier = model  # type: ignore[assignment]
        return [*net.main.base.parameters(), *net.context.base.parameters()]

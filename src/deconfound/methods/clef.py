"""Counterfactual inference against the context's direct effect, after CLEF (Yang et al.,
CVPR 2024, "Robust Emotion Recognition in Context Debiasing").

A context-only branch (a backbone on the person-masked ``context`` view) is trained beside the
base model. The factual outcome fuses both branches' logits, Y(x, c) = h(Z_m(x, c), Z_c(c)),
and is trained with the data set's loss, as is the context branch alone, so that it captures
what the context by itself says of the emotion. The prediction is the total indirect effect,
TIE = TE − NDE = h(Z_m(x, c), Z_c(c)) − h(Z_m(x*, ·), Z_c(c)): the factual outcome minus the
counterfactual one in which the context keeps its value and the person takes the reference
value x*.

The fusion h (``fusion``):

- ``harmonic`` (the default): h(a, b) = log(σ(a) σ(b) / (1 + σ(a) σ(b))), class by class, the
  non-additive fusion of the counterfactual-inference papers (CF-VQA's "harmonic"). The
  subtraction then depends on the context branch: a class the context alone favours loses
  more of its score than the others, so the counterfactual changes predictions.
- ``sum``: h(a, b) = a + b. The context branch's logits cancel in TIE, which becomes
  Z_m(x, c) − Z_m(x*, ·), the main branch minus a constant per class: its ranking is the main
  branch's own, and the context branch acts through training only (the main branch is fitted
  to what the context branch does not already explain). Kept for comparison.

Choices of ours, where we could not read the paper's details: the fusions above; the reference
outcome of the main branch, Z_m(x*, ·), is the mean of its training logits (a running average
kept in the checkpoint, as batch-norm statistics are).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn

from deconfound.causal import ConfounderDictionary
from deconfound.data.datamodule import Batch
from deconfound.errors import ConfigError
from deconfound.methods.base import Method, Trainee
from deconfound.models.classifier import EmotionClassifier
from deconfound.models.single import SingleStream

Fusion = Literal["harmonic", "sum"]
FUSIONS: tuple[str, ...] = ("harmonic", "sum")


def fuse(z_m: torch.Tensor, z_c: torch.Tensor, fusion: str) -> torch.Tensor:
    """The fused logits h(z_m, z_c) (module docstring), broadcast over their shapes; the
    harmonic fusion computed as log-sigmoid(log σ(z_m) + log σ(z_c)), which equals
    log(p / (1 + p)) for p = σ(z_m) σ(z_c) without underflow."""
    if fusion == "sum":
        return z_m + z_c
    return F.logsigmoid(F.logsigmoid(z_m) + F.logsigmoid(z_c))


class CounterfactualClassifier(nn.Module):
    """The base model's classifier (``main``) and a context-only classifier (``context``).

    ``forward`` gives TIE = h(Z_m, Z_c) − h(reference, Z_c) (see the module docstring);
    ``factual`` the fused training logits and the context branch's own.

    Args:
        main: the base model's classifier, Z_m(x, c).
        context: the context-only classifier, Z_c(c).
        momentum: of the running mean of Z_m that stands for Z_m(x*, ·).
        fusion: h, ``harmonic`` or ``sum``.
    """

    def __init__(
        self,
        main: EmotionClassifier,
        context: EmotionClassifier,
        momentum: float = 0.01,
        fusion: str = "harmonic",
    ):
        super().__init__()
        self.main, self.context, self.momentum, self.fusion = main, context, momentum, fusion
        self.register_buffer("reference", torch.zeros(main.head.out_features))  # (C,)

    @property
    def views(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys((*self.main.views, *self.context.views)))

    def factual(self, views: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(Y(x, c) = h(Z_m, Z_c), Z_c), each (B, classes); in training it also moves the
        reference towards the batch's mean Z_m."""
        z_m, z_c = self.main(views), self.context(views)
        if self.training:
            with torch.no_grad():
                self.reference.lerp_(z_m.detach().mean(0).to(self.reference), self.momentum)
        return fuse(z_m, z_c, self.fusion), z_c

    def forward(self, views: dict[str, torch.Tensor]) -> torch.Tensor:
        z_m, z_c = self.main(views), self.context(views)
        return fuse(z_m, z_c, self.fusion) - fuse(self.reference, z_c, self.fusion)  # TIE


@dataclass(frozen=True)
class ClefOptions:
    """Args:
    context_view: the context branch's view (person hidden).
    context_weight: weight of the context branch's own loss.
    momentum: see :class:`CounterfactualClassifier`.
    fusion: ``harmonic`` (the counterfactual changes predictions) or ``sum`` (it does not;
        module docstring).
    """

    context_view: str = "context"
    context_weight: float = 1.0
    momentum: float = 0.01
    fusion: Fusion = "harmonic"

    def __post_init__(self) -> None:
        if self.fusion not in FUSIONS:
            raise ConfigError(
                f"model.intervention_args.fusion must be {' or '.join(FUSIONS)}, "
                f"got {self.fusion!r}"
            )


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
            main, EmotionClassifier(context, num_classes), momentum=o.momentum, fusion=o.fusion
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

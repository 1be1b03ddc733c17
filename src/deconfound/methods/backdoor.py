"""The backdoor adjustment over the confounder dictionary, computed exactly.

CCIM approximates P(Y | do(X)) = Σ_i P(Y | X, z_i) P(z_i) by one pass on an expected confounder
that attends from the input. Here the sum is computed: a classifier of the person and one
context prototype, P(Y | person, z), is trained with each sample's own prototype (the nearest
dictionary centre of its person-masked context); at prediction every prototype is enumerated
and the class probabilities are averaged with the dictionary's prior P(z). The scene reaches the
classifier only through z, which the prediction marginalises; what remains of it is what the
person's own view shows (about half of a person box is background).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

import torch
from torch import nn

from deconfound.causal import ConfounderDictionary
from deconfound.data.datamodule import Batch
from deconfound.layers import fusion_block
from deconfound.methods.base import Method, Trainee, check_strata
from deconfound.models.classifier import EmotionClassifier
from deconfound.models.single import SingleStream


class BackdoorClassifier(nn.Module):
    """P(Y | person, z) and its adjustment Σ_i P(Y | person, z_i) P(z_i).

    Args:
        person: an encoder of the person's view(s) (``views``, ``num_features``,
            ``forward_features``).
        dictionary: the prototypes z_i (N, D) and prior P(z_i), kept as fixed buffers.
        num_classes: classes.
        multilabel: per-class sigmoids (averaged) instead of one softmax.
        context_dim: width the prototype is projected to before fusion.
        fusion_dim, dropout: the fusion block of person feature and projected prototype.
    """

    def __init__(
        self,
        person: nn.Module,
        dictionary: ConfounderDictionary,
        num_classes: int,
        *,
        multilabel: bool = False,
        context_dim: int = 64,
        fusion_dim: int = 256,
        dropout: float = 0.5,
    ) -> None:
        super().__init__()
        self.base = person
        self.multilabel = multilabel
        self.register_buffer("confounders", dictionary.centres.float().clone())  # (N, D)
        self.register_buffer("prior", dictionary.prior.float().clone())  # (N,)
        self.context = nn.Sequential(
            nn.LayerNorm(dictionary.dim), nn.Linear(dictionary.dim, context_dim), nn.ReLU()
        )
        self.fusion = fusion_block(person.num_features + context_dim, fusion_dim, dropout)
        self.head = nn.Linear(fusion_dim, num_classes)

    @property
    def views(self) -> tuple[str, ...]:
        return self.base.views

    def conditional_logits(self, p: torch.Tensor, z: torch.Tensor) -> torch.Tensor:
        """Logits of P(Y | person, z) for person features ``p`` (B, Dp) and prototypes ``z``
        (B, D): (B, classes)."""
        return self.head(self.fusion(torch.cat([p, self.context(z)], dim=1)))

    def forward_train(self, views: dict[str, torch.Tensor], strata: torch.Tensor) -> torch.Tensor:
        """Training logits: each sample with its own prototype ``confounders[strata]``."""
        return self.conditional_logits(self.base.forward_features(views), self.confounders[strata])

    def probabilities(self, views: dict[str, torch.Tensor]) -> torch.Tensor:
        """Σ_i P(Y | person, z_i) P(z_i), (B, classes): the person encoded once, every
        prototype paired with every sample in one batched pass of the fusion and head."""
        p = self.base.forward_features(views)  # (B, Dp)
        b, n = p.shape[0], self.confounders.shape[0]
        pairs_p = p[:, None, :].expand(b, n, -1).reshape(b * n, -1)  # (B·N, Dp)
        pairs_z = self.confounders[None].expand(b, n, -1).reshape(b * n, -1)  # (B·N, D)
        logits = self.conditional_logits(pairs_p, pairs_z).view(b, n, -1)  # (B, N, C)
        probs = logits.sigmoid() if self.multilabel else logits.softmax(-1)
        return torch.einsum("bnc,n->bc", probs, self.prior)

    def forward(self, views: dict[str, torch.Tensor]) -> torch.Tensor:
        """Logits of the adjusted probabilities: their softmax (sigmoid for multi-label) gives
        :meth:`probabilities` back."""
        p = self.probabilities(views).clamp(1e-7, 1 - 1e-7 if self.multilabel else 1.0)
        return torch.logit(p) if self.multilabel else p.log()


@dataclass(frozen=True)
class BackdoorOptions:
    """Args:
    person_view: the person's view (default: the base model's first view, e.g. EMOT-Net's
        ``body``); it is encoded by the base model's backbone (``model.args.backbone``).
    context_dim, fusion_dim, dropout: see :class:`BackdoorClassifier`.
    """

    person_view: str | None = None
    context_dim: int = 64
    fusion_dim: int = 256
    dropout: float = 0.5


class Backdoor(Method):
    """The exact backdoor adjustment over the dictionary's prototypes (module docstring). The
    configured base model lends its person view and backbone; its context streams are replaced
    by the prototype."""

    name: ClassVar[str] = "backdoor"
    needs_dictionary: ClassVar[bool] = True
    needs_strata: ClassVar[bool] = True
    Options = BackdoorOptions

    def build(
        self,
        num_classes: int,
        *,
        task: str = "multiclass",
        load_weights: bool = True,
        dictionary: ConfounderDictionary | None = None,
    ) -> nn.Module:
        o: BackdoorOptions = self.options
        return BackdoorClassifier(
            person_stream(self, o.person_view, load_weights),
            self.dictionary(dictionary),
            num_classes,
            multilabel=task == "multilabel",
            context_dim=o.context_dim,
            fusion_dim=o.fusion_dim,
            dropout=o.dropout,
        )

    def training_step(self, module: Trainee, batch: Batch) -> torch.Tensor:
        views, y, z = batch
        net: BackdoorClassifier = module.model  # type: ignore[assignment]
        check_strata(z, net.confounders.shape[0], self.name)
        logits = net.forward_train(views, z)
        return module.supervised_loss(logits, [], y)


def person_stream(method: Method, view: str | None, load_weights: bool) -> SingleStream:
    """The configured base model's person stream alone: its ``view`` (default: its first, e.g.
    EMOT-Net's ``body``) encoded by its backbone (``model.args.backbone``, with
    ``body_weights`` or ``weights``)."""
    view = view or method.base(load_weights=False).views[0]
    args = method.cfg.args
    weights = args.get("body_weights") or args.get("weights") if load_weights else None
    return SingleStream(view=view, backbone=args.get("backbone", "resnet18"), weights=weights)


@dataclass(frozen=True)
class PersonOnlyOptions:
    """Args:
    person_view: the person's view (default: the base model's first view)."""

    person_view: str | None = None


class PersonOnly(Method):
    """The plain method on the person stream alone (:func:`person_stream`), without the base
    model's context streams: the ablation beside ``backdoor``, which drops those streams too,
    so that what the adjustment adds is told apart from what dropping the whole-image and
    context streams does."""

    name: ClassVar[str] = "person_only"
    Options = PersonOnlyOptions

    def build(
        self,
        num_classes: int,
        *,
        task: str = "multiclass",
        load_weights: bool = True,
        dictionary: ConfounderDictionary | None = None,
    ) -> nn.Module:
        person = person_stream(self, self.options.person_view, load_weights)
        return EmotionClassifier(person, num_classes)

"""Composition of a base model, an optional intervention and a linear head."""

from __future__ import annotations

from typing import Protocol

import torch
from torch import nn

from deconfound.causal.iern import IERN


class BaseModel(Protocol):
    """What every base model offers (timm's contract): the views it needs, ``num_features``,
    and ``forward_features(views) -> h`` of shape (B, num_features).

    A model whose streams are separate modalities fused by a loss (EmotiCon's face and pose)
    also has ``modalities`` (name → feature width) and ``forward_modalities(views) -> (h,
    {name: feature})``; the classifier then gives each modality its own head.
    """

    views: tuple[str, ...]
    num_features: int

    def forward_features(self, views: dict[str, torch.Tensor]) -> torch.Tensor: ...


class EmotionClassifier(nn.Module):
    """``head(intervention(base.forward_features(views)))``; the intervention is optional and
    must expose ``out_features``. Modality heads (see :class:`BaseModel`) only serve training:
    ``forward`` returns the main logits alone."""

    def __init__(self, base: nn.Module, num_classes: int, intervention: nn.Module | None = None):
        super().__init__()
        self.base = base
        self.intervention = intervention
        width = intervention.out_features if intervention is not None else base.num_features
        self.head = nn.Linear(width, num_classes)
        modalities: dict[str, int] = getattr(base, "modalities", {})
        self.modality_heads = nn.ModuleDict(
            {name: nn.Linear(dim, num_classes) for name, dim in modalities.items()}
        )

    @property
    def views(self) -> tuple[str, ...]:
        return self.base.views

    def forward(self, views: dict[str, torch.Tensor]) -> torch.Tensor:
        return self._logits(self.base.forward_features(views))

    def forward_train(
        self, views: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """The logits and, for a multi-modality base model, each modality's logits."""
        if not self.modality_heads:
            return self(views), []
        h, features = self.base.forward_modalities(views)
        return self._logits(h), [head(features[n]) for n, head in self.modality_heads.items()]

    def _logits(self, h: torch.Tensor) -> torch.Tensor:
        if self.intervention is not None:
            h = self.intervention(h)  # (B, out_features)
        return self.head(h)  # (B, num_classes)


class IERNClassifier(nn.Module):
    """``iern(base.forward_map(views))``: IERN (:class:`deconfound.causal.iern.IERN`, built for
    the base model's ``num_features`` channels) on a base model's feature map. The base model
    must offer ``forward_map(views)`` (``single_stream`` does): IERN works on maps."""

    def __init__(self, base: nn.Module, iern: IERN) -> None:
        super().__init__()
        self.base = base
        self.iern = iern

    @property
    def views(self) -> tuple[str, ...]:
        return self.base.views

    def features(self, views: dict[str, torch.Tensor]) -> torch.Tensor:
        """F: the base model's map reduced to IERN's width and size (B, channels, s, s)."""
        return self.iern.reduce(self.base.forward_map(views))

    def forward(self, views: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.iern(self.base.forward_map(views))

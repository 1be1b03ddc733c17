"""Composition of a base model, an optional intervention and a linear head."""

from __future__ import annotations

from typing import Protocol

import torch
from torch import nn


class BaseModel(Protocol):
    """What every base model offers (timm's contract): the views it needs, ``num_features``,
    and ``forward_features(views) -> h`` of shape (B, num_features)."""

    views: tuple[str, ...]
    num_features: int

    def forward_features(self, views: dict[str, torch.Tensor]) -> torch.Tensor: ...


class EmotionClassifier(nn.Module):
    """``head(intervention(base.forward_features(views)))``; the intervention is optional and
    must expose ``out_features``."""

    def __init__(self, base: nn.Module, num_classes: int, intervention: nn.Module | None = None):
        super().__init__()
        self.base = base
        self.intervention = intervention
        width = intervention.out_features if intervention is not None else base.num_features
        self.head = nn.Linear(width, num_classes)

    @property
    def views(self) -> tuple[str, ...]:
        return self.base.views

    def forward(self, views: dict[str, torch.Tensor]) -> torch.Tensor:
        h = self.base.forward_features(views)  # (B, D)
        if self.intervention is not None:
            h = self.intervention(h)
        return self.head(h)  # (B, num_classes)

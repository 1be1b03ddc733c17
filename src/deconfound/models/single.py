"""One backbone on one view: the scene classifier that pretrains a dictionary's scene encoder,
a context-only probe (view ``context``), or a plain image baseline."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from deconfound.data.views import check_views
from deconfound.models.backbones import create_backbone


class SingleStream(nn.Module):
    """``forward_features(views) = backbone(views[view])``.

    Args:
        view: the view it sees (``whole``, ``context``, ``body`` or ``face``).
        backbone: see ``BACKBONES``.
        weights: local weights file for the backbone.
    """

    def __init__(
        self, *, view: str = "whole", backbone: str = "resnet18", weights: str | Path | None = None
    ) -> None:
        super().__init__()
        self.views = check_views(view)
        self.view = view
        self.backbone = create_backbone(backbone, weights=weights)
        self.num_features = self.backbone.num_features

    def forward_features(self, views: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.backbone(views[self.view])  # (B, num_features)

    def forward_map(self, views: dict[str, torch.Tensor]) -> torch.Tensor:
        """The backbone's feature map of the view (B, num_features, h, w), for IERN."""
        return self.backbone.forward_map(views[self.view])

"""EMOT-Net (Kosti et al., "Context based emotion recognition using EMOTIC dataset", TPAMI 2019).

Two streams: a body stream on the person's crop and a context stream on the whole image
(person included, as in the paper); their pooled features are concatenated and fused by a
fully-connected layer into the joint feature ``h`` that a head (or an intervention) takes. The
streams' views can be changed (e.g. face + masked context on CAER-S, which has no body boxes).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from deconfound.data.views import check_views
from deconfound.layers import fusion_block
from deconfound.models.backbones import create_backbone


class EmotNet(nn.Module):
    """EMOT-Net's feature extractor: ``forward_features(views) -> h`` of width ``num_features``.

    Args:
        backbone: backbone of the body stream (see ``BACKBONES``).
        context_backbone: backbone of the context stream; defaults to ``backbone``.
        body_weights: local weights file for the body stream (ImageNet in the paper).
        context_weights: local weights file for the context stream (Places365 in the paper).
        fusion_dim: width of the fused feature (256 in the common PyTorch baseline).
        dropout: dropout after fusion.
        person_view: the view of the person stream (``body``, or ``face``).
        context_view: the view of the context stream (``whole``, or ``context``: person hidden).
    """

    def __init__(
        self,
        *,
        backbone: str = "resnet18",
        context_backbone: str | None = None,
        body_weights: str | Path | None = None,
        context_weights: str | Path | None = None,
        fusion_dim: int = 256,
        dropout: float = 0.5,
        person_view: str = "body",
        context_view: str = "whole",
    ) -> None:
        super().__init__()
        self.views = check_views(person_view, context_view)
        self.body = create_backbone(backbone, weights=body_weights)
        self.context = create_backbone(context_backbone or backbone, weights=context_weights)
        width = self.body.num_features + self.context.num_features
        self.fusion = fusion_block(width, fusion_dim, dropout)
        self.num_features = fusion_dim

    def forward_features(self, views: dict[str, torch.Tensor]) -> torch.Tensor:
        body = self.body(views[self.views[0]])  # (B, Db)
        context = self.context(views[self.views[1]])  # (B, Dc)
        return self.fusion(torch.cat([body, context], dim=1))  # (B, fusion_dim)

"""CAER-Net (Lee et al., "Context-Aware Emotion Recognition Networks", ICCV 2019), image form.

Two encoding streams: one on the face, one on the context with the face hidden. The context
stream ends in an attention inference module, so that the network learns *where* in the scene
to look; the face stream is average-pooled. An adaptive fusion network infers one weight per
stream from its feature, normalises the two with a softmax, and fuses the weighted features into
the joint feature ``h``. The streams default to the paper's five-layer encoder
(``caer_encoder``); any convolutional backbone can stand in.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from deconfound.data.views import check_views
from deconfound.layers import AttentionPool, fusion_block
from deconfound.models.backbones import create_backbone


class CAERNet(nn.Module):
    """CAER-Net's feature extractor: ``forward_features(views) -> h`` of width ``num_features``.

    Args:
        backbone: encoder of the face stream (``caer_encoder`` as in the paper).
        context_backbone: encoder of the context stream; defaults to ``backbone``.
        face_weights: local weights file for the face stream.
        context_weights: local weights file for the context stream.
        attention_dim: hidden channels of the attention inference module (128).
        fusion_dim: width of the fused feature (128, the fusion network's hidden width).
        dropout: dropout after fusion.
        person_view: the view of the face stream (``face``; ``body`` where faces are not
            annotated, as on EMOTIC).
        context_view: the view of the context stream (``context``: the person hidden).
    """

    def __init__(
        self,
        *,
        backbone: str = "caer_encoder",
        context_backbone: str | None = None,
        face_weights: str | Path | None = None,
        context_weights: str | Path | None = None,
        attention_dim: int = 128,
        fusion_dim: int = 128,
        dropout: float = 0.5,
        person_view: str = "face",
        context_view: str = "context",
    ) -> None:
        super().__init__()
        self.views = check_views(person_view, context_view)
        self.face = create_backbone(backbone, weights=face_weights)
        self.context = create_backbone(context_backbone or backbone, weights=context_weights)
        self.attention = AttentionPool(self.context.num_features, attention_dim)
        df, dc = self.face.num_features, self.context.num_features
        self.face_weight, self.context_weight = _weight_net(df), _weight_net(dc)
        self.fusion = fusion_block(df + dc, fusion_dim, dropout)
        self.num_features = fusion_dim

    def stream_weights(self, face: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
        """The adaptive fusion weights (B, 2) of the face and context features; rows sum to 1."""
        scores = torch.cat([self.face_weight(face), self.context_weight(context)], dim=1)
        return scores.softmax(dim=1)

    def forward_features(self, views: dict[str, torch.Tensor]) -> torch.Tensor:
        face = self.face(views[self.views[0]])  # (B, Df)
        context = self.attention(self.context.forward_map(views[self.views[1]]))  # (B, Dc)
        w = self.stream_weights(face, context)  # (B, 2)
        return self.fusion(torch.cat([face * w[:, :1], context * w[:, 1:]], dim=1))


def _weight_net(width: int) -> nn.Sequential:
    """The fusion network's branch that scores one stream's feature (width → 128 → 1)."""
    return nn.Sequential(nn.Linear(width, 128), nn.ReLU(inplace=True), nn.Linear(128, 1))

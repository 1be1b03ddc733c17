"""GNN-CNN (Zhang et al., "Context-Aware Affective Graph Reasoning for Emotion Recognition",
ICME 2019).

A CNN stream on the person, and an affective graph over the scene: the person and the context
objects (proposals from a detector, read from ``objects`` sidecar files) are nodes whose features
are pooled from the context stream's feature map (RoIAlign); graph-convolution layers with learned
affinities let the person node gather evidence from related objects. The person stream's feature
and the person node after reasoning are fused into the joint feature ``h``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn
from torchvision.ops import roi_align

from deconfound.data.views import check_views
from deconfound.layers import GraphReasoning, fusion_block
from deconfound.models.backbones import create_backbone


class GNNCNN(nn.Module):
    """GNN-CNN's feature extractor: ``forward_features(views) -> h`` of width ``num_features``.

    Args:
        backbone: backbone of the person stream.
        context_backbone: convolutional backbone whose feature map gives the node features;
            defaults to ``backbone``.
        body_weights: local weights file for the person stream.
        context_weights: local weights file for the context stream.
        node_dim: width of the graph's node features.
        graph_layers: number of graph-reasoning layers (2).
        roi_size: side of the RoIAlign grid pooled into each node feature.
        fusion_dim: width of the fused feature.
        dropout: dropout after fusion.
        person_view: the view of the person stream (``body``, or ``face``).
        context_view: the picture the nodes are pooled from (``whole``: the person is a node).
    """

    def __init__(
        self,
        *,
        backbone: str = "resnet18",
        context_backbone: str | None = None,
        body_weights: str | Path | None = None,
        context_weights: str | Path | None = None,
        node_dim: int = 256,
        graph_layers: int = 2,
        roi_size: int = 2,
        fusion_dim: int = 256,
        dropout: float = 0.5,
        person_view: str = "body",
        context_view: str = "whole",
    ) -> None:
        super().__init__()
        self.views = check_views(person_view, context_view, "objects")
        self.body = create_backbone(backbone, weights=body_weights)
        self.context = create_backbone(context_backbone or backbone, weights=context_weights)
        self.roi_size = roi_size
        self.node = nn.Sequential(
            nn.Linear(self.context.num_features, node_dim), nn.LayerNorm(node_dim), nn.ReLU()
        )
        self.graph = nn.ModuleList(GraphReasoning(node_dim) for _ in range(graph_layers))
        self.fusion = fusion_block(self.body.num_features + node_dim, fusion_dim, dropout)
        self.num_features = fusion_dim

    def node_features(self, fmap: torch.Tensor, nodes: torch.Tensor) -> torch.Tensor:
        """Node features (B, M, node_dim) pooled from ``fmap`` (B, C, h, w) over the node boxes
        ``nodes`` (B, M, 5: image fractions and a validity flag)."""
        b, m, _ = nodes.shape
        h, w = fmap.shape[2:]
        scale = torch.tensor([w, h, w, h], dtype=fmap.dtype, device=fmap.device)
        boxes = nodes[..., :4].to(fmap.dtype) * scale  # (B, M, 4) in feature-map cells
        index = torch.arange(b, device=fmap.device, dtype=fmap.dtype).repeat_interleave(m)
        rois = torch.cat([index[:, None], boxes.reshape(b * m, 4)], dim=1)  # (B·M, 5)
        pooled = roi_align(fmap, rois, self.roi_size, spatial_scale=1.0, aligned=True)
        return self.node(pooled.mean(dim=(2, 3)).view(b, m, -1))

    def forward_features(self, views: dict[str, torch.Tensor]) -> torch.Tensor:
        person = self.body(views[self.views[0]])  # (B, Db)
        nodes = views["objects"]  # (B, M, 5); row 0 is the person
        x = self.node_features(self.context.forward_map(views[self.views[1]]), nodes)
        mask = nodes[..., 4] > 0  # (B, M)
        mask[:, 0] = True  # the person node always takes part
        for layer in self.graph:
            x = layer(x, mask)
        return self.fusion(torch.cat([person, x[:, 0]], dim=1))  # (B, fusion_dim)

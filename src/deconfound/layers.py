"""Layers shared by the base models and the interventions: a batch-of-one-safe feature norm,
fusion blocks, attention pooling over a feature map, and graph reasoning over region nodes."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn


class FeatureNorm(nn.BatchNorm1d):
    """BatchNorm over feature vectors (B, D) that also trains on a batch of one: a single sample
    has no batch statistics, so it is normalised with the running ones (left unchanged)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and x.shape[0] == 1:
            return F.batch_norm(
                x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps
            )
        return super().forward(x)


def fusion_block(in_features: int, out_features: int, dropout: float) -> nn.Sequential:
    """Linear → FeatureNorm → ReLU → Dropout: how the base models fuse their streams into h."""
    return nn.Sequential(
        nn.Linear(in_features, out_features),
        FeatureNorm(out_features),
        nn.ReLU(inplace=True),
        nn.Dropout(dropout),
    )


class AttentionPool(nn.Module):
    """Pools a feature map (B, C, h, w) to (B, C) with a learned spatial attention map: CAER-Net's
    attention inference module (conv 3×3 → BN → ReLU → conv 3×3 to one channel, softmax over
    the h·w positions), which EmotiCon's context stream also uses."""

    def __init__(self, channels: int, hidden: int = 128) -> None:
        super().__init__()
        self.score = nn.Sequential(
            nn.Conv2d(channels, hidden, 3, padding=1, bias=False),
            nn.BatchNorm2d(hidden),
            nn.ReLU(inplace=True),
            nn.Conv2d(hidden, 1, 3, padding=1, bias=False),  # a bias would cancel in the softmax
        )

    def attention(self, fmap: torch.Tensor) -> torch.Tensor:
        """The attention map (B, h, w); it sums to one over each image."""
        b, _, h, w = fmap.shape
        return self.score(fmap).view(b, h * w).softmax(dim=-1).view(b, h, w)

    def forward(self, fmap: torch.Tensor) -> torch.Tensor:
        a = self.attention(fmap)  # (B, h, w)
        return torch.einsum("bchw,bhw->bc", fmap, a)  # (B, C)


class GraphReasoning(nn.Module):
    """One graph-convolution step over region nodes (B, M, D) with a validity mask (B, M).

    Edges are learned affinities: A = softmax_j(θ(x_i)·φ(x_j)/√D) over the valid nodes j, and
    x ← x + ReLU(LayerNorm(A x W)), so padded nodes neither send nor (usefully) receive.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.theta = nn.Linear(dim, dim, bias=False)
        self.phi = nn.Linear(dim, dim, bias=False)
        self.weight = nn.Linear(dim, dim, bias=False)
        self.norm = nn.LayerNorm(dim)

    def adjacency(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Row-normalised edge weights (B, M, M); columns of padded nodes are zero."""
        scores = self.theta(x) @ self.phi(x).transpose(1, 2) / math.sqrt(x.shape[-1])
        return scores.masked_fill(~mask[:, None, :], float("-inf")).softmax(dim=-1)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return x + F.relu(self.norm(self.adjacency(x, mask) @ self.weight(x)))

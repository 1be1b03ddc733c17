"""EmotiCon (Mittal et al., "EmotiCon: Context-Aware Multimodal Emotion Recognition using
Frege's Principle", CVPR 2020), image form.

Three interpretations of context, each a stream:

1. *multiple modalities* of the person: the face (a CNN on the face crop) and the pose (an MLP on
   the body keypoints, read from OpenPose files); the two are fused multiplicatively: each has its
   own classifier, trained with the multiplicative combination loss (Liu et al. 2018, as in
   M3ER), which lets a confident modality silence an unreliable one
   (``modalities`` / ``forward_modalities``; the engine adds the loss);
2. *semantic context*: the image with the person masked out, encoded by a CNN with spatial
   attention;
3. *socio-dynamic context*: the depth map (from a depth network, read from files), encoded by a
   CNN: how near the others are.

The three streams' features are concatenated and fused into the joint feature ``h``.
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from deconfound.data.views import check_views
from deconfound.errors import ConfigError
from deconfound.layers import AttentionPool, FeatureNorm, fusion_block
from deconfound.models.backbones import create_backbone


class EmotiCon(nn.Module):
    """EmotiCon's feature extractor: ``forward_features(views) -> h`` of width ``num_features``,
    and ``forward_modalities`` for the face and pose modalities' own classifiers.

    Args:
        backbone: backbone of the face stream.
        context_backbone: backbone of the semantic-context stream; defaults to ``backbone``.
        depth_backbone: backbone of the depth stream; defaults to ``backbone``.
        face_weights, context_weights, depth_weights: local weights files per stream.
        keypoints: keypoints per skeleton in the pose files (BODY_25: 25; COCO: 18); must equal
            ``data.view_sizes.pose``.
        modality_dim: width of the face and pose features.
        fusion_dim: width of the fused feature.
        dropout: dropout after fusion.
        person_view: the view of the face stream (``face``; ``body`` where faces are not known).
        context_view: the view of the semantic-context stream (``context``: the person hidden).
    """

    def __init__(
        self,
        *,
        backbone: str = "resnet18",
        context_backbone: str | None = None,
        depth_backbone: str | None = None,
        face_weights: str | Path | None = None,
        context_weights: str | Path | None = None,
        depth_weights: str | Path | None = None,
        keypoints: int = 25,
        modality_dim: int = 128,
        fusion_dim: int = 256,
        dropout: float = 0.5,
        person_view: str = "face",
        context_view: str = "context",
    ) -> None:
        super().__init__()
        self.views = check_views(person_view, "pose", context_view, "depth")
        self.keypoints = keypoints
        self.face = create_backbone(backbone, weights=face_weights)
        self.face_proj = nn.Sequential(
            nn.Linear(self.face.num_features, modality_dim), nn.ReLU(inplace=True)
        )
        self.pose = nn.Sequential(
            nn.Linear(3 * keypoints, 256),
            FeatureNorm(256),
            nn.ReLU(inplace=True),
            nn.Linear(256, modality_dim),
            nn.ReLU(inplace=True),
        )
        self.context = create_backbone(context_backbone or backbone, weights=context_weights)
        self.attention = AttentionPool(self.context.num_features)
        self.depth = create_backbone(depth_backbone or backbone, weights=depth_weights)
        width = 2 * modality_dim + self.context.num_features + self.depth.num_features
        self.fusion = fusion_block(width, fusion_dim, dropout)
        self.modalities = {"face": modality_dim, "pose": modality_dim}
        self.num_features = fusion_dim

    def forward_modalities(
        self, views: dict[str, torch.Tensor]
    ) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """The joint feature h and the face and pose features its first stream fuses."""
        person_view, _, context_view, _ = self.views
        keypoints = views["pose"]  # (B, K, 3)
        if keypoints.shape[1] != self.keypoints:
            raise ConfigError(
                f"the pose view has {keypoints.shape[1]} keypoints but model.args.keypoints is "
                f"{self.keypoints}; make data.view_sizes.pose and model.args.keypoints agree"
            )
        face = self.face_proj(self.face(views[person_view]))  # (B, modality_dim)
        pose = self.pose(keypoints.flatten(1))  # (B, modality_dim)
        context = self.attention(self.context.forward_map(views[context_view]))  # (B, Dc)
        depth = self.depth(views["depth"])  # (B, Dd)
        h = self.fusion(torch.cat([face, pose, context, depth], dim=1))
        return h, {"face": face, "pose": pose}

    def forward_features(self, views: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.forward_modalities(views)[0]

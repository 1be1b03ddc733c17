"""Image backbones that map a batch of views to pooled feature vectors.

Every backbone takes uint8 (or float in [0, 1]) images (B, 3, H, W), normalises them with the
ImageNet statistics (or the config's ``model.input_mean`` / ``input_std``: :meth:`Backbone.
set_normalisation`), and returns (B, num_features). Weights come from a local file, a
torchvision weights name or a timm tag (:mod:`deconfound.models.weights`); without them a
backbone starts from a random initialisation, announced on real data
(:func:`deconfound.models.warn_random_streams`).
"""

from __future__ import annotations

import itertools
import logging
from collections import OrderedDict
from collections.abc import Callable, Sequence
from pathlib import Path

import torch
import torchvision
from torch import nn

from deconfound.config import IMAGENET_MEAN, IMAGENET_STD
from deconfound.errors import DeconfoundError
from deconfound.models.weights import (
    fetch_torchvision,
    fit_state,
    is_file_spec,
    read_state_dict,
    timm_pretrained,
    torchvision_weights,
)

log = logging.getLogger(__name__)


class Backbone(nn.Module):
    """A convolutional ``trunk`` (normalised images → feature map) with input normalisation.

    ``forward`` gives pooled features (B, num_features); ``forward_map`` the feature map
    (B, num_features, h, w) that attention pooling and region features (RoIAlign) read. The
    last ``after_pool`` layers of a sequential trunk act on the pooled map (torchvision's
    ConvNeXt normalises after its pool).
    """

    def __init__(self, trunk: nn.Module, num_features: int, *, after_pool: int = 0) -> None:
        super().__init__()
        self.trunk = trunk
        self.num_features = num_features
        self.after_pool = after_pool
        self.arch = ""  # the name it was created by
        self.pretrained: str | None = None  # its weights as given (file, name), None: random
        self.register_buffer("mean", torch.tensor(IMAGENET_MEAN).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(IMAGENET_STD).view(1, 3, 1, 1), persistent=False)

    def set_normalisation(self, mean: Sequence[float], std: Sequence[float]) -> None:
        """Normalise inputs with these per-channel statistics (of [0, 1] pixels) instead."""
        self.mean.copy_(torch.tensor(mean, dtype=torch.float32).view(1, 3, 1, 1))
        self.std.copy_(torch.tensor(std, dtype=torch.float32).view(1, 3, 1, 1))

    def normalise(self, x: torch.Tensor) -> torch.Tensor:
        """uint8 (or [0, 1] float) images → normalised floats (ImageNet statistics unless
        set otherwise); one channel is repeated to three (depth maps)."""
        if x.dtype == torch.uint8:
            x = x.float().div_(255)
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        return (x - self.mean) / self.std

    def forward_map(self, x: torch.Tensor) -> torch.Tensor:
        if self.after_pool:
            return self.trunk[: -self.after_pool](self.normalise(x))
        return self.trunk(self.normalise(x))  # (B, num_features, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = self.forward_map(x).mean(dim=(2, 3), keepdim=True)  # (B, num_features, 1, 1)
        if self.after_pool:
            pooled = self.trunk[-self.after_pool :](pooled)
        return pooled.flatten(1)  # (B, num_features)


class TimmBackbone(Backbone):
    """A timm model without its classifier; pooled the model's own way (which may not be an
    average), and with a feature map only where the model is convolutional."""

    def forward_map(self, x: torch.Tensor) -> torch.Tensor:
        out = self.trunk.forward_features(self.normalise(x))
        if out.ndim != 4:
            raise DeconfoundError(
                f"backbone gives {out.ndim}-d features, not a feature map; models that pool "
                "over space (CAER-Net, GNN-CNN, EmotiCon) need a convolutional backbone"
            )
        return out

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.trunk(self.normalise(x))  # (B, num_features)


def small_cnn(width: int = 16) -> Backbone:
    """A four-stage CNN for CPU runs: (conv 3×3 stride 2, BN, ReLU) ×4."""
    chans = [3, width, 2 * width, 4 * width, 8 * width]
    layers: list[nn.Module] = []
    for cin, cout in itertools.pairwise(chans):
        layers += [
            nn.Conv2d(cin, cout, 3, stride=2, padding=1, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(inplace=True),
        ]
    return Backbone(nn.Sequential(*layers), chans[-1])


def caer_encoder() -> Backbone:
    """CAER-Net's encoding stream (Lee et al., ICCV 2019): five 3×3 conv layers with 32, 64,
    128, 256 and 256 channels (BN, ReLU), a 2×2 max-pool after each of the first four."""
    chans = [3, 32, 64, 128, 256, 256]
    layers: list[nn.Module] = []
    for i, (cin, cout) in enumerate(itertools.pairwise(chans)):
        layers += [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout)]
        layers += [nn.ReLU(inplace=True)] + ([nn.MaxPool2d(2)] if i < 4 else [])
    return Backbone(nn.Sequential(*layers), chans[-1])


# torchvision classifiers whose forward pass is not "feature map, then pool, then classifier"
# (transformers on tokens; auxiliary heads and input transforms): refused rather than cut wrong
_REFUSED = ("vit_", "maxvit", "googlenet", "inception")


def _trunk_of(net: nn.Module, name: str) -> nn.Module:
    """The convolutional part of torchvision classifier ``net``: every layer before its global
    pool, keys named as in ``net`` (so ``net``'s state dict loads into it), ending in a
    feature map (B, C, h, w)."""
    parts: list[tuple[str, nn.Module]]
    if name.startswith("densenet"):  # the final ReLU is a function call in its forward
        parts = [("features", net.features), ("relu", nn.ReLU(inplace=False))]
    elif name.startswith("convnext"):  # its LayerNorm, after the pool (Backbone.after_pool)
        parts = [("features", net.features), ("classifier", nn.Sequential(net.classifier[0]))]
    elif name.startswith("swin"):  # channels-last blocks, normed and permuted back
        parts = [("features", net.features), ("norm", net.norm), ("permute", net.permute)]
    elif name.startswith("mnasnet"):
        parts = [("layers", net.layers)]
    elif hasattr(net, "fc"):  # ResNet, ResNeXt, Wide ResNet, RegNet, ShuffleNet
        parts = [(k, m) for k, m in net.named_children() if k not in ("avgpool", "fc")]
    elif hasattr(net, "features"):  # MobileNet, EfficientNet, VGG, AlexNet, SqueezeNet
        parts = [("features", net.features)]
    else:
        raise DeconfoundError(f"backbone 'torchvision:{name}': not a convolutional classifier")
    return nn.Sequential(OrderedDict(parts))


def _width(trunk: nn.Module) -> int:
    """The number of channels of ``trunk``'s feature map, by a forward pass with its weights
    swapped for meta tensors (no memory, no arithmetic, the trunk itself untouched)."""
    tensors = {**dict(trunk.named_parameters()), **dict(trunk.named_buffers())}
    meta = {k: torch.empty_like(v, device="meta") for k, v in tensors.items()}
    x = torch.empty(1, 3, 224, 224, device="meta")
    with torch.no_grad():
        return int(torch.func.functional_call(trunk, meta, (x,)).shape[1])


def _torchvision(model: str, weights: str | Path | None) -> Backbone:
    if model.startswith(_REFUSED) or model not in torchvision.models.list_models(
        torchvision.models
    ):
        known = model in torchvision.models.list_models()
        raise DeconfoundError(
            f"backbone 'torchvision:{model}': "
            + (
                "not a convolutional classifier with a feature map"
                if known
                else f"torchvision has no model '{model}'"
            )
            + "; choose a CNN such as resnet50, mobilenet_v2, efficientnet_b0, densenet121 or "
            "convnext_tiny (torchvision.models.list_models(torchvision.models))"
        )
    net = torchvision.models.get_model(model, weights=None)
    trunk = _trunk_of(net, model)
    backbone = Backbone(trunk, _width(trunk), after_pool=int(model.startswith("convnext")))
    if weights is not None and not is_file_spec(weights):
        tv = torchvision_weights(model, str(weights))
        fit_state(trunk, fetch_torchvision(tv), f"{type(tv).__name__}.{tv.name}", arch=model)
    elif weights is not None:
        fit_state(trunk, read_state_dict(weights), str(weights), arch=model)
    return backbone


def _timm(model: str, weights: str | Path | None) -> Backbone:
    import timm

    if weights is not None and not is_file_spec(weights):
        net = timm_pretrained(model, str(weights), num_classes=0)
    else:
        try:
            net = timm.create_model(model, pretrained=False, num_classes=0)
        except RuntimeError as e:  # unknown model
            raise DeconfoundError(f"backbone 'timm:{model}': {e}") from None
        if weights is not None:
            fit_state(net, read_state_dict(weights), str(weights), arch=model)
    pooled = getattr(net, "head_hidden_size", net.num_features)
    if pooled != net.num_features:
        raise DeconfoundError(
            f"backbone 'timm:{model}' pools its {net.num_features}-channel map through a "
            f"hidden layer to {pooled} features; deconfound needs one width for both, so "
            "choose another model (or its torchvision version)"
        )
    return TimmBackbone(net, net.num_features)


_OWN: dict[str, Callable[[], Backbone]] = {"small_cnn": small_cnn, "caer_encoder": caer_encoder}
BACKBONES: tuple[str, ...] = (*_OWN, "resnet18", "resnet50", "resnet152", "mobilenet_v2")
"""The short backbone names; the last four are torchvision's (``torchvision:<name>``)."""


def create_backbone(name: str, *, weights: str | Path | None = None) -> Backbone:
    """Build backbone ``name`` and load ``weights`` into it if given.

    Args:
        name: one of ``BACKBONES``, ``torchvision:<model>`` for a torchvision CNN classifier,
            or ``timm:<model>`` for a timm model (each without its classifier).
        weights: a local file, a torchvision weights name (``IMAGENET1K_V1``, ``DEFAULT``)
            or a timm pretrained tag (see :mod:`deconfound.models.weights`); None for a
            random initialisation.
    """
    family, _, model = name.partition(":")
    if family == "timm" and model:
        backbone = _timm(model, weights)
    elif family == "torchvision" and model:
        backbone = _torchvision(model, weights)
    elif name in _OWN:
        backbone = _OWN[name]()
        if weights is not None and not is_file_spec(weights):
            raise DeconfoundError(
                f"backbone '{name}' has no published weights, so '{weights}' names none; give "
                "a local file or null"
            )
        if weights is not None:
            fit_state(backbone.trunk, read_state_dict(weights), str(weights))
    elif name in BACKBONES:
        backbone = _torchvision(name, weights)
    else:
        raise DeconfoundError(
            f"unknown backbone '{name}'; choose one of {', '.join(BACKBONES)}, "
            "torchvision:<model> or timm:<model>"
        )
    backbone.arch = name
    backbone.pretrained = None if weights is None else str(weights)
    return backbone


def suggested_weights(arch: str) -> str:
    """What to give a ``weights`` option of backbone ``arch`` to start it pretrained."""
    if arch.startswith("timm:"):
        return "DEFAULT (timm's pretrained tag) or a local file"
    if arch in _OWN:
        return f"a local file ({arch} has no published weights)"
    return "IMAGENET1K_V1 (torchvision's ImageNet weights) or a local file"

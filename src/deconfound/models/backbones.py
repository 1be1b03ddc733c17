"""Image backbones that map a batch of views to pooled feature vectors.

Every backbone takes uint8 (or float in [0, 1]) images (B, 3, H, W), normalises them with the
ImageNet statistics (or the config's ``model.input_mean`` / ``input_std``: :meth:`Backbone.
set_normalisation`), and returns (B, num_features). Weights come only from a local file the user
names; without one, the backbone starts from a random initialisation (and says so in the log).
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

log = logging.getLogger(__name__)


class Backbone(nn.Module):
    """A convolutional ``trunk`` (normalised images → feature map) with input normalisation.

    ``forward`` gives pooled features (B, num_features); ``forward_map`` the feature map
    (B, num_features, h, w) that attention pooling and region features (RoIAlign) read.
    """

    def __init__(self, trunk: nn.Module, num_features: int) -> None:
        super().__init__()
        self.trunk = trunk
        self.num_features = num_features
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
        return self.trunk(self.normalise(x))  # (B, num_features, h, w)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_map(x).mean(dim=(2, 3))  # (B, num_features)


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


def _torchvision(name: str) -> Callable[[], Backbone]:
    def build() -> Backbone:
        net = torchvision.models.get_model(name, weights=None)
        if hasattr(net, "fc"):  # ResNets: every child before the pool, keys kept as they are
            num_features = net.fc.in_features
            children = [(k, m) for k, m in net.named_children() if k not in ("avgpool", "fc")]
            return Backbone(nn.Sequential(OrderedDict(children)), num_features)
        if hasattr(net, "features"):  # MobileNet, EfficientNet, ...: the convolutional part
            num_features = net.classifier[-1].in_features
            return Backbone(nn.Sequential(OrderedDict(features=net.features)), num_features)
        raise DeconfoundError(
            f"backbone 'torchvision:{name}' is not a ResNet- or MobileNet-like CNN"
        )

    build.__doc__ = f"torchvision's {name} without its pool and classifier."
    return build


BACKBONES: dict[str, Callable[[], Backbone]] = {
    "small_cnn": small_cnn,
    "caer_encoder": caer_encoder,
    "resnet18": _torchvision("resnet18"),
    "resnet50": _torchvision("resnet50"),
    "resnet152": _torchvision("resnet152"),
    "mobilenet_v2": _torchvision("mobilenet_v2"),
}


def _timm(name: str) -> Backbone:
    import timm

    try:
        net = timm.create_model(name, pretrained=False, num_classes=0)
    except RuntimeError as e:  # unknown model
        raise DeconfoundError(f"backbone 'timm:{name}': {e}") from None
    return TimmBackbone(net, net.num_features)


def create_backbone(name: str, *, weights: str | Path | None = None) -> Backbone:
    """Build backbone ``name`` and load ``weights`` (a local file) into it if given.

    ``name`` is one of ``BACKBONES``, ``torchvision:<model>`` for any torchvision classification
    model, or ``timm:<model>`` for any timm model (both without their classifier).
    """
    family, _, model = name.partition(":")
    if family == "timm" and model:
        backbone = _timm(model)
    elif family == "torchvision" and model:
        if model not in torchvision.models.list_models(torchvision.models):
            raise DeconfoundError(f"backbone '{name}': torchvision has no model '{model}'")
        backbone = _torchvision(model)()
    elif name in BACKBONES:
        backbone = BACKBONES[name]()
    else:
        raise DeconfoundError(
            f"unknown backbone '{name}'; choose one of {', '.join(BACKBONES)}, "
            "torchvision:<model> or timm:<model>"
        )
    if weights is None:
        log.debug("backbone %s: random initialisation (no weights file given)", name)
    else:
        load_weights(backbone.trunk, weights)
    return backbone


CLASSIFIER_PREFIXES = ("fc.", "classifier.", "head.")


def load_weights(trunk: nn.Module, path: str | Path) -> None:
    """Load a local weights file into ``trunk``.

    Accepts a plain state dict, a checkpoint holding one under ``state_dict`` or ``model``
    (as in the Places365 ``.pth.tar`` releases), keys prefixed with ``module.``, and deconfound
    checkpoints of a model with one backbone (such as the ``single_stream`` scene classifier);
    the source model's classifier is dropped. Any other missing or unexpected key is an error.
    """
    path = Path(path)
    if not path.is_file():
        raise DeconfoundError(f"weights file {path} not found; give the path of a local file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise DeconfoundError(f"{path}: cannot read weights ({str(e).splitlines()[0]})") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    state = {k.removeprefix("module."): v for k, v in state.items()}
    if any(k.startswith("model.base.") for k in state):  # a deconfound checkpoint
        state = _backbone_of_checkpoint(state, path)
    state = {k: v for k, v in state.items() if not k.startswith(CLASSIFIER_PREFIXES)}
    try:
        missing, unexpected = trunk.load_state_dict(state, strict=False)
    except RuntimeError as e:  # shapes differ
        first = next((ln.strip() for ln in str(e).splitlines() if "size mismatch" in ln), str(e))
        raise DeconfoundError(
            f"{path}: weights do not fit this backbone ({first}); check the backbone name"
        ) from None
    if missing or unexpected:
        raise DeconfoundError(
            f"{path}: weights do not fit this backbone ({len(missing)} missing keys, e.g. "
            f"{missing[:2]}; {len(unexpected)} unexpected, e.g. {unexpected[:2]}); "
            "check the backbone name"
        )
    log.info("loaded backbone weights from %s", path)


def _backbone_of_checkpoint(state: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    """The one backbone trunk inside a deconfound checkpoint's state dict."""
    prefixes = sorted({k[: k.index(".trunk.") + 7] for k in state if ".trunk." in k})
    if len(prefixes) != 1:
        raise DeconfoundError(
            f"{path}: a deconfound checkpoint with {len(prefixes)} backbones "
            f"({', '.join(p.removesuffix('.trunk.') for p in prefixes) or 'none'}); "
            "give the checkpoint of a single_stream model (such as the scene classifier)"
        )
    (prefix,) = prefixes
    return {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}

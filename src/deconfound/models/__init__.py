"""Base models, backbones and the classifiers that methods compose from them."""

from __future__ import annotations

import inspect
import logging

from torch import nn

from deconfound.config import ModelConfig, construct
from deconfound.data.sample import DatasetInfo
from deconfound.errors import ConfigError
from deconfound.models.backbones import BACKBONES, Backbone, create_backbone, suggested_weights
from deconfound.models.caernet import CAERNet
from deconfound.models.classifier import EmotionClassifier, IERNClassifier
from deconfound.models.emoticon import EmotiCon
from deconfound.models.emotnet import EmotNet
from deconfound.models.gnncnn import GNNCNN
from deconfound.models.single import SingleStream

log = logging.getLogger(__name__)

BASE_MODELS: dict[str, type[nn.Module]] = {
    "emotnet": EmotNet,
    "caernet": CAERNet,
    "gnncnn": GNNCNN,
    "emoticon": EmotiCon,
    "single_stream": SingleStream,
}
"""Every base model by config name."""

CONTEXT_MODELS: tuple[str, ...] = ("emotnet", "caernet", "gnncnn", "emoticon")
"""The context-aware base models of the CCIM papers' tables (each has a ``<name>_synthetic``
config); ``single_stream`` is a one-view helper, not one of them."""


def create_base(cfg: ModelConfig, *, load_weights: bool = True) -> nn.Module:
    """The base model ``cfg.name`` with ``cfg.args`` (checked against its constructor).

    By convention an argument whose name ends in ``weights`` is a local weights file;
    ``load_weights=False`` leaves them out (restoring a checkpoint that holds trained weights).
    Every backbone normalises its input with ``cfg.input_mean`` and ``cfg.input_std``.
    The model a method composes from it is :func:`deconfound.methods.create_model`'s.
    """
    if cfg.name not in BASE_MODELS:
        raise ConfigError(f"unknown model '{cfg.name}'; choose one of {', '.join(BASE_MODELS)}")
    args = {k: v for k, v in cfg.args.items() if load_weights or not k.endswith("weights")}
    model = construct(BASE_MODELS[cfg.name], args, f"model '{cfg.name}'")
    for module in model.modules():
        if isinstance(module, Backbone):
            module.set_normalisation(cfg.input_mean, cfg.input_std)
    return model


def warn_random_streams(model: nn.Module, info: DatasetInfo) -> None:
    """One warning line for each backbone of ``model`` that starts from random weights on a
    real (not drawn) data set ``info``: the stream, and the option that gives it weights."""
    if info.drawn:
        return
    modules = dict(model.named_modules())
    for path, module in modules.items():
        if not isinstance(module, Backbone) or module.pretrained is not None:
            continue
        parent, _, stream = path.rpartition(".")
        params = inspect.signature(type(modules[parent]).__init__).parameters
        option = f"{stream}_weights" if f"{stream}_weights" in params else "weights"
        log.warning(
            "the %s stream (%s) of %s starts from random weights on %s; set model.args.%s=%s",
            stream,
            module.arch,
            type(modules[parent]).__name__,
            info.name,
            option,
            suggested_weights(module.arch),
        )


def warn_random_scene_backbone(backbone: Backbone, info: DatasetInfo) -> None:
    """One warning line when the scene backbone of a confounder dictionary starts from random
    weights on a real (not drawn) data set ``info``."""
    if not info.drawn and backbone.pretrained is None:
        log.warning(
            "the scene backbone (dictionary.backbone=%s) starts from random weights on %s, so "
            "its clusters group pixels, not scenes; set dictionary.weights=%s",
            backbone.arch,
            info.name,
            suggested_weights(backbone.arch),
        )


__all__ = [
    "BACKBONES",
    "BASE_MODELS",
    "CONTEXT_MODELS",
    "GNNCNN",
    "CAERNet",
    "EmotNet",
    "EmotiCon",
    "EmotionClassifier",
    "IERNClassifier",
    "SingleStream",
    "create_backbone",
    "create_base",
    "warn_random_scene_backbone",
    "warn_random_streams",
]

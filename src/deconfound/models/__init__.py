"""Base models, backbones and the classifier that composes them with an intervention."""

from __future__ import annotations

from torch import nn

from deconfound.config import ModelConfig
from deconfound.errors import ConfigError
from deconfound.models.backbones import BACKBONES, create_backbone
from deconfound.models.classifier import EmotionClassifier, build
from deconfound.models.emotnet import EmotNet

BASE_MODELS: dict[str, type[nn.Module]] = {"emotnet": EmotNet}
"""Every base model by config name."""

INTERVENTIONS: dict[str, type[nn.Module] | None] = {"none": None}
"""Every intervention by config name (``none`` = the plain base model)."""


def create_model(
    cfg: ModelConfig, num_classes: int, *, load_weights: bool = True
) -> EmotionClassifier:
    """The classifier described by ``cfg``: base model + intervention + head.

    By convention a model argument whose name ends in ``weights`` is a local weights file;
    ``load_weights=False`` leaves them out (restoring a checkpoint that holds trained weights).
    """
    if cfg.name not in BASE_MODELS:
        raise ConfigError(f"unknown model '{cfg.name}'; choose one of {', '.join(BASE_MODELS)}")
    if cfg.intervention not in INTERVENTIONS:
        raise ConfigError(
            f"unknown intervention '{cfg.intervention}'; choose one of {', '.join(INTERVENTIONS)}"
        )
    args = {k: v for k, v in cfg.args.items() if load_weights or not k.endswith("weights")}
    base = build(BASE_MODELS[cfg.name], args, f"model '{cfg.name}'")
    return EmotionClassifier(base, num_classes, intervention=None)


__all__ = [
    "BACKBONES",
    "BASE_MODELS",
    "INTERVENTIONS",
    "EmotNet",
    "EmotionClassifier",
    "create_backbone",
    "create_model",
]

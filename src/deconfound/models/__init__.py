"""Base models, backbones and the classifier that composes them with an intervention."""

from __future__ import annotations

from functools import partial
from typing import Any

import torch
from torch import nn

from deconfound.causal import CCIM, ConfounderDictionary
from deconfound.causal.iern import IERN
from deconfound.config import ModelConfig, construct
from deconfound.errors import ConfigError
from deconfound.models.backbones import BACKBONES, create_backbone
from deconfound.models.caernet import CAERNet
from deconfound.models.classifier import EmotionClassifier, IERNClassifier
from deconfound.models.emoticon import EmotiCon
from deconfound.models.emotnet import EmotNet
from deconfound.models.gnncnn import GNNCNN
from deconfound.models.single import SingleStream

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

INTERVENTIONS: dict[str, Any] = {
    "none": None,
    "ccim_dot": partial(CCIM, attention="dot"),
    "ccim_add": partial(CCIM, attention="additive"),
    "iern": IERN,
}
"""Every intervention by config name (``none`` = the plain base model). CCIM acts on the base
model's joint feature: ``factory(in_features, dictionary, **intervention_args)``; IERN on its
feature map: ``IERN(channels, num_classes, **intervention_args)``."""

CCIM_INTERVENTIONS: tuple[str, ...] = ("ccim_dot", "ccim_add")


def create_model(
    cfg: ModelConfig,
    num_classes: int,
    *,
    load_weights: bool = True,
    dictionary: ConfounderDictionary | None = None,
) -> EmotionClassifier:
    """The classifier described by ``cfg``: base model + intervention + head.

    By convention a model argument whose name ends in ``weights`` is a local weights file;
    ``load_weights=False`` leaves them out (restoring a checkpoint that holds trained weights).
    An intervention's dictionary is read from ``cfg.dictionary`` unless ``dictionary`` is given.
    """
    if cfg.name not in BASE_MODELS:
        raise ConfigError(f"unknown model '{cfg.name}'; choose one of {', '.join(BASE_MODELS)}")
    if cfg.intervention not in INTERVENTIONS:
        raise ConfigError(
            f"unknown intervention '{cfg.intervention}'; choose one of {', '.join(INTERVENTIONS)}"
        )
    args = {k: v for k, v in cfg.args.items() if load_weights or not k.endswith("weights")}
    base = construct(BASE_MODELS[cfg.name], args, f"model '{cfg.name}'")
    factory = INTERVENTIONS[cfg.intervention]
    if factory is None:
        return EmotionClassifier(base, num_classes)
    what = f"intervention '{cfg.intervention}'"
    if factory is IERN:
        if not hasattr(base, "forward_map"):
            raise ConfigError(
                f"model.intervention=iern needs a base model with a feature map "
                f"(single_stream), not '{cfg.name}'"
            )
        iern = construct(partial(IERN, base.num_features, num_classes), cfg.intervention_args, what)
        return IERNClassifier(base, iern)
    if dictionary is None:
        if not cfg.dictionary:
            raise ConfigError(
                f"model.intervention={cfg.intervention} needs model.dictionary=PATH "
                "(a confounder dictionary)"
            )
        dictionary = ConfounderDictionary.load(cfg.dictionary)
    intervention = construct(
        partial(factory, base.num_features, dictionary), cfg.intervention_args, what
    )
    return EmotionClassifier(base, num_classes, intervention)


def model_table(
    *, backbone: str | None = None, dictionary_shape: tuple[int, int] = (256, 2048)
) -> list[dict[str, Any]]:
    """Per context-aware base model (default arguments, ``backbone`` in every stream if given,
    7 classes): the views it reads and its parameter count with each intervention, CCIM on a
    dictionary of ``dictionary_shape``. Built on the meta device: nothing is allocated."""
    rows = []
    n, d = dictionary_shape
    dictionary = ConfounderDictionary(torch.zeros(n, d), torch.full((n,), 1 / n))
    with torch.device("meta"):
        for name in CONTEXT_MODELS:
            args = {"backbone": backbone} if backbone else {}
            counts = {}
            for intervention in ("none", *CCIM_INTERVENTIONS):
                cfg = ModelConfig(name=name, args=args, intervention=intervention)
                model = create_model(cfg, 7, load_weights=False, dictionary=dictionary)
                counts[intervention] = sum(p.numel() for p in model.parameters())
            rows.append({"model": name, "views": list(model.views), "parameters": counts})
    return rows


__all__ = [
    "BACKBONES",
    "BASE_MODELS",
    "CCIM",
    "CCIM_INTERVENTIONS",
    "CONTEXT_MODELS",
    "GNNCNN",
    "IERN",
    "INTERVENTIONS",
    "CAERNet",
    "EmotNet",
    "EmotiCon",
    "EmotionClassifier",
    "IERNClassifier",
    "SingleStream",
    "create_backbone",
    "create_model",
    "model_table",
]

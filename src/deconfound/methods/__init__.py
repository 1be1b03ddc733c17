"""Methods: how a model is built, what one training step does and how it predicts.

``model.intervention`` names one of :data:`METHODS`; ``model.intervention_args`` are its
options. Every method trains and evaluates through the same engine, and none reads a data
set's hidden confounder (see :mod:`deconfound.methods.base`).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch
from torch import nn

from deconfound.causal import ConfounderDictionary
from deconfound.config import ModelConfig
from deconfound.errors import ConfigError
from deconfound.methods.backdoor import Backdoor, BackdoorClassifier, PersonOnly
from deconfound.methods.base import Method, per_sample_loss
from deconfound.methods.ccim import CCIMAdditive, CCIMDot
from deconfound.methods.clef import Clef, CounterfactualClassifier
from deconfound.methods.dfr import DFR, LastLayerRefit
from deconfound.methods.iern import Confusion, IERNMethod
from deconfound.methods.jtt import JTT
from deconfound.methods.paste import Paste
from deconfound.methods.robust import GroupDRO, Reweight, independence_weights
from deconfound.models import CONTEXT_MODELS

METHODS: dict[str, type[Method]] = {
    m.name: m
    for m in (
        Method,
        CCIMDot,
        CCIMAdditive,
        Backdoor,
        PersonOnly,
        Clef,
        Paste,
        Reweight,
        GroupDRO,
        DFR,
        JTT,
        IERNMethod,
        Confusion,
    )
}
"""Every method by config name: ``none`` (the plain base model), CCIM (``ccim_dot``,
``ccim_add``), the exact ``backdoor`` adjustment and its ablation ``person_only`` (the person
stream alone, plain), ``clef`` counterfactual inference, person
``paste``, ``reweight``, ``groupdro``, last-layer refitting ``dfr``, ``jtt`` (just train twice),
and IERN (``iern``, its ablation ``confusion``)."""

CCIM_METHODS: tuple[str, ...] = ("ccim_dot", "ccim_add")
CONTEXT_METHODS: tuple[str, ...] = (
    "none", "ccim_dot", "ccim_add", "backdoor", "person_only", "clef", "paste", "reweight",
    "groupdro", "dfr", "jtt",
)  # fmt: skip
"""The methods for context-aware models (IERN and its ablation work on face feature maps)."""


LEGACY_DEFAULTS: dict[str, dict[str, Any]] = {"clef": {"fusion": "sum"}}
"""Options whose default changed, with the value a config saved before the option existed
meant. Runs record every option of their method (:func:`resolved_args`) since then, so only
older configs and checkpoints lack them."""


def resolved_args(cfg: ModelConfig, *, saved: bool = False) -> dict[str, Any]:
    """Every option of ``cfg``'s method, defaults filled in: what a run records, so that a
    later change of a default never changes what an earlier run means. ``saved``: ``cfg`` was
    read from a run or checkpoint, whose missing options take :data:`LEGACY_DEFAULTS`."""
    given = dict(cfg.intervention_args)
    if saved:
        given = {**LEGACY_DEFAULTS.get(cfg.intervention, {}), **given}
    method = get_method(dataclasses.replace(cfg, intervention_args=given))
    if dataclasses.is_dataclass(method.options):
        return dataclasses.asdict(method.options)
    return given


def get_method(cfg: ModelConfig) -> Method:
    """The method ``cfg.intervention`` names, with its options checked."""
    if cfg.intervention not in METHODS:
        raise ConfigError(
            f"unknown intervention '{cfg.intervention}'; choose one of {', '.join(METHODS)}"
        )
    return METHODS[cfg.intervention](cfg)


def create_model(
    cfg: ModelConfig,
    num_classes: int,
    *,
    task: str = "multiclass",
    load_weights: bool = True,
    dictionary: ConfounderDictionary | None = None,
) -> nn.Module:
    """The model ``cfg`` describes: its method's composition of the base model.

    By convention a model argument whose name ends in ``weights`` is a local weights file;
    ``load_weights=False`` leaves them out (restoring a checkpoint that holds trained weights).
    A method's dictionary is read from ``cfg.dictionary`` unless ``dictionary`` is given.
    """
    method = get_method(cfg)
    return method.build(num_classes, task=task, load_weights=load_weights, dictionary=dictionary)


def model_table(
    *, backbone: str | None = None, dictionary_shape: tuple[int, int] = (256, 2048)
) -> list[dict[str, Any]]:
    """Per context-aware base model (default arguments, ``backbone`` in every stream if given,
    7 classes): the views it reads and its parameter count with each of
    :data:`CONTEXT_METHODS`, on a dictionary of ``dictionary_shape``. Built on the meta device:
    nothing is allocated."""
    rows = []
    n, d = dictionary_shape
    dictionary = ConfounderDictionary(torch.zeros(n, d), torch.full((n,), 1 / n))
    with torch.device("meta"):
        for name in CONTEXT_MODELS:
            args = {"backbone": backbone} if backbone else {}
            counts = {}
            for method in CONTEXT_METHODS:
                cfg = ModelConfig(name=name, args=args, intervention=method)
                model = create_model(cfg, 7, load_weights=False, dictionary=dictionary)
                counts[method] = sum(p.numel() for p in model.parameters())
            plain = create_model(ModelConfig(name=name, args=args), 7, load_weights=False)
            rows.append({"model": name, "views": list(plain.views), "parameters": counts})
    return rows


__all__ = [
    "CCIM_METHODS",
    "CONTEXT_METHODS",
    "DFR",
    "JTT",
    "METHODS",
    "Backdoor",
    "BackdoorClassifier",
    "CCIMAdditive",
    "CCIMDot",
    "Clef",
    "Confusion",
    "CounterfactualClassifier",
    "GroupDRO",
    "IERNMethod",
    "LastLayerRefit",
    "Method",
    "Paste",
    "PersonOnly",
    "Reweight",
    "create_model",
    "get_method",
    "independence_weights",
    "model_table",
    "per_sample_loss",
    "resolved_args",
]

"""Training losses of the context-aware emotion recognition papers, chosen by name in the config.

Every entry of :data:`LOSSES` is called as ``fn(logits, target, **args)`` and returns a scalar.
Multi-class targets are class indices ``(B,)``; multi-label targets are multi-hot ``(B, C)``.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from deconfound.data.sample import Task
from deconfound.errors import ConfigError


def cross_entropy(
    logits: torch.Tensor, target: torch.Tensor, label_smoothing: float = 0.0
) -> torch.Tensor:
    """Softmax cross-entropy for one label per sample (CAER-S, GroupWalk), mean over the batch."""
    return F.cross_entropy(logits, target, label_smoothing=label_smoothing)


def bce(
    logits: torch.Tensor, target: torch.Tensor, pos_weight: list[float] | None = None
) -> torch.Tensor:
    """Binary cross-entropy on logits for multi-hot targets, mean over samples and classes."""
    weight = None if pos_weight is None else logits.new_tensor(pos_weight)
    return F.binary_cross_entropy_with_logits(logits, target.to(logits.dtype), pos_weight=weight)


def dynamic_weights(target: torch.Tensor, c: float = 1.2) -> torch.Tensor:
    """EMOT-Net class weights ``1 / ln(c + p_i)``, ``p_i`` = share of the batch labelled ``i``.

    Classes absent from the batch get ``1e-4``. Returns a ``(C,)`` tensor without gradient.
    """
    if c <= 1.0:
        raise ValueError(f"emotic_discrete needs c > 1 so that ln(c + p) > 0, got c={c}")
    share = target.detach().float().mean(dim=0)  # (C,)
    weights = 1.0 / torch.log(c + share)
    return torch.where(share > 0, weights, torch.full_like(weights, 1e-4))


def emotic_discrete(logits: torch.Tensor, target: torch.Tensor, c: float = 1.2) -> torch.Tensor:
    """EMOT-Net's discrete loss (Kosti et al., TPAMI 2019): dynamically weighted squared error.

    ``L = mean_b (1/C) sum_i w_i (y_hat_i - y_i)^2`` with ``w = dynamic_weights(target, c)``.
    It acts on the raw outputs (the network's scores), not on sigmoid probabilities.
    """
    weights = dynamic_weights(target, c).to(logits)  # (C,)
    squared = (logits - target.to(logits.dtype)) ** 2  # (B, C)
    return (squared * weights).mean()


def _log_prob_true(logits: torch.Tensor, target: torch.Tensor, task: Task) -> torch.Tensor:
    """Log-probability each modality gives to the true outcome: ``(B,)`` or ``(B, C)``."""
    if task == "multiclass":
        return F.log_softmax(logits, dim=-1).gather(-1, target.long().unsqueeze(-1)).squeeze(-1)
    y = target.to(logits.dtype)
    return y * F.logsigmoid(logits) + (1.0 - y) * F.logsigmoid(-logits)


def multiplicative(
    modality_logits: Sequence[torch.Tensor],
    target: torch.Tensor,
    *,
    task: Task,
    beta: float = 2.0,
) -> torch.Tensor:
    """Multiplicative combination loss (Liu et al., 2018), as used by M3ER and EmotiCon.

    ``L = -sum_i [prod_{j != i} (1 - p_j)]^(beta / (M - 1)) * log p_i``, ``p_i`` the probability
    modality ``i`` gives to the true outcome: a modality's term is down-weighted when the others
    are already confidently right. The weights are detached; with one modality it is the plain
    cross-entropy (``task="multiclass"``) or binary cross-entropy (``task="multilabel"``).
    """
    if task not in ("multiclass", "multilabel"):
        raise ValueError(f"multiplicative task must be 'multiclass' or 'multilabel', got {task!r}")
    if len(modality_logits) < 1:
        raise ValueError("multiplicative loss needs at least one modality's logits")
    shape = modality_logits[0].shape
    if any(z.shape != shape for z in modality_logits):
        shapes = [tuple(z.shape) for z in modality_logits]
        raise ValueError(f"multiplicative loss needs equal logit shapes per modality, got {shapes}")
    expected = shape[:-1] if task == "multiclass" else shape
    if target.shape != expected:
        raise ValueError(
            f"multiplicative {task} target must have shape {tuple(expected)}, "
            f"got {tuple(target.shape)}"
        )
    log_p = torch.stack([_log_prob_true(z, target, task) for z in modality_logits])  # (M, B[, C])
    m = log_p.shape[0]
    if m == 1:
        return -log_p[0].mean()
    miss = 1.0 - log_p.detach().exp()  # (M, B[, C]) probability each modality gets it wrong
    others = torch.stack([torch.cat([miss[:i], miss[i + 1 :]]).prod(dim=0) for i in range(m)])
    weights = others ** (beta / (m - 1))
    return -(weights * log_p).sum(dim=0).mean()


LOSSES: dict[str, Callable[..., torch.Tensor]] = {
    "cross_entropy": cross_entropy,
    "bce": bce,
    "emotic_discrete": emotic_discrete,
}
"""The main training losses by config name, each ``fn(logits, target, **args)``; the
multiplicative loss is not among them: it combines modality heads beside the main loss."""

_TASK_OF = {"cross_entropy": "multiclass", "bce": "multilabel", "emotic_discrete": "multilabel"}


def resolve(name: str, task: str, dataset: str | None = None) -> str:
    """The registry name for config value ``name`` ("auto" picks by ``task``), checked to fit."""
    if task not in ("multiclass", "multilabel"):
        raise ConfigError(f"task must be 'multiclass' or 'multilabel', got {task!r}")
    if name == "auto":
        return "cross_entropy" if task == "multiclass" else "bce"
    if name not in LOSSES:
        choices = ", ".join(["auto", *LOSSES])
        raise ConfigError(f"unknown loss {name!r}; choose one of: {choices}")
    needed = _TASK_OF.get(name)
    if needed is not None and needed != task:
        kind = "multi-label" if needed == "multilabel" else "single-label (multi-class)"
        where = f"data set {dataset!r}" if dataset else "the task"
        raise ConfigError(f"loss {name!r} needs {kind} targets; {where} is {task}")
    return name


def make_loss(
    name: str, args: dict[str, Any], task: str, dataset: str | None = None
) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
    """``loss(logits, target)``: the loss ``name`` (see :func:`resolve`) with ``args`` bound,
    after checking them against its signature."""
    name = resolve(name, task, dataset)
    fn = LOSSES[name]
    known = [p for p in inspect.signature(fn).parameters if p not in ("logits", "target")]
    unknown = sorted(set(args) - set(known))
    if unknown:
        raise ConfigError(
            f"loss.args: unknown argument '{unknown[0]}' of loss '{name}'; "
            f"known: {', '.join(known) or 'none'}"
        )
    return functools.partial(fn, **args)

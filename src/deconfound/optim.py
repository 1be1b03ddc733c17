"""The optimisers and learning-rate schedules of ``optim`` (one place: the plain methods'
one optimiser and IERN's three are made here)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from deconfound.config import Config, OptimConfig
from deconfound.errors import ConfigError


def make_optimizer(
    o: OptimConfig, backbone: list[nn.Parameter], rest: list[nn.Parameter]
) -> torch.optim.Optimizer:
    """``o.optimizer`` over ``backbone`` parameters (at ``o.backbone_lr``, default ``o.lr``)
    and the ``rest`` (at ``o.lr``)."""
    optimizers = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam, "sgd": torch.optim.SGD}
    if o.optimizer not in optimizers:
        raise ConfigError(
            f"unknown optim.optimizer '{o.optimizer}'; choose one of {', '.join(optimizers)}"
        )
    for key in ("lr", "backbone_lr", "weight_decay"):
        value = getattr(o, key)
        if value is not None and value < 0:
            raise ConfigError(f"optim.{key} must not be negative, got {value}")
    if o.optimizer == "sgd":
        extra: dict[str, Any] = {"momentum": 0.9}
    else:
        if len(o.betas) != 2 or not all(0 <= b < 1 for b in o.betas):
            raise ConfigError(f"optim.betas must be two numbers in [0, 1), got {o.betas}")
        extra = {"betas": tuple(o.betas)}
    if o.backbone_lr is None:  # one group, as before backbone_lr existed
        groups: Any = backbone + rest
    else:
        groups = [{"params": backbone, "lr": o.backbone_lr}, {"params": rest}]
        groups = [g for g in groups if g["params"]]
    return optimizers[o.optimizer](groups, lr=o.lr, weight_decay=o.weight_decay, **extra)


def make_scheduler(cfg: Config, opt: torch.optim.Optimizer) -> Any:
    """The epoch-wise learning-rate schedule ``cfg.optim.scheduler`` of ``opt`` (None for
    ``none``)."""
    o, epochs = cfg.optim, cfg.trainer.max_epochs
    if o.scheduler == "none":
        return None
    if o.scheduler == "cosine":
        return torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=epochs)
    if o.scheduler != "linear":
        raise ConfigError(f"unknown optim.scheduler '{o.scheduler}'; choose cosine, linear or none")

    def factor(epoch: int) -> float:
        if epoch < o.warmup_epochs:
            return (epoch + 1) / o.warmup_epochs
        if epoch < o.hold_epochs:
            return 1.0
        start = max(o.hold_epochs, o.warmup_epochs)
        return max(0.0, 1 - (epoch - start + 1) / (epochs - start + 1))

    return torch.optim.lr_scheduler.LambdaLR(opt, factor)

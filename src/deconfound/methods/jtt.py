"""Just train twice, JTT (Liu et al., ICML 2021, "Just Train Twice: Improving Group Robustness
without Training Group Information").

A first, short run of plain training (the identification model) is fitted to the shortcut
before it fits the samples that contradict it; the training samples it gets wrong (its error
set) are upsampled ``upweight`` times in a second run, trained from scratch with the plain
loss. Neither run uses group labels; the paper selects the second run's checkpoint by
worst-group validation accuracy (``trainer.monitor=worst_group``; the benchmark's rule table
shows every rule).

Our choices: the first run is ``none`` with the run's config for ``first_epochs`` epochs (its
own run folder, ``<name>-first``, resumable like any run), judged at its last epoch; the error
set is read from its predictions on the training pictures as they are (no redrawing, no
augmentation, the evaluation frame). ``first_epochs`` 1 and ``upweight`` 6 are set a priori,
not tuned on our benchmark: the paper's short identification runs (1-2 epochs on CelebA,
MultiNLI and CivilComments, where training takes 5-50) and its upsampling factor on the two
text sets (6; 50-100 on the image sets, whose minority groups are far rarer than our 1 - rho).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar

import numpy as np
import torch

from deconfound.errors import ConfigError
from deconfound.methods.base import Method

if TYPE_CHECKING:
    from deconfound.config import Config


@dataclass(frozen=True)
class JTTOptions:
    """Args:
    first_epochs: length of the identification run, in epochs (T in the paper).
    upweight: how many times each of its errors appears in an epoch of the second run
        (lambda_up in the paper; an integer, as upsampling repeats samples).
    """

    first_epochs: int = 1
    upweight: int = 6

    def __post_init__(self) -> None:
        for key in ("first_epochs", "upweight"):
            if not isinstance(getattr(self, key), int) or isinstance(getattr(self, key), bool):
                raise ConfigError(
                    f"model.intervention_args.{key} must be a whole number, got "
                    f"{getattr(self, key)!r}"
                )
        if self.first_epochs < 1:
            raise ConfigError(
                f"model.intervention_args.first_epochs must be at least 1, got {self.first_epochs}"
            )
        if self.upweight < 1:
            raise ConfigError(
                f"model.intervention_args.upweight must be at least 1, got {self.upweight}"
            )


class JTT(Method):
    """Plain training on the training split with the first run's errors upsampled (module
    docstring)."""

    name: ClassVar[str] = "jtt"
    multiclass_only: ClassVar[bool] = True
    Options = JTTOptions

    def first_run(self, cfg: Config) -> Config:
        first = copy.deepcopy(cfg)
        first.name = f"{cfg.name}-first"
        first.model.intervention, first.model.intervention_args = "none", {}
        first.trainer.max_epochs = self.options.first_epochs
        first.trainer.monitor, first.trainer.keep_best_by, first.trainer.select = (
            "plain",
            [],
            "last",
        )
        return first

    def learn_from_first_run(self, logits: torch.Tensor, targets: torch.Tensor) -> None:
        self.errors = (logits.argmax(-1) != targets).numpy()

    def sampling_repeats(self) -> np.ndarray:
        errors = getattr(self, "errors", None)
        if errors is None:
            raise ConfigError("method 'jtt' trains only after its first run (engine.train)")
        return np.where(errors, self.options.upweight, 1)

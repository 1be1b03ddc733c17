"""What a method is: how its model is built, what one training step does, how it predicts.

A method (DomainBed's "algorithm") is chosen by ``model.intervention`` and takes its options
from ``model.intervention_args``. The one training module (``deconfound.engine.EmotionModule``)
calls it for everything that differs between methods, passing itself as a :class:`Trainee`
(all a method may use of it); the model it builds is ``module.model``, whose
``forward(views)`` is the prediction (logits whose softmax, or sigmoid for multi-label sets,
are the class probabilities).

Methods never read a data set's hidden confounder: where they need each training sample's
confounder stratum (``needs_strata``), batches carry the sample's context cluster (the nearest
prototype of its person-masked context in the confounder dictionary), or the confounder a data
set states openly (the source data set of the mixed facial-expression sets).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, ClassVar, Protocol

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader

from deconfound.causal import ConfounderDictionary
from deconfound.config import ModelConfig, construct
from deconfound.data.datamodule import Batch, Composer
from deconfound.errors import ConfigError
from deconfound.models import create_base
from deconfound.optim import make_optimizer, make_scheduler

if TYPE_CHECKING:
    from deconfound.config import Config
    from deconfound.data.datamodule import Reader


class Trainee(Protocol):
    """What a method sees of the training module (a LightningModule): the model it built, the
    run's config, the configured loss, and Lightning's logging and manual-optimisation calls.
    Methods depend on this, never on the engine."""

    model: nn.Module
    cfg: Config
    num_classes: int
    global_step: int

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The configured loss (``loss.name`` with ``loss.args``)."""
        ...

    def supervised_loss(
        self,
        logits: torch.Tensor,
        modality_logits: list[torch.Tensor],
        y: torch.Tensor,
        main: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """A step's training loss, logged: ``main`` (default: the configured loss of
        ``logits``) plus a multi-modality base model's modality loss; refused if not finite."""
        ...

    def log(self, name: str, value: Any, **kwargs: Any) -> None: ...
    def log_dict(self, values: Any, **kwargs: Any) -> None: ...
    def optimizers(self) -> Any: ...
    def lr_schedulers(self) -> Any: ...
    def manual_backward(self, loss: torch.Tensor, *args: Any, **kwargs: Any) -> None: ...


@dataclass(frozen=True)
class NoOptions:
    """A method without options."""


class Method:
    """The plain method: empirical risk minimisation of ``head(base.forward_features(views))``.

    Subclasses override what differs. Class attributes say what a method needs:
    ``needs_dictionary`` (``model.dictionary``), ``needs_strata`` (each training sample's
    confounder stratum in its batch), ``extra_views`` (views beyond the base model's), and
    ``manual_optimization`` (the method steps its own optimisers, as IERN does).

    Args:
        cfg: the model section (base model, its arguments, ``intervention_args``).
    """

    name: ClassVar[str] = "none"
    needs_dictionary: ClassVar[bool] = False
    needs_strata: ClassVar[bool] = False
    extra_views: ClassVar[tuple[str, ...]] = ()
    manual_optimization: ClassVar[bool] = False
    multiclass_only: ClassVar[bool] = False

    Options: ClassVar[type | None] = NoOptions
    """The dataclass of the method's ``intervention_args`` (None: they are the arguments of a
    module the method builds, checked against its constructor at :meth:`build`)."""

    def __init__(self, cfg: ModelConfig) -> None:
        self.cfg = cfg
        self.options: Any = None
        if self.Options is not None:
            what = f"model.intervention_args of method '{self.name}'"
            self.options = construct(self.Options, cfg.intervention_args, what)

    # --- building -------------------------------------------------------------------------
    def build(
        self,
        num_classes: int,
        *,
        task: str = "multiclass",
        load_weights: bool = True,
        dictionary: ConfounderDictionary | None = None,
    ) -> nn.Module:
        """The model: here ``EmotionClassifier(base, num_classes)``."""
        from deconfound.models.classifier import EmotionClassifier

        return EmotionClassifier(self.base(load_weights), num_classes)

    def base(self, load_weights: bool = True) -> nn.Module:
        """The configured base model (``model.name`` with ``model.args``)."""
        return create_base(self.cfg, load_weights=load_weights)

    def dictionary(self, given: ConfounderDictionary | None) -> ConfounderDictionary:
        """``given``, else the dictionary at ``model.dictionary`` (an error without one)."""
        if given is not None:
            return given
        if not self.cfg.dictionary:
            raise ConfigError(
                f"model.intervention={self.name} needs model.dictionary=PATH "
                "(a confounder dictionary: `deconfound dictionary build`)"
            )
        return ConfounderDictionary.load(self.cfg.dictionary)

    def compose(
        self, reader: Reader, split: str, fill: str, views: Sequence[str] = ()
    ) -> Composer | None:
        """How training pictures are redrawn before the model's ``views`` are cut from them
        (None: as they are)."""
        return None

    # --- training ---------------------------------------------------------------------------
    def setup(
        self, module: Trainee, strata: np.ndarray | None, targets: Any, num_strata: int
    ) -> None:
        """Called once before training with the training split's strata (None where the
        method does not need them; values in 0 … ``num_strata`` − 1) and targets: where a
        method fits statistics of the data."""

    def state(self) -> dict[str, Any]:
        """Training state of the method's own, saved in checkpoints (beside the weights)."""
        return {}

    def load_state(self, state: dict[str, Any]) -> None:
        """Restore :meth:`state` from a checkpoint."""

    def training_step(self, module: Trainee, batch: Batch) -> torch.Tensor:
        """One step's loss (or, for manual optimisation, the logged loss after stepping)."""
        views, y, _ = batch
        logits, modality_logits = module.model.forward_train(views)
        return module.supervised_loss(logits, modality_logits, y)

    def configure_optimizers(self, module: Trainee) -> Any:
        """One optimiser: the base model at ``optim.backbone_lr``, the rest at ``optim.lr``."""
        base = self.backbone_parameters(module.model)
        ids = {id(p) for p in base}
        rest = [p for p in module.model.parameters() if id(p) not in ids]
        opt = make_optimizer(module.cfg.optim, base, rest)
        sched = make_scheduler(module.cfg, opt)
        return opt if sched is None else {"optimizer": opt, "lr_scheduler": sched}

    def backbone_parameters(self, model: nn.Module) -> list[nn.Parameter]:
        """The parameters trained at ``optim.backbone_lr``: the base model's."""
        return list(model.base.parameters())

    def on_train_epoch_end(self, module: Trainee) -> None:
        """Called at each training epoch's end."""

    # --- held-out validation samples and a first run (two-stage methods) -------------------
    @property
    def held_out_share(self) -> float:
        """The share of the validation split this method keeps for itself (0: none): those
        samples reach :meth:`before_validation` and are never scored."""
        return 0.0

    def before_validation(self, module: Trainee, held_out: DataLoader | None) -> None:
        """Called before each validation of a training run (not its sanity check), with a
        loader of the held-out validation samples (None without any); the model is in
        evaluation mode."""

    def first_run(self, cfg: Config) -> Config | None:
        """The config of a run that the engine trains to completion before this one, in a
        folder of this run's (JTT's identification model); None: no first run."""
        return None

    def learn_from_first_run(self, logits: torch.Tensor, targets: torch.Tensor) -> None:
        """The first run's logits (N, classes) on the training split, in the split's order,
        from its pictures as they are (not redrawn, not augmented), and their targets."""

    def sampling_repeats(self) -> np.ndarray | None:
        """How many times each training sample appears in an epoch (None: once each)."""
        return None


def per_sample_loss(logits: torch.Tensor, y: torch.Tensor, task: str) -> torch.Tensor:
    """(B,) cross-entropy (multi-class) or binary cross-entropy averaged over classes."""
    if task == "multiclass":
        return F.cross_entropy(logits, y, reduction="none")
    bce = F.binary_cross_entropy_with_logits(logits, y.to(logits.dtype), reduction="none")
    return bce.mean(1)


def check_strata(z: torch.Tensor, size: int, method: str) -> None:
    """Refuse a batch whose strata are unknown (-1) or outside 0 … size − 1."""
    if len(z) and (int(z.min()) < 0 or int(z.max()) >= size):
        raise ConfigError(
            f"method '{method}' needs each training sample's confounder stratum in "
            f"0..{size - 1}, got {int(z.min())}..{int(z.max())}; give model.dictionary (its "
            "clusters are the strata) or a data set that states its confounder"
        )

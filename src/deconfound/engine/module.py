"""The one LightningModule that trains and evaluates every method on every base model."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lightning as L
import torch
from torchmetrics import MeanMetric

from deconfound.causal import ConfounderDictionary
from deconfound.config import Config, from_dict
from deconfound.data.datamodule import Batch, dataset_info
from deconfound.engine.metrics import ReweightedAccuracy, WorstGroupAccuracy, make_metrics
from deconfound.errors import ConfigError, DeconfoundError
from deconfound.losses import make_loss, multiplicative
from deconfound.methods import get_method
from deconfound.models import warn_random_streams


class EmotionModule(L.LightningModule):
    """Trains and evaluates the model of ``config``: its method (``model.intervention``, see
    :mod:`deconfound.methods`) builds the model and says what a training step does; the loss
    and metrics come from the data set's task.

    Validation also logs, where batches carry strata (the dictionary's context clusters, or a
    data set's stated confounder), ``val/accuracy_reweighted``: accuracy with each (stratum,
    label) pair weighted as if the two were independent (:class:`ReweightedAccuracy`), and
    ``val/accuracy_worst_group``: the lowest accuracy over (label, agrees with its context's
    usual label or not) groups (:class:`WorstGroupAccuracy`); evaluation reports both too
    where its batches carry strata (``deconfound evaluate`` with a dictionary).

    Args:
        config: the resolved run config as a plain dict (saved in every checkpoint, so that a
            checkpoint alone rebuilds the model).
        load_weights: load the backbone weight files named in the config; False when restoring
            from a checkpoint, which holds the trained weights already.
        dictionary: the method's confounder dictionary, when not read from the config's path
            (a restored checkpoint carries its own).
    """

    def __init__(
        self,
        config: dict[str, Any],
        load_weights: bool = True,
        dictionary: ConfounderDictionary | None = None,
    ) -> None:
        super().__init__()
        self.save_hyperparameters({"config": config})
        self.cfg: Config = from_dict(Config, config, "run config")
        self.info = dataset_info(self.cfg.data.dataset)
        self.method = get_method(self.cfg.model)
        if self.method.multiclass_only and self.info.task != "multiclass":
            raise ConfigError(
                f"model.intervention={self.method.name} needs a multi-class data set, and "
                f"{self.info.name} is {self.info.task}"
            )
        self.automatic_optimization = not self.method.manual_optimization
        loss = self.cfg.loss
        self.criterion = make_loss(loss.name, loss.args, self.info.task, self.info.name)
        self.model = self.method.build(
            self.info.num_classes,
            task=self.info.task,
            load_weights=load_weights,
            dictionary=dictionary,
        )
        if load_weights:
            warn_random_streams(self.model, self.info)
        self.val_metrics = make_metrics(self.info, "val/")
        self.test_metrics = make_metrics(self.info, "test/")
        self.val_reweighted = ReweightedAccuracy()
        self.val_worst_group = WorstGroupAccuracy()
        self.test_reweighted = ReweightedAccuracy()
        self.test_worst_group = WorstGroupAccuracy()
        # the loss over all the samples of all the processes, each sample weighing the same
        self.val_loss, self.test_loss = MeanMetric(), MeanMetric()

    @property
    def num_classes(self) -> int:
        return self.info.num_classes

    def forward(self, views: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model(views)

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The configured loss (``loss.name`` with ``loss.args``) of the logits."""
        return self.criterion(logits, y)

    def modality_loss(self, modality_logits: list[torch.Tensor], y: torch.Tensor) -> torch.Tensor:
        """The multiplicative combination loss over the modality heads' logits (EmotiCon)."""
        beta = self.cfg.loss.modality_beta
        return multiplicative(modality_logits, y, task=self.info.task, beta=beta)

    def supervised_loss(
        self,
        logits: torch.Tensor,
        modality_logits: list[torch.Tensor],
        y: torch.Tensor,
        main: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """A step's training loss, logged: ``main`` (default: the configured loss of
        ``logits``) plus the modality loss of a multi-modality base model; refused when it
        is not finite."""
        loss = self.loss(logits, y) if main is None else main
        if modality_logits and self.cfg.loss.modality_weight > 0:
            extra = self.modality_loss(modality_logits, y)
            self.log("train/modality_loss", extra, batch_size=len(y))
            loss = loss + self.cfg.loss.modality_weight * extra
        if not torch.isfinite(loss):
            raise FloatingPointError(
                f"training loss became {loss.item()} at step {self.global_step}; "
                "lower optim.lr or check the input data"
            )
        self.log("train/loss", loss, prog_bar=True, batch_size=len(y))
        return loss

    def setup(self, stage: str) -> None:
        if self.cfg.trainer.channels_last:  # convolutions then run channels-last, whatever
            self.model.to(memory_format=torch.channels_last)  # the order of their input
        data = self.trainer.datamodule if self._trainer is not None else None
        if stage == "fit" and data is not None:
            strata, num_strata = data.training_strata()
            targets = data.training_targets()
            if self.method.needs_strata and strata is None:
                raise ConfigError(
                    f"model.intervention={self.method.name} needs each training sample's "
                    "confounder stratum: give model.dictionary (its context clusters), or use "
                    "a data set that states its confounder"
                )
            self.method.setup(self, strata, targets, num_strata)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["method_state"] = self.method.state()

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.method.load_state(checkpoint.get("method_state", {}))

    def _scores(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.softmax(-1) if self.info.task == "multiclass" else logits.sigmoid()

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        return self.method.training_step(self, batch)

    def on_train_epoch_end(self) -> None:
        self.method.on_train_epoch_end(self)

    def on_validation_epoch_start(self) -> None:
        # a last optimiser step can leave non-finite weights behind a finite loss: stop before
        # the validation that would save them as a checkpoint
        bad = next((n for n, p in self.named_parameters() if not p.isfinite().all()), None)
        if bad is not None:
            raise FloatingPointError(
                f"weight {bad} became non-finite in epoch {self.current_epoch}; "
                "lower optim.lr or check the input data"
            )
        if not self.trainer.sanity_checking:  # a method's refit on held-out samples (DFR)
            data = self.trainer.datamodule
            self.method.before_validation(self, data.held_out_loader() if data else None)

    def load_state_dict(self, state_dict: Mapping[str, Any], strict: bool = True, **kw: Any) -> Any:
        """Load a checkpoint's weights (evaluating, or resuming a run); weights that do not fit
        the model the config describes now, or that are not finite, are a one-line error."""
        bad = next(
            (k for k, v in state_dict.items() if v.is_floating_point() and not v.isfinite().all()),
            None,
        )
        if bad is not None:
            raise DeconfoundError(
                f"{self._checkpoint_name()}: weight {bad} holds NaN or infinite values (saved "
                "after training diverged); use another checkpoint or train again"
            )
        try:
            return super().load_state_dict(state_dict, strict, **kw)
        except RuntimeError as e:
            first = next((ln.strip() for ln in str(e).splitlines()[1:] if ln.strip()), str(e))
            raise DeconfoundError(
                f"{self._checkpoint_name()}: its weights do not fit the model that the config "
                f"describes ({first}); the model, the data set's classes or model.dictionary "
                "differ from the run that saved it"
            ) from None

    def _checkpoint_name(self) -> str:
        path = self._trainer.ckpt_path if self._trainer is not None else None
        return str(path) if path else "checkpoint"

    def _eval_step(self, batch: Batch, stage: str) -> None:
        views, y, z = batch
        logits = self(views)
        metrics = self.val_metrics if stage == "val" else self.test_metrics
        metrics.update(self._scores(logits), y.long() if self.info.task == "multilabel" else y)
        losses = self.val_loss if stage == "val" else self.test_loss
        losses.update(self.loss(logits, y), weight=len(y))
        self.log(f"{stage}/loss", losses)
        self.log_dict(metrics, prog_bar=stage == "val")
        if self.info.task == "multiclass" and len(z) and int(z.min()) >= 0:
            val = stage == "val"
            for name, metric in (
                ("reweighted", self.val_reweighted if val else self.test_reweighted),
                ("worst_group", self.val_worst_group if val else self.test_worst_group),
            ):
                metric.update(logits.argmax(-1), y, z)
                self.log(f"{stage}/accuracy_{name}", metric)

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def predict_step(self, batch: Batch, batch_idx: int) -> tuple[torch.Tensor, torch.Tensor]:
        views, y, _ = batch
        return self(views), y

    def configure_optimizers(self) -> Any:
        return self.method.configure_optimizers(self)

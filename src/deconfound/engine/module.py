"""The one LightningModule that trains and evaluates every (base model + intervention)."""

from __future__ import annotations

from typing import Any

import lightning as L
import torch

from deconfound.causal import ConfounderDictionary
from deconfound.config import Config, from_dict
from deconfound.data.datamodule import Batch, dataset_info
from deconfound.engine.losses import make_loss, multiplicative
from deconfound.engine.metrics import make_metrics
from deconfound.errors import ConfigError
from deconfound.models import create_model


class EmotionModule(L.LightningModule):
    """Trains ``create_model(config.model)`` with the loss and metrics of the data set's task.

    Args:
        config: the resolved run config as a plain dict (saved in every checkpoint, so that a
            checkpoint alone rebuilds the model).
        load_weights: load the backbone weight files named in the config; False when restoring
            from a checkpoint, which holds the trained weights already.
        dictionary: the intervention's confounder dictionary, when not read from the config's
            path (a restored checkpoint carries its own).
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
        loss = self.cfg.loss
        self.criterion = make_loss(loss.name, loss.args, self.info.task, self.info.name)
        self.model = create_model(
            self.cfg.model, self.info.num_classes, load_weights=load_weights, dictionary=dictionary
        )
        self.val_metrics = make_metrics(self.info, "val/")
        self.test_metrics = make_metrics(self.info, "test/")

    def forward(self, views: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model(views)

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The configured loss (``loss.name`` with ``loss.args``) of the logits."""
        return self.criterion(logits, y)

    def modality_loss(self, modality_logits: list[torch.Tensor], y: torch.Tensor) -> torch.Tensor:
        """The multiplicative combination loss over the modality heads' logits (EmotiCon)."""
        beta = self.cfg.loss.modality_beta
        return multiplicative(modality_logits, y, task=self.info.task, beta=beta)

    def _scores(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.softmax(-1) if self.info.task == "multiclass" else logits.sigmoid()

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        views, y, _ = batch
        logits, modality_logits = self.model.forward_train(views)
        loss = self.loss(logits, y)
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

    def _eval_step(self, batch: Batch, stage: str) -> None:
        views, y, _ = batch
        logits = self(views)
        metrics = self.val_metrics if stage == "val" else self.test_metrics
        metrics.update(self._scores(logits), y.long() if self.info.task == "multilabel" else y)
        self.log(f"{stage}/loss", self.loss(logits, y), batch_size=len(y))
        self.log_dict(metrics, prog_bar=stage == "val")

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def configure_optimizers(self) -> Any:
        o = self.cfg.optim
        optimizers = {"adamw": torch.optim.AdamW, "adam": torch.optim.Adam, "sgd": torch.optim.SGD}
        if o.optimizer not in optimizers:
            raise ConfigError(
                f"unknown optim.optimizer '{o.optimizer}'; choose one of {', '.join(optimizers)}"
            )
        extra = {"momentum": 0.9} if o.optimizer == "sgd" else {}
        opt = optimizers[o.optimizer](
            self.parameters(), lr=o.lr, weight_decay=o.weight_decay, **extra
        )
        if o.scheduler == "none":
            return opt
        if o.scheduler != "cosine":
            raise ConfigError(f"unknown optim.scheduler '{o.scheduler}'; choose cosine or none")
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=self.cfg.trainer.max_epochs)
        return {"optimizer": opt, "lr_scheduler": sched}

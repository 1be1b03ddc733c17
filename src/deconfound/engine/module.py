"""The one LightningModule that trains and evaluates every (base model + intervention)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import lightning as L
import torch
from torch import nn
from torchmetrics import MeanMetric

from deconfound.causal import ConfounderDictionary
from deconfound.config import Config, OptimConfig, from_dict
from deconfound.data.datamodule import Batch, dataset_info
from deconfound.engine.losses import make_loss, multiplicative
from deconfound.engine.metrics import make_metrics
from deconfound.errors import ConfigError, DeconfoundError
from deconfound.models import IERNClassifier, create_model


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
        # the loss over all the samples of all the processes, each sample weighing the same
        self.val_loss, self.test_loss = MeanMetric(), MeanMetric()

    def forward(self, views: dict[str, torch.Tensor]) -> torch.Tensor:
        return self.model(views)

    def loss(self, logits: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """The configured loss (``loss.name`` with ``loss.args``) of the logits."""
        return self.criterion(logits, y)

    def modality_loss(self, modality_logits: list[torch.Tensor], y: torch.Tensor) -> torch.Tensor:
        """The multiplicative combination loss over the modality heads' logits (EmotiCon)."""
        beta = self.cfg.loss.modality_beta
        return multiplicative(modality_logits, y, task=self.info.task, beta=beta)

    def setup(self, stage: str) -> None:
        if self.cfg.trainer.channels_last:  # convolutions then run channels-last, whatever
            self.model.to(memory_format=torch.channels_last)  # the order of their input

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

    def on_validation_epoch_start(self) -> None:
        # a last optimiser step can leave non-finite weights behind a finite loss: stop before
        # the validation that would save them as a checkpoint
        bad = next((n for n, p in self.named_parameters() if not p.isfinite().all()), None)
        if bad is not None:
            raise FloatingPointError(
                f"weight {bad} became non-finite in epoch {self.current_epoch}; "
                "lower optim.lr or check the input data"
            )

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
        views, y, _ = batch
        logits = self(views)
        metrics = self.val_metrics if stage == "val" else self.test_metrics
        metrics.update(self._scores(logits), y.long() if self.info.task == "multilabel" else y)
        losses = self.val_loss if stage == "val" else self.test_loss
        losses.update(self.loss(logits, y), weight=len(y))
        self.log(f"{stage}/loss", losses)
        self.log_dict(metrics, prog_bar=stage == "val")

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        self._eval_step(batch, "val")

    def test_step(self, batch: Batch, batch_idx: int) -> None:
        self._eval_step(batch, "test")

    def configure_optimizers(self) -> Any:
        base = list(self.model.base.parameters())
        ids = {id(p) for p in base}
        rest = [p for p in self.parameters() if id(p) not in ids]
        opt = make_optimizer(self.cfg.optim, base, rest)
        sched = make_scheduler(self.cfg, opt)
        return opt if sched is None else {"optimizer": opt, "lr_scheduler": sched}


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


class IERNModule(EmotionModule):
    """Trains IERN (``model.intervention: iern``) with its three alternating steps per batch,
    each with its own optimiser (``optim``'s kind, learning rate and betas):

    1. the discriminators, on detached emotion and confounder maps;
    2. the generators, the strata centres and the reconstruction network, by the confusion,
       center and reconstruction losses (discriminators frozen);
    3. the base model and reduction (at ``optim.backbone_lr``), the emotion generator and the
       classifier, by cross-entropy of the stratum-averaged prediction.

    Batches must carry every sample's confounder stratum (0 … strata − 1).
    """

    def __init__(
        self,
        config: dict[str, Any],
        load_weights: bool = True,
        dictionary: ConfounderDictionary | None = None,
    ) -> None:
        super().__init__(config, load_weights, dictionary)
        self.automatic_optimization = False
        if self.info.task != "multiclass":
            raise ConfigError("model.intervention=iern needs a multi-class data set")

    def training_step(self, batch: Batch, batch_idx: int) -> torch.Tensor:
        views, y, z = batch
        net: IERNClassifier = self.model  # type: ignore[assignment]
        iern = net.iern
        if z.min() < 0 or z.max() >= iern.strata:
            raise ConfigError(
                f"IERN needs each training sample's confounder stratum in 0..{iern.strata - 1} "
                f"(model.intervention_args.strata), got {z.min().item()}..{z.max().item()}; "
                f"use a data set that names its strata (mixbasic, synthetic_faces)"
            )
        opt_dis, opt_feat, opt_cls = self.optimizers()  # type: ignore[misc]
        f = net.features(views)  # (B, C, s, s), with the backbone's graph for step 3
        fd = f.detach()
        e, c = iern.emotion_generator(fd), iern.confounder_generator(fd)

        dis = iern.discriminator_loss(e.detach(), c.detach(), y, z)
        opt_dis.zero_grad()
        self.manual_backward(dis)
        opt_dis.step()

        discriminators = iern.parameter_groups()["discriminators"]
        for p in discriminators:
            p.requires_grad_(False)
        feat = iern.feature_losses(fd, e, c, z)
        opt_feat.zero_grad()
        self.manual_backward(feat.total)
        if iern.center_weight > 0:  # the centres follow the unweighted center loss
            iern.centres.grad.div_(iern.center_weight)  # type: ignore[union-attr]
        opt_feat.step()
        for p in discriminators:
            p.requires_grad_(True)

        logits = iern.classify(iern.emotion_generator(f))
        loss = self.loss(logits, y)
        if not torch.isfinite(loss) or not torch.isfinite(feat.total):
            raise FloatingPointError(
                f"IERN's losses became non-finite at step {self.global_step}; "
                "lower optim.lr or check the input data"
            )
        opt_cls.zero_grad()
        self.manual_backward(loss)
        opt_cls.step()
        n = len(y)
        self.log("train/loss", loss, prog_bar=True, batch_size=n)
        self.log_dict(
            {
                "train/discriminators": dis,
                "train/confusion": feat.confusion,
                "train/center": feat.center,
                "train/reconstruction": feat.reconstruction,
            },
            batch_size=n,
        )
        return loss

    def on_train_epoch_end(self) -> None:
        schedulers = self.lr_schedulers()
        for sched in schedulers if isinstance(schedulers, list) else [schedulers]:
            if sched is not None:
                sched.step()

    def configure_optimizers(self) -> Any:
        net: IERNClassifier = self.model  # type: ignore[assignment]
        groups = net.iern.parameter_groups()
        backbone = list(net.base.parameters()) + groups["reduce"]
        optimizers = [
            make_optimizer(self.cfg.optim, [], groups["discriminators"]),
            make_optimizer(self.cfg.optim, [], groups["features"]),
            make_optimizer(self.cfg.optim, backbone, groups["classifier"]),
        ]
        schedulers = [make_scheduler(self.cfg, opt) for opt in optimizers]
        if schedulers[0] is None:
            return optimizers
        return optimizers, schedulers


def module_class(config: dict[str, Any]) -> type[EmotionModule]:
    """The module that trains ``config``'s model: IERN's three-step one, or the plain one."""
    return IERNModule if config["model"]["intervention"] == "iern" else EmotionModule

"""IERN (Chen et al., ACM MM 2022) as a method, and its ablation ``confusion``.

IERN's parts (:class:`deconfound.causal.iern.IERN`) sit on the base model's feature map; it
trains with three alternating steps per batch, each with its own optimiser (``optim``'s kind,
learning rate and betas), in the published order:

1. the discriminators, on detached emotion and confounder maps;
2. the generators, the strata centres and the reconstruction network, by the confusion,
   center and reconstruction losses (discriminators frozen);
3. the base model and reduction (at ``optim.backbone_lr``), the emotion generator and the
   classifier, by cross-entropy of the stratum-averaged prediction.

Step 3 classifies, as the authors' release does, the emotion map computed at the start of the
batch, before step 2 updated the emotion generator; the release's backward then ran through that
map's graph after the update, and on its torch (whose Adam wrote the new weights through
``.data``, unseen by autograd) the gradient passed through the generator at its *updated*
weights, with the activations of the start of the batch (``intervention_args.step3:
release``, the default, reproduces this). Two named variants: ``pre_update`` takes the whole
step-3 gradient at the weights of the start of the batch (what a torch that keeps saved
tensors apart would compute; this library's ``release`` until 2026-12-07) and ``recomputed``
recomputes the emotion map after step 2. Steps 1 and 2 are the same in all three, and the
emotion generator runs once per batch in the first two (its batch-norm statistics updated
once, as in the release).

Batches carry every sample's confounder stratum: the source data set where a data set states
it (mixbasic, synthetic_faces), else the sample's context cluster in the dictionary.
"""

from __future__ import annotations

import logging
from functools import partial
from typing import Any, ClassVar

import torch
from torch import nn

from deconfound.causal import ConfounderDictionary
from deconfound.causal.iern import IERN
from deconfound.config import construct
from deconfound.data.datamodule import Batch
from deconfound.diagnostics.iern import diagnose
from deconfound.errors import ConfigError
from deconfound.methods.base import Method, Trainee, check_strata
from deconfound.models.classifier import IERNClassifier
from deconfound.optim import make_optimizer, make_scheduler

log = logging.getLogger(__name__)

DIAGNOSE_EVERY = 5
"""Every how many training batches IERN's diagnostics (:mod:`deconfound.diagnostics.iern`) are
measured and logged (``intervention_args.diagnose_every``; 0: never)."""

STEP3 = ("release", "pre_update", "recomputed")
"""How IERN's step 3 reads the emotion map (see the module docstring)."""


class IERNMethod(Method):
    """IERN: disentangled emotion and confounder maps, the backdoor adjustment over the strata
    prototypes. ``model.intervention_args`` are IERN's (``strata``, ``channels``, ...)."""

    name: ClassVar[str] = "iern"
    needs_strata: ClassVar[bool] = True
    manual_optimization: ClassVar[bool] = True
    multiclass_only: ClassVar[bool] = True
    adjust: ClassVar[bool] = True
    Options = None

    def build(
        self,
        num_classes: int,
        *,
        task: str = "multiclass",
        load_weights: bool = True,
        dictionary: ConfounderDictionary | None = None,
    ) -> nn.Module:
        base = self.base(load_weights)
        if not hasattr(base, "forward_map"):
            raise ConfigError(
                f"model.intervention={self.name} needs a base model with a feature map "
                f"(single_stream), not '{self.cfg.name}'"
            )
        args = dict(self.cfg.intervention_args)
        every = args.pop("diagnose_every", DIAGNOSE_EVERY)
        if not isinstance(every, int) or isinstance(every, bool) or every < 0:
            raise ConfigError(
                f"model.intervention_args.diagnose_every of method '{self.name}' must be a "
                f"whole number of batches (0: never), got {every!r}"
            )
        self.diagnose_every, self._batches = every, 0
        if args.pop("step3", "release") not in STEP3:
            raise ConfigError(
                f"model.intervention_args.step3 of method '{self.name}' must be one of "
                f"{', '.join(STEP3)}, got {self.cfg.intervention_args['step3']!r}"
            )
        if not self.adjust:
            if args.get("adjust", False):
                raise ConfigError("method 'confusion' is IERN without adjustment; drop 'adjust'")
            args["adjust"] = False
        what = f"model.intervention_args of method '{self.name}'"
        iern = construct(partial(IERN, base.num_features, num_classes), args, what)
        return IERNClassifier(base, iern)

    def training_step(self, module: Trainee, batch: Batch) -> torch.Tensor:
        views, y, z = batch
        net: IERNClassifier = module.model  # type: ignore[assignment]
        iern = net.iern
        check_strata(z, iern.strata, self.name)
        opt_dis, opt_feat, opt_cls = module.optimizers()  # type: ignore[misc]
        step3 = self.cfg.intervention_args.get("step3", "release")
        generator, groups = iern.emotion_generator, iern.parameter_groups()
        self._batches += 1
        every = self.diagnose_every
        diagnosed = every > 0 and (self._batches - 1) % every == 0
        if diagnosed:  # before this batch's updates, the model left as it is
            numbers = diagnose(net, [(views, y, z)], module.loss)
            start = [p.detach().clone() for p in generator.parameters()]
        f = net.features(views)  # (B, C, s, s), with the backbone's graph for step 3
        fd = f.detach()
        weights: dict[str, torch.Tensor] = {}
        if step3 == "recomputed":
            e = generator(fd)
        else:  # the map step 3 reads, taken now, through copies of the generator's weights
            weights = {k: p.clone() for k, p in generator.named_parameters()}
            e = torch.func.functional_call(generator, weights, (f,))
        c = iern.confounder_generator(fd)

        dis = iern.discriminator_loss(e.detach(), c.detach(), y, z)
        opt_dis.zero_grad()
        module.manual_backward(dis)
        opt_dis.step()

        discriminators = groups["discriminators"]
        for p in discriminators:
            p.requires_grad_(False)
        feat = iern.feature_losses(fd, e, c, z)
        opt_feat.zero_grad()
        # only step 2's parameters (the backbone's gradient would be cleared before step 3),
        # keeping the emotion map's graph for step 3
        module.manual_backward(feat.total, inputs=groups["features"], retain_graph=bool(weights))
        if iern.center_weight > 0:  # the centres follow the unweighted center loss
            iern.centres.grad.div_(iern.center_weight)  # type: ignore[union-attr]
        opt_feat.step()
        if diagnosed:
            middle = [p.detach().clone() for p in generator.parameters()]
        for p in discriminators:
            p.requires_grad_(True)
        if step3 == "release":  # step 3's backward sees the update, as the release's torch did
            for k, p in generator.named_parameters():
                weights[k].data.copy_(p.detach())

        logits = iern.classify(e if weights else generator(f))
        loss = module.loss(logits, y)
        if not torch.isfinite(loss) or not torch.isfinite(feat.total):
            raise FloatingPointError(
                f"IERN's losses became non-finite at step {module.global_step}; "
                "lower optim.lr or check the input data"
            )
        opt_cls.zero_grad()
        module.manual_backward(loss)
        opt_cls.step()
        n = len(y)
        if diagnosed:  # how far each optimiser moved the emotion generator this batch
            end = list(generator.parameters())
            numbers["generator_step2"] = _distance(start, middle)
            numbers["generator_step3"] = _distance(middle, end)
            module.log_dict(
                {f"iern/{k}": v for k, v in numbers.items()},
                on_step=False,
                on_epoch=True,
                batch_size=n,
            )
        module.log("train/loss", loss, prog_bar=True, batch_size=n)
        module.log_dict(
            {
                "train/discriminators": dis,
                "train/confusion": feat.confusion,
                "train/center": feat.center,
                "train/reconstruction": feat.reconstruction,
            },
            batch_size=n,
        )
        return loss

    def on_train_epoch_end(self, module: Trainee) -> None:
        schedulers = module.lr_schedulers()
        for sched in schedulers if isinstance(schedulers, list) else [schedulers]:
            if sched is not None:
                sched.step()

    def configure_optimizers(self, module: Trainee) -> Any:

        net: IERNClassifier = module.model  # type: ignore[assignment]
        groups = net.iern.parameter_groups()
        backbone = list(net.base.parameters()) + groups["reduce"]
        optim = module.cfg.optim
        optimizers = [
            make_optimizer(optim, [], groups["discriminators"]),
            make_optimizer(optim, [], groups["features"]),
            make_optimizer(optim, backbone, groups["classifier"]),
        ]
        schedulers = [make_scheduler(module.cfg, opt) for opt in optimizers]
        if schedulers[0] is None:
            return optimizers
        return optimizers, schedulers


def _distance(a: list[torch.Tensor], b: list[torch.Tensor]) -> float:
    """‖a − b‖ over a list of tensors (flattened together)."""
    return float(
        sum((x.detach() - y.detach()).double().pow(2).sum() for x, y in zip(a, b, strict=True))
        ** 0.5
    )


class Confusion(IERNMethod):
    """IERN's adversarial data-set confusion without the backdoor adjustment (the ablation):
    the classifier reads the emotion map alone."""

    name: ClassVar[str] = "confusion"
    adjust: ClassVar[bool] = False

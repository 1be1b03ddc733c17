"""How an IERN model is doing, from its parts: what training logs and ``bias-report`` shows.

Over batches of (views, emotion, stratum), with the model left exactly as it was (gradients,
batch-norm statistics and mode restored):

- ``train_mode_accuracy`` and ``eval_mode_accuracy``: the stratum-averaged prediction on the
  same pictures with batch statistics (as step 3 trains it) and with the running statistics
  (as evaluation scores it); a gap means the batch-norm layers, whose running statistics mix
  one pass of true confounder maps with a pass per prototype, are not what training saw.
- ``own_map_accuracy``: the classifier on R([E, C]) with each sample's *own* confounder map
  (train mode) instead of the average over prototypes: what the prediction would be without
  the adjustment's substitution (for ``confusion``, the classifier on E, as it predicts).
- ``prototype_distance`` (and per stratum): ‖prototype − mean C of the stratum‖ / ‖mean C‖, the
  prototype the backdoor adjustment uses against the confounder maps it stands for (1 or more:
  the adjustment averages over maps unlike any real one).
- the discriminators' accuracies: on their own maps (``emotion_discriminator`` on E,
  ``confounder_discriminator`` on C: high when the maps carry their factor) and on the other
  map (``emotion_from_c``, ``stratum_from_e``: near chance when the split is clean).
- ``share_confusion``, ``share_reconstruction``, ``share_classification``: each loss's share
  of the gradient norm on the emotion generator's weights (the center loss does not reach it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch

from deconfound.models.classifier import IERNClassifier

LOSSES = ("confusion", "reconstruction", "classification")

ACCURACIES = (
    "train_mode_accuracy",
    "eval_mode_accuracy",
    "own_map_accuracy",
    "emotion_discriminator",
    "confounder_discriminator",
    "emotion_from_c",
    "stratum_from_e",
)
"""The accuracies :class:`IERNDiagnosis` counts (module docstring), in the order it reports."""


class IERNDiagnosis:
    """Accumulates :mod:`deconfound.diagnostics.iern`'s numbers over batches; :meth:`result`
    gives them. ``loss`` is the classification loss (logits, targets) → scalar."""

    def __init__(
        self, net: IERNClassifier, loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
    ) -> None:
        self.net, self.loss = net, loss
        strata = net.iern.strata
        self.n = 0
        self.correct = dict.fromkeys(ACCURACIES, 0.0)
        self.c_sum = torch.zeros(strata, net.iern.centres.shape[1], dtype=torch.float64)
        self.c_count = torch.zeros(strata, dtype=torch.float64)
        self.norms = dict.fromkeys(LOSSES, 0.0)

    def add(self, views: dict[str, torch.Tensor], y: torch.Tensor, z: torch.Tensor) -> None:
        """One batch (a stratum per sample in ``z``)."""
        net, iern = self.net, self.net.iern
        training = net.training
        buffers = {k: b.detach().clone() for k, b in net.named_buffers()}
        devices = [y.device] if y.device.type == "cuda" else []
        try:
            with torch.random.fork_rng(devices=devices):  # dropout leaves training's stream be
                e, c, logits, scored, own = self._passes(views, y, z)
        finally:
            net.train(training)
            with torch.no_grad():
                for k, b in net.named_buffers():
                    b.copy_(buffers[k])
        with torch.no_grad():
            hits = {
                "train_mode_accuracy": logits.argmax(-1) == y,
                "eval_mode_accuracy": scored.argmax(-1) == y,
                "own_map_accuracy": own.argmax(-1) == y,
                "emotion_discriminator": iern.emotion_discriminator(e).argmax(-1) == y,
                "confounder_discriminator": iern.confounder_discriminator(c).argmax(-1) == z,
                "emotion_from_c": iern.emotion_discriminator(c).argmax(-1) == y,
                "stratum_from_e": iern.confounder_discriminator(e).argmax(-1) == z,
            }
            for name, hit in hits.items():
                self.correct[name] += float(hit.sum())
            self.c_sum.index_add_(0, z.cpu(), c.flatten(1).double().cpu())
            self.c_count.index_add_(0, z.cpu(), torch.ones(len(z), dtype=torch.float64))
        self.n += len(y)

    def _passes(
        self, views: dict[str, torch.Tensor], y: torch.Tensor, z: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """E, C, the train-mode logits (each loss's gradient norm on the emotion generator added
        up on the way), the eval-mode logits (first: before the train-mode pass moves the
        running statistics) and the train-mode logits of R([E, C]) with each sample's own C;
        all detached."""
        net, iern = self.net, self.net.iern
        with torch.no_grad():
            net.eval()
            scored = net(views)
        net.train()
        f = net.features(views).detach()
        e, c = iern.emotion_generator(f), iern.confounder_generator(f)
        feat = iern.feature_losses(f, e, c, z)
        logits = iern.classify(e)
        terms = {
            "confusion": feat.confusion,
            "reconstruction": feat.reconstruction,
            "classification": self.loss(logits, y),
        }
        weights = list(iern.emotion_generator.parameters())
        for name in LOSSES:
            grads = torch.autograd.grad(terms[name], weights, retain_graph=True, allow_unused=True)
            self.norms[name] += float(
                sum(g.double().pow(2).sum() for g in grads if g is not None) ** 0.5
            )
        with torch.no_grad():
            own = iern.classifier(iern.recombine(e, c) if iern.adjust else e)
        return e.detach(), c.detach(), logits.detach(), scored, own

    def result(self) -> dict[str, float]:
        """The numbers so far (module docstring); a stratum without samples has no distance."""
        n = max(self.n, 1)
        out = {name: hits / n for name, hits in self.correct.items()}
        centres = self.net.iern.centres.detach().double().cpu()
        distances = []
        for s in range(len(self.c_count)):
            if self.c_count[s] == 0:
                continue
            mean = self.c_sum[s] / self.c_count[s]
            d = float((centres[s] - mean).norm() / mean.norm().clamp_min(1e-12))
            out[f"prototype_distance_{s}"] = d
            distances.append(d)
        if distances:
            out["prototype_distance"] = sum(distances) / len(distances)
        total = sum(self.norms.values()) or 1.0
        for name in LOSSES:
            out[f"share_{name}"] = self.norms[name] / total
        return out


def diagnose(
    net: IERNClassifier,
    batches: Iterable[tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]],
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
) -> dict[str, float]:
    """:class:`IERNDiagnosis` over ``batches``. Mix them as training does (shuffled): the
    train-mode numbers normalise by the batch, so batches of one source or one person show
    another model."""
    diagnosis = IERNDiagnosis(net, loss)
    for views, y, z in batches:
        diagnosis.add(views, y, z)
    return diagnosis.result()

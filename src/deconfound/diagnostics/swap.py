"""The context-swap gap: how much a model's score rests on the scene behind the person, on
any data set with person masks (no ``test_anti`` split needed).

After the Backgrounds Challenge's BG-Gap (Xiao et al., ICLR 2021, "Noise or Signal: The Role
of Image Backgrounds in Object Recognition", Mixed-Same minus Mixed-Rand): every person of a
split is cut out with its mask (as person pasting cuts it,
:class:`~deconfound.data.paste.PersonPaste`) and pasted, where it stands, once onto another
picture of its own context cluster (*own*) and once onto a picture of another cluster
(*swapped*), each background with its people hidden. Both composites are made alike, holes of
the hidden people included, so they differ only in the scene's cluster. (A person back on its
own picture would not do: there the hidden person lies under the pasted one, while any other
background shows a hole elsewhere, which costs even a model that never reads the scene.) A
person whose cluster has no other picture goes back onto its own. The gap is the data set's
metric on *own* minus on *swapped*, with a 95 % paired bootstrap interval over the samples. A
model that reads only the person has a gap near 0; one that learnt the scene's shortcut
scores lower when the scene points elsewhere.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from sklearn.metrics import average_precision_score

from deconfound.data.augment import Augment
from deconfound.data.datamodule import target
from deconfound.data.paste import PersonPaste
from deconfound.data.views import make_views
from deconfound.errors import DeconfoundError

RESAMPLES = 1000


@dataclass(frozen=True)
class SwapGap:
    """The context-swap gap of one split: ``metric`` on the own and the swapped pictures,
    their difference and its 95 % bootstrap interval, over ``samples`` people."""

    split: str
    metric: str
    own: float
    swapped: float
    gap: float
    ci95: tuple[float, float]
    samples: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "split": self.split,
            "metric": self.metric,
            "own": self.own,
            "swapped": self.swapped,
            "gap": self.gap,
            "ci95": list(self.ci95),
            "samples": self.samples,
        }


def swap_backgrounds(
    strata: np.ndarray, pictures: np.ndarray, rng: np.random.Generator, *, same: bool
) -> np.ndarray:
    """For each sample, the index of a background sample drawn uniformly with ``rng``: of
    another picture in the same stratum (``same``), or of another picture in another stratum
    (people of one picture may fall into different strata: each is the picture with its own
    person masked); the sample itself where there is none."""
    strata, pictures = np.asarray(strata), np.asarray(pictures)
    if len(np.unique(strata)) < 2:
        raise DeconfoundError(
            "the context-swap gap needs samples of at least two context clusters; this split's "
            "people all fall into one"
        )
    out = np.arange(len(strata))
    for i in range(len(strata)):
        other = pictures != pictures[i]
        pool = np.flatnonzero(other & ((strata == strata[i]) if same else (strata != strata[i])))
        if len(pool):
            out[i] = pool[rng.integers(len(pool))]
    return out


def context_swap_gap(
    module: Any,
    split: str,
    strata: np.ndarray,
    *,
    paste: PersonPaste | None = None,
    data: Any = None,
    seed: int = 0,
    batch_size: int = 64,
    resamples: int = RESAMPLES,
) -> SwapGap:
    """The context-swap gap of ``module`` (an :class:`~deconfound.engine.EmotionModule`) on
    ``split`` of its configured data set, given each sample's context cluster (``strata``, as
    :func:`~deconfound.pipelines.strata.dictionary_strata` gives them). ``paste`` cuts the
    people (default: from the split's masks, its people hidden with ``data.mask_fill``);
    ``data`` is the module's data module where the caller has one (default: a new one); the
    swapped backgrounds and the bootstrap draw from ``seed``."""
    from deconfound.data import EmotionDataModule

    cfg = module.cfg
    data = data if data is not None else EmotionDataModule(cfg.data, module.model.views)
    reader, info = data.reader, data.info
    samples = reader.samples(split)
    if len(strata) != len(samples):
        raise DeconfoundError(f"{len(strata)} strata for the {len(samples)} samples of {split}")
    paste = paste or PersonPaste(samples, reader.root, fill=cfg.data.mask_fill)
    rng = np.random.default_rng(seed)
    own_backgrounds = swap_backgrounds(strata, paste.pictures, rng, same=True)
    swapped = swap_backgrounds(strata, paste.pictures, rng, same=False)
    frame = Augment(cfg.data.augment).frame
    fill = cfg.data.mask_fill

    def scores(background: Callable[[int], int]) -> np.ndarray:
        out = []
        for start in range(0, len(samples), batch_size):
            batch = range(start, min(start + batch_size, len(samples)))
            views = [
                frame(
                    make_views(
                        samples[i], data.sizes, fill, reader.root, paste.onto(i, background(i))
                    )
                )
                for i in batch
            ]
            stacked = {k: torch.stack([v[k] for v in views]) for k in views[0]}
            with torch.no_grad():
                logits = module(stacked)
            p = logits.softmax(-1) if info.task == "multiclass" else logits.sigmoid()
            out.append(p.float().cpu().numpy())
        return np.concatenate(out)

    was_training = module.training
    module.eval()
    try:
        own_scores = scores(lambda i: int(own_backgrounds[i]))
        swap_scores = scores(lambda i: int(swapped[i]))
    finally:
        module.train(was_training)
    y = np.stack([target(s, info).numpy() for s in samples])
    score = _score_function(info.task)
    own, swap = score(y, own_scores), score(y, swap_scores)
    draws = rng.integers(len(samples), size=(resamples, len(samples)))
    gaps = np.array([score(y[d], own_scores[d]) - score(y[d], swap_scores[d]) for d in draws])
    low, high = np.nanpercentile(gaps, [2.5, 97.5])
    return SwapGap(
        split, info.metric, own, swap, own - swap, (float(low), float(high)), len(samples)
    )


def _score_function(task: str) -> Callable[[np.ndarray, np.ndarray], float]:
    """Accuracy (multi-class) or the mean over classes of the average precision (multi-label,
    classes without a positive left out) of (targets, probabilities)."""
    if task == "multiclass":
        return lambda y, p: float(np.mean(p.argmax(1) == y))

    def mean_ap(y: np.ndarray, p: np.ndarray) -> float:
        present = y.sum(0) > 0
        if not present.any():
            return float("nan")
        return float(average_precision_score(y[:, present], p[:, present], average="macro"))

    return mean_ap

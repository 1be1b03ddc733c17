"""CCIM (Yang et al., CVPR 2023) as a method: the base model's joint feature h goes through the
Contextual Causal Intervention Module (:class:`deconfound.causal.CCIM`) before the head; it is
trained as the plain method is. ``ccim_dot`` and ``ccim_add`` differ in CCIM's attention."""

from __future__ import annotations

from functools import partial
from typing import ClassVar

from torch import nn

from deconfound.causal import CCIM, ConfounderDictionary
from deconfound.config import construct
from deconfound.methods.base import Method
from deconfound.models.classifier import EmotionClassifier


class CCIMDot(Method):
    """CCIM with dot-product attention over the dictionary (the paper's main variant).

    ``model.intervention_args`` are CCIM's own (``proj_dim``, ``out_features``, ``hidden``,
    ``dropout``, ``residual_scale``)."""

    name: ClassVar[str] = "ccim_dot"
    attention: ClassVar[str] = "dot"
    needs_dictionary: ClassVar[bool] = True
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
        factory = partial(CCIM, base.num_features, self.dictionary(dictionary))
        factory = partial(factory, attention=self.attention)
        what = f"model.intervention_args of method '{self.name}'"
        intervention = construct(factory, self.cfg.intervention_args, what)
        return EmotionClassifier(base, num_classes, intervention)


class CCIMAdditive(CCIMDot):
    """CCIM with additive attention, λ = softmax(w_tᵀ tanh(W_q h + W_k z_i))."""

    name: ClassVar[str] = "ccim_add"
    attention: ClassVar[str] = "additive"

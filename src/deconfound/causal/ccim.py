"""CCIM, the Contextual Causal Intervention Module (Yang et al., CVPR 2023).

Backdoor adjustment P(Y|do(X)) = Σ_i P(Y|X, z_i) P(z_i) over a dictionary of context prototypes,
approximated (normalised weighted geometric mean) by one pass on the expected confounder
g = Σ_i λ_i z_i P(z_i), where λ attends from the joint feature h to each prototype.

Where the paper leaves choices open we follow the authors' released module: 256-d query/key
projections without bias; dot-product scores scaled by √D of the *dictionary* width (not of the
256-d projection); fusion do_x = h W_h + g W_g with plain Xavier-normal matrices into 128-d; and the
release's residual classifier body (BatchNorm → Linear 128→512 → GELU → Dropout → Linear 512→128
→ Dropout, added back with weight 0.3), its GELU the tanh approximation the release writes
(``nn.GELU(approximate="tanh")``), so that ours is the same function. The final linear layer to
the classes is the :class:`~deconfound.models.EmotionClassifier` head, sized from the data set,
not hard-coded.
"""

from __future__ import annotations

import math
from typing import Literal

import torch
from torch import nn

from deconfound.causal.dictionary import ConfounderDictionary
from deconfound.errors import DeconfoundError
from deconfound.layers import FeatureNorm

Attention = Literal["dot", "additive"]


class CCIM(nn.Module):
    """Maps the joint feature h (B, in_features) to the de-confounded feature (B, out_features).

    Args:
        in_features: width of h, the base model's joint feature.
        dictionary: the confounder dictionary (kept as fixed buffers, not parameters).
        attention: ``dot`` (λ = softmax((W_q h)·(W_k z_i)/√D)) or ``additive``
            (λ = softmax(w_tᵀ tanh(W_q h + W_k z_i))).
        proj_dim: width of the query/key projections (256 in the release).
        out_features: width of do_x (128 in the release).
        hidden: hidden width of the residual classifier body (512 in the release).
        dropout: dropout of the residual body (0.5 in the release).
        residual_scale: weight of the residual body's output (0.3 in the release).
    """

    def __init__(
        self,
        in_features: int,
        dictionary: ConfounderDictionary,
        *,
        attention: Attention = "dot",
        proj_dim: int = 256,
        out_features: int = 128,
        hidden: int = 512,
        dropout: float = 0.5,
        residual_scale: float = 0.3,
    ) -> None:
        super().__init__()
        if attention not in ("dot", "additive"):
            raise DeconfoundError(f"unknown CCIM attention '{attention}'; choose dot or additive")
        n, d = dictionary.size, dictionary.dim
        self.attention = attention
        self.register_buffer("confounders", dictionary.centres.float().clone())  # (N, D)
        self.register_buffer("prior", dictionary.prior.float().clone().view(n, 1))  # (N, 1)
        self.query = nn.Linear(in_features, proj_dim, bias=False)
        self.key = nn.Linear(d, proj_dim, bias=False)
        self.score = nn.Linear(proj_dim, 1, bias=False) if attention == "additive" else None
        self.w_h = nn.Parameter(nn.init.xavier_normal_(torch.empty(in_features, out_features)))
        self.w_g = nn.Parameter(nn.init.xavier_normal_(torch.empty(d, out_features)))
        self.body = nn.Sequential(
            FeatureNorm(out_features),
            nn.Linear(out_features, hidden),
            nn.GELU(approximate="tanh"),  # the release's GELU: the tanh approximation
            nn.Dropout(dropout),
            nn.Linear(hidden, out_features),
            nn.Dropout(dropout),
        )
        self.residual_scale = residual_scale
        self.out_features = out_features

    def weights(self, h: torch.Tensor) -> torch.Tensor:
        """Attention λ (B, N) of each sample over the prototypes."""
        q = self.query(h)  # (B, P)
        k = self.key(self.confounders)  # (N, P)
        if self.score is None:
            scores = q @ k.T / math.sqrt(self.confounders.shape[1])  # (B, N)
        else:
            scores = self.score(torch.tanh(q[:, None, :] + k[None, :, :])).squeeze(-1)  # (B, N)
        return scores.softmax(dim=-1)

    def expected_confounder(self, h: torch.Tensor) -> torch.Tensor:
        """g = Σ_i λ_i z_i P(z_i), shape (B, D)."""
        return self.weights(h) @ (self.confounders * self.prior)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.fuse(h, self.expected_confounder(h))

    def fuse(self, h: torch.Tensor, g: torch.Tensor) -> torch.Tensor:
        """The output for h and a given confounder g (B, D): do_x = h W_h + g W_g, then the
        residual body (``forward`` with g = :meth:`expected_confounder`)."""
        x = h @ self.w_h + g @ self.w_g  # (B, out_features)
        return x + self.residual_scale * self.body(x)

    def set_dictionary(self, dictionary: ConfounderDictionary) -> None:
        """Swap in another dictionary of the same shape (e.g. rebuilt on a new data copy)."""
        if tuple(dictionary.centres.shape) != tuple(self.confounders.shape):
            raise DeconfoundError(
                f"dictionary of shape {tuple(dictionary.centres.shape)} does not fit this CCIM, "
                f"built for {tuple(self.confounders.shape)} (N prototypes × width); rebuild the "
                "dictionary with the same scene backbone and number of clusters"
            )
        self.confounders.copy_(dictionary.centres)
        self.prior.copy_(dictionary.prior.view(-1, 1))

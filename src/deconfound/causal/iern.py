"""IERN, the Interventional Emotion Recognition Network (Chen et al., ACM MM 2022).

The confounder is the data set an image comes from. IERN splits a backbone feature map ``F``
into an emotion map ``E`` and a confounder map ``C`` (two generators), checks the split with a
reconstruction network ``R([E, C]) ≈ F``, and makes each map useless for the other's task with
two discriminators that the generators learn to confuse. A center loss gathers the confounder
maps of each stratum (source data set) around one learned centre; the centres, reshaped to maps,
are the strata's prototypes. The backdoor adjustment P(Y | do(X)) = Σ_c P(Y | X, c) P(c), with a
uniform prior, is the classifier applied to ``R([E, prototype_c])`` for every stratum ``c``, its
logits averaged: the emotion feature sees every stratum equally, in training and at test time.

Shapes: ``F``, ``E``, ``C`` and the prototypes are (B, channels, map_size, map_size).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn


class ResidualBlock(nn.Module):
    """``x + (conv 3×3, BN, ReLU, conv 3×3, BN)(x)`` at constant width."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
            nn.ReLU(inplace=True),
            nn.Conv2d(channels, channels, 3, padding=1, bias=False),
            nn.BatchNorm2d(channels),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.body(x)


def encoder(in_channels: int, channels: int, blocks: int) -> nn.Sequential:
    """A conv 3×3 to ``channels`` followed by ``blocks`` residual blocks (the generators and,
    from the 2·channels concatenation, the reconstruction network)."""
    layers = [nn.Conv2d(in_channels, channels, 3, padding=1)]
    return nn.Sequential(*layers, *(ResidualBlock(channels) for _ in range(blocks)))


def discriminator(channels: int, map_size: int, classes: int, blocks: int) -> nn.Sequential:
    """A conv 4×4 stride 2 and ``blocks`` channel-halving 1×1 convs (LeakyReLU 0.01), then a
    conv covering the remaining ``map_size // 2`` square: (B, channels, s, s) → (B, classes)."""
    layers: list[nn.Module] = [
        nn.Conv2d(channels, channels, 4, stride=2, padding=1),
        nn.LeakyReLU(0.01),
    ]
    width = channels
    for _ in range(blocks):
        layers += [nn.Conv2d(width, width // 2, 1), nn.LeakyReLU(0.01)]
        width //= 2
    layers += [nn.Conv2d(width, classes, map_size // 2, bias=False), nn.Flatten()]
    return nn.Sequential(*layers)


@dataclass
class FeatureLosses:
    """The feature step's terms: generators' confusion of the discriminators, the (weighted)
    center loss of the confounder maps, and the reconstruction error."""

    confusion: torch.Tensor
    center: torch.Tensor
    reconstruction: torch.Tensor

    @property
    def total(self) -> torch.Tensor:
        return self.confusion + self.center + self.reconstruction


class IERN(nn.Module):
    """IERN's parts on top of a backbone feature map with ``in_channels`` channels.

    Args:
        in_channels: channels of the backbone's feature map.
        num_classes: emotions.
        strata: confounder strata (source data sets).
        channels: width of F, E, C (512 as published).
        map_size: side of F (7 as published: a ResNet at 224 px); other maps are pooled to it.
        generator_blocks, reconstruction_blocks, discriminator_blocks: depths (2, 3, 3).
        center_weight: λ of the center loss (5e-4); the centres' own gradient is rescaled by
            1/λ so that λ only weighs the loss for the generator.
        adjust: classify with the backdoor adjustment (the method); False classifies ``E``
            alone, i.e. adversarial data-set confusion without the intervention (ablation).
    """

    def __init__(
        self,
        in_channels: int,
        num_classes: int,
        strata: int = 3,
        *,
        channels: int = 512,
        map_size: int = 7,
        generator_blocks: int = 2,
        reconstruction_blocks: int = 3,
        discriminator_blocks: int = 3,
        center_weight: float = 5e-4,
        adjust: bool = True,
    ) -> None:
        super().__init__()
        if strata < 1 or map_size < 2 or channels >> discriminator_blocks < 1:
            raise ValueError(
                "IERN needs strata ≥ 1, map_size ≥ 2 and channels ≥ 2^discriminator_blocks"
            )
        self.num_classes, self.strata, self.map_size = num_classes, strata, map_size
        self.center_weight, self.adjust = center_weight, adjust
        self.reduce = nn.Sequential(
            nn.Conv2d(in_channels, channels, 1), nn.AdaptiveAvgPool2d(map_size)
        )
        self.emotion_generator = encoder(channels, channels, generator_blocks)
        self.confounder_generator = encoder(channels, channels, generator_blocks)
        self.reconstruction = encoder(2 * channels, channels, reconstruction_blocks)
        self.emotion_discriminator = discriminator(
            channels, map_size, num_classes, discriminator_blocks
        )
        self.confounder_discriminator = discriminator(
            channels, map_size, strata, discriminator_blocks
        )
        self.centres = nn.Parameter(torch.randn(strata, channels * map_size**2))
        self.classifier = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(channels, num_classes)
        )
        for module in self.modules():  # the published initialisation (N(0, 0.02))
            if isinstance(module, nn.Conv2d | nn.Linear):
                nn.init.normal_(module.weight, 0.0, 0.02)
                if module.bias is not None:
                    nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.normal_(module.weight, 1.0, 0.02)
                nn.init.zeros_(module.bias)

    def prototypes(self) -> torch.Tensor:
        """The strata's confounder maps (strata, channels, s, s): the centres, not trained by
        the classification loss."""
        return self.centres.detach().view(self.strata, -1, self.map_size, self.map_size)

    def recombine(self, e: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
        """``R([E, C])``: an emotion map recombined with a confounder map, back to F's space."""
        return self.reconstruction(torch.cat([e, c], dim=1))

    def stratum_logits(self, e: torch.Tensor) -> torch.Tensor:
        """The classifier's logits on ``E`` recombined with each prototype: (strata, B, classes).
        One pass per stratum, so the reconstruction's batch statistics are per stratum."""
        return torch.stack(
            [self.classifier(self.recombine(e, proto.expand_as(e))) for proto in self.prototypes()]
        )

    def classify(self, e: torch.Tensor) -> torch.Tensor:
        """The emotion logits of ``E``: the mean over strata of :meth:`stratum_logits` (the
        backdoor adjustment with a uniform prior), or the classifier on ``E`` itself when
        ``adjust`` is False."""
        if not self.adjust:
            return self.classifier(e)
        return self.stratum_logits(e).mean(0)

    def forward(self, fmap: torch.Tensor) -> torch.Tensor:
        """Test time: backbone map → F → E → adjusted logits (B, classes)."""
        return self.classify(self.emotion_generator(self.reduce(fmap)))

    def discriminator_loss(
        self, e: torch.Tensor, c: torch.Tensor, y: torch.Tensor, z: torch.Tensor
    ) -> torch.Tensor:
        """Mean cross-entropy of the emotion discriminator on E and the confounder
        discriminator on C (pass detached maps: this step trains the discriminators only)."""
        emotion = F.cross_entropy(self.emotion_discriminator(e), y)
        stratum = F.cross_entropy(self.confounder_discriminator(c), z)
        return (emotion + stratum) / 2

    def feature_losses(
        self, f: torch.Tensor, e: torch.Tensor, c: torch.Tensor, z: torch.Tensor
    ) -> FeatureLosses:
        """The generators' terms: each discriminator applied to the *other* map should output
        the uniform distribution (mean squared error of its softmax), the weighted center loss
        of C around its stratum's centre, and ‖R([E, C]) − F‖²."""

        def confusion(logits: torch.Tensor) -> torch.Tensor:
            probs = logits.softmax(-1)
            return F.mse_loss(probs, torch.full_like(probs, 1 / probs.shape[-1]))

        confused = (
            confusion(self.emotion_discriminator(c)) + confusion(self.confounder_discriminator(e))
        ) / 2
        centre = self.centres[z]  # (B, channels·s·s)
        center = (c.flatten(1) - centre).pow(2).sum(1).mean() * self.center_weight
        return FeatureLosses(confused, center, F.mse_loss(self.recombine(e, c), f))

    def parameter_groups(self) -> dict[str, list[nn.Parameter]]:
        """IERN's parameters by the optimiser that updates them: ``discriminators``,
        ``features`` (generators, centres, reconstruction), ``classifier`` (emotion generator
        and classifier) and ``reduce`` (the 1×1 conv that belongs to the backbone)."""

        def params(*modules: nn.Module) -> list[nn.Parameter]:
            return [p for m in modules for p in m.parameters()]

        generators = (self.emotion_generator, self.confounder_generator)
        return {
            "discriminators": params(self.emotion_discriminator, self.confounder_discriminator),
            "features": [*params(*generators, self.reconstruction), self.centres],
            "classifier": params(self.emotion_generator, self.classifier),
            "reduce": params(self.reduce),
        }

"""do(context) as data: in training, each person is pasted onto another picture's background.

The backdoor adjustment asks for P(Y | do(context)): the emotion when the scene is set from
outside rather than chosen by the person's situation. Here the intervention is made on the
data itself: every training picture is redrawn with the person, cut out by its person mask
(``masks/<stem>.png``, see :mod:`deconfound.data.sidecars`), composited at its place onto the
background of another training picture (whose own person is hidden), or of a person-free
picture, drawn at random for each epoch. In the redrawn training set the scene is independent
of the label, so no stream can learn it as a shortcut; the model itself is the plain one.
Cutting by the person's box instead of its silhouette keeps the background inside the box,
and with it the shortcut (about half of a person box is background).

Only the pixels are redrawn: a model that also reads the picture's depth map or object
proposals (EmotiCon, GNN-CNN) would still see the original scene through them, so ``paste``
refuses those views (:data:`SCENE_FILES`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, ClassVar, Literal

from deconfound.config import number
from deconfound.data.cut_quality import CUT_QUALITIES, CutQuality
from deconfound.errors import ConfigError
from deconfound.methods.base import Composer, Method

if TYPE_CHECKING:
    from deconfound.data.datamodule import Reader


SCENE_FILES = ("depth", "objects")
"""Views read from files made of the whole original picture: they would carry its scene past
the paste."""


@dataclass(frozen=True)
class PasteOptions:
    """Args:
    backgrounds: where backgrounds come from: ``train`` (other training pictures, their
        person hidden), the name of a person-free split of the same data set (the synthetic
        set's ``scenes``), or a folder of person-free pictures.
    missing_mask: a training sample without a mask file is an error (``error``), or is cut by
        its box (``box``, with one warning that the box keeps its background).
    cut: ``exact`` (the mask's person), or the cut as a worse segmenter gives it, to measure
        what paste owes to exact masks (:mod:`deconfound.data.cut_quality`): ``eroded``,
        ``dilated``, ``ellipse`` (inscribed in the box), ``keypoints`` (their hull), ``box``.
    cut_share: the share of the person's height by which the cut is shrunk or grown (or the
        keypoints' hull widened).
    """

    backgrounds: str = "train"
    missing_mask: Literal["error", "box"] = "error"
    cut: CutQuality = "exact"
    cut_share: float = 0.05

    def __post_init__(self) -> None:
        if self.cut not in CUT_QUALITIES:
            raise ConfigError(
                f"model.intervention_args.cut must be one of {', '.join(CUT_QUALITIES)}, got "
                f"{self.cut!r}"
            )
        number(self.cut_share, "model.intervention_args.cut_share")
        if not 0 <= self.cut_share < 1:
            raise ConfigError(
                f"model.intervention_args.cut_share must lie in [0, 1), got {self.cut_share}"
            )
        if self.missing_mask not in ("error", "box"):
            raise ConfigError(
                f"model.intervention_args.missing_mask must be error or box, got "
                f"{self.missing_mask!r}"
            )


class Paste(Method):
    """Person pasting (module docstring) with the plain base model and loss."""

    name: ClassVar[str] = "paste"
    Options = PasteOptions

    def compose(
        self, reader: Reader, split: str, fill: str, views: Sequence[str] = ()
    ) -> Composer | None:
        from deconfound.data.paste import PersonPaste

        leaks = [v for v in views if v in SCENE_FILES]
        if leaks:
            raise ConfigError(
                f"model.intervention=paste redraws the pixels only, but the model reads the "
                f"{' and '.join(leaks)} of the original picture, which show its scene; use a "
                "model that reads pictures only (emotnet, caernet, single_stream)"
            )
        o: PasteOptions = self.options
        return PersonPaste.from_reader(
            reader,
            split,
            backgrounds=o.backgrounds,
            fill=fill,
            missing_mask=o.missing_mask,
            cut=o.cut,
            cut_share=o.cut_share,
        )

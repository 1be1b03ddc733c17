"""Reading the synthetic face set: IERN's mixed-set reader with this set's sources."""

from __future__ import annotations

from pathlib import Path

from deconfound.data.face_sets import SPLITS
from deconfound.data.mixbasic import MixBasicReader
from deconfound.data.sample import BASIC_EMOTIONS, DatasetInfo
from deconfound.data.synthetic_faces.generate import LABELS_FILE
from deconfound.data.synthetic_faces.render import STYLES

INFO = DatasetInfo(
    name="synthetic_faces",
    classes=BASIC_EMOTIONS,
    task="multiclass",
    splits=SPLITS,
    boxes=("face",),
    observed_confounder=True,
    drawn=True,
)
SOURCES: tuple[str, ...] = tuple(style.name for style in STYLES)
"""The source folders, in confounder order."""


class SyntheticFacesReader(MixBasicReader):
    """Reads a set written by :func:`~deconfound.data.synthetic_faces.generate` under ``root``:
    the :class:`~deconfound.data.mixbasic.MixBasicReader` of IERN's layout, with the three style
    folders as sources (a sample's confounder is its style's index in :data:`STYLES`).

    Args:
        root: the generated set.
        skip_bad: leave out (and count) bad lines instead of stopping.
        fold: bias100v1-3 or bias90v1-3.
        val_fraction: share of the training sequences held out as ``val``.
        seed: which sequences are held out.
    """

    info = INFO

    def __init__(
        self,
        root: str | Path,
        skip_bad: bool = False,
        fold: str = "bias100v1",
        val_fraction: float = 0.1,
        seed: int = 0,
    ) -> None:
        super().__init__(
            root,
            skip_bad=skip_bad,
            fold=fold,
            sources=SOURCES,
            labels=LABELS_FILE,
            val_fraction=val_fraction,
            seed=seed,
        )

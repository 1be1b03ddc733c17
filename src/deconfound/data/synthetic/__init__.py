"""The synthetic confounded emotion-in-context benchmark: drawing, writing and reading it."""

from deconfound.data.synthetic.generate import (
    CONFOUNDED_SPLITS,
    PERSON_SPLITS,
    SynthConfig,
    generate,
    plan_split,
    preferred_emotion,
)
from deconfound.data.synthetic.reader import (
    INFO,
    SCENES_INFO,
    SyntheticReader,
    SyntheticScenesReader,
)
from deconfound.data.synthetic.render import EMOTIONS, SCENES

__all__ = [
    "CONFOUNDED_SPLITS",
    "EMOTIONS",
    "INFO",
    "PERSON_SPLITS",
    "SCENES",
    "SCENES_INFO",
    "SynthConfig",
    "SyntheticReader",
    "SyntheticScenesReader",
    "generate",
    "plan_split",
    "preferred_emotion",
]

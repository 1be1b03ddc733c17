"""The training engine: one LightningModule, metrics, and the train / evaluate entry points."""

from deconfound.engine.module import EmotionModule
from deconfound.engine.run import TrainResult, evaluate, load_module, train

__all__ = [
    "EmotionModule",
    "TrainResult",
    "evaluate",
    "load_module",
    "train",
]

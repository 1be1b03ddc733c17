"""The training engine: one LightningModule, metrics, and the train / evaluate entry points."""

from deconfound.engine.module import EmotionModule, IERNModule, module_class
from deconfound.engine.run import TrainResult, evaluate, load_module, train

__all__ = [
    "EmotionModule",
    "IERNModule",
    "TrainResult",
    "evaluate",
    "load_module",
    "module_class",
    "train",
]

"""Data: the ``Sample`` record, views, readers of each data set, and the data module."""

from deconfound.data.datamodule import (
    READERS,
    EmotionDataModule,
    ViewDataset,
    dataset_info,
    open_reader,
    synthetic_root,
)
from deconfound.data.sample import Box, DatasetInfo, Sample
from deconfound.data.view_cache import DiskViews, MemoryViews
from deconfound.data.views import VIEWS, make_views, mask_box

__all__ = [
    "READERS",
    "VIEWS",
    "Box",
    "DatasetInfo",
    "DiskViews",
    "EmotionDataModule",
    "MemoryViews",
    "Sample",
    "ViewDataset",
    "dataset_info",
    "make_views",
    "mask_box",
    "open_reader",
    "synthetic_root",
]

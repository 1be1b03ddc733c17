"""The engine's multi-label path (EMOTIC-style): BCE loss, multi-hot targets, macro mAP."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from sklearn.metrics import average_precision_score

from deconfound.config import load_config
from deconfound.data import READERS, DatasetInfo, Sample, ViewDataset
from deconfound.data.synthetic import SyntheticReader
from deconfound.engine import EmotionModule, evaluate

INFO = DatasetInfo("multi", ("a", "b", "c", "d"), task="multilabel", splits=("train", "val"))


class MultiLabelReader(SyntheticReader):
    """The tiny synthetic set relabelled: emotion e gives labels {e mod 4, (e + 1) mod 4}."""

    info = INFO

    def samples(self, split: str) -> list[Sample]:
        return [
            Sample(
                s.image,
                s.person,
                s.face,
                (s.labels[0] % 4, (s.labels[0] + 1) % 4),
                s.confounder,
                s.split,
            )
            for s in super().samples(split)
        ]


@pytest.fixture
def multilabel(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(READERS, "multi", MultiLabelReader)


def test_multi_hot_targets(tiny_root: Path, multilabel: None) -> None:
    sample = MultiLabelReader(tiny_root).samples("val")[0]
    _, y, _ = ViewDataset([sample], INFO, {"body": 8})[0]
    assert y.dtype == torch.float32 and y.sum() == 2 and y[sample.labels[0] % 4] == 1


def test_multilabel_module_trains_and_reports_map_as_scikit_learn(
    tiny_root: Path, tmp_path: Path, multilabel: None
) -> None:
    cfg = load_config(
        "emotnet_synthetic",
        [
            "data.dataset=multi",
            f"data.root={tiny_root}",
            "data.view_sizes={body: 32, whole: 32}",
            "data.test_splits=[val]",
            "trainer.progress_bar=false",
            "trainer.max_epochs=1",
        ],
    )
    module = EmotionModule(cfg.to_dict()).eval()
    views = {v: torch.randint(0, 256, (4, 3, 32, 32), dtype=torch.uint8) for v in ("body", "whole")}
    y = torch.tensor([[1, 1, 0, 0], [0, 1, 1, 0], [0, 0, 1, 1], [1, 0, 0, 1]], dtype=torch.float32)
    loss = module.loss(module(views), y)
    assert torch.allclose(
        loss, torch.nn.functional.binary_cross_entropy_with_logits(module(views), y)
    )
    metrics = evaluate(module, ["val"])["val"]
    assert set(metrics) == {"loss", "mAP"}
    # the same number, computed by scikit-learn on the module's own predictions
    ds = ViewDataset(MultiLabelReader(tiny_root).samples("val"), INFO, {"body": 32, "whole": 32})
    batch = torch.utils.data.default_collate([ds[i] for i in range(len(ds))])
    with torch.no_grad():
        scores = module(batch[0]).sigmoid().numpy()
    expected = np.mean([average_precision_score(batch[1][:, c], scores[:, c]) for c in range(4)])
    assert metrics["mAP"] == pytest.approx(expected, abs=1e-5)

"""The model zoo: every base model ± each CCIM variant trains on the synthetic set, the models'
own mechanisms behave as described, and every bundled paper-row config builds its model."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from conftest import run_overrides

from deconfound.causal import ConfounderDictionary
from deconfound.config import CONFIG_DIR, ModelConfig, load_config
from deconfound.data import EmotionDataModule
from deconfound.engine import EmotionModule, evaluate, load_module, train
from deconfound.errors import ConfigError
from deconfound.layers import FeatureNorm
from deconfound.methods import CCIM_METHODS, create_model
from deconfound.models import (
    BASE_MODELS,
    CONTEXT_MODELS,
    GNNCNN,
    CAERNet,
    EmotiCon,
)

ZOO = CONTEXT_MODELS
SIZES = "{body: 32, whole: 32, face: 24, context: 32, depth: 24, pose: 25, objects: 8}"


@pytest.fixture(scope="module")
def dictionary() -> ConfounderDictionary:
    g = torch.Generator().manual_seed(0)
    return ConfounderDictionary(torch.rand(12, 128, generator=g), torch.full((12,), 1 / 12))


@pytest.fixture(scope="module")
def batches(tiny_root: Path) -> dict[str, list]:
    """Two training batches of 1 and of 8 samples with every view any base model reads."""
    cfg = load_config("emotnet_synthetic", [f"data.root={tiny_root}", f"data.view_sizes={SIZES}"])
    views = ("body", "whole", "face", "context", "depth", "pose", "objects")
    data = EmotionDataModule(cfg.data, views)
    out = {}
    for size in (1, 8):
        data.cfg.batch_size = size
        loader = iter(data.loader("train", shuffle=False))
        out[size] = [next(loader), next(loader)]
    return out


@pytest.mark.filterwarnings("ignore:You are trying to `self.log\\(\\)`")
@pytest.mark.parametrize("intervention", ["none", *CCIM_METHODS])
@pytest.mark.parametrize("name", ZOO)
def test_every_base_model_trains_with_every_intervention(
    name: str, intervention: str, batches: dict, dictionary: ConfounderDictionary
) -> None:
    torch.manual_seed(0)
    cfg = load_config(
        "emotnet_synthetic", [f"model.name={name}", f"model.intervention={intervention}"]
    )
    cfg.model.args = {"backbone": "small_cnn"}
    module = EmotionModule(cfg.to_dict(), dictionary=dictionary if intervention != "none" else None)
    opt = torch.optim.SGD(module.parameters(), lr=0.01)
    before = [p.detach().clone() for p in module.parameters()]
    for size in (1, 8):
        for batch in batches[size]:
            loss = module.training_step(batch, 0)
            assert torch.isfinite(loss)
            opt.zero_grad()
            loss.backward()
            opt.step()
    moved = [not torch.equal(a, b) for a, b in zip(before, module.parameters(), strict=True)]
    assert all(moved), f"{sum(not m for m in moved)} parameter tensors never changed"
    module.eval()
    with torch.no_grad():
        assert module(batches[1][0][0]).shape == (1, 7)


def test_caernet_fuses_with_weights_that_sum_to_one() -> None:
    torch.manual_seed(0)
    net = CAERNet(backbone="small_cnn").eval()
    views = {
        v: torch.randint(0, 256, (3, 3, 32, 32), dtype=torch.uint8) for v in ("face", "context")
    }
    with torch.no_grad():
        face, fmap = net.face(views["face"]), net.context.forward_map(views["context"])
        w = net.stream_weights(face, net.attention(fmap))
        a = net.attention.attention(fmap)
    assert w.shape == (3, 2) and torch.allclose(w.sum(1), torch.ones(3))
    assert a.shape == (3, *fmap.shape[2:]) and torch.allclose(a.sum((1, 2)), torch.ones(3))


def test_gnncnn_ignores_padded_nodes_and_sees_real_ones() -> None:
    torch.manual_seed(0)
    net = GNNCNN(backbone="small_cnn", node_dim=32).eval()
    views = {v: torch.randint(0, 256, (2, 3, 32, 32), dtype=torch.uint8) for v in ("body", "whole")}
    nodes = torch.zeros(2, 5, 5)
    nodes[:, 0] = torch.tensor([0.2, 0.1, 0.6, 0.9, 1.0])  # the person
    nodes[:, 1] = torch.tensor([0.0, 0.0, 0.3, 0.3, 1.0])  # one object
    with torch.no_grad():
        h = net.forward_features({**views, "objects": nodes})
        junk = nodes.clone()
        junk[:, 2:, :4] = torch.rand(2, 3, 4)  # boxes in padding rows (flag 0)
        assert torch.allclose(h, net.forward_features({**views, "objects": junk}), atol=1e-6)
        moved = nodes.clone()
        moved[:, 1, :4] = torch.tensor([0.6, 0.6, 1.0, 1.0])  # the object elsewhere
        assert not torch.allclose(h, net.forward_features({**views, "objects": moved}))


def test_emoticon_has_modality_heads_and_checks_the_keypoint_count() -> None:
    cfg = ModelConfig(name="emoticon", args={"backbone": "small_cnn", "keypoints": 18})
    model = create_model(cfg, 4)
    assert set(model.modality_heads) == {"face", "pose"}
    views = {
        "face": torch.zeros(2, 3, 24, 24, dtype=torch.uint8),
        "context": torch.zeros(2, 3, 32, 32, dtype=torch.uint8),
        "depth": torch.zeros(2, 1, 24, 24, dtype=torch.uint8),
        "pose": torch.zeros(2, 18, 3),
    }
    logits, modality_logits = model.forward_train(views)
    assert logits.shape == (2, 4) and [m.shape for m in modality_logits] == [(2, 4), (2, 4)]
    with pytest.raises(ConfigError, match="pose view has 25 keypoints but model.args.keypoints"):
        model({**views, "pose": torch.zeros(2, 25, 3)})
    assert isinstance(model.base, EmotiCon)


def test_feature_norm_trains_on_one_sample_with_running_statistics() -> None:
    norm = FeatureNorm(4).train()
    norm.running_mean.fill_(1.0)
    norm.running_var.fill_(4.0)
    out = norm(torch.full((1, 4), 3.0))
    assert torch.allclose(out, torch.ones(1, 4), atol=1e-4)  # (3 - 1) / √4
    assert torch.equal(norm.running_mean, torch.ones(4))  # left unchanged
    norm(torch.randn(5, 4))  # two or more: ordinary batch statistics, updated
    assert not torch.equal(norm.running_mean, torch.ones(4))


@pytest.mark.parametrize("name", ZOO)
def test_each_synthetic_config_trains_and_evaluates(
    name: str, tiny_root: Path, tmp_path: Path
) -> None:
    overrides = [o for o in run_overrides(tiny_root, tmp_path, epochs=1) if "view_sizes" not in o]
    cfg = load_config(f"{name}_synthetic", [*overrides, "model.args.backbone=small_cnn"])
    result = train(cfg)
    metrics = evaluate(load_module(result.best_checkpoint), ["test_anti"])
    assert 0.0 <= metrics["test_anti"]["accuracy"] <= 1.0


PAPER_ROWS = sorted(
    f"{dataset}_{model}{suffix}"
    for dataset in ("emotic", "caer_s", "groupwalk")
    for model in ZOO
    for suffix in ("", "_ccim")
)


@pytest.mark.parametrize("config", PAPER_ROWS)
def test_every_paper_row_config_builds_its_model(
    config: str, dictionary: ConfounderDictionary
) -> None:
    assert (CONFIG_DIR / f"{config}.yaml").is_file()
    cfg = load_config(config)
    assert cfg.name == config
    ccim = config.endswith("_ccim")
    assert (cfg.model.intervention != "none") == ccim and (cfg.model.dictionary is not None) == ccim
    assert cfg.model.name == config.removesuffix("_ccim").rsplit("_", 1)[1]
    with torch.device("meta"):
        model = create_model(cfg.model, 7, load_weights=False, dictionary=dictionary)
    missing = [v for v in model.views if v not in cfg.data.view_sizes]
    assert not missing, f"{config}: data.view_sizes lacks {missing}"
    assert cfg.model.name in BASE_MODELS

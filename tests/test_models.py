"""Backbones, EMOT-Net and the classifier composition: shapes, gradients, local weights."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torchvision

from deconfound.config import ModelConfig
from deconfound.errors import ConfigError, DeconfoundError
from deconfound.methods import create_model
from deconfound.models import BACKBONES, EmotNet, create_backbone


def _views(batch: int, size: int = 32) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(0)
    return {
        v: torch.randint(0, 256, (batch, 3, size, size), dtype=torch.uint8, generator=g)
        for v in ("body", "whole")
    }


@pytest.mark.parametrize("batch", [1, 8])
def test_emotnet_classifier_shapes(batch: int) -> None:
    torch.manual_seed(0)
    model = create_model(ModelConfig(args={"backbone": "small_cnn", "fusion_dim": 32}), 7)
    model.eval()  # batch norm needs 2+ samples to train; evaluation works on one
    with torch.no_grad():
        assert model(_views(batch)).shape == (batch, 7)
        assert model.base.forward_features(_views(batch)).shape == (batch, 32)


def test_emotnet_trains_both_streams() -> None:
    torch.manual_seed(0)
    model = create_model(ModelConfig(args={"backbone": "small_cnn"}), 7)
    model(_views(8)).logsumexp(-1).sum().backward()
    for name in ("base.body", "base.context", "base.fusion", "head"):
        grads = [p.grad for n, p in model.named_parameters() if n.startswith(name)]
        assert grads and all(g is not None and g.abs().sum() > 0 for g in grads), name


def test_emotnet_accepts_different_backbones_per_stream() -> None:
    net = EmotNet(backbone="small_cnn", context_backbone="resnet18", fusion_dim=16)
    assert net.body.num_features == 128 and net.context.num_features == 512
    net.eval()
    assert net.forward_features(_views(2, 64)).shape == (2, 16)


def test_weights_load_from_a_places365_style_checkpoint(tmp_path: Path) -> None:
    torch.manual_seed(1)
    source = torchvision.models.resnet18(num_classes=365)
    state = {f"module.{k}": v for k, v in source.state_dict().items()}
    path = tmp_path / "resnet18_places365.pth.tar"
    torch.save({"epoch": 90, "arch": "resnet18", "state_dict": state}, path)
    backbone = create_backbone("resnet18", weights=path)
    assert torch.equal(backbone.trunk.conv1.weight, source.conv1.weight)
    assert torch.equal(backbone.trunk.layer4[1].bn2.running_var, source.layer4[1].bn2.running_var)


def test_weights_that_do_not_fit_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "r18.pth"
    torch.save(torchvision.models.resnet18().state_dict(), path)
    with pytest.raises(DeconfoundError, match="do not fit this backbone"):
        create_backbone("resnet50", weights=path)
    with pytest.raises(DeconfoundError, match="not found"):
        create_backbone("resnet18", weights=tmp_path / "missing.pth")
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(DeconfoundError, match="cannot read weights"):
        create_backbone("resnet18", weights=tmp_path / "junk.pth")


def test_unknown_names_are_refused() -> None:
    with pytest.raises(DeconfoundError, match="unknown backbone 'vgg'"):
        create_backbone("vgg")
    with pytest.raises(ConfigError, match="unknown model 'emotinet'"):
        create_model(ModelConfig(name="emotinet"), 7)
    with pytest.raises(ConfigError, match="unknown argument 'backbon'; known: backbone"):
        create_model(ModelConfig(args={"backbon": "resnet18"}), 7)
    with pytest.raises(ConfigError, match="unknown intervention"):
        create_model(ModelConfig(intervention="ccim"), 7)


@pytest.mark.parametrize("name", sorted(BACKBONES))
def test_every_backbone_pools_to_its_declared_width(name: str) -> None:
    backbone = create_backbone(name).eval()
    with torch.no_grad():
        assert backbone(_views(2, 64)["body"]).shape == (2, backbone.num_features)


@pytest.mark.parametrize("name", ["small_cnn", "caer_encoder", "resnet18", "mobilenet_v2"])
def test_backbones_give_a_feature_map_that_pools_to_their_features(name: str) -> None:
    torch.manual_seed(0)
    backbone = create_backbone(name).eval()
    x = _views(2, 64)["body"]
    with torch.no_grad():
        fmap = backbone.forward_map(x)
        assert fmap.ndim == 4 and fmap.shape[:2] == (2, backbone.num_features)
        assert torch.allclose(backbone(x), fmap.mean(dim=(2, 3)), atol=1e-6)
        grey = backbone(x[:, :1])  # one channel (a depth map) is read as grey
        assert torch.allclose(grey, backbone(x[:, :1].expand(-1, 3, -1, -1)))

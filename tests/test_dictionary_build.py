"""The scene set, scene backbones from files, K-means backends, and `deconfound dictionary build`
(output, metadata, resume after an interruption, cache invalidation, CLI)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_overrides

import deconfound.pipelines.dictionary as build_mod
from deconfound.causal import ConfounderDictionary
from deconfound.causal.kmeans import KMEANS_BACKENDS, kmeans
from deconfound.cli import main
from deconfound.config import Config, load_config
from deconfound.data import make_views
from deconfound.data.synthetic import SCENES, SyntheticScenesReader
from deconfound.engine import train
from deconfound.errors import ConfigError, DataError, DeconfoundError
from deconfound.models import create_backbone
from deconfound.models.backbones import Backbone
from deconfound.models.weights import file_sha256
from deconfound.pipelines.dictionary import build_dictionary


def test_scene_pictures_read_as_a_scene_classification_set(tiny_root: Path) -> None:
    reader = SyntheticScenesReader(tiny_root)
    train_set, val_set = reader.samples("train"), reader.samples("val")
    assert len(train_set) == 12 and len(val_set) == 2  # every fifth picture is in val
    assert all(s.person is None and 0 <= s.labels[0] < len(SCENES) for s in train_set)
    assert make_views(train_set[0], {"whole": 32})["whole"].shape == (3, 32, 32)
    with pytest.raises(DataError, match="no person box, but the model needs the body view"):
        make_views(train_set[0], {"body": 32})


def _cfg(root: Path, out: Path, *extra: str) -> Config:
    return load_config(
        "emotnet_synthetic",
        [
            *run_overrides(root, out),
            f"model.dictionary={out / 'dict.safetensors'}",
            "dictionary.backbone=small_cnn",
            "dictionary.weights=null",
            "dictionary.num_clusters=14",
            "dictionary.image_size=32",
            *extra,
        ],
    )


def test_dictionary_build_writes_centres_prior_and_metadata(tiny_root: Path, tmp_path: Path):
    result = build_dictionary(_cfg(tiny_root, tmp_path), progress=False)
    d = ConfounderDictionary.load(tmp_path / "dict.safetensors", expected_dim=128)
    assert (d.size, d.dim) == (14, 128)
    counts = np.bincount(result.assignments, minlength=14)
    assert torch.allclose(d.prior, torch.tensor(counts / 420, dtype=torch.float32))
    assert result.cluster_counts.sum() == 420 and result.cluster_counts.shape == (14, 7)
    m = d.meta
    assert m["num_samples"] == 420 and m["num_clusters"] == 14 and m["mask_fill"] == "zeros"
    assert m["backbone"] == "small_cnn" and m["weights_sha256"] is None
    assert len(m["dataset_fingerprint"]) == 16 and m["split"] == "train"
    # even a random-weight CNN separates the scene palettes well above chance (ARI 0)
    assert m["ari_vs_context"] == result.ari and result.ari > 0.2


def test_an_interrupted_build_resumes_from_its_cached_chunks(
    tiny_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(build_mod, "CHUNK", 100)  # 420 samples -> 5 chunks
    save, calls = build_mod._save_npy, []

    def dying_save(path: Path, array: np.ndarray) -> None:
        calls.append(len(array))
        if len(calls) == 3:
            raise KeyboardInterrupt
        save(path, array)

    monkeypatch.setattr(build_mod, "_save_npy", dying_save)
    cfg = _cfg(tiny_root, tmp_path / "a")
    with pytest.raises(KeyboardInterrupt):
        build_dictionary(cfg, progress=False)
    cache = tmp_path / "a" / "dict.safetensors.features"
    assert len(list(cache.glob("*/features-*.npy"))) == 2  # in the folder of its settings
    assert not list(cache.rglob("*.tmp")) and not (tmp_path / "a" / "dict.safetensors").exists()

    monkeypatch.setattr(build_mod, "_save_npy", save)
    embedded = []
    forward = Backbone.forward
    monkeypatch.setattr(Backbone, "forward", lambda s, x: embedded.append(len(x)) or forward(s, x))
    resumed = build_dictionary(cfg, progress=False)
    assert sum(embedded) == 220  # only the three missing chunks

    embedded.clear()
    fresh = build_dictionary(_cfg(tiny_root, tmp_path / "b"), progress=False)
    assert sum(embedded) == 420
    assert torch.equal(resumed.dictionary.centres, fresh.dictionary.centres)

    embedded.clear()  # other masking: the cache no longer fits and is made again
    build_dictionary(_cfg(tiny_root, tmp_path / "a", "dictionary.mask_fill=blur"), progress=False)
    assert sum(embedded) == 420

    # chunks whose discarding was killed half-way (their manifest already removed) are not read
    # with other settings: they lie in a folder named after the settings that made them
    (manifest,) = cache.glob("*/manifest.json")
    manifest.unlink()
    embedded.clear()
    again = build_dictionary(cfg, progress=False)
    assert sum(embedded) == 420 and torch.equal(again.dictionary.centres, fresh.dictionary.centres)
    assert len(list(cache.iterdir())) == 1  # the other settings' chunks are gone


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ("dictionary.kmeans=fast", "unknown dictionary.kmeans 'fast'"),
        ("dictionary.mask_fill=noise", "unknown dictionary.mask_fill 'noise'"),
        ("dictionary.num_clusters=500", "num_clusters=500 exceeds the 420 training samples"),
        ("dictionary.weights=missing.pth", "weights file missing.pth not found"),
    ],
)
def test_bad_build_settings_stop_before_any_embedding(
    override: str, message: str, tiny_root: Path, tmp_path: Path
) -> None:
    with pytest.raises(DeconfoundError, match=message):
        build_dictionary(_cfg(tiny_root, tmp_path, override), progress=False)
    assert not (tmp_path / "dict.safetensors.features").exists()


def test_scene_classifier_checkpoint_is_a_backbone_weights_file(tiny_root: Path, tmp_path: Path):
    cfg = load_config(
        "scenes_synthetic",
        [
            f"data.root={tiny_root}",
            "data.view_sizes={whole: 32}",
            "trainer.max_epochs=1",
            "trainer.progress_bar=false",
            f"out_dir={tmp_path}",
        ],
    )
    ckpt = train(cfg).best_checkpoint
    backbone = create_backbone("small_cnn", weights=ckpt)
    state = torch.load(ckpt, weights_only=False)["state_dict"]
    assert torch.equal(backbone.trunk[0].weight, state["model.base.backbone.trunk.0.weight"])

    result = build_dictionary(
        _cfg(tiny_root, tmp_path, f"dictionary.weights={ckpt}"), progress=False
    )
    assert result.dictionary.meta["weights_sha256"] == file_sha256(ckpt)

    two = train(load_config("emotnet_synthetic", run_overrides(tiny_root, tmp_path, epochs=1)))
    with pytest.raises(DeconfoundError, match="checkpoint with 2 backbones"):
        create_backbone("small_cnn", weights=two.best_checkpoint)


def test_torchvision_and_timm_backbones_by_name() -> None:
    for name in ("torchvision:resnet18", "timm:resnet10t"):
        backbone = create_backbone(name)
        out = backbone(torch.randint(0, 255, (2, 3, 32, 32), dtype=torch.uint8))
        assert out.shape == (2, backbone.num_features)
    with pytest.raises(DeconfoundError, match="torchvision has no model 'nope'"):
        create_backbone("torchvision:nope")
    with pytest.raises(DeconfoundError, match="unknown backbone 'nope'"):
        create_backbone("nope")


@pytest.mark.parametrize("backend", KMEANS_BACKENDS)
def test_kmeans_backends_find_separated_blobs(backend: str) -> None:
    rng = np.random.default_rng(0)
    truth = rng.integers(4, size=400)
    x = 10 * np.eye(4, 8)[truth] + rng.standard_normal((400, 8))
    result = kmeans(x, 4, backend=backend, seed=0)
    from sklearn.metrics import adjusted_rand_score

    assert adjusted_rand_score(truth, result.labels) > 0.99
    assert result.centres.shape == (4, 8) and result.inertia > 0
    with pytest.raises(DeconfoundError, match="cannot make 500 clusters from 400 samples"):
        kmeans(x, 500, backend=backend)


def test_unknown_kmeans_backend_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="unknown K-means backend 'fast'"):
        kmeans(np.zeros((4, 2)), 2, backend="fast")


def test_dictionary_build_command(tiny_root: Path, tmp_path: Path, capsys) -> None:
    args = ["dictionary", "build", "--config", "emotnet_synthetic"]
    overrides = [
        f"data.root={tiny_root}",
        f"model.dictionary={tmp_path / 'd.safetensors'}",
        "dictionary.weights=null",
        "dictionary.num_clusters=8",
        "dictionary.image_size=32",
    ]
    assert main(args + overrides) == 0
    out = capsys.readouterr().out
    assert "8 x 128" in out and "ARI vs hidden context" in out
    assert (tmp_path / "d.clusters.png").read_bytes()[:4] == b"\x89PNG"
    meta = ConfounderDictionary.load(tmp_path / "d.safetensors").meta
    assert json.dumps(meta)  # plain JSON

    assert main(args + overrides[:1] + ["model.dictionary=null"]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err == "deconfound: error: set model.dictionary=PATH, where the dictionary is to be written"
    )

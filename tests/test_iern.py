"""IERN: its losses, the backdoor-adjusted prediction, the strata prototypes, and its
three-step training in the engine."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch

from deconfound.causal.iern import IERN
from deconfound.config import Config, ModelConfig, load_config
from deconfound.data import EmotionDataModule
from deconfound.data.synthetic_faces import FaceSynthConfig
from deconfound.data.synthetic_faces import generate as generate_faces
from deconfound.engine import EmotionModule, evaluate, load_module, train
from deconfound.errors import ConfigError
from deconfound.methods import IERNMethod, create_model
from deconfound.models import IERNClassifier

STRATA, CLASSES, CHANNELS, SIDE = 3, 6, 64, 4


def _iern(**kw: object) -> IERN:
    torch.manual_seed(0)
    return IERN(8, CLASSES, STRATA, channels=CHANNELS, map_size=SIDE, **kw)  # type: ignore[arg-type]


def _batch(n: int = 24) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Backbone maps whose content depends on the emotion and on the stratum."""
    g = torch.Generator().manual_seed(1)
    y = torch.arange(n) % CLASSES
    z = torch.arange(n) % STRATA
    fmap = torch.randn(n, 8, SIDE, SIDE, generator=g) * 0.1
    fmap[torch.arange(n), y] += 1.0
    fmap[:, 6:] += z.view(-1, 1, 1, 1).float()
    return fmap, y, z


def test_the_adjusted_prediction_is_the_mean_over_strata() -> None:
    iern = _iern().eval()
    fmap, _, _ = _batch()
    with torch.no_grad():
        e = iern.emotion_generator(iern.reduce(fmap))
        per_stratum = [
            iern.classifier(iern.reconstruction(torch.cat([e, p.expand_as(e)], 1)))
            for p in iern.centres.view(STRATA, CHANNELS, SIDE, SIDE)
        ]
        logits = iern(fmap)
    assert logits.shape == (len(fmap), CLASSES)
    assert torch.allclose(logits, torch.stack(per_stratum).mean(0), atol=1e-6)
    assert not torch.allclose(per_stratum[0], per_stratum[1])  # the strata do differ
    ablation = _iern(adjust=False).eval()
    with torch.no_grad():
        e = ablation.emotion_generator(ablation.reduce(fmap))
        assert torch.allclose(ablation(fmap), ablation.classifier(e))


def test_the_discriminator_step_lowers_its_loss() -> None:
    iern = _iern()
    fmap, y, z = _batch()
    opt = torch.optim.Adam(iern.parameter_groups()["discriminators"], lr=1e-3, betas=(0.5, 0.999))
    with torch.no_grad():
        f = iern.reduce(fmap)
        e, c = iern.emotion_generator(f), iern.confounder_generator(f)
    losses = []
    for _ in range(30):
        loss = iern.discriminator_loss(e, c, y, z)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]


def test_the_feature_step_lowers_confusion_center_and_reconstruction() -> None:
    iern = _iern()
    fmap, y, z = _batch()
    f = iern.reduce(fmap).detach()
    dis = torch.optim.Adam(iern.parameter_groups()["discriminators"], lr=1e-3)
    for _ in range(40):  # make the discriminators confident first: confusion has room to fall
        with torch.no_grad():
            e, c = iern.emotion_generator(f), iern.confounder_generator(f)
        dis.zero_grad()
        iern.discriminator_loss(c, e, z % CLASSES, y % STRATA).backward()  # the *other* map
        dis.step()
    for p in iern.parameter_groups()["discriminators"]:
        p.requires_grad_(False)
    opt = torch.optim.Adam(iern.parameter_groups()["features"], lr=1e-3)

    def terms() -> torch.Tensor:
        losses = iern.feature_losses(f, iern.emotion_generator(f), iern.confounder_generator(f), z)
        return torch.stack([losses.confusion, losses.center, losses.reconstruction])

    first = terms().detach()
    for _ in range(40):
        opt.zero_grad()
        terms().sum().backward()
        iern.centres.grad.div_(iern.center_weight)  # type: ignore[union-attr]
        opt.step()
    last = terms().detach()
    assert (last < first).all(), (first, last)


def test_the_prototypes_move_towards_their_strata() -> None:
    iern = _iern()
    fmap, _, z = _batch()
    f = iern.reduce(fmap).detach()
    opt = torch.optim.Adam([iern.centres], lr=0.05)

    def distances() -> torch.Tensor:
        c = iern.confounder_generator(f).detach().flatten(1)
        means = torch.stack([c[z == k].mean(0) for k in range(STRATA)])
        return (iern.prototypes().flatten(1) - means).norm(dim=1)

    before = distances()
    for _ in range(50):
        c = iern.confounder_generator(f)
        loss = iern.feature_losses(f, iern.emotion_generator(f), c, z).center
        opt.zero_grad()
        loss.backward()
        opt.step()
    after = distances()
    assert (after < 0.5 * before).all(), (before, after)


def test_classification_trains_through_the_adjustment() -> None:
    iern = _iern()
    fmap, y, _ = _batch()
    groups = iern.parameter_groups()
    opt = torch.optim.Adam(groups["classifier"] + groups["reduce"], lr=1e-3)
    losses = []
    for _ in range(30):
        loss = torch.nn.functional.cross_entropy(iern(fmap), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    assert iern.centres.grad is None  # the prototypes are not moved by the classifier's loss


def test_iern_composes_with_a_base_model_that_has_a_feature_map() -> None:
    cfg = ModelConfig(
        name="single_stream",
        args={"view": "face", "backbone": "small_cnn"},
        intervention="iern",
        intervention_args={"channels": 16, "map_size": 3, "strata": 2},
    )
    model = create_model(cfg, 6)
    assert isinstance(model, IERNClassifier) and model.views == ("face",)
    out = model({"face": torch.zeros(2, 3, 32, 32, dtype=torch.uint8)})
    assert out.shape == (2, 6)
    cfg.name, cfg.args = "emotnet", {"backbone": "small_cnn"}
    with pytest.raises(ConfigError, match="needs a base model with a feature map"):
        create_model(cfg, 6)
    cfg.name, cfg.args = "single_stream", {"view": "face"}
    cfg.intervention_args = {"stratums": 2}
    with pytest.raises(ConfigError, match="unknown argument 'stratums'"):
        create_model(cfg, 6)


@pytest.fixture(scope="module")
def faces_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny synthetic facial-expression set (32-pixel faces, one frame per sequence)."""
    cfg = FaceSynthConfig(size=32, subjects=6, frames=1)
    return generate_faces(tmp_path_factory.mktemp("faces") / "set", cfg, progress=False)


def _faces_config(root: Path, out: Path, *extra: str) -> Config:
    return load_config(
        "iern_synthetic",
        [
            f"data.root={root}",
            "data.view_sizes={face: 32}",
            "data.batch_size=8",
            "model.intervention_args={strata: 3, channels: 32, map_size: 2}",
            "trainer.max_epochs=2",
            "trainer.progress_bar=false",
            "trainer.log_every_n_steps=1",
            f"out_dir={out}",
            "name=iern",
            *extra,
        ],
    )


@pytest.mark.filterwarnings("ignore:The number of training batches")
def test_iern_trains_its_three_steps_and_restores_from_its_checkpoint(
    faces_root: Path, tmp_path: Path
) -> None:
    cfg = _faces_config(faces_root, tmp_path)
    data = EmotionDataModule(cfg.data, ("face",))
    result = train(cfg, data)
    module = load_module(result.best_checkpoint)
    assert isinstance(module.method, IERNMethod) and not module.training
    with (result.run_dir / "logs" / "version_0" / "metrics.csv").open() as f:
        rows = list(csv.DictReader(f))
    for name in ("train/discriminators", "train/confusion", "train/center", "train/reconstruction"):
        assert any(row[name] for row in rows), name
    state = torch.load(result.best_checkpoint, weights_only=False)
    assert len(state["optimizer_states"]) == 3  # discriminators, features, classifier
    views, _, _ = next(iter(data.loader("test")))
    again = load_module(result.best_checkpoint)
    with torch.no_grad():
        assert torch.equal(module(views), again(views))  # eval mode: deterministic
    scores = evaluate(module, ["val", "test"], data)
    assert 0.0 <= scores["test"]["accuracy"] <= 1.0


def test_iern_refuses_training_data_without_strata(faces_root: Path, tmp_path: Path) -> None:
    cfg = _faces_config(faces_root, tmp_path)
    module = EmotionModule(cfg.to_dict())
    views = {"face": torch.zeros(4, 3, 32, 32, dtype=torch.uint8)}
    y = torch.zeros(4, dtype=torch.long)
    with pytest.raises(ConfigError, match="confounder stratum in 0..2"):
        module.training_step((views, y, y - 1), 0)


@pytest.mark.filterwarnings("ignore:The number of training batches")
def test_the_step3_switch_changes_only_step_3(faces_root: Path, tmp_path: Path) -> None:
    """One training step (one batch holds the whole training split) in each mode, from the
    same initial weights: steps 1 and 2 (discriminators, confounder generator, reconstruction,
    centres) end equal, step 3's parameters (base model, classifier) do not."""
    states = {}
    for mode in ("release", "recomputed"):
        cfg = _faces_config(
            faces_root,
            tmp_path / mode,
            "data.batch_size=256",
            "trainer.max_epochs=1",
            "model.intervention_args={strata: 3, channels: 32, map_size: 2, step3: " + mode + "}",
        )
        result = train(cfg, EmotionDataModule(cfg.data, ("face",)))
        states[mode] = torch.load(result.run_dir / "checkpoints" / "last.ckpt")["state_dict"]
    release, recomputed = states["release"], states["recomputed"]
    same = ("discriminator", "confounder_generator", "reconstruction", "centres")
    differ = ("model.base.", "classifier")
    compared = set()
    for key, value in release.items():
        if not value.is_floating_point() or "running" in key:
            continue  # batch-norm statistics: step 3's forward pass differs in its weights
        for part in same:
            if part in key:
                assert torch.equal(value, recomputed[key]), key
                compared.add(part)
    assert compared == set(same)
    for part in differ:
        keys = [k for k in release if part in k and release[k].is_floating_point()]
        assert keys and any(not torch.equal(release[k], recomputed[k]) for k in keys), part
    with pytest.raises(ConfigError, match="step3 .* must be one of release, recomputed"):
        create_model(
            _faces_config(faces_root, tmp_path, "model.intervention_args={step3: early}").model, 6
        )

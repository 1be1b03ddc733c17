"""IERN: its losses, the backdoor-adjusted prediction, the strata prototypes, and its
three-step training in the engine."""

from __future__ import annotations

import csv
import logging
from pathlib import Path

import pytest
import torch

from deconfound.causal.iern import IERN
from deconfound.config import Config, ModelConfig, load_config
from deconfound.data import EmotionDataModule
from deconfound.data.synthetic_faces import FaceSynthConfig
from deconfound.data.synthetic_faces import generate as generate_faces
from deconfound.diagnostics.iern import diagnose
from deconfound.diagnostics.report import bias_report
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
    diagnosed = (
        "eval_mode_accuracy",
        "prototype_distance",
        "share_classification",
        "generator_step2",
    )
    for name in diagnosed:  # IERN's diagnostics, an epoch's mean
        assert any(row.get(f"iern/{name}") for row in rows), name
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
    with pytest.raises(
        ConfigError, match="step3 .* must be one of release, pre_update, recomputed"
    ):
        create_model(
            _faces_config(faces_root, tmp_path, "model.intervention_args={step3: early}").model, 6
        )


class _ThroughData:
    """An optimiser as the release's torch ran it: the new values written through ``.data``,
    which autograd does not see, so that a graph that saved a weight before the step computes
    its backward with the updated value. (Its steps are ``opt``'s kind and settings, taken on
    shadow copies of the parameters.)"""

    def __init__(self, opt: torch.optim.Optimizer) -> None:
        self.params = [p for g in opt.param_groups for p in g["params"]]
        self.shadows = [p.detach().clone().requires_grad_() for p in self.params]
        shadow = iter(self.shadows)
        groups = [
            {
                **{k: v for k, v in g.items() if k != "params"},
                "params": [next(shadow) for _ in g["params"]],
            }
            for g in opt.param_groups
        ]
        self.inner = type(opt)(groups)

    def zero_grad(self) -> None:
        for p in self.params:
            p.grad = None

    def step(self) -> None:
        for p, s in zip(self.params, self.shadows, strict=True):
            s.data.copy_(p.data)
            s.grad = None if p.grad is None else p.grad.clone()
        self.inner.step()
        for p, s in zip(self.params, self.shadows, strict=True):
            p.data.copy_(s.data)


def _release_batch(module: EmotionModule, opts: list[_ThroughData], batch: tuple) -> None:
    """One batch of the release's ``IERNModel.optimize_parameters`` (its order, its graph: the
    generators read the backbone's map itself, step 2 keeps the graph, step 3 classifies the
    emotion map of the batch's start), on our modules and losses."""
    views, y, z = batch
    net, (opt_dis, opt_feat, opt_cls) = module.model, opts
    iern = net.iern
    f = net.features(views)
    e, c = iern.emotion_generator(f), iern.confounder_generator(f)
    discriminators = iern.parameter_groups()["discriminators"]
    opt_dis.zero_grad()
    iern.discriminator_loss(e.detach(), c.detach(), y, z).backward()
    opt_dis.step()
    for p in discriminators:
        p.requires_grad_(False)
    opt_feat.zero_grad()
    iern.feature_losses(f, e, c, z).total.backward(retain_graph=True)
    iern.centres.grad.mul_(1 / iern.center_weight)
    opt_feat.step()
    opt_cls.zero_grad()
    module.loss(iern.classify(e), y).backward()
    opt_cls.step()
    for p in discriminators:
        p.requires_grad_(True)


def _driven(module: EmotionModule) -> list[torch.optim.Optimizer]:
    """``module`` made to run ``training_step`` without a trainer; its three optimisers."""
    opts = module.method.configure_optimizers(module)
    module.optimizers = lambda: opts  # type: ignore[method-assign]
    module.manual_backward = lambda loss, *a, **k: loss.backward(*a, **k)  # type: ignore[method-assign]
    module.log = module.log_dict = lambda *a, **k: None  # type: ignore[method-assign]
    return opts


def test_step3_release_trains_as_the_release_ran_on_its_torch(
    faces_root: Path, tmp_path: Path
) -> None:
    """Three batches from equal weights: ``step3: release`` ends where the release's own
    training step (with its torch's ``.data`` updates) ends, every parameter and batch-norm
    statistic equal within float32 rounding; ``pre_update`` (the gradient at the weights before
    step 2) does not."""
    g = torch.Generator().manual_seed(5)
    batches = [
        (
            {"face": torch.randint(0, 256, (12, 3, 32, 32), dtype=torch.uint8, generator=g)},
            torch.randint(0, 6, (12,), generator=g),
            torch.arange(12) % 3,
        )
        for _ in range(3)
    ]
    ends = {}
    for mode in ("reference", "release", "pre_update"):
        step3 = "release" if mode == "reference" else mode
        cfg = _faces_config(
            faces_root,
            tmp_path,
            "optim.scheduler=none",
            "model.intervention_args={strata: 3, channels: 32, map_size: 2, step3: " + step3 + "}",
        )
        torch.manual_seed(0)
        module = EmotionModule(cfg.to_dict()).train()
        through = [_ThroughData(o) for o in _driven(module)]
        for i, batch in enumerate(batches):
            if mode == "reference":
                _release_batch(module, through, batch)
            else:
                module.training_step(batch, i)
        ends[mode] = {k: v.clone() for k, v in module.state_dict().items() if v.is_floating_point()}

    def gap(mode: str) -> float:
        return max((ends[mode][k] - v).abs().max().item() for k, v in ends["reference"].items())

    assert gap("release") < 1e-5
    assert gap("pre_update") > 20 * gap("release")


def test_a_random_non_resnet_backbone_is_warned_on_real_faces(
    caplog: pytest.LogCaptureFixture,
) -> None:
    args = "model.args={view: face, backbone: caer_encoder}"
    small = "model.intervention_args={strata: 3, channels: 32, map_size: 2}"
    with caplog.at_level(logging.WARNING):
        EmotionModule(load_config("mixbasic_iern", [args, small]).to_dict())
    (line,) = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert "(caer_encoder) of SingleStream starts from random weights on mixbasic" in line


class _MapBase(torch.nn.Module):
    """A base model whose feature map is its ``face`` view as it is (for hand computations)."""

    views = ("face",)
    num_features = 8

    def forward_map(self, views: dict[str, torch.Tensor]) -> torch.Tensor:
        return views["face"]


def test_the_diagnostics_equal_a_hand_computation() -> None:
    net = IERNClassifier(_MapBase(), _iern())
    fmap, y, z = _batch()
    iern = net.iern
    with torch.no_grad():  # prototypes at twice each stratum's mean confounder map: distance 1
        f = iern.reduce(fmap)
        c = iern.confounder_generator(f).flatten(1)
        for s in range(STRATA):
            iern.centres[s] = 2 * c[z == s].mean(0)
    net.eval()  # the mode it is left in, whatever the diagnosis switches
    before = {k: v.clone() for k, v in net.state_dict().items()}
    loss = torch.nn.functional.cross_entropy
    halves = [({"face": fmap[:12]}, y[:12], z[:12]), ({"face": fmap[12:]}, y[12:], z[12:])]
    got = diagnose(net, halves, loss)
    assert not net.training and all(torch.equal(v, before[k]) for k, v in net.state_dict().items())
    assert all(p.grad is None for p in net.parameters())
    whole = diagnose(net, [({"face": fmap}, y, z)], loss)  # the batch the centres came from
    for s in range(STRATA):
        assert whole[f"prototype_distance_{s}"] == pytest.approx(1.0, abs=1e-5)
    assert whole["prototype_distance"] == pytest.approx(1.0, abs=1e-5)
    # by hand, half by half (batch statistics are per batch in train mode)
    correct = {"train": 0, "eval": 0, "own": 0, "e": 0, "c": 0, "ec": 0, "ce": 0}
    norms = dict.fromkeys(("confusion", "reconstruction", "classification"), 0.0)
    for views, yy, zz in halves:
        net.train()
        f = net.features(views)
        e, c = iern.emotion_generator(f), iern.confounder_generator(f)
        logits = iern.classify(e)
        losses = iern.feature_losses(f, e, c, zz)
        terms = {"confusion": losses.confusion, "reconstruction": losses.reconstruction}
        terms["classification"] = loss(logits, yy)
        for name, term in terms.items():
            grads = torch.autograd.grad(
                term, list(iern.emotion_generator.parameters()), retain_graph=True
            )
            norms[name] += float(torch.cat([g.flatten() for g in grads]).norm())
        correct["train"] += int((logits.argmax(-1) == yy).sum())
        own = iern.classifier(iern.recombine(e, c))
        correct["own"] += int((own.argmax(-1) == yy).sum())
        correct["e"] += int((iern.emotion_discriminator(e).argmax(-1) == yy).sum())
        correct["c"] += int((iern.confounder_discriminator(c).argmax(-1) == zz).sum())
        correct["ec"] += int((iern.emotion_discriminator(c).argmax(-1) == yy).sum())
        correct["ce"] += int((iern.confounder_discriminator(e).argmax(-1) == zz).sum())
        net.load_state_dict(before)  # the running statistics as they were
        net.eval()
        correct["eval"] += int((net(views).argmax(-1) == yy).sum())
    n = len(y)
    assert got["train_mode_accuracy"] == correct["train"] / n
    assert got["eval_mode_accuracy"] == correct["eval"] / n
    assert got["own_map_accuracy"] == correct["own"] / n
    assert got["emotion_discriminator"] == correct["e"] / n
    assert got["confounder_discriminator"] == correct["c"] / n
    assert got["emotion_from_c"] == correct["ec"] / n
    assert got["stratum_from_e"] == correct["ce"] / n
    total = sum(norms.values())
    for name, norm in norms.items():
        assert got[f"share_{name}"] == pytest.approx(norm / total, rel=1e-4)
    assert sum(got[f"share_{k}"] for k in norms) == pytest.approx(1.0)


@pytest.mark.filterwarnings("ignore:The number of training batches")
def test_bias_report_shows_an_iern_checkpoints_diagnostics(
    faces_root: Path, tmp_path: Path
) -> None:
    cfg = _faces_config(
        faces_root,
        tmp_path,
        "trainer.max_epochs=1",
        "dictionary.image_size=32",
        "dictionary.num_clusters=4",
        "dictionary.weights=null",
    )
    result = train(cfg, EmotionDataModule(cfg.data, ("face",)))
    report = bias_report(
        cfg, out_dir=tmp_path / "report", checkpoints=[result.best_checkpoint], progress=False
    )
    (model,) = report.numbers["models"]
    iern = model["iern"]
    assert iern["split"] == "train" and iern["method"] == "iern"
    for key in (
        "train_mode_accuracy",
        "eval_mode_accuracy",
        "prototype_distance",
        "share_confusion",
    ):
        assert 0.0 <= iern[key] < 10.0, key
    assert sum(
        iern[f"share_{k}"] for k in ("confusion", "reconstruction", "classification")
    ) == pytest.approx(1.0)
    page = report.html.read_text()
    assert "<h3>IERN</h3>" in page and "prototype distance" in page

"""`deconfound bias-report`'s "what the intervention does" numbers against direct computations
on the tiny set: λ's entropy and argmax, the share of g W_g, the metric with g frozen at its
training mean (through CCIM's formula by hand), and the share of errors toward the scene's
emotion; the CCIM section is absent for a model without intervention."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from test_bias_report import SPLITS, _overrides

from deconfound.causal import CCIM, ConfounderDictionary
from deconfound.config import load_config
from deconfound.data.datamodule import EmotionDataModule
from deconfound.data.sample import DatasetInfo
from deconfound.data.synthetic import SyntheticReader, preferred_emotion
from deconfound.diagnostics import report as report_module
from deconfound.diagnostics.intervention import SplitPass, ccim_numbers, scene_preference
from deconfound.diagnostics.report import BiasReport, bias_report
from deconfound.engine import EmotionModule, load_module
from deconfound.pipelines.dictionary import build_dictionary


def _save(module: EmotionModule, config: dict, path: Path) -> Path:
    torch.save({"hyper_parameters": {"config": config}, "state_dict": module.state_dict()}, path)
    return path


def _ccim_checkpoint(config: dict, path: Path) -> Path:
    """An untrained EMOT-Net + CCIM-dot whose attention is sharpened and whose W_g is scaled
    up, so that λ picks prototypes and g weighs in the fused feature."""
    torch.manual_seed(0)
    module = EmotionModule(config, load_weights=False)
    ccim = module.model.intervention
    with torch.no_grad():
        ccim.query.weight.mul_(30.0)
        ccim.key.weight.mul_(1000.0)  # the untrained backbone's prototypes lie close together
        ccim.w_g.mul_(30.0)
    return _save(module, config, path)


@pytest.fixture(scope="module")
def reports(tiny_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A dictionary of the tiny set; the report of a CCIM-dot checkpoint with it, and that of a
    checkpoint without intervention (K-means clusters)."""
    out = tmp_path_factory.mktemp("intervention")
    overrides = _overrides(tiny_root, out)
    cfg = load_config("emotnet_synthetic", overrides)
    built = build_dictionary(cfg, progress=False)
    ccim_cfg = load_config("emotnet_synthetic", [*overrides, "model.intervention=ccim_dot"])
    ccim = _ccim_checkpoint(ccim_cfg.to_dict(), out / "ccim.ckpt")
    torch.manual_seed(0)
    none = _save(EmotionModule(cfg.to_dict(), load_weights=False), cfg.to_dict(), out / "n.ckpt")
    kw = {"progress": False}
    seen: list[int] = []  # samples through the CCIM model's base
    with pytest.MonkeyPatch.context() as mp:
        load = report_module._load_model

        def counting(*args: object) -> EmotionModule:
            module = load(*args)
            forward = module.model.base.forward_features
            module.model.base.forward_features = lambda v: seen.append(len(v["body"])) or forward(v)
            return module

        mp.setattr(report_module, "_load_model", counting)
        with_ccim = bias_report(
            cfg, out_dir=out / "ccim", dictionary=built.path, checkpoints=[ccim], **kw
        )
    return {
        "ccim": with_ccim,
        "ccim_ckpt": ccim,
        "seen": sum(seen),
        "none": bias_report(cfg, out_dir=out / "none", checkpoints=[none], **kw),
        "none_ckpt": none,
        "cfg": cfg,
        "dictionary": built.path,
    }


def _pieces(module: EmotionModule, split: str) -> dict[str, torch.Tensor]:
    """h, the logits of the model's own forward and the targets of ``split``, in order."""
    data = EmotionDataModule(module.cfg.data, module.model.views)
    hs, logits, ys = [], [], []
    with torch.no_grad():
        for views, y, _ in data.loader(split):
            hs.append(module.model.base.forward_features(views))
            logits.append(module(views))
            ys.append(y)
    return {
        "h": torch.cat(hs).double(),
        "logits": torch.cat(logits),
        "y": torch.cat(ys),
    }


def _by_hand(ccim: torch.nn.Module, h: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """λ = softmax((W_q h)·(W_k z_i) / √D) and g = Σ_i λ_i z_i P(z_i), in float64."""
    z, prior = ccim.confounders.double(), ccim.prior.double().flatten()
    q, k = h @ ccim.query.weight.double().T, z @ ccim.key.weight.double().T
    lam = (q @ k.T / math.sqrt(z.shape[1])).softmax(-1)
    return lam, lam @ (z * prior[:, None])


def _head_by_hand(ccim: torch.nn.Module, head: torch.nn.Linear, x: torch.Tensor) -> torch.Tensor:
    """head(x + 0.3 · body(x)), the residual body written out (eval mode: batch norm with its
    running statistics, tanh-approximated GELU, no dropout)."""
    norm, first, second = ccim.body[0], ccim.body[1], ccim.body[4]
    d = {n: t.double() for n, t in [("w", norm.weight), ("b", norm.bias)]}
    y = (x - norm.running_mean.double()) / torch.sqrt(norm.running_var.double() + norm.eps)
    y = y * d["w"] + d["b"]
    y = y @ first.weight.double().T + first.bias.double()
    y = 0.5 * y * (1 + torch.tanh(math.sqrt(2 / math.pi) * (y + 0.044715 * y**3)))
    y = y @ second.weight.double().T + second.bias.double()
    out = x + 0.3 * y
    return out @ head.weight.double().T + head.bias.double()


def test_ccim_numbers_match_a_direct_computation(reports: dict) -> None:
    report: BiasReport = reports["ccim"]
    numbers = report.numbers["models"][0]["ccim"]
    module = load_module(reports["ccim_ckpt"])
    ccim, head = module.model.intervention, module.model.head
    n = ccim.confounders.shape[0]
    assert numbers["kind"] == "ccim" and numbers["attention"] == "dot"
    assert numbers["prototypes"] == n and numbers["log_prototypes"] == pytest.approx(math.log(n))
    assert numbers["notes"] == []  # the report's clusters are the model's dictionary
    assert list(numbers["splits"]) == SPLITS
    train = _pieces(module, "train")
    _, g_train = _by_hand(ccim, train["h"])
    g_mean = g_train.mean(0)
    centres = ccim.confounders.double().numpy()
    for split in SPLITS:
        got, p = numbers["splits"][split], _pieces(module, split)
        lam, g = _by_hand(ccim, p["h"])
        entropy = -(lam * lam.log()).sum(-1).mean().item()
        assert got["n"] == len(p["y"])
        assert got["lambda_entropy"] == pytest.approx(entropy, rel=1e-4, abs=1e-5)
        assert got["lambda_entropy_share"] == pytest.approx(entropy / math.log(n), rel=1e-4)
        f = report.features[split].astype(np.float64)
        own = ((f[:, None, :] - centres[None]) ** 2).sum(-1).argmin(1)
        assert got["argmax_is_own_cluster"] == pytest.approx(np.mean(lam.argmax(-1).numpy() == own))
        assert got["own_cluster_majority"] == pytest.approx(np.bincount(own).max() / len(own))
        hw = (p["h"] @ ccim.w_h.double()).norm(dim=1)
        gw = (g @ ccim.w_g.double()).norm(dim=1)
        share = (gw / (hw + gw)).mean().item()
        assert got["g_norm_share"] == pytest.approx(share, rel=1e-4)
        x = p["h"] @ ccim.w_h.double()
        as_is = _head_by_hand(ccim, head, x + g @ ccim.w_g.double())
        frozen = _head_by_hand(ccim, head, x + g_mean @ ccim.w_g.double())
        assert torch.allclose(as_is, p["logits"].double(), atol=1e-3)  # the model's forward
        accuracy = (as_is.argmax(-1) == p["y"]).double().mean().item()
        frozen_accuracy = (frozen.argmax(-1) == p["y"]).double().mean().item()
        assert got["metric_as_is"] == pytest.approx(accuracy)
        assert got["metric_as_is"] == pytest.approx(
            report.numbers["models"][0]["splits"][split]["accuracy"], abs=1e-6
        )  # engine.evaluate's
        assert got["metric_g_frozen"] == pytest.approx(frozen_accuracy)
        assert got["metric_difference"] == pytest.approx(frozen_accuracy - accuracy)
    # the sharpened attention and scaled W_g make the numbers informative, not degenerate
    anti = numbers["splits"]["test_anti"]
    assert anti["lambda_entropy_share"] < 0.9 and 0.05 < anti["g_norm_share"] < 0.95


def test_one_pass_over_the_held_out_splits_and_the_training_split(reports: dict) -> None:
    held_out = 70 + 140 + 70 + 70
    swap_gap = 2 * (140 + 70 + 70)  # each tested person on an own-cluster and another's scene
    assert reports["seen"] == held_out + (420 + held_out) + swap_gap  # evaluate's, ours, gap's


def _scene_errors_by_hand(ckpt: Path, split: str) -> tuple[int, int, float]:
    module = load_module(ckpt)
    p = _pieces(module, split)
    predicted, y = p["logits"].argmax(-1).numpy(), p["y"].numpy()
    scenes = [s.confounder for s in SyntheticReader(module.cfg.data.root).samples(split)]
    preferred = np.array([preferred_emotion(s) for s in scenes])
    wrong = predicted != y
    return (
        int(wrong.sum()),
        int((predicted[wrong] == preferred[wrong]).sum()),
        float(np.mean(y[wrong] != preferred[wrong]) / 6),
    )


@pytest.mark.parametrize("kind", ["none", "ccim"])
def test_errors_toward_the_scenes_emotion_match_a_direct_computation(
    reports: dict, kind: str
) -> None:
    e = reports[kind].numbers["models"][0]["scene_errors"]
    assert e["dataset"] == "synthetic" and list(e["splits"]) == SPLITS
    for split in SPLITS:
        errors, toward, uniform = _scene_errors_by_hand(reports[f"{kind}_ckpt"], split)
        got = e["splits"][split]
        assert (got["errors"], got["to_preferred"]) == (errors, toward)
        assert got["share"] == pytest.approx(toward / errors)
        assert got["chance"] == pytest.approx(1 / 6)
        assert got["uniform_errors"] == pytest.approx(uniform)
    # test_anti: the true emotion is never the scene's, so uniform errors are exactly chance
    assert e["splits"]["test_anti"]["uniform_errors"] == pytest.approx(1 / 6)


def test_the_ccim_section_is_absent_without_intervention_and_json_parses(reports: dict) -> None:
    for kind in ("none", "ccim"):
        report: BiasReport = reports[kind]
        saved = json.loads(report.json.read_text())
        html = report.html.read_text()
        assert saved["models"][0]["scene_errors"] == report.numbers["models"][0]["scene_errors"]
        assert "<h4>Errors toward the scene's emotion</h4>" in html
        if kind == "none":
            assert saved["models"][0]["ccim"] is None
            assert '<section id="intervention">' not in html and 'href="#intervention"' not in html
        else:
            assert saved["models"][0]["ccim"]["splits"].keys() == set(SPLITS)
            assert '<section id="intervention">' in html and 'href="#intervention"' in html
            assert "What the intervention does, measured" in html


def test_scene_preferences_are_known_for_the_synthetic_set_only() -> None:
    assert scene_preference("synthetic") is preferred_emotion
    assert scene_preference("emotic") is None and scene_preference("mixbasic") is None


def test_own_cluster_agreement_is_noted_or_left_out_when_the_dictionaries_differ() -> None:
    torch.manual_seed(0)
    centres = torch.eye(3, 4)
    ccim = CCIM(5, ConfounderDictionary(centres, torch.full((3,), 1 / 3)), proj_dim=4)
    weights = np.array([[0.8, 0.1, 0.1], [0.1, 0.1, 0.8]])
    scores, targets = np.array([[0.9, 0.1], [0.2, 0.8]]), np.array([0, 0])
    p = SplitPass(scores, targets, weights, np.ones(2), np.ones(2), scores)
    info = DatasetInfo("tiny", ("a", "b"))
    features = {"val": centres.numpy()[[0, 1]] + 0.01}  # nearest prototypes 0 and 1
    got = ccim_numbers(ccim, {"val": p}, features, info, "train", same_dictionary=False)
    assert got["splits"]["val"]["argmax_is_own_cluster"] == pytest.approx(0.5)
    assert got["splits"]["val"]["g_norm_share"] == pytest.approx(0.5)
    assert got["splits"]["val"]["metric_difference"] == 0.0
    assert len(got["notes"]) == 1 and "not this model's dictionary" in got["notes"][0]
    wide = {"val": np.zeros((2, 7))}
    got = ccim_numbers(ccim, {"val": p}, wide, info, "train", same_dictionary=False)
    assert got["splits"]["val"]["argmax_is_own_cluster"] is None
    assert "7-d but this model's dictionary is 4-d" in got["notes"][0]


def test_two_checkpoints_side_by_side_each_as_its_own_report(reports: dict, tmp_path: Path):
    ccim_alone, none_alone = reports["ccim"], reports["none"]
    both = bias_report(
        reports["cfg"],
        out_dir=tmp_path / "both",
        dictionary=reports["dictionary"],
        checkpoints=[reports["none_ckpt"], reports["ccim_ckpt"]],
        progress=False,
    )
    models = both.numbers["models"]
    folder = Path(reports["ccim_ckpt"]).parent.name
    assert [m["label"] for m in models] == [f"{folder}/n", f"{folder}/ccim"]
    for model, alone in zip(models, [none_alone, ccim_alone], strict=True):
        single = alone.numbers["models"][0]
        for key in ("splits", "intervals", "confusion", "scene_errors"):
            assert model[key] == single[key], key
    assert models[0]["ccim"] is None
    assert models[1]["ccim"] == ccim_alone.numbers["models"][0]["ccim"]
    # a figure of each model on each split, numbered; one table and one bar chart for both
    assert set(both.figures) == {"clusters", "probe", "splits"} | {
        f"confusion-{s}-{k}" for s in SPLITS for k in (1, 2)
    }
    html = both.html.read_text()
    assert "3. The models, side by side" in html
    assert html.count(f"<h3><code>{folder}/ccim</code></h3>") == 2  # sections 3 and 4
    assert html.count(f"<h3><code>{folder}/n</code></h3>") == 1  # no CCIM: section 3 only

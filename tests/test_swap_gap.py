"""The context-swap gap (deconfound evaluate --swap-gap): a model trained where the scene says
nothing has a gap near 0, a plain model trained where the scene gives the emotion away a
clearly positive one; a person pasted back onto its own picture keeps its pixels; the own
background comes from another picture of the same cluster, the swapped one from another
cluster."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import TINY, run_overrides

from deconfound.cli import main
from deconfound.config import load_config
from deconfound.data import EmotionDataModule
from deconfound.data.paste import PersonPaste
from deconfound.data.synthetic import generate
from deconfound.data.views import load_image
from deconfound.diagnostics.swap import context_swap_gap, swap_backgrounds
from deconfound.engine import load_module, train
from deconfound.engine.metrics import reweighted_accuracy, worst_group_accuracy
from deconfound.pipelines.strata import dictionary_strata

SIZES = {"train": 840, "val": 70, "test_iid": 210, "test_balanced": 14, "test_anti": 14}


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """EMOT-Net trained on a fully confounded draw (the scene gives the emotion) and on an
    unconfounded one (the scene says nothing): their checkpoints and the confounded root."""
    base = tmp_path_factory.mktemp("swap")
    out: dict[str, Path] = {}
    for name, rho in (("confounded", 1.0), ("blind", 1 / 7)):
        synth = dataclasses.replace(TINY, rho=rho, seed=3, sizes={**SIZES, "scenes": 14})
        root = generate(base / name, synth, progress=False)
        cfg = load_config("emotnet_synthetic", [*run_overrides(root, base / "runs", 6)])
        cfg.name = name
        out[name] = train(cfg).best_checkpoint
        out[f"{name}_root"] = root
    return out


def _scenes(root: Path, split: str) -> np.ndarray:
    cfg = load_config("emotnet_synthetic", [f"data.root={root}"])
    return np.array([s.confounder for s in EmotionDataModule(cfg.data, ()).reader.samples(split)])


def test_a_scene_blind_model_has_no_gap_and_a_shortcut_model_a_clear_one(
    trained: dict[str, Path],
) -> None:
    root = trained["confounded_root"]
    strata = _scenes(root, "test_iid")  # the hidden scene as the strata: no dictionary noise
    gaps = {}
    for name in ("confounded", "blind"):
        module = load_module(trained[name], [f"data.root={root}"])  # the same pictures
        gaps[name] = context_swap_gap(module, "test_iid", strata, resamples=200)
    shortcut, blind = gaps["confounded"], gaps["blind"]
    assert shortcut.gap > 0.25 and shortcut.ci95[0] > 0.1, shortcut
    assert abs(blind.gap) < 0.08, blind
    assert shortcut.samples == blind.samples == SIZES["test_iid"]
    assert shortcut.ci95[0] <= shortcut.gap <= shortcut.ci95[1]


def test_pasting_keeps_the_person_and_swaps_cross_clusters(
    trained: dict[str, Path],
) -> None:
    root = trained["confounded_root"]
    cfg = load_config("emotnet_synthetic", [f"data.root={root}"])
    samples = EmotionDataModule(cfg.data, ()).reader.samples("test_iid")
    paste = PersonPaste(samples, root)
    for i in range(5):
        own = np.asarray(paste.onto(i, i))
        original = np.asarray(load_image(samples[i].image))
        cut = paste.cut(i)
        assert np.array_equal(own[cut], original[cut])  # the person's own pixels
        assert (own[~cut] != original[~cut]).any(axis=-1).mean() < 0.1  # only the hidden rim
    strata = _scenes(root, "test_iid")
    rng = np.random.default_rng(0)
    swapped = swap_backgrounds(strata, paste.pictures, rng, same=False)
    assert np.all(strata[swapped] != strata)
    own = swap_backgrounds(strata, paste.pictures, rng, same=True)
    assert np.all(strata[own] == strata) and np.all(paste.pictures[own] != paste.pictures)
    alone = swap_backgrounds(np.array([0, 0, 1]), np.arange(3), rng, same=True)
    assert alone[2] == 2 and alone[0] == 1  # the only picture of its cluster: its own
    # two people of one picture in different strata: never each other's background
    crossed = swap_backgrounds(np.array([0, 1, 1]), np.array([0, 0, 1]), rng, same=False)
    assert crossed[0] == 2 and crossed[1] == 1  # person 1 has no other picture elsewhere
    with pytest.raises(Exception, match="at least two context clusters"):
        swap_backgrounds(np.zeros(5, dtype=int), np.arange(5), rng, same=False)


def test_evaluate_reports_the_swap_gap_with_a_dictionary(
    trained: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    root = trained["confounded_root"]
    dictionary = tmp_path / "d.safetensors"
    build = [
        "dictionary", "build", "--config", "emotnet_synthetic", f"data.root={root}",
        f"model.dictionary={dictionary}", "dictionary.backbone=small_cnn",
        "dictionary.weights=null", "dictionary.image_size=32", "dictionary.num_clusters=4",
        "trainer.progress_bar=false",
    ]  # fmt: skip
    assert main(build) == 0
    capsys.readouterr()
    ckpt = str(trained["confounded"])
    argv = ["evaluate", "--checkpoint", ckpt, "--split", "test_iid", "--swap-gap"]
    assert main([*argv, "--dictionary", str(dictionary), "--json"]) == 0
    gap = json.loads(capsys.readouterr().out)["test_iid"]["swap_gap"]
    assert gap["own"] - gap["swapped"] == pytest.approx(gap["gap"])
    assert gap["samples"] == SIZES["test_iid"] and gap["metric"] == "accuracy"
    assert main([*argv, "--dictionary", str(dictionary)]) == 0
    printed = capsys.readouterr().out
    assert "context-swap gap on test_iid: accuracy" in printed
    assert "per (context cluster, label) on test_iid: re-weighted accuracy" in printed
    # the per-(cluster, label) scores against a direct computation
    module = load_module(ckpt)
    cfg = module.cfg
    cfg.model.dictionary = str(dictionary)
    data = EmotionDataModule(cfg.data, module.model.views)
    samples = {"test_iid": data.reader.samples("test_iid")}
    z = torch.as_tensor(dictionary_strata(cfg, samples, module.info, progress=False)[0]["test_iid"])
    with torch.no_grad():
        batches = [(module(views).argmax(-1), y) for views, y, _ in data.loader("test_iid")]
    pred, y = torch.cat([b[0] for b in batches]), torch.cat([b[1] for b in batches])
    assert main([*argv[:-1], "--dictionary", str(dictionary), "--json"]) == 0
    scores = json.loads(capsys.readouterr().out)["test_iid"]
    assert "swap_gap" not in scores  # asked for the group scores only
    assert scores["accuracy_reweighted"] == pytest.approx(
        float(reweighted_accuracy(pred == y, y, z))
    )
    assert scores["accuracy_worst_group"] == pytest.approx(
        float(worst_group_accuracy(pred == y, y, z))
    )
    assert main(argv) == 2  # the run had no dictionary
    assert "give --dictionary PATH" in capsys.readouterr().err

"""DFR refits only the last layer, on group-balanced held-out validation samples that are never
scored; JTT upsamples the training errors of its first run."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from test_methods import DICTIONARY, _config, dictionary  # noqa: F401  (a fixture)

from deconfound.data import EmotionDataModule
from deconfound.engine import load_module, train
from deconfound.engine.run import training_logits
from deconfound.methods import JTT, LastLayerRefit
from deconfound.methods import dfr as dfr_module
from deconfound.methods.dfr import balanced_weights, fit_last_layer


def test_balanced_weights_give_every_group_the_same_total() -> None:
    groups = np.array([0, 0, 0, 0, 5, 5, 9])
    w = balanced_weights(groups)
    totals = [w[groups == g].sum() for g in (0, 5, 9)]
    assert np.allclose(totals, totals[0]) and w.mean() == pytest.approx(1.0)


def test_a_group_balanced_refit_leans_less_on_the_spurious_feature() -> None:
    """Feature 0 is the label (with noise), feature 1 a shortcut that agrees with it in 95 % of
    the samples: balancing the (shortcut, label) groups moves weight from the shortcut to the
    label's own feature."""
    rng = np.random.default_rng(0)
    y = rng.integers(0, 2, 2000)
    agrees = rng.random(2000) < 0.95
    spurious = np.where(agrees, y, 1 - y)
    x = np.stack([y + rng.normal(0, 0.8, 2000), spurious + rng.normal(0, 0.1, 2000)], 1)
    groups = spurious * 2 + y
    ratio = {}
    for name, g in (("plain", np.zeros_like(groups)), ("balanced", groups)):
        weight, _ = fit_last_layer(x, y, g, 2, c=1.0)
        margin = weight[1] - weight[0]
        ratio[name] = margin[1] / margin[0]
    assert ratio["balanced"] < 0.5 * ratio["plain"]


def test_dfr_refits_only_the_last_layer_on_held_out_validation_samples(
    tiny_root: Path,
    dictionary: Path,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    seen: list[np.ndarray] = []
    fit = dfr_module.fit_last_layer

    def spy(features, labels, groups, num_classes, c):  # type: ignore[no-untyped-def]
        seen.append(labels)
        return fit(features, labels, groups, num_classes, c)

    monkeypatch.setattr(dfr_module, "fit_last_layer", spy)
    runs = {
        m: train(_config(tiny_root, tmp_path / m, m, dictionary, "trainer.max_epochs=2"))
        for m in ("none", "dfr")
    }
    assert len(seen) == 2  # before each epoch's validation, not the sanity check
    plain = torch.load(runs["none"].by_rule["last"], weights_only=False)["state_dict"]
    refit = torch.load(runs["dfr"].by_rule["last"], weights_only=False)["state_dict"]
    for key, value in plain.items():  # the plain model underneath, trained alike, bit for bit
        assert torch.equal(refit[key.replace("model.", "model.classifier.", 1)], value), key
    module = load_module(runs["dfr"].by_rule["last"])
    net: LastLayerRefit = module.model  # type: ignore[assignment]
    assert bool(net.fitted) and not torch.allclose(net.weight, net.classifier.head.weight)

    cfg = _config(tiny_root, tmp_path / "dfr", "dfr", dictionary)
    data = EmotionDataModule(cfg.data, net.views)
    data.set_held_out(module.method.held_out_share, cfg.trainer.seed)
    assert data.held_out is not None
    n = len(data.dataset("val"))
    labels = np.array([data.dataset("val").samples[i].labels[0] for i in data.held_out])
    assert len(seen[-1]) == round(0.5 * n) and np.array_equal(seen[-1], labels)
    scored = {int(i) for i in data.loader("val").dataset.indices}  # type: ignore[attr-defined]
    assert scored.isdisjoint(data.held_out.tolist()) and len(scored) == n - len(labels)
    views, _, _ = next(iter(data.loader("test_anti")))
    with torch.no_grad():
        h = net.features(views)
        assert torch.allclose(net(views), h @ net.weight.T + net.bias)


def test_jtt_upsamples_the_errors_of_its_first_run(
    tiny_root: Path,
    dictionary: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    cfg = _config(tiny_root, tmp_path, "jtt", dictionary, "model.intervention_args={upweight: 3}")
    result = train(cfg)
    first = cfg.run_dir.parent / f"{cfg.name}-first" / "checkpoints" / "last.ckpt"
    assert first.is_file() and torch.load(first, weights_only=False)["epoch"] == 0
    data = EmotionDataModule(cfg.data, ("body", "whole"))
    logits, targets = training_logits(load_module(first), data)
    errors = (logits.argmax(-1) != targets).numpy()
    assert 0 < errors.sum() < len(errors)
    method = JTT(cfg.model)
    method.learn_from_first_run(logits, targets)
    assert np.array_equal(method.sampling_repeats(), np.where(errors, 3, 1))
    steps = torch.load(result.by_rule["last"], weights_only=False)["global_step"]
    upsampled = len(errors) + 2 * int(errors.sum())
    assert steps == upsampled // cfg.data.batch_size  # the epoch went over the upsampled set
    again = train(cfg)  # finished: both runs are reused as they are
    assert again.by_rule["last"] == result.by_rule["last"]


@pytest.mark.parametrize(
    ("method", "args", "message"),
    [
        ("jtt", {"upweight": 2.5}, "whole number"),
        ("jtt", {"first_epochs": "two"}, "whole number"),
        ("dfr", {"holdout": "half"}, "holdout must be a number"),
        ("dfr", {"holdout": 1.0}, "holdout must lie in"),
        ("paste", {"cut_share": "wide"}, "cut_share must be a number"),
    ],
)
def test_bad_options_are_one_line(method: str, args: dict, message: str) -> None:
    from deconfound.config import ModelConfig
    from deconfound.errors import ConfigError
    from deconfound.methods import get_method

    with pytest.raises(ConfigError, match=message):
        get_method(ModelConfig(name="emotnet", intervention=method, intervention_args=args))


def test_a_held_out_share_that_leaves_nothing_to_score_is_refused(tiny_root: Path) -> None:
    from deconfound.errors import ConfigError

    cfg = _config(tiny_root, tiny_root, "dfr", tiny_root)
    data = EmotionDataModule(cfg.data, ("body", "whole"))
    with pytest.raises(ConfigError, match="both need at least one"):
        data.set_held_out(0.999, 0)
    data.set_held_out(0.5, 0)
    assert data.held_out is not None and len(data.held_out) == 35


def test_runs_record_every_option_and_older_clef_checkpoints_keep_their_fusion(
    tiny_root: Path,
    dictionary: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    """A default that changes never changes what an earlier run means: a run records its
    method's options in full; a clef checkpoint saved before ``fusion`` existed is additive."""
    from deconfound.engine import EmotionModule

    cfg = _config(tiny_root, tmp_path, "clef", dictionary)
    result = train(cfg)
    saved = torch.load(result.by_rule["last"], weights_only=False)
    args = saved["hyper_parameters"]["config"]["model"]["intervention_args"]
    assert args["fusion"] == "harmonic" and args["context_weight"] == 1.0
    assert "fusion: harmonic" in (result.run_dir / "config.yaml").read_text()
    old = saved["hyper_parameters"]["config"]
    old["model"]["intervention_args"] = {}  # as saved before the option
    path = tmp_path / "old.ckpt"
    torch.save({**saved, "hyper_parameters": {"config": old}}, path)
    module: EmotionModule = load_module(path)
    assert module.model.fusion == "sum"  # type: ignore[union-attr]

"""The method registry: every context method trains, restores and predicts on the tiny set; the
exact backdoor adjustment, the re-weighting and the re-weighted validation metric equal their
formulas; GroupDRO's weights survive a checkpoint; no method sees the hidden scene."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_overrides

from deconfound.config import load_config
from deconfound.data import EmotionDataModule
from deconfound.data.views import make_views
from deconfound.engine import evaluate, load_module, train
from deconfound.engine.metrics import ReweightedAccuracy, WorstGroupAccuracy, worst_group_accuracy
from deconfound.methods import (
    CONTEXT_METHODS,
    METHODS,
    BackdoorClassifier,
    CounterfactualClassifier,
    GroupDRO,
    independence_weights,
)
from deconfound.methods.clef import fuse
from deconfound.pipelines.dictionary import build_dictionary

DICTIONARY = [
    "dictionary.backbone=small_cnn",
    "dictionary.weights=null",
    "dictionary.image_size=32",
    "dictionary.num_clusters=8",
    "dictionary.batch_size=64",
]


@pytest.fixture(scope="module")
def dictionary(tiny_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A dictionary built from the tiny set's training split (random small_cnn weights)."""
    path = tmp_path_factory.mktemp("dictionary") / "d.safetensors"
    cfg = load_config(
        "emotnet_synthetic",
        [f"data.root={tiny_root}", f"model.dictionary={path}", *DICTIONARY],
    )
    build_dictionary(cfg, progress=False)
    return path


def _config(root: Path, out: Path, method: str, dictionary: Path, *extra: str):
    return load_config(
        "emotnet_synthetic",
        [
            *run_overrides(root, out, epochs=1),
            *DICTIONARY,
            f"model.intervention={method}",
            f"model.dictionary={dictionary}",
            "data.view_sizes={body: 32, whole: 32, context: 32}",
            *extra,
        ],
    )


def test_the_registry_names_every_method() -> None:
    assert set(CONTEXT_METHODS) <= set(METHODS)
    assert {"iern", "confusion"} <= set(METHODS)
    assert all(METHODS[name].name == name for name in METHODS)


@pytest.mark.parametrize("method", CONTEXT_METHODS)
def test_each_method_trains_restores_and_predicts(
    method: str, tiny_root: Path, dictionary: Path, tmp_path: Path
) -> None:
    cfg = _config(tiny_root, tmp_path, method, dictionary)
    result = train(cfg)
    dictionary_copy = tmp_path / "elsewhere.safetensors"
    module = load_module(result.best_checkpoint, [f"model.dictionary={dictionary_copy}"])
    assert module.method.name == method and not module.training
    data = EmotionDataModule(cfg.data, module.model.views)
    views, y, _ = next(iter(data.loader("test_anti")))
    with torch.no_grad():
        probs = module(views).softmax(-1)
    assert probs.shape == (len(y), 7) and torch.allclose(probs.sum(-1), torch.ones(len(y)))
    scores = evaluate(module, ["test_anti"], data)
    assert 0.0 <= scores["test_anti"]["accuracy"] <= 1.0
    with (result.run_dir / "logs" / "version_0" / "metrics.csv").open() as f:
        assert "val/accuracy_reweighted" in f.readline()  # logged beside the plain metric


def test_batches_carry_dictionary_clusters_never_the_hidden_scene(
    tiny_root: Path, dictionary: Path, tmp_path: Path
) -> None:
    cfg = _config(tiny_root, tmp_path, "none", dictionary)
    data = EmotionDataModule(cfg.data, ("body",))
    _, _, z = next(iter(data.loader("train")))
    assert (z == -1).all()  # the synthetic scene is hidden: it never reaches a batch
    from deconfound.pipelines.strata import dictionary_strata

    samples = {"train": data.dataset("train").samples}
    strata, n = dictionary_strata(cfg, samples, data.info, progress=False)
    data.set_strata(strata, n)
    _, _, z = next(iter(data.loader("train")))
    assert n == 8 and torch.equal(z, torch.as_tensor(strata["train"][: len(z)]))


def test_backdoor_prediction_is_the_explicit_sum_over_prototypes(
    tiny_root: Path, dictionary: Path, tmp_path: Path
) -> None:
    cfg = _config(tiny_root, tmp_path, "backdoor", dictionary)
    result = train(cfg)
    net: BackdoorClassifier = load_module(result.best_checkpoint).model  # type: ignore[assignment]
    data = EmotionDataModule(cfg.data, net.views)
    views, _, _ = next(iter(data.loader("val")))
    with torch.no_grad():
        p = net.base.forward_features(views)
        explicit = sum(
            net.conditional_logits(p, z.expand(len(p), -1)).softmax(-1) * prior
            for z, prior in zip(net.confounders, net.prior, strict=True)
        )
        assert torch.allclose(net.probabilities(views), explicit, atol=1e-6)
        assert torch.allclose(net(views).softmax(-1), explicit, atol=1e-5)


def test_independence_weights_are_the_formula() -> None:
    rng = np.random.default_rng(0)
    z, y = rng.integers(0, 4, 500), rng.integers(0, 3, 500)
    y[z == 0] = 1  # a cluster that holds one class only
    w = independence_weights(z, y, (4, 3))
    for a in range(4):
        for b in range(3):
            joint = np.mean((z == a) & (y == b))
            expected = np.mean(z == a) * np.mean(y == b) / joint if joint else 0.0
            assert w[a, b] == pytest.approx(expected)
    z, y = rng.integers(0, 4, 500), rng.integers(0, 3, 500)  # every pair occurs
    w = independence_weights(z, y, (4, 3))
    weighted = np.zeros((4, 3))
    np.add.at(weighted, (z, y), w[z, y])
    # re-weighted, the pairs' shares factorise into P(z) P(y)
    assert weighted / weighted.sum() == pytest.approx(
        np.outer(np.bincount(z) / 500, np.bincount(y) / 500), abs=1e-9
    )


def test_the_reweighted_accuracy_weighs_pairs_by_p_y_p_z_over_p_yz() -> None:
    rng = np.random.default_rng(1)
    z, y = rng.integers(0, 3, 300), rng.integers(0, 4, 300)
    pred = np.where(rng.random(300) < 0.6, y, rng.integers(0, 4, 300))
    metric = ReweightedAccuracy()
    for part in np.array_split(np.arange(300), 4):
        metric.update(*(torch.as_tensor(a[part]) for a in (pred, y, z)))
    w = independence_weights(z, y, (3, 4))[z, y]
    expected = np.sum(w * (pred == y)) / np.sum(w)
    assert float(metric.compute()) == pytest.approx(expected, abs=1e-6)


def test_the_worst_group_accuracy_is_the_lowest_label_by_alignment_group() -> None:
    # two contexts: context 0 mostly label 0, context 1 mostly label 1
    z = torch.tensor([0] * 8 + [0] * 5 + [1] * 9 + [1] * 6 + [1] * 2)
    y = torch.tensor([0] * 8 + [1] * 5 + [1] * 9 + [0] * 6 + [2] * 2)
    correct = torch.tensor(
        [1] * 8  # (0, aligned) 8/8
        + [1, 1, 0, 0, 0]  # (1, conflicting) 2/5
        + [1] * 8
        + [0]  # (1, aligned) 8/9
        + [1, 1, 1, 0, 0, 0]  # (0, conflicting) 3/6
        + [0, 0]  # (2, conflicting): 2 samples, below the minimum count
    ).bool()
    assert float(worst_group_accuracy(correct, y, z, min_count=5)) == pytest.approx(2 / 5)
    assert float(worst_group_accuracy(correct, y, z, min_count=2)) == 0.0
    assert worst_group_accuracy(correct, y, z, min_count=50).isnan()
    metric = WorstGroupAccuracy(min_count=5)
    pred = torch.where(correct, y, (y + 1) % 3)
    for part in (slice(0, 10), slice(10, None)):
        metric.update(pred[part], y[part], z[part])
    assert float(metric.compute()) == pytest.approx(2 / 5)


def test_a_run_keeps_the_best_checkpoint_of_every_selection_rule(
    tiny_root: Path, dictionary: Path, tmp_path: Path
) -> None:
    cfg = _config(
        tiny_root,
        tmp_path,
        "none",
        dictionary,
        "trainer.max_epochs=3",
        "trainer.keep_best_by=[plain, reweighted, worst_group]",
    )
    result = train(cfg)
    assert set(result.by_rule) == {"plain", "reweighted", "worst_group", "last"}
    assert result.by_rule["plain"] == result.best_checkpoint
    assert result.by_rule["reweighted"].name == "best-reweighted.ckpt"
    logged = _epoch_metrics(result.run_dir)
    for rule, key in (
        ("reweighted", "val/accuracy_reweighted"),
        ("worst_group", "val/accuracy_worst_group"),
    ):
        state = torch.load(result.by_rule[rule], weights_only=False)
        best_epoch = max(logged, key=lambda e: logged[e][key])
        assert state["epoch"] == best_epoch  # saved at the end of its (first) best epoch
    with pytest.raises(Exception, match="keep_best_by"):
        load_config("emotnet_synthetic", ["trainer.keep_best_by=[sharpest]"])


def _epoch_metrics(run_dir: Path) -> dict[int, dict[str, float]]:
    """Each epoch's validation scores from the run's metrics.csv."""
    import csv

    (path,) = run_dir.glob("logs/version_*/metrics.csv")
    out: dict[int, dict[str, float]] = {}
    for row in csv.DictReader(path.open()):
        if row.get("val/accuracy"):
            out[int(row["epoch"])] = {
                k: float(v) for k, v in row.items() if k.startswith("val/") and v
            }
    return out


def test_groupdro_keeps_its_group_weights_in_the_checkpoint(
    tiny_root: Path, dictionary: Path, tmp_path: Path
) -> None:
    cfg = _config(tiny_root, tmp_path, "groupdro", dictionary, "model.intervention_args={eta: 0.5}")
    result = train(cfg)
    state = torch.load(result.run_dir / "checkpoints" / "last.ckpt", weights_only=False)
    q = state["method_state"]["q"]
    assert q.shape == (8 * 7,) and q.sum().item() == pytest.approx(1.0)
    assert q.max() > 1.5 / len(q)  # moved away from uniform towards the worst groups
    method = GroupDRO(cfg.model)
    method.load_state(state["method_state"])
    assert torch.equal(method.q, q)


@pytest.mark.parametrize("fusion", ["harmonic", "sum"])
def test_clef_predicts_the_factual_minus_the_counterfactual_outcome(
    fusion: str, tiny_root: Path, dictionary: Path, tmp_path: Path
) -> None:
    cfg = _config(
        tiny_root, tmp_path, "clef", dictionary, f"model.intervention_args={{fusion: {fusion}}}"
    )
    net: CounterfactualClassifier = load_module(train(cfg).best_checkpoint).model  # type: ignore[assignment]
    assert net.reference.abs().sum() > 0  # the running mean of the main branch's logits
    data = EmotionDataModule(cfg.data, net.views)
    views, _, _ = next(iter(data.loader("val")))
    with torch.no_grad():
        z_m, z_c = net.main(views), net.context(views)
        fused, _ = net.eval().factual(views)
        assert torch.allclose(fused, fuse(z_m, z_c, fusion))
        tie = net(views)
        assert torch.allclose(tie, fused - fuse(net.reference, z_c, fusion), atol=1e-6)
        if fusion == "sum":  # the context branch cancels: the main branch's ranking
            assert torch.allclose(tie, z_m - net.reference, atol=1e-5)


def test_the_harmonic_counterfactual_changes_the_prediction() -> None:
    """The context branch favours class 1: the factual outcome says 1, the main branch 1 by a
    hair; subtracting the counterfactual (person at its reference, context kept) says 0. With
    the sum the context branch cancels and the main branch's choice stands."""
    z_m, z_c, reference = torch.tensor([2.0, 2.1]), torch.tensor([-3.0, 3.0]), torch.zeros(2)
    assert fuse(z_m, z_c, "harmonic").argmax() == 1 and z_m.argmax() == 1
    tie = fuse(z_m, z_c, "harmonic") - fuse(reference, z_c, "harmonic")
    assert tie.argmax() == 0
    assert (fuse(z_m, z_c, "sum") - fuse(reference, z_c, "sum")).argmax() == 1
    p = torch.sigmoid(z_m) * torch.sigmoid(z_c)
    assert torch.allclose(fuse(z_m, z_c, "harmonic"), torch.log(p / (1 + p)))


def test_paste_redraws_training_pictures_from_the_seed_and_epoch(
    tiny_root: Path, dictionary: Path, tmp_path: Path
) -> None:
    cfg = _config(tiny_root, tmp_path, "paste", dictionary)
    module_cfg = cfg.to_dict()
    from deconfound.engine.module import EmotionModule
    from deconfound.engine.run import prepare_data

    module = EmotionModule(module_cfg)
    data = EmotionDataModule(cfg.data, module.model.views)
    prepare_data(cfg, module, data)
    train_set = data.dataset("train")
    plain = train_set[3][0]["body"]
    first, again, later = (train_set[(3, e)][0]["whole"] for e in (0, 0, 1))
    assert torch.equal(first, again) and not torch.equal(first, later)
    assert not torch.equal(train_set[(3, 0)][0]["whole"], train_set[3][0]["whole"])
    assert plain.shape == train_set[(3, 0)][0]["body"].shape


def test_augmentation_applies_to_training_only_and_follows_the_seed(tiny_root: Path) -> None:
    cfg = load_config(
        "emotnet_synthetic",
        [f"data.root={tiny_root}", "data.augment={flip_p: 1.0}", "data.cache=true"],
    )
    data = EmotionDataModule(cfg.data, ("body", "whole"))
    train_set, val = data.dataset("train"), data.dataset("val")
    plain = train_set[5][0]["whole"]
    flipped = train_set[(5, 0)][0]["whole"]  # as the training sampler indexes it
    assert torch.equal(flipped, plain.flip(-1))
    assert train_set[5][0]["whole"] is train_set[5][0]["whole"]  # the cache is left untouched
    assert val.augment is None and torch.equal(val[0][0]["whole"], val[0][0]["whole"])
    order = list(data.loader("train", shuffle=True, seed=1).sampler)
    assert all(isinstance(k, tuple) and k[1] == 0 for k in order)  # (index, epoch) keys


def test_evaluation_splits_are_framed_at_the_training_crops_scale(tiny_root: Path) -> None:
    crop = "data.augment={crop_scale: [0.64, 0.64]}"
    cfg = load_config("emotnet_synthetic", [f"data.root={tiny_root}", crop, "data.cache=true"])
    data = EmotionDataModule(cfg.data, ("body", "whole"))
    val, train_set = data.dataset("val"), data.dataset("train")
    whole = make_views(val.samples[0], val.sizes)["whole"]
    framed = val[0][0]["whole"]
    assert torch.equal(framed, data.augment.frame({"whole": whole})["whole"])
    assert not torch.equal(framed, whole)
    assert not val.augmented and train_set.augmented  # val is never cropped at random
    plain = load_config("emotnet_synthetic", [f"data.root={tiny_root}", "data.cache=true"])
    assert EmotionDataModule(plain.data, ("whole",)).dataset("val").augment is None


def test_methods_stand_below_the_engine() -> None:
    """A method is written against methods/base.py and the modules below it: no file of
    methods/ imports the engine, the pipelines or the CLI, not even lazily or for type hints
    (the engine imports the registry, so that would be a circle across floors)."""
    import ast

    import deconfound.methods

    above = ("deconfound.engine", "deconfound.pipelines", "deconfound.cli")
    found = []
    for path in sorted(Path(deconfound.methods.__file__).parent.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text())):
            names = []
            if isinstance(node, ast.ImportFrom) and node.module:
                names = [node.module]
            elif isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            found += [f"{path.name}: {n}" for n in names if n.startswith(above)]
    assert found == []


def test_person_only_reads_the_person_stream_as_backdoor_does() -> None:
    from deconfound.config import ModelConfig
    from deconfound.methods import create_model

    args = {"backbone": "small_cnn"}
    plain = create_model(ModelConfig(name="emotnet", args=args), 7, load_weights=False)
    alone = create_model(
        ModelConfig(name="emotnet", args=args, intervention="person_only"), 7, load_weights=False
    )
    assert plain.views == ("body", "whole") and alone.views == ("body",)
    body = plain.base.body  # EMOT-Net's body stream: the same backbone, as a separate copy
    assert alone.base.num_features == body.num_features
    assert sum(p.numel() for p in alone.base.parameters()) == sum(
        p.numel() for p in body.parameters()
    )

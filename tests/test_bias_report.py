"""`deconfound bias-report`: its numbers against direct computations on the tiny set (cluster
counts, NMI, Cramér's V, the probe, chance, the model's confusions), the self-contained page,
report.json, the command with and without a dictionary and a checkpoint, one-line errors."""

from __future__ import annotations

import base64
import csv
import json
import re
import shutil
from dataclasses import replace
from datetime import UTC, datetime
from html import escape
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import run_overrides
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import (
    accuracy_score,
    adjusted_mutual_info_score,
    adjusted_rand_score,
    average_precision_score,
    normalized_mutual_info_score,
)
from sklearn.multiclass import OneVsRestClassifier
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

import deconfound
from deconfound.causal import ConfounderDictionary
from deconfound.cli import main
from deconfound.config import Config, DictionaryConfig, load_config
from deconfound.data import READERS, DatasetInfo, Sample
from deconfound.data.synthetic import SyntheticReader
from deconfound.diagnostics import bias as bias_module
from deconfound.diagnostics import report as report_module
from deconfound.diagnostics.report import bias_report
from deconfound.engine import EmotionModule
from deconfound.errors import DeconfoundError
from deconfound.pipelines.dictionary import build_dictionary, embed_contexts, scene_backbone

SPLITS = ["val", "test_iid", "test_balanced", "test_anti"]
CLUSTERS = 14


def _overrides(root: Path, out: Path) -> list[str]:
    return [
        *run_overrides(root, out),
        f"model.dictionary={out / 'dict.safetensors'}",
        "dictionary.backbone=small_cnn",
        "dictionary.weights=null",
        f"dictionary.num_clusters={CLUSTERS}",
        "dictionary.image_size=32",
    ]


def _checkpoint(config: dict, path: Path) -> Path:
    """A checkpoint of an untrained model, as `deconfound train` would save it."""
    torch.manual_seed(0)
    module = EmotionModule(config, load_weights=False)
    torch.save({"hyper_parameters": {"config": config}, "state_dict": module.state_dict()}, path)
    return path


@pytest.fixture(scope="module")
def made(tiny_root: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    """A dictionary built from the tiny set, an EMOT-Net checkpoint for it, and the report the
    command wrote with both."""
    out = tmp_path_factory.mktemp("report")
    overrides = _overrides(tiny_root, out)
    cfg = load_config("emotnet_synthetic", overrides)
    built = build_dictionary(cfg, progress=False)
    ckpt = _checkpoint(cfg.to_dict(), out / "model.ckpt")
    argv = ["bias-report", "--config", "emotnet_synthetic", "--out", str(out / "report")]
    embedded: list[int] = []  # images the report's scene backbone embeds
    with pytest.MonkeyPatch.context() as mp:
        scene_backbone = report_module.scene_backbone

        def counting(d: DictionaryConfig, *args: object) -> torch.nn.Module:
            backbone = scene_backbone(d, *args)
            forward = backbone.forward
            backbone.forward = lambda x: embedded.append(len(x)) or forward(x)
            return backbone

        mp.setattr(report_module, "scene_backbone", counting)
        extra = ["--dictionary", str(built.path), "--checkpoint", str(ckpt)]
        assert main([*argv, *extra, *overrides]) == 0
    numbers = json.loads((out / "report" / "report.json").read_text())
    return {
        "cfg": cfg,
        "built": built,
        "ckpt": ckpt,
        "out": out / "report",
        "numbers": numbers,
        "embedded": sum(embedded),
    }


def _truth(root: Path, split: str) -> tuple[np.ndarray, np.ndarray]:
    samples = SyntheticReader(root).samples(split)
    return np.array([s.labels[0] for s in samples]), np.array([s.confounder for s in samples])


def test_cluster_counts_and_dependence_match_a_direct_computation(made: dict, tiny_root: Path):
    clusters = made["numbers"]["clusters"]
    assignments = made["built"].assignments  # the build's K-means labels of the same samples
    y, scene = _truth(tiny_root, "train")
    counts = np.bincount(assignments * 7 + y, minlength=CLUSTERS * 7).reshape(CLUSTERS, 7)
    assert clusters["source"] == "dictionary" and clusters["counts"] == counts.tolist()
    assert clusters["sizes"] == np.bincount(assignments, minlength=CLUSTERS).tolist()
    assert clusters["nmi"] == pytest.approx(normalized_mutual_info_score(y, assignments))
    assert clusters["ami"] == pytest.approx(adjusted_mutual_info_score(y, assignments))
    table = counts[counts.sum(axis=1) > 0]
    expected = np.outer(table.sum(axis=1), table.sum(axis=0)) / len(y)
    chi2 = ((table - expected) ** 2 / expected).sum()
    assert clusters["chi2"] == pytest.approx(chi2)
    assert clusters["cramers_v"] == pytest.approx(np.sqrt(chi2 / (len(y) * (7 - 1))))
    assert clusters["purity"] == pytest.approx(counts.max(axis=1).sum() / len(y))
    assert clusters["ari_vs_context"] == pytest.approx(adjusted_rand_score(scene, assignments))
    assert clusters["nmi_context_emotion"] == pytest.approx(normalized_mutual_info_score(y, scene))


def test_the_dictionary_builds_cached_training_embeddings_are_reused(made: dict) -> None:
    assert made["embedded"] == 70 + 140 + 70 + 70  # only the other splits' images


def test_probe_and_chance_rates_match_sklearn(made: dict, tiny_root: Path, tmp_path: Path):
    cfg: Config = made["cfg"]
    reader = SyntheticReader(tiny_root)
    backbone = scene_backbone(cfg.dictionary)
    x = {}
    for split in ["train", "val", "test_anti"]:
        samples = reader.samples(split)
        x[split], _ = embed_contexts(
            cfg, samples, reader.info, backbone, tmp_path / split, split=split, progress=False
        )
    y = {split: _truth(tiny_root, split)[0] for split in x}
    probe = make_pipeline(StandardScaler(), LogisticRegression(C=1.0, max_iter=2000))
    probe.fit(x["train"], y["train"])
    majority = np.bincount(y["train"]).argmax()
    numbers = made["numbers"]["probe"]
    assert numbers["majority_class"] == reader.info.classes[majority]
    for split in x:
        got = numbers["splits"][split]
        assert got["n"] == len(y[split])
        assert got["accuracy"] == pytest.approx(accuracy_score(y[split], probe.predict(x[split])))
        assert got["majority"] == pytest.approx(np.mean(y[split] == majority))
        assert got["uniform"] == pytest.approx(1 / 7)
    # the tiny set is confounded: the context alone beats chance on the training distribution
    assert numbers["splits"]["test_iid"]["accuracy"] > 2 * numbers["splits"]["test_iid"]["uniform"]


def test_model_scores_every_split_and_its_confusions_agree(made: dict, tiny_root: Path) -> None:
    model = made["numbers"]["models"][0]
    assert model["checkpoint"] == str(made["ckpt"]) and list(model["splits"]) == SPLITS
    for split in SPLITS:
        y, _ = _truth(tiny_root, split)
        matrix = np.array(model["confusion"][split])
        assert matrix.sum(axis=1).tolist() == np.bincount(y, minlength=7).tolist()
        accuracy = model["splits"][split]["accuracy"]  # engine.evaluate's
        assert np.trace(matrix) / len(y) == pytest.approx(accuracy, abs=1e-6)


def test_bias_without_test_anti_equals_what_evaluate_measures(
    made: dict, capsys: pytest.CaptureFixture[str]
) -> None:
    """The report's per-(cluster, label) scores and context-swap gaps are those of
    `deconfound evaluate --dictionary --swap-gap` on the same checkpoint and dictionary."""
    model = made["numbers"]["models"][0]
    argv = ["evaluate", "--checkpoint", str(made["ckpt"]), "--split", "val", "--split", "test_anti"]
    capsys.readouterr()
    assert main([*argv, "--json", "--swap-gap", "--dictionary", str(made["built"].path)]) == 0
    evaluated = json.loads(capsys.readouterr().out)
    for split in ("val", "test_anti"):
        for key in ("accuracy_reweighted", "accuracy_worst_group"):
            assert model["groups"][split][key] == pytest.approx(evaluated[split][key], abs=1e-6)
    assert list(model["swap_gap"]) == SPLITS[1:]  # the test splits
    gap, theirs = model["swap_gap"]["test_anti"], evaluated["test_anti"]["swap_gap"]
    assert gap["gap"] == pytest.approx(gap["own"] - gap["swapped"])
    assert gap["gap"] == pytest.approx(theirs["gap"]) and gap["samples"] == theirs["samples"]
    assert model["swap_gap_missing"] is None
    assert "Bias without a test_anti split" in (made["out"] / "report.html").read_text()


def test_a_dfr_model_is_reported_without_its_refitting_half(made: dict, tmp_path: Path) -> None:
    """DFR refits on half of the validation split: the report scores the other half only,
    as evaluate does, and its per-split numbers agree in size."""
    config = made["cfg"].to_dict()
    config["model"]["intervention"] = "dfr"
    ckpt = _checkpoint(config, tmp_path / "dfr.ckpt")
    report = bias_report(
        made["cfg"], out_dir=tmp_path / "report", dictionary=made["built"].path,
        checkpoints=[ckpt], progress=False,
    )  # fmt: skip
    model = report.numbers["models"][0]
    assert np.array(model["confusion"]["val"]).sum() == 70 - 35  # the scored half
    assert np.array(model["confusion"]["test_anti"]).sum() == 70
    assert set(model["groups"]) == set(SPLITS) and model["scene_errors"] is not None


def test_page_is_self_contained_with_every_section_and_json_parses(made: dict) -> None:
    out, numbers = made["out"], made["numbers"]
    html = (out / "report.html").read_text()
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", html, re.I)
    assert "<script" not in html and "<link" not in html and "@import" not in html
    sources = re.findall(r'<img src="([^"]+)"', html)
    figures = numbers["figures"]
    assert len(sources) == len(figures) == 3 + len(SPLITS)  # clusters, probe, splits, 4 confusions
    for src in sources:
        prefix = "data:image/png;base64,"
        assert src.startswith(prefix)
        assert base64.b64decode(src[len(prefix) :])[:8] == b"\x89PNG\r\n\x1a\n"
    for name in figures.values():
        assert (out / name).read_bytes()[:4] == b"\x89PNG"
    for section in ("clusters", "probe", "model", "made"):
        assert f'<section id="{section}">' in html
    for heading in ("Emotions per context cluster", "What the context alone predicts"):
        assert heading in html
    assert numbers["format"] == "deconfound-bias-report/2"
    assert numbers["dataset"]["splits"] == {"train": 420, "val": 70, "test_iid": 140,
                                            "test_balanced": 70, "test_anti": 70}  # fmt: skip
    assert not list(out.glob(".*.tmp"))


def test_intervals_bracket_each_figure_and_match_a_bootstrap_by_hand(made: dict, tiny_root: Path):
    numbers = made["numbers"]
    assert numbers["interval"]["level"] == 0.95 and numbers["interval"]["resamples"]["mAP"] > 0
    clusters, assignments = numbers["clusters"], made["built"].assignments
    y, _ = _truth(tiny_root, "train")
    rng = np.random.default_rng(1)  # other draws than the report's: agreement within noise
    draws = [rng.integers(0, len(y), len(y)) for _ in range(1000)]
    boot = [normalized_mutual_info_score(y[i], assignments[i]) for i in draws]
    by_hand = 2 * clusters["nmi"] - np.percentile(boot, [97.5, 2.5])  # the basic interval
    assert clusters["nmi_interval"] == pytest.approx(by_hand, abs=0.015)
    for key in ("nmi", "cramers_v"):
        low, high = clusters[f"{key}_interval"]
        assert low < clusters[key] < high
    probe, model = numbers["probe"]["splits"], numbers["models"][0]
    assert probe["train"]["interval"] is None  # the split the probe was fitted on
    for split in SPLITS:
        for value, (low, high) in [
            (probe[split]["accuracy"], probe[split]["interval"]),
            (model["splits"][split]["accuracy"], model["intervals"][split]),
        ]:
            n = len(_truth(tiny_root, split)[0])
            spread = 2 * 1.96 * np.sqrt(max(value * (1 - value), 1 / n) / n)  # binomial's
            assert low <= value <= high and 0.6 * spread < high - low < 1.4 * spread


def test_score_interval_of_an_accuracy_is_the_binomial_one() -> None:
    from scipy.stats import binomtest

    rng = np.random.default_rng(0)
    truth = rng.integers(0, 3, 2000)
    right = rng.random(2000) < 0.7
    scores = np.eye(3)[np.where(right, truth, (truth + 1) % 3)]
    low, high = bias_module.score_interval(scores, truth, "accuracy")
    wilson = binomtest(int(right.sum()), 2000).proportion_ci(0.95, method="wilson")
    assert (low, high) == pytest.approx((wilson.low, wilson.high), abs=0.004)
    assert bias_module.score_interval(scores[:1], truth[:1], "accuracy") is None


def test_provenance_names_the_command_config_versions_and_date(made: dict) -> None:
    made_by = made["numbers"]["provenance"]
    assert made_by["command"].startswith("deconfound bias-report --config emotnet_synthetic --out")
    assert f"--checkpoint {made['ckpt']}" in made_by["command"]
    assert made_by["config"] == json.loads(json.dumps(made["cfg"].to_dict()))
    assert made_by["deconfound"] == deconfound.__version__ and made_by["torch"] == torch.__version__
    created = datetime.fromisoformat(made_by["created"])
    assert abs((datetime.now(UTC) - created).total_seconds()) < 3600
    html = (made["out"] / "report.html").read_text()
    assert escape(made_by["command"]) in html and "The resolved config</summary>" in html


def test_command_without_dictionary_or_checkpoint(
    made: dict, tiny_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = Path(shutil.copytree(made["out"], tmp_path / "out"))  # an earlier report's folder
    argv = ["bias-report", "--config", "emotnet_synthetic", "--out", str(out)]
    assert main([*argv, *_overrides(tiny_root, tmp_path)]) == 0
    printed = capsys.readouterr().out
    assert f"context clusters: {CLUSTERS} (kmeans)" in printed
    assert "context-only probe accuracy: train" in printed and "model accuracy" not in printed
    numbers = json.loads((out / "report.json").read_text())
    assert numbers["models"] == [] and numbers["clusters"]["dictionary"] is None
    # K-means as the build makes it: the same clusters as the dictionary's
    assert numbers["clusters"]["counts"] == made["built"].cluster_counts.tolist()
    assert sorted(p.name for p in out.glob("*.png")) == ["clusters.png", "probe.png"]
    assert "No checkpoint given" in (out / "report.html").read_text()


class _MultiLabelReader(SyntheticReader):
    """The tiny synthetic set relabelled as a multi-label set: emotion e gives labels
    {e mod 4, (e + 1) mod 4}."""

    info = DatasetInfo("multi", ("a", "b", "c", "d"), task="multilabel", splits=("train", *SPLITS))

    def samples(self, split: str) -> list[Sample]:
        return [
            replace(s, labels=(s.labels[0] % 4, (s.labels[0] + 1) % 4))
            for s in super().samples(split)
        ]


def test_multilabel_report_scores_map_against_prevalence(
    tiny_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(READERS, "multi", _MultiLabelReader)
    overrides = [*_overrides(tiny_root, tmp_path), "data.dataset=multi", "data.test_splits=[]"]
    cfg = load_config("emotnet_synthetic", overrides)
    ckpt = _checkpoint(cfg.to_dict(), tmp_path / "multi.ckpt")
    report = bias_report(cfg, out_dir=tmp_path / "out", checkpoints=[ckpt], progress=False)
    x, y = report.features, report.labels
    probe = make_pipeline(
        StandardScaler(), OneVsRestClassifier(LogisticRegression(C=1.0, max_iter=2000))
    )
    probe.fit(x["train"], y["train"])
    scores = probe.predict_proba(x["val"])
    got = report.numbers["probe"]["splits"]["val"]
    assert report.numbers["probe"]["metric"] == "mAP" and got["classes"] == 4
    ap = [average_precision_score(y["val"][:, c], scores[:, c]) for c in range(4)]
    assert got["mAP"] == pytest.approx(np.mean(ap))
    assert got["prevalence"] == pytest.approx(y["val"].mean())  # 2 of 4 labels each
    low, high = got["interval"]
    assert low < got["mAP"] < high
    clusters = report.numbers["clusters"]
    assert set(clusters["per_class"]) == {"a", "b", "c", "d"}
    nmi = normalized_mutual_info_score(y["train"][:, 0], report.assignments)
    assert clusters["per_class"]["a"]["nmi"] == pytest.approx(nmi)
    model = report.numbers["models"][0]
    per_class = model["class_ap"]["val"]  # scikit-learn's, on the model's own scores
    mean_ap = np.mean([v["ap"] for v in per_class.values()])
    assert model["splits"]["val"]["mAP"] == pytest.approx(mean_ap, abs=1e-5)  # evaluate's
    # scenes recorded, but no known preferred emotion of a multi-label set; no CCIM
    assert model["scene_errors"] is None and model["ccim"] is None
    assert set(report.figures) == {"clusters", "probe", "splits", "class-ap-val"}
    assert 'alt="average precision per emotion on val"' in report.html.read_text()


def _save_dictionary(path: Path, width: int) -> Path:
    meta = {"backbone": "small_cnn", "weights": None, "image_size": 32, "mask_fill": "zeros"}
    ConfounderDictionary(torch.randn(CLUSTERS, width), torch.full((CLUSTERS,), 1 / 14), meta).save(
        path
    )
    return path


def _faces_checkpoint(path: Path) -> Path:
    cfg = load_config("faces_synthetic", ["model.args.backbone=small_cnn"])
    return _checkpoint(cfg.to_dict(), path)


def _one_class(root: Path) -> None:
    path = root / "annotations.csv"
    rows = list(csv.DictReader(path.open()))
    for row in rows:
        row["emotion"] = "happy" if row["split"] == "train" else row["emotion"]
    with path.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)


@pytest.mark.parametrize(
    ("case", "message"),
    [
        (
            "wrong-width",
            r"deconfound: error: \S+d\.safetensors: dictionary width is 64 but its scene backbone "
            r"small_cnn embeds 128-d features; rebuild it with `deconfound dictionary build`",
        ),
        (
            "missing-checkpoint",
            r"deconfound: error: checkpoint \S+nope\.ckpt not found; give a \.ckpt file",
        ),
        (
            "other-dataset",
            r"deconfound: error: checkpoint \S+faces\.ckpt was trained on data set "
            r"'synthetic_faces', not on 'synthetic'; give the config of its data set",
        ),
        (
            "one-class",
            r"deconfound: error: \S+: split 'train' has 420 samples of class\(es\) happy only; "
            r"a bias report needs at least two classes present",
        ),
    ],
)
def test_bad_input_is_one_line_and_writes_nothing(
    case: str,
    message: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture,
    request: pytest.FixtureRequest,
) -> None:
    root = request.getfixturevalue("tiny_copy" if case == "one-class" else "tiny_root")
    out = tmp_path / "report"
    argv = ["bias-report", "--out", str(out), *_overrides(root, tmp_path)]
    if case == "wrong-width":
        argv += ["--dictionary", str(_save_dictionary(tmp_path / "d.safetensors", 64))]
    elif case == "missing-checkpoint":
        argv += ["--checkpoint", str(tmp_path / "nope.ckpt")]
    elif case == "other-dataset":
        argv += ["--checkpoint", str(_faces_checkpoint(tmp_path / "faces.ckpt"))]
    else:
        _one_class(root)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and re.match(message, err), err
    assert not out.exists()


def test_out_that_is_a_file_is_refused(tiny_root: Path, tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    with pytest.raises(DeconfoundError, match="is a file; give a folder for the report"):
        bias_report("emotnet_synthetic", out_dir=tmp_path / "file", progress=False)

"""The command line as a user runs it: synth, train, evaluate, demo, and one-line errors."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import run_overrides
from scipy import stats

from deconfound.cli import main
from deconfound.config import ModelConfig
from deconfound.methods import create_model
from deconfound.pipelines.benchmark import summarise


def test_help_lists_the_commands() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "deconfound.cli", "--help"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    for command in ("synth", "train", "evaluate", "demo", "models"):
        assert command in out


def test_every_help_text_is_plain_text() -> None:
    import argparse

    from deconfound.cli import build_parser

    def parsers(parser: argparse.ArgumentParser) -> list[argparse.ArgumentParser]:
        subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
        return [parser] + [q for a in subs for p in a.choices.values() for q in parsers(p)]

    found = parsers(build_parser())
    assert len(found) > 12  # every command and subcommand
    for parser in found:
        text = parser.format_help()
        assert "%%" not in text and "``" not in text and ":func:" not in text, parser.prog


def test_models_lists_every_base_model_with_its_ccim_overhead(
    capsys: pytest.CaptureFixture,
) -> None:
    assert main(["models", "--backbone", "small_cnn", "--dictionary", "32", "128"]) == 0
    lines = capsys.readouterr().out.splitlines()
    header = lines[0].split()
    rows = {line.split()[0]: line.split()[-len(header) + 2 :] for line in lines[1:-1]}
    assert set(rows) == {"emotnet", "caernet", "gnncnn", "emoticon"}
    columns = header[2:]  # parameters, +ccim_dot, +ccim_add, ...
    assert columns[:3] == ["parameters", "+ccim_dot", "+ccim_add"]
    emotnet = create_model(ModelConfig(args={"backbone": "small_cnn"}), 7)
    assert rows["emotnet"][0] == f"{sum(p.numel() for p in emotnet.parameters()):,}"
    ccim = [columns.index("+ccim_dot"), columns.index("+ccim_add")]
    assert all(r[i].startswith("+") and r[i] != "+0" for r in rows.values() for i in ccim)
    assert all(r[columns.index("+paste")] == "+0" for r in rows.values())  # data, not weights


def test_synth_writes_a_set_and_reports_rho(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code = main(
        [
            "synth",
            "--out",
            str(tmp_path / "s"),
            "--rho",
            "0.7",
            "--seed",
            "4",
            "--image-size",
            "48",
            "--size",
            "train=40",
            "--size",
            "val=0",
            "--size",
            "test_iid=0",
            "--size",
            "test_balanced=0",
            "--size",
            "test_anti=7",
            "--size",
            "scenes=0",
        ]
    )
    assert code == 0
    meta = json.loads((tmp_path / "s" / "meta.json").read_text())
    assert meta["config"]["rho"] == 0.7 and meta["measured_rho"]["test_anti"] == 0.0
    assert len(list((tmp_path / "s" / "images" / "train").glob("*.png"))) == 40
    assert "measured rho" in capsys.readouterr().out


def test_train_then_evaluate(
    tiny_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    assert (
        main(
            [
                "train",
                "--config",
                "configs/emotnet_synthetic.yaml",
                *run_overrides(tiny_root, tmp_path, epochs=1),
            ]
        )
        == 0
    )
    ckpt = tmp_path / "tiny" / "checkpoints" / "best.ckpt"
    assert ckpt.is_file() and "best checkpoint" in capsys.readouterr().out
    assert main(["evaluate", "--checkpoint", str(ckpt), "--split", "test_anti", "--json"]) == 0
    results = json.loads(capsys.readouterr().out)
    assert set(results) == {"test_anti"} and 0 <= results["test_anti"]["accuracy"] <= 1
    assert main(["evaluate", "--checkpoint", str(ckpt)]) == 0
    table = capsys.readouterr().out
    assert "test_iid" in table and "test_balanced" in table


def test_demo_compares_methods_over_seeds(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "demo"
    argv = [
        "demo",
        "--out",
        str(out),
        "--quick",
        "--seed",
        "2",
        "--seeds",
        "2",
        "--methods",
        "none",
        "ccim_dot",
        "paste",
        "dfr",
        "jtt",
        "--dictionary",
        "imagenet",
        "oracle",
        "--",
        "data.synthetic.image_size=48",
        "data.view_sizes={body: 32, whole: 32}",
        "data.synthetic.sizes={train: 140, val: 35, test_iid: 35, test_balanced: 35, "
        "test_anti: 35, scenes: 70}",
        "dictionary.num_clusters=8",
        "dictionary.image_size=32",
        "trainer.max_epochs=1",
        "trainer.progress_bar=false",
        "scenes.data.view_sizes={whole: 32}",
        "scenes.trainer.max_epochs=1",
        "scenes.trainer.progress_bar=false",
    ]
    assert main(argv) == 0
    results = json.loads((out / "results.json").read_text())
    every = {(r["dictionary"], r["method"], r["trained_on"], r["seed"]): r for r in results["runs"]}
    methods = ("none", "ccim_dot", "paste", "dfr", "jtt")
    kinds = ("confounded", "unconfounded")
    sources = ("imagenet", "oracle")
    assert set(every) == {
        (d, m, k, s) for d in sources for m in methods for k in kinds for s in (2, 3)
    }
    assert results["settings"]["seeds"] == [2, 3]
    dictionary = results["settings"]["rho0.8"]["imagenet"]
    assert dictionary["num_clusters"] == 8 and dictionary["backbone"] == "mobilenet_v2"
    assert dictionary["weights"] == "IMAGENET1K_V1"
    assert results["settings"]["rho0.8"]["oracle"]["backbone"] == "small_cnn"  # the scene net's
    summary = summarise(results)["0.8"]
    for source in sources:  # every cell of both dictionaries' tables, under every rule
        for rule in ("plain", "reweighted", "worst_group", "last"):
            for method in methods:
                for kind, rows in (("confounded", "methods"), ("unconfounded", "ceilings")):
                    accs = [
                        every[source, method, kind, s]["by_rule"][rule]["test_anti"]["accuracy"]
                        for s in (2, 3)
                    ]
                    cell = summary[source]["rules"][rule][rows][method]["test_anti"]
                    assert cell["mean"] == pytest.approx(np.mean(accs))
                    assert cell["std"] == pytest.approx(np.std(accs, ddof=1))
                    half = stats.t.ppf(0.975, 1) * np.std(accs, ddof=1) / np.sqrt(2)
                    ci = [np.mean(accs) - half, np.mean(accs) + half]
                    assert cell["ci95"] == pytest.approx(ci)
    runs = {k[1:]: r for k, r in every.items() if k[0] == "imagenet"}
    section = summary["imagenet"]["rules"]

    def acc(method: str, kind: str, seed: int, rule: str = "plain") -> float:
        return runs[method, kind, seed]["by_rule"][rule]["test_anti"]["accuracy"]

    assert all(r["metrics"] == r["by_rule"]["plain"] for r in every.values())
    plain = section["plain"]
    diffs = [acc("paste", "confounded", s) - acc("none", "confounded", s) for s in (2, 3)]
    assert plain["methods"]["paste"]["test_anti"]["vs_none"]["mean"] == pytest.approx(
        np.mean(diffs)
    )
    for key, ceiling in (("gap_own", "paste"), ("gap_reference", "none")):
        gap = np.mean(
            [acc(ceiling, "unconfounded", s) - acc("none", "confounded", s) for s in (2, 3)]
        )
        closed = plain["methods"]["paste"].get(key)
        if gap > 0:
            assert closed["mean"] == pytest.approx(np.mean(diffs) / gap)
            assert closed["ci95"][0] <= closed["mean"] <= closed["ci95"][1]
        else:
            assert closed is None
    table = (out / "results.md").read_text()
    assert f"{plain['methods']['paste']['test_anti']['mean']:.3f} ± " in table
    last = section["last"]["methods"]["ccim_dot"]["test_anti"]
    assert f"{last['mean']:.3f} ± {last['std']:.3f}" in table
    assert "| reference |" in table and "paste (ceiling)" in table
    for png in ("results.png", "rho0.8/imagenet/clusters.png"):
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(list((out / "data").glob("synthetic-rho0.8-seed2-*"))) == 1
    printed = capsys.readouterr().out
    assert "run 1/40: rho=0.8 imagenet none, seed 2" in printed and "predict" in printed
    report = next(line for line in printed.splitlines() if "bias-report" in line)
    for method in methods:  # side by side; not the ceilings
        assert f"--checkpoint {runs[method, 'confounded', 2]['checkpoint']} " in report
        assert runs[method, "unconfounded", 2]["checkpoint"] not in report

    # a second run reuses the data and the finished runs
    assert main([argv[0], "--methods", "none", *argv[1:]]) == 0
    again = json.loads((out / "results.json").read_text())
    assert [r for r in again["runs"] if r["method"] == "none"] == [
        r for r in results["runs"] if r["method"] == "none"
    ]


def test_iern_demo_compares_the_plain_classifier_with_iern(
    tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    out = tmp_path / "demo"
    argv = [
        "demo",
        "--method",
        "iern",
        "--out",
        str(out),
        "--fold",
        "bias100v2",
        "--seeds",
        "1",
        "data.synthetic={size: 32, subjects: 4, frames: 1}",
        "data.view_sizes={face: 32}",
        "model.args={view: face, backbone: small_cnn}",
        "model.intervention_args={strata: 3, channels: 32, map_size: 2}",
        "trainer.max_epochs=1",
        "trainer.progress_bar=false",
    ]
    assert main(argv) == 0
    results = json.loads((out / "faces" / "results.json").read_text())
    assert list(results["methods"]) == ["none", "iern"]  # always against the plain classifier
    assert results["settings"]["fold"] == "bias100v2"
    for r in results["methods"].values():
        assert list(r["mean"]) == ["val", "test"]
        assert 0 <= r["mean"]["test"]["accuracy"] <= 1
    assert (out / "faces" / "results.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert len(list((out / "data").glob("synthetic-faces-seed0-*"))) == 1
    assert "iern" in capsys.readouterr().out


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["train", "--config", "nope"], "config 'nope' not found"),
        (["train", "--config", "emotnet_synthetic", "trainer.epochs=2"], "unknown key"),
        (["evaluate", "--checkpoint", "missing.ckpt"], "checkpoint missing.ckpt not found"),
        (["synth", "--out", "x", "--rho", "2"], "rho must lie in [0, 1]"),
        (["synth", "--out", "x", "--size", "train=many"], "--size 'train=many'"),
        (["demo", "--methods", "none", "magic"], "unknown method 'magic'"),
        (["demo", "--methods", "iern", "ccim_dot"], "unknown method 'ccim_dot' for IERN"),
        (["demo", "--seeds", "0"], "--seeds must be at least 1"),
        (["demo", "--model", "vgg"], "unknown model 'vgg'; choose from emotnet, caernet"),
        (["dictionary", "build", "--config", "emotnet_synthetic"], "set model.dictionary=PATH"),
    ],
)
def test_user_errors_are_one_line(
    argv: list[str],
    message: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("deconfound: error:") and message in err and "\n" not in err


def test_overrides_may_follow_an_option_given_after_the_first_override(
    capsys: pytest.CaptureFixture,
) -> None:
    argv = ["train", "name=x", "--config", "emotnet_synthetic", "trainer.max_epochs=0"]
    assert main(argv) == 2
    assert "'trainer.max_epochs' must be at least 1" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        main(["train", "name=x", "--config", "emotnet_synthetic", "stray"])
    assert "unrecognized arguments: stray" in capsys.readouterr().err


def test_version_and_the_resolved_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.startswith("deconfound ")
    argv = ["train", "--config", "emotnet_synthetic", "--print-config", "model.intervention=paste"]
    assert main([*argv, "trainer.monitor=reweighted"]) == 0
    printed = capsys.readouterr().out
    assert "intervention: paste" in printed and "monitor: reweighted" in printed
    assert not list(tmp_path.iterdir())  # printed, nothing run or written


def test_progress_bars_only_on_a_terminal_and_not_after_no_progress(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import deconfound.data.synthetic as synthetic
    from deconfound.progress import show_progress

    drawn: list[bool] = []
    real = synthetic.generate
    monkeypatch.setattr(
        synthetic, "generate", lambda out, cfg, progress: drawn.append(progress) or real(out, cfg)
    )
    sizes = [f"--size={split}=7" for split in ("train", "val", "test_iid", "test_balanced")]
    argv = ["synth", *sizes, "--size=test_anti=7", "--size=scenes=7", "--image-size=32"]
    for terminal, extra in [(False, []), (True, []), (True, ["--no-progress"])]:
        monkeypatch.setattr(sys.stderr, "isatty", lambda t=terminal: t)
        assert main([*argv, "--out", str(tmp_path / f"{terminal}{extra}"), *extra]) == 0
    assert drawn == [False, True, False]
    assert show_progress()  # --no-progress held for its own command only

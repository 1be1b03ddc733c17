"""The ``deconfound`` command: synth, train, evaluate, dictionary build, bias-report, data
check, demo, benchmark, models, predict.

Options of a run live in YAML configs; any of them can be overridden as ``section.key=value``.
Errors in the user's input print one line and exit with status 2.
"""

from __future__ import annotations

import argparse
import functools
import json
import logging
import shlex
import signal
import sys
import threading
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from deconfound.errors import ConfigError, DeconfoundError, Stopped, one_line
from deconfound.io import check_writable
from deconfound.progress import allow_progress, show_progress


def _synth(args: argparse.Namespace) -> None:
    from deconfound.data.synthetic import SynthConfig, generate
    from deconfound.data.synthetic.generate import default_sizes

    sizes = default_sizes()
    for item in args.size:
        split, _, n = item.partition("=")
        if split not in sizes or not n.isdigit():
            raise DeconfoundError(
                f"--size '{item}' must be SPLIT=N with SPLIT one of {', '.join(sizes)}"
            )
        sizes[split] = int(n)
    cfg = SynthConfig(rho=args.rho, seed=args.seed, image_size=args.image_size, sizes=sizes)
    check_writable(args.out, "--out")
    root = generate(args.out, cfg, progress=show_progress())
    meta = json.loads((root / "meta.json").read_text())
    print(f"synthetic set in {root}; measured rho per split: {meta['measured_rho']}")


def _train(args: argparse.Namespace) -> None:
    from deconfound.config import load_config
    from deconfound.engine import train

    cfg = load_config(args.config, args.overrides)
    if args.print_config:
        print(cfg.to_yaml(), end="")
        return
    check_writable(cfg.run_dir, "the run folder (out_dir/name)")
    result = train(cfg)
    if not _first_process():  # the others of a distributed run stay quiet
        return
    print(
        f"run: {result.run_dir}  best checkpoint: {result.best_checkpoint}  "
        f"best val score: {result.best_score:.4f}"
    )


def _evaluate(args: argparse.Namespace) -> None:
    from deconfound.data import EmotionDataModule
    from deconfound.diagnostics import format_table
    from deconfound.diagnostics.swap import context_swap_gap
    from deconfound.engine import evaluate, load_module

    module = load_module(args.checkpoint, args.overrides)
    splits = args.split or module.cfg.data.test_splits
    data = EmotionDataModule(module.cfg.data, module.model.views)
    wanted = args.dictionary or args.swap_gap  # (embedding every split's contexts costs time)
    strata = _strata(module, data, splits, args.dictionary) if wanted else None
    if strata is not None:  # scores per (cluster, label) too
        data.set_strata(*strata)
    results: dict[str, Any] = evaluate(module, splits, data)
    if not _first_process():  # the others of a distributed run stay quiet
        return
    gaps = {}
    if args.swap_gap:
        if strata is None:
            raise ConfigError(
                "--swap-gap draws backgrounds across context clusters: give --dictionary PATH "
                "(`deconfound dictionary build`)"
            )
        gaps = {s: context_swap_gap(module, s, strata[0][s], data=data) for s in splits}
    if args.json:
        for split, gap in gaps.items():
            results[split]["swap_gap"] = gap.as_dict()
        print(json.dumps(results, indent=2))
        return
    print(format_table({module.cfg.model.intervention: results}, module.info.metric))
    for split, scores in results.items():
        if "accuracy_reweighted" in scores:
            print(
                f"per (context cluster, label) on {split}: re-weighted accuracy "
                f"{scores['accuracy_reweighted']:.3f}, worst-group accuracy "
                f"{scores['accuracy_worst_group']:.3f}"
            )
    for gap in gaps.values():
        print(
            f"context-swap gap on {gap.split}: {gap.metric} {gap.own:.3f} on its own background, "
            f"{gap.swapped:.3f} on another cluster's, gap {gap.gap:+.3f} "
            f"[{gap.ci95[0]:+.3f}, {gap.ci95[1]:+.3f}] ({gap.samples} people)"
        )


def _strata(
    module: Any, data: Any, splits: list[str], dictionary: str | None
) -> tuple[dict[str, Any], int] | None:
    """Each split's context clusters in ``dictionary`` (default: the checkpoint's
    ``model.dictionary``), or None without one."""
    import copy

    from deconfound.pipelines.strata import dictionary_strata

    cfg = copy.deepcopy(module.cfg)
    cfg.model.dictionary = dictionary or cfg.model.dictionary
    if not cfg.model.dictionary:
        return None
    samples = {split: data.reader.samples(split) for split in splits}
    return dictionary_strata(cfg, samples, module.info, progress=False, described=True)


def _dictionary_build(args: argparse.Namespace) -> None:
    from deconfound.config import load_config
    from deconfound.data import dataset_info
    from deconfound.diagnostics import plot_cluster_classes
    from deconfound.pipelines.dictionary import build_dictionary

    cfg = load_config(args.config, args.overrides)
    if cfg.model.dictionary:
        check_writable(cfg.model.dictionary, "model.dictionary")
    result = build_dictionary(cfg, progress=show_progress(cfg.trainer.progress_bar))
    if not _first_process():  # the others of a distributed run stay quiet
        return
    d = result.dictionary
    plot = plot_cluster_classes(
        result.cluster_counts,
        dataset_info(cfg.data.dataset).classes,
        result.path.with_suffix(".clusters.png"),
        title=f"{cfg.data.dataset} {cfg.data.train_split}: classes per dictionary cluster",
    )
    ari = "" if result.ari is None else f"; ARI vs hidden context {result.ari:.3f}"
    print(
        f"dictionary: {result.path} ({d.size} x {d.dim}, {d.meta['empty_clusters']} empty "
        f"clusters{ari}); classes per cluster: {plot}"
    )


def _bias_report(args: argparse.Namespace) -> None:
    from deconfound.config import load_config
    from deconfound.diagnostics.report import bias_report

    cfg = load_config(args.config, args.overrides)
    check_writable(args.out, "--out")
    report = bias_report(
        cfg,
        out_dir=args.out,
        dictionary=args.dictionary,
        checkpoints=args.checkpoint or [],
        progress=show_progress(cfg.trainer.progress_bar),
        command=shlex.join(["deconfound", *args.argv]),
    )
    n = report.numbers
    c, probe = n["clusters"], n["probe"]
    metric = probe["metric"]
    print(
        f"context clusters: {c['num_clusters']} ({c['source']}); NMI(cluster, emotion) "
        f"{c['nmi']:.3f}, Cramér's V {c['cramers_v']:.3f}"
    )
    chance = "majority" if metric == "accuracy" else "prevalence"
    rows = {"context-only probe": probe["splits"]}
    rows |= {f"model {m['label']}": m["splits"] for m in n["models"]}
    for name, scores in rows.items():
        cells = [
            f"{s} {v[metric]:.3f}" + (f" (chance {v[chance]:.3f})" if chance in v else "")
            for s, v in scores.items()
            if v[metric] is not None
        ]
        if cells:
            print(f"{name} {metric}: {', '.join(cells)}")
    for note in n["notes"]:
        print(f"note: {note}")
    print(f"report: {report.html}  numbers: {report.json}")


def _data_check(args: argparse.Namespace) -> int:
    from deconfound.data.check import check_dataset

    report = check_dataset(
        args.dataset,
        args.path,
        args.split,
        _reader_args(args),
        decode=not args.no_decode,
        sidecars=args.sidecar or (),
        keypoints=args.keypoints,
    )
    print(f"{report.info.name} at {report.root}")
    if report.samples:
        print(report.table())
    for note in report.notes:
        print(f"note: {note}")
    if report.ok:
        print("no problems found")
        return 0
    print(f"{len(report.problems)} problem(s):", file=sys.stderr)
    for problem in report.problems:
        print(f"  {problem}", file=sys.stderr)
    return 1


def _annotate(args: argparse.Namespace) -> None:
    import torch

    from deconfound.config import construct
    from deconfound.data import READERS, dataset_info
    from deconfound.pipelines.annotate import annotate, load_detector

    info = dataset_info(args.dataset)
    options = {"root": args.path, **_reader_args(args)}
    reader = construct(READERS[args.dataset], options, f"the {args.dataset} reader")
    device = args.device
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    weights = {"masks": args.masks_weights, "pose": args.pose_weights}
    detectors = {
        kind: load_detector(kind, None if weights[kind] == "random" else weights[kind], device,
                            args.size)
        for kind in dict.fromkeys(args.make)
    }  # fmt: skip
    results = annotate(
        reader,
        args.split or info.splits,
        detectors,
        device=device,
        batch_size=args.batch_size,
        threshold=args.threshold,
        progress=show_progress(),
    )
    print("| files | pictures | written | skipped | people | matched | without | seconds |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for r in results:
        print(
            f"| {r.kind} | {r.pictures} | {r.written} | {r.skipped} | {r.people} | "
            f"{r.matched} | {r.without} | {r.seconds:.1f} |"
        )
    for r in results:
        if r.unmatched:
            what = "no instance fits their box" if r.kind == "masks" else "no skeleton in their box"
            print(f"{r.kind}: {r.without} people with {what}, e.g. {'; '.join(r.unmatched[:3])}")


def _demo(args: argparse.Namespace) -> None:
    from deconfound.pipelines.demo import METHODS, run_demo, run_iern_demo

    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise DeconfoundError(f"--out {args.out} is a file; give a folder for the demo's outputs")
    check_writable(args.out, "--out")
    methods = tuple(args.methods or METHODS)
    if {"iern", "confusion"} & set(methods):  # IERN's facial-expression demo
        run_iern_demo(
            args.out,
            fold=args.fold,
            seed=args.seed,
            seeds=args.seeds,
            methods=tuple(dict.fromkeys(("none", *methods))),  # always against the plain one
            quick=args.quick,
            overrides=args.overrides,
        )
        return
    run_demo(
        args.out,
        model=args.model,
        rho=args.rho,
        dictionaries=tuple(args.dictionary),
        seed=args.seed,
        seeds=args.seeds,
        methods=methods,
        quick=args.quick,
        overrides=args.overrides,
    )


def _benchmark(args: argparse.Namespace) -> None:
    from deconfound.pipelines.benchmark import DEFAULT_METHODS, run_benchmark

    if Path(args.out).exists() and not Path(args.out).is_dir():
        raise DeconfoundError(f"--out {args.out} is a file; give a folder for the results")
    check_writable(args.out, "--out")
    run_benchmark(
        args.out,
        model=args.model,
        methods=tuple(args.methods or DEFAULT_METHODS),
        rhos=tuple(args.rho),
        seed=args.seed,
        seeds=args.seeds,
        dictionaries=tuple(args.dictionary),
        ceilings=args.ceilings,
        quick=args.quick,
        overrides=args.overrides,
    )


def _models(args: argparse.Namespace) -> None:
    from deconfound.methods import model_table

    n, d = args.dictionary
    if n < 1 or d < 1:
        raise DeconfoundError(f"--dictionary N D must be two positive sizes, got {n} {d}")
    rows = model_table(backbone=args.backbone, dictionary_shape=(n, d))
    interventions = [k for k in rows[0]["parameters"] if k != "none"]
    print(
        f"{'model':<14} {'views':<36} {'parameters':>12} "
        + " ".join(f"{'+' + k:>12}" for k in interventions)
    )
    for row in rows:
        counts = row["parameters"]
        print(
            f"{row['model']:<14} {', '.join(row['views']):<36} {counts['none']:>12,} "
            + " ".join(f"{counts[k] - counts['none']:>+12,}" for k in interventions)
        )
    print(
        f"default arguments{f', backbone {args.backbone}' if args.backbone else ''}; 7 classes; "
        f"CCIM on a {n} x {d} dictionary (its buffers are not parameters)"
    )


def _predict(args: argparse.Namespace) -> None:
    from collections import Counter

    from deconfound.predict import (
        Predictor,
        check_output,
        collect_inputs,
        drawing_paths,
        to_jsonl,
        write_drawings,
        write_predictions,
    )

    if args.out:
        check_writable(check_output(args.out), "--out")
    if args.draw:
        check_writable(args.draw, "--draw")
    files, boxes = collect_inputs(args.images, skip=[args.draw] if args.draw else [])
    if args.draw:
        drawing_paths(files, args.draw)  # a bad --draw stops before any prediction
    predictor = Predictor(
        args.checkpoint,
        device=args.device,
        batch_size=args.batch_size,
        detector=None if args.no_detect else "mtcnn",
        top_k=args.top_k,
        sidecar_root=args.sidecars,
        progress=show_progress(),
    )
    predictions = predictor.predict(files, boxes, skip_bad=args.skip_bad_images)
    if args.draw:
        write_drawings(predictions, args.draw)
    if not args.out:
        sys.stdout.write(to_jsonl(predictions))
        return
    write_predictions(predictions, args.out)
    counts = Counter(p.box_source or "skipped" for p in predictions)
    print(
        f"{args.out}: {len(predictions) - counts['skipped']} prediction(s) from {len(files)} "
        f"image(s) ({', '.join(f'{n} {source}' for source, n in counts.items())})"
    )


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("deconfound")
    except PackageNotFoundError:
        return "unknown"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="deconfound",
        description=(__doc__ or "").replace("``", ""),
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"deconfound {_version()}")
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser = functools.partial(  # type: ignore[method-assign]
        sub.add_parser, formatter_class=argparse.ArgumentDefaultsHelpFormatter
    )
    overrides = {
        "nargs": "*",
        "default": [],
        "metavar": "KEY=VALUE",
        "help": "config overrides, e.g. trainer.max_epochs=3 data.batch_size=32",
    }
    skip_bad = "leave out (and count) bad samples instead of stopping (data.skip_bad=true)"
    no_progress = (
        "no progress bars (they are drawn only where stderr is a terminal; in a config: "
        "trainer.progress_bar=false)"
    )

    s = sub.add_parser("synth", help="write the synthetic confounded benchmark to disk")
    s.add_argument("--out", required=True, help="output directory")
    s.add_argument(
        "--rho", type=float, default=0.8, help="P(preferred emotion | scene) in training"
    )
    s.add_argument("--seed", type=int, default=0)
    s.add_argument("--image-size", type=int, default=128)
    s.add_argument(
        "--size",
        action="append",
        default=[],
        metavar="SPLIT=N",
        help="number of images of a split (repeatable)",
    )
    s.add_argument("--no-progress", action="store_true", help=no_progress)
    s.set_defaults(func=_synth)

    t = sub.add_parser("train", help="train a model from a YAML config")
    t.add_argument("--config", required=True, help="YAML path or bundled config name")
    t.add_argument("--skip-bad", action="store_true", help=skip_bad)
    t.add_argument(
        "--print-config",
        action="store_true",
        help="print the resolved config (the file with the overrides applied) and stop",
    )
    t.add_argument("--no-progress", action="store_true", help=no_progress)
    t.add_argument("overrides", **overrides)
    t.set_defaults(func=_train)

    e = sub.add_parser("evaluate", help="evaluate a checkpoint on one or more splits")
    e.add_argument("--checkpoint", required=True)
    e.add_argument(
        "--split",
        action="append",
        help="split to evaluate (repeatable); default: the config's test splits",
    )
    e.add_argument("--json", action="store_true", help="print JSON instead of a table")
    e.add_argument(
        "--swap-gap",
        action="store_true",
        help="also the context-swap gap: the metric with each person on its own background "
        "minus on a background from another context cluster (needs person masks and a "
        "dictionary)",
    )
    e.add_argument(
        "--dictionary",
        help="score each split per (context cluster, label) too: the re-weighted and the "
        "worst-group accuracy; the clusters the swap gap draws across (default with "
        "--swap-gap: the checkpoint's model.dictionary)",
    )
    e.add_argument("--skip-bad", action="store_true", help=skip_bad)
    e.add_argument("overrides", **overrides)
    e.set_defaults(func=_evaluate)

    dic = sub.add_parser("dictionary", help="confounder dictionaries for CCIM")
    dic_sub = dic.add_subparsers(dest="action", required=True)
    b = dic_sub.add_parser(
        "build",
        help="cluster the person-masked training images into model.dictionary",
        description="Embed every training image with the person masked, cluster the embeddings "
        "(K-means) and write the dictionary to model.dictionary, as the config's `dictionary` "
        "section says; embeddings are cached beside it, so an interrupted build resumes.",
    )
    b.add_argument("--config", required=True, help="YAML path or bundled config name")
    b.add_argument("--skip-bad", action="store_true", help=skip_bad)
    b.add_argument("--no-progress", action="store_true", help=no_progress)
    b.add_argument("overrides", **overrides)
    b.set_defaults(func=_dictionary_build)

    br = sub.add_parser(
        "bias-report",
        help="how much the context gives the emotion away, in a data set and a model: an HTML "
        "page, PNG figures and report.json",
        description="Cluster the person-masked training images (the nearest centre of "
        "--dictionary, else K-means as the config's `dictionary` section says) and show the "
        "emotions per cluster with their dependence (NMI, Cramér's V); fit a context-only "
        "probe (logistic regression on those embeddings) and score it on the validation and "
        "test splits (data.test_splits) against chance; with --checkpoint (repeatable), score "
        "each model on them too, side by side, with its confusions. Every headline number has "
        "its 95 % bootstrap interval. Writes report.html (self-contained), report.json (with "
        "the command, config and versions) and the figures to --out.",
    )
    br.add_argument(
        "--config",
        default="emotnet_synthetic",
        help="YAML path or bundled config name: the data set (default: emotnet_synthetic, the "
        "demo's synthetic confounded set)",
    )
    br.add_argument("--dictionary", help="a confounder dictionary (.safetensors) to cluster by")
    br.add_argument(
        "--checkpoint",
        action="append",
        help="a trained model's checkpoint to score on those splits; repeat it to compare "
        "several models side by side",
    )
    br.add_argument("--out", required=True, help="output folder")
    br.add_argument("--skip-bad", action="store_true", help=skip_bad)
    br.add_argument("--no-progress", action="store_true", help=no_progress)
    br.add_argument("overrides", **overrides)
    br.set_defaults(func=_bias_report)

    an = sub.add_parser(
        "annotate",
        help="make person masks and pose files for a data set with torchvision's detectors",
        description="Run torchvision's Mask R-CNN (--make masks: instance masks for paste) and "
        "Keypoint R-CNN (--make pose: COCO-17 keypoints for EmotiCon) over every picture of "
        "the data set at PATH and write the sidecar files the readers read (masks/, pose/). "
        "Existing files are skipped, so a stopped run resumes. Prints pictures, files written "
        "and skipped, and how many annotated people found their own person.",
    )
    an.add_argument("path", help="the data set's root folder")
    an.add_argument("--dataset", required=True, help="reader name: " + ", ".join(_readers()))
    an.add_argument(
        "--make", nargs="+", choices=("masks", "pose"), required=True, help="what to make"
    )
    an.add_argument("--split", action="append", help="split to annotate (repeatable); default: all")
    an.add_argument("--device", default="auto", help="cpu, cuda, cuda:1 ...; auto: cuda if any")
    an.add_argument("--batch-size", type=int, default=4, help="pictures per detector call")
    an.add_argument(
        "--masks-weights",
        default="DEFAULT",
        help="Mask R-CNN weights: a torchvision name (DEFAULT = COCO_V1), a local file, or "
        "random (plumbing tests only)",
    )
    an.add_argument(
        "--pose-weights",
        default="DEFAULT",
        help="Keypoint R-CNN weights: a torchvision name (DEFAULT = COCO_V1), a local file, or "
        "random",
    )
    an.add_argument("--threshold", type=float, default=0.5, help="least detection score kept")
    an.add_argument("--size", type=int, default=800, help="pictures' shorter side for the detector")
    _reader_option(an)
    an.add_argument("--no-progress", action="store_true", help=no_progress)
    an.set_defaults(func=_annotate)

    data = sub.add_parser("data", help="inspect data sets on disk")
    data_sub = data.add_subparsers(dest="action", required=True)
    c = data_sub.add_parser(
        "check",
        help="validate a copy of a data set: files, images, boxes, labels, counts per split",
        description="Read every split of the data set at PATH, decode every image and check "
        "every box and label; print the samples and class frequencies per split and every "
        "problem found. Exits with status 1 when there are problems.",
    )
    c.add_argument("path", help="the data set's root folder")
    c.add_argument("--dataset", required=True, help="reader name: " + ", ".join(_readers()))
    c.add_argument("--split", action="append", help="split to check (repeatable); default: all")
    c.add_argument("--no-decode", action="store_true", help="check headers only (faster)")
    c.add_argument(
        "--sidecar",
        action="append",
        choices=_sidecar_kinds(),
        help="also read every sample's file of this kind (repeatable): what GNN-CNN (objects) "
        "and EmotiCon (pose, depth) read",
    )
    c.add_argument(
        "--keypoints", type=int, default=25, help="keypoints per skeleton in pose files (25)"
    )
    _reader_option(c)
    c.set_defaults(func=_data_check)

    d = sub.add_parser(
        "demo",
        help="bias on the synthetic sets: a context model with and without CCIM, or (--method "
        "iern) a face classifier with and without IERN",
        description="Draw the synthetic set, pretrain the scene backbone, build the confounder "
        "dictionary, train the base model (EMOT-Net unless --model) with each method and seed, "
        "print mean ± std per test split. Overrides apply to the model's config; prefix them "
        "with 'scenes.' for the scene classifier's. With --method iern: draw the synthetic "
        "facial-expression set and train a plain face classifier and IERN on --fold instead "
        "(overrides then apply to the faces_synthetic config).",
    )
    d.add_argument("--out", default="runs/demo", help="output directory (data are cached there)")
    d.add_argument(
        "--model",
        default="emotnet",
        help="base model: emotnet, caernet, gnncnn or emoticon (its <model>_synthetic config)",
    )
    d.add_argument("--rho", type=float, default=0.8, help="confounding strength of the data")
    d.add_argument(
        "--dictionary",
        nargs="+",
        default=["imagenet"],
        metavar="SOURCE",
        help="where the dictionary comes from: imagenet and/or oracle (as in benchmark)",
    )
    d.add_argument("--seed", type=int, default=0, help="seed of the data and of the first run")
    d.add_argument("--seeds", type=int, default=3, help="training seeds per method")
    d.add_argument(
        "--methods",
        nargs="+",
        metavar="METHOD",
        help="methods to compare on the context set (default: none ccim_dot paste; any of "
        "deconfound benchmark's); or iern (and confusion: IERN without the backdoor "
        "adjustment), which runs IERN's facial-expression demo against the plain classifier",
    )
    d.add_argument(
        "--fold",
        default="bias90v1",
        help="IERN demo: the fold of the facial-expression set (bias90v1-3, bias100v1-3)",
    )
    d.add_argument(
        "--quick", action="store_true", help="a smaller set and fewer epochs (for checks)"
    )
    d.add_argument("--no-progress", action="store_true", help=no_progress)
    d.add_argument("overrides", **overrides)
    d.set_defaults(func=_demo)

    from deconfound.methods import CONTEXT_METHODS

    bm = sub.add_parser(
        "benchmark",
        help="methods x seeds (x rho) on the synthetic benchmark, with a generated table",
        description="For each --rho: draw the synthetic set; for each --dictionary, build the "
        "confounder dictionary; train the base model with every method and seed, and each "
        "method on an unconfounded draw (its ceiling, for evaluation only); score every run "
        "under every checkpoint selection rule; write results.json, results.md (mean ± std, "
        "95 % intervals, paired differences to none, share of the test_anti gap closed "
        "against the method's own ceiling and the plain model's, the rule table) and "
        "results.png. Finished runs are reused.",
    )
    bm.add_argument("--out", default="runs/benchmark", help="output directory (data cached there)")
    bm.add_argument("--model", default="emotnet", help="base model (its <model>_synthetic config)")
    bm.add_argument(
        "--methods",
        nargs="+",
        metavar="METHOD",
        choices=CONTEXT_METHODS,
        help=f"methods to compare (default: all: {', '.join(CONTEXT_METHODS)})",
    )
    bm.add_argument(
        "--rho", nargs="+", type=float, default=[0.8], help="confounding strengths (0.8)"
    )
    bm.add_argument("--seed", type=int, default=0, help="seed of the data and of the first run")
    bm.add_argument("--seeds", type=int, default=3, help="training seeds per method (3)")
    bm.add_argument(
        "--dictionary",
        nargs="+",
        default=["imagenet"],
        metavar="SOURCE",
        help="where the dictionary comes from: imagenet (torchvision's ImageNet MobileNetV2, "
        "the default) and/or oracle (a scene classifier trained on the hidden scene types)",
    )
    bm.add_argument(
        "--ceilings",
        default="all",
        help="train every method (all), only the plain one (plain: the reference) or none "
        "(off) on an unconfounded draw as well",
    )
    bm.add_argument("--quick", action="store_true", help="a smaller set and fewer epochs")
    bm.add_argument("--no-progress", action="store_true", help=no_progress)
    bm.add_argument("overrides", **overrides)
    bm.set_defaults(func=_benchmark)

    m = sub.add_parser(
        "models",
        help="list the base models: the views they read and their parameter counts ± CCIM",
    )
    m.add_argument("--backbone", help="count with this backbone in every stream")
    m.add_argument(
        "--dictionary",
        nargs=2,
        type=int,
        default=(256, 2048),
        metavar=("N", "D"),
        help="confounder dictionary shape for the CCIM counts (default: 256 2048)",
    )
    m.set_defaults(func=_models)

    r = sub.add_parser(
        "predict",
        help="predict the emotions of the people in your images with a trained checkpoint",
        description="Find the people in each image (a box from a CSV file, else the bundled "
        "face detector, one prediction per face, else the whole image), cut them into the "
        "checkpoint's views as in training and write the top-k emotions with their "
        "probabilities: JSON lines or CSV by --out's suffix (JSON lines on stdout without it).",
    )
    r.add_argument(
        "--checkpoint", required=True, help="a checkpoint written by deconfound train (best.ckpt)"
    )
    r.add_argument(
        "images",
        nargs="+",
        metavar="IMAGES",
        help="image files, folders (searched recursively), glob patterns, or CSV files with "
        "the header file,x1,y1,x2,y2 (empty box cells: detect)",
    )
    r.add_argument("--out", help="predictions file: .jsonl or .csv (default: JSON lines on stdout)")
    r.add_argument("--draw", metavar="DIR", help="write copies of the images with boxes and labels")
    r.add_argument("--top-k", type=int, default=3, help="emotions per person (3)")
    r.add_argument("--batch-size", type=int, default=32, help="persons per forward pass (32)")
    r.add_argument("--device", default="cpu", help="cpu, cuda, cuda:1, ... (cpu)")
    r.add_argument(
        "--no-detect", action="store_true", help="no face detection: boxless images as a whole"
    )
    r.add_argument(
        "--sidecars",
        metavar="DIR",
        help="folder with the images' pose/, depth/ and objects/ files, for models that read "
        "them (GNN-CNN, EmotiCon)",
    )
    r.add_argument(
        "--skip-bad",
        dest="skip_bad_images",
        action="store_true",
        help="skip unreadable images and bad boxes (one warning each) instead of stopping",
    )
    r.add_argument("--no-progress", action="store_true", help=no_progress)
    r.set_defaults(func=_predict)
    return p


def _reader_option(parser: argparse.ArgumentParser) -> None:
    """``--arg KEY=VALUE``: a reader option, read back by :func:`_reader_args`."""
    parser.add_argument(
        "--arg",
        dest="reader_args",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a reader option, as data.args takes it (repeatable), e.g. --arg faces=boxes.csv",
    )


def _reader_args(args: argparse.Namespace) -> dict:
    """The reader options given with ``--arg``, as a mapping."""
    from deconfound.config import apply_override

    out: dict = {}
    for item in args.reader_args:
        apply_override(out, item)
    return out


def _sidecar_kinds() -> tuple[str, ...]:
    from deconfound.data.sidecars import KINDS

    return KINDS


def _readers() -> list[str]:
    from deconfound.data import READERS

    return list(READERS)


def _first_process() -> bool:
    """Whether this is process 0 of a distributed run, or a process alone: the one that prints
    results and writes what is not already written."""
    from deconfound.distributed import global_rank

    return global_rank() == 0


class _LevelFormatter(logging.Formatter):
    """Messages as they are; warnings and errors start with their level (``warning: ...``)."""

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        return text if record.levelno < logging.WARNING else f"{record.levelname.lower()}: {text}"


def _quiet_lightning() -> None:
    import lightning  # noqa: F401 - it sets its loggers' levels on import; ours come after

    root = logging.getLogger()
    if not root.handlers:  # (as logging.basicConfig: nothing when a host configured logging)
        handler = logging.StreamHandler()
        handler.setFormatter(_LevelFormatter("%(message)s"))
        root.addHandler(handler)
        root.setLevel(logging.INFO)
    for name in ("lightning.pytorch", "lightning.fabric", "lightning_utilities", "faiss.loader"):
        logging.getLogger(name).setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    warnings.filterwarnings("ignore", ".*exists and is not empty.*")
    warnings.filterwarnings("ignore", ".*isinstance\\(treespec, LeafSpec\\).*")
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    warnings.filterwarnings("ignore", ".*smaller than the logging interval.*")


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line; returns the exit status."""
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # for what records its command
    # KEY=VALUE overrides may also follow options given after the first override
    overrides = [a for a in extra if "=" in a and not a.startswith("-")]
    if extra and (len(overrides) < len(extra) or not hasattr(args, "overrides")):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    if overrides:
        args.overrides = [*args.overrides, *overrides]
    _quiet_lightning()
    if getattr(args, "skip_bad", False):
        args.overrides.append("data.skip_bad=true")
    bars = allow_progress(False) if getattr(args, "no_progress", False) else None
    restore = _stop_on_sigterm()
    try:
        status = args.func(args)
    except (DeconfoundError, FloatingPointError) as e:
        return _fail(f"error: {one_line(e)}", 2)  # (a DataLoader worker's: its own message)
    except OSError as e:  # an output that became unwritable, a full disk, ...
        where = f"{e.filename}: " if e.filename else ""
        return _fail(f"error: {where}{e.strerror or one_line(e)}", 2)
    except Stopped as e:
        return _fail(str(e), e.status)
    except KeyboardInterrupt:
        return _fail("interrupted", 130)
    except SystemExit as e:
        if type(e).__name__ == "SIGTERMException":  # Lightning's, at the end of a batch
            return _fail("terminated (SIGTERM)", 143)
        if isinstance(e.__context__, KeyboardInterrupt):  # Lightning exits 1 on Ctrl-C
            return _fail("interrupted", 130)
        raise
    finally:
        restore()
        if bars is not None:
            allow_progress(bars)
    return status or 0


def _fail(message: str, status: int) -> int:
    print(f"deconfound: {message}", file=sys.stderr)
    return status


def _stop_on_sigterm() -> Callable[[], object]:
    """Make SIGTERM (what SLURM and Kubernetes send) raise :class:`Stopped`, as Ctrl-C raises
    KeyboardInterrupt, so that the command stops in one line with status 143 and a training
    run says what it kept; returns what restores the handler before.

    While Lightning trains it also handles SIGTERM, calling this handler after its own: this
    one then leaves it to Lightning, which stops at the end of the batch (a training run keeps
    its last epoch's ``last.ckpt``, which resumes it exactly)."""
    if threading.current_thread() is not threading.main_thread():
        return lambda: None

    def on_sigterm(signum: int, frame: object) -> None:
        if signal.getsignal(signal.SIGTERM) is on_sigterm:
            raise Stopped("terminated (SIGTERM)", 143)

    before = signal.signal(signal.SIGTERM, on_sigterm)
    return lambda: signal.signal(signal.SIGTERM, before)


if __name__ == "__main__":
    sys.exit(main())

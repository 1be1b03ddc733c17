"""A bias report's figures (PNG), its page (one HTML file, figures embedded) and
``report.json``, from the numbers ``diagnostics.report`` measured."""

from __future__ import annotations

import base64
import json
import math
import tempfile
from html import escape
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from deconfound.data.sample import DatasetInfo
from deconfound.diagnostics.plots import (
    plot_class_ap,
    plot_cluster_classes,
    plot_confusion,
    plot_split_metrics,
)
from deconfound.io import atomic_write, atomic_write_text


def write_report(out: Path, numbers: dict[str, Any], info: DatasetInfo) -> dict[str, Path]:
    """Draw the figures, write them, ``report.html`` and ``report.json`` (with the figures'
    file names added to ``numbers``) to ``out``; returns the paths by name (``html``,
    ``json``, and each figure's). Everything is drawn before the first file is written, and
    each file is written atomically."""
    with tempfile.TemporaryDirectory(prefix="deconfound-report-") as tmp:
        drawn = {name: path.read_bytes() for name, path in _figures(Path(tmp), numbers, info)}
    numbers["figures"] = {name: f"{name}.png" for name in drawn}
    page = render_html(numbers, drawn)
    payload = json.dumps(_finite(numbers), indent=2, allow_nan=False) + "\n"
    stale = _previous_figures(out / "report.json") - set(numbers["figures"].values())
    paths = {
        name: atomic_write(out / f"{name}.png", lambda t, b=b: t.write_bytes(b))
        for name, b in drawn.items()
    }
    paths["html"] = atomic_write_text(out / "report.html", page)
    paths["json"] = atomic_write_text(out / "report.json", payload)
    for name in stale:  # figures of an earlier report in this folder that this one lacks
        (out / name).unlink(missing_ok=True)
    return paths


def _figures(tmp: Path, numbers: dict[str, Any], info: DatasetInfo) -> list[tuple[str, Path]]:
    """Draw every figure into ``tmp``; (name, path) pairs."""
    probe, models = numbers["probe"], numbers["models"]
    metric, train = probe["metric"], numbers["dataset"]["train_split"]
    counts = np.array(numbers["clusters"]["counts"])
    title = f"{info.name} {train}: P(emotion | context cluster)"
    figures = [
        (
            "clusters",
            plot_cluster_classes(
                counts, info.classes, tmp / "clusters.png", title=title, show_counts=True
            ),
        ),
    ]
    bars, intervals = _bars(probe, models, train, info)
    what = "models vs. context-only probe" if len(models) > 1 else "model vs. context-only probe"
    plots = {"probe": "context-only probe vs. chance", "splits": what}
    for name, title in plots.items():
        if name == "splits" and not models:
            continue
        keep = 2 if name == "probe" else len(bars)  # chance and the probe; then the models
        chance = 1 / info.num_classes if info.task == "multiclass" else None
        path = plot_split_metrics(
            dict(list(bars.items())[:keep]),
            metric,
            tmp / f"{name}.png",
            interval=intervals,
            chance=chance,
            title=f"{title} ({metric}, 95 % intervals)",
            legend_outside=True,
        )
        figures.append((name, path))
    for k, model in enumerate(models):
        for split in model["splits"]:
            name = figure_name(model, split, k, len(models))
            if "confusion" in model:
                score = model["splits"][split][metric]
                path = plot_confusion(
                    np.array(model["confusion"][split]),
                    info.classes,
                    tmp / f"{name}.png",
                    title=f"{_short(model, len(models))}{split}: {metric} {score:.3f}",
                )
            else:
                path = plot_class_ap(
                    model["class_ap"][split],
                    tmp / f"{name}.png",
                    title=f"{_short(model, len(models))}{split}: average precision per class",
                )
            figures.append((name, path))
    return figures


def figure_name(model: dict[str, Any], split: str, k: int, models: int) -> str:
    """The name of model ``k``'s (of ``models``) confusion or per-class AP figure on
    ``split``: ``confusion-<split>`` / ``class-ap-<split>``, numbered ``-<k + 1>`` when the
    report has several models."""
    kind = "confusion" if "confusion" in model else "class-ap"
    return f"{kind}-{split}" + (f"-{k + 1}" if models > 1 else "")


def _short(model: dict[str, Any], models: int) -> str:
    return f"{model['label']}, " if models > 1 else ""


def _bars(
    probe: dict, models: list[dict], train: str, info: DatasetInfo
) -> tuple[dict[str, dict[str, dict[str, float]]], dict[str, dict[str, list[float] | None]]]:
    """Method → split → metric → value, for ``plot_split_metrics``: chance, the probe, each
    model, on every split but the training one; and the probe's and models' intervals."""
    metric, scores = probe["metric"], probe["splits"]
    splits = [s for s, v in scores.items() if s != train and v[metric] is not None]
    chance, label = (
        ("majority", "majority class") if info.task == "multiclass" else ("prevalence", "chance")
    )
    bars = {
        label: {s: {metric: scores[s][chance]} for s in splits},
        "context-only probe": {s: {metric: scores[s][metric]} for s in splits},
    }
    intervals = {"context-only probe": {s: scores[s].get("interval") for s in splits}}
    for m in models:
        bars[m["label"]] = {s: {metric: m["splits"][s][metric]} for s in splits}
        intervals[m["label"]] = {s: m["intervals"].get(s) for s in splits}
    return bars, intervals


def render_html(numbers: dict[str, Any], figures: dict[str, bytes]) -> str:
    """The report as one HTML page: no external resources, figures as data URIs."""

    def img(name: str, alt: str) -> str:
        data = base64.b64encode(figures[name]).decode("ascii")
        return f'<figure><img src="data:image/png;base64,{data}" alt="{escape(alt)}"></figure>'

    title = escape(f"Bias report: {numbers['dataset']['name']}")
    body = [
        _header(numbers),
        _clusters_html(numbers, img("clusters", "emotions per context cluster")),
        _probe_html(numbers, img("probe", "context-only probe per split")),
        _models_html(numbers, img),
        _intervention_html(numbers),
        _provenance_html(numbers),
    ]
    return (
        '<!doctype html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{title}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n"
        + "\n".join(body)
        + "\n</main>\n</body>\n</html>\n"
    )


CSS = """
:root { --fg: #1d232a; --muted: #56616d; --line: #e3e7ec; --rule: #d3d9e0; --soft: #f4f6f9;
  --accent: #2f6db5; }
* { box-sizing: border-box; }
body { margin: 0; background: var(--soft); color: var(--fg);
  font: 15px/1.5 system-ui, -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial,
  sans-serif; }
main { max-width: 1080px; margin: 0 auto; padding: 28px 32px 48px; background: #fff; }
h1 { font-size: 26px; margin: 0 0 2px; }
h2 { font-size: 20px; margin: 32px 0 6px; padding-top: 18px; border-top: 1px solid var(--rule); }
h3 { font-size: 16px; margin: 22px 0 4px; }
h4 { font-size: 15px; margin: 12px 0 4px; }
p { max-width: 84ch; margin: 6px 0; }
.muted, .explain { color: var(--muted); }
.explain b { color: var(--fg); font-weight: 600; }
code { font: 13px ui-monospace, SFMono-Regular, Menlo, Consolas, monospace;
  background: var(--soft); padding: 1px 4px; border-radius: 3px; }
table { border-collapse: collapse; margin: 10px 0 14px; font-variant-numeric: tabular-nums; }
th, td { padding: 4px 16px 4px 0; border-bottom: 1px solid var(--line); text-align: left;
  vertical-align: top; }
.num { text-align: right; }
thead th { font-weight: 600; color: var(--muted); font-size: 13px; }
td.meaning { color: var(--muted); font-size: 13.5px; max-width: 60ch; }
figure { margin: 12px 0; }
figure img { max-width: 100%; height: auto; display: block; }
.pair { display: flex; flex-wrap: wrap; gap: 8px 28px; align-items: flex-start; }
.pair > figure { flex: 1 1 560px; margin-top: 0; }
.pair > div { flex: 0 1 360px; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; margin: 16px 0 10px; }
.card { flex: 1 1 210px; border: 1px solid var(--line); border-radius: 8px; padding: 10px 14px; }
.card .value { font-size: 24px; font-weight: 600; color: var(--accent); }
.card .label { color: var(--muted); font-size: 13px; }
.grid { display: grid; grid-template-columns: repeat(auto-fill, minmax(460px, 1fr)); gap: 8px; }
.note { background: #fff8e6; border-left: 3px solid #e0a800; padding: 6px 12px; }
pre { font: 12.5px/1.45 ui-monospace, SFMono-Regular, Menlo, Consolas, monospace;
  background: var(--soft); padding: 10px 14px; overflow-x: auto; }
details summary { cursor: pointer; color: var(--accent); margin: 8px 0; }
nav a { color: var(--accent); margin-right: 16px; text-decoration: none; }
"""


def _f(value: Any, digits: int = 3) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "–"
    if isinstance(value, int | np.integer):
        return f"{value:,}"
    return f"{value:.{digits}f}"


def _ci(bounds: list[float] | None) -> str:
    """An interval as text, ``[low, high]`` (– without one)."""
    return "–" if not bounds else f"[{_f(bounds[0])}, {_f(bounds[1])}]"


def _with_ci(value: Any, bounds: list[float] | None) -> str:
    return _f(value) if not bounds else f"{_f(value)} {_ci(bounds)}"


def _p(value: float) -> str:
    return "p < 1e-300" if value == 0 else f"p = {value:.2g}"


def _table(head: list[str], rows: list[list[Any]], meaning: bool = False) -> str:
    """An HTML table; a column of numbers (or of texts that start with one) is right-aligned,
    and with ``meaning`` the last column is a muted explanation."""

    def numeric(c: Any) -> bool:
        return not isinstance(c, str) or c[:1].isdigit() or c == "–"

    right = [j > 0 and all(numeric(r[j]) for r in rows) for j in range(len(head))]
    if meaning:
        right[-1] = False

    def cls(j: int) -> str:
        last = meaning and j == len(head) - 1
        return ' class="num"' if right[j] else ' class="meaning"' if last else ""

    cells = "".join(f"<th{cls(j) if right[j] else ''}>{escape(h)}</th>" for j, h in enumerate(head))
    body = "".join(
        "<tr>"
        + "".join(f"<td{cls(j)}>{c if isinstance(c, str) else _f(c)}</td>" for j, c in enumerate(r))
        + "</tr>"
        for r in rows
    )
    return f"<table><thead><tr>{cells}</tr></thead><tbody>{body}</tbody></table>"


def _card(value: str, label: str) -> str:
    return (
        f'<div class="card"><div class="value">{value}</div><div class="label">{label}</div></div>'
    )


def _explain(what: str, how: str) -> str:
    return (
        f'<p class="explain"><b>What it shows.</b> {what}</p>'
        f'<p class="explain"><b>How to read it.</b> {how}</p>'
    )


def _header(n: dict[str, Any]) -> str:
    d, c, probe, models = n["dataset"], n["clusters"], n["probe"], n["models"]
    splits = ", ".join(f"{escape(s)} {k:,}" for s, k in d["splits"].items())
    metric = probe["metric"]
    evals = [s for s in probe["splits"] if s != d["train_split"]]
    cards = [
        _card(_f(c["nmi"]), f"NMI(context cluster, emotion) {_ci(c.get('nmi_interval'))}"),
        _card(
            _f(c["cramers_v"]),
            f"Cramér's V(context cluster, emotion) {_ci(c.get('cramers_v_interval'))}",
        ),
    ]
    if evals:
        first = probe["splits"][evals[0]]
        chance = first.get("majority", first.get("prevalence"))
        label = (
            f"context-only {metric} on {escape(evals[0])} {_ci(first.get('interval'))} "
            f"(chance {_f(chance)})"
        )
        cards.append(_card(_f(first[metric]), label))
    for m in models:
        if not m["splits"]:
            continue
        scores = {s: v[metric] for s, v in m["splits"].items()}
        hi, lo = max(scores, key=scores.__getitem__), min(scores, key=scores.__getitem__)
        who = f"<code>{escape(m['label'])}</code> " if len(models) > 1 else "model "
        label = f"{who}{metric}: best split ({escape(hi)}) → worst ({escape(lo)})"
        errors = m.get("scene_errors")
        if errors and errors["splits"]:
            split = "test_anti" if "test_anti" in errors["splits"] else list(errors["splits"])[-1]
            e, where = errors["splits"][split], "there" if split == lo else f"on {escape(split)}"
            label += (
                f"; {where}, {_f(e['share'])} of its errors name the scene's emotion (chance "
                f"{_f(e['chance'])})"
            )
        cards.append(_card(f"{_f(scores[hi])} → {_f(scores[lo])}", label))
    sections = [
        ("clusters", "1. Context clusters"),
        ("probe", "2. Context-only probe"),
        ("model", "3. Models" if len(models) > 1 else "3. Model"),
        ("intervention", "4. Intervention"),
        ("made", "How this was made"),
    ]
    measured = any(m.get("ccim") or m.get("iern") for m in models)
    nav = "".join(
        f'<a href="#{anchor}">{text}</a>'
        for anchor, text in sections
        if anchor != "intervention" or measured
    )
    made = n.get("provenance") or {}
    when = f" · made {escape(made['created'])}" if made.get("created") else ""
    return (
        f"<header><h1>Bias report: {escape(d['name'])}</h1>"
        '<p class="muted">How much the context (the image with the person hidden) gives the '
        "emotion away in this data set, and how much a model depends on it.</p>"
        f'<p class="muted">Data <code>{escape(d["root"])}</code> · {escape(d["task"])}, '
        f"{len(d['classes'])} classes · samples per split: {splits}{when}</p>"
        f'<div class="cards">{"".join(cards)}</div><nav>{nav}</nav></header>'
    )


def _clusters_html(n: dict[str, Any], figure: str) -> str:
    c, d = n["clusters"], n["dataset"]
    multilabel = d["task"] == "multilabel"
    source = (
        f"the nearest centre of the dictionary <code>{escape(str(c['dictionary']))}</code>"
        if c["source"] == "dictionary"
        else "K-means, as <code>deconfound dictionary build</code> makes a dictionary"
    )
    what = (
        f"Each <code>{escape(d['train_split'])}</code> image is embedded by the scene backbone "
        f"with the person masked out and put in a context cluster: {source}."
    )
    share = "the share of the cluster's samples with that emotion"
    if multilabel:
        share += " (people have several emotions, so rows need not sum to 1)"
    how = (
        "In the heat map each row is a cluster (largest first; n: its samples), each column an "
        f"emotion, each cell {share}. Without context bias every row would show the same "
        "mix of emotions; a bright cell means the scene alone gives that emotion away."
    )
    per = " (per emotion, present or not, averaged)" if multilabel else ""
    rows = [
        ["clusters", f"{c['num_clusters']} ({c['empty_clusters']} empty)", ""],
        [
            "NMI",
            _with_ci(c["nmi"], c.get("nmi_interval")),
            f"normalised mutual information{per}: 0 when cluster and emotion "
            "are independent, 1 when one determines the other",
        ],
    ]
    if not multilabel:
        rows += [
            [
                "AMI",
                c["ami"],
                "NMI corrected for chance: about 0 for independent labels, "
                "whatever the number of clusters",
            ],
            [
                "Cramér's V",
                _with_ci(c["cramers_v"], c.get("cramers_v_interval")),
                "the same dependence from the χ² statistic, 0 to 1",
            ],
            ["χ²", f"{c['chi2']:.1f} ({_p(c['p_value'])})", "test of independence"],
            [
                "purity",
                c["purity"],
                "the share of samples of their cluster's most frequent "
                "emotion: guessing the emotion from the cluster alone",
            ],
        ]
    else:
        rows.append(
            [
                "Cramér's V",
                _with_ci(c["cramers_v"], c.get("cramers_v_interval")),
                f"from the χ² statistic, 0 to 1{per}",
            ]
        )
    if "ari_vs_context" in c:
        rows.append(
            [
                "ARI vs. hidden context",
                c["ari_vs_context"],
                "agreement of the clusters with the context the data set records "
                "(the synthetic scene type): 0 chance, 1 the same partition",
            ]
        )
    if "nmi_context_emotion" in c:
        rows.append(
            [
                "NMI(hidden context, emotion)",
                c["nmi_context_emotion"],
                "the dependence in the data themselves, without clustering",
            ]
        )
    return (
        f'<section id="clusters"><h2>1. Emotions per context cluster</h2>{_explain(what, how)}'
        f"{_table(['measure', 'value', 'meaning'], rows, meaning=True)}"
        f'<div class="pair">{figure}<div>{_largest_clusters(c, d["classes"])}</div></div>'
        "</section>"
    )


def _largest_clusters(c: dict[str, Any], classes: list[str], k: int = 12) -> str:
    counts, sizes = np.array(c["counts"]), np.array(c["sizes"])
    rows = []
    for i in np.argsort(-sizes, kind="stable")[:k]:
        if sizes[i] == 0:
            break
        top = int(counts[i].argmax())
        rows.append([f"z{i}", int(sizes[i]), escape(classes[top]), counts[i, top] / sizes[i]])
    head = ["cluster", "samples", "top emotion", "its share"]
    return f"<h3>The {len(rows)} largest clusters</h3>{_table(head, rows)}"


def _probe_html(n: dict[str, Any], figure: str) -> str:
    p, d = n["probe"], n["dataset"]
    metric, train = p["metric"], d["train_split"]
    rows = []
    for split, v in p["splits"].items():
        name = f"{escape(split)} (fitted on)" if split == train else escape(split)
        ci = _ci(v.get("interval"))
        if metric == "accuracy":
            gain = v["accuracy"] - v["majority"]
            rows.append([name, v["n"], v["accuracy"], ci, v["majority"], v["uniform"], gain])
        else:
            rows.append([name, v["n"], v["classes"], v["mAP"], ci, v["prevalence"]])
    if metric == "accuracy":
        head = [
            "split",
            "samples",
            "probe",
            "95 % interval",
            "majority class",
            "uniform 1/C",
            "probe − majority",
        ]
        chance = (
            f"the majority rate (always answering the most frequent {escape(train)} emotion, "
            f"<em>{escape(p['majority_class'])}</em>) and 1/C (a uniform guess)"
        )
    else:
        head = [
            "split",
            "samples",
            "classes",
            "probe mAP",
            "95 % interval",
            "chance (mean prevalence)",
        ]
        chance = "the mean prevalence of the classes present (the AP of a random score)"
    what = (
        f"A logistic regression fitted on the <code>{escape(train)}</code> split's masked-"
        "context embeddings (those clustered above): the person is hidden, so whatever it "
        f"predicts it learns from the scene. Its {metric} on every split."
    )
    how = (
        f"Compare it with chance: {chance}. Well above chance on the training distribution "
        "means the data set rewards a model for reading the scene instead of the person; on a "
        "split where the scene misleads (the synthetic set's <code>test_anti</code>) it drops "
        "to chance or below."
    )
    return (
        f'<section id="probe"><h2>2. What the context alone predicts</h2>{_explain(what, how)}'
        f"{_table(head, rows)}{figure}</section>"
    )


def _models_html(n: dict[str, Any], img: Any) -> str:
    models = n["models"]
    if not models:
        return (
            '<section id="model"><h2>3. The model</h2><p class="muted">No checkpoint given. '
            "Run <code>deconfound bias-report … --checkpoint runs/NAME/checkpoints/best.ckpt"
            "</code> to add a model's scores on every split (repeat <code>--checkpoint</code> "
            "to compare several).</p></section>"
        )
    metric = n["probe"]["metric"]
    kind = "confusion" if "confusion" in models[0] else "class-ap"
    what = (
        ("Each checkpoint" if len(models) > 1 else "The checkpoint")
        + " scored on every split as <code>deconfound evaluate</code> scores it, beside the "
        f"context-only probe and chance; the {metric} with its 95 % interval over the samples "
        "(how far it would move on another draw of the split, not across training seeds: "
        "give several seeds' checkpoints for that)."
    )
    how = (
        "A model that reads the person scores about the same on every split; one that leans "
        "on the context scores high where the probe does and drops where the context misleads: "
        "the gap between its best and worst split measures that reliance. "
        + (
            "In the confusion matrices rows are the true emotion, columns the predicted one; "
            "a cell's colour is its share of the true emotion's samples, its number the count."
            if kind == "confusion"
            else "The bars are each emotion's average precision; the mark is its prevalence, "
            "the AP of a random score."
        )
    )
    splits = list(models[0]["splits"])
    head = ["model", *(f"{s} {metric}" for s in splits)]
    rows = [
        [
            f"<code>{escape(m['label'])}</code>",
            *(_with_ci(m["splits"][s][metric], m["intervals"].get(s)) for s in splits),
        ]
        for m in models
    ]
    title = "3. The models, side by side" if len(models) > 1 else "3. The model"
    parts = "".join(_model_part(n, m, k, img) for k, m in enumerate(models))
    return (
        f'<section id="model"><h2>{title}</h2>{_explain(what, how)}'
        f"{_table(head, rows)}{img('splits', f'{metric} per split')}{parts}</section>"
    )


def _model_part(n: dict[str, Any], m: dict[str, Any], k: int, img: Any) -> str:
    """One model's own part of section 3: every metric per split, its confusion matrices (or
    per-class AP) and its errors toward the scene's emotion."""
    models = len(n["models"])
    names = [key for key in next(iter(m["splits"].values())) if key != "loss"] + ["loss"]
    samples = n["dataset"]["splits"]
    rows = [[escape(s), samples[s], *(v.get(key) for key in names)] for s, v in m["splits"].items()]
    head = ["split", "samples", *(key.replace("_", " ") for key in names)]
    alt = "confusion matrix" if "confusion" in m else "average precision per emotion"
    grid = "".join(
        img(
            figure_name(m, s, k, models),
            f"{alt} on {s}" + (f" ({m['label']})" if models > 1 else ""),
        )
        for s in m["splits"]
    )
    return (
        f"<h3><code>{escape(m['label'])}</code></h3>"
        f'<p class="muted">Checkpoint <code>{escape(m["checkpoint"])}</code>: '
        f"{escape(m['model'])}, intervention <code>{escape(m['intervention'])}</code>.</p>"
        f'{_table(head, rows)}<div class="grid">{grid}</div>'
        f"{_without_anti_html(m, explain=k == 0)}"
        f"{_scene_errors_html(m.get('scene_errors'), explain=k == 0)}"
    )


def _without_anti_html(m: dict[str, Any], explain: bool = True) -> str:
    """The model's bias measured without a ``test_anti`` split: the context-swap gap and the
    scores per (context cluster, label), per split."""
    gaps, groups = m.get("swap_gap"), m.get("groups")
    if not gaps and not groups:
        return ""
    splits = list(groups or gaps or {})
    head = ["split"]
    if gaps:
        metric = next(iter(gaps.values()))["metric"]
        head += [f"{metric} on an own-cluster scene", "on another cluster's", "swap gap (95 % CI)"]
    if groups:
        head += ["re-weighted accuracy", "worst-group accuracy"]
    rows = []
    for s in splits:
        row: list[Any] = [escape(s)]
        if gaps:
            g = gaps.get(s)
            row += [g["own"], g["swapped"], _with_ci(g["gap"], g["ci95"])] if g else ["", "", ""]
        if groups:
            row += [groups[s]["accuracy_reweighted"], groups[s]["accuracy_worst_group"]]
        rows.append(row)
    what = (
        "Bias measured on any data set, no <code>test_anti</code> split needed. The "
        "<b>context-swap gap</b> (on the test splits): every person cut out with its mask "
        "and pasted, where it "
        "stands, onto another picture of its own context cluster and onto a picture of another "
        "cluster; the metric on the first minus on the second. The <b>per-group scores</b>: "
        "accuracy with every (context cluster, emotion) pair weighted as if the two were "
        "independent, and the lowest accuracy over (emotion, agrees with its cluster's usual "
        "emotion or not) groups of at least 5 samples."
    )
    how = (
        "A model that reads the person has a swap gap near 0; one that learnt the scene's "
        "shortcut scores lower when the scene points elsewhere (on the synthetic benchmark the "
        "gap's rank correlation with the test_anti drop is 0.94 over 40 runs: "
        "docs/bias-report.md). A worst-group accuracy far below the plain one means the "
        "pictures whose context disagrees with their emotion are the ones it gets wrong."
    )
    missing = m.get("swap_gap_missing")
    note = f'<p class="muted">No context-swap gap: {escape(missing)}.</p>' if missing else ""
    words = _explain(what, how) if explain else ""
    return f"<h4>Bias without a test_anti split</h4>{words}{_table(head, rows)}{note}"


def _scene_errors_html(e: dict[str, Any] | None, explain: bool = True) -> str:
    if not e:
        return ""
    rows = [
        [escape(s), v["errors"], v["to_preferred"], v["share"], v["chance"], v["uniform_errors"]]
        for s, v in e["splits"].items()
    ]
    head = [
        "split",
        "errors",
        "naming the scene's emotion",
        "their share",
        "chance 1/(C−1)",
        "if errors were uniform",
    ]
    what = (
        f"The <code>{escape(e['dataset'])}</code> set records each sample's hidden scene, and "
        "each scene favours one emotion (the report reads it; no model does). Of the model's "
        "wrong answers on each split, the share that names the favoured emotion of the "
        "sample's scene."
    )
    how = (
        "A model that reads the person errs in no particular direction: a wrong answer names "
        "the scene's emotion with chance 1/(C−1), one of the C−1 wrong classes. The last "
        "column is that rate given the true emotions (lower where the true emotion may itself "
        "be the favoured one, which is then no error). On <code>test_anti</code>, where the "
        "scene's emotion is never the answer, a share far above chance means the errors are "
        "the scene speaking through the model."
    )
    words = _explain(what, how) if explain else ""
    return f"<h4>Errors toward the scene's emotion</h4>{words}{_table(head, rows)}"


def _intervention_html(n: dict[str, Any]) -> str:
    parts = [_ccim_html(n), _iern_html(n)]
    if not any(parts):
        return ""
    return (
        '<section id="intervention"><h2>4. What the intervention does, measured</h2>'
        f"{''.join(parts)}</section>"
    )


def _iern_html(n: dict[str, Any]) -> str:
    measured = [(m["label"], m["iern"]) for m in n["models"] if m.get("iern")]
    if not measured:
        return ""
    columns = {
        "train_mode_accuracy": "train-mode acc.",
        "eval_mode_accuracy": "eval-mode acc.",
        "own_map_accuracy": "own-map acc.",
        "prototype_distance": "prototype distance",
        "emotion_discriminator": "emotion disc. on E",
        "confounder_discriminator": "stratum disc. on C",
        "emotion_from_c": "emotion from C",
        "stratum_from_e": "stratum from E",
        "share_confusion": "share confusion",
        "share_reconstruction": "share reconstruction",
        "share_classification": "share classification",
    }
    head, keys = ["model", *columns.values()], list(columns)
    rows = [[f"<code>{escape(label)}</code>", *(v.get(k) for k in keys)] for label, v in measured]
    split = escape(measured[0][1]["split"])
    what = (
        "IERN splits the backbone's map into an emotion map E and a confounder map C, and "
        "classifies E recombined with each stratum's prototype (the mean over strata). These "
        f"numbers, on the <code>{split}</code> split without augmentation, show which part "
        "works."
    )
    how = (
        "<b>Train-mode vs eval-mode accuracy</b>: the same pictures with batch statistics (as "
        "training sees them) and with the running statistics (as evaluation scores them); a "
        "gap is the batch-norm layers, not the data. <b>Own-map accuracy</b>: the classifier on "
        "E recombined with the sample's own C instead of each prototype: far above the "
        "train-mode accuracy, the substitution costs what the gap says. "
        "<b>Prototype distance</b>: ‖prototype − the stratum's mean C‖ / ‖mean C‖, averaged "
        "over strata; near 1 or above, the adjustment averages over maps unlike any real "
        "confounder map. <b>Discriminators</b>: each on its own map (high: the map carries "
        "its factor) and on the other (near chance: the split is clean). <b>Shares</b>: each "
        "loss's part of the gradient norm on the emotion generator's weights."
    )
    return f"<h3>IERN</h3>{_explain(what, how)}{_table(head, rows)}"


def _ccim_html(n: dict[str, Any]) -> str:
    measured = [(m["label"], m["ccim"]) for m in n["models"] if m.get("ccim")]
    if not measured:
        return ""
    c = measured[0][1]
    metric = c["metric"]
    head = [
        "split",
        "samples",
        "H(λ) nats",
        "H(λ) / log N",
        "argmax λ = own cluster",
        "largest cluster",
        "share of g W_g",
        f"{metric} as is",
        f"{metric}, g frozen",
        "frozen − as is",
    ]
    what = (
        f"CCIM ({escape(c['attention'])} attention over N = {c['prototypes']:,} context "
        "prototypes z_i) weighs the prototypes by its attention λ from the sample's feature h, "
        "forms the expected confounder g = Σ_i λ_i z_i P(z_i) and classifies "
        "h W_h + g W_g. These numbers show, per split, whether that machinery does anything."
    )
    how = (
        f"<b>H(λ)</b>, the entropy of λ averaged over samples: log N = {c['log_prototypes']:.2f}"
        " nats (share 1) means λ is uniform, so that g is the same for every sample; lower "
        "means λ singles out a few prototypes. <b>argmax λ = own cluster</b>: how often the "
        "prototype λ weighs most is the one nearest the sample's own masked context (its "
        "context cluster, as in section 1), beside the largest cluster's share (what naming "
        "one prototype for every sample scores): near or below it, λ does not find the "
        "sample's context. <b>Share of g W_g</b>: ‖g W_g‖ / (‖h W_h‖ + ‖g W_g‖) averaged over "
        "samples, the part of the fused feature that g contributes; near 0, the head sees h "
        f"alone. <b>g frozen</b>: the {metric} with every sample's g replaced by its mean over "
        f"the <code>{escape(c['train_split'])}</code> split. If it barely changes, the "
        "per-sample g carries nothing the model uses: CCIM then acts as a layer on h, not as "
        "an adjustment over contexts."
    )
    parts = []
    for label, c in measured:
        rows = [
            [
                escape(s),
                v["n"],
                v["lambda_entropy"],
                v["lambda_entropy_share"],
                v["argmax_is_own_cluster"],
                v["own_cluster_majority"],
                v["g_norm_share"],
                v["metric_as_is"],
                v["metric_g_frozen"],
                v["metric_difference"],
            ]
            for s, v in c["splits"].items()
        ]
        title = f"<h3><code>{escape(label)}</code></h3>" if len(n["models"]) > 1 else ""
        notes = "".join(f'<p class="note">{escape(t)}</p>' for t in c["notes"])
        parts.append(f"{title}{_table(head, rows)}{notes}")
    return f"{_explain(what, how)}{''.join(parts)}"


def _provenance_html(n: dict[str, Any]) -> str:
    e, c, made = n["embedding"], n["clusters"], n.get("provenance") or {}
    interval = n.get("interval") or {}
    resamples = ", ".join(f"{k} {v:,}" for k, v in (interval.get("resamples") or {}).items())
    rows = []
    if made.get("command"):
        rows.append(["command", f"<code>{escape(made['command'])}</code>"])
    if made:
        versions = ", ".join(
            f"{k} {escape(str(made[k]))}"
            for k in ("deconfound", "torch", "scikit-learn", "python")
            if made.get(k)
        )
        rows += [
            ["made", f"{escape(made['created'])} on {escape(str(made.get('host') or '?'))}"],
            ["versions", versions],
        ]
    rows += [
        ["scene backbone", f"<code>{escape(str(e['backbone']))}</code>"],
        ["its weights", f"<code>{escape(str(e['weights'] or 'random (seeded)'))}</code>"],
        [
            "masked image",
            f"side {e['image_size']} px, the person filled with {escape(e['mask_fill'])}",
        ],
        ["clusters", "a dictionary's centres" if c["source"] == "dictionary" else "K-means"],
        ["probe", "standardised embeddings, scikit-learn LogisticRegression (C = 1)"],
    ]
    if interval:
        rows.append(
            [
                "intervals",
                f"{interval['level']:.0%} {escape(interval['method'])} (SciPy, seed "
                f"{interval['seed']}; resamples: {escape(resamples)})",
            ]
        )
    notes = "".join(f'<p class="note">{escape(t)}</p>' for t in n["notes"])
    config = ""
    if made.get("config"):
        text = yaml.safe_dump(made["config"], sort_keys=False, allow_unicode=True)
        config = (
            f"<details><summary>The resolved config</summary><pre>{escape(text)}</pre></details>"
        )
    return (
        '<section id="made"><h2>How this was made</h2>'
        f"{_table(['', ''], rows)}{config}{notes}"
        '<p class="muted">Every number on this page is in <code>report.json</code> beside '
        "it.</p></section>"
    )


def _finite(value: Any) -> Any:
    """``value`` with NaN and infinities (not JSON) replaced by None."""
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value


def _previous_figures(path: Path) -> set[str]:
    try:
        return set(json.loads(path.read_text())["figures"].values())
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return set()

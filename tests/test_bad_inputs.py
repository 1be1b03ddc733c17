"""Bad input to every command: corrupt images, missing files, malformed annotations, wrong
dictionaries, NaN and infinity, impossible configs. Each stops with one line on stderr (``data
check``: one line per problem) that names the file or config key and the cause, and leaves no
partial artifact behind: no temporary file, checkpoint, dictionary, feature chunk or cache."""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import pickle
import random
import shutil
import warnings
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import one_epoch_overrides
from formats import write_affectnet, write_fer2013, write_groupwalk, write_mixbasic, write_rafdb
from safetensors.torch import save_file
from test_fer import AFFECT, TEST, TRAIN, affect_row, fer_rows, mix_labels
from test_groupwalk import rows as groupwalk_rows

from deconfound.causal import ConfounderDictionary
from deconfound.causal.dictionary import FORMAT
from deconfound.cli import main
from deconfound.engine import EmotionModule

# --- helpers ------------------------------------------------------------------------------------

SMALL = {"train": 64, "val": 32, "test_iid": 8, "test_balanced": 8, "test_anti": 8}
"""Rows per split of the small copy of the tiny set that these tests damage."""


def fast(root: Path, name: str = "bad") -> list[str]:
    """Overrides that train EMOT-Net on ``root`` in a second or two, into ``runs/<name>``."""
    return [
        f"data.root={root}",
        "data.view_sizes={body: 32, whole: 32}",
        "data.batch_size=32",
        "trainer.max_epochs=1",
        "trainer.progress_bar=false",
        "trainer.accelerator=cpu",
        "out_dir=runs",
        f"name={name}",
    ]


def files(top: Path) -> set[str]:
    return {p.relative_to(top).as_posix() for p in top.rglob("*") if p.is_file()}


def partial(new: set[str], caches: bool = False) -> list[str]:
    """The artifacts among ``new`` files that a failed command must not leave: temporaries,
    half-drawn sets, checkpoints, dictionaries, feature chunks, results, unfinished view
    caches, and (unless ``caches``: ``data check`` completes FER2013's pixel cache) other
    caches. (A complete view cache of a split that was read without error may stay.)"""
    return sorted(
        p
        for p in new
        if p.endswith((".tmp", ".ckpt", ".safetensors", "results.json"))
        or ".partial" in p
        or ("/.deconfound-cache/views/" in p and not _complete_view_cache(Path(p).parent))
        or (
            (p.endswith(".npy") or ".deconfound-cache" in p)
            and "/.deconfound-cache/views/" not in p
            and not caches
        )
    )


def _complete_view_cache(folder: Path) -> bool:
    try:
        return json.loads((folder / "manifest.json").read_text()).get("complete") is True
    except (OSError, ValueError):
        return False


def screen(err: str) -> list[str]:
    """The non-blank lines that ``err`` leaves on a terminal (a carriage return overwrites)."""
    lines = (line.rsplit("\r", 1)[-1] for line in err.split("\n"))
    return [line for line in lines if line.strip()]


def fails(
    capsys: pytest.CaptureFixture, argv: list[str], *needles: str, status: int = 2
) -> list[str]:
    """Run the command in the current folder; check its status, that stderr is one error line
    (or for ``data check``, a count and one line per problem) holding every needle, and that
    no partial artifact appeared. Returns stderr's lines."""
    before = files(Path.cwd())
    code = main(argv)
    err = capsys.readouterr().err
    lines = screen(err)
    assert code == status, err
    if status == 2:
        assert len(lines) == 1 and lines[0].startswith("deconfound: error: "), err
    else:
        assert lines[0] == f"{len(lines) - 1} problem(s):", err
        assert all(line.startswith("  ") for line in lines[1:]), err
    for needle in needles:
        assert needle in err, f"{needle!r} not in {err!r}"
    left = partial(files(Path.cwd()) - before, caches=status == 1)
    assert not left, left
    return lines


@pytest.fixture(scope="module")
def small_root(tiny_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first rows of each person split of the tiny set, their images (and for train and
    val, depth maps), and meta.json (so the set is read, never drawn again); treat as read-only."""
    root = tmp_path_factory.mktemp("small") / "set"
    rows = read_rows(tiny_root / "annotations.csv")
    kept = [r for s, n in SMALL.items() for r in [r for r in rows if r["split"] == s][:n]]
    write_rows(root / "annotations.csv", kept)
    for row in kept:
        depth = f"depth/{row['image']}"
        for rel in [row["image"]] + ([depth] if row["split"] in ("train", "val") else []):
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(tiny_root / rel, root / rel)
    for name in ("meta.json", "scenes.csv"):
        shutil.copyfile(tiny_root / name, root / name)
    return root


@pytest.fixture
def data(small_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private copy of the small set that a test may damage; the test runs in ``tmp_path``."""
    monkeypatch.chdir(tmp_path)
    return Path(shutil.copytree(small_root, tmp_path / "data"))


def read_rows(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def write_rows(path: Path, rows: list[dict[str, str]], columns: list[str] | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=columns or list(rows[0]), extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)


# --- the synthetic set: every damage through train, dictionary build and data check ----------

Damage = Callable[[Path, list[int]], tuple[str, list[Path]]]
"""Damages the rows (indices into annotations.csv) of a set; returns the cause the message
must give and the files of which it must name one."""


def _each_row(change: Callable[[dict[str, str]], None]) -> Damage:
    def damage(root: Path, picked: list[int]) -> tuple[str, list[Path]]:
        rows = read_rows(root / "annotations.csv")
        for i in picked:
            change(rows[i])
        write_rows(root / "annotations.csv", rows)
        return "", [root / "annotations.csv"]

    return damage


def _images(change: Callable[[Path], None], cause: str) -> Damage:
    def damage(root: Path, picked: list[int]) -> tuple[str, list[Path]]:
        rows = read_rows(root / "annotations.csv")
        paths = [root / rows[i]["image"] for i in picked]
        for path in paths:
            change(path)
        return cause, paths

    return damage


def _with_cause(damage: Damage, cause: str) -> Damage:
    return lambda root, picked: (cause, damage(root, picked)[1])


def _drop_column(root: Path, picked: list[int]) -> tuple[str, list[Path]]:
    rows = read_rows(root / "annotations.csv")
    write_rows(root / "annotations.csv", rows, [c for c in rows[0] if c != "scene"])
    return "missing column(s) scene in the header", [root / "annotations.csv"]


def _short_rows(root: Path, picked: list[int]) -> tuple[str, list[Path]]:
    path = root / "annotations.csv"
    lines = path.read_text().splitlines()
    for i in picked:  # line 0 is the header
        lines[i + 1] = ",".join(lines[i + 1].split(",")[:3])
    path.write_text("\n".join(lines) + "\n")
    return "column 'person_y1' must be an integer, got ''", [path]


def _not_text(root: Path, picked: list[int]) -> tuple[str, list[Path]]:
    path = root / "annotations.csv"
    path.write_bytes(b"\xff\xfe\x00\x00" + random.Random(0).randbytes(64))
    return "not a readable CSV file", [path]


def _no_annotations(root: Path, picked: list[int]) -> tuple[str, list[Path]]:
    (root / "annotations.csv").unlink()
    return "annotation file not found", [root / "annotations.csv"]


def _truncate(path: Path) -> None:
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])


def _set(**cells: str) -> Callable[[dict[str, str]], None]:
    return lambda row: row.update(cells)


def _x2_before_x1(row: dict[str, str]) -> None:
    row["person_x2"] = str(int(row["person_x1"]) - 1)


DAMAGES: dict[str, Damage] = {
    "truncated-png": _images(_truncate, "cannot decode image (image file is truncated)"),
    "garbage-bytes": _images(lambda p: p.write_bytes(b"not a png " * 20), "not a readable image"),
    "missing-image": _images(Path.unlink, "not found; restore the file or remove the row"),
    "missing-annotations": _no_annotations,
    "box-x2-before-x1": _with_cause(_each_row(_x2_before_x1), "has non-positive size"),
    "box-outside-image": _with_cause(
        _each_row(_set(face_y2="500")), "lies outside the 64x64 image"
    ),
    "unknown-emotion": _with_cause(_each_row(_set(emotion="bored")), "unknown emotion 'bored'"),
    "non-integer-field": _with_cause(
        _each_row(_set(person_y1="4.5")), "column 'person_y1' must be an integer, got '4.5'"
    ),
    "scene-out-of-range": _with_cause(_each_row(_set(scene="99")), "scene id 99 outside 0..13"),
    "unknown-split": _with_cause(_each_row(_set(split="training")), "unknown split 'training'"),
    "missing-column": _drop_column,
    "short-row": _short_rows,
    "not-utf8": _not_text,
}


def _command(command: str, root: Path) -> tuple[list[str], int]:
    if command == "train":
        return ["train", "--config", "emotnet_synthetic", *fast(root)], 2
    if command == "dictionary":
        return [
            "dictionary", "build", "--config", "emotnet_synthetic", f"data.root={root}",
            "model.dictionary=dicts/d.safetensors", "dictionary.weights=null",
            "dictionary.image_size=32", "dictionary.num_clusters=4",
        ], 2  # fmt: skip
    return ["data", "check", str(root), "--dataset", "synthetic"], 1


@pytest.mark.parametrize("command", ["train", "dictionary", "check"])
@pytest.mark.parametrize("damage", list(DAMAGES))
def test_a_damaged_synthetic_set_is_named_by_every_command(
    damage: str, command: str, data: Path, capsys: pytest.CaptureFixture
) -> None:
    # the first training row (dictionary build fails on it) and the first validation row
    # (training reads val first, for its sanity check)
    cause, named = DAMAGES[damage](data, [0, SMALL["train"]])
    argv, status = _command(command, data)
    lines = fails(capsys, argv, cause, status=status)
    for line in lines[1:] if status == 1 else lines:
        assert any(str(p) in line for p in named), line
    if command == "dictionary":  # the feature cache may keep its manifest, never a chunk
        assert not (data.parent / "dicts" / "d.safetensors").exists()


# --- the real data sets' formats ----------------------------------------------------------------


def _groupwalk(root: Path, change: Callable[[dict], None]) -> Path:
    rows = groupwalk_rows()
    change(rows[2])  # a validation row (row 4), read before any training
    write_groupwalk(root, rows)
    return root / "annotations.csv"


def _groupwalk_short_row(root: Path) -> Path:
    path = _groupwalk(root, lambda row: None)
    lines = path.read_text().splitlines()
    lines[3] = ",".join(lines[3].split(",")[:7])  # row 4 without its emotion and split
    path.write_text("\n".join(lines) + "\n")
    return path


def _mixbasic(root: Path, labels: dict | None = None, extra: list[str] = ()) -> Path:
    write_mixbasic(root, [*TRAIN, *extra], list(TEST), labels or mix_labels())
    return root / "train_ids_bias100v1.csv"


def _affectnet(root: Path, row: dict) -> Path:
    root.mkdir(parents=True)
    train = [*AFFECT["training.csv"], row]
    write_affectnet(root, {"training.csv": train, "validation.csv": AFFECT["validation.csv"]})
    return root / "training.csv"


def _fer(root: Path, row: tuple) -> Path:
    return write_fer2013(root, [*fer_rows(), row])


def _mixbasic_binary_list(root: Path) -> Path:
    path = _mixbasic(root)
    path.write_bytes(b"\xff\xfe\x00garbage\x00")
    return path


def _mixbasic_bad_pickle(root: Path) -> Path:
    _mixbasic(root)
    (root / "emotion_labels.pkl").write_bytes(pickle.dumps(mix_labels())[:20])
    return root / "emotion_labels.pkl"


def _mixbasic_missing_image(root: Path) -> Path:
    _mixbasic(root)
    (root / "CKPlus/images/S005_001_00000009.png").unlink()
    return root / "train_ids_bias100v1.csv"


def _rafdb(root: Path, label: int = 1) -> Path:
    entries = [("train_00001.jpg", 1), ("train_00002.jpg", label), ("test_0001.jpg", 2)]
    return write_rafdb(root, entries)


def _rafdb_binary(root: Path) -> Path:
    path = _rafdb(root)
    path.write_bytes(b"\xff\xfe\x00\x01 bad")
    return path


REAL: dict[str, tuple[str, Callable[[Path], Path], str]] = {
    # name: (data set, writer of the damaged copy -> the file to name, cause)
    "groupwalk-x2-before-x1": (
        "groupwalk", lambda r: _groupwalk(r, lambda row: row.update(x2=2)),
        "row 4: person box (6, 6, 2, 60) has non-positive size",
    ),
    "groupwalk-box-outside": (
        "groupwalk", lambda r: _groupwalk(r, lambda row: row.update(y2=900)),
        "row 4: person box (6, 6, 32, 900) lies outside the 96x64 image",
    ),
    "groupwalk-unknown-emotion": (
        "groupwalk", lambda r: _groupwalk(r, lambda row: row.update(emotion="Bored")),
        "row 4: unknown emotion 'Bored'",
    ),
    "groupwalk-non-integer": (
        "groupwalk", lambda r: _groupwalk(r, lambda row: row.update(x1="abc")),
        "row 4: column 'x1' must be an integer, got 'abc'",
    ),
    "groupwalk-unknown-split": (
        "groupwalk", lambda r: _groupwalk(r, lambda row: row.update(split="training")),
        "row 4: unknown split 'training'",
    ),
    "groupwalk-short-row": ("groupwalk", _groupwalk_short_row, "row 4: unknown split ''"),
    "mixbasic-unknown-label": (
        "mixbasic", lambda r: _mixbasic(r, mix_labels(ckplus_S005_001_00000009="bored")),
        "label 'bored' of 'ckplus_S005_001_00000009' is not one of",
    ),
    "mixbasic-unknown-source": (
        "mixbasic", lambda r: _mixbasic(r, extra=["Foo/images/x.png"]),
        "line 13: unknown source 'Foo'",
    ),
    "mixbasic-id-list-not-text": ("mixbasic", _mixbasic_binary_list, "not a text file"),
    "mixbasic-truncated-pickle": ("mixbasic", _mixbasic_bad_pickle, "not a plain pickled dict"),
    "mixbasic-missing-image": (
        "mixbasic", _mixbasic_missing_image, "S005_001_00000009.png not found"
    ),
    "affectnet-nan-valence": (
        "affectnet", lambda r: _affectnet(r, affect_row("x", 1, va=("nan", 0.1))),
        "row 23: column 'valence' must be a number in [-1, 1], got 'nan'",
    ),
    "affectnet-inf-arousal": (
        "affectnet", lambda r: _affectnet(r, affect_row("x", 1, va=(0.1, "inf"))),
        "row 23: column 'arousal' must be a number in [-1, 1], got 'inf'",
    ),
    "affectnet-non-integer": (
        "affectnet", lambda r: _affectnet(r, {**affect_row("x", 1), "face_x": "1.5"}),
        "row 23: column 'face_x' must be an integer, got '1.5'",
    ),
    "affectnet-unknown-code": (
        "affectnet", lambda r: _affectnet(r, affect_row("x", 12)),
        "row 23: expression 12 is not an AffectNet code (0-10)",
    ),
    "affectnet-empty-box": (
        "affectnet", lambda r: _affectnet(r, affect_row("x", 1, box=(10, 8, -5, 40))),
        "row 23: face box (10, 8, 5, 48) has non-positive size",
    ),
    "fer2013-unknown-emotion": (
        "fer2013", lambda r: _fer(r, (9, np.zeros(2304), "Training")),
        "row 11: emotion 9 must be 0-6",
    ),
    "fer2013-short-pixels": (
        "fer2013", lambda r: _fer(r, (1, np.zeros(100), "Training")),
        "row 11: 100 pixel values, expected 2304",
    ),
    "fer2013-nan-pixel": (
        "fer2013", lambda r: _fer(r, (1, " ".join(["nan"] * 2304), "Training")),
        "row 11: pixel value 'nan' is not an integer",
    ),
    "fer2013-unknown-usage": (
        "fer2013", lambda r: _fer(r, (1, np.zeros(2304), "Train")), "row 11: unknown Usage 'Train'"
    ),
    "rafdb-unknown-label": ("rafdb", lambda r: _rafdb(r, label=9), "line 2: label '9'"),
    "rafdb-list-not-text": ("rafdb", _rafdb_binary, "not a text file"),
}  # fmt: skip
VIEWS = {"groupwalk": "{body: 32, whole: 32}"}


@pytest.mark.parametrize("command", ["train", "check"])
@pytest.mark.parametrize("case", list(REAL))
def test_a_damaged_real_format_is_named_by_train_and_data_check(
    case: str,
    command: str,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    monkeypatch.chdir(tmp_path)
    dataset, write, cause = REAL[case]
    root = tmp_path / dataset
    named = write(root)
    if command == "check":
        fails(capsys, ["data", "check", str(root), "--dataset", dataset], cause, status=1)
        return
    config = "groupwalk" if dataset == "groupwalk" else "mixbasic"
    views = VIEWS.get(dataset, "{face: 32}")
    streams = ("body", "context") if config == "groupwalk" else ()
    argv = [
        "train",
        "--config",
        config,
        *one_epoch_overrides(root, Path("runs"), views, 4, streams),
    ]
    if dataset != config:
        argv += [f"data.dataset={dataset}", "data.args={}"]
    fails(capsys, argv, cause, str(named))
    cache = root / ".deconfound-cache"  # FER2013's pixel cache: nothing (view caches aside)
    assert not [p for p in cache.glob("*") if p.name != "views"]


def test_a_missing_data_root_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    gone = tmp_path / "nowhere"
    fails(capsys, ["data", "check", str(gone), "--dataset", "emotic"], f"{gone}: not found")
    argv = ["train", "--config", "groupwalk", *one_epoch_overrides(gone, Path("runs"), "{}")]
    argv.append("data.view_sizes={body: 32, whole: 32}")
    fails(capsys, argv, f"{gone}/annotations.csv: annotation file not found")
    argv = ["train", "--config", "mixbasic", *one_epoch_overrides(gone, Path("runs"), "{}", 4, ())]
    argv.append("data.view_sizes={face: 32}")
    fails(capsys, argv, f"{gone}: mixbasic root not found; check data.root")


# --- sidecars: NaN, infinity, garbage ---------------------------------------------------------


@pytest.mark.parametrize(
    ("content", "cause"),
    [
        (np.array([[0.0, np.nan], [1.0, 2.0]]), "depth map holds NaN or infinity"),
        (np.array([[0.0, np.inf], [1.0, 2.0]]), "depth map holds NaN or infinity"),
        (np.zeros((2, 2, 2)), "a depth map must be 2-D"),
        (b"not an array", "cannot read the depth map"),
    ],
    ids=["nan", "inf", "3-d", "garbage"],
)
@pytest.mark.parametrize("command", ["train", "check"])
def test_a_bad_depth_map_is_named(
    content: np.ndarray | bytes,
    cause: str,
    command: str,
    data: Path,
    capsys: pytest.CaptureFixture,
) -> None:
    first_val = read_rows(data / "annotations.csv")[SMALL["train"]]["image"]
    depth = data / "depth" / first_val.replace(".png", ".npy")  # found before the PNG
    if isinstance(content, bytes):
        depth.write_bytes(content)
    else:
        np.save(depth, content)
    if command == "check":
        argv = ["data", "check", str(data), "--dataset", "synthetic", "--split", "val"]
        fails(capsys, [*argv, "--sidecar", "depth", "--no-decode"], str(depth), cause, status=1)
        return
    depth_only = ["model.name=single_stream", "model.args={view: depth, backbone: small_cnn}"]
    argv = ["train", "--config", "emotnet_synthetic", *fast(data), *depth_only]
    fails(capsys, [*argv, "data.view_sizes={depth: 32}"], str(depth), cause)


# --- confounder dictionaries ------------------------------------------------------------------


def _safetensors(path: Path, centres: torch.Tensor, prior: torch.Tensor, **header: str) -> None:
    save_file({"centres": centres, "prior": prior}, str(path), metadata=header or None)


def _nan_centres(path: Path) -> None:
    centres = torch.randn(4, 16)
    centres[1, 2] = float("nan")
    _safetensors(path, centres, torch.full((4,), 0.25), format=FORMAT, meta="{}")


DICTIONARIES: dict[str, tuple[Callable[[Path], object], str]] = {
    "random-bytes": (
        lambda p: p.write_bytes(random.Random(0).randbytes(256)), "not a safetensors dictionary"
    ),
    "other-safetensors": (
        lambda p: save_file({"weight": torch.ones(2)}, str(p)), "not a confounder dictionary"
    ),
    "nan-centres": (_nan_centres, "it holds NaN or infinite values; rebuild the dictionary"),
    "prior-sums-to-2": (
        lambda p: _safetensors(
            p, torch.randn(4, 16), torch.full((4,), 0.5), format=FORMAT, meta="{}"
        ),
        "prior must be non-negative and sum to 1 (sums to 2.000000)",
    ),
    "prior-of-other-size": (
        lambda p: _safetensors(
            p, torch.randn(4, 16), torch.full((3,), 1 / 3), format=FORMAT, meta="{}"
        ),
        "prior has shape (3,), expected (4,)",
    ),
    "metadata-not-json": (
        lambda p: _safetensors(
            p, torch.randn(4, 16), torch.full((4,), 0.25), format=FORMAT, meta="{oops"
        ),
        "its metadata is not JSON",
    ),
    "missing": (lambda p: None, "not found; build it with `deconfound dictionary build`"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(DICTIONARIES))
def test_a_bad_dictionary_is_named_before_training(
    case: str, small_root: Path, tmp_path: Path, monkeypatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    write, cause = DICTIONARIES[case]
    path = tmp_path / "dict.safetensors"
    write(path)
    argv = ["train", "--config", "emotnet_synthetic", *fast(small_root)]
    fails(capsys, [*argv, "model.intervention=ccim_dot", f"model.dictionary={path}"], cause)


@pytest.fixture(scope="module")
def trained(small_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with ``dict.safetensors`` (4 x 16) and ``runs/ccim``, EMOT-Net + CCIM trained
    one epoch with it on the small set (paths in its config relative to the folder)."""
    top = tmp_path_factory.mktemp("trained")
    with contextlib.chdir(top), contextlib.redirect_stdout(io.StringIO()):
        ConfounderDictionary(torch.randn(4, 16), torch.full((4,), 0.25)).save("dict.safetensors")
        assert main(["train", "--config", "emotnet_synthetic", *fast(small_root), *CCIM]) == 0
    return top


CCIM = [
    "name=ccim",
    "model.intervention=ccim_dot",
    "model.dictionary=dict.safetensors",
    "model.intervention_args={proj_dim: 16, out_features: 16, hidden: 32}",
]


def test_resuming_with_a_dictionary_of_another_width_is_refused(
    trained: Path,
    small_root: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
) -> None:
    # CCIM projects any dictionary width into its own space, so a fresh run takes any width;
    # the run saved with a 16-wide dictionary cannot continue on an 8-wide one
    monkeypatch.chdir(tmp_path)
    shutil.copytree(trained / "runs", tmp_path / "runs")
    ConfounderDictionary(torch.randn(4, 8), torch.full((4,), 0.25)).save("dict.safetensors")
    saved = {p: p.read_bytes() for p in (tmp_path / "runs").rglob("*.ckpt")}
    argv = ["train", "--config", "emotnet_synthetic", *fast(small_root), *CCIM]
    fails(
        capsys,
        [*argv, "trainer.max_epochs=2"],
        str(Path("runs/ccim/checkpoints/last.ckpt")),
        "size mismatch for model.intervention.",
        "model.dictionary",
    )
    assert {p: p.read_bytes() for p in saved} == saved  # the run is left as it was


# --- NaN and infinity in the config and in training -------------------------------------------


@pytest.mark.parametrize(
    ("value", "cause"),
    [
        ("nan", "'optim.lr' must be a finite number, got nan"),
        (".nan", "'optim.lr' must be a finite number, got nan"),
        ("inf", "'optim.lr' must be a finite number, got inf"),
        ("-.inf", "'optim.lr' must be a finite number, got -inf"),
        ("-1", "optim.lr must not be negative, got -1.0"),
        ("fast", "'optim.lr' must be float, got 'fast'"),
    ],
)
def test_a_non_finite_or_negative_learning_rate_is_refused(
    value: str, cause: str, small_root: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    monkeypatch.chdir(tmp_path)
    argv = ["train", "--config", "emotnet_synthetic", *fast(small_root), f"optim.lr={value}"]
    fails(capsys, argv, cause)
    assert not (tmp_path / "runs" / "bad" / "checkpoints").exists()


def test_a_nan_loss_stops_training_with_a_clear_message(
    small_root: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture,
    caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.chdir(tmp_path)
    caplog.set_level(logging.INFO)  # what the command's own logging set-up would print
    argv = ["train", "--config", "emotnet_synthetic", *fast(small_root), "optim.lr=1e12"]
    with warnings.catch_warnings(record=True) as shown:
        warnings.simplefilter("default")  # as a plain process shows them, on stderr
        fails(capsys, argv, "training loss became nan at step 1; lower optim.lr")
    assert not (tmp_path / "runs" / "bad" / "checkpoints").exists()
    # nothing else reaches a user's stderr: no warning, no log record
    assert [str(w.message) for w in shown] == []
    assert [r.getMessage() for r in caplog.records] == []


def test_weights_gone_non_finite_are_never_saved_as_a_checkpoint(
    small_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    # the last step of the epoch leaves NaN weights behind a finite loss: validation would
    # score them and save them as best.ckpt
    def poison(self: EmotionModule, outputs: object, batch: object, batch_idx: int) -> None:
        if batch_idx == self.trainer.num_training_batches - 1:
            with torch.no_grad():
                self.model.head.bias.fill_(float("nan"))

    monkeypatch.setattr(EmotionModule, "on_train_batch_end", poison)
    monkeypatch.chdir(tmp_path)
    argv = ["train", "--config", "emotnet_synthetic", *fast(small_root)]
    fails(capsys, argv, "weight model.head.bias became non-finite in epoch 0; lower optim.lr")
    assert not list(tmp_path.rglob("*.ckpt"))


# --- impossible configs ---------------------------------------------------------------------

SINGLE_WHOLE = ["model.name=single_stream", "model.args={view: whole, backbone: small_cnn}"]
IERN_ARGS = "model.intervention_args={strata: 3, channels: 16, map_size: 2}"

CONFIGS: dict[str, tuple[list[str], str]] = {
    "unknown-section": (["colour.depth=3"], "unknown key 'colour'; known keys here: data"),
    "unknown-key": (["data.colour=1"], "unknown key 'data.colour'"),
    "wrong-type": (["trainer.max_epochs=abc"], "'trainer.max_epochs' must be int, got 'abc'"),
    "negative-batch": (["data.batch_size=-32"], "'data.batch_size' must be at least 1, got -32"),
    "zero-batch": (["data.batch_size=0"], "'data.batch_size' must be at least 1, got 0"),
    "negative-workers": (["data.num_workers=-1"], "'data.num_workers' must be at least 0"),
    # (were they let through, the NaN loss of optim.lr=1e12 would end the run at once)
    "zero-epochs": (
        ["trainer.max_epochs=0", "optim.lr=1e12"], "'trainer.max_epochs' must be at least 1, got 0"
    ),
    "endless-epochs": (
        ["trainer.max_epochs=-1", "optim.lr=1e12"], "'trainer.max_epochs' must be at least 1"
    ),
    "view-size-zero": (
        ["data.view_sizes={body: 0, whole: 32}"], "'data.view_sizes.body' must be a positive"
    ),
    "view-size-text": (
        ["data.view_sizes={body: big, whole: 32}"], "'data.view_sizes.body' must be a positive"
    ),
    "view-missing": (["data.view_sizes={whole: 32}"], "data.view_sizes lacks a size for view(s)"),
    "unknown-model": (["model.name=vgg"], "unknown model 'vgg'"),
    "unknown-intervention": (["model.intervention=magic"], "unknown intervention 'magic'"),
    "unknown-backbone": (["model.args.backbone=nope"], "unknown backbone 'nope'"),
    "unknown-model-argument": (["model.args.colour=1"], "model 'emotnet': unknown argument"),
    "unknown-dataset": (["data.dataset=imagenet"], "unknown dataset 'imagenet'"),
    "unknown-reader-argument": (["data.args.colour=1"], "unknown argument 'colour'"),
    "unknown-split": (["data.val_split=nope"], "unknown split 'nope' for the synthetic set"),
    "unknown-loss": (["loss.name=hinge"], "unknown loss 'hinge'"),
    "unknown-optimizer": (["optim.optimizer=lion"], "unknown optim.optimizer 'lion'"),
    "unknown-scheduler": (["optim.scheduler=step"], "unknown optim.scheduler 'step'"),
    "bad-betas": (["optim.betas=[0.9]"], "optim.betas must be two numbers in [0, 1)"),
    "negative-weight-decay": (["optim.weight_decay=-0.1"], "optim.weight_decay must not be"),
    "ccim-without-dictionary": (["model.intervention=ccim_add"], "needs model.dictionary=PATH"),
    "iern-without-feature-map": (
        ["model.intervention=iern"], "iern needs a base model with a feature map"
    ),
    "iern-without-strata": (  # the synthetic set's scene is hidden: no method may read it
        [*SINGLE_WHOLE, "data.view_sizes={whole: 32}", "model.intervention=iern", IERN_ARGS],
        "model.intervention=iern needs each training sample's confounder stratum: give "
        "model.dictionary",
    ),
    "iern-unknown-argument": (
        [*SINGLE_WHOLE, "model.intervention=iern", "model.intervention_args={colour: 1}"],
        "method 'iern': unknown argument 'colour'",
    ),
    "unknown-method-argument": (
        ["model.intervention=paste", "model.intervention_args={colour: 1}"],
        "method 'paste': unknown argument 'colour'",
    ),
    "override-without-value": (["data.batch_size"], "must look like section.key=value"),
    "override-bad-yaml": (["data.view_sizes={body: 32"], "value is not valid YAML"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CONFIGS))
def test_an_impossible_config_is_named(
    case: str, small_root: Path, tmp_path: Path, monkeypatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    extra, cause = CONFIGS[case]
    argv = ["train", "--config", "emotnet_synthetic", *fast(small_root), *extra]
    fails(capsys, argv, cause)


def test_iern_on_a_data_set_without_strata_is_named(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    write_groupwalk(tmp_path / "gw", groupwalk_rows())
    argv = ["train", "--config", "groupwalk"]
    argv += one_epoch_overrides(tmp_path / "gw", Path("runs"), "{whole: 32}")
    argv += [*SINGLE_WHOLE, "model.intervention=iern", IERN_ARGS]
    fails(capsys, argv, "needs each training sample's confounder stratum", "model.dictionary")


@pytest.mark.parametrize(
    ("files_", "cause"),
    [
        ({"a.yaml": "extends: b.yaml\n", "b.yaml": "extends: a.yaml\n"}, "in a cycle"),
        ({"a.yaml": "extends: nowhere.yaml\n"}, "config 'nowhere.yaml' not found"),
        ({"a.yaml": "extends: [b.yaml, c.yaml]\n"}, "'extends' must name one config"),
        ({"a.yaml": "data: [1, 2]\n"}, "'data' must be a mapping, got [1, 2]"),
        ({"a.yaml": "data: {batch_size: 8\n"}, "a.yaml: not valid YAML"),
        ({"a.yaml": b"\xff\xfe\x00\x01"}, "a.yaml: not a text file"),
    ],
    ids=["cycle", "missing-parent", "two-parents", "section-not-mapping", "bad-yaml", "binary"],
)
def test_a_bad_config_file_is_named(
    files_: dict[str, str | bytes], cause: str, tmp_path: Path, monkeypatch, capsys
) -> None:
    monkeypatch.chdir(tmp_path)
    for name, text in files_.items():
        (tmp_path / name).write_bytes(text if isinstance(text, bytes) else text.encode())
    for argv in (["train", "--config", "a.yaml"], ["dictionary", "build", "--config", "a.yaml"]):
        fails(capsys, argv, cause)


# --- dictionary build: impossible settings --------------------------------------------------


@pytest.mark.parametrize(
    ("extra", "cause"),
    [
        (["dictionary.weights=scenes.ckpt"], "weights file scenes.ckpt not found"),
        (["dictionary.weights=junk.ckpt"], "junk.ckpt: cannot read weights"),
        (["dictionary.num_clusters=1000"], "num_clusters=1000 exceeds the 64 training samples"),
        (["dictionary.kmeans=magic"], "unknown dictionary.kmeans 'magic'"),
        (["dictionary.backbone=nope"], "unknown backbone 'nope'"),
        (["model.dictionary=."], "model.dictionary=. is a folder"),
        (["model.dictionary=null"], "set model.dictionary=PATH"),
    ],
    ids=["missing-weights", "junk-weights", "clusters", "kmeans", "backbone", "folder", "unset"],
)
def test_impossible_dictionary_settings_are_named(
    extra: list[str], cause: str, small_root: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "junk.ckpt").write_bytes(random.Random(0).randbytes(64))
    argv = ["dictionary", "build", "--config", "emotnet_synthetic", f"data.root={small_root}"]
    argv += ["model.dictionary=d.safetensors", "dictionary.weights=null"]
    fails(capsys, [*argv, "dictionary.image_size=32", "dictionary.num_clusters=4", *extra], cause)


# --- evaluate -------------------------------------------------------------------------------


def _junk(path: Path) -> None:
    path.write_bytes(random.Random(0).randbytes(128))


def _foreign(path: Path) -> None:
    torch.save({"state_dict": {}}, path)


def _truncated(best: Path) -> Callable[[Path], None]:
    return lambda path: path.write_bytes(best.read_bytes()[:4096])


def _nan_weights(best: Path) -> Callable[[Path], None]:
    def write(path: Path) -> None:
        ckpt = torch.load(best, weights_only=False)
        ckpt["state_dict"]["model.head.weight"].fill_(float("nan"))
        torch.save(ckpt, path)

    return write


@pytest.mark.parametrize(
    ("make", "cause"),
    [
        ("missing", "checkpoint x.ckpt not found"),
        ("junk", "x.ckpt: not a deconfound checkpoint"),
        ("foreign", "x.ckpt: not a deconfound checkpoint ('hyper_parameters')"),
        ("truncated", "x.ckpt: not a deconfound checkpoint"),
        ("nan-weights", "weight model.head.weight holds NaN or infinite values"),
    ],
)
def test_evaluate_names_a_bad_checkpoint(
    make: str, cause: str, trained: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    monkeypatch.chdir(tmp_path)
    best = trained / "runs/ccim/checkpoints/best.ckpt"
    writers = {
        "missing": lambda path: None,
        "junk": _junk,
        "foreign": _foreign,
        "truncated": _truncated(best),
        "nan-weights": _nan_weights(best),
    }
    writers[make](Path("x.ckpt"))
    fails(capsys, ["evaluate", "--checkpoint", "x.ckpt"], cause)


@pytest.mark.parametrize(
    ("extra", "cause"),
    [
        (["--split", "nope"], "unknown split 'nope' for the synthetic set"),
        (["model.name=vgg"], "unknown model 'vgg'"),
        (["data.colour=1"], "unknown key 'data.colour'"),
        (["model.args.fusion_dim=8"], "size mismatch for model.base.fusion.0.weight"),
        (["data.dataset=groupwalk"], "size mismatch for model.head.weight"),
    ],
    ids=["split", "model", "key", "model-args", "classes"],
)
def test_evaluate_names_an_override_that_does_not_fit(
    extra: list[str], cause: str, trained: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    monkeypatch.chdir(tmp_path)
    best = trained / "runs/ccim/checkpoints/best.ckpt"
    fails(capsys, ["evaluate", "--checkpoint", str(best), *extra], cause)


def test_evaluate_names_a_corrupt_test_image(
    trained: Path, data: Path, capsys: pytest.CaptureFixture
) -> None:
    first_anti = next(r for r in read_rows(data / "annotations.csv") if r["split"] == "test_anti")
    _truncate(data / first_anti["image"])
    argv = ["evaluate", "--checkpoint", str(trained / "runs/ccim/checkpoints/best.ckpt")]
    argv += ["--split", "test_anti", f"data.root={data}"]
    fails(capsys, argv, f"{data / first_anti['image']}: cannot decode image")


# --- predict and bias-report -------------------------------------------------------------------


def _predict_inputs(data: Path, damage: str) -> tuple[list[str], str]:
    """Inputs to ``predict`` (images and a box file in the current folder), damaged as named;
    returns the arguments and the cause its error must give."""
    rows = [r for r in read_rows(data / "annotations.csv") if r["split"] == "val"][:3]
    images = [data / r["image"] for r in rows]
    box = ",".join(rows[0][f"person_{k}"] for k in ("x1", "y1", "x2", "y2"))
    table = {
        "truncated-image": (lambda: _truncate(images[0]), [str(images[0])], "cannot decode"),
        "garbage-image": (
            lambda: images[0].write_bytes(b"not a png " * 20),
            [str(images[0])],
            "cannot decode image",
        ),
        "missing-image": (lambda: None, ["gone.png"], "gone.png: image not found"),
        "csv-no-box-columns": (
            lambda: Path("b.csv").write_text(f"file\n{images[0]}\n"),
            ["b.csv"],
            "b.csv: line 1: no column x1, y1, x2, y2",
        ),
        "csv-nan-box": (
            lambda: Path("b.csv").write_text(f"file,x1,y1,x2,y2\n{images[0]},nan,0,9,9\n"),
            ["b.csv"],
            "b.csv: line 2: the box must be four pixel numbers",
        ),
        "csv-inf-box": (
            lambda: Path("b.csv").write_text(f"file,x1,y1,x2,y2\n{images[0]},0,0,inf,9\n"),
            ["b.csv"],
            "b.csv: line 2: the box must be four pixel numbers",
        ),
        "csv-box-outside": (
            lambda: Path("b.csv").write_text(f"file,x1,y1,x2,y2\n{images[0]},0,0,5000,9\n"),
            ["b.csv"],
            "b.csv: line 2: box",
        ),
        "csv-good-box-bad-image": (
            lambda: (Path("b.csv").write_text(f"file,x1,y1,x2,y2\n{images[1]},{box}\n"),
                     images[1].write_bytes(b"")),
            ["b.csv"],
            str(images[1]),
        ),
    }  # fmt: skip
    damage_it, argv, cause = table[damage]
    damage_it()
    return [*argv, *map(str, images[2:])], cause


@pytest.mark.parametrize(
    "damage",
    [
        "truncated-image",
        "garbage-image",
        "missing-image",
        "csv-no-box-columns",
        "csv-nan-box",
        "csv-inf-box",
        "csv-box-outside",
        "csv-good-box-bad-image",
    ],
)
def test_predict_names_a_bad_image_or_box_file_and_writes_nothing(
    damage: str, trained: Path, data: Path, capsys: pytest.CaptureFixture
) -> None:
    inputs, cause = _predict_inputs(data, damage)
    best = str(trained / "runs/ccim/checkpoints/best.ckpt")
    argv = [
        "predict",
        "--checkpoint",
        best,
        *inputs,
        "--out",
        "p.jsonl",
        "--draw",
        "drawn",
        "--no-progress",
    ]
    fails(capsys, argv, cause)
    assert not Path("p.jsonl").exists() and not Path("drawn").exists()


def test_predict_names_a_bad_checkpoint(data: Path, capsys: pytest.CaptureFixture) -> None:
    _junk(Path("x.ckpt"))
    image = next(data.rglob("*.png"))
    fails(
        capsys,
        ["predict", "--checkpoint", "x.ckpt", str(image), "--out", "p.jsonl"],
        "x.ckpt: not a",
    )
    assert not Path("p.jsonl").exists()


@pytest.mark.parametrize("damage", ["truncated-png", "missing-image", "unknown-emotion"])
def test_bias_report_names_a_damaged_set_and_writes_no_report(
    damage: str, data: Path, capsys: pytest.CaptureFixture
) -> None:
    cause, named = DAMAGES[damage](data, [0, SMALL["train"]])
    argv = [
        "bias-report", "--config", "emotnet_synthetic", "--out", "report", f"data.root={data}",
        "dictionary.weights=null", "dictionary.image_size=32", "dictionary.num_clusters=4",
        "trainer.progress_bar=false",
    ]  # fmt: skip
    (line,) = fails(capsys, argv, cause)
    assert any(str(p) in line for p in named), line
    assert not Path("report").exists() or not any(Path("report").iterdir())


# --- synth, models, demo --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("argv", "cause"),
    [
        (["synth", "--out", "s", "--rho", "nan"], "rho must lie in [0, 1], got nan"),
        (["synth", "--out", "s", "--image-size", "8"], "image_size must be at least 32"),
        (["synth", "--out", "s", "--size", "train=-3"], "--size 'train=-3' must be SPLIT=N"),
        (["synth", "--out", "file.txt"], "file.txt exists and is not a synthetic set"),
        (["synth", "--out", "full"], "full exists and is not a synthetic set"),
        (["synth", "--out", "broken"], "broken/meta.json is unreadable"),
        (["models", "--dictionary", "0", "16"], "--dictionary N D must be two positive sizes"),
        (["models", "--dictionary", "-1", "16"], "--dictionary N D must be two positive sizes"),
        (["models", "--backbone", "nope"], "unknown backbone 'nope'"),
        (["demo", "--out", "file.txt", "--quick"], "--out file.txt is a file"),
        (["demo", "--out", "d", "trainer.max_epochs=abc"], "'trainer.max_epochs' must be int"),
        (["demo", "--method", "iern", "--out", "d", "data.batch_size=0"], "'data.batch_size'"),
    ],
    ids=lambda v: "-".join(v)[:40] if isinstance(v, list) else None,
)
def test_synth_models_and_demo_name_bad_arguments(
    argv: list[str], cause: str, tmp_path: Path, monkeypatch, capsys
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("file.txt").write_text("not a folder\n")
    Path("full").mkdir()
    Path("full/notes.txt").write_text("mine\n")
    Path("broken").mkdir()
    Path("broken/meta.json").write_text("{not json")
    fails(capsys, argv, cause)
    assert Path("file.txt").read_text() == "not a folder\n"
    assert sorted(files(Path("full"))) == ["notes.txt"]


# --- what a refused run leaves ----------------------------------------------------------------


def test_a_refused_run_leaves_no_run_folder(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    DAMAGES["unknown-emotion"](data, [SMALL["train"]])
    fails(capsys, ["train", "--config", "emotnet_synthetic", *fast(data)], "unknown emotion")
    fails(capsys, ["train", "--config", "emotnet_synthetic", *fast(data), "model.name=vgg"])
    assert not (tmp_path / "runs").exists(), sorted(files(tmp_path / "runs"))

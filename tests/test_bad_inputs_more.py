"""More bad input, in the real formats, each case a mechanism rather than a file: images that a
plain ``convert("RGB")`` decodes wrongly without a word (16-bit, EXIF-rotated, CMYK, palette,
transparent, decompression bombs, images too small for the face detector), annotation tables
and configs read too trustingly (a byte-order mark, duplicate rows, duplicate YAML keys, YAML
errors, values outside an option's choices, trainer options Lightning would refuse), outputs
that cannot be written, errors in DataLoader workers, real signals to a real training process,
two real runs into one folder, a foreign ``last.ckpt``, and predict's walk of its input
folders (symbolic-link loops, its own drawings). Each stops in one line and leaves nothing
partial behind."""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from test_bad_inputs import SMALL, fails, fast, files, read_rows, screen, write_rows
from test_predict import MICRO

from deconfound.cli import main
from deconfound.config import load_config
from deconfound.data.annotations import image_size
from deconfound.data.faces import read_box_file
from deconfound.data.sample import Sample
from deconfound.data.synthetic import SyntheticReader, generate
from deconfound.data.views import Source, load_image, make_views
from deconfound.engine import train
from deconfound.errors import DataError, one_line

ORIENTATION = 0x0112  # the EXIF tag


@pytest.fixture(scope="module")
def small_set(tiny_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The first rows of each person split of the tiny set (``SMALL``) with their images, and
    its meta.json (so that the set is read, never drawn again); treat as read-only."""
    root = tmp_path_factory.mktemp("small") / "set"
    rows = read_rows(tiny_root / "annotations.csv")
    kept = [r for s, n in SMALL.items() for r in [r for r in rows if r["split"] == s][:n]]
    write_rows(root / "annotations.csv", kept)
    for row in kept:
        (root / row["image"]).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(tiny_root / row["image"], root / row["image"])
    for name in ("meta.json", "scenes.csv"):
        shutil.copyfile(tiny_root / name, root / name)
    return root


@pytest.fixture
def data(small_set: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A private copy of the small set that a test may damage; the test runs in ``tmp_path``."""
    monkeypatch.chdir(tmp_path)
    return Path(shutil.copytree(small_set, tmp_path / "data"))


def _exif(orientation: int) -> Image.Exif:
    exif = Image.Exif()
    exif[ORIENTATION] = orientation
    return exif


def _picture(w: int = 48, h: int = 32) -> Image.Image:
    """Red growing to the right, green downwards: smooth (JPEG keeps it), and any turn or flip
    of it differs from it."""
    y, x = np.mgrid[0:h, 0:w]
    rgb = np.stack([x * 255 // max(w - 1, 1), y * 255 // max(h - 1, 1), np.full_like(x, 60)], -1)
    return Image.fromarray(rgb.astype(np.uint8))


def _rows(path: Path) -> list[int]:
    """The indices of annotations.csv's training rows."""
    return [i for i, r in enumerate(read_rows(path)) if r["split"] == "train"]


# --- images: one decoder, in the formats that plain conversion gets wrong --------------------


def test_16_and_32_bit_and_float_pixels_are_scaled_to_8_bits_not_clipped(tmp_path: Path) -> None:
    ramp = np.linspace(0, 65535, 40 * 30).reshape(30, 40).round().astype(np.uint16)
    Image.fromarray(ramp).save(tmp_path / "grey16.png")  # PIL writes a 16-bit grey PNG
    assert Image.open(tmp_path / "grey16.png").mode == "I;16"
    got = np.asarray(load_image(tmp_path / "grey16.png"))
    assert got.shape == (30, 40, 3) and (got[..., 0] == got[..., 2]).all()
    np.testing.assert_allclose(got[..., 0], ramp / 257, atol=0.51)  # 65535 -> 255, not white
    Image.fromarray(ramp.astype(np.int32) * 2).save(tmp_path / "int32.tif")  # beyond 16 bits
    got = np.asarray(load_image(tmp_path / "int32.tif"))[..., 0]
    np.testing.assert_allclose(got, ramp / 257, atol=0.51)  # scaled by its maximum
    Image.fromarray((ramp / 65535).astype(np.float32)).save(tmp_path / "float.tif")
    got = np.asarray(load_image(tmp_path / "float.tif"))[..., 0]
    np.testing.assert_allclose(got, ramp / 257, atol=0.51)  # 0..1 floats


def test_cmyk_palette_and_transparent_images_become_the_right_rgb(tmp_path: Path) -> None:
    Image.new("CMYK", (16, 16), (0, 255, 255, 0)).save(tmp_path / "cmyk.jpg", quality=100)
    assert Image.open(tmp_path / "cmyk.jpg").mode == "CMYK"
    r, g, b = load_image(tmp_path / "cmyk.jpg").getpixel((8, 8))
    assert r > 245 and g < 10 and b < 10  # no cyan, full magenta and yellow: red
    picture = _picture()
    picture.convert("P", palette=Image.Palette.ADAPTIVE).save(tmp_path / "palette.png")
    assert Image.open(tmp_path / "palette.png").mode == "P"
    want = np.asarray(Image.open(tmp_path / "palette.png").convert("RGB"))
    assert (np.asarray(load_image(tmp_path / "palette.png")) == want).all()
    # transparency is composed on black (the colour of a masked person)
    keyed = Image.new("P", (4, 4), 0)
    keyed.putpalette([255, 255, 255] + [0, 0, 255] * 255)
    keyed.putpixel((1, 1), 1)
    keyed.save(tmp_path / "keyed.png", transparency=0)
    got = load_image(tmp_path / "keyed.png")
    assert got.getpixel((0, 0)) == (0, 0, 0) and got.getpixel((1, 1)) == (0, 0, 255)
    Image.new("RGBA", (4, 4), (200, 100, 50, 128)).save(tmp_path / "rgba.png")
    assert load_image(tmp_path / "rgba.png").getpixel((0, 0)) == (100, 50, 25)
    Image.new("LA", (4, 4), (200, 0)).save(tmp_path / "la.png")
    assert load_image(tmp_path / "la.png").getpixel((0, 0)) == (0, 0, 0)
    assert load_image(Image.open(tmp_path / "rgba.png")).getpixel((0, 0)) == (100, 50, 25)


@pytest.mark.parametrize("orientation", [3, 6, 8])
@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_the_exif_orientation_is_applied_to_the_pixels_and_the_header_size(
    orientation: int, suffix: str, tmp_path: Path
) -> None:
    upright = _picture(48, 32)
    undo = {3: Image.Transpose.ROTATE_180, 6: Image.Transpose.ROTATE_90}
    stored = upright.transpose(undo.get(orientation, Image.Transpose.ROTATE_270))
    path = tmp_path / f"phone{suffix}"
    stored.save(path, exif=_exif(orientation), quality=100)
    got = load_image(path)
    assert got.size == (48, 32)
    tolerance = 0 if suffix == ".png" else 3  # (JPEG is lossy)
    assert np.abs(np.asarray(got, int) - np.asarray(upright, int)).mean() <= tolerance
    # the header size, which boxes are checked against, is the displayed one too
    assert image_size(path, "here") == (48, 32)
    assert Source(Sample(path, None, None, (0,))).image_size() == (48, 32)


def test_a_sideways_training_image_gives_the_views_of_the_upright_one(
    data: Path, capsys: pytest.CaptureFixture
) -> None:
    reader = SyntheticReader(data)
    sample = reader.samples("train")[0]
    sizes = {"body": 32, "face": 16, "context": 32, "whole": 32}
    want = make_views(sample, sizes)
    upright = Image.open(sample.image).convert("RGB")
    upright.transpose(Image.Transpose.ROTATE_90).save(sample.image, exif=_exif(6))
    got = make_views(SyntheticReader(data).samples("train")[0], sizes)
    for view, tensor in want.items():
        assert torch.equal(got[view], tensor), view
    assert main(["data", "check", str(data), "--dataset", "synthetic"]) == 0, capsys.readouterr()


@pytest.mark.parametrize("pixels", [150 * 100, 300 * 200], ids=["over-the-limit", "over-twice"])
def test_a_decompression_bomb_is_one_line_naming_the_file(
    pixels: int, data: Path, capsys: pytest.CaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Pillow warns past MAX_IMAGE_PIXELS and raises past twice that; both are refused
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 10_000)  # the set's own are 64 x 64
    rows = read_rows(data / "annotations.csv")
    bomb = data / rows[_rows(data / "annotations.csv")[3]]["image"]
    side = 150 if pixels == 150 * 100 else 300
    _picture(side, pixels // side).save(bomb)
    for argv, status in [
        (["train", "--config", "emotnet_synthetic", *fast(data)], 2),
        (["data", "check", str(data), "--dataset", "synthetic"], 1),
    ]:
        fails(capsys, argv, str(bomb), "decompression-bomb limit", status=status)
    assert not Path("runs").exists()
    with pytest.raises(DataError, match="decompression-bomb limit of 10,000"):
        load_image(bomb)


# --- tables and configs ---------------------------------------------------------------------


def test_a_byte_order_mark_at_the_start_of_a_table_is_read_as_text(
    data: Path, tmp_path: Path, capsys: pytest.CaptureFixture
) -> None:
    path = data / "annotations.csv"
    path.write_bytes(b"\xef\xbb\xbf" + path.read_bytes())  # as spreadsheet programs save CSV
    assert main(["data", "check", str(data), "--dataset", "synthetic"]) == 0, capsys.readouterr()
    faces = tmp_path / "faces.txt"
    faces.write_bytes(b"\xef\xbb\xbfTrain/Happy/0001.png,Happy,1,2,30,40\n")
    assert list(read_box_file(faces)) == ["Train/Happy/0001.png"]


def test_a_duplicate_annotation_row_names_the_file_and_both_rows(
    data: Path, capsys: pytest.CaptureFixture
) -> None:
    path = data / "annotations.csv"
    rows = read_rows(path)
    first = _rows(path)[5]
    rows.insert(first + 3, dict(rows[first]))  # the same image and box, three rows later
    write_rows(path, rows)
    line_of = {"first": first + 2, "again": first + 5}  # (the header is row 1)
    cause = f"{path}: row {line_of['again']}: the same image and box as row {line_of['first']}"
    fails(capsys, ["train", "--config", "emotnet_synthetic", *fast(data)], cause)
    lines = fails(capsys, ["data", "check", str(data), "--dataset", "synthetic"], cause, status=1)
    assert len(lines) == 2  # the one duplicate
    assert not Path("runs").exists()


@pytest.mark.parametrize(
    ("text", "cause"),
    [
        ("data:\n  batch_size: 8\n  num_workers: 0\n  batch_size: 16\n",
         "a.yaml: line 4, column 3: key 'batch_size' given twice (first on line 2)"),
        ("trainer:\n  max_epochs: 1\ntrainer:\n  seed: 3\n",
         "a.yaml: line 3, column 1: key 'trainer' given twice (first on line 1)"),
        ("data: {batch_size: 8\n", "a.yaml: not valid YAML at line 2, column 1"),
        ("data:\n  batch_size: 8\n   num_workers: 0\n", "a.yaml: not valid YAML at line 3, column"),
    ],
    ids=["duplicate-key", "duplicate-section", "unclosed-mapping", "bad-indentation"],
)  # fmt: skip
def test_duplicate_yaml_keys_are_refused_and_yaml_errors_say_where(
    text: str, cause: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("a.yaml").write_text(text)
    fails(capsys, ["train", "--config", "a.yaml"], cause)
    assert not Path("runs").exists()


def test_a_duplicate_key_in_an_override_is_refused(
    small_set: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    monkeypatch.chdir(tmp_path)
    argv = ["train", "--config", "emotnet_synthetic", *fast(small_set)]
    fails(capsys, [*argv, "data.view_sizes={body: 32, body: 16}"], "key 'body' given twice")


CHOICES = {
    "data-mask-fill": (["data.mask_fill=pink"], "unknown data.mask_fill 'pink'; choose one of "
                       "zeros, mean, blur"),
    "dictionary-mask-fill": (["dictionary.mask_fill=noise"], "unknown dictionary.mask_fill "
                             "'noise'; choose one of zeros, mean, blur"),
    "kmeans": (["dictionary.kmeans=magic"], "unknown dictionary.kmeans 'magic'; choose one of "
               "faiss, sklearn, minibatch"),
    "optimizer": (["optim.optimizer=lion"], "unknown optim.optimizer 'lion'; choose one of adamw"),
    "scheduler": (["optim.scheduler=step"], "unknown optim.scheduler 'step'; choose one of cosine"),
    "loss": (["loss.name=hinge"], "unknown loss 'hinge' (loss.name); choose one of auto, "),
    "precision": (["trainer.precision=fp16"], "unknown trainer.precision 'fp16'; choose one of "
                  "32-true, 16-mixed, bf16-mixed"),
    "accelerator": (["trainer.accelerator=tpu"], "unknown trainer.accelerator 'tpu'; choose one "
                    "of auto, cpu, gpu, cuda, mps"),
    "zero-devices": (["trainer.devices=0"], "'trainer.devices' must be a number of devices"),
    "text-devices": (["trainer.devices=many"], "'trainer.devices' must be a number of devices"),
    "gpu-indices-on-cpu": (["trainer.devices=[0]"], "trainer.devices=[0] names GPUs, but the run "
                           "is on the CPU"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(CHOICES))
def test_an_option_outside_its_choices_is_refused_at_once_naming_them(
    case: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    extra, cause = CHOICES[case]
    # no data set: the config is refused before anything is read, let alone drawn
    argv = ["train", "--config", "emotnet_synthetic", *fast(tmp_path / "nowhere"), *extra]
    fails(capsys, argv, cause)
    assert not Path("runs").exists() and not (tmp_path / "nowhere").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
@pytest.mark.parametrize("accelerator", ["gpu", "cuda"])
def test_a_gpu_run_on_a_machine_without_one_names_the_choice(
    accelerator: str, small_set: Path, tmp_path: Path, monkeypatch, capsys
) -> None:
    monkeypatch.chdir(tmp_path)
    argv = ["train", "--config", "emotnet_synthetic", *fast(small_set)]
    cause = f"trainer.accelerator={accelerator}, but this machine has no CUDA GPU"
    fails(capsys, [*argv, f"trainer.accelerator={accelerator}"], cause, "trainer.accelerator=cpu")
    assert not Path("runs").exists()


# --- outputs: checked before any work ------------------------------------------------------


def _train_argv(root: Path, *extra: str) -> list[str]:
    return ["train", "--config", "emotnet_synthetic", *fast(root), *extra]


OUTPUTS = {
    "train-out-dir": (lambda root: _train_argv(root, "out_dir=file.txt/runs"),
                      "the run folder (out_dir/name) file.txt/runs/bad"),
    "train-name": (lambda root: _train_argv(root, "name=x/y", "out_dir=file.txt"),
                   "the run folder (out_dir/name) file.txt/x/y"),
    "dictionary": (lambda root: ["dictionary", "build", "--config", "emotnet_synthetic",
                                 f"data.root={root}", "model.dictionary=file.txt/d.safetensors"],
                   "model.dictionary file.txt/d.safetensors"),
    "bias-report": (lambda root: ["bias-report", "--out", "file.txt/report", f"data.root={root}"],
                    "--out file.txt/report"),
    "predict-out": (lambda root: ["predict", "--checkpoint", "missing.ckpt", str(root), "--out",
                                  "file.txt/p.jsonl"], "--out file.txt/p.jsonl"),
    "predict-draw": (lambda root: ["predict", "--checkpoint", "missing.ckpt", str(root), "--draw",
                                   "file.txt/drawn"], "--draw file.txt/drawn"),
    "demo": (lambda root: ["demo", "--out", "file.txt/demo", "--quick"], "--out file.txt/demo"),
    "synth": (lambda root: ["synth", "--out", "file.txt/set"], "--out file.txt/set"),
}  # fmt: skip


@pytest.mark.parametrize("case", list(OUTPUTS))
def test_an_output_that_cannot_be_written_stops_the_command_before_it_works(
    case: str, small_set: Path, tmp_path: Path, monkeypatch, capsys: pytest.CaptureFixture
) -> None:
    # an output under a regular file cannot be made, even by root (for whom chmod stops
    # nothing); the missing checkpoint would be the error if any work had started
    monkeypatch.chdir(tmp_path)
    Path("file.txt").write_text("not a folder\n")
    argv, where = OUTPUTS[case]
    fails(capsys, argv(small_set), where, "file.txt is a file, not a folder")
    assert sorted(files(tmp_path)) == ["file.txt"]


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_a_read_only_output_folder_stops_the_command_before_it_works(
    small_set: Path, tmp_path: Path, monkeypatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    Path("locked").mkdir(mode=0o555)
    try:
        argv = [
            "predict",
            "--checkpoint",
            "missing.ckpt",
            str(small_set),
            "--out",
            "locked/p.jsonl",
        ]
        fails(capsys, argv, "--out locked/p.jsonl: cannot write in locked (Permission denied)")
        fails(capsys, _train_argv(small_set, "out_dir=locked"), "cannot write in locked")
    finally:
        Path("locked").chmod(0o755)
    assert not any(Path("locked").iterdir())


# --- errors of DataLoader workers, Ctrl-C ----------------------------------------------------


def _truncate_first_training_image(root: Path) -> Path:
    """Cut the first training image to a third: its header still reads (so the annotations
    pass), its pixels do not."""
    path = root / read_rows(root / "annotations.csv")[_rows(root / "annotations.csv")[0]]["image"]
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 3])
    return path


@pytest.mark.parametrize("workers", [0, 1])
def test_a_run_failing_on_its_first_decoded_image_is_one_line_and_leaves_no_run_folder(
    workers: int, data: Path, capsys: pytest.CaptureFixture
) -> None:
    bad = _truncate_first_training_image(data)
    extra = [f"data.num_workers={workers}", "data.cache=false"]
    (line,) = fails(capsys, _train_argv(data, *extra), str(bad), "cannot decode image")
    assert "Traceback" not in line and "worker" not in line
    assert not Path("runs").exists()


def test_a_data_loader_workers_error_is_its_own_message() -> None:
    class Broken(torch.utils.data.Dataset):
        def __len__(self) -> int:
            return 4

        def __getitem__(self, i: int) -> int:
            raise DataError(f"img{i}.png: cannot decode image (broken); restore the file")

    with pytest.raises(DataError) as caught:
        next(iter(torch.utils.data.DataLoader(Broken(), num_workers=1)))
    assert "Original Traceback" in str(caught.value)  # what torch re-raises
    assert one_line(caught.value) == "img0.png: cannot decode image (broken); restore the file"


def test_ctrl_c_anywhere_is_one_line_and_status_130(
    data: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    import deconfound.data.synthetic as synthetic
    import deconfound.engine.run as run

    def interrupt(*args: object, **kwargs: object) -> None:
        raise KeyboardInterrupt

    monkeypatch.setattr(synthetic, "generate", interrupt)  # outside Lightning
    assert main(["synth", "--out", "s"]) == 130
    assert screen(capsys.readouterr().err) == ["deconfound: interrupted"]
    # inside Lightning's training loop (which turns Ctrl-C into exit status 1 itself)
    monkeypatch.setattr(run.EpochSeeding, "on_train_batch_start", interrupt)
    assert main(_train_argv(data)) == 130
    assert screen(capsys.readouterr().err) == [
        "deconfound: interrupted; no epoch had finished, so nothing was kept"
    ]
    assert not Path("runs").exists()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # Ctrl-C works again


# --- real signals to a real training process; two runs into one folder ------------------------

TIMEOUT = 240.0  # seconds for a training process to start and reach a point, on a busy machine


def _command(root: Path, out: Path) -> list[str]:
    """``python -m deconfound train`` of EMOT-Net on ``root``, slow enough (small batches, many
    epochs) to be still training when signalled."""
    cli = [sys.executable, "-m", "deconfound", "train", "--config", "emotnet_synthetic"]
    return [*cli, *_overrides(root, out)]


def _overrides(root: Path, out: Path) -> list[str]:
    return [
        f"data.root={root}",
        "data.view_sizes={body: 32, whole: 32}",
        "data.batch_size=8",
        "trainer.max_epochs=100",
        "trainer.progress_bar=false",
        "trainer.accelerator=cpu",
        f"out_dir={out}",
        "name=run",
    ]


def _wait_for(proc: subprocess.Popen[bytes], path: Path, log: Path) -> None:
    deadline = time.monotonic() + TIMEOUT
    while not path.exists():
        if proc.poll() is not None:
            pytest.fail(f"training ended (rc {proc.returncode}) too early:\n{log.read_text()}")
        if time.monotonic() > deadline:
            pytest.fail(f"{path} did not appear in {TIMEOUT} s")
        time.sleep(0.01)


def _default_sigint() -> None:  # (a process started in the background may inherit SIG_IGN)
    signal.signal(signal.SIGINT, signal.SIG_DFL)


@contextlib.contextmanager
def _training(command: list[str], log: Path) -> Iterator[subprocess.Popen[bytes]]:
    with log.open("wb") as out:
        proc = subprocess.Popen(
            command, stdout=out, stderr=subprocess.STDOUT, preexec_fn=_default_sigint
        )
    try:
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_a_second_run_into_a_busy_folder_is_refused_and_sigterm_keeps_last_ckpt(
    small_set: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys
) -> None:
    run_dir = tmp_path / "runs" / "run"
    last = run_dir / "checkpoints" / "last.ckpt"
    log = tmp_path / "first.log"
    with _training(_command(small_set, tmp_path / "runs"), log) as first:
        _wait_for(first, last, log)  # an epoch finished
        # the second run, in this process, into the same folder while the first trains
        (tmp_path / "second").mkdir()
        monkeypatch.chdir(tmp_path / "second")  # (where ``fails`` looks for partial files)
        argv = ["train", "--config", "emotnet_synthetic", *_overrides(small_set, run_dir.parent)]
        fails(capsys, argv, f"{run_dir} is in use by another training run (process {first.pid}")
        assert first.poll() is None  # the first goes on
        first.send_signal(signal.SIGTERM)  # what SLURM and Kubernetes send
        first.wait(timeout=TIMEOUT)
    assert first.returncode == 143, log.read_text()
    lines = screen(log.read_text())
    assert lines[-1] == (
        f"deconfound: terminated (SIGTERM); {last} holds the last finished epoch: run the same "
        "command again to resume"
    ), lines
    assert not [line for line in lines if "Traceback" in line], lines
    saved = torch.load(last, map_location="cpu", weights_only=False)  # complete
    assert saved["epoch"] >= 0 and saved["hyper_parameters"]["config"]["name"] == "run"
    assert not [p for p in files(run_dir) if p.endswith(".tmp")]
    assert not (run_dir / ".lock").exists() and not list((tmp_path / "second").iterdir())


@pytest.mark.parametrize(("sig", "status", "said"), [
    (signal.SIGTERM, 143, "terminated (SIGTERM)"), (signal.SIGINT, 130, "interrupted")
], ids=["SIGTERM", "SIGINT"])  # fmt: skip
def test_a_signal_before_the_first_epoch_ends_leaves_no_run_folder(
    sig: int, status: int, said: str, tiny_root: Path, tmp_path: Path
) -> None:
    run_dir = tmp_path / "runs" / "run"
    log = tmp_path / "train.log"
    with _training(_command(tiny_root, tmp_path / "runs"), log) as proc:
        _wait_for(proc, run_dir / ".lock", log)  # the run holds its folder
        proc.send_signal(sig)
        proc.wait(timeout=TIMEOUT)
    assert proc.returncode == status, log.read_text()
    last = run_dir / "checkpoints" / "last.ckpt"
    kept = f"{last} holds the last finished epoch" if last.exists() else "nothing was kept"
    assert screen(log.read_text())[-1].startswith(f"deconfound: {said}; "), log.read_text()
    assert kept in log.read_text(), log.read_text()
    if not last.exists():  # (on a fast machine the first epoch may have ended)
        assert not (tmp_path / "runs").exists()


# --- a foreign last.ckpt ---------------------------------------------------------------------


@pytest.fixture(scope="module")
def micro(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A micro synthetic set and an EMOT-Net checkpoint trained on it for one epoch."""
    base = tmp_path_factory.mktemp("micro")
    root = generate(base / "data", MICRO, progress=False)
    cfg = load_config("emotnet_synthetic", [*fast(root, "micro"), f"out_dir={base / 'runs'}"])
    with contextlib.redirect_stdout(io.StringIO()):
        return root, train(cfg).best_checkpoint


@pytest.mark.parametrize("case", ["junk", "not-lightning", "another-config"])
def test_a_foreign_last_ckpt_is_refused_in_a_short_line(
    case: str, micro: tuple[Path, Path], tmp_path: Path, monkeypatch, capsys
) -> None:
    monkeypatch.chdir(tmp_path)
    root, checkpoint = micro
    last = Path("runs/bad/checkpoints/last.ckpt")
    last.parent.mkdir(parents=True)
    if case == "junk":
        last.write_bytes(np.random.default_rng(0).bytes(3000))
    elif case == "not-lightning":
        torch.save({"model": {"w": torch.zeros(3)}, "note": "x" * 3000}, last)
    else:  # a deconfound checkpoint of the same model with another learning rate
        shutil.copyfile(checkpoint, last)
    saved = last.read_bytes()
    argv = ["train", "--config", "emotnet_synthetic", *fast(root), "optim.lr=0.05"]
    (line,) = fails(capsys, argv, str(last), "delete it to start afresh")
    assert len(line) <= 200, line
    if case == "another-config":
        assert "was saved with optim.lr=" in line and "not 0.05" in line
    assert last.read_bytes() == saved  # left as it was


# --- predict: the walk of its inputs, the images as displayed ---------------------------------


def test_predict_follows_no_link_loop_and_skips_its_own_drawings(
    micro: tuple[Path, Path], tmp_path: Path, monkeypatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    root, checkpoint = micro
    photos = Path("photos")
    (photos / "day").mkdir(parents=True)
    for n, image in enumerate(sorted(root.glob("images/train/*.png"))[:3]):
        shutil.copyfile(image, photos / ("day" if n else ".") / image.name)
    os.symlink("..", photos / "day" / "up")  # a loop: photos/day/up/day/up/...
    os.symlink("day", photos / "again")  # the same folder twice
    options = ["--draw", "photos/drawn", "--no-detect", "--no-progress"]
    drawings = sorted(p.relative_to(photos).as_posix() for p in photos.rglob("*.png"))
    for attempt in range(2):  # the second sees the first's drawings among its inputs
        for pattern in ([], ["photos/**/*.png"]):
            out = Path(f"p{attempt}{len(pattern)}.jsonl")
            argv = [
                "predict",
                "--checkpoint",
                str(checkpoint),
                "photos",
                *pattern,
                "--out",
                str(out),
                *options,
            ]
            assert main(argv) == 0
            records = out.read_text().splitlines()
            assert len(records) == 3 * (1 + len(pattern)), records
            assert not [r for r in records if "drawn" in r], records
    capsys.readouterr()
    assert sorted(files(Path("photos/drawn"))) == drawings


def test_predict_reads_a_phone_photo_upright_with_boxes_on_the_displayed_picture(
    micro: tuple[Path, Path], tmp_path: Path, monkeypatch, capsys: pytest.CaptureFixture
) -> None:
    monkeypatch.chdir(tmp_path)
    _, checkpoint = micro
    upright = _picture(40, 90)  # portrait, stored landscape as a phone does
    upright.transpose(Image.Transpose.ROTATE_90).save("phone.jpg", exif=_exif(6), quality=95)
    Path("boxes.csv").write_bytes(b"\xef\xbb\xbffile,x1,y1,x2,y2\nphone.jpg,5,50,35,88\n")
    argv = [
        "predict",
        "--checkpoint",
        str(checkpoint),
        "boxes.csv",
        "--out",
        "p.csv",
        "--draw",
        "drawn",
    ]
    assert main([*argv, "--no-progress"]) == 0, capsys.readouterr().err  # y2 88 > 40 stored
    assert Image.open("drawn/phone.jpg").size == (40, 90)
    assert "phone.jpg,5,50,35,88,given" in Path("p.csv").read_text()


def test_an_image_too_small_for_the_detector_is_predicted_whole_and_said(
    micro: tuple[Path, Path], tmp_path: Path, monkeypatch, caplog, capsys
) -> None:
    monkeypatch.chdir(tmp_path)
    _, checkpoint = micro
    _picture(12, 9).save("tiny.png")
    assert (
        main(
            [
                "predict",
                "--checkpoint",
                str(checkpoint),
                "tiny.png",
                "--out",
                "p.jsonl",
                "--no-progress",
            ]
        )
        == 0
    )
    assert '"box_source": "whole-image"' in Path("p.jsonl").read_text()
    assert "smaller than the smallest face the mtcnn detector finds" in caplog.text

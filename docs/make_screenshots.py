"""Regenerate the screenshots of ``deconfound bias-report`` in this folder.

    .venv/bin/python docs/make_screenshots.py            # from the repository root

On the synthetic confounded set (rho 0.8, seed 0, the default sizes) it pretrains the scene
classifier (4 epochs), builds the 32-cluster dictionary with it, trains EMOT-Net (5 epochs),
writes the bias report with both, renders it with headless Chromium and cuts the page into
``bias-report.png`` (the summary, the clusters and the probe) and ``bias-report-model.png`` (the
model's section). Every stage is kept under ``runs/bias-report-screenshots`` (``WORK=DIR`` to
put it elsewhere) and reused when run again; about 3 minutes on 2 idle CPU cores. Needs Chromium
(Debian: ``apt-get install chromium``); the tests do not.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image

DOCS = Path(__file__).resolve().parent
WORK = Path(os.environ.get("WORK", "runs/bias-report-screenshots"))
WIDTH = 1280  # the window's width
RULE = (0xD3, 0xD9, 0xE0)  # the rule above each section's heading (report_page.CSS --rule)


def deconfound(*args: object) -> None:
    argv = [sys.executable, "-m", "deconfound.cli", *map(str, args)]
    print("+", " ".join(argv[2:]), flush=True)
    subprocess.run(argv, check=True)


def make_report() -> Path:
    data, quiet = WORK / "data", "trainer.progress_bar=false"
    deconfound("synth", "--out", data, "--rho", 0.8, "--seed", 0)
    where = [f"data.root={data}", f"out_dir={WORK}", quiet]
    deconfound(
        "train", "--config", "scenes_synthetic", *where, "name=scenes", "trainer.max_epochs=4"
    )
    dictionary = WORK / "dictionary.safetensors"
    if not dictionary.is_file():
        deconfound(
            "dictionary",
            "build",
            "--config",
            "emotnet_synthetic",
            f"data.root={data}",
            quiet,
            f"model.dictionary={dictionary}",
            f"dictionary.weights={WORK / 'scenes/checkpoints/best.ckpt'}",
        )
    deconfound(
        "train", "--config", "emotnet_synthetic", *where, "name=emotnet", "trainer.max_epochs=5"
    )
    deconfound(
        "bias-report",
        "--config",
        "emotnet_synthetic",
        f"data.root={data}",
        quiet,
        "--dictionary",
        dictionary,
        "--checkpoint",
        WORK / "emotnet/checkpoints/best.ckpt",
        "--out",
        WORK / "report",
    )
    return WORK / "report" / "report.html"


def screenshot(page: Path, png: Path, height: int) -> None:
    browser = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "chrome"))))
    with tempfile.TemporaryDirectory() as profile:
        subprocess.run(
            [
                browser,
                "--headless",
                "--no-sandbox",
                "--disable-gpu",
                "--disable-background-networking",
                "--disable-component-update",
                "--disable-sync",
                "--no-first-run",
                f"--user-data-dir={profile}",
                "--hide-scrollbars",
                f"--window-size={WIDTH},{height}",
                f"--screenshot={png}",
                page.resolve().as_uri(),
            ],
            check=True,
            capture_output=True,
        )


def cut(full: Path) -> None:
    """The page down to the model's section (summary, clusters, probe), and the model's
    section (from the third section rule to the fourth, the provenance section's), as two
    PNGs."""
    pixels = np.asarray(Image.open(full).convert("RGB"))
    span = pixels[:, WIDTH // 2 - 400 : WIDTH // 2 + 400]
    rules = np.flatnonzero((span == RULE).all(axis=(1, 2)))
    starts = rules[np.diff(rules, prepend=-10) > 1]  # first row of each rule
    if len(starts) < 4:
        raise SystemExit(f"{full}: found {len(starts)} section rules, expected 4")
    save(pixels[: starts[2] - 8], DOCS / "bias-report.png")
    save(pixels[starts[2] - 16 : starts[3] - 8], DOCS / "bias-report-model.png")


def save(pixels: np.ndarray, path: Path) -> None:
    Image.fromarray(pixels).save(path, optimize=True)
    print(f"{path}: {pixels.shape[1]}x{pixels.shape[0]}, {path.stat().st_size / 1e3:.0f} kB")


if __name__ == "__main__":
    page = make_report()
    full = WORK / "report-page.png"
    screenshot(page, full, 8000)
    cut(full)

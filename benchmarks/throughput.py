"""Where training time goes: the loader (cold JPEGs, the memory-mapped view cache), the model
step alone, and the whole loop, as samples/s and ratios measured in one run.

    python benchmarks/throughput.py [--people 4000] [--workers 2] [--batch 64] [--steps 20]

1. **EMOTIC-sized loading.** An EMOTIC copy of ``--people`` people (two per 640 × 480 JPEG) in
   the official layout (``Annotations.mat`` + images, written with the test suite's writers),
   read at EMOT-Net's paper view sizes (body 128, whole 224) by a DataLoader with
   ``--workers`` processes: from the JPEGs (the cache cold), then the time to build the
   persistent view cache (``data.cache: disk``), then from the cache (warm memory map).
2. **Model step vs whole loop.** For EMOT-Net and CAER-Net in the demo's shape (their
   ``<model>_synthetic`` configs, on a drawn synthetic set read through the disk cache with
   the config's ``data.num_workers``): samples/s of the optimiser step alone on one batch kept
   in memory, and of the whole loop (loader + the same step); the ratio whole/step (1.0: the
   loader never holds the model back). With ``--paper`` (slow on a CPU), EMOT-Net with its
   paper backbones on the EMOTIC copy too.
3. **On a GPU** (``--device cuda``, the default when one is present), the step of each model
   also in bf16 and fp16 autocast, with channels_last and ``torch.compile`` on and off, and
   the GPU's utilisation during the whole loop (``torch.cuda.utilization``, needs pynvml).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from formats import Person, Record, write_emotic_mat
from mixed_precision import to_channels_last

from deconfound.config import load_config
from deconfound.data import DiskViews, EmotionDataModule, ViewDataset
from deconfound.data.emotic import CATEGORIES, INFO, EmoticReader
from deconfound.data.synthetic import SynthConfig, generate
from deconfound.losses import cross_entropy
from deconfound.methods import create_model

PAPER_SIZES = {"body": 128, "whole": 224}


def emotic_records(people: int) -> list[Record]:
    """``people`` EMOTIC people, two per 640 × 480 image, with boxes that vary."""
    out = []
    for i in range(people // 2):
        a, b = CATEGORIES[i % 26], CATEGORIES[(i * 7) % 26]
        first = Person((40 + i % 50, 60, 300, 470), [[a]], [(5, 6, 7)])
        second = Person((320, 30 + i % 40, 630, 460), [[a, b]], [(4, 5, 6)])
        out.append(Record("mscoco/images", f"{i:06d}.jpg", (640, 480), [first, second]))
    return out


def loader_rate(dataset: ViewDataset, workers: int, batch: int, passes: int = 2) -> float:
    """Samples/s of the last of ``passes`` epochs of a DataLoader over ``dataset`` (workers
    kept between epochs, as in training: the first pass starts them and fills the page
    cache)."""
    loader = DataLoader(
        dataset, batch_size=batch, num_workers=workers, persistent_workers=workers > 0
    )
    for _ in range(passes):
        start = time.perf_counter()
        n = sum(len(y) for _, y, _ in loader)
        rate = n / (time.perf_counter() - start)
    return rate


Step = Callable[[dict[str, torch.Tensor], torch.Tensor], None]


def make_step(model: torch.nn.Module, device: torch.device, variant: str = "fp32") -> Step:
    """One optimiser step of ``model`` on a batch (AdamW; cross-entropy, or binary
    cross-entropy for multi-hot targets), in
    ``variant``: fp32, bf16 or fp16 autocast (fp16 with a gradient scaler), each optionally
    ``+cl`` (channels_last) and ``+compile``."""
    model = model.to(device).train()
    channels_last = "+cl" in variant
    if channels_last:
        model = model.to(memory_format=torch.channels_last)
    forward = torch.compile(model) if "+compile" in variant else model
    opt = torch.optim.AdamW(model.parameters(), lr=1e-3)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(variant.split("+")[0])
    scaler = torch.amp.GradScaler(device.type, enabled=dtype is torch.float16)

    def step(views: dict[str, torch.Tensor], y: torch.Tensor) -> None:
        views = {k: v.to(device, non_blocking=True) for k, v in views.items()}
        if channels_last:
            views = to_channels_last(views)
        y = y.to(device, non_blocking=True)
        autocast = torch.autocast(device.type, dtype=dtype) if dtype else contextlib.nullcontext()
        with autocast:
            logits = forward(views)
            multilabel = y.dtype.is_floating_point  # multi-hot targets (EMOTIC)
            loss = (
                F.binary_cross_entropy_with_logits(logits, y)
                if multilabel
                else cross_entropy(logits, y)
            )
        opt.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(opt)
        scaler.update()

    return step


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def step_rate(step: Step, batch: tuple, device: torch.device, steps: int) -> float:
    """Samples/s of ``step`` on one resident batch (after 3 warm-up steps)."""
    views, y, _ = batch
    views = {k: v.to(device) for k, v in views.items()}
    for i in range(steps + 3):
        if i == 3:
            _sync(device)
            start = time.perf_counter()
        step(views, y.to(device))
    _sync(device)
    return steps * len(y) / (time.perf_counter() - start)


def _batches(loader: DataLoader) -> Iterator[tuple]:
    while True:
        yield from loader


def whole_rate(step: Step, loader: DataLoader, device: torch.device, steps: int) -> tuple:
    """Samples/s of the loop loader → ``step`` (after 3 warm-up steps), and the GPU's mean
    utilisation meanwhile (None off a GPU or without pynvml)."""
    batches, n, busy = _batches(loader), 0, []
    for i in range(steps + 3):
        if i == 3:
            _sync(device)
            start = time.perf_counter()
        views, y, _ = next(batches)
        step(views, y)
        if i >= 3:
            n += len(y)
            if device.type == "cuda":
                with contextlib.suppress(Exception):
                    busy.append(torch.cuda.utilization(device))
    _sync(device)
    use = sum(busy) / len(busy) if busy else None
    return n / (time.perf_counter() - start), use


def loading(args: argparse.Namespace, tmp: Path) -> EmoticReader:
    start = time.perf_counter()
    write_emotic_mat(tmp / "emotic", {"train": emotic_records(args.people)})
    took = time.perf_counter() - start
    print(f"wrote {args.people} EMOTIC people (official layout) in {took:.0f} s")
    start = time.perf_counter()
    reader = EmoticReader(tmp / "emotic")
    samples = reader.samples("train")
    print(f"parse Annotations.mat: {len(samples) / (time.perf_counter() - start):9.0f} samples/s")
    w, b = args.workers, args.batch
    cold = loader_rate(ViewDataset(samples, INFO, PAPER_SIZES), w, b, passes=1)
    start = time.perf_counter()
    cache = DiskViews.open(tmp / "cache", "train", samples, PAPER_SIZES, root=reader.root)
    build = len(samples) / (time.perf_counter() - start)
    warm = loader_rate(ViewDataset(samples, INFO, PAPER_SIZES, cache=cache), w, b)
    views = ", ".join(f"{k} {v}" for k, v in PAPER_SIZES.items())
    print(f"EMOTIC loader, views {views}, batch {b}, {w} workers:")
    print(f"  cold (JPEG decode + crop):   {cold:9.0f} samples/s (one epoch)")
    print(f"  building the view cache:     {build:9.0f} samples/s (all CPUs)")
    print(
        f"  warm (memory-mapped cache):  {warm:9.0f} samples/s (second epoch)   "
        f"warm/cold = {warm / cold:.1f}x"
    )
    return reader


def model_rows(args: argparse.Namespace, tmp: Path, device: torch.device) -> None:
    root = generate(tmp / "synthetic", SynthConfig(sizes={"train": 2100}), progress=False)
    variants = ["fp32"]
    if device.type == "cuda":
        variants = [
            f"{p}{cl}{c}"
            for p in ("fp32", "bf16", "fp16")
            for cl in ("", "+cl")
            for c in ("", "+compile")
        ]
    for name in ("emotnet", "caernet"):
        cfg = load_config(f"{name}_synthetic", [f"data.root={root}"])
        cfg.data.batch_size = args.batch
        model = create_model(cfg.model, 7)
        data = EmotionDataModule(cfg.data, model.views)
        loader = data.loader("train", shuffle=True, seed=0)
        batch = next(iter(loader))
        label = "EMOT-Net" if name == "emotnet" else "CAER-Net"
        for variant in variants:
            step = make_step(create_model(cfg.model, 7), device, variant)
            alone = step_rate(step, batch, device, args.steps)
            whole, use = whole_rate(step, loader, device, args.steps)
            gpu = f", GPU busy {use:.0f} %" if use is not None else ""
            print(
                f"{label} (demo config, {cfg.data.num_workers} workers, {variant}): step "
                f"{alone:.0f} samples/s, whole loop {whole:.0f} samples/s{gpu}; "
                f"whole/step {whole / alone:.2f}"
            )


def paper_row(args: argparse.Namespace, reader: EmoticReader, device: torch.device) -> None:
    cfg = load_config("emotic_emotnet", [f"data.root={reader.root}"])
    cfg.data.batch_size, cfg.data.num_workers = args.batch, args.workers
    cfg.data.view_sizes = dict(PAPER_SIZES)
    cfg.data.cache_dir = str(Path(reader.root).parent / "cache-paper")
    model = create_model(cfg.model, len(INFO.classes))
    data = EmotionDataModule(cfg.data, model.views)
    loader = data.loader("train", shuffle=True, seed=0)
    step = make_step(model, device)
    alone = step_rate(step, next(iter(loader)), device, args.steps)
    whole, _ = whole_rate(step, loader, device, args.steps)
    print(
        f"EMOT-Net (paper backbones, EMOTIC views, {args.workers} workers): step {alone:.1f} "
        f"samples/s, whole loop {whole:.1f} samples/s; whole/step {whole / alone:.2f}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--people", type=int, default=4000, help="EMOTIC people to write")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader worker processes")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--steps", type=int, default=20, help="timed steps per figure")
    parser.add_argument("--paper", action="store_true", help="EMOT-Net's paper backbones too")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()
    device = torch.device(args.device)
    print(f"device {device}, torch threads {torch.get_num_threads()}, torch {torch.__version__}")
    with tempfile.TemporaryDirectory() as tmp:
        reader = loading(args, Path(tmp))
        model_rows(args, Path(tmp), device)
        if args.paper:
            paper_row(args, reader, device)


if __name__ == "__main__":
    main()

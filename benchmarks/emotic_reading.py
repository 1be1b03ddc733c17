"""Reading speed of EMOTIC-format data, as ratios from one run.

    python benchmarks/emotic_reading.py [--people 10000] [--workers 0]

Writes an EMOTIC copy of ``--people`` people (two per 640 × 480 JPEG) in the official layout
(``Annotations.mat`` + images) and in the pre-processed layout (CSV + NumPy arrays) with the
test suite's writers, then prints samples/s of: parsing the annotations; one pass of EMOT-Net's
views (body 128, whole 224) decoded from the JPEGs (the decoded-crop cache cold), a second pass
served by the cache (warm), and one pass from the pre-processed arrays.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))
from formats import Person, Record, write_emotic_mat, write_emotic_npy

from deconfound.data import ViewDataset
from deconfound.data.emotic import CATEGORIES, INFO, EmoticReader

SIZES = {"body": 128, "whole": 224}


def _records(people: int) -> list[Record]:
    out = []
    for i in range(people // 2):
        a, b = CATEGORIES[i % 26], CATEGORIES[(i * 7) % 26]
        out.append(
            Record(
                "mscoco/images",
                f"{i:06d}.jpg",
                (640, 480),
                [
                    Person((40 + i % 50, 60, 300, 470), [[a]], [(5, 6, 7)]),
                    Person((320, 30 + i % 40, 630, 460), [[a, b]], [(4, 5, 6)]),
                ],
            )
        )
    return out


def _pass(dataset: ViewDataset, workers: int) -> float:
    loader = torch.utils.data.DataLoader(dataset, batch_size=64, num_workers=workers)
    start = time.perf_counter()
    n = sum(len(y) for _, y, _ in loader)
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--people", type=int, default=10_000)
    parser.add_argument("--workers", type=int, default=0, help="DataLoader worker processes")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        records = _records(args.people)
        start = time.perf_counter()
        write_emotic_mat(Path(tmp) / "release", {"train": records})
        write_emotic_npy(Path(tmp) / "pre", "train", records)
        print(f"wrote {args.people} people in both layouts in {time.perf_counter() - start:.0f} s")

        start = time.perf_counter()
        samples = EmoticReader(Path(tmp) / "release").samples("train")
        parse = len(samples) / (time.perf_counter() - start)
        start = time.perf_counter()
        arrays = EmoticReader(Path(tmp) / "pre").samples("train")
        parse_csv = len(arrays) / (time.perf_counter() - start)

        cached = ViewDataset(samples, INFO, SIZES, cache=True)
        cold = _pass(cached, 0)  # the cache fills in this process
        warm = _pass(cached, 0)
        plain = _pass(ViewDataset(samples, INFO, SIZES), args.workers)
        npy = _pass(ViewDataset(arrays, INFO, SIZES), args.workers)
    print(f"torch threads {torch.get_num_threads()}, {args.people} people, views {SIZES}")
    print(f"parse Annotations.mat:            {parse:9.0f} samples/s")
    print(f"parse train.csv + arrays:         {parse_csv:9.0f} samples/s")
    print(f"JPEG decode + crop, cache cold:   {cold:9.0f} samples/s")
    print(f"decoded-crop cache, warm:         {warm:9.0f} samples/s   warm/cold {warm / cold:.1f}x")
    print(
        f"JPEG decode + crop, no cache ({args.workers} workers): {plain:6.0f} samples/s   "
        f"pre-processed arrays: {npy:.0f} samples/s ({npy / plain:.1f}x)"
    )


if __name__ == "__main__":
    main()

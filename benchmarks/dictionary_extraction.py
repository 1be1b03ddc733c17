"""Dictionary feature extraction against the backbone's bare forward pass, in one run.

    python benchmarks/dictionary_extraction.py [--n 2000] [--backbone small_cnn] [--size 48]

Times ``extract_features`` (decode PNG, mask the person, resize, embed; no cache) on ``n``
synthetic training images, and the backbone's forward pass alone on the same number of
already-decoded tensors, and prints images/s of each and their ratio: how much of the build is
spent on input rather than on the network.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import torch

from deconfound.config import DictionaryConfig
from deconfound.data.synthetic import SynthConfig, SyntheticReader, generate
from deconfound.models import create_backbone
from deconfound.pipelines.dictionary import extract_features


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=2000)
    p.add_argument("--backbone", default="small_cnn")
    p.add_argument("--size", type=int, default=48, help="side of the embedded image")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--workers", type=int, default=0, help="data-loader processes")
    args = p.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        sizes = {"train": args.n, "val": 0, "test_iid": 0, "test_balanced": 0, "test_anti": 0}
        root = generate(Path(tmp) / "data", SynthConfig(sizes=sizes | {"scenes": 0}))
        reader = SyntheticReader(root)
        samples = reader.samples("train")
        backbone = create_backbone(args.backbone).eval()
        d = DictionaryConfig(backbone=args.backbone, image_size=args.size, batch_size=args.batch)
        start = time.perf_counter()
        features = extract_features(
            samples, reader.info, backbone, d, Path(tmp) / "cache", {}, args.workers, False
        )
        pipeline = len(features) / (time.perf_counter() - start)

        x = torch.randint(0, 256, (args.batch, 3, args.size, args.size), dtype=torch.uint8)
        with torch.inference_mode():
            backbone(x)  # warm-up
            start = time.perf_counter()
            done = 0
            while done < args.n:
                backbone(x)
                done += args.batch
        bare = done / (time.perf_counter() - start)
    print(
        f"{args.backbone} @ {args.size}px, batch {args.batch}, {args.workers} loader workers, "
        f"{torch.get_num_threads()} threads"
    )
    print(f"  extract_features (decode + mask + resize + embed): {pipeline:8.0f} images/s")
    print(f"  backbone forward alone:                             {bare:8.0f} images/s")
    print(f"  extraction runs at {pipeline / bare:.2f} of the bare forward's speed")


if __name__ == "__main__":
    main()

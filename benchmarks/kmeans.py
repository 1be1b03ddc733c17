"""K-means for the confounder dictionary: scikit-learn vs faiss on the papers' scale, one run.

    python benchmarks/kmeans.py [--n 70000] [--dim 2048] [--k 256] [--iters 25]

Clusters ``n`` × ``dim`` float32 features (a mixture of ``k`` Gaussians with unequal spreads,
like pooled CNN features of scene clusters) into ``k`` centres with each available backend of
``deconfound.causal.kmeans`` (and faiss with its own random seeding, ``faiss-rand``), at the same
iteration budget, and prints wall time, inertia relative to the best backend, and the adjusted
Rand index against the true mixture component.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from sklearn.metrics import adjusted_rand_score

from deconfound.causal.kmeans import KMEANS_BACKENDS, kmeans


def mixture(n: int, dim: int, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` non-negative points (like post-ReLU pooled features) from ``k`` Gaussian blobs."""
    rng = np.random.default_rng(seed)
    centres = rng.gamma(2.0, 0.5, size=(k, dim)).astype(np.float32)
    labels = rng.integers(k, size=n)
    spread = rng.uniform(0.3, 1.0, size=k).astype(np.float32)
    x = centres[labels] + spread[labels, None] * rng.standard_normal((n, dim), dtype=np.float32)
    return np.maximum(x, 0), labels


def faiss_random_seeding(
    x: np.ndarray, k: int, iters: int, truth: np.ndarray
) -> tuple[str, float, float, float]:
    """faiss with its own seeding (k random points), for comparison with our k-means++ seeding."""
    import faiss

    start = time.perf_counter()
    km = faiss.Kmeans(x.shape[1], k, niter=iters, seed=0, max_points_per_centroid=1 << 30)
    km.train(x)
    distances, labels = km.index.search(x, 1)
    seconds = time.perf_counter() - start
    return "faiss-rand", seconds, float(distances.sum()), adjusted_rand_score(truth, labels[:, 0])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=70_000)
    p.add_argument("--dim", type=int, default=2048)
    p.add_argument("--k", type=int, default=256)
    p.add_argument("--iters", type=int, default=25)
    args = p.parse_args()
    x, truth = mixture(args.n, args.dim, args.k)
    print(
        f"K-means of {args.n} x {args.dim} into {args.k} centres, {args.iters} iterations, "
        f"{torch.get_num_threads()} threads"
    )
    rows = [faiss_random_seeding(x, args.k, args.iters, truth)]
    for backend in KMEANS_BACKENDS:
        start = time.perf_counter()
        try:
            result = kmeans(x, args.k, backend=backend, iters=args.iters, seed=0)
        except ImportError as e:
            print(f"  {backend:<10} not installed ({e})")
            continue
        seconds = time.perf_counter() - start
        ari = adjusted_rand_score(truth, result.labels)
        rows.append((backend, seconds, result.inertia, ari))
    best = min(r[2] for r in rows)
    fastest = min(r[1] for r in rows)
    print(f"  {'backend':<10} {'seconds':>8} {'x fastest':>10} {'inertia/best':>13} {'ARI':>6}")
    for backend, seconds, inertia, ari in rows:
        print(
            f"  {backend:<10} {seconds:8.1f} {seconds / fastest:10.2f} "
            f"{inertia / best:13.4f} {ari:6.3f}"
        )


if __name__ == "__main__":
    main()

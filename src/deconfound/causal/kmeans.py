"""K-means from well-kept libraries, behind one call: scikit-learn (Lloyd or mini-batch) or faiss.

``benchmarks/kmeans.py`` measures them on the papers' scale (70 000 × 2048 into 256 centres).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from deconfound.errors import ConfigError, DeconfoundError

KMEANS_BACKENDS = ("faiss", "sklearn", "minibatch")
"""``faiss``: faiss-cpu's Lloyd iterations, seeded by scikit-learn's k-means++ on a subsample
(faiss's own seeding, random points, leaves far worse optima); ``sklearn``: ``KMeans``
(k-means++ on all points, Lloyd); ``minibatch``: ``MiniBatchKMeans``."""

SEED_POINTS_PER_CENTRE = 32  # k-means++ seeding for faiss looks at up to 32·k points


@dataclass(frozen=True)
class KMeansResult:
    """Centres (K, D), the centre index of every point (N,), and the sum of squared distances."""

    centres: np.ndarray
    labels: np.ndarray
    inertia: float


def kmeans(
    x: np.ndarray, k: int, *, backend: str = "faiss", iters: int = 25, seed: int = 0
) -> KMeansResult:
    """Cluster the rows of ``x`` (N, D) into ``k`` centres with ``iters`` iterations."""
    if backend not in KMEANS_BACKENDS:
        raise ConfigError(
            f"unknown K-means backend '{backend}'; choose one of {', '.join(KMEANS_BACKENDS)}"
        )
    x = np.ascontiguousarray(x, dtype=np.float32)
    if not 1 <= k <= len(x):
        raise DeconfoundError(f"cannot make {k} clusters from {len(x)} samples; lower the number")
    if backend == "faiss":
        import faiss
        from sklearn.cluster import kmeans_plusplus

        rng = np.random.default_rng(seed)
        sub = x[rng.choice(len(x), min(len(x), SEED_POINTS_PER_CENTRE * k), replace=False)]
        init, _ = kmeans_plusplus(sub, k, random_state=seed)
        km = faiss.Kmeans(
            x.shape[1],
            k,
            niter=iters,
            seed=seed,
            max_points_per_centroid=1 << 30,
            min_points_per_centroid=1,  # small sets are fine; no warning about them
        )
        km.train(x, init_centroids=np.ascontiguousarray(init, dtype=np.float32))
        distances, labels = km.index.search(x, 1)
        return KMeansResult(
            km.centroids.copy(), labels[:, 0].astype(np.int64), float(distances.sum())
        )
    from sklearn.cluster import KMeans, MiniBatchKMeans

    if backend == "sklearn":
        model = KMeans(k, n_init=1, max_iter=iters, random_state=seed)
    else:
        model = MiniBatchKMeans(k, n_init=1, max_iter=iters, batch_size=4096, random_state=seed)
    labels = model.fit_predict(x)
    centres = model.cluster_centers_.astype(np.float32)
    inertia = float(((x - centres[labels]) ** 2).sum())
    return KMeansResult(centres, labels.astype(np.int64), inertia)

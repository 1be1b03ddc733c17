"""``deconfound dictionary build``: the confounder dictionary from a data set's training split.

Every training sample's image, with the person masked out (``views.mask_box``), is embedded by a
scene backbone (its pooled penultimate feature); the embeddings are clustered with K-means; the
centres are the prototypes z_i and the cluster shares the prior P(z_i). Embeddings are cached in
chunks beside the dictionary (``<dictionary>.features/``), so an interrupted build resumes and a
rebuild with another number of clusters skips the extraction.

Started as several processes (torchrun), the build shares the embedding out: each process embeds
every W-th chunk into the common cache, and process 0 clusters and writes the dictionary.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import DataLoader, Subset
from tqdm import tqdm

from deconfound.causal.dictionary import ConfounderDictionary
from deconfound.causal.kmeans import KMEANS_BACKENDS, kmeans
from deconfound.config import Config, DictionaryConfig
from deconfound.data.datamodule import ViewDataset, open_reader
from deconfound.data.sample import DatasetInfo, Sample, image_name
from deconfound.data.views import FILLS
from deconfound.distributed import ALONE, Peers, join_peers
from deconfound.errors import ConfigError, DeconfoundError
from deconfound.io import atomic_write, atomic_write_text
from deconfound.models import warn_random_scene_backbone
from deconfound.models.backbones import Backbone, create_backbone
from deconfound.models.weights import file_sha256, is_file_spec

log = logging.getLogger(__name__)

CHUNK = 2048  # samples per cached feature file


@dataclass(frozen=True)
class BuildResult:
    """The dictionary, where it was saved, and each training sample's cluster.

    ``labels`` is the (N_train, C) multi-hot matrix of the samples' classes, ``contexts`` the
    hidden context ids where the data set knows them, ``ari`` their adjusted Rand index against
    the clusters (None without them).
    """

    dictionary: ConfounderDictionary
    path: Path
    assignments: np.ndarray
    labels: np.ndarray
    contexts: np.ndarray | None
    ari: float | None

    @property
    def cluster_counts(self) -> np.ndarray:
        """(clusters, classes): how many training samples of each class fall in each cluster."""
        counts = np.zeros((self.dictionary.size, self.labels.shape[1]), dtype=np.int64)
        np.add.at(counts, self.assignments, self.labels)
        return counts


def build_dictionary(cfg: Config, *, progress: bool = True) -> BuildResult:
    """Build ``cfg.model.dictionary`` from ``cfg.data``'s training split as ``cfg.dictionary``
    says (backbone, weights, masking, number of clusters, ...).

    Among several processes (an initialised process group, or torchrun's environment: see
    :func:`~deconfound.distributed.join_peers`) each embeds its share of the chunks (each on its own
    GPU), process 0 clusters all the embeddings and writes the dictionary, and every process
    returns its result. The cache and the dictionary must then be on a filesystem that all the
    processes share.
    """
    if not cfg.model.dictionary:
        raise ConfigError("set model.dictionary=PATH, where the dictionary is to be written")
    d = cfg.dictionary
    check_settings(d)
    path = Path(cfg.model.dictionary)
    if path.is_dir():
        raise ConfigError(
            f"model.dictionary={path} is a folder; give the file to write, e.g. "
            f"{path / 'dictionary.safetensors'}"
        )
    reader = open_reader(cfg.data)
    samples = reader.samples(cfg.data.train_split)
    if d.num_clusters > len(samples):
        raise ConfigError(
            f"dictionary.num_clusters={d.num_clusters} exceeds the {len(samples)} training "
            "samples; lower it"
        )
    with join_peers() as group:
        backbone = scene_backbone(d, reader.info)
        cache = Path(f"{path}.features")
        features, meta = embed_contexts(
            cfg, samples, reader.info, backbone, cache, progress=progress, peers=group
        )
        info = reader.info
        return group.from_rank_zero(lambda: _cluster(cfg, path, samples, info, features, meta))


def _cluster(
    cfg: Config,
    path: Path,
    samples: list[Sample],
    info: DatasetInfo,
    features: np.ndarray,
    meta: dict[str, Any],
) -> BuildResult:
    """K-means of the ``features`` of ``samples`` into the dictionary, saved to ``path``."""
    d = cfg.dictionary
    log.info("K-means (%s) of %d x %d into %d", d.kmeans, *features.shape, d.num_clusters)
    result = kmeans(features, d.num_clusters, backend=d.kmeans, iters=d.iters, seed=d.seed)
    counts = np.bincount(result.labels, minlength=d.num_clusters)
    contexts = confounders(samples)
    ari = None
    if contexts is not None:
        from sklearn.metrics import adjusted_rand_score

        ari = float(adjusted_rand_score(contexts, result.labels))
    meta |= {
        "num_clusters": d.num_clusters,
        "kmeans": d.kmeans,
        "kmeans_iters": d.iters,
        "seed": d.seed,
        "inertia": result.inertia,
        "empty_clusters": int((counts == 0).sum()),
        "ari_vs_context": ari,
    }
    dictionary = ConfounderDictionary(
        torch.from_numpy(result.centres),
        torch.from_numpy(counts / counts.sum()).float(),
        meta,
    )
    dictionary.save(path)
    labels = label_matrix(samples, info.num_classes)
    return BuildResult(dictionary, path, result.labels, labels, contexts, ari)


def scene_backbone(d: DictionaryConfig, info: DatasetInfo | None = None) -> Backbone:
    """The scene backbone ``d`` names, with its ``weights`` (without them, the same random
    weights each time, drawn from ``d.seed``, and a warning on ``info``'s real data set)."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(d.seed)
        backbone = create_backbone(d.backbone, weights=d.weights)
    if info is not None:
        warn_random_scene_backbone(backbone, info)
    return backbone


def embed_contexts(
    cfg: Config,
    samples: list[Sample],
    info: DatasetInfo,
    backbone: Backbone,
    cache: Path,
    *,
    split: str | None = None,
    progress: bool = True,
    peers: Peers = ALONE,
) -> tuple[np.ndarray, dict[str, Any]]:
    """Embeddings (N, D) of ``samples`` (of ``split``, default the training split) with the
    person masked, by ``backbone`` as ``cfg.dictionary`` says, cached under ``cache`` (see
    :func:`extract_features`, shared out among ``peers``, each on its own GPU); and the record
    of how they were made, which a dictionary keeps as its metadata."""
    d = cfg.dictionary
    meta: dict[str, Any] = {
        "backbone": d.backbone,
        "weights": str(d.weights) if d.weights else None,
        "weights_sha256": file_sha256(d.weights) if d.weights and is_file_spec(d.weights) else None,
        "mask_fill": d.mask_fill,
        "image_size": d.image_size,
        "dataset": cfg.data.dataset,
        "split": split or cfg.data.train_split,
        "num_samples": len(samples),
        "dataset_fingerprint": fingerprint(samples, cfg.data.root),
    }
    # a file's hash, not its path; a torchvision or timm name as it is
    key = {k: v for k, v in meta.items() if k != "weights" or not (v and is_file_spec(v))}
    gpu = cfg.trainer.accelerator in ("auto", "gpu", "cuda") and torch.cuda.is_available()
    device = "cpu"
    if gpu:
        device = "cuda" if peers.alone else f"cuda:{peers.local_rank % torch.cuda.device_count()}"
    features = extract_features(
        samples,
        info,
        backbone,
        d,
        cache,
        key,
        cfg.data.num_workers,
        progress,
        device=device,
        peers=peers,
    )
    return features, meta


def label_matrix(samples: list[Sample], num_classes: int) -> np.ndarray:
    """The (N, C) multi-hot matrix of the samples' classes."""
    labels = np.zeros((len(samples), num_classes), dtype=np.int64)
    for i, s in enumerate(samples):
        labels[i, list(s.labels)] = 1
    return labels


def extract_features(
    samples: list[Sample],
    info: DatasetInfo,
    backbone: Backbone,
    d: DictionaryConfig,
    cache: Path,
    key: dict[str, Any],
    num_workers: int = 0,
    progress: bool = True,
    device: str = "cpu",
    peers: Peers = ALONE,
) -> np.ndarray:
    """Embeddings (N, D) of the person-masked images, computed in chunks of ``CHUNK`` samples
    cached under ``cache``; chunks made with the same ``key`` (backbone, weights, masking, data)
    are reused, a cache made otherwise is discarded.

    The chunks of one ``key`` are kept in a folder of their own, ``cache/<hash of key>/`` (the
    key in its ``manifest.json``), so that a chunk is only ever read with the settings that made
    it, even when a build with other settings ran at the same time or was killed while its
    cache was being discarded. With several ``peers``, process r embeds the chunks r, r + W,
    r + 2W, ... that are not cached yet; once all have finished, every one reads every chunk.
    """
    key = {k: key[k] for k in sorted(key)} | {"view_size": d.image_size, "chunk_size": CHUNK}
    folder = _cache_folder(cache, key, first=peers.rank == 0)
    chunks = [(start, min(start + CHUNK, len(samples))) for start in range(0, len(samples), CHUNK)]
    mine = chunks[peers.rank :: peers.world]
    todo = [c for c in mine if not _chunk_path(folder, c[0]).is_file()]
    if len(todo) < len(mine):
        log.info("reusing %d of %d cached feature chunks", len(mine) - len(todo), len(mine))
    if not peers.alone:
        log.info(
            "process %d of %d embeds %d of the %d chunks (%d images)",
            *(peers.rank, peers.world, len(todo), len(chunks), sum(b - a for a, b in todo)),
        )
    with peers.together():  # a failure in one process stops all of them
        _embed(
            samples,
            info,
            backbone,
            d,
            folder,
            todo,
            num_workers,
            progress and peers.rank == 0,
            device,
        )
    missing = [a for a, _ in chunks if not _chunk_path(folder, a).is_file()]
    if missing:  # another process wrote it where this one cannot see it
        raise DeconfoundError(
            f"{len(missing)} feature chunk(s) missing from {folder} after every process embedded "
            "its share: the cache must be on a filesystem that all the processes share"
        )
    return np.concatenate([np.load(_chunk_path(folder, start)) for start, _ in chunks])


def _cache_folder(cache: Path, key: dict[str, Any], first: bool) -> Path:
    """``cache/<hash of key>/``; the ``first`` process writes its manifest and removes the rest
    of ``cache`` (chunks made with other settings, or kept in ``cache`` itself, as before)."""
    text = json.dumps(key, indent=2)
    folder = cache / hashlib.sha256(text.encode()).hexdigest()[:16]
    if first:
        stale = [p for p in cache.iterdir() if p != folder] if cache.is_dir() else []
        if stale:
            log.info("feature cache %s was made with other settings; starting it again", cache)
        for path in stale:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)
        atomic_write_text(folder / "manifest.json", text)
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _embed(
    samples: list[Sample],
    info: DatasetInfo,
    backbone: Backbone,
    d: DictionaryConfig,
    folder: Path,
    todo: list[tuple[int, int]],
    num_workers: int,
    progress: bool,
    device: str,
) -> None:
    """Embed the chunks ``todo`` (start, stop) of ``samples`` into ``folder``, one file each."""
    backbone = backbone.to(device).eval()
    dataset = ViewDataset(samples, info, {"context": d.image_size}, d.mask_fill)  # type: ignore[arg-type]
    bar = tqdm(
        total=sum(b - a for a, b in todo),
        desc="embedding",
        unit="img",
        disable=not progress or not todo,
    )
    try:
        with torch.inference_mode():
            for start, stop in todo:
                loader = DataLoader(
                    Subset(dataset, range(start, stop)),
                    batch_size=d.batch_size,
                    num_workers=num_workers,
                )
                parts = []
                for views, _, _ in loader:
                    parts.append(backbone(views["context"].to(device)).float().cpu().numpy())
                    bar.update(len(parts[-1]))
                chunk = np.concatenate(parts)
                atomic_write(_chunk_path(folder, start), lambda tmp, c=chunk: _save_npy(tmp, c))
    except BaseException:
        bar.leave = False  # cleared: the error line is not printed after a half bar
        raise
    finally:
        bar.close()


def check_settings(d: DictionaryConfig) -> None:
    """Refuse settings that would only fail after the embedding."""
    if d.kmeans not in KMEANS_BACKENDS:
        raise ConfigError(
            f"unknown dictionary.kmeans '{d.kmeans}'; choose one of {', '.join(KMEANS_BACKENDS)}"
        )
    if d.mask_fill not in FILLS:
        raise ConfigError(
            f"unknown dictionary.mask_fill '{d.mask_fill}'; choose {', '.join(FILLS)}"
        )
    if d.num_clusters < 1 or d.iters < 1 or d.image_size < 8 or d.batch_size < 1:
        raise ConfigError(
            "dictionary.num_clusters, iters and batch_size must be positive and image_size "
            "at least 8"
        )


def _chunk_path(cache: Path, start: int) -> Path:
    return cache / f"features-{start:08d}.npy"


def _save_npy(path: Path, array: np.ndarray) -> None:
    with path.open("wb") as f:
        np.save(f, array)


def confounders(samples: list[Sample]) -> np.ndarray | None:
    """The samples' confounder strata (e.g. the synthetic scenes), None unless all are known."""
    if any(s.confounder is None for s in samples):
        return None
    return np.array([s.confounder for s in samples], dtype=np.int64)


def fingerprint(samples: list[Sample], root: str | os.PathLike[str]) -> str:
    """A hash of the samples' images (relative to ``root``), masked boxes and labels."""
    h = hashlib.sha256()
    for s in samples:
        record = (
            image_name(s.image, root),
            s.hidden.as_tuple() if s.hidden else None,
            s.labels,
        )
        h.update(json.dumps(record).encode())
    return h.hexdigest()[:16]

"""From samples to batches: a dataset of views and the Lightning data module around it."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterator, Mapping, Sequence, Sized
from pathlib import Path
from typing import Any, Protocol

import lightning as L
import numpy as np
import torch
from lightning.pytorch.overrides.distributed import UnrepeatedDistributedSampler
from PIL import Image
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler, Subset

from deconfound.config import DataConfig, construct
from deconfound.data.affectnet import AffectNetReader
from deconfound.data.annotations import Problems
from deconfound.data.augment import Augment
from deconfound.data.caer import CaerSReader
from deconfound.data.emotic import EmoticReader
from deconfound.data.fer2013 import Fer2013Reader
from deconfound.data.groupwalk import GroupWalkReader
from deconfound.data.mixbasic import MixBasicReader
from deconfound.data.rafdb import RafDbReader
from deconfound.data.sample import DatasetInfo, Sample
from deconfound.data.synthetic import SynthConfig, SyntheticReader, SyntheticScenesReader, generate
from deconfound.data.synthetic.generate import FORMAT
from deconfound.data.synthetic_faces import FORMAT as FACES_FORMAT
from deconfound.data.synthetic_faces import FaceSynthConfig
from deconfound.data.synthetic_faces import generate as generate_faces
from deconfound.data.synthetic_faces.reader import SyntheticFacesReader
from deconfound.data.view_cache import DiskViews, MemoryViews, ViewStore
from deconfound.data.views import Fill, make_views
from deconfound.errors import ConfigError
from deconfound.progress import show_progress

Batch = tuple[dict[str, torch.Tensor], torch.Tensor, torch.Tensor]
"""``(views, target, stratum)``: views by name, the training target, and each sample's
confounder stratum (see :class:`ViewDataset`; -1 where none is known)."""


class Reader(Protocol):
    """A data set reader: its facts, validated samples per split, and the bad samples it left
    out (with ``skip_bad``)."""

    info: DatasetInfo
    problems: Problems
    root: Path

    def samples(self, split: str) -> list[Sample]: ...


READERS: dict[str, type] = {
    "synthetic": SyntheticReader,
    "synthetic_scenes": SyntheticScenesReader,
    "emotic": EmoticReader,
    "caer_s": CaerSReader,
    "groupwalk": GroupWalkReader,
    "mixbasic": MixBasicReader,
    "rafdb": RafDbReader,
    "affectnet": AffectNetReader,
    "fer2013": Fer2013Reader,
    "synthetic_faces": SyntheticFacesReader,
}
"""Every data set reader by config name."""

GENERATORS: dict[str, tuple[type, Any]] = {
    "synthetic": (SynthConfig, generate),
    "synthetic_scenes": (SynthConfig, generate),
    "synthetic_faces": (FaceSynthConfig, generate_faces),
}
"""The embedded data sets: their generator's settings class and generator, by config name."""


def dataset_info(name: str) -> DatasetInfo:
    """The facts (classes, task) of data set ``name``, without reading any file."""
    if name not in READERS:
        raise ConfigError(f"unknown dataset '{name}'; choose one of {', '.join(READERS)}")
    return READERS[name].info


def open_reader(cfg: DataConfig) -> Reader:
    """The reader for ``cfg``, made with ``cfg.root``, ``cfg.skip_bad`` and ``cfg.args``.

    A synthetic set is generated first when ``root`` holds none, or when ``cfg.synthetic`` names
    settings (an existing set made with other settings is then an error, not overwritten).
    """
    dataset_info(cfg.dataset)
    if cfg.dataset in GENERATORS and (cfg.synthetic or not Path(cfg.root, "meta.json").exists()):
        settings, generator = GENERATORS[cfg.dataset]
        synth = construct(settings, cfg.synthetic, "data.synthetic")
        generator(cfg.root, synth, progress=show_progress())
    args = {"root": cfg.root, "skip_bad": cfg.skip_bad, **cfg.args}
    return construct(READERS[cfg.dataset], args, f"data.args of the {cfg.dataset} reader")


def target(sample: Sample, info: DatasetInfo) -> torch.Tensor:
    """The training target: a class index (multi-class) or a multi-hot vector (multi-label)."""
    if info.task == "multiclass":
        return torch.tensor(sample.labels[0])
    y = torch.zeros(info.num_classes)
    y[list(sample.labels)] = 1.0
    return y


Composer = Callable[[int, np.random.Generator], Image.Image]
"""``compose(i, rng)``: training sample ``i``'s picture as a method redraws it (person paste)."""


class ViewDataset(Dataset[Batch]):
    """Samples as ``(views, target, stratum)`` (see :data:`Batch`), views being tensors keyed
    by name (``root``, the data set's, locates sidecar files for the pose, depth and objects
    views).

    A sample's stratum is ``strata[i]`` when given (its context cluster in a confounder
    dictionary), else its ``confounder`` where the data set states it openly
    (``DatasetInfo.observed_confounder``), else -1: a hidden confounder never reaches a batch.

    With a ``cache`` (:mod:`deconfound.data.view_cache`) each sample's views are decoded once:
    kept in this process's memory (``MemoryViews``: use it with ``num_workers=0`` or persistent
    workers) or read from a memory-mapped file built beforehand (``DiskViews``). A training
    split may redraw each picture (``compose``, e.g. person pasting) and augment the views
    (``augment``); both draw from a random generator seeded by (``seed``, epoch, index), given
    by indexing with ``(index, epoch)`` (as :class:`EpochShuffle` with ``keyed=True`` does), so
    that an epoch's samples are the same in every run and process, a resumed run included.
    Indexed without an epoch (any split but a training split's sampler) the views get the
    augmentation's evaluation frame instead (:meth:`Augment.frame`).
    """

    def __init__(
        self,
        samples: Sequence[Sample],
        info: DatasetInfo,
        sizes: Mapping[str, int],
        fill: Fill = "zeros",
        cache: ViewStore | None = None,
        root: str | Path | None = None,
        *,
        strata: np.ndarray | None = None,
        augment: Augment | None = None,
        train: bool = False,
    ) -> None:
        self.samples, self.info, self.sizes, self.fill = list(samples), info, dict(sizes), fill
        self.train = train
        self.root = root
        self.strata = strata
        used = augment is not None and ((train and augment.enabled) or augment.framed)
        self.augment = augment if used else None
        self.compose: Composer | None = None
        self.seed = 0
        self.cache = cache

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, key: int | tuple[int, int]) -> Batch:
        i, epoch = key if isinstance(key, tuple) else (key, None)
        sample = self.samples[i]
        rng = None
        if epoch is not None and (self.compose is not None or self.augmented):
            rng = np.random.default_rng(epoch_seed(self.seed, epoch, f"sample:{i}"))
        if rng is not None and self.compose is not None:
            views = make_views(sample, self.sizes, self.fill, self.root, self.compose(i, rng))
        else:
            views = self._views(i)
        if rng is not None and self.augmented:
            views = self.augment(views, rng)  # type: ignore[misc]
        elif self.augment is not None:  # evaluation: the training crops' scale
            views = self.augment.frame(views)
        return views, target(sample, self.info), torch.tensor(self.stratum(i))

    @property
    def augmented(self) -> bool:
        """Whether indexing with an epoch draws a random augmentation (a training split)."""
        return self.train and self.augment is not None and self.augment.enabled

    def _views(self, i: int) -> dict[str, torch.Tensor]:
        views = self.cache.get(i) if self.cache is not None else None
        if views is None:
            views = make_views(self.samples[i], self.sizes, self.fill, self.root)
            if self.cache is not None:
                self.cache.put(i, views)
        return views

    def stratum(self, i: int) -> int:
        """Sample ``i``'s stratum (see the class docstring)."""
        if self.strata is not None:
            return int(self.strata[i])
        confounder = self.samples[i].confounder
        return confounder if self.info.observed_confounder and confounder is not None else -1


def epoch_seed(seed: int, epoch: int, stream: str) -> int:
    """A 63-bit seed that depends only on (``seed``, ``epoch``, ``stream``): the same in every
    process, and unrelated for different epochs or streams (``shuffle``, ``rng``...), unlike
    ``seed + epoch``, which would give seed 0's second epoch the order of seed 1's first."""
    key = f"{stream}:{seed}:{epoch}".encode()
    return int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big") >> 1


class EpochShuffle(DistributedSampler):
    """A random order of a dataset that is a pure function of (``seed``, epoch), dealt out to
    ``num_replicas`` processes; with ``keyed``, as ``(index, epoch)`` pairs, from which a
    :class:`ViewDataset` seeds the sample's random redrawing and augmentation. With
    ``repeats`` (a count per sample), sample i appears ``repeats[i]`` times in every epoch
    (JTT's upsampling of its error set).

    Lightning calls :meth:`set_epoch` before each training epoch, a resumed run included (with
    the epoch it resumes at), so a run resumed from a checkpoint sees each later epoch's samples
    in the order the uninterrupted run saw them: the order neither depends on torch's global
    random state (which a new process does not share) nor on how often the sampler was iterated.

    With several processes (distributed training), process ``rank`` takes every
    ``num_replicas``-th index of that same order, from the ``rank``-th on, and the last
    ``N % num_replicas`` are left out, so that every process has as many. The processes' k-th
    batches of ``b`` samples then hold together exactly the k-th batch of ``b * num_replicas``
    samples of a single process: a run on several processes sees the global batches of a run on
    one (only the batch-norm statistics, per process, and the dropout masks differ). Being a
    ``DistributedSampler``, it is left in place by Lightning, which replaces other samplers.
    """

    def __init__(
        self,
        data_source: Sized,
        seed: int = 0,
        num_replicas: int = 1,
        rank: int = 0,
        keyed: bool = False,
        repeats: np.ndarray | None = None,
    ) -> None:
        self.keyed = keyed
        super().__init__(
            data_source,  # type: ignore[arg-type]
            num_replicas=num_replicas,
            rank=rank,
            shuffle=True,
            seed=seed,
            drop_last=True,  # the last N % num_replicas (none for one process)
        )
        self.pool = np.arange(len(data_source))
        if repeats is not None:  # sample i appears repeats[i] times in every epoch
            self.pool = np.repeat(self.pool, repeats)
            self.num_samples = len(self.pool) // num_replicas
            self.total_size = self.num_samples * num_replicas

    def __iter__(self) -> Iterator[Any]:
        generator = torch.Generator()
        generator.manual_seed(epoch_seed(self.seed, self.epoch, "shuffle"))
        order = self.pool[torch.randperm(len(self.pool), generator=generator).numpy()].tolist()
        mine = order[self.rank : self.total_size : self.num_replicas]
        return iter([(i, self.epoch) for i in mine] if self.keyed else mine)


class EmotionDataModule(L.LightningDataModule):
    """Training, validation and any test split of one data set, cut into the given views.

    What may change between runs that share the module (and its decoded views) is set by
    ``engine.train`` before each: the training order's seed (:attr:`shuffle_seed`), each
    split's strata (:meth:`set_strata`) and a method's redrawing of training pictures
    (:attr:`compose`). ``data.augment`` applies to the training split.
    """

    shuffle_seed: int = 0
    """The seed of the training order and of its random redrawing and augmentation (see
    :class:`EpochShuffle`): ``engine.train`` sets the run's ``trainer.seed``."""

    compose: Composer | None = None
    """How training pictures are redrawn before their views are cut (a method's, e.g. person
    paste), or None."""

    repeats: np.ndarray | None = None
    """How many times each training sample appears in an epoch (a method's upsampling, JTT's),
    or None: once each."""

    held_out: np.ndarray | None = None
    """Indices of the validation samples a method keeps for itself (DFR's refitting set:
    :meth:`set_held_out`); the validation loader, and evaluation of the validation split,
    leave them out. None: every validation sample is scored."""

    def __init__(self, cfg: DataConfig, views: Sequence[str]) -> None:
        super().__init__()
        self.cfg = cfg
        missing = [v for v in views if v not in cfg.view_sizes]
        if missing:
            raise ConfigError(f"data.view_sizes lacks a size for view(s) {missing}")
        self.sizes = {v: cfg.view_sizes[v] for v in views}
        self.info = dataset_info(cfg.dataset)
        self.augment = Augment(cfg.augment)
        self._reader: Reader | None = None
        self._datasets: dict[str, ViewDataset] = {}
        self._strata: dict[str, np.ndarray] = {}
        self.num_strata = 0

    @property
    def reader(self) -> Reader:
        if self._reader is None:
            self._reader = open_reader(self.cfg)
        return self._reader

    def dataset(self, split: str) -> ViewDataset:
        """The (memoised) dataset of ``split``. The training split's views are cached only
        while no method redraws its pictures (:attr:`compose`): those views are never read."""
        train = split == self.cfg.train_split
        if split not in self._datasets:
            samples = self.reader.samples(split)
            self._datasets[split] = ViewDataset(
                samples,
                self.info,
                self.sizes,
                self.cfg.mask_fill,  # type: ignore[arg-type]
                None,
                root=self.reader.root,
                augment=self.augment,
                train=train,
            )
        dataset = self._datasets[split]
        if dataset.cache is None and not (train and self.compose is not None):
            dataset.cache = self._store(split, dataset.samples)
        dataset.strata = self._strata.get(split)
        if train:
            dataset.compose, dataset.seed = self.compose, self.shuffle_seed
        return dataset

    def _store(self, split: str, samples: list[Sample]) -> ViewStore | None:
        """Where ``split``'s decoded views are kept, as ``data.cache`` says; a disk cache is
        built (or completed) here, in ``data.cache_dir`` or ``<root>/.deconfound-cache/views``."""
        if self.cfg.cache == "none" or not samples:
            return None
        if self.cfg.cache == "memory":
            return MemoryViews()
        root = self.reader.root
        if self.cfg.cache_dir is None:  # one folder per reader: several may share a root
            folder = Path(root) / ".deconfound-cache" / "views" / self.cfg.dataset
        else:  # and one per data set, since several may share the folder
            place = hashlib.sha256(str(Path(root).resolve()).encode()).hexdigest()[:8]
            folder = Path(self.cfg.cache_dir) / f"{self.cfg.dataset}-{place}"
        return DiskViews.open(
            folder,
            split,
            samples,
            self.sizes,
            self.cfg.mask_fill,  # type: ignore[arg-type]
            root,
            progress=show_progress(),
        )

    def set_strata(self, strata: dict[str, np.ndarray], num_strata: int) -> None:
        """Give each split's samples their strata (context clusters: ``causal.strata``), in
        0 … ``num_strata`` − 1; ``{}`` goes back to the data set's stated confounders."""
        for split, values in strata.items():
            n = len(self.dataset(split))
            if len(values) != n:
                raise ConfigError(f"{len(values)} strata for the {n} samples of split '{split}'")
        self._strata, self.num_strata = dict(strata), num_strata

    def set_held_out(self, share: float, seed: int) -> None:
        """Keep a random ``share`` of the validation split apart (a pure function of the split's
        size and ``seed``): :meth:`held_out_loader` serves it, and the validation split's
        loader serves the rest only. ``share`` 0 scores every validation sample again."""
        if share <= 0:
            self.held_out = None
            return
        n = len(self.dataset(self.cfg.val_split))
        held = round(share * n)
        if not 1 <= held <= n - 1:
            raise ConfigError(
                f"holding {share:g} of the {n} samples of split '{self.cfg.val_split}' apart "
                f"leaves {held} held out and {n - held} scored; both need at least one: give a "
                "larger validation split or another share"
            )
        order = np.random.default_rng(epoch_seed(seed, 0, "held-out") % 2**32).permutation(n)
        self.held_out = np.sort(order[:held])

    def held_out_loader(self) -> DataLoader | None:
        """The held-out validation samples (:meth:`set_held_out`), in order, all of them in
        every process; None when none are held out."""
        if self.held_out is None:
            return None
        dataset = Subset(self.dataset(self.cfg.val_split), self.held_out.tolist())
        return DataLoader(dataset, batch_size=self.cfg.batch_size, num_workers=0)

    def training_strata(self) -> tuple[np.ndarray | None, int]:
        """The training samples' strata and how many there are (None, 0 where unknown)."""
        dataset = self.dataset(self.cfg.train_split)
        if dataset.strata is not None:
            return dataset.strata, self.num_strata
        values = np.array([dataset.stratum(i) for i in range(len(dataset))], dtype=np.int64)
        if len(values) == 0 or values.min() < 0:
            return None, 0
        return values, int(values.max()) + 1

    def training_targets(self) -> np.ndarray:
        """The training samples' class indices (multi-class) or multi-hot rows (multi-label)."""
        dataset = self.dataset(self.cfg.train_split)
        return np.stack([target(s, self.info).numpy() for s in dataset.samples])

    def loader(
        self, split: str, *, shuffle: bool = False, seed: int = 0, replicas: int = 1, rank: int = 0
    ) -> DataLoader:
        """A loader over ``split``, in order; or shuffled for training, in an order that is a
        pure function of (``seed``, epoch) (:class:`EpochShuffle`).

        With ``replicas`` processes (distributed), the loader of process ``rank`` holds its
        share: in training its part of each global batch (:class:`EpochShuffle`); in
        evaluation every ``replicas``-th sample, none twice and none added to even the shares
        out (Lightning's ``UnrepeatedDistributedSampler``, which Lightning leaves in place), so
        that metrics gathered from all the processes are those of the whole split. The
        validation split leaves out the samples a method holds out (:meth:`set_held_out`).
        """
        dataset: Dataset[Batch] = self.dataset(split)
        if split == self.cfg.val_split and self.held_out is not None:
            kept = np.setdiff1d(np.arange(len(dataset)), self.held_out)  # type: ignore[arg-type]
            dataset = Subset(dataset, kept.tolist())
        sampler: Sampler[Any] | None = None
        if shuffle:
            assert isinstance(dataset, ViewDataset)
            keyed = dataset.compose is not None or dataset.augmented
            repeats = self.repeats if split == self.cfg.train_split else None
            sampler = EpochShuffle(dataset, seed, replicas, rank, keyed=keyed, repeats=repeats)
        elif replicas > 1:
            if len(dataset) < replicas:
                raise ConfigError(
                    f"split '{split}' has {len(dataset)} samples, fewer than the {replicas} "
                    "processes that would share it; use fewer devices"
                )
            sampler = UnrepeatedDistributedSampler(
                dataset, num_replicas=replicas, rank=rank, shuffle=False
            )
        size = len(sampler) if sampler is not None else len(dataset)  # type: ignore[arg-type]
        return DataLoader(
            dataset,
            batch_size=self.cfg.batch_size,
            sampler=sampler,
            num_workers=self.cfg.num_workers,
            persistent_workers=self.cfg.num_workers > 0,
            drop_last=shuffle and size > self.cfg.batch_size,
        )

    def train_dataloader(self) -> DataLoader:
        self.dataset(self.cfg.train_split)  # with this run's seed and redrawing
        return self.loader(
            self.cfg.train_split, shuffle=True, seed=self.shuffle_seed, **self._share()
        )

    def val_dataloader(self) -> DataLoader:
        return self.loader(self.cfg.val_split, **self._share())

    def _share(self) -> dict[str, int]:
        """This process's place among the processes of the trainer it is attached to."""
        trainer = self.trainer
        if trainer is None:
            return {}
        return {"replicas": trainer.world_size, "rank": trainer.global_rank}


def synthetic_root(base: str | Path, cfg: SynthConfig | FaceSynthConfig) -> Path:
    """A directory under ``base`` named after ``cfg`` (context or facial-expression set) and
    its on-disk format, so each setting is generated once (and a set in an older format is left
    alone, not reused)."""
    if isinstance(cfg, SynthConfig):
        fmt, name = FORMAT, f"synthetic-rho{cfg.rho:g}-seed{cfg.seed}"
    else:
        fmt, name = FACES_FORMAT, f"synthetic-faces-seed{cfg.seed}"
    key = json.dumps({**cfg.__dict__, "format": fmt}, sort_keys=True).encode()
    return Path(base) / f"{name}-{hashlib.sha1(key).hexdigest()[:8]}"

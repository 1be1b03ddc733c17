"""Entry points of the engine: ``train`` a config, ``evaluate`` a checkpoint on any split."""

from __future__ import annotations

import copy
import logging
import random
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import yaml
from lightning.pytorch.callbacks import Callback, ModelCheckpoint, TQDMProgressBar
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.plugins.io import TorchCheckpointIO
from lightning.pytorch.utilities.exceptions import MisconfigurationException

from deconfound.causal import ConfounderDictionary
from deconfound.config import (
    Config,
    ModelConfig,
    TrainerConfig,
    apply_override,
    from_dict,
    save_config,
)
from deconfound.data.datamodule import EmotionDataModule, epoch_seed
from deconfound.engine.folder import holds_run_folder
from deconfound.engine.module import EmotionModule
from deconfound.errors import ConfigError, DeconfoundError, one_line
from deconfound.io import atomic_write
from deconfound.methods import get_method, resolved_args
from deconfound.progress import show_progress

log = logging.getLogger(__name__)

# Options that may differ between a run and its resumption (the dictionary section only says how
# model.dictionary was built; the model holds the dictionary itself). A run resumed on another
# number of processes goes on with another global batch (data.batch_size per process).
RESUMABLE_CHANGES = {
    ("trainer", "max_epochs"),
    ("trainer", "progress_bar"),
    ("trainer", "devices"),
    ("trainer", "num_nodes"),
    ("trainer", "strategy"),
    ("dictionary", "*"),
}

# The trainer options of a distributed run, as for one process: a checkpoint is evaluated so.
ONE_PROCESS = {"devices": 1, "strategy": "auto", "num_nodes": 1, "sync_batchnorm": False}


class AtomicCheckpointIO(TorchCheckpointIO):
    """Writes each checkpoint to a temporary file beside it (``.NAME.*.tmp``) and renames it
    into place, so a checkpoint is complete or absent even when the process is killed.

    Lightning's own writer goes through a temporary file in the system temporary folder, which
    a killed process leaves there, and which it copies when that folder is on another device.
    """

    def save_checkpoint(
        self, checkpoint: dict[str, Any], path: Any, storage_options: Any = None
    ) -> None:
        if storage_options is not None:  # unsupported: Lightning raises its TypeError
            return super().save_checkpoint(checkpoint, path, storage_options)
        atomic_write(path, lambda tmp: torch.save(checkpoint, tmp))


class EpochSeeding(Callback):
    """Re-seeds Python's, NumPy's and torch's global random generators from (``seed``, epoch)
    alone just before each training epoch's first batch.

    With it and the data module's :class:`~deconfound.data.datamodule.EpochShuffle` order, an
    epoch's training is a pure function of the seed and of the state at its start, which an
    epoch-end checkpoint holds (weights, optimiser, schedule, callbacks). A run killed mid-epoch
    loses that epoch's partial work; resumed from its ``last.ckpt`` in a new process, whose
    global random state differs (model construction, the validation sanity check and loader
    set-up draw from it first), it redoes the epoch with the same batches and dropout masks and
    ends with the uninterrupted run's weights and metrics (bitwise on CPU with
    ``trainer.deterministic``).

    The first batch, not ``on_train_epoch_start``: Lightning skips that hook for the first epoch
    after resuming from an epoch-end checkpoint. Not covered: the random state of DataLoader
    worker processes (persistent, so they would not replay an epoch anyway); the datasets draw
    no random numbers. With several processes each draws from (``seed``, epoch, its rank), so
    that their samples do not share dropout masks; process 0 draws as a process alone does.
    """

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def on_train_batch_start(
        self, trainer: L.Trainer, pl_module: L.LightningModule, batch: Any, batch_idx: int
    ) -> None:
        if batch_idx == 0:
            rank = trainer.global_rank
            s = epoch_seed(self.seed, trainer.current_epoch, f"rng:{rank}" if rank else "rng")
            random.seed(s)
            np.random.seed(s % 2**32)
            torch.manual_seed(s)  # and every GPU's generator


MONITORED = {
    "plain": None,  # the data set's metric
    "reweighted": "val/accuracy_reweighted",
    "worst_group": "val/accuracy_worst_group",
}
"""The validation score each selection rule (``trainer.monitor``) maximises."""


@dataclass(frozen=True)
class TrainResult:
    """Where a run's outputs are, its best validation score (by ``trainer.monitor``), the
    checkpoint ``trainer.select`` picks as the run's result, and the checkpoint each kept
    selection rule picks (``trainer.monitor``'s, ``trainer.keep_best_by``'s and ``last``)."""

    run_dir: Path
    best_checkpoint: Path
    best_score: float
    selected: Path
    by_rule: dict[str, Path]


def make_trainer(
    cfg: Config, run_dir: Path | None = None, callbacks: list[Callback] | None = None
) -> L.Trainer:
    """A Lightning Trainer set up from ``cfg.trainer``; logs and checkpoints go to ``run_dir``
    (without one: no logs, no checkpoints, no progress bar, as for evaluation).

    With ``strategy: ddp`` it is one of several processes (its ``global_rank`` and
    ``world_size`` are known from here on): Lightning starts the others itself (``devices`` > 1
    on one node) or joins those that torchrun or SLURM's srun started.
    """
    t = cfg.trainer
    callbacks = list(callbacks or [])
    # a bar redraws itself with carriage returns: only on a terminal, never into a log file
    bars = show_progress(t.progress_bar and run_dir is not None)
    if bars:
        callbacks.append(TQDMProgressBar())
    check_hardware(cfg.trainer)
    return _new_trainer(
        max_epochs=t.max_epochs,
        limit_train_batches=t.limit_train_batches or 1.0,
        accelerator=t.accelerator,
        devices=t.devices,
        strategy=t.strategy,
        num_nodes=t.num_nodes,
        sync_batchnorm=t.sync_batchnorm,
        precision=t.precision,  # type: ignore[arg-type]
        deterministic=t.deterministic,
        logger=CSVLogger(run_dir, name="logs") if run_dir else False,  # logs/version_N/
        callbacks=callbacks,
        enable_checkpointing=run_dir is not None,
        enable_progress_bar=bars,
        enable_model_summary=False,
        log_every_n_steps=t.log_every_n_steps,
        default_root_dir=run_dir,
        plugins=[AtomicCheckpointIO()],
    )


def check_hardware(t: TrainerConfig) -> None:
    """Refuse, naming the choices, a ``trainer.accelerator`` that this machine does not have and
    ``trainer.devices`` that it cannot give (the config's own check knows only the names)."""
    gpus = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if t.accelerator in ("gpu", "cuda") and not gpus:
        build = " (a CPU-only build of torch)" if torch.version.cuda is None else ""
        raise ConfigError(
            f"trainer.accelerator={t.accelerator}, but this machine has no CUDA GPU that torch "
            f"{torch.__version__}{build} can use; use trainer.accelerator=cpu or auto"
        )
    if t.accelerator == "mps" and not torch.backends.mps.is_available():
        raise ConfigError(
            "trainer.accelerator=mps, but this machine has no Apple GPU that torch can use; "
            "use trainer.accelerator=cpu or auto"
        )
    on_cpu = t.accelerator == "cpu" or (t.accelerator == "auto" and not gpus)
    if on_cpu and t.devices != "auto" and not (isinstance(t.devices, int) and t.devices >= 1):
        raise ConfigError(
            f"trainer.devices={t.devices!r} names GPUs, but the run is on the CPU; give a number "
            "of processes (1 or more) or auto"
        )
    wanted = t.devices if isinstance(t.devices, int) else 0
    if not on_cpu and wanted > gpus:
        raise ConfigError(
            f"trainer.devices={wanted}, but this machine has {gpus} GPU(s); ask for at most "
            f"{gpus}, or -1 for all"
        )


def _new_trainer(**options: Any) -> L.Trainer:
    """``L.Trainer(**options)``; what Lightning refuses in them is a one-line ConfigError."""
    try:
        return L.Trainer(**options)
    except (MisconfigurationException, ValueError, TypeError, ImportError) as e:
        chosen = ", ".join(
            f"trainer.{k}={options[k]!r}" for k in ("accelerator", "devices", "precision")
        )
        raise ConfigError(f"Lightning refuses {chosen}: {one_line(e)}") from None


def train(cfg: Config, data: EmotionDataModule | None = None) -> TrainResult:
    """Train ``cfg`` into ``cfg.run_dir``; a run interrupted there resumes from ``last.ckpt``.

    A method that learns from a first run (:meth:`~deconfound.methods.Method.first_run`,
    JTT's) has it trained first, into its own folder (resumed or reused alike), and receives
    its logits on the training split before its own training starts.

    ``checkpoints/last.ckpt`` is written at the end of every epoch, ``best.ckpt`` at each new
    best validation score. A resumed run ends as the uninterrupted one would have (same weights
    and metrics): each epoch's shuffle and random draws depend on (``trainer.seed``, epoch) only
    (:class:`EpochSeeding`), so the epoch a kill interrupted is redone exactly. Checkpoints and
    the config are written atomically; temporaries that a killed run left behind are removed.

    With several processes (``trainer.strategy=ddp``) every process runs this function; only
    process 0 writes the config, logs and checkpoints (to a folder all of them can read, for a
    resumption), and each trains on its share of every global batch.

    ``data`` lets several runs on the same data share one data module (and its decoded views).
    """
    cfg = copy.deepcopy(cfg)
    cfg.model.intervention_args = resolved_args(cfg.model)  # recorded in full, defaults too
    first = get_method(cfg.model).first_run(cfg)
    learnt = None
    if first is not None:
        trained = load_module(train(first, data).selected)
        learnt = training_logits(trained, data)
    return _train(cfg, data, learnt)


@holds_run_folder  # locked while it trains; removed if the run fails before saving anything
def _train(
    cfg: Config,
    data: EmotionDataModule | None,
    first_logits: tuple[torch.Tensor, torch.Tensor] | None,
) -> TrainResult:
    """:func:`train`, once a first run (if any) gave ``first_logits`` (logits, targets)."""
    run_dir = cfg.run_dir
    ckpt_dir = run_dir / "checkpoints"
    last = ckpt_dir / "last.ckpt"
    resume = last.is_file()
    if resume:
        _check_resumable(cfg, run_dir / "config.yaml")
        log.info("resuming %s from %s", run_dir, last)
    L.seed_everything(cfg.trainer.seed, workers=True, verbose=False)
    config = cfg.to_dict()
    module = EmotionModule(config)
    if first_logits is not None:
        module.method.learn_from_first_run(*first_logits)
    data = data if data is not None else EmotionDataModule(cfg.data, module.model.views)
    prepare_data(cfg, module, data)  # refuses bad data before anything is written
    rules = [cfg.trainer.monitor, *cfg.trainer.keep_best_by]
    kept = {
        rule: ModelCheckpoint(
            dirpath=ckpt_dir,
            filename="best" if rule == cfg.trainer.monitor else f"best-{rule}",
            monitor=MONITORED[rule] or f"val/{module.info.metric}",
            mode="max",
            enable_version_counter=False,
        )
        for rule in dict.fromkeys(rules)
    }
    checkpoint = kept[cfg.trainer.monitor]
    # last.ckpt at every epoch end (``save_last=True`` on ``checkpoint`` writes it only at a new
    # best since Lightning 2.6); saved after the best ones (Lightning keeps the order of
    # checkpoint callbacks), so it holds that epoch's best scores
    latest = ModelCheckpoint(dirpath=ckpt_dir, filename="last", enable_version_counter=False)
    callbacks = [*kept.values(), latest, EpochSeeding(cfg.trainer.seed)]
    trainer = make_trainer(cfg, run_dir, callbacks)
    if trainer.is_global_zero:  # the others might remove its temporaries as it writes
        for stale in [*run_dir.glob(".*.tmp"), *ckpt_dir.glob(".*.tmp")]:  # of a killed writer
            stale.unlink(missing_ok=True)
        save_config(cfg, run_dir / "config.yaml")
    trainer.fit(module, datamodule=data, ckpt_path=last if resume else None)
    score = checkpoint.best_model_score
    best = Path(checkpoint.best_model_path or last)
    by_rule = {rule: Path(c.best_model_path or last) for rule, c in kept.items()}
    return TrainResult(
        run_dir,
        best,
        float(score) if score is not None else float("nan"),
        best if cfg.trainer.select == "best" else last,
        {**by_rule, "last": last},
    )


def prepare_data(cfg: Config, module: EmotionModule, data: EmotionDataModule) -> None:
    """Set ``data`` up for this run of ``module``'s method: the training order's seed, the
    method's redrawing of training pictures, and the strata (context clusters of
    ``model.dictionary``, which every run with a dictionary gets for the re-weighted validation
    metric); the training and validation splits are read, so bad data stops the run here."""
    method, d = module.method, cfg.data
    data.shuffle_seed = cfg.trainer.seed
    views = tuple(data.sizes)
    data.compose = method.compose(data.reader, d.train_split, d.mask_fill, views)  # (before caches)
    data.set_held_out(method.held_out_share, cfg.trainer.seed)
    data.repeats = method.sampling_repeats()
    for split in (d.train_split, d.val_split):
        data.dataset(split)
    strata: dict[str, np.ndarray] = {}
    n = 0
    if cfg.model.dictionary and (method.needs_strata or module.info.task == "multiclass"):
        from deconfound.pipelines.strata import dictionary_strata

        splits = {s: data.dataset(s).samples for s in (d.train_split, d.val_split)}
        try:
            strata, n = dictionary_strata(
                cfg, splits, module.info, progress=False, described=not method.needs_strata
            )
        except DeconfoundError as e:
            if method.needs_strata:
                raise
            log.warning("val/accuracy_reweighted is not logged: %s", e)
    data.set_strata(strata, n)
    grouped = [r for r in (cfg.trainer.monitor, *cfg.trainer.keep_best_by) if MONITORED[r]]
    if grouped and data.training_strata()[0] is None:
        key = "monitor" if cfg.trainer.monitor in grouped else "keep_best_by"
        raise ConfigError(
            f"trainer.{key}={grouped[0]} needs strata: give model.dictionary (its context "
            "clusters) or use a data set that states its confounder"
        )


def _check_resumable(cfg: Config, saved_path: Path) -> None:
    """Refuse to continue a run whose saved config differs (beyond ``RESUMABLE_CHANGES``).

    The saved config is read through the current schema, so options added since it was written
    take their defaults instead of counting as differences. The run's ``last.ckpt`` must be a
    checkpoint of such a run too (:func:`_check_last`).
    """
    _check_last(cfg, saved_path.parent / "checkpoints" / "last.ckpt")
    if not saved_path.is_file():
        return
    saved = from_dict(Config, yaml.safe_load(saved_path.read_text()), str(saved_path)).to_dict()
    changed = _changed(saved, cfg)
    if changed:
        key, before, value = changed
        raise ConfigError(
            f"{saved_path.parent} holds a run made with {key}={before!r}, "
            f"not {value!r}; use another name or delete that directory"
        )


def _changed(saved: dict[str, Any], cfg: Config) -> tuple[str, Any, Any] | None:
    """The first option (``section.key``, saved value, value in ``cfg``) in which the saved
    config differs from ``cfg`` beyond ``RESUMABLE_CHANGES``; None when there is none."""
    saved = copy.deepcopy(saved)  # its method's options as the run meant them
    model = from_dict(ModelConfig, saved["model"], "saved model section")
    saved["model"]["intervention_args"] = resolved_args(model, saved=True)
    for section, values in cfg.to_dict().items():
        if not isinstance(values, dict):
            continue
        for key, value in values.items():
            before = saved[section][key]
            exempt = {(section, key), (section, "*")} & RESUMABLE_CHANGES
            if not exempt and before != value:
                return f"{section}.{key}", before, value
    return None


def _check_last(cfg: Config, last: Path) -> None:
    """Refuse to resume from ``last`` unless it is a checkpoint that ``deconfound train`` wrote
    for this config (beyond ``RESUMABLE_CHANGES``), in a short line naming it and the fix
    (Lightning's own errors on a foreign file span many lines)."""
    fix = "delete it to start afresh, or give this run another name"
    try:
        try:  # (memory-mapped: the weights are not read)
            ckpt = torch.load(last, map_location="cpu", weights_only=False, mmap=True)
        except RuntimeError:  # a file not in torch's zip format cannot be mapped
            ckpt = torch.load(last, map_location="cpu", weights_only=False)
        saved = from_dict(Config, ckpt["hyper_parameters"]["config"], str(last)).to_dict()
        if "state_dict" not in ckpt or "epoch" not in ckpt:
            raise KeyError("state_dict")
    except Exception as e:
        why = f"no {e}" if isinstance(e, KeyError) else one_line(e)[:40]
        raise DeconfoundError(f"{last}: not a deconfound train checkpoint ({why}); {fix}") from None
    changed = _changed(saved, cfg)
    if changed:
        key, before, value = (str(v)[:30] for v in changed)
        raise DeconfoundError(f"{last} was saved with {key}={before}, not {value}; {fix}")


def load_module(checkpoint: str | Path, overrides: list[str] | None = None) -> EmotionModule:
    """Rebuild the module saved in ``checkpoint``, with optional config overrides (e.g. a new
    ``data.root``).

    The processes that trained it are not the module's: it runs in one process (``ONE_PROCESS``)
    unless the overrides ask for several (``trainer.devices=2 trainer.strategy=ddp``).
    """
    path = Path(checkpoint)
    if not path.is_file():
        raise DeconfoundError(f"checkpoint {path} not found")
    try:
        ckpt = torch.load(path, map_location="cpu", weights_only=False)
        config = ckpt["hyper_parameters"]["config"]
    except Exception as e:
        why = " ".join(str(e).split())  # torch's unpickling errors span lines
        raise DeconfoundError(f"{path}: not a deconfound checkpoint ({why})") from None
    if isinstance(config.get("trainer"), dict):
        config["trainer"].update(ONE_PROCESS)
    if isinstance(config.get("model"), dict):  # its method's options as the run meant them
        model = from_dict(ModelConfig, config["model"], str(path))
        config["model"]["intervention_args"] = resolved_args(model, saved=True)
    for item in overrides or []:
        apply_override(config, item)
    state = ckpt["state_dict"]
    dictionary = None
    held = [k for k in state if k.endswith(".confounders") and f"{k[:-11]}prior" in state]
    if held:  # the checkpoint carries its dictionary (CCIM's, the backdoor adjustment's)
        prior = state[f"{held[0][:-11]}prior"].flatten()
        dictionary = ConfounderDictionary(state[held[0]], prior)
    config = from_dict(Config, config, str(path)).to_dict()
    module = EmotionModule(config, load_weights=False, dictionary=dictionary)
    module.load_state_dict(state)
    return module.eval()


def training_logits(
    module: EmotionModule, data: EmotionDataModule | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``module``'s logits (N, classes) and the targets on the training split of its data set
    (or of ``data``), in the split's order, each picture as it is: not redrawn, not augmented,
    in the evaluation frame."""
    cfg = module.cfg
    data = data if data is not None else EmotionDataModule(cfg.data, module.model.views)
    trainer = make_trainer(cfg)
    batches = trainer.predict(module, dataloaders=data.loader(cfg.data.train_split))
    logits, targets = zip(*batches, strict=True)  # type: ignore[arg-type]
    return torch.cat(logits).float(), torch.cat(targets)


def evaluate(
    module: EmotionModule, splits: list[str], data: EmotionDataModule | None = None
) -> dict[str, dict[str, float]]:
    """Metrics of ``module`` on each of ``splits`` of its configured data set (or of ``data``).

    With several processes (``trainer.strategy=ddp``), each evaluates a share of every split,
    no sample twice, and every process returns the metrics of all the predictions together:
    those of one process, up to the order of floating-point sums.
    """
    cfg = module.cfg
    data = data if data is not None else EmotionDataModule(cfg.data, module.model.views)
    data.set_held_out(module.method.held_out_share, cfg.trainer.seed)  # never scored
    trainer = make_trainer(cfg)
    share = {"replicas": trainer.world_size, "rank": trainer.global_rank}
    results: dict[str, dict[str, float]] = {}
    for split in splits:
        loader = data.loader(split, **share)
        (metrics,) = trainer.test(module, dataloaders=loader, verbose=False)
        results[split] = {k.removeprefix("test/"): float(v) for k, v in metrics.items()}
    return results

"""Run configuration: YAML mapped onto typed dataclasses, with ``key.sub=value`` overrides.

Unknown keys and values of the wrong type are refused with the dotted key and the file named.
Model-specific arguments live in ``model.args`` and are checked against the model's constructor,
which is their schema.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import types
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from deconfound.errors import ConfigError
from deconfound.io import atomic_write_text

CONFIG_DIR = Path(__file__).parent / "configs"


@dataclass
class DataConfig:
    """Which data, which splits, and how batches are made.

    ``args`` are the reader's own options (its constructor's keyword arguments, e.g. CAER-S's
    ``val_fraction``); ``skip_bad`` skips (and counts) bad samples instead of stopping at the
    first. ``view_sizes`` gives the side of each view a model may ask for; ``synthetic`` holds
    the generator settings used when ``dataset`` is ``synthetic`` and ``root`` does not exist
    yet.
    """

    dataset: str = "synthetic"
    root: str = "data/synthetic"
    args: dict[str, Any] = field(default_factory=dict)
    skip_bad: bool = False
    train_split: str = "train"
    val_split: str = "val"
    test_splits: list[str] = field(
        default_factory=lambda: ["test_iid", "test_balanced", "test_anti"]
    )
    view_sizes: dict[str, int] = field(
        default_factory=lambda: {"body": 64, "face": 32, "context": 64, "whole": 64}
    )
    mask_fill: str = "zeros"
    batch_size: int = 64
    num_workers: int = 0
    cache: bool = True
    synthetic: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        _at_least(self.batch_size, 1, "data.batch_size")
        _at_least(self.num_workers, 0, "data.num_workers")
        for view, size in self.view_sizes.items():
            if not isinstance(size, int) or isinstance(size, bool) or size < 1:
                raise ConfigError(
                    f"'data.view_sizes.{view}' must be a positive integer, got {size!r}"
                )


@dataclass
class ModelConfig:
    """A base model from the registry, its constructor arguments, and the intervention on top.

    ``intervention`` is ``none``, ``ccim_dot`` or ``ccim_add``; CCIM needs ``dictionary``, the
    path of a confounder dictionary, and takes ``intervention_args`` (see ``CCIM``).
    """

    name: str = "emotnet"
    args: dict[str, Any] = field(default_factory=dict)
    intervention: str = "none"
    intervention_args: dict[str, Any] = field(default_factory=dict)
    dictionary: str | None = None


@dataclass
class DictionaryConfig:
    """How ``deconfound dictionary build`` makes ``model.dictionary`` from the training split.

    The person is masked with ``mask_fill``, the image resized to ``image_size`` and embedded by
    ``backbone`` (with ``weights``, a local file: Places365 ResNet-152 in the papers); K-means
    (``kmeans``: faiss, sklearn or minibatch) makes ``num_clusters`` prototypes.
    """

    backbone: str = "resnet152"
    weights: str | None = None
    num_clusters: int = 256
    image_size: int = 224
    mask_fill: str = "zeros"
    batch_size: int = 64
    kmeans: str = "faiss"
    iters: int = 25
    seed: int = 0


@dataclass
class LossConfig:
    """The training loss: ``name`` from ``engine.losses.LOSSES`` (``auto``: cross-entropy for
    multi-class data, binary cross-entropy for multi-label; ``emotic_discrete``: EMOT-Net's
    weighted squared error) with its ``args``. For a model with modality heads (EmotiCon),
    the multiplicative combination loss over them is added, scaled by ``modality_weight``, with
    exponent ``modality_beta``."""

    name: str = "auto"
    args: dict[str, Any] = field(default_factory=dict)
    modality_weight: float = 1.0
    modality_beta: float = 2.0


@dataclass
class OptimConfig:
    """Optimiser and learning-rate schedule.

    ``backbone_lr`` (default: ``lr``) is the learning rate of the base model's parameters, e.g.
    lower for a pretrained backbone; ``betas`` are Adam's. ``scheduler``: ``cosine`` (to 0 at
    the last epoch), ``linear`` (``warmup_epochs`` of linear warm-up, constant until epoch
    ``hold_epochs``, then linear to 0 at the last epoch: IERN's schedule) or ``none``.
    """

    optimizer: str = "adamw"
    lr: float = 1e-3
    backbone_lr: float | None = None
    weight_decay: float = 1e-4
    betas: list[float] = field(default_factory=lambda: [0.9, 0.999])
    scheduler: str = "cosine"
    warmup_epochs: int = 0
    hold_epochs: int = 0


STRATEGIES = ("auto", "ddp", "ddp_find_unused_parameters_true")
"""Lightning's strategies a run may use: one process (``auto``) or distributed data parallel
(``ddp``; with ``find_unused_parameters`` for models that leave some weights out of a loss)."""


@dataclass
class TrainerConfig:
    """How to run: epochs, seed, hardware and precision (passed to Lightning's Trainer).

    Several processes (``strategy: ddp``): ``devices`` per node, on ``num_nodes`` nodes, each
    process loading ``data.batch_size`` samples per step (the global batch is that times the
    number of processes); ``sync_batchnorm`` normalises with the statistics of the global batch
    (GPUs only).
    """

    max_epochs: int = 10
    seed: int = 0
    accelerator: str = "auto"
    devices: Any = 1
    strategy: str = "auto"
    num_nodes: int = 1
    sync_batchnorm: bool = False
    precision: str = "32-true"
    channels_last: bool = False
    """Image views and the model in channels-last memory order (faster convolutions on GPUs
    with tensor cores, above all with ``precision: 16-mixed`` or ``bf16-mixed``)."""
    deterministic: bool = True
    progress_bar: bool = True
    log_every_n_steps: int = 20

    def __post_init__(self) -> None:
        _at_least(self.max_epochs, 1, "trainer.max_epochs")
        _at_least(self.log_every_n_steps, 1, "trainer.log_every_n_steps")
        _at_least(self.num_nodes, 1, "trainer.num_nodes")
        if self.strategy not in STRATEGIES:
            raise ConfigError(
                f"unknown trainer.strategy '{self.strategy}'; choose one of {', '.join(STRATEGIES)}"
            )
        if self.sync_batchnorm and self.accelerator == "cpu":
            raise ConfigError(
                "'trainer.sync_batchnorm' needs GPUs (torch's SyncBatchNorm does not run on the "
                "CPU); leave it false with trainer.accelerator=cpu"
            )


def _at_least(value: int, low: int, key: str) -> None:
    if value < low:
        raise ConfigError(f"'{key}' must be at least {low}, got {value}")


@dataclass
class Config:
    """One training run. Its outputs go to ``<out_dir>/<name>/``."""

    name: str = "run"
    out_dir: str = "runs"
    data: DataConfig = field(default_factory=DataConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    dictionary: DictionaryConfig = field(default_factory=DictionaryConfig)
    loss: LossConfig = field(default_factory=LossConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)

    @property
    def run_dir(self) -> Path:
        return Path(self.out_dir) / self.name

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_yaml(self) -> str:
        return yaml.safe_dump(self.to_dict(), sort_keys=False)


def resolve_config_path(name_or_path: str | Path) -> Path:
    """A path as given if it exists, else a config bundled with the package (``demo``,
    ``emotnet_synthetic.yaml``, ...)."""
    path = Path(name_or_path)
    if path.is_file():
        return path
    bundled = CONFIG_DIR / (path.name if path.suffix else f"{path.name}.yaml")
    if bundled.is_file():
        return bundled
    known = ", ".join(sorted(p.stem for p in CONFIG_DIR.glob("*.yaml")))
    raise ConfigError(f"config '{name_or_path}' not found; give a YAML path or one of: {known}")


def load_config(
    name_or_path: str | Path | None = None, overrides: list[str] | None = None
) -> Config:
    """Read a YAML config (defaults when None) and apply ``key.sub=value`` overrides.

    A config may start from another: ``extends: NAME`` (a path relative to the file, or a
    bundled config) takes that config and merges this file's keys over it, section by section
    (``args`` mappings are replaced whole).
    """
    raw: dict[str, Any] = {}
    source = "defaults"
    if name_or_path is not None:
        path = resolve_config_path(name_or_path)
        source = str(path)
        raw = _read_raw(path, ())
    for item in overrides or []:
        apply_override(raw, item)
    return from_dict(Config, raw, source)


def _read_raw(path: Path, seen: tuple[Path, ...]) -> dict[str, Any]:
    """The mapping in ``path`` with its ``extends`` chain merged in."""
    if path.resolve() in seen:
        chain = " -> ".join(str(p) for p in (*seen, path.resolve()))
        raise ConfigError(f"{path}: configs extend each other in a cycle ({chain})")
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({str(e).splitlines()[0]})") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not a text file ({e})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of sections")
    parent = raw.pop("extends", None)
    if parent is None:
        return raw
    if not isinstance(parent, str):
        raise ConfigError(f"{path}: 'extends' must name one config, got {parent!r}")
    sibling = path.parent / parent
    base_path = sibling if sibling.is_file() else resolve_config_path(parent)
    return _merge(_read_raw(base_path, (*seen, path.resolve())), raw)


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    """``top`` over ``base``: mappings merge key by key, anything else is replaced, and so is
    an ``args`` mapping (the arguments of one constructor, e.g. of another model)."""
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict) and key != "args":
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def apply_override(raw: dict[str, Any], item: str) -> None:
    """Set ``raw[a][b] = value`` for an override ``a.b=value`` (value parsed as YAML)."""
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise ConfigError(f"override '{item}' must look like section.key=value")
    *parents, leaf = key.strip().split(".")
    node = raw
    for p in parents:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"override '{item}': '{p}' is not a section")
    try:
        node[leaf] = yaml.safe_load(value)
    except yaml.YAMLError:
        raise ConfigError(f"override '{item}': value is not valid YAML") from None


def from_dict(cls: type, raw: Any, source: str, prefix: str = "") -> Any:
    """Build dataclass ``cls`` from ``raw``, checking keys and value types."""
    if not isinstance(raw, dict):
        where = prefix.rstrip(".") or "config"
        raise ConfigError(f"{source}: '{where}' must be a mapping, got {raw!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(raw) - names
    if unknown:
        key = f"{prefix}{sorted(unknown)[0]}"
        raise ConfigError(
            f"{source}: unknown key '{key}'; known keys here: {', '.join(sorted(names))}"
        )
    values = {}
    for name, value in raw.items():
        values[name] = _coerce(hints[name], value, source, f"{prefix}{name}")
    return cls(**values)


def _coerce(tp: Any, value: Any, source: str, key: str) -> Any:
    if dataclasses.is_dataclass(tp):
        return from_dict(tp, value, source, key + ".")
    if tp is Any:
        return value
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        tp = next(t for t in options if t is not type(None))
        origin = typing.get_origin(tp)
    expected = origin or tp
    if expected is float and isinstance(value, str):
        value = _float_text(value)  # YAML 1.1 reads 1e-3 (without a dot) as text
    if expected is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
        raise ConfigError(
            f"{source}: '{key}' must be {getattr(expected, '__name__', expected)}, got {value!r}"
        )
    if expected is float and not math.isfinite(value):
        raise ConfigError(f"{source}: '{key}' must be a finite number, got {value!r}")
    return value


def _float_text(text: str) -> float | str:
    """The number ``text`` spells (``1e-3``, ``nan``), or ``text`` when it is not one."""
    try:
        return float(text)
    except ValueError:
        return text


def save_config(config: Config, path: Path) -> None:
    """Write the resolved config as YAML, atomically."""
    atomic_write_text(path, config.to_yaml())


def construct(factory: Any, args: dict[str, Any], what: str) -> Any:
    """``factory(**args)`` after checking ``args`` against its signature: a constructor is the
    schema of its config arguments (``model.args``, ``data.args``)."""
    params = inspect.signature(factory).parameters
    unknown = sorted(set(args) - set(params))
    if unknown:
        known = ", ".join(p for p in params if p not in ("self", "args", "kwargs"))
        raise ConfigError(f"{what}: unknown argument '{unknown[0]}'; known: {known}")
    return factory(**args)

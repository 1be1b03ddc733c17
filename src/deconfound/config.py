"""Run configuration: YAML mapped onto typed dataclasses, with ``key.sub=value`` overrides.

Unknown keys and values of the wrong type are refused with the dotted key and the file named.
Model-specific arguments live in ``model.args`` and are checked against the model's constructor,
which is their schema.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import re
import types
import typing
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import yaml

from deconfound.errors import ConfigError
from deconfound.io import atomic_write_text

CONFIG_DIR = Path(__file__).parent / "configs"


AUGMENT_VIEWS = ("body", "face", "context", "whole", "depth", "mask")
"""The views augmentation may touch: the 3-channel picture views and the 1-channel maps."""

AUGMENT_ORDERS = ("fixed", "shuffled")


@dataclass
class AugmentConfig:
    """Random augmentation of the training split's decoded uint8 views (``data.augment.Augment``).

    Every op is off by default. ``crop_scale`` (area fraction) and ``crop_ratio`` (width /
    height) give a random resized crop, output at the view's size; ``flip_p`` a horizontal
    flip; ``affine_*`` a random affine (rotation within ±``affine_degrees``, shift within
    ±``affine_translate`` of the side, zoom in ``affine_scale``, x shear within ±``affine_shear``
    degrees), applied with probability ``affine_p``; ``brightness``, ``contrast`` and
    ``saturation`` are [lo, hi] factor ranges and ``hue`` the largest hue shift (at most 0.5),
    applied together with probability ``jitter_p`` to 3-channel views only, as is the Gaussian
    blur (probability ``blur_p``, sigma in ``blur_sigma``, in pixels). The crop always comes
    first; ``order`` is ``fixed`` (flip, affine, brightness, contrast, saturation, hue, blur) or
    ``shuffled`` (an order drawn per view). ``views``: the views to augment (null: all of
    ``AUGMENT_VIEWS`` that a sample has). ``data.augment: null`` turns every op off.

    ``eval_crop`` keeps one scale at training and evaluation when the crop is on: every view
    that is not augmented (the evaluation splits, predictions) is cut to its centred square of
    the training crops' mean area (the mean of ``crop_scale``), resized to the view's size as
    the training crops are; the release's 256-resize, 224-crop protocol is ``crop_scale``
    (224/256)² with it. ``false`` gives evaluation the whole view (this library before
    2026-12-07: the training crops then showed faces 1/sqrt(scale) times larger).
    """

    flip_p: float = 0.0
    crop_scale: list[float] = field(default_factory=lambda: [1.0, 1.0])
    crop_ratio: list[float] = field(default_factory=lambda: [1.0, 1.0])
    brightness: list[float] = field(default_factory=lambda: [1.0, 1.0])
    contrast: list[float] = field(default_factory=lambda: [1.0, 1.0])
    saturation: list[float] = field(default_factory=lambda: [1.0, 1.0])
    hue: float = 0.0
    jitter_p: float = 1.0
    blur_p: float = 0.0
    blur_sigma: list[float] = field(default_factory=lambda: [0.1, 2.0])
    affine_degrees: float = 0.0
    affine_translate: float = 0.0
    affine_scale: list[float] = field(default_factory=lambda: [1.0, 1.0])
    affine_shear: float = 0.0
    affine_p: float = 1.0
    order: str = "fixed"
    views: list[str] | None = None
    eval_crop: bool = True

    def __post_init__(self) -> None:
        for key in ("flip_p", "jitter_p", "blur_p", "affine_p", "affine_translate"):
            _in_range(getattr(self, key), 0.0, 1.0, f"data.augment.{key}")
        _in_range(self.hue, 0.0, 0.5, "data.augment.hue")
        for key in ("affine_degrees", "affine_shear"):
            _in_range(getattr(self, key), 0.0, math.inf, f"data.augment.{key}")
        self.crop_scale = _range(self.crop_scale, "data.augment.crop_scale", 0.0, 1.0)
        for key in ("crop_ratio", "affine_scale", "blur_sigma"):
            setattr(self, key, _range(getattr(self, key), f"data.augment.{key}", 0.0))
        for key in ("brightness", "contrast", "saturation"):
            setattr(self, key, _range(getattr(self, key), f"data.augment.{key}", 0.0, zero=True))
        if self.order not in AUGMENT_ORDERS:
            raise ConfigError(
                f"unknown data.augment.order '{self.order}'; choose one of "
                f"{', '.join(AUGMENT_ORDERS)}"
            )
        for view in self.views or []:
            if view not in AUGMENT_VIEWS:
                raise ConfigError(
                    f"'data.augment.views' cannot augment '{view}'; choose from "
                    f"{', '.join(AUGMENT_VIEWS)}"
                )


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _in_range(value: Any, low: float, high: float, key: str) -> None:
    if not _number(value) or not low <= value <= high:
        raise ConfigError(f"'{key}' must be a number in [{low:g}, {high:g}], got {value!r}")


def _range(
    value: Any, key: str, low: float, high: float = math.inf, zero: bool = False
) -> list[float]:
    """``value`` as a ``[lo, hi]`` list of floats with ``low`` < lo <= hi <= ``high`` (``low``
    itself allowed when ``zero``)."""
    ok = isinstance(value, list) and len(value) == 2 and all(_number(v) for v in value)
    if ok:
        lo, hi = float(value[0]), float(value[1])
        ok = (lo >= low if zero else lo > low) and lo <= hi <= high
    if not ok:
        bounds = f"{low:g} {'<=' if zero else '<'} lo <= hi" + (
            f" <= {high:g}" if high < math.inf else ""
        )
        raise ConfigError(f"'{key}' must be [lo, hi] with {bounds}, got {value!r}")
    return [lo, hi]


CACHES = ("disk", "memory", "none")
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
"""The per-channel statistics of ImageNet's [0, 1] pixels: every backbone's default input
normalisation (``model.input_mean``, ``model.input_std``)."""


@dataclass
class DataConfig:
    """Which data, which splits, and how batches are made.

    ``args`` are the reader's own options (its constructor's keyword arguments, e.g. CAER-S's
    ``val_fraction``); ``skip_bad`` skips (and counts) bad samples instead of stopping at the
    first. ``view_sizes`` gives the side of each view a model may ask for; ``synthetic`` holds
    the generator settings used when ``dataset`` is ``synthetic`` and ``root`` does not exist
    yet; ``augment`` the random augmentation of the training split (see ``AugmentConfig``).

    ``cache`` says where decoded views are kept between epochs (see
    ``deconfound.data.view_cache``): ``disk`` (one memory-mapped file per split, built once
    under ``cache_dir``, by default ``<root>/.deconfound-cache``, and shared by every worker,
    process and later run), ``memory`` (in each process), or ``none`` (decoded every time).
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
    cache: str | bool = "disk"  # (bool: see __post_init__)
    cache_dir: str | None = None
    synthetic: dict[str, Any] = field(default_factory=dict)
    augment: AugmentConfig = field(default_factory=AugmentConfig)

    def __post_init__(self) -> None:
        _at_least(self.batch_size, 1, "data.batch_size")
        _at_least(self.num_workers, 0, "data.num_workers")
        _check_fill(self.mask_fill, "data.mask_fill")
        if isinstance(self.cache, bool):  # the configs (and checkpoints) before data.cache_dir
            self.cache = "memory" if self.cache else "none"
        _choice(self.cache, CACHES, "data.cache")
        for view, size in self.view_sizes.items():
            if not isinstance(size, int) or isinstance(size, bool) or size < 1:
                raise ConfigError(
                    f"'data.view_sizes.{view}' must be a positive integer, got {size!r}"
                )


@dataclass
class ModelConfig:
    """A base model from the registry, its constructor arguments, and the method on top.

    ``intervention`` names the method (``deconfound.methods.METHODS``: ``none``, ``ccim_dot``,
    ``ccim_add``, ``backdoor``, ``clef``, ``paste``, ``reweight``, ``groupdro``, ``iern``,
    ``confusion``) and ``intervention_args`` are its options; ``dictionary`` is the path of a
    confounder dictionary (CCIM and ``backdoor`` need one; it gives every method its context
    clusters as strata). Every backbone normalises its input images with ``input_mean`` and
    ``input_std`` (ImageNet's by default; IERN's release uses 0.5 and 0.5).
    """

    name: str = "emotnet"
    args: dict[str, Any] = field(default_factory=dict)
    intervention: str = "none"
    intervention_args: dict[str, Any] = field(default_factory=dict)
    dictionary: str | None = None
    input_mean: list[float] = field(default_factory=lambda: list(IMAGENET_MEAN))
    input_std: list[float] = field(default_factory=lambda: list(IMAGENET_STD))

    def __post_init__(self) -> None:
        for key, values in (("input_mean", self.input_mean), ("input_std", self.input_std)):
            ok = isinstance(values, list) and len(values) == 3 and all(map(_number, values))
            if not ok or (key == "input_std" and min(values) <= 0):
                raise ConfigError(
                    f"'model.{key}' must be three numbers (per channel, of [0, 1] pixels"
                    f"{'; positive' if key == 'input_std' else ''}), got {values!r}"
                )


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

    def __post_init__(self) -> None:
        from deconfound.causal.kmeans import KMEANS_BACKENDS

        _check_fill(self.mask_fill, "dictionary.mask_fill")
        _choice(self.kmeans, KMEANS_BACKENDS, "dictionary.kmeans")


@dataclass
class LossConfig:
    """The training loss: ``name`` from ``losses.LOSSES`` (``auto``: cross-entropy for
    multi-class data, binary cross-entropy for multi-label; ``emotic_discrete``: EMOT-Net's
    weighted squared error) with its ``args``. For a model with modality heads (EmotiCon),
    the multiplicative combination loss over them is added, scaled by ``modality_weight``, with
    exponent ``modality_beta``."""

    name: str = "auto"
    args: dict[str, Any] = field(default_factory=dict)
    modality_weight: float = 1.0
    modality_beta: float = 2.0

    def __post_init__(self) -> None:
        if self.name != "auto":  # (the registry's module imports Lightning: only when needed)
            from deconfound.losses import LOSSES

            if self.name not in LOSSES:
                choices = ", ".join(["auto", *LOSSES])
                raise ConfigError(
                    f"unknown loss '{self.name}' (loss.name); choose one of {choices}"
                )


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

    def __post_init__(self) -> None:
        _choice(self.optimizer, OPTIMIZERS, "optim.optimizer")
        _choice(self.scheduler, SCHEDULERS, "optim.scheduler")


OPTIMIZERS = ("adamw", "adam", "sgd")
SCHEDULERS = ("cosine", "linear", "none")


STRATEGIES = ("auto", "ddp", "ddp_find_unused_parameters_true")
"""Lightning's strategies a run may use: one process (``auto``) or distributed data parallel
(``ddp``; with ``find_unused_parameters`` for models that leave some weights out of a loss)."""

ACCELERATORS = ("auto", "cpu", "gpu", "cuda", "mps")
"""Lightning's accelerators a run may ask for (``gpu`` and ``cuda``: NVIDIA GPUs; ``mps``: Apple's;
``auto``: a GPU when there is one); whether the machine has it is checked when a run starts."""

PRECISIONS = (
    "32-true", "16-mixed", "bf16-mixed", "16-true", "bf16-true", "64-true", "32", "16", "bf16", "64"
)  # fmt: skip
"""Lightning's names of the numeric precisions (``16`` = ``16-mixed``, ``bf16`` = ``bf16-mixed``,
``32`` = ``32-true``, ``64`` = ``64-true``)."""


MONITORS = ("plain", "reweighted", "worst_group")
"""The selection rules: the validation score that picks a best checkpoint."""
SELECTIONS = ("best", "last")


@dataclass
class TrainerConfig:
    """How to run: epochs, seed, hardware and precision (passed to Lightning's Trainer).

    Several processes (``strategy: ddp``): ``devices`` per node, on ``num_nodes`` nodes, each
    process loading ``data.batch_size`` samples per step (the global batch is that times the
    number of processes); ``sync_batchnorm`` normalises with the statistics of the global batch
    (GPUs only).
    """

    max_epochs: int = 10
    limit_train_batches: int | None = None
    """At most this many training batches an epoch (a quick check of a config at a data set's
    full size; validation still sees the whole split); None: every batch."""
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
    monitor: str = "plain"
    """The validation score that picks ``best.ckpt``: ``plain`` (the data set's metric),
    ``reweighted`` (``val/accuracy_reweighted``: each (context cluster, label) pair weighted as
    if the two were independent) or ``worst_group`` (``val/accuracy_worst_group``: the lowest
    accuracy over (label, agrees with its context cluster's usual label) groups); the last two
    need strata, from ``model.dictionary`` or the data set."""
    keep_best_by: list[str] = field(default_factory=list)
    """Further selection rules (of ``monitor``'s choices) whose best checkpoint is also kept,
    as ``best-<rule>.ckpt`` (the benchmark keeps every rule's, to score each method under each
    rule)."""
    select: str = "best"
    """The checkpoint a run's result (``evaluate`` in the demo and benchmark) is: ``best``
    (``best.ckpt``, by ``monitor``) or ``last`` (the last epoch's, as some releases report)."""

    def __post_init__(self) -> None:
        for key, choices in (("monitor", MONITORS), ("select", SELECTIONS)):
            if getattr(self, key) not in choices:
                raise ConfigError(
                    f"unknown trainer.{key} '{getattr(self, key)}'; choose {' or '.join(choices)}"
                )
        for rule in self.keep_best_by:
            _choice(rule, MONITORS, "trainer.keep_best_by")
        _at_least(self.max_epochs, 1, "trainer.max_epochs")
        if self.limit_train_batches is not None:
            _at_least(self.limit_train_batches, 1, "trainer.limit_train_batches")
        _at_least(self.log_every_n_steps, 1, "trainer.log_every_n_steps")
        _at_least(self.num_nodes, 1, "trainer.num_nodes")
        if self.strategy not in STRATEGIES:
            raise ConfigError(
                f"unknown trainer.strategy '{self.strategy}'; choose one of {', '.join(STRATEGIES)}"
            )
        _choice(self.accelerator, ACCELERATORS, "trainer.accelerator")
        _choice(self.precision, PRECISIONS, "trainer.precision")
        if not _devices(self.devices):
            raise ConfigError(
                "'trainer.devices' must be a number of devices per node (1 or more; -1: all of "
                f"them), auto, or a list of device indices such as [0, 1]; got {self.devices!r}"
            )
        if self.sync_batchnorm and self.accelerator == "cpu":
            raise ConfigError(
                "'trainer.sync_batchnorm' needs GPUs (torch's SyncBatchNorm does not run on the "
                "CPU); leave it false with trainer.accelerator=cpu"
            )


def _at_least(value: int, low: int, key: str) -> None:
    if value < low:
        raise ConfigError(f"'{key}' must be at least {low}, got {value}")


def _choice(value: Any, choices: typing.Sequence[str], key: str) -> None:
    """Refuse an option with a fixed set of values that names none of them."""
    if value not in choices:
        raise ConfigError(f"unknown {key} '{value}'; choose one of {', '.join(choices)}")


def _check_fill(value: str, key: str) -> None:
    from deconfound.data.views import FILLS  # (views imports this module)

    _choice(value, FILLS, key)


def _devices(value: Any) -> bool:
    """Whether ``value`` is a ``devices`` that Lightning takes: a count (-1: all), ``auto``,
    device indices as a list or as text (``"0,1"``)."""
    if isinstance(value, bool):
        return False
    if isinstance(value, int):
        return value >= 1 or value == -1
    if isinstance(value, list):
        indices = [i for i in value if isinstance(i, int) and not isinstance(i, bool) and i >= 0]
        return bool(value) and len(indices) == len(value) == len(set(value))
    if isinstance(value, str):
        return bool(re.fullmatch(r"auto|-1|[1-9]\d*|\d+(,\d+)*,|\d+(,\d+)+", value.strip()))
    return False


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
        raw = read_yaml(path.read_text(encoding="utf-8-sig")) or {}
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: {yaml_problem(e)}") from None
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


class _DuplicateKey(yaml.constructor.ConstructorError):
    pass


class UniqueKeyLoader(yaml.SafeLoader):
    """PyYAML's safe loader, except that a mapping giving a key twice is an error (PyYAML keeps
    the last silently, so a config's earlier setting would vanish without a word)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        if isinstance(node, yaml.MappingNode):
            seen: dict[Any, yaml.Node] = {}
            for key_node, _ in node.value:
                if key_node.tag == "tag:yaml.org,2002:merge":  # ``<<:`` merges may override
                    continue
                key = self.construct_object(key_node, deep=True)
                try:
                    first = seen.setdefault(key, key_node)
                except TypeError:  # an unhashable key: the base class names it
                    continue
                if first is not key_node:
                    raise _DuplicateKey(
                        None,
                        None,
                        f"key '{key}' given twice (first on line {first.start_mark.line + 1}); "
                        "keep one",
                        key_node.start_mark,
                    )
        return super().construct_mapping(node, deep=deep)


def read_yaml(text: str) -> Any:
    """The YAML document ``text`` as Python values (safe types only; a key given twice in a
    mapping is a ``yaml.YAMLError``: see :func:`yaml_problem`)."""
    return yaml.load(text, Loader=UniqueKeyLoader)  # a SafeLoader: no arbitrary objects


def yaml_problem(e: yaml.YAMLError) -> str:
    """What is wrong in a YAML text, and where (line and column, from 1), in one line."""
    mark = getattr(e, "problem_mark", None) or getattr(e, "context_mark", None)
    problem = getattr(e, "problem", None) or str(e).splitlines()[0]
    where = f"line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    if isinstance(e, _DuplicateKey):
        return f"{where}: {problem}"
    return f"not valid YAML at {where} ({problem})" if where else f"not valid YAML ({problem})"


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
        node[leaf] = read_yaml(value)
    except yaml.YAMLError as e:
        problem = yaml_problem(e).removeprefix("not valid YAML at ").replace("line 1, ", "", 1)
        raise ConfigError(f"override '{item}': value is not valid YAML ({problem})") from None


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
        if value is None and tp is AugmentConfig:  # data.augment: null, no augmentation
            return tp()
        return from_dict(tp, value, source, key + ".")
    if tp is Any:
        return value
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        options = typing.get_args(tp)
        if value is None and type(None) in options:
            return None
        plain = [t for t in options if t is not type(None) and typing.get_origin(t) is None]
        if isinstance(value, bool) and bool in plain:
            return value
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


def number(value: Any, what: str) -> float:
    """``value`` as a float; a ConfigError naming ``what`` unless it is a (non-boolean) number."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ConfigError(f"{what} must be a number, got {value!r}")
    return float(value)


def construct(factory: Any, args: dict[str, Any], what: str) -> Any:
    """``factory(**args)`` after checking ``args`` against its signature: a constructor is the
    schema of its config arguments (``model.args``, ``data.args``)."""
    params = inspect.signature(factory).parameters
    unknown = sorted(set(args) - set(params))
    if unknown:
        known = ", ".join(p for p in params if p not in ("self", "args", "kwargs"))
        raise ConfigError(f"{what}: unknown argument '{unknown[0]}'; known: {known}")
    return factory(**args)

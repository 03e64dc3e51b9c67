"""Pretrained weights by the name their library gives them (``--source NAME``).

``torchvision:ResNet50_Weights.IMAGENET1K_V2`` (or ``torchvision:resnet50.IMAGENET1K_V2``, ``torchvision:resnet50``
for its DEFAULT) and ``timm:resnet50.a1_in1k`` name the file that library's own cache holds (torch.hub's
``$TORCH_HOME/hub/checkpoints``; the Hugging Face cache for timm's weights on the hub), fetched only when downloading
is allowed. The file is then a source like any other (:mod:`probe.planning.source`): the plan records its path and
SHA-256, not its name. The weights' own input normalization and size come along, as the defaults a command line offers
for them.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from probe.errors import ProbeError
from probe.planning.source import first_sentence

# --source NAME:WEIGHTS: pretrained weights named as the library that publishes them names them
NAMED_SOURCES = ("torchvision", "timm")


@dataclass(frozen=True)
class NamedSource:
    """What a pretrained network's name resolves to: its weights file in the library's cache (``path``), the
    network it is the weights of (``network``, e.g. ``torchvision.models:resnet50``), and the input normalization
    (``mean``, ``std``, 0..1 scale) and image side (``image_size``) it was trained with, where the library says."""

    name: str
    path: Path
    network: str
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None
    image_size: int | None = None


def is_named_source(text: str) -> bool:
    """Whether ``--source`` names weights (``torchvision:...``, ``timm:...``) rather than a file."""
    scheme, colon, _ = str(text).partition(":")
    return bool(colon) and scheme in NAMED_SOURCES


def resolve_named_source(text: str, download: bool = False) -> NamedSource:
    """The weights file ``torchvision:WEIGHTS`` or ``timm:NAME`` names, in that library's cache; downloaded there
    when it is missing and ``download`` allows it, else refused in one line that names the file and where it goes."""
    scheme, _, name = text.partition(":")
    if not name:
        raise ProbeError(f"--source {text!r} names no weights: give {scheme}:NAME, e.g. "
                         + ("torchvision:ResNet50_Weights.IMAGENET1K_V2" if scheme == "torchvision"
                            else "timm:resnet50.a1_in1k"))
    return _torchvision_source(name, download) if scheme == "torchvision" else _timm_source(name, download)


def _torchvision_source(name: str, download: bool) -> NamedSource:
    """A torchvision weights enum member, as ``get_weight`` takes it (``ResNet50_Weights.IMAGENET1K_V2``), or by its
    model's name (``resnet50.IMAGENET1K_V2``; ``resnet50`` alone: its DEFAULT)."""
    from torchvision.models import get_weight

    try:
        weights = get_weight(name)
    except (ValueError, KeyError, TypeError):  # TypeError: a model's name (get_weight finds its builder function)
        weights = _torchvision_weights_by_model(name)
    full = f"{type(weights).__name__}.{weights.name}"
    url = weights.url
    path = _fetched(url, _hub_checkpoints() / os.path.basename(_url_path(url)), f"torchvision:{full}", download)
    mean = std = size = None
    try:
        preset = weights.transforms()
        mean, std = tuple(float(v) for v in preset.mean), tuple(float(v) for v in preset.std)
        crop = preset.crop_size
        size = int(crop[0] if isinstance(crop, (list, tuple)) else crop)
    except (AttributeError, TypeError, IndexError):  # a preset of another kind (video, detection): none offered
        pass
    return NamedSource(f"torchvision:{full}", path, _torchvision_builder(type(weights)), mean, std, size)


def _torchvision_enums() -> dict[str, type]:
    """torchvision's weights enums by their own names and by their models' names (resnet50 -> ResNet50_Weights)."""
    from torchvision.models import get_model_weights, list_models

    enums: dict[str, type] = {}
    for model in list_models():
        try:
            weights = get_model_weights(model)
        except Exception:  # a builder without a weights enum
            continue
        enums.setdefault(model, weights)
        enums.setdefault(weights.__name__, weights)
    return enums


def _torchvision_weights_by_model(name: str):
    head, _, member = name.partition(".")
    enum = _torchvision_enums().get(head)
    if enum is None:
        raise ProbeError(f"torchvision has no weights {name!r}: name a weights enum member, e.g. "
                         "ResNet50_Weights.IMAGENET1K_V2, or a model's, e.g. resnet50.IMAGENET1K_V2 "
                         "(torchvision.models.list_models() names the models)")
    try:
        return enum[member or "DEFAULT"]
    except KeyError:
        raise ProbeError(f"torchvision's {enum.__name__} has no {member!r}; it has "
                         f"{', '.join(enum.__members__)}") from None


def _torchvision_builder(enum: type) -> str:
    """The --arch that builds the network of a weights enum (torchvision.models:resnet50), or the enum's name."""
    import torchvision.models
    from torchvision.models import get_model_builder, get_model_weights, list_models

    for model in list_models():
        try:
            if get_model_weights(model) is enum:
                builder = get_model_builder(model)
                module = ("torchvision.models" if getattr(torchvision.models, builder.__name__, None) is builder
                          else builder.__module__)
                return f"{module}:{builder.__name__}"
        except Exception:  # a builder without a weights enum
            continue
    return enum.__name__


def _timm_source(name: str, download: bool) -> NamedSource:
    """A timm model with a pretrained tag (``resnet50.a1_in1k``; ``resnet50`` alone: its default tag), located
    through its ``pretrained_cfg``: on the Hugging Face hub (its ``hf_hub_id``, read through huggingface_hub's
    cache) or at a url (torch.hub's cache, as torchvision's). The file is read as it is stored, without a model's
    own conversion: weights in a foreign format (``custom_load``, e.g. JAX .npz files) are refused."""
    try:
        from timm.models import get_pretrained_cfg
    except ImportError:
        raise ProbeError(f"--source timm:{name} names a timm model, but timm is not installed here: pip install "
                         "timm (or give the weights file itself)") from None
    try:
        cfg = get_pretrained_cfg(name, allow_unregistered=False)
    except RuntimeError as e:
        raise ProbeError(f"timm has no pretrained weights {name!r} ({first_sentence(e)}); timm.list_pretrained() names "
                         "them") from None
    what = f"timm:{name}"
    if cfg is None or not (cfg.file or cfg.url or cfg.hf_hub_id):
        raise ProbeError(f"timm has no pretrained weights for {name!r}; timm.list_pretrained() names them")
    if cfg.custom_load:
        raise ProbeError(f"{what}'s weights are in a format that timm converts as it loads them; save "
                         f"timm.create_model({name!r}, pretrained=True).state_dict() with torch.save and give that "
                         "file to --source")
    if cfg.file:
        path = Path(cfg.file)
    elif cfg.hf_hub_id and _has_module("huggingface_hub"):
        path = _hf_hub_file(what, cfg.hf_hub_id, cfg.hf_hub_filename, download)
    elif cfg.url:
        path = _fetched(cfg.url, _hub_checkpoints() / os.path.basename(_url_path(cfg.url)), what, download)
    else:
        raise ProbeError(f"{what}'s weights are on the Hugging Face hub ({cfg.hf_hub_id}), but huggingface_hub is "
                         "not installed here: pip install huggingface_hub")
    mean = tuple(float(v) for v in cfg.mean) if cfg.mean else None
    std = tuple(float(v) for v in cfg.std) if cfg.std else None
    shape = tuple(cfg.input_size or ())
    size = int(shape[1]) if len(shape) == 3 and shape[1] == shape[2] else None
    return NamedSource(what, path, f"timm's {cfg.architecture or name.split('.')[0]}", mean, std, size)


def _has_module(name: str) -> bool:
    import importlib.util

    return importlib.util.find_spec(name) is not None


def _hf_hub_file(what: str, hub_id: str, filename: str | None, download: bool) -> Path:
    """A timm model's weights file in the Hugging Face cache: ``filename``, or the safetensors file where the
    repository has one, else its pytorch_model.bin, as timm prefers them."""
    from huggingface_hub import hf_hub_download

    try:
        from huggingface_hub.errors import EntryNotFoundError
    except ImportError:  # huggingface_hub before 0.23
        from huggingface_hub.utils import EntryNotFoundError

    repo, _, revision = hub_id.partition("@")
    names = [filename] if filename else ["model.safetensors", "pytorch_model.bin"]
    for name in names:
        try:
            return Path(hf_hub_download(repo, name, revision=revision or None, local_files_only=not download))
        except EntryNotFoundError:  # not in the cache (or, downloading, not in the repository): the next name
            continue
        except Exception as e:  # no network, no such repository, ...
            raise ProbeError(f"cannot fetch {what}'s weights from the Hugging Face hub ({repo}: {first_sentence(e)}); "
                             "download them where the machine can, and give the file to --source") from None
    if not download:
        raise ProbeError(f"{what}'s weights ({' or '.join(names)} of the Hugging Face hub's {repo}) are not in this "
                         "machine's Hugging Face cache (HF_HOME): let probe train fetch them with --download, or "
                         "give the file to --source")
    raise ProbeError(f"the Hugging Face hub's {repo} holds no {' or '.join(names)}; give the weights file to --source")


def _hub_checkpoints() -> Path:
    """torch.hub's checkpoint folder, where torchvision keeps the weights it downloads ($TORCH_HOME/hub/checkpoints,
    ~/.cache/torch/hub/checkpoints by default)."""
    import torch.hub

    return Path(torch.hub.get_dir()) / "checkpoints"


def _url_path(url: str) -> str:
    from urllib.parse import urlparse

    return urlparse(url).path


def _fetched(url: str, path: Path, what: str, download: bool) -> Path:
    """``path``, downloaded from ``url`` first where it is missing and ``download`` allows, checked against the hash
    prefix its name carries (``resnet50-11ad3fa6.pth``), as torch.hub checks it."""
    if path.is_file():
        return path
    if not download:
        raise ProbeError(f"{what}'s weights file {path.name} is not on this machine: download {url} to {path}, or "
                         "let probe train fetch it with --download")
    from torch.hub import HASH_REGEX, download_url_to_file

    match = HASH_REGEX.search(path.name)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        download_url_to_file(url, str(path), match.group(1) if match else None, progress=True)
    except Exception as e:  # no network (URLError), a hash that does not match (RuntimeError), a full disk, ...
        raise ProbeError(f"cannot download {what}'s weights from {url} ({first_sentence(e)}); put the file {path.name} "
                         f"in {path.parent} by hand") from None
    return path

"""A source network: the weights of a network trained elsewhere, donor of layers 1..n to the source-transfer
networks SnB (frozen) and SnB+ (fine-tuned).

The file is a ``state_dict`` saved with ``torch.save`` (torchvision's ``resnet50-0676ba61.pth``, or
``torch.save(model.state_dict(), path)``), or a safetensors file (told by its ``.safetensors`` suffix). Loading never
runs pickled code: ``torch.load(weights_only=True)`` refuses anything but tensors and plain containers.

Keys: a tensor of the network is looked up in the file under the network's own ``state_dict`` key (a file saved from
a LayeredNet: ``stages.conv1.0.weight``), or, for an architecture adapted from a module (``--arch
torchvision.models:resnet50``), under the module's own key (``conv1.weight``, through ``LayeredNet.source_keys``). A
key map renames on the way: its pair ``(NETWORK_PREFIX, FILE_PREFIX)`` looks a key that starts with NETWORK_PREFIX
up under FILE_PREFIX followed by the rest of the key (the longest matching prefix wins): ``("", "module.")`` for a
file saved from a DataParallel wrapper.

Only layers 1..n are read. The classifier head (the last layer) is never copied, since it is re-initialized for the
target's classes anyway, so a head of another shape, or none, is fine. BatchNorm's ``num_batches_tracked`` counters
may be absent (files saved before torch 0.4.1 lack them; they only count steps): the network keeps its own.

Reading a file's hash needs no torch, so planning a run from the command line describes the file before torch loads.

Named weights (``torchvision:ResNet50_Weights.IMAGENET1K_V2``, ``timm:resnet50.a1_in1k``) name the file that library's
own cache holds (:mod:`probe.planning.named_source`); the file is then a source like any other: the plan records its
path and SHA-256, not its name.
"""

from __future__ import annotations

import hashlib
import io
import json
import pickle
import warnings
from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from probe.errors import ProbeError
from probe.specs.spec import ArchSpec, NetworkSpec, SourceSpec

if TYPE_CHECKING:
    import torch

    from probe.architectures.layered import LayeredNet

# Per-channel mean and std (0..1 scale) that well-known weights expect their inputs standardized with
NORMALIZATIONS = {"imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))}  # torchvision's ImageNet weights
OWN_STATISTICS = "data"  # the run's own data statistics, as a run without a source network uses
OPTIONAL = ".num_batches_tracked"
DATA_PARALLEL = "module."  # the prefix nn.DataParallel (and DistributedDataParallel) gives every key it saves
# How torch.save files begin: a zip archive (torch >= 1.6), or the legacy format's pickled magic number
_ZIP_MAGIC = b"PK\x03\x04"
_LEGACY_MAGIC = b"\x8a\x0al\xfc\x9cF\xf9 j\xa8P\x19"
_REASON_CHARS = 100  # an embedded library message is cut to its first sentence, at most this long


def parse_normalization(text: str) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """``data`` (None: the run's own statistics), a name in NORMALIZATIONS, or ``MEAN,...:STD,...``."""
    if text == OWN_STATISTICS:
        return None
    if text in NORMALIZATIONS:
        return NORMALIZATIONS[text]
    mean, colon, std = text.partition(":")
    try:
        values = tuple(tuple(float(v) for v in part.split(",")) for part in (mean, std))
    except ValueError:
        values = ()
    if not colon or not values:
        raise ProbeError(f"source normalization {text!r} is not {OWN_STATISTICS}, {', '.join(NORMALIZATIONS)} or "
                         "MEAN,...:STD,... (per-channel values on the 0..1 scale, e.g. 0.5,0.5,0.5:0.25,0.25,0.25)")
    return values


def parse_key_map(items: Iterable[str]) -> tuple[tuple[str, str], ...]:
    """Key-map pairs from ``NETWORK_PREFIX=FILE_PREFIX`` items and JSON files (``*.json``: an object of such
    prefixes)."""
    pairs: list[tuple[str, str]] = []
    for item in items:
        if item.endswith(".json"):
            pairs += _key_map_file(Path(item))
        elif "=" in item:
            network, _, file = item.partition("=")
            pairs.append((network, file))
        else:
            raise ProbeError(f"source key map {item!r} is neither NETWORK_PREFIX=FILE_PREFIX nor a .json file")
    return tuple(pairs)


def _key_map_file(path: Path) -> list[tuple[str, str]]:
    try:
        obj = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ProbeError(f"cannot read source key map {str(path)!r} ({type(e).__name__}: {e})") from None
    if not isinstance(obj, dict) or not all(isinstance(v, str) for v in obj.values()):
        raise ProbeError(f"source key map {str(path)!r} must be a JSON object of network prefix -> file prefix")
    return list(obj.items())


def describe_source(path: str | Path, key_map: Iterable[tuple[str, str]] = (),
                    normalization: tuple[Iterable[float], Iterable[float]] | None = None) -> SourceSpec:
    """The SourceSpec of the weights file at ``path`` as it is now (its content hash), with a key map and the
    normalization its network expects (None: the run's own statistics). Its content is checked when a study is
    planned with it (:func:`check_source`)."""
    absolute = Path(path).expanduser().absolute()
    digest = hashlib.sha256()
    with _opened(absolute) as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    mean, std = normalization or (None, None)
    return SourceSpec(str(absolute), digest.hexdigest(), tuple(key_map), mean, std)


def _opened(path: Path):
    try:
        return path.open("rb")
    except FileNotFoundError:
        raise ProbeError(f"source network file {str(path)!r} does not exist") from None
    except IsADirectoryError:
        raise ProbeError(f"source network file {str(path)!r} is a directory, not a weights file") from None
    except OSError as e:
        raise ProbeError(f"cannot read source network file {str(path)!r} ({e.strerror})") from None


def load_source(source: SourceSpec) -> dict[str, torch.Tensor]:
    """The source file's tensors by key, from the same bytes whose hash is checked against the planned one."""
    with _opened(Path(source.path)) as f:
        data = f.read()
    if hashlib.sha256(data).hexdigest() != source.sha256:
        raise ProbeError(f"source network file {source.path!r} changed since the run was planned with it (its "
                         f"SHA-256 was {source.sha256[:12]}...); restore that file, or plan a new run directory "
                         "with this one")
    state = _safetensors(source.path, data) if source.path.endswith(".safetensors") else _pickled(source.path, data)
    state = _checked_state_dict(source.path, state)
    _SHAPES[(source.path, source.sha256)] = _shapes(state)
    return state


# The names and shapes of the tensors of the source files this process has read, by path and hash: enough for the
# plan's summary and the early checks, without keeping the tensors (a large network's hundreds of megabytes)
_SHAPES: dict[tuple[str, str], dict[str, tuple[int, ...]]] = {}


def file_shapes(source: SourceSpec) -> dict[str, tuple[int, ...]]:
    """The shape of every tensor of the source file, by key (read once per process and file content)."""
    if (source.path, source.sha256) not in _SHAPES:
        load_source(source)
    return _SHAPES[(source.path, source.sha256)]


def _shapes(state: Mapping[str, torch.Tensor]) -> dict[str, tuple[int, ...]]:
    return {key: tuple(value.shape) for key, value in state.items()}


def _safetensors(path: str, data: bytes) -> object:
    from safetensors.torch import load

    try:
        return load(data)
    except Exception as e:  # safetensors reports a bad file with several exception types
        raise ProbeError(f"source network file {path!r} is not a safetensors file, or a damaged one "
                         f"({first_sentence(e)}); save or download it again") from None


def _pickled(path: str, data: bytes) -> object:
    import torch

    try:
        with warnings.catch_warnings():
            # a plain pickle (not torch.save's zip) makes torch warn, in two lines, before it is refused or read:
            # what probe says of the file is the one line below, or nothing
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as e:  # code to run (a class, a function), or bytes that are no such pickle
        raise ProbeError(f"source network file {path!r} cannot be loaded as weights alone: torch.load with "
                         f"weights_only=True, which runs no pickled code, refused it ({_refusal(e)}); save the "
                         "network's state_dict() with torch.save, or as safetensors") from None
    except Exception as e:  # torch.load reports files that are no checkpoint at all with many exception types
        if _torch_save_format(data):
            raise ProbeError(f"source network file {path!r} is a damaged or truncated torch.save file "
                             f"({first_sentence(e)}); save or download it again") from None
        raise ProbeError(f"source network file {path!r} cannot be loaded as weights: it is no torch.save file "
                         f"({first_sentence(e)}); a safetensors file needs its .safetensors suffix") from None


def _torch_save_format(data: bytes) -> bool:
    """Whether a file begins as torch.save's files do: one that torch.load then fails on is cut short or damaged,
    rather than some other kind of file."""
    return data.startswith(_ZIP_MAGIC) or data[2:2 + len(_LEGACY_MAGIC)] == _LEGACY_MAGIC


def _refusal(error: Exception) -> str:
    """What the weights-only unpickler refused: the first sentence of its many-line message's reason (the rest
    tells how to allow the refused code to run)."""
    text = str(error)
    _, found, reason = text.partition("WeightsUnpickler error:")
    lines = [line.strip() for line in (reason if found else text).splitlines() if line.strip()]
    return lines[0].split(". ")[0].rstrip(".") if lines else type(error).__name__


def first_sentence(error: Exception) -> str:
    """A library's error as a short clause: its first sentence, cut to a hundred characters (torch's message of a
    truncated zip goes on for four hundred, telling how checkpoints get damaged)."""
    lines = str(error).strip().splitlines()
    if not lines:
        return type(error).__name__
    sentence = lines[0].split(". ")[0].rstrip(".")
    if len(sentence) > _REASON_CHARS:
        sentence = sentence[:_REASON_CHARS - 3].rstrip() + "..."
    return sentence


def _checked_state_dict(path: str, state: object) -> dict[str, torch.Tensor]:
    import torch

    if not isinstance(state, Mapping) or not state:
        what = "an empty mapping" if isinstance(state, Mapping) else f"a {type(state).__name__}"
        raise ProbeError(f"source network file {path!r} holds {what}, not a state_dict (a mapping of names to "
                         "tensors); save the network's state_dict() with torch.save, or as safetensors")
    for key, value in state.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise ProbeError(f"source network file {path!r} is not a state_dict: its entry {key!r} is of type "
                             f"{type(value).__name__}, not a tensor (save model.state_dict() alone)")
    return dict(state)


def file_key(model: LayeredNet, key: str, key_map: Iterable[tuple[str, str]]) -> str:
    """The key under which the source file holds the network's tensor ``key`` (see the module's docstring)."""
    name = model.source_keys.get(key, key)
    matches = [(network, file) for network, file in key_map if name.startswith(network)]
    if not matches:
        return name
    network, file = max(matches, key=lambda pair: len(pair[0]))
    return file + name[len(network):]


def matched_keys(model: LayeredNet, shapes: Mapping[str, Sequence[int]], source: SourceSpec, cut: int,
                 known: Collection[str] | None = None, shaped: Collection[str] | None = None) -> dict[str, str]:
    """For each tensor of layers 1..``cut`` of ``model``, the key the source file (whose tensors have ``shapes``)
    holds it under, each checked to be there (but for optional counters) and of the model's shape. ``known`` and
    ``shaped``: the network's keys that are looked up, and those whose shapes are compared (None: all)."""
    out = {}
    for key, own in model.prefix_state(cut).items():
        if known is not None and key not in known:
            continue
        where = file_key(model, key, source.key_map)
        layer = key.split(".")[1]  # prefix_state's keys are stages.<layer>.<rest>
        if where not in shapes:
            if key.endswith(OPTIONAL):
                continue
            raise ProbeError(_missing(source, shapes, key, where, layer))
        if (shaped is None or key in shaped) and tuple(shapes[where]) != tuple(own.shape):
            raise ProbeError(f"source network file {source.path!r} holds {where} of shape {list(shapes[where])}, "
                             f"where layer {layer} of the network has {list(own.shape)}; give the weights of a "
                             "network of this architecture and options (--arch, --arch-option)")
        out[key] = where
    return out


def _missing(source: SourceSpec, shapes: Mapping[str, Sequence[int]], key: str, where: str, layer: str) -> str:
    """The error for a tensor the file lacks, with the key map that would find it: ``=module.`` for a file saved
    from nn.DataParallel (every key prefixed), else the general form."""
    first = ", ".join(list(shapes)[:3])
    if not source.key_map and all(k.startswith(DATA_PARALLEL) for k in shapes):
        fix = (f"its keys start with {DATA_PARALLEL!r} (saved from nn.DataParallel): add --source-key-map "
               f"={DATA_PARALLEL}")
    else:
        fix = f"its keys begin {first}: map them with --source-key-map NETWORK_PREFIX=FILE_PREFIX"
    own = "" if where == key else f" ({key})"
    return f"source network file {source.path!r} has no {where!r} for layer {layer} of the network{own}; {fix}"


def copied_tensors(model: LayeredNet, state: Mapping[str, torch.Tensor], source: SourceSpec,
                   cut: int) -> dict[str, torch.Tensor]:
    """The tensors of layers 1..``cut`` of ``model`` taken from the source file's ``state``, keyed as the model's,
    each checked to be there (but for optional counters) and of the model's shape."""
    return {key: state[where] for key, where in matched_keys(model, _shapes(state), source, cut).items()}


def check_source(source: SourceSpec, model: LayeredNet, cut: int, in_channels: int) -> None:
    """Refuse, with one line, a source that cannot donate layers 1..``cut`` to ``model`` (a network of the run):
    a file missing, changed, not a state_dict, without a needed tensor or with one of another shape; or a
    normalization for another number of channels."""
    if source.mean is not None and len(source.mean) != in_channels:
        raise ProbeError(f"the source network's normalization gives {len(source.mean)} values per statistic, but "
                         f"the images have {in_channels} channels")
    copied_tensors(model, load_source(source), source, cut)


def load_source_layers(model: LayeredNet, source: SourceSpec, cut: int) -> None:
    """Copy layers 1..``cut`` of the source network into ``model``."""
    model.load_state_dict(copied_tensors(model, load_source(source), source, cut), strict=False)


def check_source_early(source: SourceSpec, arch: ArchSpec, cuts: Sequence[int] | None,
                       input_size: int | None = None) -> None:
    """Refuse, before any data is read (decoding a dataset can take minutes), a source file that cannot serve: one
    that cannot be read or is no state_dict, one that lacks a tensor of layers 1..max(``cuts``) (None: every cut
    point) of networks of ``arch``, or holds one of another shape, as far as these do not depend on the data.

    The data's channels and image size (``input_size``, where the options give it) are unknown until it is
    decoded, so the networks are built twice on torch's meta device, for 3-channel images of the size and for
    1-channel images of twice it: the tensors both have are looked up now, and those of the same shape in both are
    compared; the others (a first convolution, a classifier's input) when the study is planned on the data
    (:func:`check_source`). A network that cannot be built so leaves its tensors to that check."""
    shapes = file_shapes(source)
    built = _data_free_network(arch, input_size)
    if built is None:
        return
    model, known, shaped = built
    cut = max(cuts) if cuts else len(model.cut_points)
    if 1 <= cut <= len(model.cut_points):  # a cut out of range is refused by planning, with the cut points
        matched_keys(model, shapes, source, cut, known, shaped)


def _data_free_network(arch: ArchSpec, input_size: int | None) -> tuple[LayeredNet, set[str], set[str]] | None:
    """A network of ``arch`` built on the meta device for a guessed input, with the keys that another input's
    network has too, and those of them of the same shape in both; None when the two cannot be built, or are cut
    into other layers (a builder that adapts to the input), so that nothing of them can be told without the data."""
    from probe.architectures.registry import architecture_of

    size = input_size or architecture_of(arch).input_size or 224
    first, other = _meta_network(arch, 3, size), _meta_network(arch, 1, 2 * size)
    if first is None or other is None or first.layer_names != other.layer_names:
        return None
    own, theirs = first.state_dict(), other.state_dict()
    known = set(own) & set(theirs)
    return first, known, {k for k in known if tuple(theirs[k].shape) == tuple(own[k].shape)}


def _meta_network(arch: ArchSpec, in_channels: int, input_size: int) -> LayeredNet | None:
    import torch

    from probe.architectures.build import build_network

    try:
        with torch.device("meta"):
            return build_network(arch, in_channels, 10, input_size, seed=0)
    except Exception:  # a builder's own refusal, or one that needs real tensors: checked with the data instead
        return None


def checked_per_cut(source: SourceSpec, spec: NetworkSpec, cuts: Sequence[int]) -> dict[int, int]:
    """How many tensors of the source file each cut copies (those of layers 1..n), found and shaped as networks of
    ``spec`` need them: what the plan says it checked."""
    import torch

    from probe.architectures.build import build_model

    try:
        with torch.device("meta"):
            model = build_model(spec)
    except Exception:  # a builder that needs real tensors; planning built it on the CPU already
        model = build_model(spec)
    shapes = file_shapes(source)
    return {n: len(matched_keys(model, shapes, source, n)) for n in cuts}

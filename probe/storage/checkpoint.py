"""Network files: weights in safetensors with the spec in their metadata, metrics and resume state beside them.

Nothing here unpickles: weights and optimizer state are safetensors, everything else is JSON. Every file is
written atomically, so a killed run leaves either the previous file or the new one. A file that cannot be used
anyway (damaged, truncated, edited, of other shapes) is a one-line ProbeError naming it and saying what to do.

Reading metadata and metrics needs no torch ('probe status' reads them for every network); torch is imported by
safetensors when tensors are saved or loaded.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import TYPE_CHECKING

from safetensors import SafetensorError, safe_open

from probe.errors import ProbeError
from probe.specs.spec import NetworkSpec
from probe.storage.atomic import write_atomic
from probe.storage.run import RESUME

if TYPE_CHECKING:
    import torch

RETRAIN = "rerun 'probe train' to retrain that network"


def weights_fingerprint(path: Path) -> str:
    """The SHA-256 of a weights file's tensors (milliseconds for a file of a few MB): what an activation group
    records of the weights it was extracted from, so that weights changed since, even to the same size and time,
    are told apart. A safetensors file's header (its tensors' names and offsets, and the metadata: the spec) is left
    out, so that the same tensors saved again under a rewritten spec are the same weights."""
    import hashlib
    import struct

    h = hashlib.sha256()
    with open(path, "rb") as f:
        head = f.read(8)
        size = struct.unpack("<Q", head)[0] if len(head) == 8 else None
        if size is None or size > Path(path).stat().st_size:  # no safetensors header: the whole file
            f.seek(0)
        else:
            f.seek(8 + size)
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return f"sha256:{h.hexdigest()}"


def checkpoint_error(path: Path, fact: str, kind: type[ProbeError] = ProbeError) -> ProbeError:
    """The error (of type ``kind``) for the checkpoint at ``path`` that cannot be used: ``fact``, then what to do.
    A resume file is replaced by training from scratch; a network's weights, by training it again once its folder
    is gone."""
    fix = ("'probe train' restarts that network from scratch" if path.name == RESUME
           else f"delete the folder {str(path.parent)!r} and {RETRAIN}")
    return kind(f"{fact}; {fix}")


class UnusableResume(ProbeError):
    """A resume file that cannot be used (damaged, without its epoch, of other shapes): training restarts."""


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], spec: NetworkSpec, **meta) -> None:
    """Save ``tensors`` with the spec (and any JSON-able ``meta``) in the file's metadata. The same tensors, spec
    and metadata always give the same bytes, whatever the order of ``meta``."""
    from safetensors.torch import save_file  # it imports torch, which a reader of checkpoints need not load

    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    metadata = {"spec": spec.to_json(), **{k: json.dumps(v) for k, v in meta.items()}}

    def write(tmp: str) -> None:
        save_file(tensors, tmp, metadata=metadata)
        _sort_metadata(Path(tmp))

    write_atomic(path, write)


def _sort_metadata(path: Path) -> None:
    """Rewrite the header of the safetensors file at ``path`` with its metadata keys sorted. safetensors keeps the
    metadata in a hash map, which writes its keys in a different order at every save, so two saves of one network
    would differ in their bytes (and their hashes); the tensors' entries it writes in a fixed order already."""
    with open(path, "r+b") as f:
        size = int.from_bytes(f.read(8), "little")
        header = json.loads(f.read(size))
        meta = header.pop("__metadata__", None)
        if meta is not None:
            header = {"__metadata__": dict(sorted(meta.items())), **header}
        # safetensors' own JSON (compact, UTF-8, the same escapes), so the header keeps its length
        text = json.dumps(header, separators=(",", ":"), ensure_ascii=False).encode()
        if len(text) <= size:
            f.seek(8)
            f.write(text + b" " * (size - len(text)))  # safetensors pads its header with spaces too
            return
        data = f.read()  # never met: a header that grew; written whole, padded to 8 bytes as safetensors does
        text += b" " * (-len(text) % 8)
        f.seek(0)
        f.write(len(text).to_bytes(8, "little") + text + data)
        f.truncate()


def _read(path: Path, with_tensors: bool) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """A checkpoint's raw metadata and (when asked) its tensors, in one opening of the file."""
    try:
        with safe_open(str(path), framework="pt" if with_tensors else "numpy") as f:
            metadata = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()} if with_tensors else {}
    except (SafetensorError, OSError) as e:
        raise checkpoint_error(path, f"cannot read checkpoint {str(path)!r}: {e}") from None
    return metadata, tensors


def read_header(path: Path) -> tuple[NetworkSpec, dict[str, tuple[int, ...]]]:
    """The network a checkpoint says it holds (the spec in its metadata) and the shape of each of its tensors, from
    the file's header alone: no tensor is read and no torch imported. A file without a readable spec is a one-line
    ProbeError."""
    try:
        with safe_open(str(path), framework="numpy") as f:
            metadata = dict(f.metadata() or {})
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
    except (SafetensorError, OSError) as e:
        raise checkpoint_error(path, f"cannot read checkpoint {str(path)!r}: {e}") from None
    return _spec(path, _decode(path, metadata)), shapes


def _decode(path: Path, metadata: dict[str, str]) -> dict:
    """The JSON values of a checkpoint's metadata."""
    try:
        return {k: json.loads(v) for k, v in metadata.items()}
    except json.JSONDecodeError as e:
        raise checkpoint_error(path, f"checkpoint {str(path)!r} has metadata that is not JSON ({e})") from None


def read_metadata(path: Path) -> dict:
    """A checkpoint's metadata other than the spec, without reading its tensors."""
    metadata, _ = _read(path, with_tensors=False)
    metadata.pop("spec", None)
    return _decode(path, metadata)


def load_tensors(path: Path) -> tuple[dict[str, torch.Tensor], NetworkSpec, dict]:
    """Load a file written by :func:`save_tensors`: ``(tensors, spec, other metadata)``."""
    metadata, tensors = _read(path, with_tensors=True)
    meta = _decode(path, metadata)
    return tensors, _spec(path, meta), meta


def _spec(path: Path, meta: dict) -> NetworkSpec:
    """The network spec in a checkpoint's decoded metadata ``meta``, taken out of it."""
    if "spec" not in meta:
        raise checkpoint_error(path, f"checkpoint {str(path)!r} carries no network spec in its metadata")
    try:
        return NetworkSpec.from_dict(meta.pop("spec"))
    except (ValueError, KeyError, TypeError, AttributeError) as e:  # ProbeError is a ValueError
        raise checkpoint_error(path, f"checkpoint {str(path)!r} carries an unreadable network spec ({e})") from None


def load_weights(path: Path, expected: NetworkSpec | None = None
                 ) -> tuple[dict[str, torch.Tensor], NetworkSpec, dict[str, list[float]] | None]:
    """Load a network's weights, checking (when given) that the file holds the network ``expected``: ``(state,
    spec, normalization)``, the last the per-channel ``mean`` and ``std`` (0..1 scale) its inputs were standardized
    with (None in files written before checkpoints recorded it)."""
    tensors, spec, meta = load_tensors(path)
    if expected is not None and spec != expected:
        raise checkpoint_error(path, f"checkpoint {str(path)!r} holds network {spec.id}, not the planned "
                                     f"{expected.id} (or the same network with other settings)")
    return tensors, spec, meta.get("normalization")


def load_state(model: torch.nn.Module, state: dict[str, torch.Tensor], path: Path,
               keys: list[str] | None = None) -> None:
    """Copy the tensors ``keys`` (default: every one of the model's, and no others) of the checkpoint at ``path``
    into ``model``, checking first that the file holds each in the model's shape: load_state_dict's own error is
    many lines, and it may have copied part of the file before it raises."""
    expected = model.state_dict()
    wanted = list(expected) if keys is None else keys
    extra = sorted(set(state) - set(expected)) if keys is None else []
    missing = [k for k in wanted if k not in state]
    if extra or missing:
        what = f"lacks {missing[0]}" if missing else f"holds {extra[0]}, which the network has not"
        raise checkpoint_error(path, f"checkpoint {str(path)!r} {what}")
    for k in wanted:
        if state[k].shape != expected[k].shape:
            raise checkpoint_error(path, f"checkpoint {str(path)!r} holds {k} of shape {list(state[k].shape)}, "
                                         f"where the network has {list(expected[k].shape)}")
    model.load_state_dict({k: state[k] for k in wanted}, strict=keys is None)


def resume_epoch(path: Path, meta: dict | None = None) -> int:
    """The last finished epoch saved in the resume file at ``path`` (``meta``: its metadata, if already read)."""
    meta = read_metadata(path) if meta is None else meta
    epoch = meta.get("epoch")
    if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 1:
        raise checkpoint_error(path, f"resume file {str(path)!r} cannot be used (its epoch is {epoch!r})",
                               UnusableResume)
    return epoch


def read_metrics(path: Path) -> dict | None:
    """A network's metrics.json: None when there is none, else a dict whose ``status`` is ``done`` (with a
    numeric ``test_acc``) or ``failed``. A file that cannot be read, or is no such dict, is a one-line ProbeError
    naming it (the network is retrained by the next 'probe train')."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as e:
        raise ProbeError(f"cannot read {str(path)!r} ({e}); {RETRAIN}") from None
    try:
        m = json.loads(text)
    except json.JSONDecodeError as e:
        raise ProbeError(f"{str(path)!r} is not JSON ({e}); {RETRAIN}") from None
    problem = _metrics_problem(m)
    if problem:
        raise ProbeError(f"{str(path)!r} is not a network's metrics ({problem}); {RETRAIN}")
    return m


def _metrics_problem(m) -> str | None:
    if not isinstance(m, dict):
        return f"a JSON {type(m).__name__}, not an object"
    if m.get("status") not in ("done", "failed"):
        return f"status {m.get('status')!r}, not 'done' or 'failed'"
    acc = m.get("test_acc")  # NaN when the test split is empty (see train.evaluate)
    if m["status"] == "done" and (isinstance(acc, bool) or not isinstance(acc, (int, float)) or
                                  not (math.isnan(acc) or 0 <= acc <= 1)):
        return f"test_acc {acc!r} is not an accuracy"
    return None

"""Network files: weights in safetensors with the spec in their metadata, metrics and resume state beside them.

Nothing here unpickles: weights and optimizer state are safetensors, everything else is JSON. Every file is
written atomically, so a killed run leaves either the previous file or the new one.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import safe_open, save_file

from probe.atomic import write_atomic
from probe.errors import ProbeError
from probe.spec import NetworkSpec

WEIGHTS = "weights.safetensors"
RESUME = "resume.safetensors"
METRICS = "metrics.json"
SPEC = "spec.json"


def save_tensors(path: Path, tensors: dict[str, torch.Tensor], spec: NetworkSpec, **meta) -> None:
    """Save ``tensors`` with the spec (and any JSON-able ``meta``) in the file's metadata."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    metadata = {"spec": spec.to_json(), **{k: json.dumps(v) for k, v in meta.items()}}
    write_atomic(path, lambda tmp: save_file(tensors, tmp, metadata=metadata))


def _read(path: Path, with_tensors: bool) -> tuple[dict[str, str], dict[str, torch.Tensor]]:
    """A checkpoint's raw metadata and (when asked) its tensors, in one opening of the file."""
    try:
        with safe_open(str(path), framework="pt") as f:
            metadata = dict(f.metadata() or {})
            tensors = {k: f.get_tensor(k) for k in f.keys()} if with_tensors else {}
    except (SafetensorError, OSError) as e:
        raise ProbeError(f"cannot read checkpoint {str(path)!r}: {e}") from None
    return metadata, tensors


def read_metadata(path: Path) -> dict:
    """A checkpoint's metadata other than the spec, without reading its tensors."""
    metadata, _ = _read(path, with_tensors=False)
    return {k: json.loads(v) for k, v in metadata.items() if k != "spec"}


def load_tensors(path: Path) -> tuple[dict[str, torch.Tensor], NetworkSpec, dict]:
    """Load a file written by :func:`save_tensors`: ``(tensors, spec, other metadata)``."""
    metadata, tensors = _read(path, with_tensors=True)
    if "spec" not in metadata:
        raise ProbeError(f"checkpoint {str(path)!r} carries no network spec in its metadata")
    spec = NetworkSpec.from_dict(json.loads(metadata.pop("spec")))
    return tensors, spec, {k: json.loads(v) for k, v in metadata.items()}


def load_weights(path: Path, expected: NetworkSpec | None = None) -> tuple[dict[str, torch.Tensor], NetworkSpec]:
    """Load a network's weights, checking (when given) that the file holds the network ``expected``."""
    tensors, spec, _ = load_tensors(path)
    if expected is not None and spec != expected:
        raise ProbeError(f"checkpoint {str(path)!r} holds network {spec.id}, not the planned {expected.id} "
                         "(or the same network with other settings)")
    return tensors, spec

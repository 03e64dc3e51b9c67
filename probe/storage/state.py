"""What a run's networks' files say about them: done, running, interrupted, failed, missing or corrupt.

A network is done when its metrics say so and its weights file is its own: whole, naming in its metadata the very
network planned (its spec equal to the planned spec), and holding the tensors of that network's shapes. All of it is
read from the file's header, never its tensors.

Read without torch or the architectures' code, so that 'probe status' answers at once, on any run. The shapes a
network should have are known only by building it (torch, and the architecture's code), so they are checked where
torch is loaded already (training, extraction: they build networks anyway), and not by 'probe status', which
checks the spec the file names: a file that probe wrote of another network, or of this one with other settings,
never passes that.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from probe.errors import ProbeError
from probe.specs.spec import NetworkSpec
from probe.specs.variants import STITCH_FAMILIES
from probe.storage.checkpoint import read_header, read_metrics, resume_epoch
from probe.storage.lock import lock_holder, lock_is_held
from probe.storage.run import NetworkFiles, Run

STATES = ("done", "running", "interrupted", "failed", "missing", "corrupt")
AGAIN = "'probe train' trains it again"


def network_state(run_dir: Path, spec: NetworkSpec, shapes: bool | None = None) -> tuple[str, str]:
    """``(state, detail)``: done, running (a live process holds its lock), interrupted (resumable), failed,
    missing, or corrupt (a file of it cannot be used: the detail says which and why; 'probe train' trains it
    again). ``shapes``: whether to check the weights' tensor shapes too (None: where torch is loaded already)."""
    files = Run(run_dir).network(spec.id)
    try:
        metrics, damage = read_metrics(files.metrics), ""
    except ProbeError as e:
        metrics, damage = None, str(e)
    if metrics is not None and metrics["status"] == "done":
        damage = weights_problem(files, spec, shapes)
        if not damage:
            return "done", f"test acc {metrics['test_acc']:.4f}"
        metrics = None  # its metrics say done, but what it finished with is gone: it is trained again
    if lock_is_held(files):
        return "running", _progress(files, spec)
    if damage:
        return "corrupt", damage
    if metrics is not None:
        return "failed", metrics.get("error", "")
    if files.resume.exists():
        try:
            return "interrupted", f"resumes after epoch {resume_epoch(files.resume)}/{spec.recipe.epochs}"
        except ProbeError as e:
            return "corrupt", str(e)
    return "missing", ""


def weights_problem(files: NetworkFiles, spec: NetworkSpec | None = None, shapes: bool | None = None) -> str:
    """Why a network's weights file cannot be used (missing, truncated, not safetensors, without a spec), or
    nothing. Given the planned ``spec``, the file must name that network, and (``shapes``; None: where torch is
    loaded already) hold tensors of its shapes. Reads only the file's header, which safetensors checks against the
    file's length: cheap enough for every status."""
    path = files.weights
    if not path.is_file():
        return f"its metrics say done but its weights file {str(path)!r} is missing; {AGAIN}"
    try:
        found, tensors = read_header(path)
    except ProbeError as e:
        return f"its metrics say done but its weights cannot be used: {e}"
    if spec is None:
        return ""
    if found != spec:
        if found.id != spec.id:
            return f"its weights file {str(path)!r} holds network {found.id}, not {spec.id}; {AGAIN}"
        where = first_difference(found.to_dict(), spec.to_dict(), ("in the file", "planned")) or "its spec"
        return f"its weights file {str(path)!r} holds {spec.id} with other settings ({where}); {AGAIN}"
    if shapes is None:
        shapes = "torch" in sys.modules
    return _shape_problem(path, tensors, planned_shapes(spec)) if shapes else ""


def _shape_problem(path: Path, tensors: dict[str, tuple[int, ...]],
                   expected: dict[str, tuple[int, ...]] | None) -> str:
    """Why tensors of these shapes are not the network's ``expected`` ones (None: unknown here), or nothing."""
    if expected is None:
        return ""
    missing = [k for k in expected if k not in tensors]
    extra = [k for k in tensors if k not in expected]
    if missing or extra:
        what = f"lacks {missing[0]}" if missing else f"holds {extra[0]}, which the network has not"
        return f"its weights file {str(path)!r} {what}; {AGAIN}"
    for k, shape in expected.items():
        if tensors[k] != shape:
            return (f"its weights file {str(path)!r} holds {k} of shape {list(tensors[k])}, where the network has "
                    f"{list(shape)}; {AGAIN}")
    return ""


def planned_shapes(spec: NetworkSpec) -> dict[str, tuple[int, ...]] | None:
    """The shape of every tensor of the network ``spec``, from building it on torch's meta device (no memory, no
    initialization), once per distinct structure: its architecture and input, classes, and stitch. None when it
    cannot be built here (an architecture this installation lacks): whatever needs the network says why."""
    stitch = spec.cut if spec.variant in STITCH_FAMILIES else None
    key = (json.dumps(spec.to_dict()["arch"], sort_keys=True), spec.in_channels, len(spec.target_classes),
           spec.input_size, stitch)
    if key not in _SHAPES:
        shapes = _built_shapes(spec)
        if shapes is None:  # not remembered: the architecture may be registered later in this process
            return None
        _SHAPES[key] = shapes
    return _SHAPES[key]


_SHAPES: dict[tuple, dict[str, tuple[int, ...]]] = {}  # planned_shapes by structure, for this process


def _built_shapes(spec: NetworkSpec) -> dict[str, tuple[int, ...]] | None:
    """Build on the meta device; a builder that needs real tensors (one that loads weights, say) on the CPU."""
    import torch

    from probe.architectures.build import build_model

    for device in ("meta", "cpu"):
        try:
            with torch.device(device):
                return {k: tuple(v.shape) for k, v in build_model(spec).state_dict().items()}
        except Exception:  # an unknown architecture, a builder's own error: the shapes stay unchecked here
            continue
    return None


def first_difference(old, new, labels: tuple[str, str], path: str = "") -> str | None:
    """``"recipe.lr: 0.02 in the file, 0.01 planned"`` (``labels`` name the two) for the first key where two JSON
    dicts differ."""
    if isinstance(old, dict) and isinstance(new, dict):
        for k in sorted(set(old) | set(new)):
            found = first_difference(old.get(k), new.get(k), labels, f"{path}.{k}" if path else k)
            if found:
                return found
        return None
    return None if old == new else f"{path}: {json.dumps(old)} {labels[0]}, {json.dumps(new)} {labels[1]}"


def is_finished(files: NetworkFiles, spec: NetworkSpec | None = None) -> bool:
    """Whether the network finished: its metrics say done and its weights are whole (and, given its planned
    ``spec``, its own: see :func:`weights_problem`). An unreadable metrics file says not: it is trained again.
    Without ``spec`` a file of another network passes: training asks with the spec, under the network's lock, so it
    retrains such a network (:func:`probe.execution.train.train_network`)."""
    try:
        metrics = read_metrics(files.metrics)
    except ProbeError:
        return False
    return metrics is not None and metrics["status"] == "done" and not weights_problem(files, spec)


def _progress(files: NetworkFiles, spec: NetworkSpec) -> str:
    """Who is training the network and how far it got, as far as its files tell (they describe; the lock decides)."""
    parts = [lock_holder(files)]
    try:
        parts.append(f"epoch {resume_epoch(files.resume)}/{spec.recipe.epochs} done")
    except ProbeError:  # no epoch finished yet
        pass
    return ", ".join(p for p in parts if p)


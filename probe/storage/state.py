"""What a run's networks' files say about them: done, running, interrupted, failed, missing or corrupt.

Read without torch or the architectures' code, so that 'probe status' answers at once, on any run.
"""

from __future__ import annotations

from pathlib import Path

from probe.errors import ProbeError
from probe.planning.plan import read_plan
from probe.planning.spec import NetworkSpec
from probe.storage.checkpoint import read_metadata, read_metrics, resume_epoch
from probe.storage.lock import lock_holder, lock_is_held
from probe.storage.run import NetworkFiles, Run

STATES = ("done", "running", "interrupted", "failed", "missing", "corrupt")


def network_state(run_dir: Path, spec: NetworkSpec) -> tuple[str, str]:
    """``(state, detail)``: done, running (a live process holds its lock), interrupted (resumable), failed,
    missing, or corrupt (a file of it cannot be used: the detail says which and why; 'probe train' trains it
    again)."""
    files = Run(run_dir).network(spec.id)
    try:
        metrics, damage = read_metrics(files.metrics), ""
    except ProbeError as e:
        metrics, damage = None, str(e)
    if metrics is not None and metrics["status"] == "done":
        damage = weights_problem(files)
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


def weights_problem(files: NetworkFiles) -> str:
    """Why a network's weights file cannot be used (missing, truncated, not safetensors), or nothing. Reads only
    the file's header, which safetensors checks against the file's length: cheap enough for every status."""
    if not files.weights.is_file():
        return (f"its metrics say done but its weights file {str(files.weights)!r} is missing; 'probe train' "
                "trains it again")
    try:
        read_metadata(files.weights)
    except ProbeError as e:
        return f"its metrics say done but its weights cannot be used: {e}"
    return ""


def is_finished(files: NetworkFiles) -> bool:
    """Whether the network finished: its metrics say done and its weights are whole (an unreadable metrics file
    says not: it is trained again)."""
    try:
        metrics = read_metrics(files.metrics)
    except ProbeError:
        return False
    return metrics is not None and metrics["status"] == "done" and not weights_problem(files)


def _progress(files: NetworkFiles, spec: NetworkSpec) -> str:
    """Who is training the network and how far it got, as far as its files tell (they describe; the lock decides)."""
    parts = [lock_holder(files)]
    try:
        parts.append(f"epoch {resume_epoch(files.resume)}/{spec.recipe.epochs} done")
    except ProbeError:  # no epoch finished yet
        pass
    return ", ".join(p for p in parts if p)


def run_status(run_dir: Path) -> list[tuple[NetworkSpec, str, str]]:
    """Every planned network with its state and a detail, in plan order."""
    _, plan = read_plan(run_dir)
    return [(p.spec, *network_state(run_dir, p.spec)) for p in plan]

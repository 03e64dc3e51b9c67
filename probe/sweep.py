"""Running a whole plan in a run directory: skip what is finished, resume what was interrupted, train the rest.

A run directory holds ``plan.json`` (written before anything trains), ``data.json`` (the input normalization every
network shares) and ``networks/<replicate>/<name>/`` per network. A network whose training fails is recorded as
failed and the sweep goes on; networks that copy from it are skipped until it succeeds.
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Container
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from data.datasets import ImageArrays, load_dataset
from data.tasks import task_data
from probe.atomic import read_json, write_json
from probe.batches import channel_stats
from probe.checkpoint import METRICS, RESUME, read_metadata
from probe.errors import ProbeError
from probe.plan import PLAN, PlannedNetwork, Study, make_plan, plan_to_dict, read_plan, write_plan
from probe.spec import NetworkSpec
from probe.train import RUNNING, TaskTensors, TrainingDiverged, network_dir, record_failure, train_network

DATA = "data.json"


def plan_study(run_dir: Path | None, study: Study, cache_dir: Path | None = None, download: bool = False,
               extend: bool = False, progress: bool = True) -> tuple[list[PlannedNetwork], ImageArrays]:
    """Resolve ``study`` against its dataset; with a ``run_dir``, write (or check) the run's plan.json.

    With ``extend``, a run may grow into ``study`` (more seeds, splits, cuts or variants) as long as every network
    it already plans stays planned with the same spec, so nothing finished is invalidated."""
    arrays = load_dataset(study.data, cache_dir, download, progress)
    plan = make_plan(study, arrays.classes, arrays.train_x.shape[-1], arrays.train_x.shape[1])
    if run_dir is not None:
        path = Path(run_dir) / PLAN
        if path.exists():
            stored, now = read_json(path), json.loads(json.dumps(plan_to_dict(study, plan)))
            if stored == now:
                return plan, arrays
            where = _first_difference(stored["study"], now["study"]) or "the resolved networks"
            if not extend:
                raise ProbeError(f"{str(run_dir)!r} already holds a different plan ({where}); run 'probe train "
                                 f"{run_dir}' with the same options (or none) to resume it, add --extend to grow "
                                 "it by seeds, splits, cuts or variants, or use a new directory")
            specs = {n["id"]: n["spec"] for n in now["networks"]}
            changed = next((n["id"] for n in stored["networks"] if specs.get(n["id"]) != n["spec"]), None)
            if changed is not None:
                raise ProbeError(f"cannot extend {str(run_dir)!r}: its network {changed} would be "
                                 f"{'changed' if changed in specs else 'dropped'} ({where}); extending may only "
                                 "add seeds, splits, cuts or variants")
        write_plan(run_dir, study, plan)
    return plan, arrays


def _first_difference(old, new, path: str = "") -> str | None:
    """``"recipe.epochs: 1 in the run, 2 now"`` for the first key where two study dicts differ."""
    if isinstance(old, dict) and isinstance(new, dict):
        for k in sorted(set(old) | set(new)):
            found = _first_difference(old.get(k), new.get(k), f"{path}.{k}" if path else k)
            if found:
                return found
        return None
    return None if old == new else f"{path}: {json.dumps(old)} in the run, {json.dumps(new)} now"


@dataclass
class SweepResult:
    trained: list[str]
    skipped: list[str]  # finished before this run
    failed: dict[str, str]  # id -> error
    blocked: dict[str, str]  # id -> the failed or missing network it needs


def run_study(run_dir: Path, study: Study, device: torch.device, cache_dir: Path | None = None,
              download: bool = False, progress: bool = True, only: list[str] | None = None,
              extend: bool = False) -> SweepResult:
    """Train every network of ``study`` (or those whose id or name is in ``only``) into ``run_dir``; ``extend``
    lets the run's plan grow into ``study`` (see :func:`plan_study`)."""
    run_dir = Path(run_dir)
    plan, arrays = plan_study(run_dir, study, cache_dir, download, extend, progress)
    mean, std = prepare_run_data(run_dir, arrays)
    selected = select_networks(plan, only)
    result = SweepResult([], [], {}, {})
    tasks: dict[tuple[str, ...], TaskTensors] = {}
    bar = tqdm(selected, desc="sweep", unit="net", disable=not progress, dynamic_ncols=True)
    for planned in bar:
        spec = planned.spec
        if not can_start(run_dir, plan, planned, result):
            continue
        key = spec.target_classes
        if key not in tasks:
            if len(tasks) == 2:  # keep a replicate's two tasks on the device; plans run replicate by replicate
                del tasks[next(iter(tasks))]
            tasks[key] = TaskTensors.from_task(task_data(arrays, list(key), spec.data), mean, std, device)
        try:
            metrics = train_network(spec, tasks[key], run_dir, device, progress=progress)
        except TrainingDiverged as e:
            record_failure(run_dir, spec, str(e))
            result.failed[spec.id] = str(e)
            tqdm.write(f"failed: {e}")
            continue
        result.trained.append(spec.id)
        bar.set_postfix(last=f"{spec.id} {metrics['test_acc']:.3f}")
    bar.close()
    return result


def can_start(run_dir: Path, plan: list[PlannedNetwork], planned: PlannedNetwork, result: SweepResult,
              underway: Container[str] = ()) -> bool:
    """Whether ``planned`` is to be trained now. If not, it is recorded in ``result``: skipped when it finished
    earlier; blocked when another process is training it, or when a network it copies from is neither finished nor
    ``underway`` (submitted in this sweep, so that it will be finished first)."""
    spec = planned.spec
    state = network_state(run_dir, spec)[0]
    if state == "done":
        result.skipped.append(spec.id)
        return False
    if state == "running":  # another process on this machine is training it
        result.blocked[spec.id] = "itself: running in another process"
        return False
    missing = [d for d in planned.depends_on if d not in underway
               and network_state(run_dir, _by_id(plan, d))[0] != "done"]
    if missing:
        result.blocked[spec.id] = missing[0]
        return False
    return True


def prepare_run_data(run_dir: Path, arrays: ImageArrays) -> tuple[list[float], list[float]]:
    """The per-channel input statistics of the dataset's training split, fixed for the run in data.json."""
    path = run_dir / DATA
    if path.exists():
        d = read_json(path)
    else:
        mean, std = channel_stats(arrays.train_x)
        d = {"mean": mean, "std": std, "classes": list(arrays.classes)}
        write_json(path, d)
    return d["mean"], d["std"]


def select_networks(plan: list[PlannedNetwork], only: list[str] | None) -> list[PlannedNetwork]:
    if not only:
        return plan
    chosen = [p for p in plan if p.spec.id in only or p.spec.name in only]
    unknown = [o for o in only if not any(o in (p.spec.id, p.spec.name) for p in plan)]
    if unknown:
        raise ProbeError(f"no planned network is called {unknown[0]!r} (names look like baseA, A3B+, "
                         f"{plan[-1].spec.id})")
    return chosen


def _by_id(plan: list[PlannedNetwork], network_id: str) -> NetworkSpec:
    return next(p.spec for p in plan if p.spec.id == network_id)


def network_state(run_dir: Path, spec: NetworkSpec) -> tuple[str, str]:
    """``(state, detail)``: done, running, interrupted (resumable), failed or missing."""
    folder = network_dir(run_dir, spec)
    if (folder / METRICS).exists():
        m = read_json(folder / METRICS)
        if m.get("status") == "done":
            return "done", f"test acc {m['test_acc']:.4f}"
        if not (folder / RUNNING).exists():
            return "failed", m.get("error", "")
    epoch = ""
    if (folder / RESUME).exists():
        meta = read_metadata(folder / RESUME)
        epoch = f"epoch {meta['epoch']}/{spec.recipe.epochs}"
    if (folder / RUNNING).exists():
        owner = read_json(folder / RUNNING)
        if owner.get("host") == socket.gethostname() and _alive(owner.get("pid", -1)):
            return "running", f"pid {owner['pid']}" + (f", {epoch} done" if epoch else "")
    if epoch:
        return "interrupted", f"resumes after {epoch}"
    return "missing", ""


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def run_status(run_dir: Path) -> list[tuple[NetworkSpec, str, str]]:
    """Every planned network with its state and a detail, in plan order."""
    _, plan = read_plan(run_dir)
    return [(p.spec, *network_state(run_dir, p.spec)) for p in plan]

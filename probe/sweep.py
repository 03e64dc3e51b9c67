"""Running a whole plan in a run directory: skip what is finished, resume what was interrupted, train the rest.

A run directory holds ``plan.json`` (written before anything trains), ``data.json`` (the input normalization every
network shares) and ``networks/<replicate>/<name>/`` per network. A network whose training fails, or cannot start
(an unusable parent checkpoint, a resume file of other settings), is recorded as failed and the sweep goes on;
networks that copy from it are skipped until it succeeds. A damaged file of one network makes that network
"corrupt", and it is trained again. Only a file that cannot be written (a full disk) stops the sweep, and the
same command resumes it.
"""

from __future__ import annotations

import json
from collections.abc import Container
from dataclasses import dataclass
from pathlib import Path

import torch
from tqdm import tqdm

from probe.data.datasets import ImageArrays, load_dataset
from probe.data.tasks import task_data
from probe.atomic import WriteError, read_json_file, write_json
from probe.batches import channel_stats
from probe.checkpoint import METRICS, RESUME, read_metrics
from probe.errors import ProbeError
from probe.plan import PLAN, PlannedNetwork, Study, make_plan, plan_to_dict, read_plan, read_plan_file, write_plan
from probe.spec import NetworkSpec
from probe.train import (RUNNING, FinishedElsewhere, NetworkBusy, TaskTensors, lock_holder, lock_is_held,
                         network_dir, record_failure, resume_epoch, train_network)

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
            # the stored plan as this probe writes it, so fields added since it was written compare at their defaults
            stored = json.loads(json.dumps(plan_to_dict(*read_plan_file(path)[1:])))
            now = json.loads(json.dumps(plan_to_dict(study, plan)))
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
        outcome, detail = attempt(spec, tasks[key], run_dir, device, progress)
        if outcome == "trained":
            result.trained.append(spec.id)
            bar.set_postfix(last=f"{spec.id} {detail['test_acc']:.3f}")
        elif outcome == "skipped":
            result.skipped.append(spec.id)
        elif outcome == "blocked":
            result.blocked[spec.id] = detail
        else:
            result.failed[spec.id] = detail
            tqdm.write(f"failed: {detail}")
    bar.close()
    return result


BUSY = "itself: running in another process"  # what a network being trained elsewhere is blocked by


def attempt(spec: NetworkSpec, data: TaskTensors, run_dir: Path, device: torch.device,
            progress: bool) -> tuple[str, dict | str | None]:
    """Train one network for either executor: ``("trained", metrics)``; ``("skipped", None)`` when another process
    finished it meanwhile; ``("blocked", BUSY)`` while another process trains it; ``("failed", error)`` once it is
    recorded failed, for a reason that concerns this network only (it diverged, or cannot start). A file that
    cannot be written concerns every network, and raises."""
    try:
        return "trained", train_network(spec, data, run_dir, device, progress=progress)
    except FinishedElsewhere:
        return "skipped", None
    except NetworkBusy:
        return "blocked", BUSY
    except WriteError:
        raise
    except ProbeError as e:
        record_failure(run_dir, spec, str(e))
        return "failed", str(e)


def can_start(run_dir: Path, plan: list[PlannedNetwork], planned: PlannedNetwork, result: SweepResult,
              underway: Container[str] = ()) -> bool:
    """Whether ``planned`` is to be trained now. If not, it is recorded in ``result``: skipped when it finished
    earlier; blocked when another process is training it, or when a network it copies from is neither finished nor
    ``underway`` (submitted in this sweep, so that it will be finished first)."""
    spec = planned.spec
    state = network_state(run_dir, spec)[0]
    if state == "done":
        _remove_leftovers(network_dir(run_dir, spec))
        result.skipped.append(spec.id)
        return False
    if state == "running":
        result.blocked[spec.id] = BUSY
        return False
    missing = [d for d in planned.depends_on if d not in underway
               and network_state(run_dir, _by_id(plan, d))[0] != "done"]
    if missing:
        result.blocked[spec.id] = missing[0]
        return False
    return True


def _remove_leftovers(folder: Path) -> None:
    """Remove the resume and running files of a finished network, left by a process killed between writing its
    metrics and cleaning up (while another process is cleaning up after finishing it, this is harmless too)."""
    for name in (RESUME, RUNNING):
        (folder / name).unlink(missing_ok=True)


def prepare_run_data(run_dir: Path, arrays: ImageArrays) -> tuple[list[float], list[float]]:
    """The per-channel input statistics of the dataset's training split, fixed for the run in data.json."""
    if (run_dir / DATA).exists():
        d = read_run_data(run_dir)
    else:
        mean, std = channel_stats(arrays.train_x)
        d = {"mean": mean, "std": std, "classes": list(arrays.classes)}
        write_json(run_dir / DATA, d)
    return d["mean"], d["std"]


def read_run_data(run_dir: Path) -> dict:
    """The run's data.json; one that cannot be read or lacks its mean, std or classes is a one-line ProbeError."""
    path = Path(run_dir) / DATA
    fix = "delete it and rerun 'probe train', which computes it again from the dataset"
    d = read_json_file(path, fix)
    if not (isinstance(d, dict) and all(isinstance(d.get(k), list) for k in ("mean", "std", "classes"))):
        raise ProbeError(f"{path} does not hold a run's input statistics (mean, std, classes); {fix}")
    return d


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
    """``(state, detail)``: done, running (a live process holds its lock), interrupted (resumable), failed,
    missing, or corrupt (a file of it cannot be used: the detail says which and why; 'probe train' trains it
    again)."""
    folder = network_dir(run_dir, spec)
    try:
        metrics, damage = read_metrics(folder / METRICS), ""
    except ProbeError as e:
        metrics, damage = None, str(e)
    if metrics is not None and metrics["status"] == "done":
        return "done", f"test acc {metrics['test_acc']:.4f}"
    if lock_is_held(folder):
        return "running", _progress(folder, spec)
    if damage:
        return "corrupt", damage
    if metrics is not None:
        return "failed", metrics.get("error", "")
    if (folder / RESUME).exists():
        try:
            return "interrupted", f"resumes after epoch {resume_epoch(folder / RESUME)}/{spec.recipe.epochs}"
        except ProbeError as e:
            return "corrupt", str(e)
    return "missing", ""


def _progress(folder: Path, spec: NetworkSpec) -> str:
    """Who is training the network and how far it got, as far as its files tell (they describe; the lock decides)."""
    parts = [lock_holder(folder)]
    try:
        parts.append(f"epoch {resume_epoch(folder / RESUME)}/{spec.recipe.epochs} done")
    except ProbeError:  # no epoch finished yet
        pass
    return ", ".join(p for p in parts if p)


def run_status(run_dir: Path) -> list[tuple[NetworkSpec, str, str]]:
    """Every planned network with its state and a detail, in plan order."""
    _, plan = read_plan(run_dir)
    return [(p.spec, *network_state(run_dir, p.spec)) for p in plan]

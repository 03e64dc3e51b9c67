"""Running a whole plan in a run directory: skip what is finished, resume what was interrupted, train the rest.

A run directory (:mod:`probe.storage.run`) holds ``plan.json`` (written before anything trains), ``data.json`` (the
input normalization every network shares) and a folder per network. Every network to train is one task of an executor
(:mod:`probe.execution.executor`: this process, or dask workers); a network that copies layers from a base network
takes the base's task as an argument, so it starts only once the base finished. A network whose training fails, or
cannot start (an unusable parent checkpoint, a resume file of other settings), is recorded as failed and the sweep goes
on; networks that copy from it are blocked until it succeeds. A damaged file of one network makes that network
"corrupt", and it is trained again. Only a file that cannot be written (a full disk) stops the sweep, and the same
command resumes it.

Tasks are idempotent: a network already finished is read back, never retrained, which makes dask's recomputation
after a lost worker harmless; a network interrupted with its process resumes from its last epoch checkpoint.
"""

from __future__ import annotations

import functools
import json
import threading
import time
from collections.abc import Container
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from probe.data.arrays import ImageArrays
from probe.data.datasets import load_dataset
from probe.data.tasks import task_data
from probe.errors import ProbeError
from probe.execution.batches import channel_stats
from probe.execution.executor import CANCELLED, Executor, Future, LocalExecutor
from probe.execution.train import FinishedElsewhere, TaskTensors, record_failure, resolve_device, train_network
from probe.planning.plan import (
    PlannedNetwork,
    Study,
    make_plan,
    plan_to_dict,
    read_plan_file,
    recorded_splits,
    write_plan,
)
from probe.specs.spec import DataSpec, NetworkSpec, SourceSpec
from probe.storage.atomic import WriteError, read_json_file, remove_leftover_temporaries, write_error, write_json
from probe.storage.loaded import loaded_dataset
from probe.storage.lock import LockUnsupported, NetworkBusy
from probe.storage.run import NetworkFiles, Run
from probe.storage.state import first_difference, network_state

BUSY = "itself: running in another process"  # what a network being trained elsewhere is blocked by

# Training seeds and saves torch's process-wide RNG, so a process trains one network at a time, however many
# threads it runs tasks on.
_TRAINING = threading.Lock()


def plan_study(run_dir: Path | None, study: Study, cache_dir: Path | None = None, download: bool = False,
               extend: bool = False, progress: bool = True) -> tuple[list[PlannedNetwork], ImageArrays]:
    """Resolve ``study`` against its dataset; with a ``run_dir``, write (or check) the run's plan.json.

    With ``extend``, a run may grow into ``study`` (more seeds, splits, cuts or variants) as long as every network
    it already plans stays planned with the same spec, so nothing finished is invalidated. A plan none of whose
    networks ever began (its command failed, or was stopped, before training any) is replaced by ``study``'s: the
    corrected command is not refused as a different plan.

    The ``file:`` splits the run's plan already holds are taken from it, not read again: resuming a run needs no
    split file (a relative path from another directory, a file moved since), and a file edited since cannot change
    a network already planned; a split new to the run is read from its file.

    The dataset is indexed, not decoded (:func:`~probe.data.datasets.load_dataset` with no classes): its images are
    decoded by :func:`load_study_images` once the plan says which classes it uses."""
    arrays = load_dataset(study.data, cache_dir, download, progress, classes=())
    path = Run(run_dir).plan if run_dir is not None else None
    existing = read_plan_file(path)[1:] if path is not None and path.exists() else None

    def planned(recorded: dict[str, dict] | None) -> list[PlannedNetwork]:
        return make_plan(study, arrays.classes, arrays.train_x.shape[-1], arrays.train_x.shape[1], recorded)

    plan = planned(recorded_splits(existing[1]) if existing else None)
    if run_dir is not None:
        if existing is not None:
            # the stored plan as this probe writes it, so fields added since it was written compare at their defaults
            stored = json.loads(json.dumps(plan_to_dict(*existing)))
            now = json.loads(json.dumps(plan_to_dict(study, plan)))
            if stored == now:
                return plan, arrays
            if _started(run_dir):
                _check_growth(run_dir, stored, now, extend)
            else:
                # no network of the stored plan ever began (the command that wrote it failed, or was stopped, first):
                # nothing is lost by planning afresh, split files read again and the statistics computed again
                plan = planned(None)
                _unlink(Run(run_dir).data)
        write_plan(run_dir, study, plan)
    return plan, arrays


def _check_growth(run_dir: Path, stored: dict, now: dict, extend: bool) -> None:
    """Refuse plan.json ``now`` in place of the run's ``stored`` one, unless ``extend`` allows it and every network
    of the stored one is planned alike."""
    where = first_difference(stored["study"], now["study"], ("in the run", "now")) or "the resolved networks"
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


def _started(run_dir: Path) -> bool:
    """Whether any network of the run ever began: its folder is made when it is first locked for training."""
    networks = Run(run_dir).networks
    return networks.is_dir() and any(networks.iterdir())


def _unlink(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError as e:
        raise write_error(path, e) from None


@dataclass
class SweepResult:
    trained: list[str]
    skipped: list[str]  # finished before this run
    failed: dict[str, str]  # id -> error
    blocked: dict[str, str]  # id -> the failed or missing network it needs


def run_study(run_dir: Path, study: Study, device: torch.device, cache_dir: Path | None = None,
              download: bool = False, progress: bool = True, only: list[str] | None = None,
              extend: bool = False) -> SweepResult:
    """Train every network of ``study`` (or those whose id or name is in ``only``) into ``run_dir``, one after
    another in this process; ``extend`` lets the run's plan grow into ``study`` (see :func:`plan_study`)."""
    return train_study(LocalExecutor(), run_dir, study, str(device), cache_dir, download, progress, only, extend)


def train_study(executor: Executor, run_dir: Path, study: Study, device: str, cache_dir: Path | None = None,
                download: bool = False, progress: bool = True, only: list[str] | None = None, extend: bool = False,
                retries: int = 0) -> SweepResult:
    """:func:`run_study` with one task of ``executor`` per network, on ``device`` (a name, resolved where the task
    runs); a task whose code raised runs again up to ``retries`` times before its network is recorded failed."""
    run = Run(run_dir)
    plan, _ = plan_study(run, study, cache_dir, download, extend, progress)
    arrays = load_study_images(study, plan, cache_dir, download, progress)
    stats = prepare_run_data(run, arrays, study.source, plan_classes(plan))
    chosen = select_networks(plan, only)
    result = _sweep(executor, run, plan, chosen, stats, device, cache_dir, progress, retries)
    # networks another process was training (a second 'probe train' of the same run, started at once): wait for it
    # to finish them, then train what is left, so that both end with every network done and exit alike
    while any(nid in result.blocked for nid in _elsewhere(run, chosen)) or BUSY in result.blocked.values():
        _wait_for_others(run, chosen, progress)
        again = _sweep(executor, run, plan, [p for p in chosen if p.spec.id in result.blocked], stats, device,
                       cache_dir, progress, retries)
        result = SweepResult([*result.trained, *again.trained], [*result.skipped, *again.skipped],
                             {**result.failed, **again.failed}, again.blocked)
        if not again.trained and not again.skipped and not _elsewhere(run, chosen):
            break  # nothing moved, and nobody else is training: what is still blocked waits for a failed network
    return result


def _elsewhere(run: Run, chosen: list[PlannedNetwork]) -> list[str]:
    """The networks of ``chosen`` that another process is training now."""
    return [p.spec.id for p in chosen if network_state(run, p.spec)[0] == "running"]


def _wait_for_others(run: Run, chosen: list[PlannedNetwork], progress: bool, poll: float = 2.0) -> None:
    """Wait until no network of ``chosen`` is being trained by another process."""
    busy = _elsewhere(run, chosen)
    if busy and progress:
        tqdm.write(f"waiting for {len(busy)} network{'s' if len(busy) != 1 else ''} another process is training "
                   f"(e.g. {busy[0]})")
    while busy:
        time.sleep(poll)
        busy = _elsewhere(run, chosen)


def _sweep(executor: Executor, run: Run, plan: list[PlannedNetwork], chosen: list[PlannedNetwork], stats,
           device: str, cache_dir: Path | None, progress: bool, retries: int) -> SweepResult:
    """One pass over ``chosen``: the finished are skipped, those ready are trained, the others blocked."""
    result = SweepResult([], [], {}, {})
    futures: dict[str, Future] = {}
    for planned in chosen:
        spec = planned.spec
        verdict, detail = readiness(run, plan, planned, underway=futures)
        if verdict == "done":
            _remove_leftovers(run.network(spec.id))
            result.skipped.append(spec.id)
        elif verdict == "blocked":
            result.blocked[spec.id] = detail
        else:
            parents = [futures[d] for d in planned.depends_on if d in futures]
            futures[spec.id] = executor.submit(
                train_task, str(run.path), spec.to_dict(), stats, device, str(cache_dir) if cache_dir else None,
                *parents, key=f"train-{spec.id}", gpu=True, retries=retries, progress=progress and executor.in_process)
    try:
        _gather(executor, run, {p.spec.id: p for p in plan}, futures, result, progress)
    finally:
        if executor.in_process:  # a worker keeps its tasks' tensors for the next sweep; this process is done
            task_tensors.cache_clear()
    return result


def readiness(run_dir: Path, plan: list[PlannedNetwork], planned: PlannedNetwork,
              underway: Container[str] = ()) -> tuple[str, str | None]:
    """Whether ``planned`` is to be trained now: ``("done", None)`` when it finished earlier; ``("blocked", what
    it waits for)`` while another process trains it (:data:`BUSY`) or while a network it copies from is neither
    finished nor ``underway`` (submitted in this sweep, so that it will be finished first); else ``("ready",
    None)``."""
    state = network_state(run_dir, planned.spec)[0]
    if state in ("done", "running"):
        return ("done", None) if state == "done" else ("blocked", BUSY)
    specs = {p.spec.id: p.spec for p in plan}
    missing = [d for d in planned.depends_on if d not in underway and network_state(run_dir, specs[d])[0] != "done"]
    return ("blocked", missing[0]) if missing else ("ready", None)


def _remove_leftovers(files: NetworkFiles) -> None:
    """Remove the resume and running files of a finished network, left by a process killed between writing its
    metrics and cleaning up (while another process is cleaning up after finishing it, this is harmless too), and
    the temporary files of a process killed while writing one of its files. Nothing writes a finished network's
    files any more, so none of them is a write under way."""
    files.resume.unlink(missing_ok=True)
    files.running.unlink(missing_ok=True)
    for path in files.written_in_training:
        remove_leftover_temporaries(path)


def _gather(executor: Executor, run: Run, planned: dict[str, PlannedNetwork], futures: dict[str, Future],
            result: SweepResult, progress: bool) -> None:
    """Record every network's task in ``result`` as it completes."""
    ids = {future: nid for nid, future in futures.items()}
    bar = tqdm(total=len(futures), desc="sweep", unit="net", disable=not progress, dynamic_ncols=True)
    try:
        for future in executor.as_completed(ids):
            nid = ids[future]
            if future.status == "cancelled":  # its result would raise CancelledError: not trained, resumable
                result.blocked[nid] = CANCELLED
                bar.update()
                continue
            out = future.result() if future.status != "error" else _task_error(run, planned[nid], futures, future)
            if out["status"] == "done":
                (result.trained if out["trained"] else result.skipped).append(nid)
                if out["trained"]:
                    bar.set_postfix(last=f"{nid} {out['test_acc']:.3f}")
            elif out["status"] == "failed":
                result.failed[nid] = out["error"]
                tqdm.write(f"failed: {out['error']}")
            else:
                result.blocked[nid] = out["needs"]
            bar.update()
    finally:  # a run-stopping error is printed after the bar, not into it
        bar.close()


def _task_error(run: Run, planned: PlannedNetwork, futures: dict[str, Future], future: Future) -> dict:
    """What a task that raised (and was retried) means. A ProbeError concerns the run, not the network (a file that
    cannot be written, data that cannot be split, a device that is not there: every network would meet it), so
    it stops the sweep; any other error is the failure of a network it copies from, which blocks it, or its own,
    recorded in its folder."""
    error = future.exception()
    if isinstance(error, ProbeError):
        raise error
    spec = planned.spec
    failed_parent = next((d for d in planned.depends_on if d in futures and futures[d].status == "error"), None)
    if failed_parent is not None:
        return {"id": spec.id, "status": "blocked", "needs": failed_parent}
    message = f"{type(error).__name__}: {error}"
    if network_state(run, spec)[0] != "done":
        record_failure(run, spec, message)
    return {"id": spec.id, "status": "failed", "error": message}


def train_task(run_dir: str, spec_dict: dict, stats: tuple[list[float], list[float]], device: str,
               cache_dir: str | None, *parents: dict, progress: bool = False) -> dict:
    """Train one network (the body of every training task), its inputs normalized by the run's ``stats`` (mean,
    std), on ``device`` as this process resolves it. ``parents`` are the results of the tasks it depends on; when
    one of them did not finish, this network is reported blocked. A network that fails for reasons of its own is
    recorded failed here (retrying would fail the same way); other errors raise, for the executor to retry and
    the sweep to judge (:func:`_task_error`)."""
    spec = NetworkSpec.from_dict(spec_dict)
    stopped = next((p for p in parents if p["status"] != "done"), None)
    if stopped is not None:
        return {"id": spec.id, "status": "blocked", "needs": stopped["id"]}
    if network_state(run_dir, spec)[0] == "done":  # finished earlier, or recomputed after a lost worker
        return {"id": spec.id, "status": "done", "trained": False}
    with _TRAINING:
        data = task_tensors(spec.data, spec.target_classes, *(tuple(v) for v in stats), cache_dir, device)
        try:
            metrics = train_network(spec, data, Path(run_dir), resolve_device(device), progress=progress)
        except FinishedElsewhere:
            return {"id": spec.id, "status": "done", "trained": False}
        except NetworkBusy:
            return {"id": spec.id, "status": "blocked", "needs": BUSY}
        except (WriteError, LockUnsupported):  # every network would meet it: the sweep stops, in one line
            raise
        except ProbeError as e:  # it diverged, or cannot start: a reason of this network's own
            record_failure(run_dir, spec, str(e))
            return {"id": spec.id, "status": "failed", "error": str(e)}
    return {"id": spec.id, "status": "done", "trained": True, "test_acc": metrics["test_acc"]}


@functools.lru_cache(maxsize=2)
def task_tensors(data: DataSpec, classes: tuple[str, ...], mean: tuple[float, ...], std: tuple[float, ...],
          cache_dir: str | None, device: str) -> TaskTensors:
    """A task's tensors on this process's device, kept for the next network of the same replicate (plans run
    replicate by replicate, and a replicate has two tasks)."""
    task = task_data(loaded_dataset(data, cache_dir, tuple(classes)), list(classes), data)
    return TaskTensors.from_task(task, list(mean), list(std), resolve_device(device))


def plan_classes(plan: list[PlannedNetwork]) -> list[str]:
    """Every class some network of ``plan`` trains or tests on, in order of first use."""
    return list(dict.fromkeys(c for p in plan for c in (*p.spec.classes_a, *p.spec.classes_b)))


def load_study_images(study: Study, plan: list[PlannedNetwork], cache_dir: Path | None = None,
                      download: bool = False, progress: bool = True) -> ImageArrays:
    """The dataset with the images of every class ``plan`` uses decoded, here, once, before any network is handed
    to a worker (which would otherwise each decode them)."""
    return load_dataset(study.data, cache_dir, download, progress, classes=plan_classes(plan))


def prepare_run_data(run_dir: Path, arrays: ImageArrays, source: SourceSpec | None = None,
                     classes: list[str] | None = None) -> tuple[list[float], list[float]]:
    """The input normalization of every network of the run, fixed in data.json: the per-channel statistics of the
    training images of the ``classes`` the run uses (None: every class of the dataset), or the normalization a
    ``source`` network expects.

    With a source network the whole run uses its normalization, not only the networks that copy from it: the
    decomposition compares SnB with BnB and baseB network by network, so they must see the same inputs for a
    difference to measure where their layers came from rather than how their images were scaled."""
    run = Run(run_dir)
    if run.data.exists():
        d = read_run_data(run)
    else:
        mean, std = (source.mean, source.std) if source and source.mean else channel_stats(
            arrays.train_x, _images_of(arrays, classes))
        d = {"mean": list(mean), "std": list(std), "classes": list(arrays.classes)}
        write_json(run.data, d)
    if source and source.mean and (d["mean"], d["std"]) != (list(source.mean), list(source.std)):
        raise ProbeError(f"{run.data} normalizes inputs with mean {d['mean']} and std {d['std']}, not as the source "
                         "network expects; use a new run directory")
    return d["mean"], d["std"]


def _images_of(arrays: ImageArrays, classes: list[str] | None) -> np.ndarray | None:
    """The training images of ``classes``, as indices (None where they are every image)."""
    if classes is None or set(classes) >= set(arrays.classes):
        return None
    wanted = [arrays.classes.index(c) for c in classes]
    return np.flatnonzero(np.isin(np.asarray(arrays.train_y), wanted))


def read_run_data(run_dir: Path) -> dict:
    """The run's data.json; one that cannot be read or lacks its mean, std or classes is a one-line ProbeError."""
    path = Run(run_dir).data
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

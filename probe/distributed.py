"""Sweeps and extraction on dask.distributed: every network is one task, on any cluster dask can reach.

The plan is the same as the local executor's (``probe.sweep``); only where networks run changes. A network that
copies layers from a base network takes that base network's future as an argument, so dask starts it only after
the base finished. Tasks are idempotent: a network already finished is read back, never retrained, which makes
dask's recomputation after a lost worker harmless; a network interrupted with its worker resumes from its last
epoch checkpoint on whichever worker runs it next. When any worker declares a ``GPU`` resource, every training task
asks for one, so each network gets a GPU of its own.

Run directories and stores must be on storage that every worker sees under the same path (a local disk for a
LocalCluster, NFS or another shared file system on a cluster).
"""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
import threading
import uuid
from pathlib import Path

import torch
from tqdm import tqdm

from probe.data.datasets import ImageArrays, load_dataset
from probe.data.tasks import task_data
from probe.batches import Normalize
from probe.errors import ProbeError
from probe.extract import (STORE, ProbeSet, Reduction, check_store_path, consolidate, extract_one, extraction_specs,
                           record, start_result)
from probe.plan import PlannedNetwork, Study
from probe.spec import DataSpec, NetworkSpec
from probe.sweep import (SweepResult, attempt, can_start, network_state, plan_study, prepare_run_data,
                         select_networks)
from probe.train import TaskTensors, check_device_name, record_failure, resolve_device

GPU = "GPU"  # the dask worker resource a training task asks for (workers declare it: --resources GPU=1)
THREADS = "PROBE_TORCH_THREADS"  # torch threads per task on a worker (dask's nanny sets OMP_NUM_THREADS=1)

# Training seeds and saves torch's process-wide RNG, so a worker process trains one network at a time, however
# many threads it runs tasks on.
_TRAINING = threading.Lock()


@contextlib.contextmanager
def dask_client(scheduler: str | None, workers: int = 2, threads: int | None = None):
    """A dask client: to ``scheduler`` (an address such as tcp://host:8786, or a scheduler file written by
    ``dask scheduler --scheduler-file``), or to a LocalCluster of ``workers`` processes on this machine, closed on
    exit. Each local worker runs one task at a time with torch on ``threads`` cores (default: its share)."""
    from distributed import Client, LocalCluster

    if scheduler:
        try:
            if Path(scheduler).is_file():
                client = Client(scheduler_file=scheduler, timeout="30s")
            else:
                client = Client(scheduler, timeout="30s")
        except (OSError, TimeoutError, ValueError) as e:
            raise ProbeError(f"cannot reach the dask scheduler {scheduler!r}: {e}") from None
        with client:
            yield client
        return
    if workers < 1:
        raise ProbeError(f"workers {workers} must be a positive integer")
    threads = threads or max(1, (os.cpu_count() or 1) // workers)
    log = logging.getLogger("distributed")
    level = log.level
    try:
        with _workers_ignore_ctrl_c():
            cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0",
                                   env={THREADS: str(threads)})
        with cluster, Client(cluster) as client:
            try:
                yield client
            except KeyboardInterrupt:
                # Ctrl-C stops the workers mid-task; what the nannies and workers log while the cluster closes on
                # them is expected, not news (finished networks and epochs are on disk, and the same command
                # resumes). The workers ignore SIGINT, so they still answer.
                log.setLevel(logging.CRITICAL)
                with contextlib.suppress(Exception):
                    client.run(_quiet_logs)
                raise
    finally:
        log.setLevel(level)


@contextlib.contextmanager
def _workers_ignore_ctrl_c():
    """Start worker processes with SIGINT ignored (a started process inherits that, and Python then installs no
    KeyboardInterrupt handler): Ctrl-C in a terminal reaches the whole process group, and the workers should be
    stopped by this process closing the cluster, not each die in a traceback of their own."""
    if threading.current_thread() is not threading.main_thread():  # only the main thread may set handlers
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _quiet_logs() -> None:
    logging.getLogger("distributed").setLevel(logging.CRITICAL)


def _torch_threads() -> None:
    """Give torch the worker's share of the cores, from PROBE_TORCH_THREADS in the worker's environment (set by
    ``dask_client`` for a LocalCluster; set it yourself on the workers of other clusters)."""
    if os.environ.get(THREADS):
        torch.set_num_threads(int(os.environ[THREADS]))


@functools.lru_cache(maxsize=2)
def _arrays(data: DataSpec, cache_dir: str | None) -> ImageArrays:
    return load_dataset(data, Path(cache_dir) if cache_dir else None, progress=False)


@functools.lru_cache(maxsize=2)
def _task(data: DataSpec, classes: tuple[str, ...], mean: tuple[float, ...], std: tuple[float, ...],
          cache_dir: str | None, device: str) -> TaskTensors:
    """A task's tensors on this worker's device, kept for the next network of the same replicate."""
    task = task_data(_arrays(data, cache_dir), list(classes), data)
    return TaskTensors.from_task(task, list(mean), list(std), resolve_device(device))


def train_task(run_dir: str, spec_dict: dict, stats: tuple[list[float], list[float]], device: str,
               cache_dir: str | None, *parents: dict) -> dict:
    """Train one network on a worker (the body of every training task), its inputs normalized by the run's
    ``stats`` (mean, std). ``parents`` are the results of the tasks it depends on; when one of them did not
    finish, this network is reported blocked. A network that fails for reasons of its own is recorded failed
    here, as the local sweep does (retrying would fail the same way); other errors raise, for dask to retry."""
    spec = NetworkSpec.from_dict(spec_dict)
    stopped = next((p for p in parents if p["status"] != "done"), None)
    if stopped is not None:
        return {"id": spec.id, "status": "blocked", "needs": stopped["id"]}
    if network_state(Path(run_dir), spec)[0] == "done":  # finished earlier, or recomputed after a lost worker
        return {"id": spec.id, "status": "done", "trained": False}
    with _TRAINING:
        _torch_threads()
        data = _task(spec.data, spec.target_classes, *(tuple(v) for v in stats), cache_dir, device)
        outcome, detail = attempt(spec, data, Path(run_dir), resolve_device(device), False)
    if outcome == "trained":
        return {"id": spec.id, "status": "done", "trained": True, "test_acc": detail["test_acc"]}
    if outcome == "skipped":
        return {"id": spec.id, "status": "done", "trained": False}
    if outcome == "blocked":
        return {"id": spec.id, "status": "blocked", "needs": detail}
    return {"id": spec.id, "status": "failed", "error": detail}


def run_study_dask(client, run_dir: Path, study: Study, device: str = "auto", cache_dir: Path | None = None,
                   progress: bool = True, only: list[str] | None = None, extend: bool = False,
                   retries: int = 2, download: bool = False) -> SweepResult:
    """Train ``study`` into ``run_dir`` with one dask task per network (see the module's docstring).

    ``retries`` re-runs a task whose code raised (a worker that dies is handled by dask's own
    ``distributed.scheduler.allowed-failures``); a network that still fails is recorded failed and its dependents
    blocked, and the rest of the sweep finishes."""
    from distributed import as_completed

    check_device_name(device)
    run_dir = Path(run_dir).resolve()
    plan, arrays = plan_study(run_dir, study, cache_dir, download, extend, progress)
    stats = prepare_run_data(run_dir, arrays)
    resources = {GPU: 1} if any(GPU in w.get("resources", {}) for w in
                                client.scheduler_info()["workers"].values()) else None
    result = SweepResult([], [], {}, {})
    futures, submitted = {}, {}
    token = uuid.uuid4().hex[:8]
    cache = str(cache_dir) if cache_dir else None
    for planned in select_networks(plan, only):
        spec = planned.spec
        if not can_start(run_dir, plan, planned, result, underway=futures):
            continue
        parents = [futures[d] for d in planned.depends_on if d in futures]
        futures[spec.id] = client.submit(train_task, str(run_dir), spec.to_dict(), stats, device, cache, *parents,
                                         key=f"train-{spec.id.replace('/', '-')}-{token}", resources=resources,
                                         retries=retries, pure=False)
        submitted[spec.id] = planned
    ids = {f.key: nid for nid, f in futures.items()}
    bar = tqdm(total=len(futures), desc="sweep", unit="net", disable=not progress, dynamic_ncols=True)
    for future in as_completed(list(futures.values())):
        nid = ids[future.key]
        if future.status == "error":
            _record_error(run_dir, submitted[nid], futures, future, result)
        else:
            out = future.result()
            if out["status"] == "done":
                (result.trained if out["trained"] else result.skipped).append(nid)
            elif out["status"] == "failed":
                result.failed[nid] = out["error"]
            else:
                result.blocked[nid] = out["needs"]
        bar.update()
    bar.close()
    return result


def _record_error(run_dir: Path, planned: PlannedNetwork, futures: dict, future, result: SweepResult) -> None:
    """A task that ended in an exception: its own failure, or one it inherited from a network it depends on."""
    spec = planned.spec
    failed_parent = next((d for d in planned.depends_on if d in futures and futures[d].status == "error"), None)
    if failed_parent is not None:
        result.blocked[spec.id] = failed_parent
        return
    error = f"{type(future.exception()).__name__}: {future.exception()}"
    if network_state(run_dir, spec)[0] != "done":
        record_failure(run_dir, spec, error)
    result.failed[spec.id] = error


def extract_task(run_dir: str, spec_dict: dict, store: str, stats: dict, probe_set: ProbeSet, reduction: Reduction,
                 device: str, batch_size: int, cache_dir: str | None,
                 chunk_size: int | None) -> tuple[str, str | None]:
    """Extract one network on a worker into its own group of the shared store (``stats``: the run's data.json);
    returns :func:`probe.extract.extract_one`'s outcome and note."""
    _torch_threads()
    spec = NetworkSpec.from_dict(spec_dict)
    dev = resolve_device(device)
    return extract_one(Path(run_dir), spec, Path(store), _arrays(spec.data, cache_dir),
                       Normalize(stats["mean"], stats["std"], dev), probe_set, reduction, dev, batch_size, False,
                       chunk_size)


def extract_run_dask(client, run_dir: Path, store: Path | None = None, networks: list[str] | None = None,
                     probe_set: ProbeSet = ProbeSet(), reduction: Reduction = Reduction(), device: str = "auto",
                     batch_size: int = 256, cache_dir: Path | None = None, progress: bool = True,
                     chunk_size: int | None = None) -> dict:
    """``extract_run`` with one dask task per network; the store's metadata is consolidated once all are done."""
    from distributed import as_completed

    check_device_name(device)
    run_dir = Path(run_dir).resolve()
    store = check_store_path(Path(store or run_dir / STORE).resolve())
    _, specs, stats = extraction_specs(run_dir, networks, batch_size, chunk_size)
    result = start_result(store, [s.id for s in specs])  # before any worker writes into the hierarchy
    token = uuid.uuid4().hex[:8]
    cache = str(cache_dir) if cache_dir else None
    futures = {client.submit(extract_task, str(run_dir), s.to_dict(), str(store), stats, probe_set, reduction, device,
                             batch_size, cache, chunk_size, key=f"extract-{s.id.replace('/', '-')}-{token}",
                             pure=False): s.id for s in specs}
    for future in tqdm(as_completed(futures), total=len(futures), desc="extract", unit="net", disable=not progress,
                       dynamic_ncols=True):
        record(result, futures[future], *future.result())
    if store.exists():
        consolidate(store)
    return result

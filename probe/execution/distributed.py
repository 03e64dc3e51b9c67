"""Sweeps and extraction on dask.distributed: every network is one task, on any cluster dask can reach.

The plan and the handling of every outcome are the local executor's (:mod:`probe.execution.sweep`,
:mod:`probe.execution.extract`); only where networks run changes (:class:`probe.execution.executor.DaskExecutor`): a
network interrupted with its worker resumes from its last epoch checkpoint on whichever worker runs it next, and when
any worker declares a ``GPU`` resource every training task asks for one, so each network gets a GPU of its own.

Run directories and stores must be on storage that every worker sees under the same path (a local disk for a
LocalCluster, NFS or another shared file system on a cluster).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import threading
from pathlib import Path

from probe.errors import ProbeError
from probe.execution.executor import TASK_RETRIES, THREADS, DaskExecutor
from probe.execution.extract import extract_with
from probe.execution.extraction.images import ExtractionImages
from probe.execution.extraction.reduction import Reduction
from probe.execution.sweep import SweepResult, train_study
from probe.execution.train import check_device_name
from probe.planning.plan import Study
from probe.storage.run import Run


@contextlib.contextmanager
def dask_client(scheduler: str | None, workers: int = 2, threads: int | None = None):
    """A dask client: to ``scheduler`` (an address such as tcp://host:8786, or a scheduler file written by
    ``dask scheduler --scheduler-file``), or to a LocalCluster of ``workers`` processes on this machine, closed on
    exit. Each local worker runs one task at a time with torch on ``threads`` cores (default: its share)."""
    import dask
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
        # distributed starts its workers with MALLOC_TRIM_THRESHOLD_=65536, under which glibc hands every freed
        # activation buffer back to the kernel and faults it in again on the next step: measured on two cores, the
        # workers spent 39% of their time in the kernel (benchmarks/demo_profile.py); without it, 2%
        with _workers_ignore_ctrl_c(), dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_":
                                                        None}):
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


def run_study_dask(client, run_dir: Path, study: Study, device: str = "auto", cache_dir: Path | None = None,
                   progress: bool = True, only: list[str] | None = None, extend: bool = False,
                   retries: int = TASK_RETRIES, download: bool = False) -> SweepResult:
    """Train ``study`` into ``run_dir`` with one dask task per network (see the module's docstring).

    ``retries`` re-runs a task whose code raised (a worker that dies is handled by dask's own
    ``distributed.scheduler.allowed-failures``); a network that still fails is recorded failed and its dependents
    blocked, and the rest of the sweep finishes."""
    check_device_name(device)
    return train_study(DaskExecutor(client), Path(run_dir).resolve(), study, device, cache_dir, download, progress,
                       only, extend, retries)


def extract_run_dask(client, run_dir: Path, store: Path | None = None, networks: list[str] | None = None,
                     images: ExtractionImages = ExtractionImages(), reduction: Reduction = Reduction(),
                     device: str = "auto", batch_size: int = 256, cache_dir: Path | None = None, progress: bool = True,
                     chunk_size: int | None = None) -> dict:
    """``extract_run`` with one dask task per network; the store's metadata is consolidated once all are done."""
    check_device_name(device)
    run = Run(Path(run_dir).resolve())
    return extract_with(DaskExecutor(client), run, Path(store or run.store).resolve(), networks, images, reduction,
                        device, batch_size, cache_dir, progress, chunk_size, retries=TASK_RETRIES)

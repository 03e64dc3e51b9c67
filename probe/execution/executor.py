"""Where tasks run, behind one submit/gather interface: this process, or the workers of a dask cluster.

A sweep, an extraction and the representation views each submit one task per network (or comparison) and gather
the results as the tasks complete; what a result or an error means is the caller's to say, once for every executor.
A task's arguments may be futures of tasks submitted before it: it starts once they finished, with their results in
their place, and fails with their error when one of them failed, as dask does.
"""

from __future__ import annotations

import os
import sys
import uuid
from collections.abc import Callable, Iterable, Iterator
from typing import Any, Protocol

GPU = "GPU"  # the dask worker resource a task that asks for a GPU gets (workers declare it: --resources GPU=1)
# On dask, a task whose code raised runs again this many times (a worker's passing fault: a full scratch disk, a
# lost file handle), training and extraction alike; in this process a task runs once, its error the user's to see
TASK_RETRIES = 2
# What a task cancelled before it ran means (dask cancels what is pending when the client or cluster closes)
CANCELLED = "its task, cancelled when the dask client closed; rerun the same command to resume"
THREADS = "PROBE_TORCH_THREADS"  # torch threads per task on a dask worker (dask's nanny sets OMP_NUM_THREADS=1)


class Future(Protocol):
    """A submitted task (hashable: it may key a dict)."""

    @property
    def status(self) -> str:
        """``pending``, ``finished``, ``error`` or (dask) ``cancelled``: its result then raises CancelledError."""

    def result(self) -> Any:
        """The task's value, waiting for it; the task's error raises here."""

    def exception(self) -> BaseException | None:
        """The task's error, waiting for it; None when it finished."""


class Executor(Protocol):
    in_process: bool  # tasks run here: they may be given any object, and may show progress bars

    def submit(self, fn: Callable, *args, key: str, gpu: bool = False, retries: int = 0, **kwargs) -> Future:
        """Run ``fn(*args, **kwargs)`` (the future arguments replaced by their results) as a task named ``key`` for
        people (a dashboard, a log); one that raises runs again up to ``retries`` times; ``gpu``: it needs a GPU of
        its own where the workers have some."""

    def as_completed(self, futures: Iterable[Future]) -> Iterator[Future]:
        """The futures, each once its task ended."""

    def gather(self, futures: Iterable[Future]) -> list:
        """The tasks' values, in the order of ``futures``; the first error raises."""


class LocalFuture:
    """A task of a :class:`LocalExecutor`, run in this process when its result is first asked for."""

    def __init__(self, key: str, fn: Callable, args: tuple, kwargs: dict, retries: int):
        self.key = key
        self._call: tuple | None = (fn, args, kwargs, retries)
        self._value: Any = None
        self._error: Exception | None = None

    @property
    def status(self) -> str:
        if self._call is not None:
            return "pending"
        return "error" if self._error is not None else "finished"

    def result(self) -> Any:
        self._run()
        if self._error is not None:
            raise self._error
        return self._value

    def exception(self) -> Exception | None:
        self._run()
        return self._error

    def _run(self) -> None:
        """Run the task unless it ran. Only an Exception is the task's error: Ctrl-C (and any other BaseException)
        stops the caller, and the task stays pending."""
        if self._call is None:
            return
        fn, args, kwargs, retries = self._call
        try:
            args = tuple(a.result() if isinstance(a, LocalFuture) else a for a in args)
        except Exception as e:  # a task it depends on failed: so does this one, with that error
            self._call, self._error = None, e
            return
        for attempt in range(retries + 1):
            try:
                value = fn(*args, **kwargs)
            except Exception as e:
                if attempt == retries:
                    self._call, self._error = None, e
            else:
                self._call, self._value = None, value
                return


class LocalExecutor:
    """Runs every task in this process, one at a time in the order submitted, as results are asked for. Nothing is
    copied or pickled, so a cache of this process (a replicate's tensors on the device) serves all its tasks."""

    in_process = True

    def submit(self, fn: Callable, *args, key: str, gpu: bool = False, retries: int = 0, **kwargs) -> LocalFuture:
        return LocalFuture(key, fn, args, kwargs, retries)

    def as_completed(self, futures: Iterable[LocalFuture]) -> Iterator[LocalFuture]:
        for future in futures:
            future.exception()  # runs it
            yield future

    def gather(self, futures: Iterable[LocalFuture]) -> list:
        return [future.result() for future in futures]


class DaskExecutor:
    """Runs every task on the workers of a ``distributed.Client``, each as soon as the futures it takes finished.

    Arguments travel to the workers pickled, so tasks take plain values and paths that every worker sees under the
    same name (a local disk for a LocalCluster, a shared file system on a cluster). A task that asks for a GPU gets
    one of its own when the workers declare ``GPU`` resources; torch on a worker runs on PROBE_TORCH_THREADS threads
    when that is set in the worker's environment (``dask_client`` sets it for a LocalCluster)."""

    in_process = False

    def __init__(self, client):
        self.client = client
        self._gpus: bool | None = None

    def submit(self, fn: Callable, *args, key: str, gpu: bool = False, retries: int = 0, **kwargs):
        resources = {GPU: 1} if gpu and self._have_gpus() else None
        # a key of its own per submission: dask hands back a finished task's result for a key it still holds
        unique = f"{key.replace('/', '-')}-{uuid.uuid4().hex[:8]}"
        return self.client.submit(_on_worker, fn, *args, key=unique, resources=resources, retries=retries,
                                  pure=False, **kwargs)

    def as_completed(self, futures: Iterable) -> Iterator:
        from distributed import as_completed

        return iter(as_completed(list(futures)))

    def gather(self, futures: Iterable) -> list:
        return self.client.gather(list(futures))

    def _have_gpus(self) -> bool:
        if self._gpus is None:
            workers = self.client.scheduler_info()["workers"].values()
            self._gpus = any(GPU in w.get("resources", {}) for w in workers)
        return self._gpus


def _on_worker(fn: Callable, *args, **kwargs):
    """A task's body on a dask worker."""
    set_torch_threads()
    return fn(*args, **kwargs)


def set_torch_threads() -> None:
    """Give torch the worker's share of the cores, from PROBE_TORCH_THREADS in the worker's environment. Only where
    torch is loaded: unpickling a task that uses it imports it, and a task that does not need not pay for it."""
    torch = sys.modules.get("torch")
    if torch is not None and os.environ.get(THREADS):
        torch.set_num_threads(int(os.environ[THREADS]))

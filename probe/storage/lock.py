"""The lock a network is trained under: no two processes (two sweeps, two dask workers) ever train one network.

An flock lock belongs to the open file, so the kernel releases it when its process dies however it dies; a recorded
pid, by contrast, may be alive again in another process (PID 1 in a container, reuse after a reboot). So the lock
decides whether a network is running, and its running.json only says who holds it, for people.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
import socket
import time
from pathlib import Path

from probe.errors import ProbeError
from probe.storage.atomic import read_json, write_error, write_json
from probe.storage.run import NetworkFiles

# A process probing a lock (network_state) holds it for an instant; a trainer that meets such a probe retries this
# many times this many seconds apart before it concludes that another trainer holds the lock.
LOCK_TRIES, LOCK_WAIT = 10, 0.05


class LockUnsupported(ProbeError):
    """The run directory's file system cannot lock files: a fault of the run, not of one network."""


class NetworkBusy(ProbeError):
    """Another live process holds the network's lock: it is training the network now."""


@contextlib.contextmanager
def training_lock(files: NetworkFiles, network_id: str):
    """Hold the lock of the network (its folder created if need be) for the duration, or raise NetworkBusy.

    The lock file is never deleted: a process waiting on a deleted file would lock a file nobody else sees."""
    try:
        files.folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(files.lock, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as e:
        raise write_error(files.lock, e) from None
    try:
        if not _flock(fd, files.lock, fcntl.LOCK_EX, LOCK_TRIES):
            holder = lock_holder(files)
            raise NetworkBusy(f"{network_id} is being trained by another process" + (f" ({holder})" if holder else ""))
        yield
    finally:
        os.close(fd)  # releases the lock


def lock_is_held(files: NetworkFiles) -> bool:
    """Whether a live process holds the network's lock (is training it)."""
    try:
        fd = os.open(files.lock, os.O_RDONLY)  # a shared lock needs only reading (flock over NFS too)
    except FileNotFoundError:
        return False
    except OSError as e:  # another user's lock file, or an I/O error on a network file system
        raise ProbeError(f"cannot read the lock {str(files.lock)!r} ({e.strerror or e}): the run directory must "
                         "be readable by this user") from None
    try:
        return not _flock(fd, files.lock, fcntl.LOCK_SH, 1)
    finally:
        os.close(fd)


def _flock(fd: int, path: Path, mode: int, tries: int) -> bool:
    """Take the lock ``mode`` on ``fd`` without blocking, trying ``tries`` times: whether it was taken."""
    for attempt in range(tries):
        if attempt:
            time.sleep(LOCK_WAIT)
        try:
            fcntl.flock(fd, mode | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            continue
        except OSError as e:  # ENOLCK, EOPNOTSUPP...: the file system cannot lock files
            raise LockUnsupported(f"cannot lock {str(path)!r} ({e}): the run directory must be on a file system with "
                             "flock locks (NFS mounted without 'nolock', Lustre with '-o flock'), or a local "
                             "disk") from None
    return False


def note_holder(files: NetworkFiles) -> None:
    """Write who holds the network's lock (this process) into its running.json."""
    write_json(files.running, {"pid": os.getpid(), "host": socket.gethostname(), "started": time.time()})


def lock_holder(files: NetworkFiles) -> str:
    """``pid N on HOST`` from the network's running.json, or nothing when it cannot be read."""
    try:
        owner = read_json(files.running)
        return f"pid {owner['pid']} on {owner['host']}"
    except (OSError, ValueError, KeyError, TypeError):
        return ""

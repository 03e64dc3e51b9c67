"""Atomic file writes: write beside the target, then rename, so a killed process never leaves half a file."""

from __future__ import annotations

import errno
import glob
import json
import os
import tempfile
import threading
from pathlib import Path
from typing import Any, Callable

from safetensors import SafetensorError

from probe.errors import ProbeError

_UMASK_LOCK = threading.Lock()
TMP_SUFFIX = ".tmp"  # a temporary file of ``NAME`` is ``.NAME.<random>.tmp``, beside it


class WriteError(ProbeError):
    """A file could not be written (disk full, no permission): a fault of the machine, not of the data written."""


# What to do about a write the file system refused, by its errno (anything else: the two commonest causes)
_FIXES = {errno.ENOSPC: "free space", errno.EDQUOT: "free space (the disk quota is exceeded)",
          errno.EACCES: "fix the permissions", errno.EPERM: "fix the permissions",
          errno.EROFS: "copy the run directory to a writable file system",
          errno.ELOOP: "remove the symbolic link that points back on itself",
          errno.ENAMETOOLONG: "use a shorter path"}


def write_error(path: str | os.PathLike, error: Exception) -> WriteError:
    fix = _FIXES.get(getattr(error, "errno", None), "free space or fix the permissions")
    return WriteError(f"cannot write {str(path)!r} ({error}); nothing was half-written: {fix}, then rerun the "
                      "command, which resumes where it stopped")


def write_atomic(path: str | os.PathLike, write: Callable[[str], None]) -> None:
    """Call ``write(tmp_path)`` on a temporary path in the target's folder, then rename it onto ``path``.

    The file gets the mode any new file would (0o666 less the umask), not mkstemp's private 0o600. A write that
    fails on the file system (disk full, no permission) is a :class:`WriteError` naming ``path``; the target keeps
    its previous content and no temporary file is left. The file's data reach the disk before the rename and the
    rename before this returns (both fsynced), so that after a power loss a file written after another (weights,
    then the metrics that say they are done) is never there without it."""
    path = Path(path)
    tmp = None
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=_tmp_prefix(path), suffix=TMP_SUFFIX, dir=path.parent)
        os.close(fd)
        write(tmp)
        os.chmod(tmp, 0o666 & ~_umask())  # after writing: a writer may replace the file (safetensors does)
        _fsync(tmp, os.O_RDONLY)
        os.replace(tmp, path)
        _fsync(path.parent, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))  # the rename is an entry of the folder
    except (OSError, SafetensorError) as e:
        _discard(tmp)
        raise write_error(path, e) from None
    except BaseException:
        _discard(tmp)
        raise


def _tmp_prefix(path: Path) -> str:
    return f".{path.name}."


def leftover_temporaries(path: str | os.PathLike) -> list[Path]:
    """The temporary files that writes of ``path`` left beside it: a process killed between creating one and its
    rename leaves it for good (nothing else ever names it). Only the caller knows that no write of ``path`` is under
    way (it holds the lock of whatever writes it), so only it may remove them."""
    path = Path(path)
    return sorted(p for p in path.parent.glob(f"{glob.escape(_tmp_prefix(path))}*{TMP_SUFFIX}") if p.is_file())


def remove_leftover_temporaries(path: str | os.PathLike) -> None:
    """Remove :func:`leftover_temporaries` of ``path``; one that cannot be removed is a :class:`WriteError`."""
    for tmp in leftover_temporaries(path):
        try:
            tmp.unlink(missing_ok=True)
        except OSError as e:
            raise write_error(tmp, e) from None


def _fsync(path: str | os.PathLike, flags: int) -> None:
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _discard(tmp: str | None) -> None:
    if tmp is not None and os.path.exists(tmp):
        os.unlink(tmp)


def _umask() -> int:
    """The process's umask. os.umask can only read it by setting it, which races with threads creating files, so
    it is read from /proc where there is one (Linux), and otherwise set to the strictest mask for that instant."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    with _UMASK_LOCK:
        mask = os.umask(0o077)
        os.umask(mask)
    return mask


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as indented JSON, atomically."""
    text = json.dumps(obj, indent=2, sort_keys=False) + "\n"

    def write(tmp: str) -> None:
        with open(tmp, "w") as f:
            f.write(text)

    write_atomic(path, write)


def read_json(path: str | os.PathLike) -> Any:
    with open(path) as f:
        return json.load(f)


def read_json_file(path: str | os.PathLike, fix: str) -> Any:
    """:func:`read_json`, except that a file that cannot be read or parsed is a one-line ProbeError naming it and
    ending in ``fix`` (what to do about it)."""
    try:
        return read_json(path)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ProbeError(f"cannot read {str(path)!r} ({e}); {fix}") from None

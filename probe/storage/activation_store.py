"""The activation store's layout and integrity: zarr groups that are whole or not there, one writer at a time.

A network's group is written under the store's ``.probe/partial/`` folder, which zarr does not see (it has no
zarr.json), and renamed into place only once its last batch is in and every variable holds every sample; meanwhile
its place holds an empty group marked incomplete. A group records its layers and its number of samples in its attrs,
and its manifest (every array's shape, dtype, dims and a CRC-32 of each chunk file) goes to ``.probe/manifests/``:
outside the attrs, which would otherwise differ between two extractions of the same activations chunked differently.
:func:`verify_group` checks both before a group is skipped as done or analyzed; a group that fails is written again.
The root's consolidated metadata is dropped before any group is replaced, and rebuilt at the end of an extraction.

Several processes (two ``probe extract``, dask workers) may extract into one store at once: a group is written under
its flock (``.probe/locks/groups/``), and what the store shares (the root's and the hierarchy's metadata, the settings
record) changes only under the store's (``.probe/locks/store.lock``). The settings a store was extracted with (what
changes the stored values: the probe set, the test images' cap per class, the spatial and token reductions, the seed,
the dtype; and the batch and chunk sizes, for a rewrite to repeat the same computation) are recorded in
``.probe/settings.json`` by its first extraction (:mod:`probe.storage.store_settings`).

A group lists its cut layers in network order in its ``layers`` attr (a JSON list; ``logits`` follows them), and the
root's consolidated metadata lists every group's variables in that order, so that a reader opening the store through
it (``xr.open_datatree(store, engine="zarr")``) walks ``data_vars`` from the first layer to the logits.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import sys
import threading
import warnings
import zlib
from pathlib import Path
from urllib.parse import quote

import zarr

from probe.architectures.registry import declared_layers
from probe.errors import ProbeError
from probe.specs.spec import NetworkSpec
from probe.storage.atomic import write_error, write_json
from probe.storage.lock import LockUnsupported

PROBE_DIR = ".probe"  # inside the store (one file system, copied with it) but outside zarr's hierarchy
META = "zarr.json"
ARRAY_KEYS = ("shape", "data_type", "dimension_names")  # what a manifest records of each array's metadata
_HELD = threading.local()  # the locks this thread holds, by path
SAMPLES = "n_samples"  # a group's attr: how many samples every variable of it holds


class InconsistentGroup(Exception):
    """A written group whose variables do not all hold every sample: never marked complete. Not a ProbeError: it is
    that network's failure (the others are extracted all the same), and a rerun writes it again."""


def scratch(store: Path, network_id: str) -> Path:
    """Where a group is written before it is renamed into place: a folder of its own, which zarr (and with it xarray
    and consolidation) never lists as a group."""
    return store / PROBE_DIR / "partial" / quote(network_id, safe="")


def _manifest_path(store: Path, network_id: str) -> Path:
    return Path(store) / PROBE_DIR / "manifests" / f"{quote(network_id, safe='')}.json"


def _lock_path(store: Path, network_id: str | None) -> Path:
    locks = Path(store) / PROBE_DIR / "locks"
    return locks / "store.lock" if network_id is None else locks / "groups" / f"{quote(network_id, safe='')}.lock"


@contextlib.contextmanager
def _locked(path: Path):
    """Hold an exclusive flock on ``path`` for the duration, waiting for whoever holds it. An flock belongs to the
    open file, so the kernel releases it when its process dies, however it dies; the file is never deleted (a
    process waiting on a deleted file would lock a file nobody else sees). A thread that holds it already goes on
    (a second flock of its own, on another open file, would wait for itself forever)."""
    path = Path(path).resolve()  # one lock, however the store was named
    if not hasattr(_HELD, "paths"):
        _HELD.paths = set()
    held = _HELD.paths
    if path in held:
        yield
        return
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
    except OSError as e:
        raise write_error(path, e) from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError as e:  # ENOLCK, EOPNOTSUPP...: the file system cannot lock files
            raise LockUnsupported(f"cannot lock {str(path)!r} ({e}): the activation store must be on a file system "
                                  "with flock locks (NFS mounted without 'nolock', Lustre with '-o flock'), or a "
                                  "local disk") from None
        held.add(path)
        try:
            yield
        finally:
            held.discard(path)
    finally:
        os.close(fd)  # releases the lock


def group_lock(store: Path, network_id: str):
    """The lock a network's group is checked and written under: two processes never write one group at once, and
    the second to come finds the first's group whole. Take it before the store's lock, never inside it."""
    return _locked(_lock_path(store, network_id))


def store_lock(store: Path):
    """The lock over what the store's groups share: the root's and the hierarchy's metadata, and the settings
    record. Held for moments, never while a group is computed."""
    return _locked(_lock_path(store, None))


def make_way(store: Path, network_id: str, attrs: dict) -> None:
    """Prepare the place of a new group (its group lock held): the hierarchy above it whole, the root's consolidated
    metadata dropped (so that a kill from here on never leaves it describing a group that is gone), the old group
    (stale or damaged) moved aside in one step and deleted there, and in its place an empty group with ``attrs``,
    marked incomplete."""
    final, work = store / network_id, scratch(store, network_id)
    trash = work.with_name(work.name + ".old")
    for leftover in (work, trash):  # of an interrupted run: the group lock makes this process its only writer
        shutil.rmtree(leftover, ignore_errors=True)
    with store_lock(store):
        _ensure_hierarchy(store, [network_id])
        drop_consolidated(store)
        if final.exists():
            trash.parent.mkdir(parents=True, exist_ok=True)
            final.rename(trash)
        write_json(final / META, {"zarr_format": 3, "node_type": "group", "attributes": attrs})
        _manifest_path(store, network_id).unlink(missing_ok=True)
    shutil.rmtree(trash, ignore_errors=True)


def move_into_place(store: Path, network_id: str, work: Path) -> None:
    """Mark the group written at ``work`` complete, record its manifest, and rename it onto its empty placeholder
    (its group lock held): readers see the placeholder or the whole group, never part of one. A group whose
    variables do not all hold the samples its attrs promise is never marked: :class:`InconsistentGroup`."""
    manifest = _manifest(work)
    attrs = _attributes(work)
    problem = _samples_problem(manifest, attrs.get(SAMPLES))
    if problem:
        raise InconsistentGroup(f"{network_id} was left incomplete: {problem}; the next 'probe extract' writes it "
                                "again")
    zarr.open_group(str(work), mode="r+").attrs["complete"] = True
    write_json(_manifest_path(store, network_id), manifest)
    final = store / network_id
    with store_lock(store):  # consolidated metadata written meanwhile would describe the placeholder: drop it
        _ensure_hierarchy(store, [network_id])
        drop_consolidated(store)
        shutil.rmtree(final, ignore_errors=True)
        work.rename(final)


def _samples_problem(manifest: dict, expected: int | None) -> str | None:
    """What is wrong with the number of samples of the arrays of ``manifest`` (those with a ``sample`` dim), or
    None when they all hold ``expected`` (when recorded; the same number when not)."""
    sizes = {}
    for name, entry in manifest.items():
        dims, shape = entry.get("dimension_names") or [], entry.get("shape") or []
        if "sample" in dims and len(shape) == len(dims):
            sizes[name] = shape[dims.index("sample")]
    if expected is None and sizes:
        expected = max(set(sizes.values()), key=list(sizes.values()).count)  # what most of them hold
    for name, n in sizes.items():
        if n != expected:
            return f"{name} holds {n} samples, where every variable of the group should hold {expected}"
    return None


def _manifest(group: Path) -> dict:
    """Each array of the group at ``group``: its shape, dtype and dims as its metadata says, and the CRC-32 of each
    of its chunk files (by path within the array), for :func:`verify_group` to tell a whole group from a damaged one."""
    out = {}
    for array in sorted(p for p in group.iterdir() if p.is_dir()):
        meta = json.loads((array / META).read_bytes())
        chunks = {f.relative_to(array).as_posix(): _crc32(f) for f in sorted(array.rglob("*"))
                  if f.is_file() and f != array / META}
        out[array.name] = {**{k: meta.get(k) for k in ARRAY_KEYS}, "chunks": chunks}
    return out


def _crc32(path: Path) -> int:
    crc = 0
    with open(path, "rb") as f:
        while block := f.read(1 << 20):  # a chunk of whole maps can be large: read it piecewise
            crc = zlib.crc32(block, crc)
    return crc


class _Damage(Exception):
    """What :func:`verify_group` found wrong, in words."""


def verify_group(store: Path, network_id: str, expected_layers: list[str] | None = None) -> str | None:
    """What is wrong with the group ``network_id`` of ``store``, in one line, or None when it is complete and whole:
    marked complete; recording ``expected_layers`` (default: see :func:`_spec_layers`), each of them
    and ``logits`` in its manifest; every array of the manifest with a ``sample`` dim holding the group's number of
    samples; every array of the manifest there with the recorded shape, dtype and dims; and every chunk file there
    with the recorded CRC-32. Reads every chunk file once."""
    group = Path(store) / network_id
    try:
        attrs = _attributes(group)
        if attrs.get("complete") is not True:
            return "it is incomplete: an extraction of it was interrupted (or is under way)"
        recorded, manifest = _layers_attr(attrs), _read_manifest(store, network_id)
        expected = _spec_layers(attrs) if expected_layers is None else list(expected_layers)
        if recorded != expected:
            return f"it holds layers {', '.join(recorded)}, where its spec has {', '.join(expected)}"
        data_vars = [*expected, "logits"]
        lost = [name for name in data_vars if name not in manifest]
        if lost:
            return f"layer {lost[0]} is missing from its manifest"
        problem = _samples_problem(manifest, attrs.get(SAMPLES))
        if problem:
            return f"its manifest is inconsistent: {problem}"
        for name, entry in manifest.items():
            _check_array(group / name, entry, f"layer {name}" if name in data_vars else f"coordinate {name}")
    except _Damage as e:
        return str(e)
    return None


def _node(path: Path, kind: str) -> dict:
    """The zarr.json of the node at ``path``, checked to describe a zarr ``kind`` (group or array)."""
    meta = path / META
    try:
        node = json.loads(meta.read_bytes())
    except FileNotFoundError:
        raise _Damage(f"its metadata file {meta} is missing") from None
    except (OSError, ValueError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise _Damage(f"its metadata file {meta} is unreadable ({e})") from None
    if not isinstance(node, dict) or node.get("node_type") != kind:
        raise _Damage(f"its metadata file {meta} does not describe a zarr {kind}")
    return node


def _layers_attr(attrs: dict) -> list:
    try:
        layers = json.loads(attrs["layers"])
    except KeyError:
        raise _Damage("it records no layers (it was written by an older probe)") from None
    except (TypeError, ValueError):
        raise _Damage("its layers attribute is not JSON") from None
    if not isinstance(layers, list):
        raise _Damage("its layers attribute is not a JSON list")
    return layers


def _read_manifest(store: Path, network_id: str) -> dict:
    path = _manifest_path(store, network_id)
    try:
        manifest = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise _Damage(f"its manifest {path} is missing (or it was written by an older probe)") from None
    except (OSError, ValueError) as e:
        raise _Damage(f"its manifest {path} is unreadable ({e})") from None
    if not isinstance(manifest, dict) or not all(isinstance(e, dict) for e in manifest.values()):
        raise _Damage(f"its manifest {path} is not a JSON object of arrays")
    return manifest


def _spec_layers(attrs: dict) -> list[str]:
    """The cut points of the architecture the group's recorded spec names, as the registry declares them; where it
    declares none (an architecture this installation lacks, an import path, a spec cut elsewhere), the layers the
    group records (there is nothing else to hold them to)."""
    try:
        arch = NetworkSpec.from_dict(json.loads(attrs["spec"])).arch
    except (KeyError, TypeError, ValueError) as e:  # ProbeError is a ValueError
        raise _Damage(f"its recorded spec is unreadable ({e})") from None
    layers = declared_layers(arch)
    return list(layers[:-1]) if layers else _layers_attr(attrs)


def _check_array(array: Path, entry: dict, label: str) -> None:
    """Raise _Damage (prefixed with ``label``) unless the array at ``array`` is as its manifest ``entry`` records."""
    try:
        meta = _node(array, "array")
        for key in ARRAY_KEYS:
            if meta.get(key) != entry.get(key):
                raise _Damage(f"its {key} is {meta.get(key)}, where its manifest recorded {entry.get(key)}")
        chunks = entry.get("chunks")
        if not isinstance(chunks, dict):
            raise _Damage("its manifest entry lists no chunk files")
        for key, crc in chunks.items():
            chunk = array / key
            try:
                whole = _crc32(chunk) == crc
            except FileNotFoundError:
                raise _Damage(f"chunk file {chunk} is missing") from None
            except OSError as e:
                raise _Damage(f"chunk file {chunk} is unreadable ({e})") from None
            if not whole:
                raise _Damage(f"chunk file {chunk} does not match the checksum recorded when it was written")
    except _Damage as e:
        raise _Damage(f"{label}: {e}") from None


def _attributes(group: Path) -> dict:
    return _node(group, "group").get("attributes") or {}


def group_attrs(store: Path, network_id: str) -> dict | None:
    """The attrs of a group, or None when it is missing or its metadata is unreadable."""
    try:
        return _attributes(Path(store) / network_id)
    except _Damage:
        return None


def group_is_complete(store: Path, network_id: str) -> bool:
    """Whether a group was written to its end (whether it is also whole is :func:`verify_group`'s question)."""
    return (group_attrs(store, network_id) or {}).get("complete") is True


def ensure_hierarchy(store: Path, network_ids: list[str]) -> dict[str, str]:
    """Write the zarr.json of the root and of every group above ``network_ids`` (``random-s0``, ...) where it is
    missing or unreadable. They hold no data (the root's consolidated metadata is rebuilt by :func:`consolidate`), so
    writing them anew loses nothing. Returns what was wrong with those of them that held something, by node path."""
    with store_lock(store):
        return _ensure_hierarchy(store, network_ids)


def _ensure_hierarchy(store: Path, network_ids: list[str]) -> dict[str, str]:
    """:func:`ensure_hierarchy`, the store's lock held."""
    nodes = sorted({"/".join(nid.split("/")[:depth]) for nid in network_ids for depth in range(nid.count("/") + 1)})
    repaired = {}
    for node in nodes:
        path = store / node
        try:
            _node(path, "group")
        except _Damage as e:
            # not merely a store (or group) yet to be created: the store's own .probe folder is not zarr's
            if path.is_dir() and any(not p.name.startswith(".") for p in path.iterdir()):
                repaired[node or "/"] = str(e)
            write_json(path / META, {"zarr_format": 3, "node_type": "group", "attributes": {}})
    return repaired


def drop_consolidated(store: Path) -> None:
    """Remove the consolidated metadata from the root's zarr.json (readers then list the groups themselves); in an
    activation store, under its lock."""
    try:
        root = json.loads((store / META).read_bytes())
    except (OSError, ValueError):  # no root, or a damaged one: nothing consolidated to drop
        return
    if root.pop("consolidated_metadata", None) is not None:
        write_json(store / META, root)


def consolidate(store: Path) -> None:
    """Consolidate the store's metadata so ``xr.open_datatree(store, engine="zarr")`` reads it in one request. An
    activation store is consolidated under its lock (:func:`store_lock`), so that no group is replaced meanwhile.

    A group whose metadata cannot be read (damaged, and not written anew: its weights are gone, or it was not
    among the networks asked for) makes zarr fail; the store is then left without consolidated metadata, and
    says why in a warning: readers list the groups themselves, and :func:`verify_group` names the damaged one.
    A root that cannot be written (a full disk) is a :class:`~probe.storage.atomic.WriteError` naming it."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zarr notes that consolidated metadata is an extension of Zarr v3
        try:
            zarr.consolidate_metadata(str(store))
        except OSError as e:  # zarr writes the root atomically: it is left as it was
            raise write_error(store / META, e) from None
        except (ValueError, TypeError, KeyError) as e:  # JSONDecodeError and zarr's metadata errors are ValueErrors
            failure = e
        else:
            _layer_order(Path(store))
            return
        drop_consolidated(store)
    warnings.warn(f"left {store} without consolidated metadata: a group's metadata is unreadable ({failure})",
                  stacklevel=2)


def _layer_order(store: Path) -> None:
    """List each network group's variables in the root's consolidated metadata in network order (its ``layers``
    attr, then ``logits``; its coordinates after them), where zarr lists them alphabetically (``features_11`` before
    ``features_3``, ``layer1`` before ``stem``): xarray makes a group's ``data_vars`` in the order listed there.
    Every other entry keeps zarr's order, and the siblings of a node stay together, as zarr reads them."""
    try:
        root = json.loads((store / META).read_bytes())
        metadata = root["consolidated_metadata"]["metadata"]
        paths = list(metadata)
    except (OSError, ValueError, KeyError, TypeError):
        return
    ranks = {}
    for path, node in metadata.items():
        try:
            layers = json.loads(node["attributes"]["layers"]) if node.get("node_type") == "group" else None
        except (KeyError, TypeError, ValueError, AttributeError):
            continue
        if isinstance(layers, list) and all(isinstance(name, str) for name in layers):
            ranks[path] = {name: i for i, name in enumerate([*layers, "logits"])}
    first = {}  # where zarr lists a node's first child: its children stay there, together
    for i, path in enumerate(paths):
        first.setdefault(path.rpartition("/")[0], i)

    def key(item: tuple[int, str]) -> tuple:
        i, path = item
        parent, _, name = path.rpartition("/")
        rank = ranks.get(parent, {})
        return path.count("/"), first[parent], rank.get(name, len(rank)), i

    ordered = [path for _, path in sorted(enumerate(paths), key=key)]
    if ordered != paths:
        root["consolidated_metadata"]["metadata"] = {path: metadata[path] for path in ordered}
        try:
            write_json(store / META, root)
        except OSError as e:
            raise write_error(store / META, e) from None


def check_store_path(store: Path) -> Path:
    """``store``, refused when it is a regular file: a zarr store is a directory."""
    if store.exists() and not store.is_dir():
        raise ProbeError(f"the store path {str(store)!r} is a file, not a zarr store (a directory); remove it or "
                         "write the store elsewhere (--out)")
    return store


def network_ids(store: Path, node: str = "") -> list[str]:
    """The network groups at and below ``node`` whose metadata is readable (a group recording a network is a leaf;
    folders starting with a dot are not zarr's)."""
    try:
        attrs = _attributes(store / node)
    except _Damage:
        return []
    if node and "network" in attrs:
        return [node]
    children = sorted(p.name for p in (store / node).iterdir() if p.is_dir() and not p.name.startswith("."))
    return [nid for child in children for nid in network_ids(store, f"{node}/{child}" if node else child)]


def token_policies(store: Path) -> dict[str, str]:
    """What each token layer of the store's networks keeps of its tokens (cls, mean, all, sample:K), as the first
    complete group records it ({} for a store without token layers, or without groups): what a report names."""
    for network_id in network_ids(Path(store)):
        attrs = group_attrs(store, network_id) or {}
        if attrs.get("complete") is True and attrs.get("tokens"):
            try:
                return dict(json.loads(attrs["tokens"]))
            except (TypeError, ValueError):
                return {}
    return {}


def close_zarr_loop(timeout: float = 10.0) -> None:
    """Stop zarr's event-loop thread and close its loop, waiting for it: zarr's own exit handler waits 0.2 s, and a
    loop still finishing a write then fails to close ('Cannot close a running event loop') after a command that
    succeeded. Does nothing where zarr was not used."""
    sync = sys.modules.get("zarr.core.sync")
    if sync is None or sync.loop[0] is None:
        return
    loop, thread = sync.loop[0], sync.iothread[0]
    if loop.is_running():
        loop.call_soon_threadsafe(loop.stop)
        if thread is not None:
            thread.join(timeout)
    if not loop.is_running():
        sync.cleanup_resources()  # the loop stopped: closes it and its executor, and clears zarr's references

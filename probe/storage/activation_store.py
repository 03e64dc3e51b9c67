"""The activation store's layout and integrity: zarr groups that are whole or not there.

A network's group is written under the store's ``.probe/partial/`` folder, which zarr does not see (it has no
zarr.json), and renamed into place only once its last batch is in; meanwhile its place holds an empty group marked
incomplete. A group records its layers in its attrs, and its manifest (every array's shape, dtype, dims and a CRC-32
of each chunk file) goes to ``.probe/manifests/``: outside the attrs, which would otherwise differ between two
extractions of the same activations chunked differently. :func:`verify_group` checks both before a group is skipped
as done or analyzed; a group that fails is written again. The root's consolidated metadata is dropped before any
group is replaced, and rebuilt at the end of an extraction.
"""

from __future__ import annotations

import json
import shutil
import warnings
import zlib
from pathlib import Path
from urllib.parse import quote

import zarr

from probe.architectures.registry import declared_layers
from probe.errors import ProbeError
from probe.planning.spec import NetworkSpec
from probe.storage.atomic import write_json

PROBE_DIR = ".probe"  # inside the store (one file system, copied with it) but outside zarr's hierarchy
META = "zarr.json"
ARRAY_KEYS = ("shape", "data_type", "dimension_names")  # what a manifest records of each array's metadata


def scratch(store: Path, network_id: str) -> Path:
    """Where a group is written before it is renamed into place: a folder of its own, which zarr (and with it xarray
    and consolidation) never lists as a group."""
    return store / PROBE_DIR / "partial" / quote(network_id, safe="")


def _manifest_path(store: Path, network_id: str) -> Path:
    return Path(store) / PROBE_DIR / "manifests" / f"{quote(network_id, safe='')}.json"


def make_way(store: Path, network_id: str, attrs: dict) -> None:
    """Prepare the place of a new group: the hierarchy above it whole, the root's consolidated metadata dropped (so
    that a kill from here on never leaves it describing a group that is gone), the old group (stale or damaged)
    moved aside in one step and deleted there, and in its place an empty group with ``attrs``, marked incomplete."""
    ensure_hierarchy(store, [network_id])
    drop_consolidated(store)
    final, work = store / network_id, scratch(store, network_id)
    trash = work.with_name(work.name + ".old")
    for leftover in (work, trash):  # of an interrupted run: each network has one writer at a time
        shutil.rmtree(leftover, ignore_errors=True)
    if final.exists():
        trash.parent.mkdir(parents=True, exist_ok=True)
        final.rename(trash)
        shutil.rmtree(trash)
    write_json(final / META, {"zarr_format": 3, "node_type": "group", "attributes": attrs})
    _manifest_path(store, network_id).unlink(missing_ok=True)


def move_into_place(store: Path, network_id: str, work: Path) -> None:
    """Mark the group written at ``work`` complete, record its manifest, and rename it onto its empty placeholder:
    readers see the placeholder or the whole group, never part of one."""
    zarr.open_group(str(work), mode="r+").attrs["complete"] = True
    write_json(_manifest_path(store, network_id), _manifest(work))
    final = store / network_id
    shutil.rmtree(final, ignore_errors=True)
    work.rename(final)


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
    and ``logits`` in its manifest; every array of the manifest there with the recorded shape, dtype and dims; and
    every chunk file there with the recorded CRC-32. Reads every chunk file once."""
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
    nodes = sorted({"/".join(nid.split("/")[:depth]) for nid in network_ids for depth in range(nid.count("/") + 1)})
    repaired = {}
    for node in nodes:
        path = store / node
        try:
            _node(path, "group")
        except _Damage as e:
            if path.is_dir() and any(path.iterdir()):  # not merely a store (or group) yet to be created
                repaired[node or "/"] = str(e)
            write_json(path / META, {"zarr_format": 3, "node_type": "group", "attributes": {}})
    return repaired


def drop_consolidated(store: Path) -> None:
    """Remove the consolidated metadata from the root's zarr.json (readers then list the groups themselves)."""
    root = json.loads((store / META).read_bytes())
    if root.pop("consolidated_metadata", None) is not None:
        write_json(store / META, root)


def consolidate(store: Path) -> None:
    """Consolidate the store's metadata so ``xr.open_datatree(store, engine="zarr")`` reads it in one request.

    A group whose metadata cannot be read (damaged, and not written anew: its weights are gone, or it was not
    among the networks asked for) makes zarr fail; the store is then left without consolidated metadata, and
    says why in a warning: readers list the groups themselves, and :func:`verify_group` names the damaged one."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zarr notes that consolidated metadata is an extension of Zarr v3
        try:
            zarr.consolidate_metadata(str(store))
        except (ValueError, TypeError, KeyError) as e:  # JSONDecodeError and zarr's metadata errors are ValueErrors
            failure = e
        else:
            return
    drop_consolidated(store)
    warnings.warn(f"left {store} without consolidated metadata: a group's metadata is unreadable ({failure})",
                  stacklevel=2)


def check_store_path(store: Path) -> Path:
    """``store``, refused when it is a regular file: a zarr store is a directory."""
    if store.exists() and not store.is_dir():
        raise ProbeError(f"the store path {str(store)!r} is a file, not a zarr store (a directory); remove it or "
                         "write the store elsewhere (--out)")
    return store

"""Opening a run's activation store from a script: the tree, its networks, one layer of several networks aligned.

    from probe.analysis.stores import open_store, layer_arrays
    tree = open_store("runs/demo")
    fc7 = layer_arrays(tree, "fc7", ["random-s0/init0/baseB", "random-s0/init0/A3B"])

The tree holds the groups that verify (:func:`probe.storage.activation_store.verify_group`) and were extracted with
the store's settings, found from each group's own metadata rather than the root's consolidated copy, so that one
damaged, half-written or otherwise extracted group leaves the others readable.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import xarray as xr

from probe.errors import ProbeError
from probe.planning.plan import PlannedNetwork
from probe.storage.activation_store import META, group_attrs, verify_group
from probe.storage.checkpoint import weights_fingerprint
from probe.storage.run import Run
from probe.storage.store_settings import (
    describe_settings,
    disagreement,
    group_settings,
    recorded_settings,
    same_settings,
)


def store_path(path: str | Path) -> Path:
    """The activation store at ``path``, or the one inside the run directory ``path``, checked to be a directory."""
    path = Path(path)
    if Run(path).store.exists():
        path = Run(path).store
    if not path.exists():
        raise ProbeError(f"no activation store at {str(path)!r} (write one with 'probe extract RUN')")
    if not path.is_dir():
        raise ProbeError(f"{str(path)!r} is a file, not an activation store (a directory written by 'probe extract')")
    return path


def repair_command(store: Path | None, run_dir: str | Path | None = None, network_id: str | None = None,
                   options: str = "") -> str:
    """The ``probe extract`` command that rewrites what is damaged in ``store`` (one network of it, when given;
    no ``--out`` when the store is unknown or the run's own), with the store's settings (those it records) unless
    ``options`` gives others."""
    own = store is None or (run_dir is not None and store.resolve() == Run(run_dir).store.resolve())
    out = "" if own else f" --out {store}"
    return (f"'probe extract {run_dir or 'RUN'}{out}" + (f" {options}" if options else "")
            + (f" --networks {network_id}'" if network_id else "'"))


def scan_store(path: str | Path, run_dir: str | Path | None = None,
               planned: list[PlannedNetwork] | None = None) -> tuple[Path, dict[str, str | None]]:
    """The store at ``path`` and each of its network groups with what is wrong with it (None: it verifies, and was
    extracted with the settings the store records), the layers of a network of ``planned`` checked against its
    plan, those of any other against the spec it records.

    Raises a ProbeError when the metadata of the root or of a group above the networks is missing or unreadable:
    without it xarray cannot open the store at all (``run_dir`` goes into the command that repairs it)."""
    store = store_path(path)
    layers = {p.spec.id: list(p.cut_points) for p in planned or []}
    found: dict[str, str | None] = {}
    recorded = recorded_settings(store)
    for node in _network_groups(store, run_dir):
        found[node] = verify_group(store, node, layers.get(node)) or _other_settings(store, node, recorded)
    return store, found


def _other_settings(store: Path, network_id: str, recorded: dict | None) -> str | None:
    """How the settings of a (whole) group differ from those the store records, or None."""
    settings = group_settings(group_attrs(store, network_id))
    if recorded is None or (settings is not None and same_settings(settings, recorded)):
        return None
    return (f"it was extracted with {describe_settings(settings) if settings else 'settings it does not record'}, "
            f"where the store's settings are {describe_settings(recorded)}")


def _network_groups(store: Path, run_dir, node: str = "") -> list[str]:
    """The paths of the network groups at and below ``node``: groups that record a network, and folders of arrays
    whose own metadata is lost (reported by verify_group). Folders starting with a dot are not zarr's."""
    meta = _metadata(store / node)
    if meta is None or meta.get("node_type") != "group":
        if node and any((_metadata(child) or {}).get("node_type") == "array" for child in _folders(store / node)):
            return [node]  # a network group whose zarr.json is lost or damaged: its arrays are below it
        where = "root" if not node else f"group {node!r}"
        raise ProbeError(f"the {where} metadata {str(store / node / META)!r} of the activation store is missing or "
                         f"unreadable; {repair_command(store, run_dir)} writes it anew")
    if "network" in (meta.get("attributes") or {}):
        return [node]
    children = [f"{node}/{child.name}" if node else child.name for child in _folders(store / node)]
    return [found for child in children if _is_node(store / child) for found in _network_groups(store, run_dir, child)]


def _folders(path: Path) -> list[Path]:
    return sorted(p for p in path.iterdir() if p.is_dir() and not p.name.startswith("."))


def _is_node(path: Path) -> bool:
    """Whether ``path`` is (or, its metadata lost, was) part of the hierarchy: it or a folder below has a zarr.json."""
    return (path / META).exists() or any((child / META).exists() for child in _folders(path))


def _metadata(path: Path) -> dict | None:
    try:
        meta = json.loads((path / META).read_bytes())
    except (OSError, ValueError):
        return None
    return meta if isinstance(meta, dict) else None


def open_networks(store: Path, network_ids: list[str], chunks: dict | None = None) -> xr.DataTree:
    """The groups ``network_ids`` of ``store`` (verified by the caller) as one lazily opened DataTree, each group's
    variables in the network's layer order (its ``layers`` attr), then the logits: a group opened without the
    consolidated metadata lists them in whatever order the file system gives."""
    return xr.DataTree.from_dict({nid: _in_layer_order(xr.open_dataset(store, group=nid, engine="zarr",
                                                                        consolidated=False, chunks=chunks))
                                  for nid in network_ids})


def _in_layer_order(ds: xr.Dataset) -> xr.Dataset:
    layers = ds.attrs.get("layers")
    names = json.loads(layers) if isinstance(layers, str) else list(layers or [])
    order = [v for v in [*names, "logits"] if v in ds.data_vars]
    return ds[order + [v for v in ds.data_vars if v not in order]]


def open_store(path: str | Path, chunks: dict | None = None) -> xr.DataTree:
    """Open an activation store (or the one inside a run directory) lazily, as a DataTree of the networks that
    verify; each other one is left out with a warning that says what is wrong with it.

    ``chunks={}`` backs every array with dask on the store's own chunks, so that reductions over it (the streaming
    metrics, say) run chunk by chunk on dask's scheduler: a ``distributed.Client``'s workers when one is active."""
    store, found = scan_store(path)
    for nid, problem in found.items():
        if problem:
            warnings.warn(f"activation store {store}: left out network {nid}: {problem}; "
                          f"{repair_command(store, network_id=nid)} rewrites it", stacklevel=2)
    return open_networks(store, [nid for nid, problem in found.items() if problem is None], chunks)


def open_checked(path: str | Path, run_dir: str | Path, planned: list[PlannedNetwork],
                 chunks: dict | None = None) -> tuple[Path, xr.DataTree]:
    """The store at ``path`` and a tree of its networks of ``planned``, each checked against the plan; a ProbeError
    names the first that is damaged or incomplete, and the command that repairs it. Networks that are not in the
    store are not in the tree."""
    store, found = scan_store(path, run_dir, planned)
    present = [p.spec.id for p in planned if p.spec.id in found]
    for nid in present:
        if found[nid]:
            raise ProbeError(f"activation store {store}: network {nid}: {found[nid]}; "
                             f"{repair_command(store, run_dir, nid)} rewrites it")
    _refuse_mixed_settings(store, run_dir, present)
    _refuse_stale(store, run_dir, present)
    return store, open_networks(store, present, chunks)


def _refuse_stale(store: Path, run_dir: str | Path, network_ids: list[str]) -> None:
    """Refuse groups extracted from weights that changed since (a network trained again, a file rewritten): their
    activations are not those of the network the run now holds. Named, with the command that refreshes them."""
    stale = []
    for nid in network_ids:
        attrs = group_attrs(store, nid)
        weights = Run(run_dir).network(nid).weights
        if not weights.exists() or attrs.get("weights_fingerprint") != weights_fingerprint(weights):
            stale.append(nid)
    if stale:
        shown = ", ".join(stale[:5]) + (f" and {len(stale) - 5} more" if len(stale) > 5 else "")
        raise ProbeError(f"activation store {store}: {len(stale)} network{'s were' if len(stale) > 1 else ' was'} "
                         f"extracted from weights that changed since (or that an older probe fingerprinted by size "
                         f"and time alone): {shown}; {repair_command(store, run_dir)} extracts them again")


def _refuse_mixed_settings(store: Path, run_dir: str | Path, network_ids: list[str]) -> None:
    """Refuse networks extracted with different settings from a store that records none of its own (written before
    probe recorded them): their activations would not compare. A store that records them has each group checked
    against them by :func:`scan_store`."""
    if recorded_settings(store) is not None:
        return
    settings = {nid: s for nid in network_ids if (s := group_settings(group_attrs(store, nid))) is not None}
    pair = disagreement(settings)
    if pair:
        usual, other = pair
        raise ProbeError(f"activation store {store}: networks {usual} ({describe_settings(settings[usual])}) and "
                         f"{other} ({describe_settings(settings[other])}) were extracted with different settings, "
                         f"and the store records none of its own; "
                         f"{repair_command(store, run_dir, options=describe_settings(settings[usual]))} rewrites the "
                         f"others with {usual}'s")


def list_networks(tree: xr.DataTree) -> list[str]:
    """Ids of the networks whose activations were written completely."""
    return [node.path.lstrip("/") for node in tree.subtree if node.attrs.get("complete") is True]


def layer_arrays(tree: xr.DataTree, layer: str, networks: list[str] | None = None, join: str = "exact",
                 stack: bool = False) -> dict[str, xr.DataArray] | xr.DataArray:
    """One layer of several networks, aligned on their shared sample coordinates.

    ``join="exact"`` insists that all networks saw the same probe images (a ProbeError says which differ);
    ``join="inner"`` keeps the images they share. With ``stack`` the arrays are concatenated along a new
    ``network`` dim."""
    complete = list_networks(tree)
    ids = networks or complete
    missing = [i for i in ids if i not in complete]
    if missing:
        raise ProbeError(f"the store has no complete network {missing[0]!r}; it has {', '.join(complete)}")
    arrays = []
    for i in ids:
        ds = tree[i].to_dataset()
        if layer not in ds.data_vars:
            raise ProbeError(f"network {i!r} has no layer {layer!r}; its layers are {', '.join(ds.data_vars)}")
        arrays.append(ds[layer].rename(i))
    try:
        aligned = xr.align(*arrays, join=join)
    except ValueError:
        raise ProbeError(f"networks {', '.join(ids)} were probed on different images; use join='inner' to keep the "
                         "shared ones, or extract with --probe-set both") from None
    if stack:
        return xr.concat([a.rename(None) for a in aligned], dim=xr.Variable("network", ids))
    return dict(zip(ids, aligned))

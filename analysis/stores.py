"""Opening a run's activation store from a script: the tree, its networks, one layer of several networks aligned.

    from analysis.stores import open_store, layer_arrays
    tree = open_store("runs/demo")
    fc7 = layer_arrays(tree, "fc7", ["random-s0/init0/baseB", "random-s0/init0/A3B"])
"""

from __future__ import annotations

from pathlib import Path

import xarray as xr

from probe.errors import ProbeError
from probe.extract import STORE


def open_store(path: str | Path, chunks: dict | None = None) -> xr.DataTree:
    """Open an activation store (or the one inside a run directory) lazily, as a DataTree.

    ``chunks={}`` backs every array with dask on the store's own chunks, so that reductions over it (the streaming
    metrics, say) run chunk by chunk on dask's scheduler: a ``distributed.Client``'s workers when one is active."""
    path = Path(path)
    if (path / STORE).exists():
        path = path / STORE
    if not path.exists():
        raise ProbeError(f"no activation store at {str(path)!r} (write one with 'probe extract RUN')")
    return xr.open_datatree(path, engine="zarr", chunks=chunks)


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

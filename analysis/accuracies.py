"""Every network's test accuracy on its target task, as a labelled xarray Dataset.

Dims: ``split`` (random, vehicles-animals, ...), ``replicate`` (split seed and init seed, e.g. ``s0/init0``),
``target`` (A or B: both directions of a split count as replicates, as in Yosinski et al. 2014, Sec. 4.1), ``n``
(the cut layer) and ``variant`` (BnB, BnB+, AnB, AnB+, RnB). ``base`` holds baseA/baseB per split, replicate and
target; ``acc`` holds the cut networks. Missing networks are NaN.

A one-directional run's (a source network trained elsewhere donates the layers) has the one target B, and SnB and
SnB+ in the places of AnB and AnB+.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import xarray as xr

from probe.architectures.registry import get_architecture
from probe.checkpoint import read_metrics
from probe.errors import ProbeError
from probe.plan import read_plan
from probe.run import Run
from probe.spec import NetworkSpec
from probe.variants import BASE, ONE_DIRECTION, SOURCE_VARIANTS, TASKS, Variant, cut_variants


def replicate_label(spec: NetworkSpec) -> str:
    """``s0/init0`` for a seeded split, ``init0`` for a fixed one."""
    init = f"init{spec.init_seed}"
    return init if spec.split_seed is None else f"s{spec.split_seed}/{init}"


def accuracy_dataset(run_dir: Path) -> tuple[xr.Dataset, list[str]]:
    """The run's test accuracies, and the ids of planned networks that are not finished."""
    study, plan = read_plan(run_dir)
    found: dict[str, float] = {}
    missing = []
    for p in plan:
        try:
            m = read_metrics(Run(run_dir).network(p.spec.id).metrics) or {}
        except ProbeError as e:  # one damaged file leaves its network out, not the whole analysis
            print(f"warning: {e}; left out as unfinished", file=sys.stderr)
            m = {}
        if m.get("status") == "done":
            found[p.spec.id] = m["test_acc"]
        else:
            missing.append(p.spec.id)
    specs = [p.spec for p in plan]
    return build_dataset(specs, found, study.to_dict(), plan[0].layers if plan else None), missing


def build_dataset(specs: list[NetworkSpec], accuracy: dict[str, float], study: dict | None = None,
                  layers: tuple[str, ...] | None = None) -> xr.Dataset:
    """Arrange ``accuracy`` (network id -> test accuracy) of ``specs`` on the dims above; ``layers``: the
    architecture's layer names (default: as the registry declares them), for the ``layer`` coord of each n. The
    run is one-directional when its ``study`` has a source network, or one of ``specs`` copies from one."""
    splits = list(dict.fromkeys(s.split for s in specs))
    replicates = list(dict.fromkeys(replicate_label(s) for s in specs))
    cuts = sorted({s.cut for s in specs if s.cut > 0})
    one_way = bool((study or {}).get("source")) or any(s.source_network for s in specs)
    targets, variants = ONE_DIRECTION if one_way else TASKS, cut_variants(one_way)
    base = np.full((len(splits), len(replicates), len(targets)), np.nan)
    acc = np.full((len(splits), len(replicates), len(targets), len(cuts), len(variants)), np.nan)
    planned = np.zeros(acc.shape, dtype=bool)
    for s in specs:
        i, r, t = splits.index(s.split), replicates.index(replicate_label(s)), targets.index(s.target)
        value, variant = accuracy.get(s.id, np.nan), Variant.of(s)
        if variant == BASE:
            base[i, r, t] = value
        else:
            j, v = cuts.index(s.cut), variants.index(variant)
            acc[i, r, t, j, v] = value
            planned[i, r, t, j, v] = True
    layer_names = {}
    if specs:
        names = layers or get_architecture(specs[0].arch.name).layers
        layer_names = {"layer": ("n", _strings([names[n - 1] for n in cuts]))}
    ds = xr.Dataset(
        {"base": (("split", "replicate", "target"), base),
         "acc": (("split", "replicate", "target", "n", "variant"), acc),
         "planned": (("split", "replicate", "target", "n", "variant"), planned)},
        coords={"split": _strings(splits), "replicate": _strings(replicates), "target": _strings(targets),
                "n": cuts, "variant": _strings(v.name for v in variants), **layer_names})
    ds["acc"].attrs["description"] = "test accuracy (top-1) on the target task"
    ds["base"].attrs["description"] = "test accuracy (top-1) of baseA/baseB on their own task"
    if study is not None:
        ds.attrs["study"] = json.dumps(study, sort_keys=True)
    return ds


def _strings(values) -> np.ndarray:
    """Variable-length strings: zarr v3 has a specified encoding for them, not for fixed-width unicode."""
    return np.array(list(values), dtype=object)


def one_directional(ds: xr.Dataset) -> bool:
    """Whether ``ds`` is a one-directional run's: target B only, its layers donated by a source network."""
    return SOURCE_VARIANTS[0].name in ds["variant"].values


def format_table(ds: xr.Dataset) -> str:
    """Mean test accuracy per split, cut n and variant over replicates (and both directions), with the count."""
    lines = []
    names = [str(v) for v in ds["variant"].values]
    over = "replicates" if one_directional(ds) else "replicates and directions"
    for split in ds["split"].values:
        d = ds.sel(split=split)
        lines.append(f"split {split}: mean test accuracy over {over} (count)")
        lines.append("   n  " + "".join(f"{v:>15}" for v in [BASE.name, *names]))
        base = d["base"].values.ravel()
        lines.append(f"{0:>4}  " + _cell(base) + "".join(f"{'':>15}" for _ in names))
        for n in d["n"].values:
            cells = [_cell(d["acc"].sel(n=n, variant=v).values.ravel()) for v in names]
            lines.append(f"{int(n):>4}  " + f"{'':>15}" + "".join(cells))
    return "\n".join(lines) if lines else "no networks planned"


def _cell(values: np.ndarray) -> str:
    values = values[np.isfinite(values)]
    return f"{values.mean():>10.4f} ({len(values)})" if len(values) else f"{'-':>15}"


def rows(ds: xr.Dataset) -> list[dict]:
    """One row per finished network: split, replicate, target, variant, n, test accuracy."""
    out = []
    for split in ds["split"].values:
        for rep in ds["replicate"].values:
            for t in ds["target"].values:
                b = float(ds["base"].sel(split=split, replicate=rep, target=t))
                if np.isfinite(b):
                    out.append({"split": split, "replicate": rep, "target": t, "variant": BASE.name, "n": 0,
                                "test_acc": b})
                for n in ds["n"].values:
                    for v in ds["variant"].values:
                        a = float(ds["acc"].sel(split=split, replicate=rep, target=t, n=n, variant=v))
                        if np.isfinite(a):
                            out.append({"split": split, "replicate": rep, "target": t, "variant": v, "n": int(n),
                                        "test_acc": a})
    return out

"""The base networks' layer re-initialization robustness (:mod:`probe.execution.robustness`), read into a labelled
Dataset and summarized per layer beside the selffer's co-adaptation drop.

Dims ``split``, ``replicate``, ``target``, ``reset`` (initial, random) and ``layer``: ``acc`` is the test accuracy
of the base network with that one layer reset, ``base`` its own accuracy. A layer is **robust** where the reset
network keeps at least :data:`ROBUST` of its base's accuracy above chance, **critical** where it keeps at most
:data:`CRITICAL` (Zhang, Bengio & Singer 2022 call a layer robust when re-initializing it leaves the accuracy near
the trained network's); the share above chance, rather than the accuracy itself, makes the bar mean the same for 2
classes and for 50.
"""

from __future__ import annotations

import sys

import numpy as np
import xarray as xr

from probe.analysis.accuracies import replicate_label
from probe.analysis.decomposition import replicates
from probe.analysis.stats import estimate
from probe.errors import ProbeError
from probe.execution.robustness import RESETS, read_robustness
from probe.planning.plan import read_plan
from probe.specs.variants import TASKS
from probe.storage.run import Run

ROBUST, CRITICAL = 0.9, 0.5


def robustness_dataset(run_dir, metric: str = "top1") -> xr.Dataset | None:
    """The robustness records of the run's base networks in ``metric`` (top1 or balanced: the decomposition's, so
    that the two read side by side), None where no base network has one."""
    run = Run(run_dir)
    _, plan = read_plan(run)
    bases = [p for p in plan if p.spec.variant == "base"]
    records = {}
    for p in bases:
        try:
            record = read_robustness(run.network(p.spec.id).robustness)
        except ProbeError as e:  # one damaged file leaves its network out, as for metrics.json
            print(f"warning: {e}; left out", file=sys.stderr)
            record = None
        if record is not None:
            records[p.spec.id] = record
    if not records:
        return None
    layers = list(bases[0].layers)
    splits = list(dict.fromkeys(p.spec.split for p in bases))
    reps = list(dict.fromkeys(replicate_label(p.spec) for p in bases))
    targets = [t for t in TASKS if any(p.spec.target == t for p in bases)]
    acc = np.full((len(splits), len(reps), len(targets), len(RESETS), len(layers)), np.nan)
    base = np.full(acc.shape[:3], np.nan)
    chance = np.full(acc.shape[:3], np.nan)
    for p in bases:
        where = (splits.index(p.spec.split), reps.index(replicate_label(p.spec)), targets.index(p.spec.target))
        chance[where] = 1 / len(p.spec.target_classes)
        record = records.get(p.spec.id)
        if record is None:
            continue
        if record["layers"] != layers:
            print(f"warning: {run.network(p.spec.id).robustness} was written for layers {record['layers']}, not the "
                  f"plan's {layers}; left out (rerun 'probe robustness {run.path}')", file=sys.stderr)
            continue
        base[where] = record["test_acc" if metric == "top1" else "test_balanced_acc"]
        for r, kind in enumerate(RESETS):
            acc[where + (r,)] = [x[metric] for x in record[kind]]
    dims = ("split", "replicate", "target")
    return xr.Dataset({"acc": (dims + ("reset", "layer"), acc), "base": (dims, base), "chance": (dims, chance)},
                      coords={"split": splits, "replicate": reps, "target": targets, "reset": list(RESETS),
                              "layer": layers, "k": ("layer", np.arange(1, len(layers) + 1))})


def kept_share(rob: xr.Dataset) -> xr.DataArray:
    """The share of the base's accuracy above chance that each reset network keeps (1: nothing lost; 0: at
    chance); NaN for a base at or below chance, which has nothing to lose."""
    above = rob["base"] - rob["chance"]
    return (rob["acc"] - rob["chance"]) / above.where(above > 0)


def verdict(share: float) -> str:
    if not np.isfinite(share):
        return ""
    return "robust" if share >= ROBUST else "critical" if share <= CRITICAL else "in between"


def robustness_rows(rob: xr.Dataset, coadaptation: dict[tuple[str, int], object] | None = None) -> list[dict]:
    """Per split, layer and reset: the mean accuracy of the reset network relative to its base, with its interval
    over seeds (each the mean of its directions), the kept share above chance, the verdict, and (where given) the
    co-adaptation drop at n = k as :func:`analysis.decomposition.summarize` gives it."""
    out = []
    relative = rob["acc"] / rob["base"]
    share = kept_share(rob)
    for split in rob["split"].values:
        for kind in rob["reset"].values:
            rel = replicates(relative.sel(split=split, reset=kind))
            kept = replicates(share.sel(split=split, reset=kind))
            for layer, k in zip(rob["layer"].values, rob["k"].values):
                e = estimate(rel.sel(layer=layer).values)
                mean_share = float(np.nanmean(kept.sel(layer=layer).values)) \
                    if np.isfinite(kept.sel(layer=layer).values).any() else np.nan
                row = {"split": str(split), "reset": str(kind), "k": int(k), "layer": str(layer),
                       "relative": e.mean, "low": e.low, "high": e.high, "seeds": e.replicates,
                       "kept_share": mean_share, "verdict": verdict(mean_share)}
                drop = (coadaptation or {}).get((str(split), int(k)))
                row["coadaptation_at_n"] = drop.mean if drop is not None else np.nan
                out.append(row)
    return out

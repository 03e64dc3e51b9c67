"""The paper's decomposition of transfer performance, per cut n, paired by target task and seed.

Yosinski et al. (2014), Sec. 4.1: the drop of BnB below baseB measures fragile **co-adaptation** of neighbouring
layers; the further drop of AnB below BnB measures the **specialization** of layers 1..n to task A; fine-tuning
(AnB+) gives a **lingering boost** over baseB. Every quantity is computed per network pair (a seed and a direction)
before it is averaged, so intervals come from paired differences.

**The unit of replication is the seed**: a split seed and an init seed, which choose the class halves and the
initial weights. The two directions of a seed (AnB, with baseB as its reference, and BnA, with baseA) are two
measurements within it: they share their base networks (each direction's transfer copies the other's base) and the
same class halves, so they are not independent, and counting them as two replicates makes every interval too
narrow. By default a seed's value is the mean of its two directions (of those finished, in a partial run), and
intervals are t intervals over seeds. ``pooled=True`` gives the older form, every direction of every seed counted as
a replicate, for comparison with earlier reports; per-direction summaries (:func:`direction_rows`) show each
direction on its own, over seeds, which matters for an asymmetric split.

Where the run has the stitched networks (:mod:`probe.architectures.stitch`), three more: the **stitching penalty**
baseB - AnB-stitch, how much B's frozen top loses reading A's layer n through a trained linear stitch; **stitch over
transfer** AnB-stitch - AnB, positive where A's features were fine and re-training the top is what failed; and the
**self-stitching penalty** baseB - BnB-stitch, the stitch's own cost, the control.

In a one-directional run, whose layers come from a source network trained elsewhere, SnB and SnB+ take the places
of AnB and AnB+: specialization is BnB - SnB (how specific the source's layers 1..n are to the task it was trained
on), the lingering boost SnB+ - baseB.
"""

from __future__ import annotations

from collections.abc import Callable

import xarray as xr

from probe.analysis.accuracies import one_directional
from probe.analysis.stats import Estimate, estimate, welch
from probe.specs.variants import BASE

SIMILAR_SPLIT = "random"


def transfer_names(ds: xr.Dataset) -> tuple[str, str]:
    """The frozen and the fine-tuned transfer variant of ``ds``: AnB and AnB+, or SnB and SnB+ (one-directional)."""
    return ("SnB", "SnB+") if one_directional(ds) else ("AnB", "AnB+")


def quantities(ds: xr.Dataset) -> dict[str, tuple[Callable[[xr.Dataset], xr.DataArray], str]]:
    """name -> (formula on the accuracy Dataset ``ds``, what it means), with ``ds``'s transfer variants."""
    t, t_plus = transfer_names(ds)

    def acc(d: xr.Dataset, variant: str) -> xr.DataArray:
        return d["acc"].sel(variant=variant, drop=True)

    return {
        "coadaptation": (lambda d: d["base"] - acc(d, "BnB"), "co-adaptation drop: baseB - BnB"),
        "specialization": (lambda d: acc(d, "BnB") - acc(d, t), f"specialization drop: BnB - {t}"),
        "total": (lambda d: d["base"] - acc(d, t), f"total transfer drop: baseB - {t}"),
        "selffer_finetune": (lambda d: acc(d, "BnB+") - d["base"], "selffer fine-tune effect: BnB+ - baseB"),
        "lingering": (lambda d: acc(d, t_plus) - d["base"], f"lingering boost: {t_plus} - baseB"),
        "random_drop": (lambda d: d["base"] - acc(d, "RnB"), "random-weights drop: baseB - RnB"),
        **({} if "AnB-stitch" not in ds["variant"].values else {
            "stitching": (lambda d: d["base"] - acc(d, "AnB-stitch"),
                          "stitching penalty: baseB - AnB-stitch (A's layers 1..n read by B's top through a stitch)"),
            "stitch_over_transfer": (lambda d: acc(d, "AnB-stitch") - acc(d, t),
                                     f"stitch over transfer: AnB-stitch - {t} (what re-training the top loses)")}),
        **({} if "BnB-stitch" not in ds["variant"].values else {
            "self_stitching": (lambda d: d["base"] - acc(d, "BnB-stitch"),
                               "self-stitching penalty: baseB - BnB-stitch (the stitch's own cost, a control)")}),
    }


# What an interval is over: seeds (each the mean of its directions), or seeds and directions pooled (optimistic)
OVER = {False: "seeds", True: "seeds and directions (pooled)"}
# The direction of each target: target B is transfer from A to B (AnB), target A the mirror image (BnA)
DIRECTIONS = {"B": "A->B", "A": "B->A"}


def replicates(da: xr.DataArray, pooled: bool = False) -> xr.DataArray:
    """``da`` with one ``rep`` dim in place of replicate and target: one value per seed, the mean of its finished
    directions (a one-directional run has the one target B), or with ``pooled`` one per seed and direction."""
    if pooled:
        return da.stack(rep=("replicate", "target"))
    return da.mean("target").rename(replicate="rep")  # xarray's NaN-skipping mean: an all-NaN seed stays NaN


def decompose(ds: xr.Dataset) -> xr.Dataset:
    """Per-replicate differences on dims (split, replicate, target, n), one variable per quantity."""
    formulas = quantities(ds)
    out = xr.Dataset({name: f(ds) for name, (f, _) in formulas.items()})
    for name, (_, text) in formulas.items():
        out[name].attrs["description"] = text
    return out


def relative(ds: xr.Dataset) -> xr.DataArray:
    """Accuracy relative to the base network of the same seed and direction (the paper's Figure 3 scale)."""
    return ds["acc"] / ds["base"]


def summarize(values: xr.DataArray, pooled: bool = False) -> dict[tuple[str, int], Estimate]:
    """(split, n) -> mean and interval over seeds (``pooled``: seeds and directions) of a (split, replicate, target,
    n) array."""
    out = {}
    for split in values["split"].values:
        per = replicates(values.sel(split=split), pooled)
        for n in values["n"].values:
            out[(str(split), int(n))] = estimate(per.sel(n=n).values)
    return out


def summary_rows(ds: xr.Dataset, pooled: bool = False) -> list[dict]:
    """A tidy table: per split, quantity and n, the mean, 95% interval, the number of seeds (``replicates``; seeds
    times directions when ``pooled``) and p-value, and what the interval is over."""
    dec = decompose(ds)
    out = []
    for name in dec.data_vars:
        for (split, n), e in summarize(dec[name], pooled).items():
            out.append({"split": split, "quantity": name, "n": n, **e.to_dict(), "over": OVER[pooled]})
    return out


def direction_rows(ds: xr.Dataset) -> list[dict]:
    """:func:`summary_rows` for each direction on its own (intervals over seeds), with a ``direction`` column:
    ``A->B`` (target B, AnB's) and ``B->A``. Empty for a one-directional run, whose one direction is the summary."""
    if one_directional(ds):
        return []
    return [{"direction": DIRECTIONS[str(t)], **row} for t in ds["target"].values
            for row in summary_rows(ds.sel(target=[t]))]


def relative_rows(ds: xr.Dataset, pooled: bool = False) -> list[dict]:
    """Per split, variant and n: accuracy relative to the same network pair's base (Figure 3's scale), with its mean,
    95% interval and count of seeds (no p-value: a ratio near 1 is not tested against 0)."""
    rel = relative(ds)
    out = []
    for variant in rel["variant"].values:
        for (split, n), e in summarize(rel.sel(variant=variant, drop=True), pooled).items():
            row = {"split": split, "variant": str(variant), "n": n, **e.to_dict(), "over": OVER[pooled]}
            row.pop("p")
            out.append(row)
    return out


def split_contrast_values(ds: xr.Dataset, quantity: str = "total",
                          pooled: bool = False) -> dict[tuple[str, int], tuple]:
    """(dissimilar split, n) -> (its per-seed relative drops, the similar split's): the drop of ``quantity``
    divided by the base accuracy of the same direction, then averaged over the seed's directions (``pooled``: one
    value per seed and direction). None for a one-directional run: its splits only choose the target task, and the
    source network was trained on neither split's task A."""
    if SIMILAR_SPLIT not in ds["split"].values or one_directional(ds):
        return {}
    rel = decompose(ds)[quantity] / ds["base"]
    similar = replicates(rel.sel(split=SIMILAR_SPLIT), pooled)
    out = {}
    for split in ds["split"].values:
        if split == SIMILAR_SPLIT:
            continue
        other = replicates(rel.sel(split=split), pooled)
        for n in ds["n"].values:
            out[(str(split), int(n))] = (other.sel(n=n).values, similar.sel(n=n).values)
    return out


def split_contrast(ds: xr.Dataset, quantity: str = "total", pooled: bool = False) -> dict[tuple[str, int], Estimate]:
    """(dissimilar split, n) -> how much more the dissimilar split loses than the similar (random) one, on the
    relative scale, as a Welch difference of independent groups of seeds (the splits' seeds share nothing)."""
    return {k: welch(a, b) for k, (a, b) in split_contrast_values(ds, quantity, pooled).items()}


def variant_means(ds: xr.Dataset, pooled: bool = False) -> dict[tuple[str, str, int], Estimate]:
    """(split, variant, n) -> mean test accuracy over seeds (``pooled``: seeds and directions), with its interval;
    the base networks under (split, "base", 0)."""
    out = {}
    for split in ds["split"].values:
        for v in ds["variant"].values:
            per = replicates(ds["acc"].sel(split=split, variant=v), pooled)
            for n in ds["n"].values:
                out[(str(split), str(v), int(n))] = estimate(per.sel(n=n).values)
    base = replicates(ds["base"], pooled)
    for split in ds["split"].values:
        out[(str(split), BASE.name, 0)] = estimate(base.sel(split=split).values)
    return out


def seed_count(ds: xr.Dataset, split: str) -> int:
    """How many seeds of ``split`` have a base network finished: the most any interval rests on."""
    return int(replicates(ds["base"].sel(split=split)).notnull().sum())

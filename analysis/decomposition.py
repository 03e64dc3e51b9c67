"""The paper's decomposition of transfer performance, per cut n, paired by target task and seed.

Yosinski et al. (2014), Sec. 4.1: the drop of BnB below baseB measures fragile **co-adaptation** of neighbouring
layers; the further drop of AnB below BnB measures the **specialization** of layers 1..n to task A; fine-tuning
(AnB+) gives a **lingering boost** over baseB. Every quantity is computed per replicate (a split seed, an init seed
and a direction: AnB and BnA are two replicates) before it is averaged, so intervals come from paired differences.

In a one-directional run, whose layers come from a source network trained elsewhere, SnB and SnB+ take the places
of AnB and AnB+: specialization is BnB - SnB (how specific the source's layers 1..n are to the task it was trained
on), the lingering boost SnB+ - baseB.
"""

from __future__ import annotations

from collections.abc import Callable

import xarray as xr

from probe.analysis.accuracies import one_directional
from probe.analysis.stats import Estimate, estimate, welch
from probe.variants import BASE

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
    }


def replicates(da: xr.DataArray) -> xr.DataArray:
    """Fold replicate and target (both directions; one-directional runs have the one target B) into one ``rep``
    dim."""
    return da.stack(rep=("replicate", "target"))


def decompose(ds: xr.Dataset) -> xr.Dataset:
    """Per-replicate differences on dims (split, replicate, target, n), one variable per quantity."""
    formulas = quantities(ds)
    out = xr.Dataset({name: f(ds) for name, (f, _) in formulas.items()})
    for name, (_, text) in formulas.items():
        out[name].attrs["description"] = text
    return out


def relative(ds: xr.Dataset) -> xr.DataArray:
    """Accuracy relative to the same replicate's base network (the paper's Figure 3 scale)."""
    return ds["acc"] / ds["base"]


def summarize(values: xr.DataArray) -> dict[tuple[str, int], Estimate]:
    """(split, n) -> mean and interval over replicates of a (split, replicate, target, n) array."""
    out = {}
    for split in values["split"].values:
        per = replicates(values.sel(split=split))
        for n in values["n"].values:
            out[(str(split), int(n))] = estimate(per.sel(n=n).values)
    return out


def summary_rows(ds: xr.Dataset) -> list[dict]:
    """A tidy table: per split, quantity and n, the mean, 95% interval, replicate count and p-value."""
    dec = decompose(ds)
    out = []
    for name in dec.data_vars:
        for (split, n), e in summarize(dec[name]).items():
            out.append({"split": split, "quantity": name, "n": n, **e.to_dict()})
    return out


def relative_rows(ds: xr.Dataset) -> list[dict]:
    """Per split, variant and n: accuracy relative to the same replicate's base (Figure 3's scale), with its mean,
    95% interval and replicate count (no p-value: a ratio near 1 is not tested against 0)."""
    rel = relative(ds)
    out = []
    for variant in rel["variant"].values:
        for (split, n), e in summarize(rel.sel(variant=variant, drop=True)).items():
            row = {"split": split, "variant": str(variant), "n": n, **e.to_dict()}
            row.pop("p")
            out.append(row)
    return out


def split_contrast_values(ds: xr.Dataset, quantity: str = "total") -> dict[tuple[str, int], tuple]:
    """(dissimilar split, n) -> (its per-replicate relative drops, the similar split's): the drop of ``quantity``
    divided by the replicate's base accuracy. None for a one-directional run: its splits only choose the target
    task, and the source network was trained on neither split's task A."""
    if SIMILAR_SPLIT not in ds["split"].values or one_directional(ds):
        return {}
    rel = decompose(ds)[quantity] / ds["base"]
    similar = replicates(rel.sel(split=SIMILAR_SPLIT))
    out = {}
    for split in ds["split"].values:
        if split == SIMILAR_SPLIT:
            continue
        other = replicates(rel.sel(split=split))
        for n in ds["n"].values:
            out[(str(split), int(n))] = (other.sel(n=n).values, similar.sel(n=n).values)
    return out


def split_contrast(ds: xr.Dataset, quantity: str = "total") -> dict[tuple[str, int], Estimate]:
    """(dissimilar split, n) -> how much more the dissimilar split loses than the similar (random) one, on the
    relative scale, as a Welch difference of independent groups."""
    return {k: welch(a, b) for k, (a, b) in split_contrast_values(ds, quantity).items()}


def variant_means(ds: xr.Dataset) -> dict[tuple[str, str, int], Estimate]:
    """(split, variant, n) -> mean test accuracy over replicates, with its interval; the base networks under
    (split, "base", 0)."""
    out = {}
    for split in ds["split"].values:
        for v in ds["variant"].values:
            per = replicates(ds["acc"].sel(split=split, variant=v))
            for n in ds["n"].values:
                out[(str(split), str(v), int(n))] = estimate(per.sel(n=n).values)
    base = replicates(ds["base"])
    for split in ds["split"].values:
        out[(str(split), BASE.name, 0)] = estimate(base.sel(split=split).values)
    return out

"""Automatic checks of the paper's eight claims (Yosinski et al. 2014, Sec. 4.1-4.2) on a run's accuracies.

Each check is decided by 95% confidence intervals over replicates: it **holds** when every interval it rests on
lies on the claimed side (for "no difference" claims: lies within the equivalence margin, +-0.02 accuracy by default,
so that a wide interval from few replicates proves nothing), **does not hold** when an interval lies on the opposite
side (or a "no difference" interval lies wholly beyond the margin), and is **undecided** otherwise — including when there are too
few replicates for an interval, or the networks it needs were not run. A claim that rests on m intervals (one per
n, say) uses Bonferroni-corrected 1 - 0.05/m intervals, so one chance interval among m does not decide it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import xarray as xr

from probe.analysis.decomposition import SIMILAR_SPLIT, decompose, replicates, split_contrast_values
from probe.analysis.stats import LEVEL, Estimate, estimate, welch

HOLDS, FAILS, UNDECIDED = "holds", "does not hold", "undecided"
MARGIN = 0.02  # accuracy difference within which a "no difference" claim counts as shown


@dataclass
class Claim:
    number: int
    text: str
    verdict: str = UNDECIDED
    evidence: list[str] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {"number": self.number, "claim": self.text, "verdict": self.verdict, "evidence": self.evidence}


def _per_rep(da: xr.DataArray, n) -> np.ndarray:
    return replicates(da).sel(n=n).values


def _on(values: np.ndarray) -> Callable[[float], Estimate]:
    """The estimate of per-replicate ``values`` at a confidence level to be chosen."""
    return lambda level: estimate(values, level)


def _family(tests: list[tuple[str, Callable[[float], Estimate]]], size: int | None = None) -> list[tuple[str, Estimate]]:
    """The intervals of a claim that rests on several, at the Bonferroni-corrected level 1 - 0.05/m (m = ``size``,
    default the number of tests), so that a claim over every n is not decided by one chance interval among m."""
    level = 1 - (1 - LEVEL) / max(1, size or len(tests))
    return [(name, fn(level)) for name, fn in tests]


def _no_difference(tests: list[tuple[str, Callable[[float], Estimate]]], margin: float) -> tuple[str, list[str]]:
    """Holds when every interval lies within +-margin, fails when one lies wholly beyond it (an equivalence test by
    confidence intervals: a real but negligible difference does not make the claim fail)."""
    estimates = _family(tests)
    evidence = [f"{name}: {e}" for name, e in estimates]
    if any(e.above(margin) or e.below(-margin) for _, e in estimates):
        return FAILS, evidence
    if estimates and all(e.above(-margin) and e.below(margin) for _, e in estimates):
        return HOLDS, evidence
    return UNDECIDED, evidence


def _all_on_side(tests: list[tuple[str, Callable[[float], Estimate]]], positive: bool,
                 family: int | None = None) -> tuple[str, list[str]]:
    """Holds when every interval lies on the claimed side of zero, fails when one lies on the other side."""
    estimates = _family(tests, family)
    evidence = [f"{name}: {e}" for name, e in estimates]
    on = (lambda e: e.above()) if positive else (lambda e: e.below())
    off = (lambda e: e.below()) if positive else (lambda e: e.above())
    if any(off(e) for _, e in estimates):
        return FAILS, evidence
    if estimates and all(on(e) for _, e in estimates):
        return HOLDS, evidence
    return UNDECIDED, evidence


def check_claims(ds: xr.Dataset, split: str = SIMILAR_SPLIT, margin: float = MARGIN) -> list[Claim]:
    """The eight claims on ``split`` (the similar-task split; claim 7 compares the others with it); ``margin`` is
    the equivalence margin of the no-difference claims 1 and 3."""
    claims = [
        Claim(1, "n = 1-2: BnB and AnB are within noise of baseB"),
        Claim(2, "BnB dips at middle layers and recovers at the top"),
        Claim(3, "BnB+ is within noise of baseB at every n"),
        Claim(4, "AnB - BnB grows more negative with n"),
        Claim(5, "AnB falls after the middle layers and is lowest at the top"),
        Claim(6, "AnB+ beats baseB (the lingering boost of transfer)"),
        Claim(7, "a dissimilar split loses more than the similar one at n >= 2"),
        Claim(8, "random frozen layers do worse than transferred ones at every n"),
    ]
    if split not in ds["split"].values:
        for c in claims:
            c.evidence.append(f"no {split!r} split in this run")
        return claims
    d = ds.sel(split=split)
    dec = decompose(ds).sel(split=split)
    acc = d["acc"]
    cuts = [int(n) for n in d["n"].values]
    if not cuts:
        for c in claims:
            c.evidence.append("no cut networks in this run")
        return claims
    top, middle = cuts[-1], cuts[len(cuts) // 2]
    middle_cuts = [n for n in cuts if 2 < n < top]

    def var(v):
        return acc.sel(variant=v)

    # 1
    early = [n for n in cuts if n <= 2]
    ests = [(f"{v} - baseB at n={n}", _on(_per_rep(var(v) - d["base"], n))) for n in early for v in ("BnB", "AnB")]
    claims[0].verdict, claims[0].evidence = _no_difference(ests, margin) if early else (UNDECIDED,
                                                                                       ["no cut n <= 2 run"])

    # 2: the deepest co-adaptation dip among the middle cuts, then the recovery from it to the top
    if middle_cuts:
        dips = {n: estimate(_per_rep(dec["coadaptation"], n)) for n in middle_cuts}
        n_dip = max(dips, key=lambda n: dips[n].mean if np.isfinite(dips[n].mean) else -np.inf)
        recovery = _per_rep(var("BnB"), top) - _per_rep(var("BnB"), n_dip)
        verdict, ev = _all_on_side([(f"baseB - BnB at n={n_dip} (deepest middle dip)",
                                     _on(_per_rep(dec["coadaptation"], n_dip))),
                                    (f"BnB(n={top}) - BnB(n={n_dip}) (recovery)", _on(recovery))], positive=True,
                                   family=len(middle_cuts) + 1)  # the dip was chosen among the middle cuts
        claims[1].verdict, claims[1].evidence = verdict, ev
    else:
        claims[1].evidence = ["needs cuts between n = 3 and the top"]

    # 3
    claims[2].verdict, claims[2].evidence = _no_difference(
        [(f"BnB+ - baseB at n={n}", _on(_per_rep(dec["selffer_finetune"], n))) for n in cuts], margin)

    # 4: per-replicate least-squares slope of AnB - BnB over n
    gap = replicates(var("AnB") - var("BnB")).transpose("rep", "n").values
    slopes = np.array([np.polyfit(cuts, row, 1)[0] if np.isfinite(row).all() and len(cuts) > 1 else np.nan
                       for row in gap])
    claims[3].verdict, claims[3].evidence = _all_on_side([("slope of AnB - BnB per layer", _on(slopes))],
                                                         positive=False)

    # 5
    if middle is not None and middle != top:
        fall = estimate(_per_rep(var("AnB"), top) - _per_rep(var("AnB"), middle))
        means = {n: np.nanmean(_per_rep(var("AnB"), n)) if np.isfinite(_per_rep(var("AnB"), n)).any() else np.nan
                 for n in cuts}
        lowest = min((n for n in cuts if np.isfinite(means[n])), key=means.get, default=None)
        ev = [f"AnB(n={top}) - AnB(n={middle}): {fall}", f"lowest mean AnB at n={lowest}"]
        if fall.above():
            claims[4].verdict = FAILS
        elif fall.below() and lowest == top:
            claims[4].verdict = HOLDS
        claims[4].evidence = ev
    else:
        claims[4].evidence = ["needs a middle cut and a top cut"]

    # 6: the boost averaged over n per replicate
    boost = replicates(dec["lingering"]).mean("n", skipna=False).values
    claims[5].verdict, claims[5].evidence = _all_on_side([("AnB+ - baseB, mean over n", _on(boost))],
                                                         positive=True)

    # 7
    contrast = {k: v for k, v in split_contrast_values(ds).items() if k[1] >= 2}
    if contrast:
        claims[6].verdict, claims[6].evidence = _all_on_side(
            [(f"{s} minus {SIMILAR_SPLIT}, relative drop at n={n}",
              lambda level, a=a, b=b: welch(a, b, level)) for (s, n), (a, b) in contrast.items()], positive=True)
    else:
        claims[6].evidence = ["needs a dissimilar split run beside the random one"]

    # 8
    claims[7].verdict, claims[7].evidence = _all_on_side(
        [(f"RnB - AnB at n={n}", _on(_per_rep(var("RnB") - var("AnB"), n))) for n in cuts], positive=False)
    return claims

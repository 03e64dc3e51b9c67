"""Automatic checks of the paper's eight claims (Yosinski et al. 2014, Sec. 4.1-4.2) on a run's accuracies.

Each check is decided by 95% confidence intervals over seeds (each seed's value the mean of its two directions;
:mod:`analysis.decomposition` says why; ``pooled`` counts every direction instead): it **holds** when every interval
it rests on lies on the claimed side (for "no difference" claims: lies within the equivalence margin, +-0.02 accuracy
by default, so that a wide interval from few seeds proves nothing), **does not hold** when an interval lies on the
opposite side (or a "no difference" interval lies wholly beyond the margin), and is **undecided** otherwise —
including when there are too few seeds for an interval (one seed never decides a claim), or the networks it needs
were not run. A claim that rests on m intervals (one per n, say) uses Bonferroni-corrected 1 - 0.05/m intervals, so
one chance interval among m does not decide it.

In a one-directional run (a source network trained elsewhere donates the layers) the claims about AnB are checked on
SnB, its place; the claim that compares a dissimilar split with the similar one is **left out**, saying why.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import xarray as xr

from probe.analysis.accuracies import one_directional
from probe.analysis.decomposition import SIMILAR_SPLIT, decompose, replicates, split_contrast_values, transfer_names
from probe.analysis.stats import LEVEL, Estimate, estimate, welch

HOLDS, FAILS, UNDECIDED, LEFT_OUT = "holds", "does not hold", "undecided", "left out"
MARGIN = 0.02  # accuracy difference within which a "no difference" claim counts as shown


@dataclass
class Claim:
    number: int
    text: str
    verdict: str = UNDECIDED
    evidence: list[str] = field(default_factory=list)
    # What left a verdict the intervals would give undecided, in a few words (bases at chance, ...): said beside the
    # verdict wherever it is shown, the terminal's one line included
    voided: tuple[str, ...] = ()

    @property
    def verdict_text(self) -> str:
        """The verdict with what voided it: ``undecided (voided: bases at chance)``."""
        return f"{self.verdict} (voided: {'; '.join(self.voided)})" if self.voided else self.verdict

    def to_dict(self) -> dict:
        d = {"number": self.number, "claim": self.text, "verdict": self.verdict, "evidence": self.evidence}
        return {**d, "voided": list(self.voided)} if self.voided else d


Verdict = tuple[str, list[str]]  # a verdict and its evidence
# Named intervals, each computed at the confidence level its claim's family of intervals calls for
Tests = list[tuple[str, Callable[[float], Estimate]]]


def _on(values: np.ndarray) -> Callable[[float], Estimate]:
    """The estimate of per-replicate ``values`` at a confidence level to be chosen."""
    return lambda level: estimate(values, level)


def _family(tests: Tests, size: int | None = None) -> list[tuple[str, Estimate]]:
    """The intervals of a claim that rests on several, at the Bonferroni-corrected level 1 - 0.05/m (m = ``size``,
    default the number of tests), so that a claim over every n is not decided by one chance interval among m."""
    level = 1 - (1 - LEVEL) / max(1, size or len(tests))
    return [(name, fn(level)) for name, fn in tests]


def _no_difference(tests: Tests, margin: float) -> Verdict:
    """Holds when every interval lies within +-margin, fails when one lies wholly beyond it (an equivalence test by
    confidence intervals: a real but negligible difference does not make the claim fail)."""
    estimates = _family(tests)
    evidence = [f"{name}: {e}" for name, e in estimates]
    if any(e.above(margin) or e.below(-margin) for _, e in estimates):
        return FAILS, evidence
    if estimates and all(e.above(-margin) and e.below(margin) for _, e in estimates):
        return HOLDS, evidence
    return UNDECIDED, evidence


def _all_on_side(tests: Tests, positive: bool, family: int | None = None) -> Verdict:
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


@dataclass(frozen=True)
class _Split:
    """What the checks read: one split's accuracies and decomposition, the whole run for claim 7, and the names of
    the frozen and fine-tuned transfer variants (AnB and AnB+, or SnB and SnB+)."""

    run: xr.Dataset
    d: xr.Dataset
    dec: xr.Dataset
    cuts: list[int]
    margin: float
    t: str
    t_plus: str
    pooled: bool

    def acc(self, variant: str) -> xr.DataArray:
        return self.d["acc"].sel(variant=variant)

    def reps(self, da: xr.DataArray) -> xr.DataArray:
        """``da`` per seed (or per seed and direction, pooled): the values the intervals are over."""
        return replicates(da, self.pooled)

    def at(self, da: xr.DataArray, n) -> np.ndarray:
        return self.reps(da).sel(n=n).values

    @property
    def top(self) -> int:
        return self.cuts[-1]


def _early_layers_transfer(s: _Split) -> Verdict:
    early = [n for n in s.cuts if n <= 2]
    if not early:
        return UNDECIDED, ["no cut n <= 2 run"]
    return _no_difference([(f"{v} - baseB at n={n}", _on(s.at(s.acc(v) - s.d["base"], n)))
                           for n in early for v in ("BnB", s.t)], s.margin)


def _coadaptation_dip(s: _Split) -> Verdict:
    """The deepest co-adaptation dip among the middle cuts, then the recovery from it to the top."""
    middle_cuts = [n for n in s.cuts if 2 < n < s.top]
    if not middle_cuts:
        return UNDECIDED, ["needs cuts between n = 3 and the top"]
    dips = {n: estimate(s.at(s.dec["coadaptation"], n)) for n in middle_cuts}
    n_dip = max(dips, key=lambda n: dips[n].mean if np.isfinite(dips[n].mean) else -np.inf)
    # a difference between cuts is taken within each seed and direction, then averaged: averaging first would set
    # the directions finished at one cut against those finished at the other
    recovery = s.reps(s.acc("BnB").sel(n=s.top) - s.acc("BnB").sel(n=n_dip)).values
    dip = s.at(s.dec["coadaptation"], n_dip)
    return _all_on_side([(f"baseB - BnB at n={n_dip} (deepest middle dip)", _on(dip)),
                         (f"BnB(n={s.top}) - BnB(n={n_dip}) (recovery)", _on(recovery))], positive=True,
                        family=len(middle_cuts) + 1)  # the dip was chosen among the middle cuts


def _selffer_finetune(s: _Split) -> Verdict:
    return _no_difference([(f"BnB+ - baseB at n={n}", _on(s.at(s.dec["selffer_finetune"], n))) for n in s.cuts],
                          s.margin)


def _specialization_grows(s: _Split) -> Verdict:
    """Decided on the least-squares slope of AnB - BnB (SnB - BnB) over n, per seed (the mean of its directions'
    slopes)."""
    gap = (s.acc(s.t) - s.acc("BnB")).transpose("replicate", "target", "n")

    def slope(row: np.ndarray) -> float:
        return np.polyfit(s.cuts, row, 1)[0] if np.isfinite(row).all() and len(s.cuts) > 1 else np.nan

    slopes = gap.isel(n=0, drop=True).copy(data=np.apply_along_axis(slope, -1, gap.values))
    return _all_on_side([(f"slope of {s.t} - BnB per layer", _on(s.reps(slopes).values))], positive=False)


def _transfer_falls(s: _Split) -> Verdict:
    middle = s.cuts[len(s.cuts) // 2]
    if middle == s.top:
        return UNDECIDED, ["needs a middle cut and a top cut"]
    anb = {n: s.at(s.acc(s.t), n) for n in s.cuts}
    fall = estimate(s.reps(s.acc(s.t).sel(n=s.top) - s.acc(s.t).sel(n=middle)).values)  # within each direction
    means = {n: np.nanmean(v) for n, v in anb.items() if np.isfinite(v).any()}
    lowest = min(means, key=means.get, default=None)
    evidence = [f"{s.t}(n={s.top}) - {s.t}(n={middle}): {fall}", f"lowest mean {s.t} at n={lowest}"]
    if fall.above():
        return FAILS, evidence
    if fall.below() and lowest == s.top:
        return HOLDS, evidence
    return UNDECIDED, evidence


def _lingering_boost(s: _Split) -> Verdict:
    """Decided on the boost averaged over n per seed."""
    boost = s.reps(s.dec["lingering"].mean("n", skipna=False)).values  # each direction's mean over n first
    return _all_on_side([(f"{s.t_plus} - baseB, mean over n", _on(boost))], positive=True)


def _dissimilar_loses_more(s: _Split) -> Verdict:
    contrast = {k: v for k, v in split_contrast_values(s.run, pooled=s.pooled).items() if k[1] >= 2}
    if not contrast:
        return UNDECIDED, ["needs a dissimilar split run beside the random one"]
    # a Welch interval's n counts both groups' seeds: say how many each split gave, so it never reads as directions
    return _all_on_side([(f"{split} minus {SIMILAR_SPLIT}, relative drop at n={n} ({_seeds(a)} and {_seeds(b)} "
                          "seeds; n below counts both)", lambda level, a=a, b=b: welch(a, b, level))
                         for (split, n), (a, b) in contrast.items()], positive=True)


def _seeds(values) -> int:
    return int(np.isfinite(np.asarray(values, dtype=np.float64)).sum())


def _random_worse(s: _Split) -> Verdict:
    return _all_on_side([(f"RnB - {s.t} at n={n}", _on(s.at(s.acc("RnB") - s.acc(s.t), n))) for n in s.cuts],
                        positive=False)


# Each claim's text, with {t} and {t_plus} standing for the transfer variants (AnB and AnB+, or SnB and SnB+)
CLAIMS: tuple[tuple[str, Callable[[_Split], Verdict]], ...] = (
    ("n = 1-2: BnB and {t} are within noise of baseB", _early_layers_transfer),
    ("BnB dips at middle layers and recovers at the top", _coadaptation_dip),
    ("BnB+ is within noise of baseB at every n", _selffer_finetune),
    ("{t} - BnB grows more negative with n", _specialization_grows),
    ("{t} falls after the middle layers and is lowest at the top", _transfer_falls),
    ("{t_plus} beats baseB (the lingering boost of transfer)", _lingering_boost),
    ("a dissimilar split loses more than the similar one at n >= 2", _dissimilar_loses_more),
    ("random frozen layers do worse than transferred ones at every n", _random_worse),
)
# claim number -> why a one-directional run cannot check it
ONE_DIRECTIONAL_LEFT_OUT = {
    7: "it compares transfer between the two tasks of a dissimilar split with a similar split's, and a source "
       "network trained elsewhere is neither split's task A"}


def check_claims(ds: xr.Dataset, split: str = SIMILAR_SPLIT, margin: float = MARGIN,
                 pooled: bool = False, voided: list[dict] = ()) -> list[Claim]:
    """The eight claims on ``split`` (the similar-task split; claim 7 compares the others with it); ``margin`` is
    the equivalence margin of the no-difference claims 1 and 3; ``pooled`` counts each direction of a seed as a
    replicate (optimistic: see :mod:`analysis.decomposition`). In a one-directional run, those that need task A's
    base network are left out (verdict LEFT_OUT, with why as their evidence). ``voided``: the warnings that make
    the numbers of a split meaningless (``{"split", "reason"}``, :func:`probe.analysis.sanity.voids`); a claim that
    rests on such a split is left undecided, with the reason in its evidence."""
    return void(_checked(ds, split, margin, pooled), voided, split)


def void(claims: list[Claim], voided: list[dict], split: str) -> list[Claim]:
    """``claims`` with every decided verdict that rests on a voided split undecided, its reasons added to the
    evidence: claim 7 rests on every split of the run, the others on ``split``."""
    out = []
    for c in claims:
        reasons = [v["reason"] for v in voided if c.number == 7 or v["split"] in (split, None)]
        if c.verdict in (HOLDS, FAILS) and reasons:
            labels = tuple(dict.fromkeys(v.get("label", "a warning") for v in voided
                                         if c.number == 7 or v["split"] in (split, None)))
            c = Claim(c.number, c.text, UNDECIDED, [*c.evidence, *(f"undecided, since the intervals above would give "
                                                                   f"'{c.verdict}' but {r}" for r in reasons)],
                      labels)
        out.append(c)
    return out


def supported(claims: list[Claim], other: list[Claim], metric: str) -> list[Claim]:
    """``claims`` with every decided verdict that the same claims checked in another ``metric`` (``other``: the
    class-balanced accuracy, on a test set of unequal classes) do not reach left undecided, saying so."""
    theirs = {c.number: c.verdict for c in other}
    out = []
    for c in claims:
        if c.verdict in (HOLDS, FAILS) and theirs.get(c.number) != c.verdict:
            c = Claim(c.number, c.text, UNDECIDED, [*c.evidence, f"undecided, since the intervals above would give "
                                                                 f"'{c.verdict}' but the {metric} accuracy gives "
                                                                 f"'{theirs.get(c.number)}'"])
        out.append(c)
    return out


def _checked(ds: xr.Dataset, split: str, margin: float, pooled: bool) -> list[Claim]:
    """The claims as their intervals decide them, before any warning is heard (:func:`check_claims`)."""
    t, t_plus = transfer_names(ds)
    texts = [text.format(t=t, t_plus=t_plus) for text, _ in CLAIMS]
    left_out = ONE_DIRECTIONAL_LEFT_OUT if one_directional(ds) else {}
    unchecked = (f"no {split!r} split in this run" if split not in ds["split"].values
                 else "no cut networks in this run" if not ds["n"].size else None)
    s = None if unchecked else _Split(ds, ds.sel(split=split), decompose(ds).sel(split=split),
                                      [int(n) for n in ds["n"].values], margin, t, t_plus, pooled)
    claims = []
    for number, (text, (_, check)) in enumerate(zip(texts, CLAIMS), 1):
        if number in left_out:
            claims.append(Claim(number, text, LEFT_OUT, [left_out[number]]))
        elif s is None:
            claims.append(Claim(number, text, evidence=[unchecked]))
        else:
            claims.append(Claim(number, text, *check(s)))
    return claims

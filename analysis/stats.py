"""Means with 95% confidence intervals over replicates, and the tests behind claims about differences.

Pure functions on 1-D arrays of per-replicate values (NaN marks a missing replicate and is dropped). One replicate
gives a mean but no interval: the interval is NaN, never a made-up width.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np
from scipy import stats

from probe.errors import ProbeError

LEVEL = 0.95


@dataclass(frozen=True)
class Estimate:
    """Mean over ``replicates`` values, its two-sided t interval (NaN with fewer than 2) and the t-test p-value of
    mean = 0 (NaN with fewer than 2, or when the values do not vary)."""

    mean: float
    low: float
    high: float
    replicates: int
    p: float

    @property
    def has_interval(self) -> bool:
        return self.replicates >= 2 and np.isfinite(self.low)

    def above(self, value: float = 0.0) -> bool:
        """The whole interval lies above ``value``."""
        return self.has_interval and self.low > value

    def below(self, value: float = 0.0) -> bool:
        """The whole interval lies below ``value``."""
        return self.has_interval and self.high < value

    def to_dict(self) -> dict:
        return asdict(self)

    def text(self, signed: bool = True) -> str:
        """``mean [low, high] (n=replicates)``; ``signed`` for a difference (its sign is the finding), unsigned for
        an accuracy, which is never negative."""
        f = "+.4f" if signed else ".4f"
        if self.replicates == 0:
            return "no data"
        if not self.has_interval:
            return f"{self.mean:{f}} (n={self.replicates}, no interval)"
        return f"{self.mean:{f}} [{self.low:{f}}, {self.high:{f}}] (n={self.replicates})"

    def __str__(self) -> str:
        return self.text()


def _values(x) -> np.ndarray:
    a = np.asarray(x, dtype=np.float64)
    if a.ndim != 1:
        raise ProbeError(f"expected a 1-D array of per-replicate values, got shape {a.shape}")
    return a[np.isfinite(a)]


def estimate(x, level: float = LEVEL) -> Estimate:
    """Mean and t confidence interval of the finite values of ``x``."""
    a = _values(x)
    n = len(a)
    if n == 0:
        return Estimate(np.nan, np.nan, np.nan, 0, np.nan)
    mean = float(a.mean())
    if n < 2:
        return Estimate(mean, np.nan, np.nan, 1, np.nan)
    sem = float(a.std(ddof=1) / np.sqrt(n))
    if sem == 0.0:
        return Estimate(mean, mean, mean, n, np.nan if mean == 0 else 0.0)
    return _t_estimate(mean, sem, n - 1, n, level)


def paired(a, b, level: float = LEVEL) -> Estimate:
    """The mean difference ``a - b`` over replicates measured in both, with its interval and paired t-test."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    if a.shape != b.shape or a.ndim != 1:
        raise ProbeError(f"paired values need two 1-D arrays of one shape, got {a.shape} and {b.shape}")
    return estimate(a - b, level)


def welch(a, b, level: float = LEVEL) -> Estimate:
    """The difference of means ``mean(a) - mean(b)`` of two independent groups (Welch's unequal-variance t);
    ``replicates`` counts those of both groups."""
    a, b = _values(a), _values(b)
    if len(a) == 0 or len(b) == 0:
        return Estimate(np.nan, np.nan, np.nan, 0, np.nan)
    diff = float(a.mean() - b.mean())
    n = len(a) + len(b)
    if len(a) < 2 or len(b) < 2:
        return Estimate(diff, np.nan, np.nan, n, np.nan)
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    se = float(np.sqrt(va + vb))
    if se == 0.0:
        return Estimate(diff, diff, diff, n, np.nan if diff == 0 else 0.0)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))
    return _t_estimate(diff, se, df, n, level)


def _t_estimate(mean: float, se: float, df: float, replicates: int, level: float) -> Estimate:
    """The t interval ``mean +- t(df) se`` and the two-sided p-value of ``mean / se`` (the statistic of scipy's
    ``ttest_1samp``/``ttest_rel``/Welch ``ttest_ind``)."""
    half = float(stats.t.ppf(0.5 + level / 2, df)) * se
    p = float(2 * stats.t.sf(abs(mean / se), df))
    return Estimate(mean, mean - half, mean + half, replicates, p)


POWER = 0.8  # the chance a detection limit's effect is detected


def detection_limit(spread: float, seeds: int, level: float = LEVEL, power: float = POWER) -> float:
    """The smallest true mean difference that ``seeds`` replicates, whose per-replicate values scatter with standard
    deviation ``spread``, detect (their ``level`` t interval above zero) with probability ``power``:
    ``(t(1 - (1 - level) / 2) + t(power)) spread / sqrt(seeds)`` on ``seeds - 1`` degrees of freedom, the
    standard approximation that neglects the noncentral t's skew. NaN with fewer than 2 seeds or no spread."""
    if not (np.isfinite(spread) and spread >= 0) or seeds < 2:
        return np.nan
    df = seeds - 1
    return float((stats.t.ppf(0.5 + level / 2, df) + stats.t.ppf(power, df)) * spread / np.sqrt(seeds))


def spread(x) -> float:
    """The sample standard deviation of the finite values of ``x`` (NaN with fewer than 2)."""
    a = _values(x)
    return float(a.std(ddof=1)) if len(a) >= 2 else np.nan


def spread_of_interval(low: float, high: float, replicates: int, level: float = LEVEL) -> float:
    """The seed-to-seed standard deviation behind a t interval [low, high] over ``replicates`` values (its half-width
    is ``t sd / sqrt(replicates)``): a committed table's interval gives its detection limit without its raw values."""
    if replicates < 2 or not (np.isfinite(low) and np.isfinite(high)):
        return np.nan
    return float((high - low) / 2 * np.sqrt(replicates) / stats.t.ppf(0.5 + level / 2, replicates - 1))


def excluded_drop(drop: Estimate, gain: Estimate) -> float:
    """The smallest drop δ a null excludes once the bases' own bias is bounded: the drop's upper limit plus the
    convergence check's upper limit on how much the bases still gain (the longer bases' gain, a bound on how far a
    base, and with it the drop, sits below where training longer would take it; a negative bound counts as 0). NaN
    where either has no interval: without the check, a null bounds nothing."""
    if not (drop.has_interval and gain.has_interval):
        return np.nan
    return float(drop.high + max(gain.high, 0.0))


def line_fits(x, y) -> tuple[np.ndarray, np.ndarray]:
    """Per replicate, the least-squares line ``y = intercept + slope x`` through its finite points: ``x`` is 1-D
    (k,), ``y`` is (replicates, k). A replicate with fewer than two distinct x gets NaN, so that :func:`estimate`
    over the slopes has one value per replicate that could be fitted: the replicate, not the point, is the unit."""
    x = np.asarray(x, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    if x.ndim != 1 or y.ndim != 2 or y.shape[1] != len(x):
        raise ProbeError(f"line_fits needs x of shape (k,) and y of shape (replicates, k), got {x.shape} and {y.shape}")
    intercepts, slopes = np.full(len(y), np.nan), np.full(len(y), np.nan)
    for i, row in enumerate(y):
        ok = np.isfinite(row) & np.isfinite(x)
        if len(np.unique(x[ok])) < 2:
            continue
        slopes[i], intercepts[i] = np.polyfit(x[ok], row[ok], 1)
    return intercepts, slopes

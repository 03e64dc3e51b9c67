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

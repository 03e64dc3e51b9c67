"""Similarity of two representations of the same samples: CKA, CCA (SVCCA, PWCCA), Procrustes distance and RSA.

Used to ask *why* transfer works or fails (Yosinski et al. 2014 measure only accuracy): how similar layer n of baseA
is to layer n of baseB, and where along the depth the two networks part ways.

Every function takes two representations as ``(n_samples, n_features)`` arrays whose rows are the same samples in
the same order, checks them up front (2-D, same number of samples, enough samples, finite) and computes in float64
on features centered over the samples, so float32 activations with a large offset lose nothing. Bad input raises
:class:`ProbeError` with a one-line message.

References
    Kornblith, Norouzi, Lee, Hinton. Similarity of neural network representations revisited. ICML 2019 (CKA).
    Song, Smola, Gretton, Bedo, Borgwardt. Feature selection via dependence maximization. JMLR 2012 (unbiased HSIC).
    Nguyen, Raghu, Kornblith. Do wide and deep networks learn the same things? ICLR 2021 (minibatch CKA).
    Raghu, Gilmer, Yosinski, Sohl-Dickstein. SVCCA. NeurIPS 2017.
    Morcos, Raghu, Bengio. Insights on representational similarity in neural networks with canonical correlation.
    NeurIPS 2018 (PWCCA).
    Ding, Denain, Steinhardt. Grounding representation similarity with statistical testing. NeurIPS 2021 and
    Williams, Kunz, Kornblith, Linderman. Generalized shape metrics on neural representations. NeurIPS 2021
    (Procrustes distance).
    Kriegeskorte, Mur, Bandettini. Representational similarity analysis. Front. Syst. Neurosci. 2008 (RSA).
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import numpy as np
import xarray as xr
from scipy import stats
from scipy.spatial.distance import pdist
from sklearn.metrics.pairwise import euclidean_distances
from sklearn.preprocessing import KernelCenterer

from probe.errors import ProbeError

# the unbiased HSIC estimator divides by n (n - 3) and (n - 2): it needs at least 4 samples
MIN_UNBIASED = 4


def _shape(a, name: str) -> np.ndarray:
    """``a`` as an array of shape (samples, features), unconverted."""
    a = np.asarray(a)
    if a.ndim != 2:
        raise ProbeError(f"{name} must be a 2-D (samples, features) array, got shape {a.shape}")
    if a.shape[1] == 0:
        raise ProbeError(f"{name} has no features (shape {a.shape})")
    return a


def _same_samples(nx: int, ny: int, min_samples: int, names: tuple[str, str] = ("x", "y")) -> None:
    if nx != ny:
        raise ProbeError(f"{names[0]} has {nx} samples and {names[1]} has {ny}; expected the same samples in the "
                         "same order")
    if nx < min_samples:
        raise ProbeError(f"{nx} samples are too few; this measure needs at least {min_samples}")


def _finite(a: np.ndarray, name: str) -> np.ndarray:
    bad = a.size - np.count_nonzero(np.isfinite(a))
    if bad:
        raise ProbeError(f"{name} has {bad} non-finite values (NaN or inf); expected finite activations")
    return a


def _matrix(a, name: str) -> np.ndarray:
    """``a`` as a finite (samples, features) float64 array."""
    return _finite(_shape(a, name).astype(np.float64), name)


def _center(a: np.ndarray) -> np.ndarray:
    """Center the float64 (samples, features) array ``a`` over the samples in place; returns the mean removed."""
    constant = np.ptp(a, axis=0) == 0
    mean = a.mean(axis=0)
    a -= mean
    # exactly zero: centering a constant such as 0.1 leaves rounding residue, which no measure may read as
    # variation (a layer of constant units is refused, not given a similarity)
    a[:, constant] = 0.0
    return mean


def _paired(x, y, min_samples: int, names: tuple[str, str] = ("x", "y")) -> tuple[np.ndarray, np.ndarray]:
    """``x`` and ``y`` checked as a pair of representations of the same samples, centered in float64."""
    x, y = _matrix(x, names[0]), _matrix(y, names[1])
    _same_samples(len(x), len(y), min_samples, names)
    for a in (x, y):  # in place: _matrix's astype made a copy
        _center(a)
    return x, y


def centered_svd(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(centered, u, s)`` for a finite float64 ``x`` (n, d), which is not modified: a centered copy of ``x`` (constant
    units exactly 0), and the left singular vectors (n, r) and singular values (r,) of it cut to its numerical rank r.

    The rank tolerance is numpy's matrix_rank one for ``x`` as given, before centering (s[0] + sqrt(n) |mean| bounds
    its spectral norm), not for the centered matrix: entries, and the mean centering subtracts, carry rounding
    relative to their uncentered size. Under a large offset the computed mean is off by that rounding, leaving a
    residue 1 e^T along the all-ones vector, and a unit collinear with others is collinear only to that rounding;
    both lie far above the centered matrix's own rounding level s[0] eps. Kept as directions of variation, the
    residue lies in the span of any class indicators (H-score 1 too high) and is shared by any two representations
    (a spurious canonical correlation near 1)."""
    centered = x.copy()
    mean = _center(centered)
    u, s, _ = np.linalg.svd(centered, full_matrices=False)
    tol = max(x.shape) * np.finfo(np.float64).eps * (s.max(initial=0.0) + np.sqrt(len(x)) * np.linalg.norm(mean))
    rank = int(np.count_nonzero(s > tol))
    return centered, u[:, :rank], s[:rank]


def _grams(k, l, min_samples: int) -> tuple[np.ndarray, np.ndarray]:
    k, l = _matrix(k, "k"), _matrix(l, "l")
    for name, g in (("k", k), ("l", l)):
        if g.shape[0] != g.shape[1]:
            raise ProbeError(f"Gram matrix {name} must be square (n_samples, n_samples), got shape {g.shape}")
    _same_samples(len(k), len(l), min_samples, ("Gram matrix k", "Gram matrix l"))
    return k, l


class UndefinedCKA(ProbeError):
    """A representation does not vary over the samples, so its HSIC with itself is not positive and CKA is
    undefined."""


def _ratio(hsic_xy: float, hsic_xx: float, hsic_yy: float) -> float:
    """CKA = HSIC(K, L) / sqrt(HSIC(K, K) HSIC(L, L)), refusing a representation that does not vary."""
    for name, h in (("x", hsic_xx), ("y", hsic_yy)):
        if not h > 0:
            raise UndefinedCKA(f"{name} has no usable variation across the samples (HSIC({name}, {name}) = {h:.3g}, "
                             "expected > 0); CKA is undefined")
    return float(hsic_xy / np.sqrt(hsic_xx * hsic_yy))


# ---------------------------------------------------------------------------------------------------------- CKA


def _hsic_from_traces(tr_kl: float, kx: np.ndarray, ky: np.ndarray, debiased: bool) -> float:
    """HSIC of the linear kernels K = X X^T, L = Y Y^T of *centered* X, Y, from tr(KL) and the per-sample squared
    norms (the diagonals of K and L).

    Biased: tr(KHLH) / (n-1)^2, and H does nothing to centered features. Unbiased (Song et al. 2012, eq. 5):
    [tr(K~L~) + 1'K~1 1'L~1 / ((n-1)(n-2)) - 2/(n-2) 1'K~L~1] / (n(n-3)) with K~ = K minus its diagonal; centering
    makes K1 = 0, so 1'K~1 = -sum(kx), K~1 = -kx and the three terms reduce to the ones below (Kornblith et al.'s
    feature-space form), needing no n x n matrix."""
    n = len(kx)
    if not debiased:
        return tr_kl / (n - 1) ** 2
    return (tr_kl - n / (n - 2) * (kx @ ky) + kx.sum() * ky.sum() / ((n - 1) * (n - 2))) / (n * (n - 3))


def _linear_hsics(x: np.ndarray, y: np.ndarray, debiased: bool) -> tuple[float, float, float]:
    """HSIC(K, L), HSIC(K, K), HSIC(L, L) of centered ``x`` (n, dx) and ``y`` (n, dy).

    The traces tr(KL) = ||X^T Y||_F^2 (and likewise for KK, LL) come from whichever products are cheaper: the two
    n x n Grams (n^2 (dx + dy) flops, fewer samples than features, e.g. a minibatch of a wide layer) or the three
    feature-space products ((dx + dy)^2 n flops). Either way memory stays at the smaller of n^2 and (dx + dy)^2."""
    n, dx, dy = len(x), x.shape[1], y.shape[1]
    if n < dx + dy:
        k, l = x @ x.T, y @ y.T
        traces = np.vdot(k, l), np.vdot(k, k), np.vdot(l, l)
    else:
        traces = [np.vdot(p, p) for p in (x.T @ y, x.T @ x, y.T @ y)]
    kx, ky = np.einsum("ij,ij->i", x, x), np.einsum("ij,ij->i", y, y)
    return (_hsic_from_traces(traces[0], kx, ky, debiased), _hsic_from_traces(traces[1], kx, kx, debiased),
            _hsic_from_traces(traces[2], ky, ky, debiased))


def linear_cka(x, y, debiased: bool = False) -> float:
    """Linear CKA (Kornblith et al. 2019) of ``x`` (n, dx) and ``y`` (n, dy) by the feature-space formulas (with
    fewer samples than features, the same traces come from the smaller n x n Grams).

    Biased: ||Xc^T Yc||_F^2 / (||Xc^T Xc||_F ||Yc^T Yc||_F). ``debiased`` uses the unbiased HSIC estimator (Song et
    al. 2012), as Nguyen et al. (2021) do: near 0 for independent representations even with more features than
    samples, where the biased value is far above 0; it can be slightly negative. Invariant to orthogonal transforms
    and isotropic scaling of either side, not to other invertible maps."""
    x, y = _paired(x, y, MIN_UNBIASED if debiased else 2)
    return _ratio(*_linear_hsics(x, y, debiased))


def gram_linear(x) -> np.ndarray:
    """The (n, n) linear Gram matrix Xc Xc^T of ``x`` (n, d) centered over the samples, in float64."""
    x = _matrix(x, "x")
    x -= x.mean(axis=0)
    return x @ x.T


def gram_rbf(x, sigma: float = 0.8) -> np.ndarray:
    """The (n, n) RBF Gram matrix exp(-|xi - xj|^2 / (2 b^2)) of ``x`` (n, d), bandwidth b = ``sigma`` x the median
    distance between distinct samples (Kornblith et al. 2019, Sec. 6.1; their code takes the median over all n^2
    entries, zeros of the diagonal included, which makes b slightly smaller for small n). Invariant to rotation,
    translation and isotropic scaling of ``x``."""
    if not sigma > 0:
        raise ProbeError(f"RBF bandwidth sigma {sigma} must be a positive fraction of the median distance")
    x = _matrix(x, "x")
    if len(x) < 2:
        raise ProbeError(f"{len(x)} samples are too few for an RBF kernel; it needs at least 2")
    # centering first keeps the squared distances from cancelling catastrophically (|x|^2 + |y|^2 - 2 x.y)
    x -= x.mean(axis=0)
    sq = euclidean_distances(x, squared=True)
    median = np.median(sq[np.triu_indices(len(x), 1)])
    if not median > 0:
        raise ProbeError("more than half of the pairs of samples of x are identical (median distance 0); the RBF "
                         "bandwidth is undefined")
    return np.exp(-sq / (2 * sigma**2 * median))


def _hsic_gram(k: np.ndarray, l: np.ndarray, debiased: bool) -> float:
    """HSIC of two symmetric (n, n) Gram matrices: biased tr(KHLH) / (n-1)^2, or Song et al.'s (2012) unbiased
    estimator, which needs no centering (it is invariant to adding constants to the features)."""
    n = len(k)
    if not debiased:
        return np.vdot(KernelCenterer().fit_transform(k), l) / (n - 1) ** 2
    k, l = k.copy(), l.copy()
    np.fill_diagonal(k, 0.0)
    np.fill_diagonal(l, 0.0)
    rk, rl = k.sum(axis=1), l.sum(axis=1)
    return (np.vdot(k, l) + rk.sum() * rl.sum() / ((n - 1) * (n - 2)) - 2 / (n - 2) * (rk @ rl)) / (n * (n - 3))


def cka_from_grams(k, l, debiased: bool = False) -> float:
    """CKA of two (n, n) Gram matrices of the same samples (Kornblith et al. 2019, eq. 4), any kernel: the Gram-space
    counterpart of :func:`linear_cka` (equal to it for :func:`gram_linear` Grams) at O(n^2) memory."""
    k, l = _grams(k, l, MIN_UNBIASED if debiased else 2)
    return _ratio(_hsic_gram(k, l, debiased), _hsic_gram(k, k, debiased), _hsic_gram(l, l, debiased))


def rbf_cka(x, y, sigma: float = 0.8, debiased: bool = False) -> float:
    """RBF-kernel CKA of ``x`` (n, dx) and ``y`` (n, dy), bandwidth ``sigma`` x the median distance (see
    :func:`gram_rbf`; Kornblith et al. 2019 use 0.2 to 0.8)."""
    x, y = _paired(x, y, MIN_UNBIASED if debiased else 2)
    return cka_from_grams(gram_rbf(x, sigma), gram_rbf(y, sigma), debiased)


def cka_matrix(xs: Sequence, ys: Sequence, debiased: bool = False) -> np.ndarray:
    """Linear CKA of every layer in ``xs`` against every layer in ``ys`` (e.g. baseA's layers against baseB's), as
    an array of shape (len(xs), len(ys)); each layer is (n, d_layer) over the same n samples. Each cell costs one
    :func:`linear_cka`."""
    if not len(xs) or not len(ys):
        raise ProbeError(f"cka_matrix needs at least one layer on each side, got {len(xs)} and {len(ys)}")
    out = np.empty((len(xs), len(ys)))
    for i, x in enumerate(xs):
        for j, y in enumerate(ys):
            cx, cy = _paired(x, y, MIN_UNBIASED if debiased else 2, (f"xs[{i}]", f"ys[{j}]"))
            out[i, j] = _ratio(*_linear_hsics(cx, cy, debiased))
    return out


# ----------------------------------------------------------------------------------------------- minibatch CKA


class MinibatchCKA:
    """Linear CKA accumulated over minibatches (Nguyen et al. 2021, Sec. 3.1).

    Each :meth:`update` adds one batch's unbiased HSIC(K, L), HSIC(K, K) and HSIC(L, L) (in float64, features
    centered within the batch, which the unbiased estimator does not notice); :meth:`value` is
    mean HSIC(K, L) / sqrt(mean HSIC(K, K) mean HSIC(L, L)), not a mean of per-batch CKAs (that would be biased by
    the batch size). Each batch's HSIC is unbiased for the distribution it was drawn from, so batches must be random
    draws of the whole set: class-sorted batches measure within-class similarity only. Every batch counts equally."""

    def __init__(self) -> None:
        self.batches = 0
        self._sums = np.zeros(3)
        self._features: tuple[int, int] | None = None

    def update(self, x_batch, y_batch) -> None:
        """Add one batch: ``x_batch`` (b, dx) and ``y_batch`` (b, dy), the same b >= 4 samples."""
        self._add(*_paired(x_batch, y_batch, MIN_UNBIASED, ("x batch", "y batch")))

    def _add(self, x: np.ndarray, y: np.ndarray) -> None:
        features = (x.shape[1], y.shape[1])
        if self._features is not None and features != self._features:
            raise ProbeError(f"batch has {features[0]} and {features[1]} features, unlike the {self._features[0]} "
                             f"and {self._features[1]} of the batches before it")
        self._features = features
        self._sums += _linear_hsics(x, y, debiased=True)
        self.batches += 1

    def value(self) -> float:
        if not self.batches:
            raise ProbeError("minibatch CKA has no batch yet; add batches of at least 4 samples with update()")
        return _ratio(*(self._sums / self.batches))


def _batch_starts(n: int, batch_size: int) -> range:
    """Starts of consecutive batches of ``batch_size``, without a last ragged batch of fewer than 4 samples (the
    unbiased estimator cannot use it; at most 3 samples are left out)."""
    if batch_size < MIN_UNBIASED:
        raise ProbeError(f"batch size {batch_size} must be at least {MIN_UNBIASED} (the unbiased HSIC estimator "
                         "needs 4 samples)")
    if n < MIN_UNBIASED:
        raise ProbeError(f"{n} samples are too few; minibatch CKA needs at least {MIN_UNBIASED}")
    return range(0, n - MIN_UNBIASED + 1, batch_size)


def minibatch_cka(x, y, batch_size: int) -> float:
    """Minibatch CKA (:class:`MinibatchCKA`) of ``x`` (n, dx) and ``y`` (n, dy) over consecutive batches of
    ``batch_size`` rows (a last batch of fewer than 4 is dropped). Shuffle the rows of both first, with one
    permutation, when their order is structured (e.g. sorted by class). One batch of all n rows gives
    ``linear_cka(x, y, debiased=True)``."""
    x, y = _finite(_shape(x, "x"), "x"), _finite(_shape(y, "y"), "y")
    _same_samples(len(x), len(y), MIN_UNBIASED)
    acc = MinibatchCKA()
    for start in _batch_starts(len(x), batch_size):
        stop = start + batch_size
        acc._add(*_paired(x[start:stop], y[start:stop], MIN_UNBIASED, (f"x[{start}:{stop}]", f"y[{start}:{stop}]")))
    return acc.value()


def _rows(a: xr.DataArray, start: int, stop: int) -> np.ndarray:
    """Samples ``start:stop`` of ``a`` loaded as a (rows, features) float array: a ``*_position`` dim (random spatial
    positions, ``--spatial sample:K``) becomes rows, as Kornblith et al. treat positions as samples; every other
    non-sample dim is flattened into features."""
    part = a.isel(sample=slice(start, stop))
    positions = [d for d in a.dims if d.endswith("_position")]
    part = part.transpose("sample", *positions, ...)
    values = part.values
    return values.reshape(values.shape[0] * (values.shape[1] if positions else 1), -1)


def _position_dim(arr: xr.DataArray, name: str) -> str | None:
    dims = [d for d in arr.dims if d.endswith("_position")]
    if len(dims) > 1:
        raise ProbeError(f"{name} has more than one position dim: {arr.dims}; expected at most one")
    return dims[0] if dims else None


def _check_streams(a: xr.DataArray, b: xr.DataArray, names: tuple[str, str]) -> None:
    """The two arrays hold the same samples in the same order (and the same spatial positions, where positions are
    samples), so their rows pair up."""
    for name, arr in zip(names, (a, b)):
        if "sample" not in arr.dims or "sample" not in arr.coords:
            raise ProbeError(f"{name} has dims {arr.dims} and no 'sample' coordinate; expected an activation array "
                             "with dims (sample, ...)")
    if not np.array_equal(a["sample"].values, b["sample"].values):
        raise ProbeError(f"the sample orders differ: {names[0]} has {a.sizes['sample']} samples starting "
                         f"{a['sample'].values[:3].tolist()}, {names[1]} {b.sizes['sample']} starting "
                         f"{b['sample'].values[:3].tolist()}; expected the same samples in the same order")
    pa, pb = _position_dim(a, names[0]), _position_dim(b, names[1])
    if (pa is None) != (pb is None):
        raise ProbeError(f"only one of {names[0]} (dims {a.dims}) and {names[1]} (dims {b.dims}) has sampled "
                         "positions, so their rows do not pair up; expected two spatially sampled layers or none")
    if pa is not None:
        # extraction seeds the positions by map size: layers of different sizes sample different places of an image
        for axis in ("y", "x"):
            ca, cb = f"{pa.removesuffix('_position')}_pos_{axis}", f"{pb.removesuffix('_position')}_pos_{axis}"
            if ca not in a.coords or cb not in b.coords or not np.array_equal(a[ca].values, b[cb].values):
                raise ProbeError(f"{names[0]} and {names[1]} sampled different spatial positions ({ca} vs {cb}); "
                                 "expected layers of one map size")


def streaming_cka(a: xr.DataArray, b: xr.DataArray, batch_size: int = 1000) -> float:
    """Minibatch CKA of two activation arrays with dims (sample, ...), e.g. one layer of two networks of a store
    opened lazily (``xr.open_zarr`` / :func:`analysis.stores.open_store`), loading ``batch_size`` samples at a time:
    50k samples x 4096 units need neither an n x n matrix nor the whole array in memory.

    The ``sample`` coordinates of ``a`` and ``b`` must be identical (unpaired samples give a meaningless value).
    A ``<layer>_position`` dim (``--spatial sample:K``) is folded into the samples, K rows per image (see
    :func:`_rows`), once both layers are seen to have sampled the same positions; ``batch_size`` still counts images.
    Every other non-sample dim is flattened into features. Batches are consecutive (a last one of fewer than 4
    samples is dropped), so the samples must be in random order: a ``label`` coordinate sorted by class gets a
    warning, as each batch would then hold one class or few."""
    names = (a.name or "a", b.name or "b")
    _check_streams(a, b, names)
    n = a.sizes["sample"]
    starts = _batch_starts(n, batch_size)
    if "label" in a.coords and len(starts) > 1:
        labels = a["label"].values
        if len(np.unique(labels)) > 1 and np.all(labels[1:] >= labels[:-1]):
            warnings.warn(f"the samples of {names[0]} are sorted by label, so consecutive batches of {batch_size} hold "
                          "one or few classes and minibatch CKA measures within-batch similarity only; shuffle the "
                          "samples first", stacklevel=2)
    acc = MinibatchCKA()
    for start in starts:
        stop = min(start + batch_size, n)
        acc._add(*_paired(_rows(a, start, stop), _rows(b, start, stop), MIN_UNBIASED,
                          (f"{names[0]}[{start}:{stop}]", f"{names[1]}[{start}:{stop}]")))
    return acc.value()


# ------------------------------------------------------------------------------------------ CCA, SVCCA, PWCCA


def _directions(u: np.ndarray, s: np.ndarray, keep: float | None) -> np.ndarray:
    """The fewest leading principal directions of ``u`` (n, rank), with singular values ``s``, that explain ``keep``
    of the variance (all of them for None)."""
    if keep is None:
        return u
    explained = np.cumsum(s**2) / np.sum(s**2)
    return u[:, :min(int(np.searchsorted(explained, keep) + 1), len(s))]


def _cca_bases(x, y, keep: float | None, min_samples: int = 3) -> tuple[np.ndarray, np.ndarray, np.ndarray,
                                                                              np.ndarray]:
    """Centered ``x``, ``y`` and orthonormal bases of the subspaces CCA compares: the top principal directions of
    each within its numerical rank (constant and collinear units add nothing; see :func:`centered_svd`).

    Two subspaces of dims px + py > n - 1 in the (n - 1)-dim space of centered samples share px + py - n + 1
    directions, which CCA reports as correlations of exactly 1 whatever the data. Then each side is cut to its top
    (n - 1) // 2 principal directions, with a warning: CCA needs many more samples than dimensions to mean much."""
    if keep is not None and not 0 < keep <= 1:
        raise ProbeError(f"variance fraction {keep} to keep must be in (0, 1], or None for all directions")
    x, y = _matrix(x, "x"), _matrix(y, "y")
    _same_samples(len(x), len(y), min_samples)
    (x, ux, sx), (y, uy, sy) = centered_svd(x), centered_svd(y)
    for name, s in (("x", sx), ("y", sy)):
        if not len(s):
            raise ProbeError(f"{name} does not vary across the samples (every unit is constant); CCA is undefined")
    qx, qy = _directions(ux, sx, keep), _directions(uy, sy, keep)
    n = len(x)
    if qx.shape[1] + qy.shape[1] > n - 1:
        cap = (n - 1) // 2
        warnings.warn(f"CCA of {qx.shape[1]} + {qy.shape[1]} dimensions over only {n} samples would find "
                      f"correlations of 1 by construction; keeping the top {cap} principal directions of each side "
                      "(use many more samples than units for a meaningful value)", stacklevel=3)
        qx, qy = qx[:, :cap], qy[:, :cap]
    return x, y, qx, qy


def cca(x, y, keep: float | None = None) -> np.ndarray:
    """Canonical correlations of ``x`` (n, dx) and ``y`` (n, dy), in descending order, min(px, py) of them.

    Computed as the singular values of Qx^T Qy for orthonormal bases Qx, Qy of the two centered column spaces (no
    covariance inversion, so rank-deficient inputs are fine; constant units drop out). ``keep`` first cuts each side
    to the top principal directions explaining that fraction of its variance (SVCCA, Raghu et al. 2017). With more
    dimensions than samples each side is cut further, with a warning (see :func:`_cca_bases`)."""
    _, _, qx, qy = _cca_bases(x, y, keep)
    return np.clip(np.linalg.svd(qx.T @ qy, compute_uv=False), 0.0, 1.0)


def svcca(x, y, keep: float | None = 0.99) -> float:
    """SVCCA (Raghu et al. 2017): mean canonical correlation after cutting each side to the principal directions
    explaining ``keep`` of its variance (None: all directions, plain mean CCA). With ``keep`` it is invariant to
    orthogonal maps and isotropic scaling; with None to any invertible linear map."""
    return float(cca(x, y, keep).mean())


def pwcca(x, y) -> float:
    """Projection-weighted CCA (Morcos et al. 2018, eq. 2): canonical correlations weighted by how much of the
    representation's units each canonical variate accounts for, alpha_i ~ sum_j |<h_i, x_j>|.

    Weighted from the side with fewer directions (all of its directions then have a canonical variate), as in the
    authors' code; with equal numbers, from ``x``. Invariant to any invertible linear map of either side."""
    x, y, qx, qy = _cca_bases(x, y, None)
    u, rho, vt = np.linalg.svd(qx.T @ qy, full_matrices=False)
    # canonical variates h_i (orthonormal, n-vectors) of the smaller side and that side's centered units
    h, units = (qx @ u, x) if qx.shape[1] <= qy.shape[1] else (qy @ vt.T, y)
    weights = np.abs(h.T @ units).sum(axis=1)
    return float(weights @ np.clip(rho, 0.0, 1.0) / weights.sum())


# ---------------------------------------------------------------------------------------- Procrustes and RSA


def procrustes(x, y, squared: bool = True) -> float:
    """Orthogonal Procrustes distance of ``x`` (n, dx) and ``y`` (n, dy) after centering and scaling each to unit
    Frobenius norm (units of the smaller side padded with zeros): min over orthogonal Q of ||X - YQ||_F^2 =
    2 - 2 ||X^T Y||_* (Ding et al. 2021), in [0, 2]; ``squared=False`` gives its square root, a metric (Williams et
    al. 2021). 0 exactly when one side is a rotation (or reflection) of the other up to scale."""
    x, y = _paired(x, y, 2)
    for name, a in (("x", x), ("y", y)):
        norm = np.linalg.norm(a)
        if not norm > 0:
            raise ProbeError(f"{name} does not vary across the samples; the Procrustes distance is undefined")
        a /= norm
    # rounding can take 2 - 2 ||.||_* a hair below 0 for identical shapes
    d = max(2.0 - 2.0 * np.linalg.norm(x.T @ y, "nuc"), 0.0)
    return d if squared else float(np.sqrt(d))


def rdm(x) -> np.ndarray:
    """Representational dissimilarity matrix of ``x`` (n, d) (Kriegeskorte et al. 2008): 1 - Pearson correlation of
    every pair of sample patterns across features, condensed to its upper triangle (n (n-1) / 2 values, in
    scipy.spatial.distance.pdist's order). Features are not centered: the correlation already removes each pattern's
    own mean and scale. A constant pattern has no correlation with anything (NaN distances)."""
    return pdist(_matrix(x, "x"), "correlation")


def rsa(x, y) -> float:
    """RSA: Spearman rank correlation of the RDMs (:func:`rdm`) of ``x`` (n, dx) and ``y`` (n, dy).

    Invariant to scaling and shifting each sample's pattern (not to rotating features). Samples whose pattern is
    constant in either representation (e.g. a ReLU layer silent for that image) have no dissimilarities; they are
    left out of both RDMs, with a warning."""
    x, y = _matrix(x, "x"), _matrix(y, "y")
    _same_samples(len(x), len(y), 3)
    flat = (np.ptp(x, axis=1) == 0) | (np.ptp(y, axis=1) == 0)
    if flat.any():
        warnings.warn(f"{np.count_nonzero(flat)} of {len(x)} samples have a constant pattern in x or y and are left "
                      "out of RSA", stacklevel=2)
        x, y = x[~flat], y[~flat]
        if len(x) < 3:
            raise ProbeError(f"only {len(x)} samples have a non-constant pattern in both x and y; RSA needs at least 3")
    dx, dy = rdm(x), rdm(y)
    for name, d in (("x", dx), ("y", dy)):
        if np.ptp(d) == 0:
            raise ProbeError(f"every pair of samples is equally dissimilar in {name}; RSA's rank correlation is "
                             "undefined")
    return float(stats.spearmanr(dx, dy).statistic)

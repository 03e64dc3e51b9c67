"""Representation similarity: invariances each measure has (and one it lacks), agreement of formulations that must
agree, a float64 reference for float32 inputs, and the traps (too few samples, unpaired or non-finite inputs, more
units than samples, constant units and patterns)."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import xarray as xr
from scipy.stats import ortho_group

from probe.analysis.similarity import (
    MinibatchCKA,
    cca,
    cka_from_grams,
    cka_matrix,
    gram_linear,
    gram_rbf,
    linear_cka,
    minibatch_cka,
    procrustes,
    pwcca,
    rbf_cka,
    rsa,
    streaming_cka,
    svcca,
)
from probe.errors import ProbeError

CKAS = {
    "linear": lambda x, y: linear_cka(x, y),
    "linear-debiased": lambda x, y: linear_cka(x, y, debiased=True),
    "rbf": lambda x, y: rbf_cka(x, y, sigma=0.8),
    "rbf-debiased": lambda x, y: rbf_cka(x, y, sigma=0.5, debiased=True),
}


def related(n=120, dx=12, dy=9, seed=0):
    """Two representations sharing a low-dimensional signal, with an uneven spectrum."""
    rng = np.random.default_rng(seed)
    z = rng.normal(size=(n, 4))
    x = z @ rng.normal(size=(4, dx)) + 0.5 * rng.normal(size=(n, dx)) * np.linspace(0.2, 2, dx)
    y = np.tanh(z @ rng.normal(size=(4, dy))) + 0.5 * rng.normal(size=(n, dy))
    return x, y


def song_hsic(k, l):
    """Song et al. (2012) unbiased HSIC, written out as in the paper (eq. 5), as a reference."""
    n = len(k)
    kt, lt = k - np.diag(np.diag(k)), l - np.diag(np.diag(l))
    one = np.ones(n)
    return (np.trace(kt @ lt) + (one @ kt @ one) * (one @ lt @ one) / ((n - 1) * (n - 2))
            - 2 / (n - 2) * one @ kt @ lt @ one) / (n * (n - 3))


# ---------------------------------------------------------------------------------------------------- invariances


@pytest.mark.parametrize("name", CKAS)
def test_cka_is_one_under_rotation_and_isotropic_scaling_only(name):
    measure = CKAS[name]
    x, y = related()
    q = ortho_group.rvs(x.shape[1], random_state=1)
    assert measure(x, 3.7 * x @ q + 5.0) == pytest.approx(1.0, abs=1e-10)
    assert measure(x, y) == pytest.approx(measure(0.2 * y @ ortho_group.rvs(y.shape[1], random_state=2), x), abs=1e-10)
    # not invariant to stretching features unevenly: the check above can fail
    assert measure(x, x * np.geomspace(0.05, 20, x.shape[1])) < 0.99


def test_cca_measures_are_one_under_any_invertible_map():
    x, _ = related(n=200)
    a = np.random.default_rng(3).normal(size=(12, 12)) + 3 * np.eye(12)
    y = x @ a - 7.0
    assert cca(x, y) == pytest.approx(np.ones(12), abs=1e-8)
    assert svcca(x, y, keep=None) == pytest.approx(1.0, abs=1e-8)
    assert pwcca(x, y) == pytest.approx(1.0, abs=1e-8)
    # SVCCA's variance cut is only rotation-invariant; a general map moves the top principal directions
    assert svcca(x, 2 * x @ ortho_group.rvs(12, random_state=4), keep=0.99) == pytest.approx(1.0, abs=1e-8)
    assert svcca(x, y, keep=0.9) < 0.99
    # CKA and Procrustes are not invariant to a general map
    assert linear_cka(x, y) < 0.99 and procrustes(x, y) > 0.01


def test_cca_and_pwcca_match_the_covariance_formulas():
    x, y = related(n=300, dx=6, dy=9)
    xc, yc = x - x.mean(0), y - y.mean(0)

    def inverse_sqrt(c):
        w, v = np.linalg.eigh(c)
        return v / np.sqrt(w) @ v.T

    wx, wy = inverse_sqrt(xc.T @ xc), inverse_sqrt(yc.T @ yc)
    u, rho, _ = np.linalg.svd(wx @ xc.T @ yc @ wy)
    assert cca(x, y) == pytest.approx(rho, abs=1e-10)
    h = xc @ wx @ u  # canonical variates of x, the side with fewer units
    h /= np.linalg.norm(h, axis=0)
    alpha = np.abs(h.T @ xc).sum(axis=1)
    assert pwcca(x, y) == pytest.approx(alpha @ rho / alpha.sum(), abs=1e-10)
    assert pwcca(y, x) == pytest.approx(pwcca(x, y), abs=1e-12)
    assert pwcca(x, y) != pytest.approx(rho.mean(), abs=1e-3)


def test_procrustes_is_zero_under_rotation_and_scaling():
    x, y = related()
    q = ortho_group.rvs(12, random_state=5)
    assert procrustes(x, 4 * x @ q + 1) == pytest.approx(0.0, abs=1e-10)
    assert procrustes(x, 4 * x @ q + 1, squared=False) == pytest.approx(0.0, abs=1e-6)
    d2 = procrustes(x, y)
    assert 0.1 < d2 < 2 and procrustes(x, y, squared=False) == pytest.approx(np.sqrt(d2))
    assert procrustes(x, y) == pytest.approx(procrustes(y, x))


def test_rsa_is_one_under_per_sample_scale_and_offset_but_not_rotation():
    x, y = related()
    rng = np.random.default_rng(6)
    scaled = x * rng.uniform(0.5, 3, size=(len(x), 1)) + rng.normal(size=(len(x), 1))
    assert rsa(x, scaled) == pytest.approx(1.0, abs=1e-12)
    # correlation distance removes each pattern's mean across features, which a rotation does not preserve
    assert rsa(x + 5, (x + 5) @ ortho_group.rvs(12, random_state=7)) < 0.9
    assert 0.1 < rsa(x, y) < 0.99


# -------------------------------------------------------------------------------------------------- agreement


@pytest.mark.parametrize("debiased", [False, True])
@pytest.mark.parametrize("n", [300, 40])  # more samples than features (feature products), fewer (Gram products)
def test_feature_and_gram_space_cka_agree(n, debiased):
    x, y = related(n=n, dx=30, dy=20)
    x = x + 50.0
    expected = cka_from_grams(gram_linear(x), gram_linear(y), debiased)
    assert linear_cka(x, y, debiased) == pytest.approx(expected, abs=1e-12)
    if debiased:
        xc, yc = x - x.mean(0), y - y.mean(0)
        k, l = xc @ xc.T, yc @ yc.T
        assert expected == pytest.approx(song_hsic(k, l) / np.sqrt(song_hsic(k, k) * song_hsic(l, l)), abs=1e-12)
        # the unbiased estimator needs no centering
        assert cka_from_grams(x @ x.T, y @ y.T, debiased=True) == pytest.approx(expected, abs=1e-9)
    else:
        assert expected != pytest.approx(linear_cka(x, y, debiased=True), abs=1e-3)


def test_rbf_cka_uses_a_fraction_of_the_median_distance():
    x, y = related()
    d2 = ((x[:, None] - x[None]) ** 2).sum(-1)
    bandwidth2 = np.median(d2[np.triu_indices(len(x), 1)]) * 0.5**2
    assert gram_rbf(x, 0.5) == pytest.approx(np.exp(-d2 / (2 * bandwidth2)), abs=1e-12)
    assert rbf_cka(x, y, 0.5) == pytest.approx(cka_from_grams(gram_rbf(x, 0.5), gram_rbf(y, 0.5)))
    assert rbf_cka(x, y, 0.2) != pytest.approx(rbf_cka(x, y, 2.0), abs=1e-3)


def test_cka_matrix_is_pairwise_linear_cka():
    x, y = related()
    xs, ys = [x, x[:, :5], y], [y, x]
    m = cka_matrix(xs, ys, debiased=True)
    assert m.shape == (3, 2)
    assert m == pytest.approx(np.array([[linear_cka(a, b, True) for b in ys] for a in xs]), abs=1e-12)
    assert m[2, 0] == pytest.approx(1.0)


def test_minibatch_cka_is_the_ratio_of_mean_unbiased_hsics():
    x, y = related(n=120)
    assert minibatch_cka(x, y, batch_size=120) == pytest.approx(linear_cka(x, y, debiased=True), abs=1e-12)
    x = x * np.repeat([1.0, 4.0, 0.3], 40)[:, None]  # batches of very different scales
    hsics = []
    for i in range(0, 120, 40):
        xc, yc = x[i:i + 40] - x[i:i + 40].mean(0), y[i:i + 40] - y[i:i + 40].mean(0)
        k, l = xc @ xc.T, yc @ yc.T
        hsics.append([song_hsic(k, l), song_hsic(k, k), song_hsic(l, l)])
    kl, kk, ll = np.mean(hsics, axis=0)
    expected = kl / np.sqrt(kk * ll)
    per_batch = np.mean([h[0] / np.sqrt(h[1] * h[2]) for h in hsics])
    assert expected != pytest.approx(per_batch, abs=1e-3)
    assert minibatch_cka(x, y, 40) == pytest.approx(expected, abs=1e-12)
    acc = MinibatchCKA()
    for i in range(0, 120, 40):
        acc.update(x[i:i + 40].astype(np.float32), y[i:i + 40])
    assert acc.batches == 3 and acc.value() == pytest.approx(expected, abs=1e-6)


def test_a_last_batch_under_four_samples_is_dropped():
    x, y = related(n=104)
    assert minibatch_cka(x[:103], y[:103], 50) == pytest.approx(minibatch_cka(x[:100], y[:100], 50), abs=1e-15)
    assert minibatch_cka(x, y, 50) != pytest.approx(minibatch_cka(x[:100], y[:100], 50), abs=1e-6)


def _store(tmp_path, n=230, positions=3):
    rng = np.random.default_rng(8)
    x, y = related(n=n * positions, dx=16, dy=6)
    pos = rng.integers(0, 49, size=(n, positions))
    ds = xr.Dataset(
        {"fc": (("sample", "fc_unit"), x[:n].astype(np.float32) + 100),
         "conv": (("sample", "conv_unit", "conv_y", "conv_x"), y[:n].reshape(n, 6, 1, 1).repeat(2, 2).astype(
             np.float32) + rng.normal(size=(n, 6, 2, 1))),
         "pa": (("sample", "pa_position", "pa_unit"), x.reshape(n, positions, 16)),
         "pb": (("sample", "pb_position", "pb_unit"), y.reshape(n, positions, 6))},
        coords={"sample": np.arange(n) * 3, "label": ("sample", rng.integers(0, 5, n)),
                "pa_pos_y": (("sample", "pa_position"), pos // 7), "pa_pos_x": (("sample", "pa_position"), pos % 7),
                "pb_pos_y": (("sample", "pb_position"), pos // 7), "pb_pos_x": (("sample", "pb_position"), pos % 7)})
    ds.to_zarr(tmp_path / "acts.zarr", encoding={v: {"chunks": (37, *ds[v].shape[1:])} for v in ds.data_vars},
               consolidated=False)
    return ds, xr.open_zarr(tmp_path / "acts.zarr", consolidated=False)


def test_streaming_a_zarr_store_matches_in_memory_minibatches(tmp_path):
    mem, lazy = _store(tmp_path)
    assert not lazy["fc"].variable._in_memory
    expected = minibatch_cka(mem["fc"].values, mem["conv"].values.reshape(230, -1), 50)
    assert streaming_cka(lazy["fc"], lazy["conv"], 50) == pytest.approx(expected, abs=1e-12)
    # sampled positions are rows (samples), not features
    acc = MinibatchCKA()
    for i in range(0, 230, 20):
        acc.update(mem["pa"].values[i:i + 20].reshape(-1, 16), mem["pb"].values[i:i + 20].reshape(-1, 6))
    assert streaming_cka(lazy["pa"], lazy["pb"], 20) == pytest.approx(acc.value(), abs=1e-12)


def test_streaming_loads_one_batch_at_a_time(tmp_path):
    n, d = 8000, 100
    x = np.random.default_rng(9).normal(size=(n, d)).astype(np.float32)
    xr.Dataset({"a": (("sample", "a_unit"), x), "b": (("sample", "b_unit"), x[:, ::-1] ** 2)},
               coords={"sample": np.arange(n)}).to_zarr(tmp_path / "big.zarr", consolidated=False,
                                                        encoding={v: {"chunks": (200, d)} for v in "ab"})
    lazy = xr.open_zarr(tmp_path / "big.zarr", consolidated=False)
    tracemalloc.start()
    try:
        streaming_cka(lazy["a"], lazy["b"], 200)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    # about 0.7 MiB: a batch in float64, its centered copy and the products; loading the whole array takes 3 MiB
    assert peak < x.nbytes / 3, f"peak {peak / 2**20:.1f} MiB while streaming a {x.nbytes / 2**20:.1f} MiB array"


def test_streaming_refuses_unpaired_samples_and_warns_on_sorted_labels(tmp_path):
    _, lazy = _store(tmp_path)
    shuffled = lazy["conv"].isel(sample=np.random.default_rng(10).permutation(230))
    with pytest.raises(ProbeError, match="sample orders differ"):
        streaming_cka(lazy["fc"], shuffled, 50)
    with pytest.raises(ProbeError, match="sample orders differ"):
        streaming_cka(lazy["fc"], lazy["conv"].isel(sample=slice(1, None)), 50)
    with pytest.raises(ProbeError, match="rows do not pair up"):
        streaming_cka(lazy["fc"], lazy["pb"], 50)
    moved = lazy["pb"].assign_coords(pb_pos_x=lazy["pb_pos_x"] + 1)
    with pytest.raises(ProbeError, match="different spatial positions"):
        streaming_cka(lazy["pa"], moved, 50)
    order = np.argsort(lazy["label"].values, kind="stable")
    by_class = [lazy[v].isel(sample=order).assign_coords(sample=np.arange(230)) for v in ("fc", "conv")]
    with pytest.warns(UserWarning, match="sorted by label"):
        streaming_cka(*by_class, 50)


# ------------------------------------------------------------------------------------- independence and float32


def test_debiased_cka_of_independent_features_is_near_zero():
    rng = np.random.default_rng(11)
    x, y = rng.normal(size=(200, 500)), rng.normal(size=(200, 500))
    assert abs(linear_cka(x, y, debiased=True)) < 0.05
    assert linear_cka(x, y) > 0.6  # the biased estimate sees dependence in any two wide representations
    assert abs(minibatch_cka(x, y, 50)) < 0.05


def test_float32_with_an_offset_matches_float64_centered():
    x, y = related(n=400, dx=40, dy=30)
    # multiples of 2^-10 within +-30: exact in float32 even after adding 1000, so any difference is rounding inside
    x, y = np.round(x * 1024) / 1024, np.round(y * 1024) / 1024
    x32, y32 = (x + 1000).astype(np.float32), (y - 1000).astype(np.float32)
    assert np.array_equal(x32.astype(np.float64) - 1000, x)
    for measure in [*CKAS.values(), lambda a, b: minibatch_cka(a, b, 100), procrustes, pwcca, svcca]:
        assert measure(x32, y32) == pytest.approx(measure(x - x.mean(0), y - y.mean(0)), abs=1e-9)
    # the same formula computed in float32 is off by more than that tolerance
    xc, yc = x32 - x32.mean(0), y32 - y32.mean(0)
    in_float32 = float(np.linalg.norm(xc.T @ yc) ** 2 / np.linalg.norm(xc.T @ xc) / np.linalg.norm(yc.T @ yc))
    assert abs(in_float32 - linear_cka(x, y)) > 1e-9


# ------------------------------------------------------------------------------------------------------ traps


@pytest.mark.parametrize("measure", [lambda x, y: linear_cka(x, y, debiased=True),
                                     lambda x, y: rbf_cka(x, y, debiased=True),
                                     lambda x, y: cka_from_grams(x @ x.T, y @ y.T, debiased=True),
                                     lambda x, y: minibatch_cka(x, y, 8)])
def test_unbiased_estimators_need_four_samples(measure):
    x, y = related(n=3)
    with pytest.raises(ProbeError, match="3 samples are too few.*at least 4"):
        measure(x, y)
    acc = MinibatchCKA()
    with pytest.raises(ProbeError, match="at least 4"):
        acc.update(x, y)
    with pytest.raises(ProbeError, match="no batch yet"):
        acc.value()


@pytest.mark.parametrize("measure", [linear_cka, rbf_cka, lambda x, y: minibatch_cka(x, y, 4), cca, svcca, pwcca,
                                     procrustes, rsa, lambda x, y: cka_matrix([x], [y])])
def test_bad_inputs_are_named(measure):
    x, y = related(n=7)
    with pytest.raises(ProbeError, match="has 7 samples and .* has 5"):
        measure(x, y[:5])
    bad = x.copy()
    bad[2, 3], bad[4, 0] = np.nan, np.inf
    with pytest.raises(ProbeError, match="2 non-finite values"):
        measure(bad, y)
    with pytest.raises(ProbeError, match=r"2-D .*got shape \(7,\)"):
        measure(x[:, 0], y)


def test_minibatch_checks_its_batches():
    x, y = related(n=40)
    with pytest.raises(ProbeError, match="batch size 3 must be at least 4"):
        minibatch_cka(x, y, 3)
    acc = MinibatchCKA()
    acc.update(x[:20], y[:20])
    with pytest.raises(ProbeError, match="11 and 9 features, unlike the 12 and 9"):
        acc.update(x[20:, :11], y[20:])


@pytest.mark.parametrize("value", [3.0, 0.1])  # 0.1: its mean is not exact, so centering leaves rounding residue
def test_a_representation_that_does_not_vary_is_refused(value):
    x, y = related()
    flat = np.full_like(x, value)
    for measure in (linear_cka, lambda a, b: linear_cka(a, b, True), lambda a, b: cka_matrix([a], [b]), procrustes,
                    cca):
        with pytest.raises(ProbeError, match="x (has no usable variation|does not vary)"):
            measure(flat, y)
    with pytest.raises(ProbeError, match="median distance 0"):
        rbf_cka(flat, y)


def test_more_units_than_samples_in_cca_warns_and_stays_in_range():
    rng = np.random.default_rng(12)
    x, y = rng.normal(size=(30, 100)), rng.normal(size=(30, 80))
    for measure in (svcca, pwcca, lambda a, b: float(cca(a, b).mean())):
        with pytest.warns(UserWarning, match="over only 30 samples.*top 14 principal directions"):
            value = measure(x, y)
        assert np.isfinite(value) and 0 <= value <= 1
        # without the cut, 29-dim spans of the centered samples would coincide and give exactly 1
        assert value < 0.99
    assert len(cca(x[:, :5], y[:, :5])) == 5  # 5 + 5 <= 29: no cut


def test_constant_units_change_nothing():
    x, y = related()
    padded = np.hstack([x, np.zeros((len(x), 3)), np.full((len(x), 2), 7.5)])
    for measure in [*CKAS.values(), svcca, pwcca, procrustes, lambda a, b: cca(a, b, keep=None)]:
        assert measure(padded, y) == pytest.approx(measure(x, y), abs=1e-10)
    assert np.isfinite(rsa(padded, y))


def test_constant_patterns_are_left_out_of_rsa_with_a_warning():
    x, y = related()
    x[[3, 8]] = 0.0  # two samples silence the layer
    with pytest.warns(UserWarning, match="2 of 120 samples have a constant pattern"):
        value = rsa(x, y)
    keep = np.setdiff1d(np.arange(120), [3, 8])
    assert value == pytest.approx(rsa(x[keep], y[keep]))
    with pytest.raises(ProbeError, match="equally dissimilar"):
        rsa(np.eye(5), y[:5])

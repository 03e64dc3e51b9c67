"""Linear probes and transferability estimators (LogME, LEEP, NCE, H-score) on toy data with known answers, and
per-layer scores of a hand-built activation store."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import xarray as xr
from scipy import optimize, stats
from sklearn.covariance import LedoitWolf

from probe.analysis.probes import linear_probe_accuracy, linear_probe_accuracy_torch
from probe.analysis.transferability import (
    DESCRIPTIONS,
    h_score,
    layer_scores,
    leep,
    logme,
    nce,
    rank_correlation,
    source_probabilities,
    too_few_pairs,
)
from probe.errors import ProbeError
from probe.execution.extract import consolidate

pytestmark = pytest.mark.filterwarnings("ignore::zarr.errors.ZarrUserWarning")


def blobs(per_class=100, k=3, d=10, shift=3.0, seed=0):
    """``k`` Gaussian classes in ``d`` dims, class c shifted by ``shift`` along unit c: features that (nearly)
    linearly determine the labels."""
    rng = np.random.default_rng(seed)
    y = np.repeat(np.arange(k), per_class)
    x = rng.normal(size=(len(y), d))
    x[:, :k] += shift * np.eye(k)[y]
    return x, y


def noise(per_class=100, k=3, d=10, seed=1):
    rng = np.random.default_rng(seed)
    return rng.normal(size=(per_class * k, d)), np.repeat(np.arange(k), per_class)


# --- linear probes ---------------------------------------------------------------------------------------------

def test_probe_separates_blobs_and_is_at_chance_on_noise():
    assert linear_probe_accuracy(*blobs()) > 0.95
    x, y = noise(per_class=200)
    assert abs(linear_probe_accuracy(x, y) - 1 / 3) < 0.1


def test_probe_flattens_extra_dims_and_is_seeded():
    x, y = blobs(d=12)
    positions = x.reshape(len(x), 3, 4)  # (sample, position, unit), as extract's sample:K layout
    assert linear_probe_accuracy(positions, y) == linear_probe_accuracy(x, y)
    assert linear_probe_accuracy(x, y, seed=3) == linear_probe_accuracy(x, y, seed=3)


@pytest.mark.parametrize("k", [2, 3])
def test_torch_probe_agrees_with_sklearn(k):
    # overlapping classes, so both probes make mistakes and agreement is not trivial
    x, y = blobs(k=k, shift=1.2, seed=k)
    reference = linear_probe_accuracy(x, y, C=0.1)
    assert 0.6 < reference < 0.95
    assert linear_probe_accuracy_torch(x, y, C=0.1) == pytest.approx(reference, abs=0.03)
    assert linear_probe_accuracy_torch(x, y, C=np.inf) == pytest.approx(linear_probe_accuracy(x, y, C=np.inf),
                                                                        abs=0.03)


@pytest.mark.parametrize("k, C", [(2, 0.03), (3, 0.01)])
def test_torch_probe_penalizes_like_sklearn(k, C):
    # imbalanced classes and a strong penalty: the shrunk weights leave the unpenalized intercept to favour the big
    # class, so accuracy moves with C; torch must match sklearn at C, not at twice C
    rng = np.random.default_rng(0)
    y = np.repeat(np.arange(k), [300, 100, 60][:k])
    x = rng.normal(size=(len(y), 5))
    x[:, :k] += np.eye(k)[y]
    reference = linear_probe_accuracy(x, y, C=C)
    one_sample = 1 / np.ceil(0.3 * len(y))
    assert abs(linear_probe_accuracy(x, y, C=2 * C) - reference) > one_sample
    assert linear_probe_accuracy_torch(x, y, C=C) == pytest.approx(reference, abs=one_sample / 2)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_torch_probe_on_gpu_agrees_with_cpu():
    x, y = blobs(shift=1.2)
    assert linear_probe_accuracy_torch(x, y, device="cuda") == pytest.approx(linear_probe_accuracy_torch(x, y),
                                                                             abs=0.02)


@pytest.mark.parametrize("probe", [linear_probe_accuracy, linear_probe_accuracy_torch])
def test_probe_rejects_bad_input(probe):
    x, y = blobs(per_class=10)
    bad = x.copy()
    bad[4, 2] = np.nan
    cases = [((x[:, 0], y), "shape"), ((x, y[:-1]), r"labels need shape \(30,\)"), ((bad, y), "nan.*sample 4"),
             ((x, y.astype(float)), "float64"), ((x, np.zeros(30, int)), "at least 2 classes"),
             ((x[:21], y[:21]), "class 2 has 1 sample"), ((x, y, 1.0), "test fraction 1.0"),
             ((x, y, 0.05), "each part needs one of each")]
    for args, message in cases:
        with pytest.raises(ProbeError, match=message):
            probe(*args)
    with pytest.raises(ProbeError, match="C=0"):
        probe(x, y, C=0)


# --- LogME ------------------------------------------------------------------------------------------------------

def direct_log_evidence(x, y):
    """Mean over classes of max over (alpha, beta) of log N(y_k; 0, F F^T / alpha + I / beta) per sample: the
    marginal likelihood written out as an n x n Gaussian and maximized numerically."""
    out = []
    for k in np.unique(y):
        yk = (y == k).astype(float)

        def negative(log_ab):
            alpha, beta = np.exp(log_ab)
            cov = x @ x.T / alpha + np.eye(len(yk)) / beta
            return -stats.multivariate_normal(np.zeros(len(yk)), cov).logpdf(yk)

        best = optimize.minimize(negative, [0.0, 0.0], method="Nelder-Mead",
                                 options={"xatol": 1e-9, "fatol": 1e-11, "maxiter": 4000})
        out.append(-best.fun / len(yk))
    return float(np.mean(out))


@pytest.mark.parametrize("d", [1, 3, 60])
def test_logme_equals_the_directly_maximized_evidence(d):
    rng = np.random.default_rng(d)
    y = np.repeat(np.arange(3), 15)
    x = rng.normal(size=(len(y), d))
    x[:, 0] += 2.0 * (y == 1)
    assert logme(x, y) == pytest.approx(direct_log_evidence(x, y), abs=1e-6)


def test_logme_prefers_informative_features():
    informative, y = blobs(per_class=200)
    random, _ = noise(per_class=200)
    assert logme(informative, y) > logme(random, y) + 0.1


def test_logme_invariances():
    x, y = blobs(per_class=200, shift=1.5)
    value = logme(x, y)
    rotation = np.linalg.qr(np.random.default_rng(5).normal(size=(10, 10)))[0]
    assert logme(x @ rotation, y) == pytest.approx(value, abs=1e-9)
    assert logme(7.0 * x, y) == pytest.approx(value, abs=1e-6)  # the prior's alpha absorbs the scale
    order = np.random.default_rng(6).permutation(len(y))
    assert logme(x[order], y[order]) == pytest.approx(value, abs=1e-9)
    assert logme(x, 10 + (2 - y) * 5) == pytest.approx(value, abs=1e-9)  # class names do not matter
    # twice the data: the complexity penalty per sample shrinks a little, nothing else changes
    doubled = logme(np.vstack([x, x]), np.concatenate([y, y]))
    assert value < doubled < value + 0.02


def test_logme_of_a_dead_layer_is_the_no_information_evidence():
    _, y = noise(per_class=50)
    # y_k ~ N(0, I / beta) at its best beta = n / n_k, per sample
    expected = np.mean([0.5 * np.log(3) - 0.5 * np.log(2 * np.pi) - 0.5] * 3)
    assert logme(np.zeros((150, 6)), y) == pytest.approx(expected, abs=1e-6)


def test_logme_rejects_bad_input():
    x, y = blobs(per_class=5)
    with pytest.raises(ProbeError, match=r"2-D .* got shape \(15, 2, 5\)"):
        logme(x.reshape(15, 2, 5), y)
    with pytest.raises(ProbeError, match="15 samples but labels have 14"):
        logme(x, y[:-1])
    with pytest.raises(ProbeError, match="at least 2"):
        logme(x, np.zeros(15, int))


# --- LEEP and NCE -----------------------------------------------------------------------------------------------

def test_leep_matches_a_hand_computed_table():
    theta = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7]])
    y = np.array([0, 1, 0, 1])
    # joint P(y, z) = [[1.5, 0.5], [0.5, 1.5]] / 4, P(z) = [0.5, 0.5], so P(y | z) = [[.75, .25], [.25, .75]];
    # expected predictions: .75*.9+.25*.1, .25*.2+.75*.8, .75*.6+.25*.4, .25*.3+.75*.7
    assert leep(theta, y) == pytest.approx(np.mean(np.log([0.7, 0.65, 0.55, 0.6])))
    assert leep(theta[:, ::-1], y) == pytest.approx(leep(theta, y))  # source class order does not matter


def test_leep_is_zero_for_a_perfect_mapping_and_negative_otherwise():
    rng = np.random.default_rng(0)
    z = rng.integers(0, 4, 200)
    assert leep(np.eye(4)[z], z % 2) == pytest.approx(0.0, abs=1e-12)  # two source classes per target class
    theta = rng.dirichlet(np.ones(4), 200)
    assert leep(theta, rng.integers(0, 2, 200)) < 0


def test_leep_rejects_bad_probabilities():
    y = np.array([0, 1, 0])
    with pytest.raises(ProbeError, match="sample 1 sum to 0.9"):
        leep(np.array([[0.5, 0.5], [0.5, 0.4], [1.0, 0.0]]), y)
    with pytest.raises(ProbeError, match="non-negative"):
        leep(np.array([[1.5, -0.5], [0.5, 0.5], [1.0, 0.0]]), y)
    with pytest.raises(ProbeError, match=r"shape \(3, n_source_classes\)"):
        leep(np.ones((2, 1)), y)


def test_nce_of_deterministic_and_independent_labels():
    rng = np.random.default_rng(0)
    z = rng.integers(0, 5, 20000)
    assert nce(z, z % 3) == pytest.approx(0.0, abs=1e-12)
    independent = nce(z, rng.integers(0, 4, len(z)))
    assert independent == pytest.approx(-np.log(4), abs=0.01) and independent > -np.log(4)
    # probabilities are read through their argmax
    theta = 0.1 + 0.5 * np.eye(5)[z]
    theta /= theta.sum(1, keepdims=True)
    assert nce(theta, z % 3) == pytest.approx(0.0, abs=1e-12)
    with pytest.raises(ProbeError, match="3 source labels for 4"):
        nce(np.array([0, 1, 0]), np.array([0, 1, 1, 0]))


# --- H-score ----------------------------------------------------------------------------------------------------

def direct_h_score(x, y, shrinkage=False):
    """The defining formulas in d x d: tr(pinv(cov f) cov(E[f | y])), or Ibrahim et al.'s shrunk version."""
    means = np.stack([x[y == c].mean(0) for c in y])  # each sample replaced by its class mean
    between = np.cov(means, rowvar=False, bias=True)
    if not shrinkage:
        return np.trace(np.linalg.pinv(np.cov(x, rowvar=False, bias=True)) @ between)
    lw = LedoitWolf().fit(x)
    return np.trace(np.linalg.inv(lw.covariance_) @ ((1 - lw.shrinkage_) * between))


@pytest.mark.parametrize("shrinkage", [False, True])
def test_h_score_matches_the_direct_formula(shrinkage):
    x, y = blobs(per_class=30, d=8, shift=1.0)
    assert h_score(x, y, shrinkage) == pytest.approx(direct_h_score(x, y, shrinkage), rel=1e-9)


def test_h_score_prefers_separable_features_and_is_bounded():
    x, y = blobs(per_class=100)
    separable = h_score(x, y)
    assert separable > 10 * h_score(*noise(per_class=100))
    assert 0 < separable < 2  # at most k - 1
    mixing = np.random.default_rng(2).normal(size=(10, 10))
    assert h_score(x @ mixing, y) == pytest.approx(separable, rel=1e-9)  # invariant to invertible maps


def test_h_score_saturates_without_shrinkage_when_features_outnumber_samples():
    x, y = noise(per_class=10, d=50)
    assert h_score(x, y) == pytest.approx(2.0)  # pure noise spans every direction, class means included
    assert h_score(x, y, shrinkage=True) < 1.0


# --- per-layer source read-out and rank correlation ---------------------------------------------------------------

def test_source_probabilities_are_distributions_over_source_classes():
    xs, ys = blobs(per_class=20, k=3, seed=0)
    xt, _ = blobs(per_class=10, k=2, seed=1)
    theta = source_probabilities(xs, ys + 7, xt)
    assert theta.shape == (20, 3) and np.allclose(theta.sum(1), 1)
    assert (theta.argmax(1) == np.repeat([0, 1], 10)).mean() > 0.9  # target class c sits where source class c does
    with pytest.raises(ProbeError, match="target features have 4 features .* source features 10"):
        source_probabilities(xs, ys, xt[:, :4])


def test_rank_correlation_drops_and_counts_missing_values():
    perfect = rank_correlation([0.1, 0.5, 0.9, 2.0, 3.0], [10, 20, 30, 40, 50])
    assert perfect.rho == pytest.approx(1.0) and perfect.count == 5 and perfect.p < 0.05
    scores = np.array([1.0, np.nan, 3.0, 2.0, 5.0, 4.0, 6.0])
    acc = np.array([0.1, 0.2, np.nan, 0.3, 0.5, 0.4, 0.45])
    r = rank_correlation(scores, acc)
    expected = stats.spearmanr([1.0, 2.0, 5.0, 4.0, 6.0], [0.1, 0.3, 0.5, 0.4, 0.45])
    assert r.count == 5 and r.rho == pytest.approx(expected.statistic) and r.p == pytest.approx(expected.pvalue)
    # below five pairs a rank correlation is no measurement (two pairs always give +-1): NaN, and said so
    few = rank_correlation([1.0, 2.0], [3.0, 4.0])
    assert np.isnan(few.rho) and np.isnan(few.p) and few.count == 2
    assert too_few_pairs(2) == "too few pairs (2 of the 5 needed)" and too_few_pairs(5) is None
    assert rank_correlation([1.0, np.nan], [np.nan, 2.0]).count == 0
    assert np.isnan(rank_correlation([1.0, np.nan], [np.nan, 2.0]).rho)
    assert np.isnan(rank_correlation([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]).rho)
    with pytest.raises(ProbeError, match=r"shapes \(3,\) and \(2,\)"):
        rank_correlation([1, 2, 3], [1, 2])


# --- layer_scores on a hand-built store ---------------------------------------------------------------------------

CLASSES_A, CLASSES_B = ["a0", "a1", "a2"], ["b0", "b1", "b2"]


def write_store(path, network_id, tasks, target, per_class=40, seed=0):
    """A store with one complete group in extract's layout: conv1 is noise; fc6 puts class j of either task along
    unit j (so it separates B's classes, and an A read-out maps B's class j to A's class j); logits over A."""
    rng = np.random.default_rng(seed)
    classes = CLASSES_A + CLASSES_B
    labels = np.concatenate([np.full(per_class, c) for c in range(6) if ("A" if c < 3 else "B") in tasks])
    labels = rng.permutation(labels)  # both tasks interleaved in test-set order, as extract writes them
    n = len(labels)
    fc6 = rng.normal(size=(n, 16))
    fc6[np.arange(n), labels % 3] += 3.0
    logits = fc6[:, :3]
    spec = {"classes_a": CLASSES_A, "classes_b": CLASSES_B, "target": target, "variant": "base"}
    probe_set = {"tasks": "both" if len(tasks) == 2 else "target", "per_class": None, "seed": 0}
    ds = xr.Dataset(
        {"logits": (("sample", "logit_class"), logits.astype(np.float32), {"layer": "fc8", "layer_index": 3}),
         "fc6": (("sample", "fc6_unit"), fc6.astype(np.float32), {"layer": "fc6", "layer_index": 2}),
         "conv1": (("sample", "conv1_unit"), rng.normal(size=(n, 8)).astype(np.float32),
                   {"layer": "conv1", "layer_index": 1})},
        coords={"sample": np.arange(n) * 3, "label": ("sample", labels),
                "class_name": ("sample", np.array(classes, dtype=object)[labels]),
                "task": ("sample", np.where(labels < 3, "A", "B").astype(object)),
                "logit_class": np.array(CLASSES_A, dtype=object),
                "conv1_unit": np.arange(8), "fc6_unit": np.arange(16)},
        attrs={"spec": json.dumps(spec), "network": network_id, "probe_set": json.dumps(probe_set),
               "complete": True})
    ds.to_zarr(path, group=network_id, mode="w", consolidated=False)
    consolidate(path)
    # opened as a user's script would: a hand-built group has no manifest for open_store to check it against
    return xr.open_datatree(path, engine="zarr")


BASE_A = "random-s0/init0/baseA"


@pytest.fixture(scope="module")
def both_store(tmp_path_factory):
    return write_store(tmp_path_factory.mktemp("store") / "acts.zarr", BASE_A, "AB", target="A")


def test_layer_scores_rank_the_informative_layer_first(both_store):
    scores = layer_scores(both_store, BASE_A, "B")
    assert list(scores["layer"].values) == ["conv1", "fc6", "logits"]  # network order, not the written order
    assert set(scores.data_vars) == {"logme", "h_score", "leep", "nce", "probe_accuracy", "constant"}
    assert not scores["constant"].any()  # every layer of a trained CNN varies over the images
    for name in DESCRIPTIONS:
        assert scores[name].sel(layer="fc6") > scores[name].sel(layer="conv1"), name
    assert scores["probe_accuracy"].sel(layer="fc6") > 0.9 and scores["leep"].sel(layer="fc6") > -0.3
    assert scores.attrs["source_task"] == "A" and scores.attrs["target_samples"] == 120
    assert scores.attrs["leep_nce"].startswith("per-layer")


def test_layer_scores_use_the_target_images_and_a_source_read_out(both_store):
    ds = both_store[BASE_A].to_dataset()
    on_b, on_a = ds["task"].values == "B", ds["task"].values == "A"
    fc6, labels = ds["fc6"].values, ds["label"].values
    scores = layer_scores(both_store, BASE_A, "B", layers=["fc6"])
    assert list(scores["layer"].values) == ["fc6"]
    assert scores["logme"].item() == pytest.approx(logme(fc6[on_b], labels[on_b]))
    assert scores["h_score"].item() == pytest.approx(h_score(fc6[on_b], labels[on_b]))
    theta = source_probabilities(fc6[on_a], labels[on_a], fc6[on_b])
    assert scores["leep"].item() == pytest.approx(leep(theta, labels[on_b]))
    assert scores["nce"].item() == pytest.approx(nce(theta, labels[on_b]))
    assert scores["probe_accuracy"].item() == linear_probe_accuracy(fc6[on_b], labels[on_b])
    shrunk = layer_scores(both_store, BASE_A, "B", layers=["fc6"], shrinkage=True)
    assert shrunk["h_score"].item() == pytest.approx(h_score(fc6[on_b], labels[on_b], shrinkage=True))


def test_layer_scores_subsample_each_task(both_store):
    scores = layer_scores(both_store, BASE_A, "B", layers=["conv1"], max_samples=30, seed=1)
    assert scores.attrs["target_samples"] == 30 and scores.attrs["source_samples"] == 30
    assert np.isfinite(scores["logme"]).all()


def test_layer_scores_without_source_images_leave_leep_and_nce_nan(tmp_path):
    network = "random-s0/init0/baseB"
    tree = write_store(tmp_path / "target.zarr", network, "B", target="B")
    scores = layer_scores(tree, network, "B")
    assert np.isnan(scores["leep"]).all() and np.isnan(scores["nce"]).all()
    assert "no images of source task A" in scores.attrs["leep_nce"]
    assert np.isfinite(scores["logme"]).all() and np.isfinite(scores["h_score"]).all()
    assert scores["probe_accuracy"].sel(layer="fc6") > scores["probe_accuracy"].sel(layer="conv1")
    with pytest.raises(ProbeError, match="no images of target task A"):
        layer_scores(tree, network, "A")


def test_layer_scores_reject_bad_requests(both_store):
    with pytest.raises(ProbeError, match="'C' is not one of A, B"):
        layer_scores(both_store, BASE_A, "C")
    with pytest.raises(ProbeError, match="no complete network 'random-s0/init0/baseB'"):
        layer_scores(both_store, "random-s0/init0/baseB", "B")
    with pytest.raises(ProbeError, match="no layer 'fc7'"):
        layer_scores(both_store, BASE_A, "B", layers=["fc6", "fc7"])

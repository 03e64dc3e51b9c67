"""Issue 18: metrics checked against direct formulations and peer implementations. Large offsets must not leave a
centering residue that H-score or CCA reads as signal, and the linear probe must be fit to convergence."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.linalg import qr
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from probe.analysis.probes import linear_probe_accuracy, probe_split
from probe.analysis.similarity import cca, pwcca, svcca
from probe.analysis.transferability import h_score

# --- H-score ----------------------------------------------------------------------------------------------------


def sample_space_h_score(x, y):
    """tr(cov(f)^+ cov(E[f | y])) as the squared cosines of the principal angles between the span of the centered
    features and the span of the centered class indicators: ||Qf^T Qc||_F^2 with orthonormal bases from
    rank-revealing QR. Features are centered by subtracting their known offset-free mean, so no residue arises."""
    def basis(a):
        q, r, _ = qr(a - a.mean(0), mode="economic", pivoting=True)
        diag = np.abs(np.diag(r))
        return q[:, diag > diag[0] * max(a.shape) * np.finfo(np.float64).eps]

    indicators = np.eye(y.max() + 1)[y].astype(np.float64)
    return np.linalg.norm(basis(x).T @ basis(indicators)) ** 2


def test_h_score_with_more_features_than_samples_is_k_minus_1_whatever_the_offset():
    # centered features span the whole (n - 1)-dim space orthogonal to the all-ones vector, which holds the k - 1
    # centered class indicators: H = k - 1 = 3. A residue along the all-ones vector (which lies in the span of the
    # class indicators) must not add 1.
    rng = np.random.default_rng(0)
    f, y = rng.standard_normal((40, 100)), np.arange(40) % 4
    assert sample_space_h_score(f, y) == pytest.approx(3.0, abs=1e-10)
    for offset in (0.0, 1e4, 1e4 * np.linspace(1, 3, 100)):
        assert h_score(f + offset, y) == pytest.approx(3.0, abs=1e-8)


def test_h_score_ignores_a_constant_unit_and_offsets():
    rng = np.random.default_rng(0)
    f, y = rng.standard_normal((40, 10)), np.arange(40) % 4
    expected = sample_space_h_score(f, y)
    assert 0.1 < expected < 3
    assert h_score(np.column_stack([f, np.full(40, 123456.789)]), y) == pytest.approx(expected, abs=1e-9)
    assert h_score(f + 1e4 * np.linspace(1, 2, 10), y) == pytest.approx(expected, abs=1e-8)


def test_h_score_matches_the_sample_space_formulation_on_well_conditioned_data():
    rng = np.random.default_rng(1)
    y = np.arange(200) % 5
    f = rng.standard_normal((200, 12)) + 0.7 * np.eye(5)[y] @ rng.standard_normal((5, 12))
    assert h_score(f, y) == pytest.approx(sample_space_h_score(f, y), abs=1e-10)
    assert h_score(f + 3e3, y) == pytest.approx(sample_space_h_score(f, y), abs=1e-9)


# --- CCA --------------------------------------------------------------------------------------------------------


def with_collinear_unit(a, offset):
    """``a`` plus a unit 3 a0 - 2 a1 (collinear with two others), every unit shifted by ``offset`` x 1..2."""
    return np.column_stack([a, 3 * a[:, 0] - 2 * a[:, 1]]) + offset * np.linspace(1, 2, a.shape[1] + 1)


def qr_cca(x, y):
    """Canonical correlations as the singular values of Qx^T Qy, orthonormal bases of the centered column spaces
    from rank-revealing (column-pivoted) QR, cut where R's diagonal falls to rounding level."""
    def basis(a):
        q, r, _ = qr(a - a.mean(0), mode="economic", pivoting=True)
        diag = np.abs(np.diag(r))
        return q[:, diag > diag[0] * max(a.shape) * np.finfo(np.float64).eps]

    return np.linalg.svd(basis(x).T @ basis(y), compute_uv=False)


def test_cca_of_collinear_units_ignores_offsets():
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((300, 10)), rng.standard_normal((300, 10))
    reference = qr_cca(with_collinear_unit(x, 0.0), with_collinear_unit(y, 0.0))
    assert len(reference) == 10 and reference[0] < 0.5  # independent data: no correlation near 1
    for offset in (0.0, 1.0, 1e4):
        xo, yo = with_collinear_unit(x, offset), with_collinear_unit(y, offset)
        assert cca(xo, yo) == pytest.approx(reference, abs=1e-6)
        assert svcca(xo, yo, keep=None) == pytest.approx(reference.mean(), abs=1e-6)
        assert pwcca(xo, yo) == pytest.approx(pwcca(with_collinear_unit(x, 0.0), with_collinear_unit(y, 0.0)),
                                              abs=1e-6)


def test_cca_matches_qr_formulation_with_large_offsets_on_full_rank_data():
    rng = np.random.default_rng(2)
    z = rng.standard_normal((400, 3))
    x = z @ rng.standard_normal((3, 8)) + rng.standard_normal((400, 8))
    y = np.tanh(z @ rng.standard_normal((3, 6))) + rng.standard_normal((400, 6))
    reference = qr_cca(x, y)
    assert cca(x + 1e5, y - 3e4 * np.arange(1, 7)) == pytest.approx(reference, abs=1e-6)


# --- linear probe -----------------------------------------------------------------------------------------------


def test_linear_probe_is_fit_to_convergence():
    # correlated features (an ill-conditioned design even after standardizing): lbfgs at scikit-learn's default
    # tol=1e-4 stops after 22 iterations with 79 of the 90 held-out samples right, one fewer than the optimum
    rng = np.random.default_rng(3)
    y = np.arange(300) % 2
    x = rng.standard_normal((300, 20))
    x[:, :2] += 1.5 * np.eye(2)[y]
    x = x @ (np.eye(20) + 0.3 * rng.standard_normal((20, 20)))
    x, codes, train, test = probe_split(x, y)
    tight = make_pipeline(StandardScaler(), LogisticRegression(tol=1e-12, max_iter=100_000))
    expected = tight.fit(x[train], codes[train]).score(x[test], codes[test])
    assert expected == pytest.approx(80 / 90)
    assert linear_probe_accuracy(x, y) == expected

"""Transferability estimators: how well a layer's features should serve a target task, without training on it.

Yosinski et al. (2014) measure transferability by training AnB networks: layers 1..n of baseA frozen, the rest
trained on B. The estimators here predict that from activations alone, one score per layer, so the scores can be
ranked against the measured AnB accuracies (:func:`rank_correlation`):

- LogME (You et al. 2021): the maximized evidence of a Bayesian linear regression from features to labels;
- LEEP (Nguyen et al. 2020): the log expected empirical prediction of target labels from source-class predictions;
- NCE (Tran et al. 2019): the negative conditional entropy of target labels given source labels;
- H-score (Bao et al. 2019): the between-class share of the feature covariance, optionally shrunk (Ibrahim et al.).

Pure functions on ``(n_samples, n_features)`` arrays with integer labels; :func:`layer_scores` applies them to every
layer of a network in an activation store (``probe extract``).
"""

from __future__ import annotations

import json
import warnings
from dataclasses import asdict, dataclass
from functools import partial

import numpy as np
import xarray as xr
from scipy import stats
from scipy.stats.contingency import crosstab
from sklearn.covariance import ledoit_wolf_shrinkage
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from probe.analysis.probes import (
    MAX_ITER,
    PROBE_TOL,
    check_C,
    class_codes,
    feature_matrix,
    linear_probe_accuracy,
    linear_probe_accuracy_torch,
)
from probe.analysis.similarity import centered_svd
from probe.analysis.stores import list_networks
from probe.errors import ProbeError
from probe.execution.extraction.reduction import constant_features
from probe.specs.variants import TASKS, other_task

# LogME's fixed point: the authors stop at a 1% change of alpha/beta after at most 11 steps; a tighter stop costs
# nothing (each step is O(rank x classes)) and makes the value reproducible to many digits
LOGME_TOL = 1e-7
LOGME_MAX_ITER = 1000
# the authors' epsilon: keeps beta finite when the features fit the labels exactly (zero residual)
LOGME_EPS = 1e-5
# rows of source probabilities must sum to 1 within this (float32 softmax outputs do)
PROBABILITY_TOL = 1e-4


def _features(features, n_labels: int | None = None) -> np.ndarray:
    """``features`` as a finite float64 ``(n_samples, n_features)`` matrix, with ``n_labels`` rows if given."""
    x = np.asarray(features)
    if x.ndim != 2:
        raise ProbeError(f"features must be a 2-D (n_samples, n_features) array, got shape {x.shape}")
    x = feature_matrix(x)
    if n_labels is not None and len(x) != n_labels:
        raise ProbeError(f"features have {len(x)} samples but labels have {n_labels}")
    return x


def _labels(labels, at_least: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """``(classes, codes)`` of a 1-D integer label array with at least ``at_least`` distinct classes."""
    y = np.asarray(labels)
    if y.ndim != 1:
        raise ProbeError(f"labels must be a 1-D array of class indices, got shape {y.shape}")
    classes, codes = class_codes(y, len(y))
    if len(classes) < at_least:
        raise ProbeError(f"labels name {len(classes)} class(es) {classes.tolist()}; expected at least {at_least}")
    return classes, codes


def _probabilities(probabilities, n_labels: int) -> np.ndarray:
    """Source-class probabilities ``(n_samples, n_source_classes)``: finite, non-negative rows summing to 1."""
    p = np.asarray(probabilities, dtype=np.float64)
    if p.ndim != 2 or len(p) != n_labels:
        raise ProbeError(f"source probabilities must have shape ({n_labels}, n_source_classes), got {p.shape}")
    if not np.isfinite(p).all() or (p < 0).any():
        raise ProbeError("source probabilities must be finite and non-negative; got "
                         f"{p[~(np.isfinite(p) & (p >= 0))][0]}")
    sums = p.sum(axis=1)
    off = np.abs(sums - 1) > PROBABILITY_TOL
    if off.any():
        row = int(np.flatnonzero(off)[0])
        raise ProbeError(f"source probabilities of sample {row} sum to {sums[row]:.6g}; expected rows summing to 1")
    return p


def logme(features, labels) -> float:
    """LogME (You et al. 2021, "LogME: Practical Assessment of Pre-trained Models for Transfer Learning", Alg. 1).

    ``features`` ``(n, d)``, integer ``labels`` ``(n,)``. For each class k, the one-hot column ``y_k`` is modelled
    as ``F w + noise`` with prior ``w ~ N(0, I / alpha)`` and noise precision ``beta``; the log evidence
    ``log p(y_k | F, alpha, beta)`` is maximized over ``alpha, beta`` by the paper's fixed point
    (``gamma = sum beta s_i^2 / (alpha + beta s_i^2)``, ``alpha = gamma / |m|^2``,
    ``beta = (n - gamma) / |F m - y_k|^2``) on the SVD ``F = U diag(s) V^T``. Returns the mean over classes of the
    maximized evidence per sample; higher means the features explain the labels more simply.

    Like the paper, the features are used as given (no centering or scaling); the value is invariant to rotating
    or uniformly rescaling them.
    """
    _, codes = _labels(labels, at_least=2)
    x = _features(features, len(codes))
    n, d = x.shape
    onehot = np.eye(codes.max() + 1)[codes]                    # (n, k)
    u, s, _ = np.linalg.svd(x, full_matrices=False)
    s2 = s[:, None] ** 2                                       # (r, 1)
    z = u.T @ onehot                                           # (r, k): labels in the features' left singular basis
    # the part of y outside the features' column space: a residual no weights can remove
    outside = np.maximum((onehot**2).sum(0) - (z**2).sum(0), 0.0)
    k = onehot.shape[1]
    alpha, beta = np.ones(k), np.ones(k)

    def moments(alpha, beta):
        denom = alpha + beta * s2                              # eigenvalues of A = alpha I + beta F^T F
        gamma = (beta * s2 / denom).sum(0)
        mm = ((beta * s[:, None] * z / denom) ** 2).sum(0)     # |m|^2, m = beta A^-1 F^T y
        residual = outside + ((alpha * z / denom) ** 2).sum(0)  # |F m - y|^2
        return denom, gamma, mm, residual

    for _ in range(LOGME_MAX_ITER):
        _, gamma, mm, residual = moments(alpha, beta)
        # a dead layer (all-zero features) has gamma = |m|^2 = 0: its evidence does not depend on alpha
        new_alpha = np.divide(gamma, mm, out=alpha.copy(), where=mm > 0)
        new_beta = (n - gamma) / (residual + LOGME_EPS)
        done = np.all(np.abs(new_alpha - alpha) <= LOGME_TOL * alpha) and \
            np.all(np.abs(new_beta - beta) <= LOGME_TOL * beta)
        alpha, beta = new_alpha, new_beta
        if done:
            break
    denom, _, mm, residual = moments(alpha, beta)
    # log|A| counts the d - r directions the features do not span, where A's eigenvalue is alpha
    log_det = np.log(denom).sum(0) + (d - len(s)) * np.log(alpha)
    evidence = (n / 2 * np.log(beta) + d / 2 * np.log(alpha) - n / 2 * np.log(2 * np.pi)
                - beta / 2 * residual - alpha / 2 * mm - log_det / 2)
    return float(np.mean(evidence / n))


def leep(probabilities, target_labels) -> float:
    """LEEP (Nguyen et al. 2020, "LEEP: A New Measure to Evaluate Transferability of Learned Representations").

    ``probabilities`` ``(n, z)``: a source model's predicted distribution over its z source classes for each
    target sample (rows sum to 1); ``target_labels`` ``(n,)`` integers. With the empirical joint
    ``P(y, z) = mean_i [y_i = y] theta_i(z)`` and conditional ``P(y | z) = P(y, z) / P(z)``, LEEP is
    ``mean_i log sum_z P(y_i | z) theta_i(z)``: the log-likelihood of the classifier that maps source predictions
    to target labels through ``P(y | z)``. At most 0, reached when source classes determine target labels."""
    _, codes = _labels(target_labels)
    theta = _probabilities(probabilities, len(codes))
    joint = np.eye(codes.max() + 1)[codes].T @ theta / len(codes)   # (k, z)
    marginal = joint.sum(0)
    # a source class no sample gives any probability contributes theta = 0 to every sum; 0/0 is dropped
    conditional = np.divide(joint, marginal, out=np.zeros_like(joint), where=marginal > 0)
    expected = (theta * conditional[codes]).sum(1)
    return float(np.mean(np.log(expected)))


def nce(source, target_labels) -> float:
    """NCE (Tran et al. 2019, "Transferability and Hardness of Supervised Classification Tasks"): ``-H(Y | Z)``.

    ``source``: the source label ``z`` of each target sample, either hard labels ``(n,)`` or source probabilities
    ``(n, z)`` (the argmax is taken, as in the paper's use of a source model's predictions); ``target_labels``
    ``(n,)``. ``H(Y | Z) = H(Y, Z) - H(Z)`` with plug-in (empirical) entropies in nats; 0 when z determines y,
    ``-log k`` for k uniform target classes independent of z (plus the plug-in estimator's small positive bias)."""
    _, codes = _labels(target_labels)
    z = np.asarray(source)
    if z.ndim == 2:
        z = _probabilities(z, len(codes)).argmax(1)
    else:
        z = _labels(z)[1]
        if len(z) != len(codes):
            raise ProbeError(f"{len(z)} source labels for {len(codes)} target labels; expected one per sample")
    counts = crosstab(z, codes).count                          # (source classes, target classes)
    return float(stats.entropy(counts.sum(1)) - stats.entropy(counts.ravel()))


def h_score(features, labels, shrinkage: bool = False) -> float:
    """H-score (Bao et al. 2019, "An Information-theoretic Approach to Transferability in Task Transfer Learning"):
    ``tr(cov(f)^+ cov(E[f | y]))`` for ``features`` ``(n, d)`` and integer ``labels`` ``(n,)``, with the
    pseudo-inverse of the feature covariance. It lies in ``[0, min(k - 1, rank)]``; higher means the class means
    spread further relative to the features' total variance.

    With ``shrinkage`` it is the regularized H-score of Ibrahim et al. (2022, "Newer is not always better:
    Rethinking transferability metrics, their peculiarities, stability and performance"):
    ``tr(S^-1 (1 - a) cov(E[f | y]))`` with the Ledoit-Wolf estimate ``S = (1 - a) cov(f) + a mu I``
    (``mu`` the mean variance, ``a`` the optimal shrinkage), which stops noisy low-variance directions from
    dominating when d is large against n.

    Computed in the sample space: with the centered features ``F = U diag(s) V^T`` and ``P`` the projection onto
    class means, the trace is ``sum_i w_i |P u_i|^2`` over the ``u_i`` within the numerical rank of the features
    (:func:`~analysis.similarity.centered_svd`), with ``w_i = 1``, or ``(1 - a) l_i / ((1 - a) l_i + a mu)`` with
    ``l_i = s_i^2 / n`` under shrinkage. That costs one thin SVD rather than a d x d pseudo-inverse, and is the same
    number (both covariances use 1/n). Adding a constant offset to the features changes nothing."""
    _, codes = _labels(labels, at_least=2)
    x = _features(features, len(codes))
    n, d = x.shape
    # only the directions within the numerical rank of the features as given: the pseudo-inverse drops the rest, and
    # a large offset's centering residue along the all-ones vector, which lies in the span of the class indicators,
    # would otherwise add |P u|^2 = 1 (see centered_svd)
    centered, u, s = centered_svd(x)
    onehot = np.eye(codes.max() + 1)[codes]
    class_means = (onehot.T @ u) / onehot.sum(0)[:, None]     # (k, r): class means of each u_i
    between = (onehot.sum(0)[:, None] * class_means**2).sum(0)  # |P u_i|^2
    if not shrinkage:
        return float(between.sum())
    variance = s**2 / n
    a = ledoit_wolf_shrinkage(centered, assume_centered=True)
    shrunk = (1 - a) * variance + a * variance.sum() / d      # S's eigenvalues along the u_i, all positive
    return float(((1 - a) * variance / shrunk) @ between)


def source_probabilities(source_features, source_labels, target_features, C: float = 1.0) -> np.ndarray:
    """A layer's stand-in for a source model: ``(n_target, n_source_classes)`` probabilities of the source classes
    (in sorted label order) for the target images, from an L2 logistic regression (standardized features, strength
    ``C`` as in :func:`~analysis.probes.linear_probe_accuracy`) fit on the same layer's features of the SOURCE
    task's images ``(n_source, ...)`` with their source labels.

    LEEP and NCE score a whole source model by its predictions on the target task. To score layer k of baseA we
    replace the model's softmax by this read-out of layer k — our per-layer generalization, not the papers' own
    definition; at the last layer it is close to the original."""
    xs = feature_matrix(source_features)
    _, codes = _labels(source_labels, at_least=2)
    if len(codes) != len(xs):
        raise ProbeError(f"source features have {len(xs)} samples but source labels have {len(codes)}")
    xt = feature_matrix(target_features)
    if xt.shape[1] != xs.shape[1]:
        raise ProbeError(f"target features have {xt.shape[1]} features per sample, the source features "
                         f"{xs.shape[1]}; expected the same layer")
    check_C(C)
    model = make_pipeline(StandardScaler(), LogisticRegression(C=C, tol=PROBE_TOL, max_iter=MAX_ITER))
    model.fit(xs, codes)
    return model.predict_proba(xt)


MIN_PAIRS = 5  # the fewest pairs a rank correlation is computed over


def too_few_pairs(count: int) -> str | None:
    """What a table or report says in place of a rank correlation over ``count`` pairs, when it is too few."""
    return f"too few pairs ({count} of the {MIN_PAIRS} needed)" if count < MIN_PAIRS else None


@dataclass(frozen=True)
class Correlation:
    """Spearman's rank correlation ``rho`` and its two-sided p-value over ``count`` complete pairs (NaN where
    undefined: fewer than MIN_PAIRS pairs, or a constant side)."""

    rho: float
    p: float
    count: int

    def to_dict(self) -> dict:
        return asdict(self)


def rank_correlation(scores, accuracies) -> Correlation:
    """How well per-layer ``scores`` rank the measured ``accuracies`` (both 1-D, one entry per layer or network):
    Spearman's rho with scipy's p-value, over the pairs where both values are finite; NaN below MIN_PAIRS pairs,
    where a rank correlation is no measurement (two pairs always give rho = +-1)."""
    a, b = np.asarray(scores, dtype=np.float64), np.asarray(accuracies, dtype=np.float64)
    if a.ndim != 1 or a.shape != b.shape:
        raise ProbeError(f"scores and accuracies must be 1-D arrays of one length, got shapes {a.shape} and {b.shape}")
    keep = np.isfinite(a) & np.isfinite(b)
    count = int(keep.sum())
    if count < MIN_PAIRS:
        return Correlation(np.nan, np.nan, count)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", stats.ConstantInputWarning)  # constant input: rho is NaN, as documented
        result = stats.spearmanr(a[keep], b[keep])
    return Correlation(float(result.statistic), float(result.pvalue), count)


DESCRIPTIONS = {
    "logme": "LogME (You et al. 2021) of the layer's features for the target labels: mean log evidence per sample",
    "h_score": "H-score (Bao et al. 2019): tr(cov(f)^+ cov(E[f|y])) of the layer's features for the target labels",
    "leep": "LEEP (Nguyen et al. 2020) of target labels given a logistic read-out of the layer trained on the "
            "source task (per-layer generalization)",
    "nce": "NCE (Tran et al. 2019): -H(target label | argmax of that source read-out) (per-layer generalization)",
    "probe_accuracy": "held-out accuracy of a linear probe (L2 logistic regression) on the target task",
}


def _layer_names(ds: xr.Dataset, layers: list[str] | None) -> list[str]:
    """The requested layers, or every variable of the group in network order (extract's ``layer_index``)."""
    if layers is None:
        return sorted(ds.data_vars, key=lambda v: ds[v].attrs.get("layer_index", np.inf))
    unknown = [name for name in layers if name not in ds.data_vars]
    if unknown:
        raise ProbeError(f"no layer {unknown[0]!r}; the group's layers are {', '.join(ds.data_vars)}")
    return list(layers)


def _subsample(indices: np.ndarray, max_samples: int, rng: np.random.Generator) -> np.ndarray:
    """At most ``max_samples`` of ``indices``, drawn without replacement, in store order."""
    if len(indices) <= max_samples:
        return indices
    return np.sort(rng.choice(indices, max_samples, replace=False))


def layer_scores(store_tree: xr.DataTree, base_network_id: str, target_task: str, layers: list[str] | None = None,
                 max_samples: int = 5000, seed: int = 0, test_fraction: float = 0.3, C: float = 1.0,
                 probe_device=None, shrinkage: bool = False) -> xr.Dataset:
    """Every estimator for every layer of one network, scoring transfer to ``target_task``.

    ``store_tree``: an activation store (:func:`analysis.stores.open_store`); ``base_network_id``: a complete group,
    typically baseA (``random-s0/init0/baseA``) scored for target task B, the setting of the paper's AnB networks.
    The source task is the other one. Per layer (dims after ``sample`` flattened), on the target task's images:
    LogME, H-score (Ibrahim et al.'s shrunk one with ``shrinkage``: the plain one saturates at k - 1 once a layer has
    as many units as samples) and the linear-probe accuracy (``test_fraction``, ``seed``, ``C``; the torch probe on
    ``probe_device`` when given); LEEP and NCE of the target labels given :func:`source_probabilities`, a read-out
    of the same layer fit on the source task's images of the same group. A store extracted with ``--probe-set
    both`` holds both; a group with only the target task's images (probe set ``target``) gets NaN LEEP and NCE and
    says why in the ``leep_nce`` attr.

    Each task's images are subsampled (seeded) to at most ``max_samples``: the SVDs cost O(n d min(n, d)).
    Returns a Dataset with dim ``layer`` (the layer names, in network order) and one variable per score."""
    if target_task not in TASKS:
        raise ProbeError(f"target task {target_task!r} is not one of {', '.join(TASKS)}")
    if max_samples < 1:
        raise ProbeError(f"max_samples {max_samples} must be a positive integer")
    networks = list_networks(store_tree)
    if base_network_id not in networks:
        raise ProbeError(f"the store has no complete network {base_network_id!r}; it has {', '.join(networks)}")
    ds = store_tree[base_network_id].to_dataset()
    spec = json.loads(ds.attrs["spec"])
    source_task = other_task(target_task)
    names = _layer_names(ds, layers)
    task = ds["task"].values  # zarr reads strings back as numpy StringDType, which compares with str
    rng = np.random.default_rng(seed)
    target = _subsample(np.flatnonzero(task == target_task), max_samples, rng)
    source = _subsample(np.flatnonzero(task == source_task), max_samples, rng)
    probe_set = ds.attrs.get("probe_set", "unknown")
    if len(target) == 0:
        raise ProbeError(f"network {base_network_id!r} holds no images of target task {target_task} (probe set "
                         f"{probe_set}); extract it with --probe-set both")
    labels = ds["label"].values
    target_labels, source_labels = labels[target], labels[source]
    probe = linear_probe_accuracy if probe_device is None else partial(linear_probe_accuracy_torch,
                                                                       device=probe_device)

    scores = {name: [] for name in DESCRIPTIONS}
    constant = []
    for name in names:
        values = ds[name].isel(sample=np.concatenate([target, source])).values
        x_target, x_source = feature_matrix(values[: len(target)]), feature_matrix(values[len(target):])
        constant.append(constant_features(x_target))
        if constant[-1]:  # a probe at chance and an H-score of 0 would read as measured: every score is undefined
            for key in scores:
                scores[key].append(np.nan)
            continue
        scores["logme"].append(logme(x_target, target_labels))
        scores["h_score"].append(h_score(x_target, target_labels, shrinkage))
        scores["probe_accuracy"].append(probe(x_target, target_labels, test_fraction, seed, C))
        if len(source):
            theta = source_probabilities(x_source, source_labels, x_target, C)
            scores["leep"].append(leep(theta, target_labels))
            scores["nce"].append(nce(theta, target_labels))
        else:
            scores["leep"].append(np.nan)
            scores["nce"].append(np.nan)

    if len(source):
        note = (f"per-layer: a logistic read-out of each layer fit on {len(source)} images of source task "
                f"{source_task} predicts source classes for the target images")
    else:
        note = (f"not computed (NaN): the group holds no images of source task {source_task} (probe set "
                f"{probe_set}); extract with --probe-set both")
    out = xr.Dataset({key: ("layer", np.asarray(v, dtype=np.float64), {"description": DESCRIPTIONS[key]})
                      for key, v in scores.items()}, coords={"layer": names})
    out["constant"] = ("layer", np.array(constant, dtype=bool),
                       {"description": "the layer's features are the same for every target image: every score is "
                                       "undefined (NaN) there"})
    out.attrs.update(network=base_network_id, network_task=spec["target"], target_task=target_task,
                     source_task=source_task, probe_set=probe_set, target_samples=len(target),
                     source_samples=len(source), max_samples=max_samples, seed=seed, h_score_shrinkage=int(shrinkage),
                     leep_nce=note)
    return out

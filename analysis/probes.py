"""Linear probes: how much of a task a layer's features give away to a linear read-out.

A probe is an L2-regularized multinomial logistic regression on standardized features, fit on a stratified, seeded
split of the samples and scored on the rest (linear classifier probes, Alain & Bengio 2016). It is the cheap, linear
cousin of the paper's AnB networks (Yosinski et al. 2014, Sec. 2): layers 1..n of baseA frozen and only a classifier
trained on B — here a linear one, on one layer's activations of B's test images, with no network trained.

Pure functions on ``(n_samples, ...)`` feature arrays: dims after the first (units, positions, y, x) are flattened
into one feature axis. Two implementations of the same probe: scikit-learn's (the reference) and a full-batch torch
L-BFGS one for large stores on a GPU, with the same split, standardization and penalty.
"""

from __future__ import annotations

import numpy as np
import torch
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import train_test_split
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from probe.errors import ProbeError

# lbfgs on thousands of standardized units needs more than sklearn's default 100 iterations to converge
MAX_ITER = 1000
# lbfgs's bound on the largest gradient entry of sklearn's (per-sample mean) objective: at sklearn's default 1e-4
# it stops on correlated features after a fraction of the iterations it needs, which moves held-out accuracy by
# whole points (0.69 against 0.74 converged for 1000 samples of 3000 correlated units); at 1e-8 it has converged
# (tighter bounds change no prediction, as lbfgs then stops on the objective's relative change), in about 100
# iterations there, well within MAX_ITER
PROBE_TOL = 1e-8


def feature_matrix(features, dtype=np.float64) -> np.ndarray:
    """``(n_samples, ...)`` -> ``(n_samples, n_features)`` of ``dtype``, every non-sample dim flattened; a
    ProbeError for fewer than two dims or a non-finite value."""
    x = np.asarray(features)
    if x.ndim < 2:
        raise ProbeError(f"features need a sample dim and at least one feature dim, got shape {x.shape}")
    x = x.reshape(len(x), int(np.prod(x.shape[1:]))).astype(dtype, copy=False)
    bad = ~np.isfinite(x)
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise ProbeError(f"features hold a non-finite value {x[row, col]} at sample {row}, feature {col}; "
                         "expected finite activations")
    return x


def class_codes(labels, n_samples: int) -> tuple[np.ndarray, np.ndarray]:
    """``(classes, codes)``: the sorted distinct integer labels and each sample's index into them; a ProbeError
    unless ``labels`` is a 1-D integer array of ``n_samples`` entries."""
    y = np.asarray(labels)
    if y.shape != (n_samples,):
        raise ProbeError(f"labels need shape ({n_samples},), one per sample, got {y.shape}")
    if not (np.issubdtype(y.dtype, np.integer) or np.issubdtype(y.dtype, np.bool_)):
        raise ProbeError(f"labels must be integer class indices, got dtype {y.dtype}")
    return np.unique(y, return_inverse=True)


def check_C(C: float) -> None:
    """A ProbeError unless the inverse L2 strength ``C`` is positive (``inf`` means no penalty)."""
    if not C > 0:
        raise ProbeError(f"inverse regularization strength C={C} must be positive")


def probe_split(features, labels, test_fraction: float = 0.3, seed: int = 0, dtype=np.float64
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """``(x, codes, train, test)``: the flattened features, class codes 0..k-1 and the index arrays of a
    stratified split holding out ``test_fraction`` of every class (seeded by ``seed``).

    Every class needs 2 samples and the held-out and training parts need a sample of every class, or the accuracy
    would be scored on classes the probe never saw (or never tested)."""
    x = feature_matrix(features, dtype)
    classes, codes = class_codes(labels, len(x))
    if not 0 < test_fraction < 1:
        raise ProbeError(f"test fraction {test_fraction} must lie strictly between 0 and 1")
    if len(classes) < 2:
        raise ProbeError(f"a probe needs at least 2 classes, got {len(classes)} ({classes.tolist()})")
    counts = np.bincount(codes)
    if counts.min() < 2:
        raise ProbeError(f"class {classes[counts.argmin()]} has {counts.min()} sample; a stratified split needs at "
                         "least 2 per class")
    n_test = int(np.ceil(test_fraction * len(x)))  # how train_test_split sizes a fractional test set
    if min(n_test, len(x) - n_test) < len(classes):
        raise ProbeError(f"a {test_fraction} split of {len(x)} samples leaves {n_test} to test and "
                         f"{len(x) - n_test} to train; each part needs one of each of the {len(classes)} classes")
    train, test = train_test_split(np.arange(len(x)), test_size=test_fraction, stratify=codes, random_state=seed)
    return x, codes, train, test


def linear_probe_accuracy(features, labels, test_fraction: float = 0.3, seed: int = 0, C: float = 1.0) -> float:
    """Held-out accuracy of an L2 logistic regression on standardized ``features`` ``(n_samples, ...)`` with
    integer ``labels`` ``(n_samples,)``.

    scikit-learn's ``LogisticRegression`` (multinomial for more than two classes) minimizes
    ``C * sum_i loss_i + |W|^2 / 2`` on the training part, to convergence (:data:`PROBE_TOL`); the scaler is fit
    on the training part only."""
    x, codes, train, test = probe_split(features, labels, test_fraction, seed)
    check_C(C)
    model = make_pipeline(StandardScaler(), LogisticRegression(C=C, tol=PROBE_TOL, max_iter=MAX_ITER))
    model.fit(x[train], codes[train])
    return float(model.score(x[test], codes[test]))


def linear_probe_accuracy_torch(features, labels, test_fraction: float = 0.3, seed: int = 0, C: float = 1.0,
                                device: str | torch.device = "cpu", max_iter: int = 500) -> float:
    """:func:`linear_probe_accuracy` as a full-batch multinomial logistic regression fit by L-BFGS in torch on
    ``device``: the same split, the same standardization (training mean and population std, constant units left
    unscaled) and the same penalty, ``mean_i loss_i + |W|^2 / (2 C n_train)`` (scikit-learn's objective divided by
    ``C n_train``; the intercept is not penalized). Accuracies agree with scikit-learn's to within the optimizers'
    tolerances."""
    # float32 halves the copy of a large store and is what the GPU is fast at
    x, codes, train, test = probe_split(features, labels, test_fraction, seed, np.float32)
    check_C(C)
    device = torch.device(device)
    x = torch.as_tensor(x, device=device)
    y = torch.as_tensor(codes, device=device)
    train, test = torch.as_tensor(train, device=device), torch.as_tensor(test, device=device)
    mean, std = x[train].mean(0), x[train].std(0, correction=0)
    x = (x - mean) / torch.where(std > 0, std, torch.ones_like(std))
    x_train, y_train, x_test, y_test = x[train], y[train], x[test], y[test]
    k = int(codes.max()) + 1
    # two classes: scikit-learn fits one weight vector (class 1 against class 0), which is a softmax whose class-0
    # logit is pinned at 0; a free class-0 row would halve the effective penalty
    outputs = 1 if k == 2 else k
    w = torch.zeros(x.shape[1], outputs, device=device, requires_grad=True)
    b = torch.zeros(outputs, device=device, requires_grad=True)

    def logits(z: torch.Tensor) -> torch.Tensor:
        out = z @ w + b
        return torch.cat([torch.zeros_like(out), out], dim=1) if k == 2 else out

    optimizer = torch.optim.LBFGS([w, b], lr=1, max_iter=max_iter, tolerance_grad=1e-6, tolerance_change=1e-10,
                                  history_size=20, line_search_fn="strong_wolfe")
    penalty = 1.0 / (2 * C * len(train))

    def closure() -> torch.Tensor:
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(logits(x_train), y_train) + penalty * w.square().sum()
        loss.backward()
        return loss

    optimizer.step(closure)
    with torch.no_grad():
        return int((logits(x_test).argmax(1) == y_test).sum()) / len(test)

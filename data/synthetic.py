"""A small, deterministic, class-structured image dataset generated in code, for tests and smoke runs.

Each class is a smooth random pattern over a class colour; every image is its class pattern shifted by a few pixels,
scaled in contrast and overlaid with noise. A small convolutional network separates the classes within an epoch or
two, and nearby layers carry class information, so the transfer protocol has something to measure.
"""

from __future__ import annotations

import numpy as np

N_CLASSES = 10
IMAGE_SIZE = 16
TRAIN_PER_CLASS = 100
TEST_PER_CLASS = 30


def synthetic_arrays(seed: int = 0, n_classes: int = N_CLASSES, size: int = IMAGE_SIZE,
                     train_per_class: int = TRAIN_PER_CLASS, test_per_class: int = TEST_PER_CLASS):
    """Return ``(train_x, train_y, test_x, test_y, classes)`` with images as ``(N, size, size, 3)`` uint8."""
    rng = np.random.default_rng(seed)
    # class patterns: upsampled low-resolution noise, so they are smooth and differ at every scale a conv net sees
    low = rng.normal(size=(n_classes, 4, 4, 3))
    reps = -(-(size + 4) // 4)
    # a class colour on top of the pattern keeps classes apart under any crop or shift
    patterns = np.kron(low, np.ones((1, reps, reps, 1)))[:, : size + 4, : size + 4] + rng.normal(
        size=(n_classes, 1, 1, 3))

    def make(per_class: int):
        n = n_classes * per_class
        y = np.repeat(np.arange(n_classes), per_class)
        dx, dy = rng.integers(0, 5, size=(2, n))
        contrast = rng.uniform(0.6, 1.2, size=(n, 1, 1, 1))
        crops = np.stack([patterns[c, a: a + size, b: b + size] for c, a, b in zip(y, dy, dx)])
        x = crops * contrast + rng.normal(scale=0.35, size=crops.shape)
        x = np.clip(128 + 40 * x, 0, 255).astype(np.uint8)
        order = rng.permutation(n)
        return x[order], y[order].astype(np.int64)

    train_x, train_y = make(train_per_class)
    test_x, test_y = make(test_per_class)
    return train_x, train_y, test_x, test_y, [f"class{i}" for i in range(n_classes)]

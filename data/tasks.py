"""One task's images: the classes of A or B, relabelled 0..k-1, with a validation split held out of train."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import train_test_split

from probe.data.datasets import ImageArrays
from probe.errors import ProbeError
from probe.spec import DataSpec

# The validation split and any per-class subsample are the same for every network of a run (and every run on the
# same data), so that networks compared with each other saw the same images.
_HOLDOUT_SEED = 0


@dataclass(frozen=True)
class TaskData:
    """Images ``(N, H, W, C)`` uint8 and labels ``(N,)`` int64 in 0..len(classes)-1 for train, val and test."""

    classes: list[str]
    train_x: np.ndarray
    train_y: np.ndarray
    val_x: np.ndarray
    val_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray


def task_data(arrays: ImageArrays, classes: list[str], spec: DataSpec) -> TaskData:
    """Select ``classes`` from ``arrays``: labels follow the order of ``classes``."""
    unknown = [c for c in classes if c not in arrays.classes]
    if unknown:
        raise ProbeError(f"class {unknown[0]!r} is not in the dataset (its classes: {', '.join(arrays.classes)})")
    index = np.array([arrays.classes.index(c) for c in classes])
    relabel = np.full(len(arrays.classes), -1, dtype=np.int64)
    relabel[index] = np.arange(len(classes))

    def pick(x, y):
        keep = np.flatnonzero(relabel[np.asarray(y)] >= 0)
        return keep, relabel[np.asarray(y)[keep]]

    train_idx, train_y = pick(arrays.train_x, arrays.train_y)
    if spec.train_per_class is not None:
        rng = np.random.default_rng(_HOLDOUT_SEED)
        chosen = [rng.permutation(np.flatnonzero(train_y == k))[: spec.train_per_class] for k in range(len(classes))]
        chosen = np.sort(np.concatenate(chosen))
        train_idx, train_y = train_idx[chosen], train_y[chosen]
    val_idx = np.array([], dtype=np.int64)
    val_y = np.array([], dtype=np.int64)
    if spec.val_fraction > 0:
        try:
            train_idx, val_idx, train_y, val_y = train_test_split(
                train_idx, train_y, test_size=spec.val_fraction, stratify=train_y, random_state=_HOLDOUT_SEED)
        except ValueError as e:
            per_class = f", train_per_class {spec.train_per_class}" if spec.train_per_class else ""
            raise ProbeError(f"cannot hold out a stratified validation fraction {spec.val_fraction} from "
                             f"{len(train_y)} training images of {len(classes)} classes{per_class} ({e}); use more "
                             "images per class or a validation fraction of 0") from None
    test_idx, test_y = pick(arrays.test_x, arrays.test_y)
    if len(test_idx) == 0:
        raise ProbeError(f"the dataset's test split has no image of classes {classes}")
    return TaskData(list(classes), np.asarray(arrays.train_x[np.sort(train_idx)]), train_y[np.argsort(train_idx)],
                    np.asarray(arrays.train_x[np.sort(val_idx)]), val_y[np.argsort(val_idx)],
                    np.asarray(arrays.test_x[test_idx]), test_y)

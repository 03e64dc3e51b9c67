"""One task's images: the classes of A or B, relabelled 0..k-1, with a validation split held out of train."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from sklearn.model_selection import train_test_split

from probe.data.arrays import ImageArrays
from probe.errors import ProbeError
from probe.specs.spec import DataSpec

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


@dataclass(frozen=True)
class TaskIndices:
    """Which images of the dataset a task uses: indices into its train split (``train``, ``val``) and test split
    (``test``), ascending, with their labels ``*_y`` in 0..len(classes)-1. Only labels are read to choose them, so a
    plan can count a task's images without copying any."""

    classes: list[str]
    train: np.ndarray
    train_y: np.ndarray
    val: np.ndarray
    val_y: np.ndarray
    test: np.ndarray
    test_y: np.ndarray


def task_indices(arrays: ImageArrays, classes: list[str], spec: DataSpec) -> TaskIndices:
    """Select ``classes`` from ``arrays``: labels follow the order of ``classes``; at most ``spec.train_per_class``
    training and ``spec.test_per_class`` test images per class, then the validation fraction held out of train."""
    unknown = [c for c in classes if c not in arrays.classes]
    if unknown:
        raise ProbeError(f"class {unknown[0]!r} is not in the dataset (its classes: {', '.join(arrays.classes)})")
    index = np.array([arrays.classes.index(c) for c in classes])
    relabel = np.full(len(arrays.classes), -1, dtype=np.int64)
    relabel[index] = np.arange(len(classes))

    def pick(y, per_class):
        keep = np.flatnonzero(relabel[np.asarray(y)] >= 0)
        labels = relabel[np.asarray(y)[keep]]
        if per_class is None:
            return keep, labels
        rng = np.random.default_rng(_HOLDOUT_SEED)
        chosen = np.sort(np.concatenate([rng.permutation(np.flatnonzero(labels == k))[:per_class]
                                         for k in range(len(classes))]))
        return keep[chosen], labels[chosen]

    train_idx, train_y = pick(arrays.train_y, spec.train_per_class)
    val_idx = np.array([], dtype=np.int64)
    val_y = np.array([], dtype=np.int64)
    if spec.val_fraction > 0:
        try:
            train_idx, val_idx, train_y, val_y = train_test_split(
                train_idx, train_y, test_size=spec.val_fraction, stratify=train_y, random_state=_HOLDOUT_SEED)
        except ValueError as e:
            counts = np.bincount(train_y, minlength=len(classes))
            per_class = f", train_per_class {spec.train_per_class}" if spec.train_per_class else ""
            raise ProbeError(f"cannot hold out a stratified validation fraction {spec.val_fraction} from "
                             f"{len(train_y)} training images of {len(classes)} classes{per_class}: the smallest "
                             f"class {classes[counts.argmin()]!r} has {counts.min()} ({e}); use more images per "
                             "class or a validation fraction of 0") from None
    test_idx, test_y = pick(arrays.test_y, spec.test_per_class)
    if len(test_idx) == 0:
        raise ProbeError(f"the dataset's test split has no image of classes {classes}")
    train_order, val_order = np.argsort(train_idx), np.argsort(val_idx)
    return TaskIndices(list(classes), train_idx[train_order], train_y[train_order], val_idx[val_order],
                       val_y[val_order], test_idx, test_y)


def task_data(arrays: ImageArrays, classes: list[str], spec: DataSpec) -> TaskData:
    """The images :func:`task_indices` selects, copied out of ``arrays`` (which may be memory-mapped)."""
    t = task_indices(arrays, classes, spec)
    return TaskData(t.classes, np.asarray(arrays.train_x[t.train]), t.train_y, np.asarray(arrays.train_x[t.val]),
                    t.val_y, np.asarray(arrays.test_x[t.test]), t.test_y)


def task_counts(arrays: ImageArrays, classes: list[str], spec: DataSpec, test_classes: bool = False) -> dict:
    """How many images a task trains, validates and tests on (after the per-class caps and the hold-out), with its
    smallest and largest class by training images as ``(name, count)``: what a plan shows before anything trains.
    With ``test_classes``, also the test split's smallest and largest class (``test_smallest``, ``test_largest``):
    a capped test split can be as uneven as the training one."""
    t = task_indices(arrays, classes, spec)
    counts = {"train": len(t.train), "val": len(t.val), "test": len(t.test), **_extremes(t.train_y, classes)}
    if test_classes:
        counts.update({f"test_{k}": v for k, v in _extremes(t.test_y, classes).items()})
    return counts


def _extremes(labels: np.ndarray, classes: list[str]) -> dict[str, tuple[str, int]]:
    """The class with the fewest and the one with the most of ``labels``, as ``(name, count)`` (the first such)."""
    per_class = np.bincount(labels, minlength=len(classes))
    return {"smallest": (classes[per_class.argmin()], int(per_class.min())),
            "largest": (classes[per_class.argmax()], int(per_class.max()))}

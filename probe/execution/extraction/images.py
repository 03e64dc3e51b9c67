"""Which test images go through every network of an extraction (``--probe-set``), in which order, under which cap.

Every network of a run sees the same test images in the same order, so a store's groups line up sample by sample;
that order is a seeded shuffle, so that consecutive samples (a streaming estimator's minibatches) are random draws
rather than one class after another. A new store's images default to those the run's networks were tested on (the
run's ``--test-per-class`` cap, :attr:`ExtractionImages.test_per_class`).
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from probe.data.arrays import ImageArrays
from probe.data.tasks import task_indices
from probe.errors import ProbeError
from probe.specs.spec import NetworkSpec

IMAGE_TASKS = ("target", "source", "both")
PER_CLASS_MODES = ("exactly", "at-most")
# ExtractionImages.test_per_class: the cap of the run's own networks (their DataSpec's test_per_class)
RUN_CAP = "run"


@dataclass(frozen=True)
class ExtractionImages:
    """Which test images go through every network (``--probe-set``): the target task's (default), the source
    task's (the task whose base donated the copied layers; the target for base and random networks), or both
    tasks'; optionally a seeded subset of ``per_class`` images per class: ``exactly`` that many (a class with fewer
    is refused, so the set is balanced), or ``at-most`` that many (a class with fewer gives all of its own).

    ``test_per_class`` caps the test images first, as training does (:class:`~probe.specs.spec.DataSpec`'s
    ``test_per_class``: the same seeded subset of at most that many of each class of a task): ``"run"`` (the
    default) is the run's own cap, so that the networks are probed on the images they were tested on; None takes
    every test image (``--all-test-images``)."""

    tasks: str = "target"
    per_class: int | None = None
    seed: int = 0
    per_class_mode: str = "exactly"
    test_per_class: int | str | None = RUN_CAP

    def __post_init__(self) -> None:
        if self.tasks not in IMAGE_TASKS:
            raise ProbeError(f"probe set {self.tasks!r} is not one of {', '.join(IMAGE_TASKS)}")
        if self.per_class is not None and self.per_class < 1:
            raise ProbeError(f"per-class probe size {self.per_class} must be a positive integer")
        if self.per_class_mode not in PER_CLASS_MODES:
            raise ProbeError(f"per-class mode {self.per_class_mode!r} is not one of {', '.join(PER_CLASS_MODES)}")
        if self.per_class is None and self.per_class_mode != "exactly":
            raise ProbeError(f"per-class mode {self.per_class_mode!r} says how many images per class --per-class "
                             "takes; give --per-class K with it")
        cap = self.test_per_class
        if cap not in (None, RUN_CAP) and (isinstance(cap, bool) or not isinstance(cap, int) or cap < 1):
            raise ProbeError(f"test images per class {cap!r} must be a positive integer (--test-per-class), "
                             f"{RUN_CAP!r} (the run's cap) or None (every test image, --all-test-images)")

    def for_network(self, spec: NetworkSpec) -> ExtractionImages:
        """These images with the cap ``"run"`` made the cap ``spec`` was trained and tested with."""
        return replace(self, test_per_class=spec.data.test_per_class) if self.test_per_class == RUN_CAP else self

    def classes(self, spec: NetworkSpec) -> list[str]:
        """The classes of the images for ``spec``, in the dataset's class order (A's then B's for ``both``)."""
        return [c for task in self._tasks(spec) for c in task]

    def _tasks(self, spec: NetworkSpec) -> list[list[str]]:
        """The classes of each task of the probe set for ``spec``."""
        # base and random networks copy no layers, source-transfer ones copy a network of no task here: their own
        source = spec.source or spec.target
        if self.tasks == "both":
            return [list(spec.classes_a), list(spec.classes_b)]
        task = spec.target if self.tasks == "target" else source
        return [list(spec.classes_a if task == "A" else spec.classes_b)]

    def samples(self, arrays: ImageArrays, spec: NetworkSpec) -> np.ndarray:
        """Test-split indices of the images for ``spec``, in their seeded order (:meth:`indices`), under the cap."""
        images = self.for_network(spec)
        return images.indices(arrays, images.classes(spec), images.capped(arrays, spec))

    def capped(self, arrays: ImageArrays, spec: NetworkSpec) -> np.ndarray | None:
        """The test images the cap leaves of each task of the probe set for ``spec``, chosen as training chose
        them (:func:`~probe.data.tasks.task_indices`), sorted; None without a cap (every test image)."""
        cap = self.for_network(spec).test_per_class
        if cap is None:
            return None
        data = replace(spec.data, test_per_class=cap)
        return np.sort(np.concatenate([task_indices(arrays, classes, data).test for classes in self._tasks(spec)]))

    def indices(self, arrays: ImageArrays, classes: list[str], capped: np.ndarray | None = None) -> np.ndarray:
        """Test-split indices of the images, in a permutation seeded by ``seed``: the same set of images comes in
        the same order for every network, and consecutive images are random draws of the set, not sorted by class.
        ``capped``: the test images to choose from (:meth:`capped`; None: every one)."""
        labels = np.asarray(arrays.test_y)
        wanted = [arrays.classes.index(c) for c in classes]
        rng = np.random.default_rng(self.seed)
        candidates = np.flatnonzero(np.isin(labels, wanted)) if capped is None else np.sort(capped)
        if self.per_class is None:
            return rng.permutation(candidates)
        members = [candidates[labels[candidates] == k] for k in wanted]
        sizes = [len(m) for m in members]
        if self.per_class_mode == "exactly" and min(sizes) < self.per_class:
            smallest = int(np.argmin(sizes))
            cap = (f" (the test images are capped at {self.test_per_class} a class, as the run's networks were "
                   "tested: --all-test-images takes every one)" if capped is not None else "")
            raise ProbeError(f"class {classes[smallest]!r} has the fewest test images, {sizes[smallest]}{cap}, fewer "
                             f"than the {self.per_class} per class asked for; ask for at most {sizes[smallest]} per "
                             "class, or take at most that many of each class with --per-class-mode at-most "
                             "(per_class_mode='at-most')")
        picked = [rng.choice(m, min(self.per_class, len(m)), replace=False) for m in members]
        # the subset chosen as before shuffled order existed, then shuffled
        return rng.permutation(np.sort(np.concatenate(picked)))

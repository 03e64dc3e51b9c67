"""Datasets loaded once per process, for the tasks that run in it (here, or on a dask worker): finding and
fingerprinting a dataset's files takes time (an image-folder tree has a file per image), and one process may run
hundreds of tasks. The arrays are memory-mapped from the decoded cache, so processes share their pages."""

from __future__ import annotations

import functools
from pathlib import Path

from probe.data.arrays import ImageArrays
from probe.data.datasets import load_dataset
from probe.specs.spec import DataSpec


@functools.lru_cache(maxsize=4)
def loaded_dataset(data: DataSpec, cache_dir: str | None, classes: tuple[str, ...] | None = ()) -> ImageArrays:
    """The dataset, with ``classes`` decoded where a dataset is decoded class by class (None: every class; the
    default, none beyond those cached: enough for labels)."""
    return load_dataset(data, Path(cache_dir) if cache_dir else None, progress=False,
                        classes=None if classes is None else list(classes))

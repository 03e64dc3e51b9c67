"""Datasets of one's own: a function that returns the images, named by its import path (``--dataset module:function``),
registered with :func:`register_dataset`, or added by an entry point of group ``probe.datasets``.

The function takes ``root`` (the DataSpec's, ``--data-root``) if it has such a parameter, and returns
``(train_x, train_y, test_x, test_y, classes)``: uint8 images ``(N, H, W, C)``, ``(N, C, H, W)`` or ``(N, H, W)``
with 1 or 3 channels and integer labels indexing the class names (or an :class:`ImageArrays`); or ``(train, test)``,
two torchvision-style datasets of ``(image, label)`` pairs (PIL images or uint8 arrays) with ``.classes``.

Nothing is cached on disk: probe cannot tell when what a function reads has changed. A process calls the function
once for a run (the arrays are kept in its memory for the run's networks); a function that is slow should keep a
cache of its own.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from probe.data.arrays import DATASETS, ImageArrays, resized
from probe.errors import ProbeError
from probe.plugins import function_path, import_function, is_import_path, load_plugins_into, reason
from probe.specs.spec import DataSpec

ENTRY_POINTS = "probe.datasets"


@dataclass(frozen=True)
class RegisteredDataset:
    """A dataset function registered by name: ``loader`` is its import path; ``origin`` registered or entry point."""

    name: str
    loader: str
    origin: str


DATASET_REGISTRY: dict[str, RegisteredDataset] = {}


def register_dataset(name: str, *, replace: bool = False):
    """Register the decorated function as dataset ``name`` (``--dataset NAME``); see this module for what it returns.

    The spec of a run records the function's import path, so another process (``probe extract``, a dask worker)
    imports it from there. A name registered from another function is refused unless ``replace``; probe's own names
    are never replaced."""
    if not name or ":" in name or name in DATASETS:
        raise ProbeError(f"dataset name {name!r} must be non-empty, without ':' (which marks an import path or a "
                         f"root) and none of probe's own ({', '.join(DATASETS)})")

    def decorate(load: Callable) -> Callable:
        path = function_path(load, f"the function of dataset {name!r}")
        old = DATASET_REGISTRY.get(name)
        if old is not None and old.loader != path and not replace:  # the same function again: its module re-imported
            raise ProbeError(f"dataset {name!r} is already registered (function {old.loader}); register {path} under "
                             "another name, or pass replace=True")
        DATASET_REGISTRY[name] = RegisteredDataset(name, path, "registered")
        return load

    return decorate


def load_plugins(name: str | None = None) -> None:
    """Load the entry points of group ``probe.datasets`` (those called ``name``, or all): modules that register
    datasets, or dataset functions (see :func:`probe.plugins.load_plugins_into`)."""
    load_plugins_into(DATASET_REGISTRY, ENTRY_POINTS, register_dataset, name)


def complete_data_spec(data: DataSpec) -> DataSpec:
    """``data`` with what a study records filled in: where a dataset registered in this process outside an entry
    point is defined, so that every other process imports it from there (an entry point's is found by name wherever
    its distribution is installed)."""
    entry = DATASET_REGISTRY.get(data.name)
    if data.builder is not None or entry is None or entry.origin != "registered":
        return data
    return dataclasses.replace(data, builder=entry.loader)


def loader_path(spec: DataSpec) -> str:
    """The import path of the function that loads the dataset ``spec`` names."""
    if spec.builder is not None:
        return spec.builder
    if is_import_path(spec.name):
        return spec.name
    if spec.name not in DATASET_REGISTRY:
        load_plugins(spec.name)
    if spec.name not in DATASET_REGISTRY:
        registered = f", a registered dataset ({', '.join(DATASET_REGISTRY)})" if DATASET_REGISTRY else ""
        raise ProbeError(f"unknown dataset {spec.name!r}; expected one of {', '.join(DATASETS)} (a name may carry "
                         f"its root after a colon, e.g. imagefolder:/data/imagenet){registered}, or a function's "
                         "import path MODULE:FUNCTION")
    return DATASET_REGISTRY[spec.name].loader


@functools.lru_cache(maxsize=2)
def load_own(spec: DataSpec) -> ImageArrays:
    """The images of a dataset of one's own, checked, and made ``spec.image_size`` squares (by ``spec.resize_mode``)
    where it gives a size; kept for the next call in this process (planning a run and training its networks both
    load the data)."""
    path = loader_path(spec)
    load = import_function(path, f"the function of dataset {spec.name!r}")
    label = f"dataset {spec.name!r}" + ("" if path == spec.name else f" ({path})")
    kwargs = {}
    if spec.root is not None:
        if "root" not in inspect.signature(load).parameters:
            raise ProbeError(f"{label} takes no root, but {spec.root!r} was given; drop --data-root, or give the "
                             "function a root parameter")
        kwargs["root"] = spec.root
    try:
        result = load(**kwargs)
    except ProbeError:
        raise
    except Exception as e:  # the user's code may fail in any way; say where, in one line
        raise ProbeError(f"{label} raised {reason(e)}") from e
    arrays = resized(_as_arrays(result, spec.name), spec.image_size, spec.resize_mode)
    return _checked(arrays, spec.name)


def _as_arrays(result: object, label: str) -> ImageArrays:
    if isinstance(result, ImageArrays):
        result = (result.train_x, result.train_y, result.test_x, result.test_y, result.classes)
    if isinstance(result, (tuple, list)) and len(result) == 5:
        train_x, train_y, test_x, test_y, classes = result
        return ImageArrays(_images(train_x, label, "train"), np.asarray(train_y), _images(test_x, label, "test"),
                           np.asarray(test_y), [str(c) for c in classes])
    if isinstance(result, (tuple, list)) and len(result) == 2:
        train, test = result
        classes = getattr(train, "classes", None)
        if classes is None:
            raise ProbeError(f"dataset {label!r} returned datasets without .classes; give the train dataset a "
                             "classes list (torchvision's have one)")
        return ImageArrays(*_dataset_arrays(train, label, "train"), *_dataset_arrays(test, label, "test"),
                           [str(c) for c in classes])
    raise ProbeError(f"dataset {label!r} returned a {type(result).__name__}; return (train_x, train_y, test_x, "
                     "test_y, classes) or (train, test) torchvision-style datasets")


def _dataset_arrays(ds: object, label: str, split: str) -> tuple[np.ndarray, np.ndarray]:
    """A torchvision-style dataset's images and labels."""
    data, targets = getattr(ds, "data", None), getattr(ds, "targets", None)
    if getattr(ds, "transform", None) is None and data is not None and targets is not None and len(data) == len(ds):
        # torchvision's in-memory datasets (MNIST, CIFAR) keep their uint8 images and labels there
        return _images(data, label, split), np.asarray(targets)
    pairs = [ds[i] for i in range(len(ds))]
    try:
        images = np.stack([np.asarray(image) for image, *_ in pairs])
    except ValueError:
        raise ProbeError(f"the {split} images of dataset {label!r} differ in size; resize them in its transform, or "
                         "return arrays") from None
    return _images(images, label, split), np.asarray([target for _, target, *_ in pairs])


def _images(x: object, label: str, split: str) -> np.ndarray:
    """Images as ``(N, H, W, C)`` uint8, from channels-last, channels-first or channel-less arrays."""
    x = np.asarray(x)
    if x.dtype != np.uint8:
        raise ProbeError(f"the {split} images of dataset {label!r} are {x.dtype}; return uint8 images (0..255), not "
                         "normalized ones")
    if x.ndim == 3:
        x = x[..., None]
    if x.ndim != 4 or (x.shape[-1] not in (1, 3) and x.shape[1] not in (1, 3)):
        raise ProbeError(f"the {split} images of dataset {label!r} have shape {x.shape}; expected (N, H, W, C), "
                         "(N, C, H, W) or (N, H, W) with 1 or 3 channels")
    if x.shape[-1] not in (1, 3):
        x = x.transpose(0, 2, 3, 1)
    return np.ascontiguousarray(x)


def _checked(arrays: ImageArrays, label: str) -> ImageArrays:
    """Refuse, in one line, what the rest of probe cannot use: images and labels that do not pair up, labels
    outside the classes, non-square images, train and test of different shapes."""
    classes = list(arrays.classes)
    if len(classes) < 2 or len(set(classes)) != len(classes):
        raise ProbeError(f"dataset {label!r} needs at least 2 distinct class names, not {classes[:10]}")
    shapes = {split: x.shape[1:] for split, x in (("train", arrays.train_x), ("test", arrays.test_x))}
    if shapes["train"] != shapes["test"]:
        raise ProbeError(f"dataset {label!r} has train images of shape {shapes['train']} but test images of shape "
                         f"{shapes['test']} (height, width, channels)")
    height, width, _ = shapes["train"]
    if height != width:
        raise ProbeError(f"dataset {label!r} has {height}x{width} images; give an image size (--image-size) to "
                         "make them squares (center-cropped, or as --resize-mode says)")
    out = []
    for split, x, y in (("train", arrays.train_x, arrays.train_y), ("test", arrays.test_x, arrays.test_y)):
        if y.ndim != 1 or len(y) != len(x) or not np.issubdtype(y.dtype, np.integer):
            raise ProbeError(f"dataset {label!r} has {len(x)} {split} images but {split} labels of shape {y.shape} "
                             f"and dtype {y.dtype}; give one integer label per image")
        if len(y) and (y.min() < 0 or y.max() >= len(classes)):
            bad = int(y.min()) if y.min() < 0 else int(y.max())
            raise ProbeError(f"dataset {label!r} has {split} label {bad} outside 0..{len(classes) - 1} (its "
                             f"{len(classes)} classes)")
        out += [x, y.astype(np.int64)]
    return ImageArrays(*out, classes)

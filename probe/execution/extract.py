"""Per-layer activations of a run's networks, written through xarray into one zarr store.

The store is a tree with one group per network (its id, e.g. ``random-s0/init0/A3B+``), one variable per cut layer
(through the architecture's ``forward_intermediates``) plus ``logits``. Every network of a run sees the same test
images in the same order, so groups line up sample by sample; that order is a seeded shuffle, so that consecutive
samples (a streaming estimator's minibatches) are random draws rather than one class after another. Batches are
appended as they come, so memory stays bounded. How a group is written so that it is whole or marked incomplete,
by one process at a time, and checked before it is trusted, is :mod:`probe.storage.activation_store`'s.

A store holds one set of settings (:func:`resolve_settings`): its first extraction records them, every later one
(a resume, the rewrite of a damaged group) uses them where it is given none, and one that asks for others is refused,
so that a store's groups always compare. A new store's images default to those the run's networks were tested on
(the run's ``--test-per-class`` cap, :attr:`ExtractionImages.test_per_class`).

A layer's output is kept as it comes when flat (N, D); a convolutional map (N, C, H, W) is reduced as
:class:`Reduction`'s ``spatial`` says, and a token sequence (N, T, D), a vision transformer's, as its ``tokens``
says: the class token (where the network has one: token 0), the mean over tokens, every token, or K seeded tokens.
"""

from __future__ import annotations

import functools
import json
import os
import re
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import numpy as np
import torch
import xarray as xr
from tqdm import tqdm

from probe.architectures.build import build_model
from probe.architectures.layered import LayeredNet
from probe.data.arrays import ImageArrays
from probe.data.tasks import task_indices
from probe.errors import ProbeError
from probe.execution.batches import Normalize, center_crop, to_device
from probe.execution.executor import CANCELLED, Executor, LocalExecutor
from probe.execution.sweep import read_run_data
from probe.execution.train import resolve_device
from probe.planning.plan import PlannedNetwork, read_plan
from probe.specs.spec import NetworkSpec
from probe.specs.variants import LONG_BASE, Variant
from probe.storage.activation_store import (
    SAMPLES,
    SIZE_SETTINGS,
    VALUE_SETTINGS,
    check_store_path,
    consolidate,
    describe_settings,
    disagreement,
    ensure_hierarchy,
    group_attrs,
    group_lock,
    group_settings,
    groups_settings,
    make_way,
    move_into_place,
    option_name,
    record_settings,
    recorded_settings,
    same_settings,
    scratch,
    store_lock,
    verify_group,
)
from probe.storage.atomic import write_error
from probe.storage.checkpoint import load_state, load_weights, weights_fingerprint
from probe.storage.loaded import loaded_dataset
from probe.storage.run import Run
from probe.storage.state import network_state

IMAGE_TASKS = ("target", "source", "both")
PER_CLASS_MODES = ("exactly", "at-most")
DTYPES = ("float32", "float16")
# A group's "sample_order" attr: its samples are in the seeded shuffled order. Groups written before lack it (their
# samples are sorted by test-set index, so by class) and are written again, so that a store's groups line up
SAMPLE_ORDER = "shuffled"
# ExtractionImages.test_per_class: the cap of the run's own networks (their DataSpec's test_per_class)
RUN_CAP = "run"
# The parameters that hold a network's class token (torchvision's VisionTransformer, timm's): its token 0
CLASS_TOKENS = ("class_token", "cls_token")
TOKEN_POLICIES = ("auto", "cls", "mean", "all")


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


@dataclass(frozen=True)
class Reduction:
    """What is kept of a convolutional map (N, C, H, W), ``spatial``: ``mean`` (per-channel spatial mean), ``full``
    (the whole map), or ``sample:K`` (K seeded random positions per image, positions treated as samples as in CKA
    studies, Kornblith et al. 2019). Fully connected layers (N, D) are kept whole in every mode.

    What is kept of a token sequence (N, T, D), a vision transformer's, ``tokens``: ``auto`` (the default: the class
    token where the network has one, else the mean), ``cls`` (the class token, token 0: torchvision's and timm's
    ViTs prepend it, from their embedding on; refused for a network without one), ``mean`` (the mean over the
    tokens), ``all`` (every token), or ``sample:K`` (K seeded tokens, the same K of every image and of every network
    for sequences of one length, in order; every token where there are at most K). Kept tokens are a dim of their
    own, ``<layer>_token``; an analysis flattens them into features (token x unit)."""

    spatial: str = "mean"
    seed: int = 0
    dtype: str = "float32"
    tokens: str = "auto"

    def __post_init__(self) -> None:
        if self.spatial not in ("mean", "full") and not re.fullmatch(r"sample:[1-9]\d*", self.spatial):
            raise ProbeError(f"spatial reduction {self.spatial!r} is not one of mean, full, sample:K (K >= 1)")
        if self.tokens not in TOKEN_POLICIES and not re.fullmatch(r"sample:[1-9]\d*", self.tokens):
            raise ProbeError(f"token policy {self.tokens!r} is not one of {', '.join(TOKEN_POLICIES)}, sample:K "
                             "(K >= 1)")
        if self.dtype not in DTYPES:
            raise ProbeError(f"dtype {self.dtype!r} is not one of {', '.join(DTYPES)}")

    @property
    def positions(self) -> int:
        return int(self.spatial.split(":")[1]) if self.spatial.startswith("sample:") else 0

    def token_policy(self, class_token: bool) -> str:
        """What is kept of a token sequence of a network with (or without) a class token: cls, mean, all or
        sample:K (``auto`` made one of the first two)."""
        if self.tokens == "auto":
            return "cls" if class_token else "mean"
        return self.tokens


def _constant(x: torch.Tensor) -> bool:
    """Whether the rows of ``x`` (samples, features) are all alike up to float rounding: features that do not vary
    over the images (two images at least are needed to tell)."""
    if x.shape[0] < 2:
        return False
    x = x.float()
    return bool((x - x[:1]).abs().max() <= 1e-6 * max(1.0, float(x.abs().max())))


def _check_class_token(spec: NetworkSpec) -> None:
    """Refuse ``--tokens cls`` for networks without a class token (a CNN, a transformer without one) before anything
    is written: it would be recorded as the store's policy and keep nothing (one network of the run is built: they
    share their architecture)."""
    if not has_class_token(build_model(spec)):
        raise ProbeError(f"--tokens cls keeps the class token, and the networks of this run ({spec.arch.name}) have "
                         f"none (no parameter called {' or '.join(CLASS_TOKENS)}); extract with --tokens auto (the "
                         "mean where there is no class token), mean, all or sample:K")


def has_class_token(model: torch.nn.Module) -> bool:
    """Whether ``model`` holds a class token (a parameter called one of :data:`CLASS_TOKENS`): its token sequences
    then start with it."""
    return any(name.rsplit(".", 1)[-1] in CLASS_TOKENS for name, _ in model.named_parameters())


def _dims(name: str, ndim: int, reduction: Reduction, tokens: str | None = None) -> tuple[str, ...]:
    """The dims of one layer's stored outputs (``tokens``: the policy applied to a token sequence)."""
    if ndim == 3:
        kept = tokens == "all" or tokens.startswith("sample:")
        return ("sample", f"{name}_token", f"{name}_unit") if kept else ("sample", f"{name}_unit")
    if ndim == 2 or reduction.spatial == "mean":
        return ("sample", f"{name}_unit")
    if reduction.spatial == "full":
        return ("sample", f"{name}_unit", f"{name}_y", f"{name}_x")
    return ("sample", f"{name}_position", f"{name}_unit")


def _reduce(x: torch.Tensor, reduction: Reduction, positions: np.ndarray | None) -> torch.Tensor:
    """One layer's batch of outputs after the spatial reduction (``positions``: the flat ones to keep, for sample:K)."""
    if x.ndim == 2 or reduction.spatial == "full":
        return x
    if reduction.spatial == "mean":
        return x.mean(dim=(2, 3))
    flat = x.flatten(2)  # (B, C, H*W)
    idx = torch.tensor(positions, device=x.device)[:, None, :].expand(-1, flat.shape[1], -1)
    return flat.gather(2, idx).transpose(1, 2)


def _reduce_tokens(x: torch.Tensor, policy: str, kept: np.ndarray | None) -> torch.Tensor:
    """One layer's batch of token sequences (B, T, D) after the token policy: (B, D) for cls and mean, (B, T', D)
    for the tokens ``kept`` (all, sample:K)."""
    if policy == "cls":
        return x[:, 0]
    if policy == "mean":
        return x.mean(dim=1)
    if policy == "all":
        return x
    return x[:, torch.as_tensor(kept, device=x.device)]


def _kept_tokens(policy: str, seed: int, n_tokens: int) -> np.ndarray | None:
    """The indices of the tokens a policy keeps of a sequence of ``n_tokens``, in order (None: it keeps none as
    such): every one for all, K seeded by the sequence's length for sample:K (so the same ones in every image,
    every layer of that length and every network)."""
    if policy == "all":
        return np.arange(n_tokens)
    if not policy.startswith("sample:"):
        return None
    k = int(policy.split(":")[1])
    if k >= n_tokens:
        return np.arange(n_tokens)
    return np.sort(np.random.default_rng([seed, n_tokens]).choice(n_tokens, k, replace=False))


@functools.lru_cache(maxsize=32)
def _positions_cached(seed: int, k: int, height: int, width: int, samples: bytes) -> np.ndarray:
    samples = np.frombuffer(samples, dtype=np.int64)
    out = np.empty((len(samples), k), dtype=np.int64)
    for i, s in enumerate(samples):
        rng = np.random.default_rng([seed, height, width, int(s)])
        out[i] = rng.choice(height * width, k, replace=height * width < k)
    out.flags.writeable = False
    return out


def _positions(reduction: Reduction, height: int, width: int, samples: np.ndarray) -> np.ndarray:
    """K positions per image in a ``height`` x ``width`` map, seeded by the map's size and the sample's
    test-set index: every layer of that size, in every network, samples the same places of the same image (which
    is what lets CKA compare positions across networks). Cached, since a run's networks share them."""
    return _positions_cached(reduction.seed, reduction.positions, height, width,
                             np.ascontiguousarray(samples, dtype=np.int64).tobytes())


def _group_attrs(spec: NetworkSpec, images: ExtractionImages, reduction: Reduction, weights: Path, fingerprint: str,
                 layers: list[str], n_samples: int, batch_size: int, chunk_size: int) -> dict:
    # "probe_set" names the images as the command line's --probe-set does; the batch and chunk sizes, so that a store
    # whose settings record is lost is rebuilt with the computation its groups were written with
    return {"spec": json.dumps(spec.to_dict(), sort_keys=True), "network": spec.id, "name": spec.name,
            "probe_set": json.dumps(asdict(images)), "reduction": json.dumps(asdict(reduction)),
            "weights": str(weights), "weights_fingerprint": fingerprint, "layers": json.dumps(layers),
            "sample_order": SAMPLE_ORDER, SAMPLES: n_samples, "batch_size": batch_size, "chunk_size": chunk_size,
            "complete": False}


def extract_network(store: Path, spec: NetworkSpec, model: LayeredNet, arrays: ImageArrays, normalize: Normalize,
                    images: ExtractionImages, reduction: Reduction, device: torch.device, batch_size: int = 256,
                    weights: Path = Path(), progress: bool = True, chunk_size: int | None = None,
                    fingerprint: str = "") -> None:
    """Write one network's activations as the group ``spec.id`` of ``store``: forward passes of ``batch_size``
    images, appended in zarr chunks of ``chunk_size`` samples (default four batches), written aside until the last
    one is in (see :mod:`probe.storage.activation_store`), under the group's lock (a process writing it meanwhile is
    waited for)."""
    store = Path(store)
    images = images.for_network(spec)  # the run's cap, "run", is this network's: its attrs record the number
    samples = images.samples(arrays, spec)
    model = model.to(device).eval()
    chunk_size = chunk_size or 4 * batch_size
    group = _Group.of(spec, model, arrays, samples, scratch(store, spec.id), chunk_size,
                      _group_attrs(spec, images, reduction, weights, fingerprint, model.cut_points, len(samples),
                                   batch_size, chunk_size))
    with group_lock(store, spec.id):
        try:
            make_way(store, spec.id, group.attrs)
            _write_batches(model, spec, arrays, group, reduction, normalize, device, batch_size, progress)
            move_into_place(store, spec.id, group.work)
        except OSError as e:  # a full disk, or no permission: the group stays marked incomplete; a rerun rewrites it
            raise write_error(store / spec.id, e) from None


@dataclass(frozen=True)
class _Group:
    """What every chunk of one network's group shares: where it is written, the images, their labels and tasks,
    the layers and the attrs."""

    work: Path
    chunk_size: int
    attrs: dict
    layers: tuple[str, ...]
    classifier: str
    samples: np.ndarray
    labels: np.ndarray
    class_names: np.ndarray
    tasks: np.ndarray
    logit_classes: np.ndarray
    class_token: bool
    network: str

    @classmethod
    def of(cls, spec: NetworkSpec, model: LayeredNet, arrays: ImageArrays, samples: np.ndarray, work: Path,
           chunk_size: int, attrs: dict) -> _Group:
        labels = np.asarray(arrays.test_y)[samples]
        class_names = np.array(arrays.classes, dtype=object)
        task_of = {c: "A" for c in spec.classes_a} | {c: "B" for c in spec.classes_b}
        return cls(work, chunk_size, attrs, tuple(model.cut_points), model.layer_names[-1], samples, labels,
                   class_names, np.array([task_of[c] for c in class_names[labels]], dtype=object),
                   np.array(spec.target_classes, dtype=object), has_class_token(model), spec.id)


@dataclass(frozen=True)
class _Layout:
    """How each layer is stored, fixed by the first batch: its dims; for spatial sample:K, the flat positions kept
    per image and the map's width (to give them as y and x); for a token sequence, the policy applied, the number of
    tokens and the tokens kept (all, sample:K)."""

    dims: dict[str, tuple[str, ...]]
    positions: dict[str, np.ndarray]
    widths: dict[str, int]
    tokens: dict[str, str]
    n_tokens: dict[str, int]
    kept: dict[str, np.ndarray]

    @classmethod
    def of(cls, acts: dict[str, torch.Tensor], reduction: Reduction, group: _Group) -> _Layout:
        dims, positions, widths, tokens, n_tokens, kept = {}, {}, {}, {}, {}, {}
        for name, x in acts.items():
            if x.ndim not in (2, 3, 4):
                raise ProbeError(f"layer {name} of {group.network} outputs shape {list(x.shape)}; probe extract "
                                 "stores flat features (N, D), token sequences (N, T, D) and channel maps "
                                 "(N, C, H, W): cut the network where its outputs are one of those (--cut-at)")
            if x.ndim == 3:
                tokens[name], n_tokens[name] = reduction.token_policy(group.class_token), x.shape[1]
                if reduction.tokens == "auto" and tokens[name] == "cls" and _constant(x[:, 0]):
                    # before any attention mixes it with the image (a ViT's embedding), the class token is the same
                    # for every image: it would measure nothing, so auto takes the mean of the tokens there
                    tokens[name] = "mean"
                if tokens[name] == "cls" and not group.class_token:
                    raise ProbeError(f"--tokens cls keeps the class token, and {group.network} has none (no "
                                     f"parameter called {' or '.join(CLASS_TOKENS)}) for layer {name}'s "
                                     f"{x.shape[1]} tokens; extract with --tokens auto (the mean where there is no "
                                     "class token), mean, all or sample:K")
                indices = _kept_tokens(tokens[name], reduction.seed, x.shape[1])
                if indices is not None:
                    kept[name] = indices
            dims[name] = _dims(name, x.ndim, reduction, tokens.get(name))
            if x.ndim == 4 and reduction.positions:
                h, w = x.shape[2:]
                positions[name], widths[name] = _positions(reduction, h, w, group.samples), w
        return cls(dims, positions, widths, tokens, n_tokens, kept)

    @property
    def attrs(self) -> dict:
        """The group's attrs that say what was kept of each token sequence (none for a network without them)."""
        return {"tokens": json.dumps(self.tokens)} if self.tokens else {}


def _write_batches(model: LayeredNet, spec: NetworkSpec, arrays: ImageArrays, group: _Group, reduction: Reduction,
                   normalize: Normalize, device: torch.device, batch_size: int, progress: bool) -> None:
    """Run the group's images through ``model`` and write each chunk of reduced activations."""
    dtype = np.dtype(reduction.dtype)
    bar = tqdm(total=len(group.samples), desc=spec.id, unit="img", leave=False, disable=not progress,
               dynamic_ncols=True)
    # One writer thread builds and writes a chunk while the next batches run forward; at most one chunk waits in it
    # and one fills, so memory stays bounded by two chunks whatever the number of images. It is handed everything
    # it reads.
    with ThreadPoolExecutor(max_workers=1) as writer, torch.inference_mode():
        pending, parts, chunk_start, layout = None, [], 0, None
        for start in range(0, len(group.samples), batch_size):
            x = to_device(np.asarray(arrays.test_x[group.samples[start: start + batch_size]]), device)
            logits, acts = model.forward_intermediates(normalize(center_crop(x, spec.input_size)), group.layers)
            layout = layout or _Layout.of(acts, reduction, group)
            parts.append(_reduce_batch(acts, logits, layout, reduction, start, dtype))
            done = start + len(logits)
            if done - chunk_start >= group.chunk_size or done == len(group.samples):
                if pending is not None:
                    pending.result()
                pending = writer.submit(_write_chunk, group, layout, chunk_start, parts)
                parts, chunk_start = [], done
            bar.update(len(logits))
        if pending is not None:
            pending.result()
    bar.close()


def _reduce_batch(acts: dict[str, torch.Tensor], logits: torch.Tensor, layout: _Layout, reduction: Reduction,
                  start: int, dtype: np.dtype) -> dict[str, np.ndarray]:
    """One batch's stored values, by layer name and ``logits``; ``start``: the batch's first image."""
    out = {}
    for name, x in acts.items():
        if name in layout.tokens:
            reduced = _reduce_tokens(x, layout.tokens[name], layout.kept.get(name))
        else:
            pos = layout.positions[name][start: start + len(logits)] if name in layout.positions else None
            reduced = _reduce(x, reduction, pos)
        out[name] = reduced.float().cpu().numpy().astype(dtype)
    out["logits"] = logits.float().cpu().numpy().astype(dtype)
    return out


def _write_chunk(group: _Group, layout: _Layout, start: int, parts: list[dict[str, np.ndarray]]) -> None:
    """Append the batches ``parts`` (the first at image ``start``) to the group, creating it with the first."""
    ds = _chunk_dataset(group, layout, start, parts)
    if start == 0:
        encoding = {v: {"chunks": (group.chunk_size, *ds[v].shape[1:])} for v in ds.data_vars}
        ds.to_zarr(group.work, mode="w", encoding=encoding, consolidated=False)
    else:
        ds.to_zarr(group.work, append_dim="sample", consolidated=False)


def _chunk_dataset(group: _Group, layout: _Layout, start: int, parts: list[dict[str, np.ndarray]]) -> xr.Dataset:
    """The chunk of the batches ``parts``, which it empties once they are copied into one array per variable (the
    writer thread holds a chunk once, not twice)."""
    values = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
    parts.clear()
    rows = slice(start, start + len(values["logits"]))
    labels = group.labels[rows]
    data_vars, coords = {}, {}
    for i, name in enumerate(group.layers, start=1):
        dims = layout.dims[name]
        attrs = {"layer": name, "layer_index": i}
        if name in layout.tokens:
            attrs.update(tokens=layout.tokens[name], n_tokens=layout.n_tokens[name])
        data_vars[name] = xr.Variable(dims, values[name], attrs=attrs)
        coords[f"{name}_unit"] = np.arange(values[name].shape[dims.index(f"{name}_unit")])
        if name in layout.kept:
            coords[f"{name}_token"] = layout.kept[name]
        if name in layout.positions:
            w, pos = layout.widths[name], layout.positions[name][rows]
            coords[f"{name}_pos_y"] = (("sample", f"{name}_position"), pos // w)
            coords[f"{name}_pos_x"] = (("sample", f"{name}_position"), pos % w)
    data_vars["logits"] = xr.Variable(("sample", "logit_class"), values["logits"],
                                      attrs={"layer": group.classifier, "layer_index": len(group.layers) + 1})
    coords.update(sample=group.samples[rows], label=("sample", labels),
                  class_name=("sample", group.class_names[labels]), task=("sample", group.tasks[rows]),
                  logit_class=group.logit_classes)
    return xr.Dataset(data_vars, coords=coords, attrs={**group.attrs, **layout.attrs})


def asked_settings(images: ExtractionImages | None = None, reduction: Reduction | None = None,
                   batch_size: int | None = None, chunk_size: int | None = None) -> dict:
    """The settings an extraction asks for, by name (as the command line names them): every field of ``images``
    (its test cap unless it is the run's, ``"run"``) and of ``reduction`` when given, and the sizes when given. What
    is left out is the store's, or the default."""
    asked = {}
    if images is not None:
        asked.update(probe_set=images.tasks, per_class=images.per_class, per_class_mode=images.per_class_mode,
                     seed=images.seed)
        if images.test_per_class != RUN_CAP:
            asked.update(test_per_class=images.test_per_class)
    if reduction is not None:
        if images is not None and reduction.seed != images.seed:
            raise ProbeError(f"the probe set's seed {images.seed} and the reduction's seed {reduction.seed} differ; "
                             "a store is extracted with one seed (--seed): give both the same")
        asked.update(spatial=reduction.spatial, tokens=reduction.tokens, seed=reduction.seed, dtype=reduction.dtype)
    asked.update({k: v for k, v in zip(SIZE_SETTINGS, (batch_size, chunk_size)) if v is not None})
    return asked


# The test cap's default is the run's (run_defaults); every test image where the run has none
DEFAULT_SETTINGS = {**asked_settings(ExtractionImages(test_per_class=None), Reduction()), "batch_size": 256,
                    "chunk_size": None}


def run_defaults(run_dir: Path) -> dict:
    """The settings a new store of ``run_dir`` takes where none are asked, other than DEFAULT_SETTINGS': the test
    cap its networks were trained with (their DataSpec's ``test_per_class``), so that they are probed on the images
    they were tested on. Nothing when the run has no plan yet (its extraction then says so)."""
    try:
        _, plan = read_plan(Run(run_dir))
    except ProbeError:
        return {}
    caps = {p.spec.data.test_per_class for p in plan}
    return {"test_per_class": caps.pop()} if len(caps) == 1 else {}


def resolve_settings(store: Path, asked: dict, defaults: dict | None = None) -> dict:
    """The settings to extract into ``store`` with (every name of DEFAULT_SETTINGS, the chunk size resolved): those
    ``asked``, the others those the store records (or, where it records none, those its groups agree on), or the
    defaults for a new store (``defaults``, :func:`run_defaults`, over DEFAULT_SETTINGS). Settings that would change
    the stored values of a store extracted otherwise are refused in one line: a store holds one set, so that a
    rewrite (a repair) can never mix them. Reads only."""
    asked = {k: v for k, v in asked.items() if not (k == "test_per_class" and v == RUN_CAP)}
    unknown = sorted((set(asked) | set(defaults or {})) - set(DEFAULT_SETTINGS))
    if unknown:
        raise ProbeError(f"extraction setting {unknown[0]!r} is not one of {', '.join(DEFAULT_SETTINGS)}")
    recorded = _store_settings(store, asked) if Path(store).is_dir() else None
    conflicts = [k for k in VALUE_SETTINGS if recorded and k in asked and asked[k] != recorded[k]]
    if conflicts:
        raise ProbeError(f"{store} was extracted with {describe_settings(recorded)}, and this extraction asks for "
                         f"{describe_settings({**recorded, **asked})} (another "
                         f"{', '.join(_option(k) for k in conflicts)}); a store holds one set of settings: leave "
                         f"{'it' if len(conflicts) == 1 else 'them'} out to use the store's (a rewrite of any of "
                         "its groups does), or write a new store (--out)")
    settings = {**DEFAULT_SETTINGS, **(defaults or {})}
    settings.update({k: v for k, v in (recorded or {}).items()
                     if k in DEFAULT_SETTINGS and (k in VALUE_SETTINGS or v is not None)})
    settings.update(asked)
    settings["chunk_size"] = settings["chunk_size"] or 4 * settings["batch_size"]
    settings_objects(settings)  # refuses values that are no settings (a spatial reduction 'middle', say)
    return settings


def _store_settings(store: Path, asked: dict) -> dict | None:
    """The settings ``store`` records or, where it records none (written before probe recorded them, or its record
    lost), those of its groups; None for a store without groups. Groups that disagree are refused unless the
    extraction says which settings to keep (it then writes the others again)."""
    recorded = recorded_settings(store)
    if recorded is not None:
        return recorded
    groups = groups_settings(store)
    pair = disagreement(groups)
    if pair is None:
        found = next(iter(groups.values()), None)
        return None if found is None else {**found, **_group_sizes(store, list(groups))}
    if any(k in asked for k in VALUE_SETTINGS):
        return None
    a, b = pair
    raise ProbeError(f"the groups of {store} were extracted with different settings ({a}: "
                     f"{describe_settings(groups[a])}; {b}: {describe_settings(groups[b])}) and it records none of "
                     f"its own; rerun with the settings to keep (e.g. {describe_settings(groups[a])}), which writes "
                     "the other groups again, or write a new store (--out)")


def claim_settings(store: Path, settings: dict) -> None:
    """Make ``settings`` (resolved) the store's, under its lock: recorded by the first extraction of the store,
    checked against the record by every other (one started meanwhile with other settings may have claimed it)."""
    if store.is_symlink() and not store.exists():
        raise ProbeError(f"store {str(store)!r} is a symbolic link to {os.readlink(store)!r}, which does not exist; "
                         "create the folder it points to, or remove the link")
    if store.exists() and not store.is_dir():
        raise ProbeError(f"store {str(store)!r} is a file, not a zarr store (a folder); give another --out")
    store.mkdir(parents=True, exist_ok=True)
    with store_lock(store):
        resolve_settings(store, settings)  # refuses settings that another extraction recorded meanwhile
        if recorded_settings(store) is None:
            record_settings(store, settings)


def _group_sizes(store: Path, network_ids: list[str]) -> dict:
    """The batch and chunk sizes the groups were written with, where they record them and all agree ({} else): a
    lost settings record rebuilt with other sizes would write activations that differ in the last bits."""
    sizes = {(a.get("batch_size"), a.get("chunk_size")) for a in (group_attrs(store, n) or {} for n in network_ids)}
    if len(sizes) != 1 or None in next(iter(sizes)):
        return {}
    batch, chunk = next(iter(sizes))
    return {"batch_size": batch, "chunk_size": chunk}


def _option(setting: str) -> str:
    """The command line's option(s) for a setting, in a refusal."""
    return "--test-per-class (or --all-test-images)" if setting == "test_per_class" else option_name(setting)


def settings_objects(settings: dict) -> tuple[ExtractionImages, Reduction, int, int]:
    """The images, reduction, batch size and chunk size that resolved ``settings`` name."""
    return (ExtractionImages(settings["probe_set"], settings["per_class"], settings["seed"],
                             settings["per_class_mode"], settings["test_per_class"]),
            Reduction(settings["spatial"], settings["seed"], settings["dtype"], settings["tokens"]),
            settings["batch_size"], settings["chunk_size"])


def extraction_networks(run_dir: Path, networks: list[str] | None, batch_size: int,
                        chunk_size: int | None) -> tuple[list[PlannedNetwork], dict]:
    """Check an extraction's settings against ``run_dir``: the planned networks to extract, and its data.json."""
    if batch_size < 1:
        raise ProbeError(f"batch size {batch_size} must be a positive integer")
    if chunk_size is not None and chunk_size < 1:
        raise ProbeError(f"chunk size {chunk_size} must be a positive integer")
    run = Run(run_dir)
    _, plan = read_plan(run)
    # the convergence check's longer bases measure the bases' budget, not features: nothing reads them from a store
    plan = [p for p in plan if Variant.of(p.spec) != LONG_BASE]
    if networks:
        unknown = [n for n in networks if not any(n in (p.spec.id, p.spec.name) for p in plan)]
        if unknown:
            raise ProbeError(f"no planned network is called {unknown[0]!r}")
        plan = [p for p in plan if p.spec.id in networks or p.spec.name in networks]
    if not run.data.exists():
        raise ProbeError(f"{run_dir} has no {run.data.name} yet: no network of it has trained ('probe train "
                         f"{run_dir}')")
    return plan, read_run_data(run)


def extract_one(run_dir: Path, planned: PlannedNetwork, store: Path, arrays: ImageArrays, normalize: Normalize,
                images: ExtractionImages, reduction: Reduction, device: torch.device, batch_size: int,
                progress: bool, chunk_size: int | None) -> tuple[str, str | None]:
    """Extract one network into its group of ``store`` unless that group verifies and is current. Returns the
    outcome, ``"written"``, ``"skipped"``, ``"untrained"`` or ``"failed"``, with a note: what was wrong with a group
    written anew, or why the network could not be extracted (its weights are missing or unreadable). The group is
    checked and written under its lock, so several processes may extract into one store at once: one writes a group
    while the others wait, then find it whole and skip it."""
    spec, run = planned.spec, Run(run_dir)
    state, detail = network_state(run, spec)
    if state == "corrupt":  # e.g. its metrics say done but its weights are missing or damaged: say which
        return "failed", detail
    if state != "done":
        return "untrained", None
    weights = run.network(spec.id).weights
    with group_lock(store, spec.id):  # another process may be writing it: what it wrote is checked once it is done
        write, damage = _to_write(store, planned, weights, images, reduction)
        if not write:
            return "skipped", None
        model = build_model(spec)
        try:
            load_state(model, load_weights(weights, spec)[0], weights)
        except ProbeError as e:
            return "failed", str(e)
        extract_network(store, spec, model, arrays, normalize, images, reduction, device, batch_size,
                        weights.relative_to(run.path), progress, chunk_size, weights_fingerprint(weights))
    return "written", damage


def _to_write(store: Path, planned: PlannedNetwork, weights: Path, images: ExtractionImages,
              reduction: Reduction) -> tuple[bool, str | None]:
    """Whether the network's group must be written (again), and what is wrong with the one there (None when there is
    none, or it was extracted from other weights): it is skipped only when whole, current and of the store's
    settings."""
    spec = planned.spec
    if not (store / spec.id).exists():
        return True, None
    damage = verify_group(store, spec.id, list(planned.cut_points))
    done = group_attrs(store, spec.id) if damage is None else None
    if done is None or done.get("weights_fingerprint") != weights_fingerprint(weights):
        return True, damage
    ours, theirs = asked_settings(images.for_network(spec), reduction), group_settings(done)
    if theirs is None or not same_settings(theirs, ours):
        return True, (f"it was extracted with {describe_settings(theirs) if theirs else 'settings it does not record'}"
                      f", where the store's settings are {describe_settings(ours)}; written again with the store's")
    if done.get("sample_order") != SAMPLE_ORDER:
        return True, ("its samples are sorted by class (written before probe shuffled them); written again in the "
                      "shuffled order the other groups have")
    return False, None


def extract_task(run_dir: str, planned: PlannedNetwork, store: str, stats: dict, images: ExtractionImages,
                 reduction: Reduction, device: str, batch_size: int, cache_dir: str | None, chunk_size: int | None,
                 progress: bool = False) -> tuple[str, str | None]:
    """Extract one network (the body of every extraction task) into its own group of the shared store, its inputs
    normalized by ``stats`` (the run's data.json), on ``device`` as this process resolves it; returns
    :func:`extract_one`'s outcome and note."""
    dev = resolve_device(device)
    return extract_one(Path(run_dir), planned, Path(store), loaded_dataset(planned.spec.data, cache_dir),
                       Normalize(stats["mean"], stats["std"], dev), images, reduction, dev, batch_size, progress,
                       chunk_size)


def start_result(store: Path, network_ids: list[str]) -> dict:
    """An extraction's result before its first network: the store's hierarchy already repaired where damaged."""
    damaged = ensure_hierarchy(store, network_ids) if store.exists() else {}
    return {"written": [], "skipped": [], "untrained": [], "damaged": damaged, "failed": {}}


def record(result: dict, network_id: str, outcome: str, note: str | None) -> None:
    """Add one network's :func:`extract_one` outcome to ``result``."""
    if outcome == "failed":
        result["failed"][network_id] = note
        return
    result[outcome].append(network_id)
    if note:
        result["damaged"][network_id] = note


def extract_run(run_dir: Path, store: Path | None = None, networks: list[str] | None = None,
                images: ExtractionImages | None = None, reduction: Reduction | None = None,
                device: torch.device | None = None, batch_size: int | None = None, cache_dir: Path | None = None,
                progress: bool | str = True, chunk_size: int | None = None) -> dict:
    """Extract every finished network of ``run_dir`` (or those named in ``networks``) into ``store`` (default: the
    run's own), one after another in this process.

    ``images``, ``reduction``, ``batch_size`` and ``chunk_size`` left out are the store's (those it was first
    extracted with; for a new store the defaults, with the test images the run's networks were tested on: its
    ``--test-per-class`` cap), and settings other than the store's are refused (:func:`resolve_settings`). Groups
    that verify, are current and have the store's settings are skipped; the others are (re)written. ``progress``:
    True shows progress bars, and on stderr a line saying how many networks and images it will process and one
    line per network as it is done; ``"lines"`` those lines only (``--quiet``); False nothing. Returns the ids
    ``written``, ``skipped`` and ``untrained``, with ``damaged`` (what was wrong with each group or hierarchy node
    written anew, by path) and ``failed`` (why a network could not be extracted: the others are extracted all the
    same)."""
    run = Run(run_dir)
    return extract_with(LocalExecutor(), run, Path(store or run.store), networks, images, reduction,
                        str(device or "cpu"), batch_size, cache_dir, progress, chunk_size)


LINES = "lines"  # progress: a line before and one per network, no progress bars (--quiet)


def extract_with(executor: Executor, run_dir: Path, store: Path, networks: list[str] | None,
                 images: ExtractionImages | None, reduction: Reduction | None, device: str, batch_size: int | None,
                 cache_dir: Path | None, progress: bool | str, chunk_size: int | None, retries: int = 0) -> dict:
    """:func:`extract_run` with one task of ``executor`` per network, on ``device`` (a name, resolved where the task
    runs), each run again up to ``retries`` times when its code raised; the store's metadata is consolidated once
    all are done."""
    store = check_store_path(store)
    settings = resolve_settings(store, asked_settings(images, reduction, batch_size, chunk_size),
                                run_defaults(run_dir))
    images, reduction, batch_size, chunk_size = settings_objects(settings)
    planned, stats = extraction_networks(run_dir, networks, batch_size, chunk_size)
    if reduction.tokens == "cls" and planned:
        _check_class_token(planned[0].spec)
    bars, lines = progress is True, bool(progress)
    cache = str(cache_dir) if cache_dir else None
    counts = _image_counts(planned, images, cache) if lines else {}
    if lines:
        _say(_plan_line(Run(run_dir), store, planned, images, reduction, counts))
    claim_settings(store, settings)
    result = start_result(store, [p.spec.id for p in planned])  # before any task writes into the hierarchy
    futures = {executor.submit(extract_task, str(Run(run_dir).path), p, str(store), stats, images, reduction, device,
                               batch_size, cache, chunk_size, key=f"extract-{p.spec.id}", retries=retries,
                               progress=bars and executor.in_process): p.spec.id for p in planned}
    stop, started = None, time.monotonic()
    for done, future in enumerate(tqdm(executor.as_completed(futures), total=len(futures), desc="extract",
                                       unit="net", disable=not bars, dynamic_ncols=True), start=1):
        network_id = futures[future]
        if future.status == "cancelled":  # asking for its error would raise CancelledError
            outcome = ("failed", CANCELLED)
        else:
            error = future.exception()
            if isinstance(error, ProbeError):  # concerns the run (a full disk, a store of other settings): stop
                stop = error
                break
            # an error of this network's own (out of memory, say): the others are extracted all the same
            outcome = future.result() if error is None else ("failed", f"{type(error).__name__}: {error}")
        record(result, network_id, *outcome)
        if lines:
            _say(_network_line(done, len(futures), network_id, outcome[0], counts.get(network_id),
                               time.monotonic() - started))
    if store.exists():  # what was written is listed, even when an error stopped the rest (Ctrl-C just stops)
        try:
            with store_lock(store):  # no group is replaced meanwhile
                consolidate(store)
        except ProbeError:  # a full disk fails this too: the error that stopped the extraction is the one to say
            if stop is None:
                raise
    if stop is not None:
        raise stop
    return result


def _say(line: str) -> None:
    """A line on stderr, at once, that leaves the progress bars whole."""
    tqdm.write(line, file=sys.stderr)
    sys.stderr.flush()


def _image_counts(planned: list[PlannedNetwork], images: ExtractionImages, cache: str | None) -> dict[str, int]:
    """How many images each network of ``planned`` will be probed on (none where this process cannot load the
    dataset, as a dask client may not: the workers do)."""
    counts = {}
    for p in planned:
        try:
            arrays = loaded_dataset(p.spec.data, cache)
        except (ProbeError, OSError):
            return {}
        counts[p.spec.id] = len(images.samples(arrays, p.spec))
    return counts


def _plan_line(run: Run, store: Path, planned: list[PlannedNetwork], images: ExtractionImages,
               reduction: Reduction, counts: dict[str, int]) -> str:
    """What an extraction will process, said before it starts: how many networks (trained ones; the others are
    untouched), on how many images of which probe set, and into which store."""
    states = {p.spec.id: network_state(run, p.spec)[0] for p in planned}
    trained = [p for p in planned if states[p.spec.id] == "done"]
    corrupt = sum(state == "corrupt" for state in states.values())  # finished, with weights that cannot be used
    waiting = len(planned) - len(trained) - corrupt
    others = [f"{corrupt} with weights that cannot be used"] if corrupt else []
    others += [f"{waiting} more planned, not trained yet"] if waiting else []
    line = (f"extract: {len(trained)} trained network{'s' if len(trained) != 1 else ''}"
            + (f" ({'; '.join(others)})" if others else "") + f" into {store}")
    sizes: dict[int, int] = {}
    for p in trained:
        if p.spec.id in counts:
            sizes[counts[p.spec.id]] = sizes.get(counts[p.spec.id], 0) + 1
    if sizes:
        line += (f", each on {next(iter(sizes))} test images" if len(sizes) == 1 else ", on " + ", ".join(
            f"{n} test images ({k} network{'s' if k != 1 else ''})" for n, k in sorted(sizes.items())))
    which = {"target": "the target task's", "source": "the source task's", "both": "both tasks'"}[images.tasks]
    if images.test_per_class is None:
        which += ", every one"
    else:
        which += (f", those the run's networks were tested on (at most {images.test_per_class} a class; "
                  "--all-test-images takes every one)")
    if images.per_class is not None:
        which += f", {images.per_class_mode.replace('-', ' ')} {images.per_class} a class of them (seeded)"
    return f"{line}: {which}; spatial {reduction.spatial}, tokens {reduction.tokens}"


def _network_line(done: int, total: int, network_id: str, outcome: str, images: int | None, elapsed: float) -> str:
    """One network's line as it is done: ``[3/6] random-s0/init0/A1B written (100 images), 12 s``."""
    said = {"written": "written", "skipped": "already complete", "untrained": "not trained yet",
            "failed": "failed"}[outcome]
    size = f" ({images} images)" if outcome == "written" and images is not None else ""
    return f"[{done}/{total}] {network_id} {said}{size}, {elapsed:.0f} s"

"""Writing one network's activations into its group of the store, through xarray into zarr.

The store is a tree with one group per network (its id, e.g. ``random-s0/init0/A3B+``), one variable per cut layer
(through the architecture's ``forward_intermediates``) plus ``logits``. Batches are appended in chunks as they come,
so memory stays bounded. How a group is written so that it is whole or marked incomplete, by one process at a time,
and checked before it is trusted, is :mod:`probe.storage.activation_store`'s.
"""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import xarray as xr
from tqdm import tqdm

from probe.architectures.layered import LayeredNet
from probe.data.arrays import ImageArrays
from probe.execution.batches import Normalize, center_crop, to_device
from probe.execution.extraction.images import ExtractionImages
from probe.execution.extraction.reduction import Layout, Reduction, has_class_token, reduce_batch
from probe.specs.spec import NetworkSpec
from probe.storage.activation_store import SAMPLES, group_lock, make_way, move_into_place, scratch
from probe.storage.atomic import write_error

# A group's "sample_order" attr: its samples are in the seeded shuffled order. Groups written before lack it (their
# samples are sorted by test-set index, so by class) and are written again, so that a store's groups line up
SAMPLE_ORDER = "shuffled"


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
            layout = layout or Layout.of(acts, reduction, group.class_token, group.network, group.samples)
            parts.append(reduce_batch(acts, logits, layout, reduction, start, dtype))
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


def _write_chunk(group: _Group, layout: Layout, start: int, parts: list[dict[str, np.ndarray]]) -> None:
    """Append the batches ``parts`` (the first at image ``start``) to the group, creating it with the first."""
    ds = _chunk_dataset(group, layout, start, parts)
    if start == 0:
        encoding = {v: {"chunks": (group.chunk_size, *ds[v].shape[1:])} for v in ds.data_vars}
        ds.to_zarr(group.work, mode="w", encoding=encoding, consolidated=False)
    else:
        ds.to_zarr(group.work, append_dim="sample", consolidated=False)


def _chunk_dataset(group: _Group, layout: Layout, start: int, parts: list[dict[str, np.ndarray]]) -> xr.Dataset:
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


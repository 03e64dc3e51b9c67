"""Per-layer activations of a run's networks, written through xarray into one zarr store.

The store is a tree with one group per network (its id, e.g. ``random-s0/init0/A3B+``), one variable per cut layer
(through the architecture's ``forward_intermediates``) plus ``logits``. Every network of a run sees the same probe
images in the same order, so groups line up sample by sample. Batches are appended as they come, so memory stays
bounded; a group is marked ``complete`` only after its last batch, and an incomplete group is rewritten on the next
run.
"""

from __future__ import annotations

import functools
import json
import re
import shutil
import warnings
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import xarray as xr
import zarr
from tqdm import tqdm

from data.datasets import ImageArrays, load_dataset
from probe.architectures import LayeredNet, build_model
from probe.atomic import read_json
from probe.batches import Normalize, center_crop, to_device
from probe.checkpoint import WEIGHTS, load_weights
from probe.errors import ProbeError
from probe.plan import Study, read_plan
from probe.spec import NetworkSpec
from probe.sweep import DATA, network_state
from probe.train import network_dir

STORE = "activations.zarr"
PROBE_TASKS = ("target", "source", "both")
DTYPES = ("float32", "float16")


@dataclass(frozen=True)
class ProbeSet:
    """Which test images go through every network: the target task's (default), the source task's (the task whose
    base donated the copied layers; the target for base and random networks), or both tasks'; optionally a seeded,
    class-balanced subset of ``per_class`` images per class."""

    tasks: str = "target"
    per_class: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        if self.tasks not in PROBE_TASKS:
            raise ProbeError(f"probe set {self.tasks!r} is not one of {', '.join(PROBE_TASKS)}")
        if self.per_class is not None and self.per_class < 1:
            raise ProbeError(f"per-class probe size {self.per_class} must be a positive integer")

    def classes(self, spec: NetworkSpec) -> list[str]:
        """The probe classes for ``spec``, in the dataset's class order (A's then B's for ``both``)."""
        source = spec.source if spec.variant in ("selffer", "transfer") else spec.target
        if self.tasks == "both":
            return [*spec.classes_a, *spec.classes_b]
        task = spec.target if self.tasks == "target" else source
        return list(spec.classes_a if task == "A" else spec.classes_b)

    def indices(self, arrays: ImageArrays, classes: list[str]) -> np.ndarray:
        """Test-split indices of the probe images, in ascending order (the same order for every network)."""
        labels = np.asarray(arrays.test_y)
        wanted = [arrays.classes.index(c) for c in classes]
        if self.per_class is None:
            return np.flatnonzero(np.isin(labels, wanted))
        rng = np.random.default_rng(self.seed)
        picked = []
        for k in wanted:
            members = np.flatnonzero(labels == k)
            if len(members) < self.per_class:
                raise ProbeError(f"class {arrays.classes[k]!r} has {len(members)} test images, fewer than the "
                                 f"{self.per_class} per class asked for")
            picked.append(rng.choice(members, self.per_class, replace=False))
        return np.sort(np.concatenate(picked))


@dataclass(frozen=True)
class Reduction:
    """What is kept of a convolutional map: ``mean`` (per-channel spatial mean), ``full`` (the whole map), or
    ``sample:K`` (K seeded random positions per image, positions treated as samples as in CKA studies,
    Kornblith et al. 2019). Fully connected layers are kept whole in every mode."""

    spatial: str = "mean"
    seed: int = 0
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if self.spatial not in ("mean", "full") and not re.fullmatch(r"sample:[1-9]\d*", self.spatial):
            raise ProbeError(f"spatial reduction {self.spatial!r} is not one of mean, full, sample:K (K >= 1)")
        if self.dtype not in DTYPES:
            raise ProbeError(f"dtype {self.dtype!r} is not one of {', '.join(DTYPES)}")

    @property
    def positions(self) -> int:
        return int(self.spatial.split(":")[1]) if self.spatial.startswith("sample:") else 0


def _reduce(name: str, x: torch.Tensor, reduction: Reduction, positions: np.ndarray | None) -> tuple[tuple, np.ndarray]:
    """``(dims, values)`` of one layer's batch of outputs after the spatial reduction."""
    if x.ndim == 2:
        return ("sample", f"{name}_unit"), x
    if reduction.spatial == "mean":
        return ("sample", f"{name}_unit"), x.mean(dim=(2, 3))
    if reduction.spatial == "full":
        return ("sample", f"{name}_unit", f"{name}_y", f"{name}_x"), x
    flat = x.flatten(2)  # (B, C, H*W)
    idx = torch.tensor(positions, device=x.device)[:, None, :].expand(-1, flat.shape[1], -1)
    return ("sample", f"{name}_position", f"{name}_unit"), flat.gather(2, idx).transpose(1, 2)


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
    """K positions per probe sample in a ``height`` x ``width`` map, seeded by the map's size and the sample's
    test-set index: every layer of that size, in every network, samples the same places of the same image (which
    is what lets CKA compare positions across networks). Cached, since a run's networks share them."""
    return _positions_cached(reduction.seed, reduction.positions, height, width,
                             np.ascontiguousarray(samples, dtype=np.int64).tobytes())


def _group_attrs(spec: NetworkSpec, probe_set: ProbeSet, reduction: Reduction, weights: Path,
                 fingerprint: str) -> dict:
    return {"spec": json.dumps(spec.to_dict(), sort_keys=True), "network": spec.id, "name": spec.name,
            "probe_set": json.dumps(asdict(probe_set)), "reduction": json.dumps(asdict(reduction)),
            "weights": str(weights), "weights_fingerprint": fingerprint, "complete": False}


def weights_fingerprint(path: Path) -> str:
    """Size and modification time of a weights file: a group extracted from other weights (the network was trained
    again since) is written anew."""
    st = Path(path).stat()
    return f"{st.st_size}-{st.st_mtime_ns}"


def extract_network(store: Path, spec: NetworkSpec, model: LayeredNet, arrays: ImageArrays, normalize: Normalize,
                    probe_set: ProbeSet, reduction: Reduction, device: torch.device, batch_size: int = 256,
                    weights: Path = Path(), progress: bool = True, chunk_size: int | None = None,
                    fingerprint: str = "") -> None:
    """Write one network's activations as the group ``spec.id`` of ``store``: forward passes of ``batch_size``
    images, appended in zarr chunks of ``chunk_size`` samples (default four batches)."""
    chunk_size = chunk_size or 4 * batch_size
    classes = probe_set.classes(spec)
    samples = probe_set.indices(arrays, classes)
    model = model.to(device).eval()
    layers = model.cut_points
    dtype = np.dtype(reduction.dtype)
    class_names = np.array(arrays.classes, dtype=object)
    task_of = {c: "A" for c in spec.classes_a} | {c: "B" for c in spec.classes_b}
    attrs = _group_attrs(spec, probe_set, reduction, weights, fingerprint)
    positions: dict[str, np.ndarray] = {}  # layer -> (samples, K) flat positions, for sample:K
    widths: dict[str, int] = {}  # layer -> map width, to turn flat positions into (y, x)
    dims: dict[str, tuple] = {}

    def reduce_batch(start: int, acts: dict[str, torch.Tensor], logits: torch.Tensor) -> dict[str, np.ndarray]:
        out = {}
        for name in layers:
            x = acts[name]
            pos = None
            if x.ndim == 4 and reduction.positions:
                h, w = x.shape[2:]
                if name not in positions:
                    positions[name], widths[name] = _positions(reduction, h, w, samples), w
                pos = positions[name][start: start + len(logits)]
            dims[name], values = _reduce(name, x, reduction, pos)
            out[name] = values.float().cpu().numpy().astype(dtype)
        out["logits"] = logits.float().cpu().numpy().astype(dtype)
        return out

    def chunk_dataset(start: int, parts: list[dict[str, np.ndarray]]) -> xr.Dataset:
        values = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
        idx = samples[start: start + len(values["logits"])]
        labels = np.asarray(arrays.test_y)[idx]
        data_vars, coords = {}, {}
        for i, name in enumerate(layers, start=1):
            data_vars[name] = xr.Variable(dims[name], values[name], attrs={"layer": name, "layer_index": i})
            coords[f"{name}_unit"] = np.arange(values[name].shape[dims[name].index(f"{name}_unit")])
            if name in positions:
                w = widths[name]
                pos = positions[name][start: start + len(idx)]
                coords[f"{name}_pos_y"] = (("sample", f"{name}_position"), pos // w)
                coords[f"{name}_pos_x"] = (("sample", f"{name}_position"), pos % w)
        data_vars["logits"] = xr.Variable(("sample", "logit_class"), values["logits"],
                                          attrs={"layer": model.layer_names[-1], "layer_index": len(layers) + 1})
        coords.update(sample=idx, label=("sample", labels), class_name=("sample", class_names[labels]),
                      task=("sample", np.array([task_of[c] for c in class_names[labels]], dtype=object)),
                      logit_class=np.array(spec.target_classes, dtype=object))
        return xr.Dataset(data_vars, coords=coords, attrs=attrs)

    def write(start: int, parts: list[dict[str, np.ndarray]]) -> None:
        ds = chunk_dataset(start, parts)
        if start == 0:
            encoding = {v: {"chunks": (chunk_size, *ds[v].shape[1:])} for v in ds.data_vars}
            ds.to_zarr(store, group=spec.id, mode="w", encoding=encoding, consolidated=False)
        else:
            ds.to_zarr(store, group=spec.id, append_dim="sample", consolidated=False)

    images = arrays.test_x
    bar = tqdm(total=len(samples), desc=spec.id, unit="img", leave=False, disable=not progress, dynamic_ncols=True)
    # One writer thread builds and writes a chunk while the next batches run forward; at most one chunk waits in it
    # and one fills, so memory stays bounded by two chunks whatever the probe set's size.
    with ThreadPoolExecutor(max_workers=1) as writer, torch.inference_mode():
        pending, parts, chunk_start = None, [], 0
        for start in range(0, len(samples), batch_size):
            x = to_device(np.asarray(images[samples[start: start + batch_size]]), device)
            logits, acts = model.forward_intermediates(normalize(center_crop(x, spec.input_size)), layers)
            parts.append(reduce_batch(start, acts, logits))
            done = start + len(logits)
            if done - chunk_start >= chunk_size or done == len(samples):
                if pending is not None:
                    pending.result()
                pending = writer.submit(write, chunk_start, parts)
                parts, chunk_start = [], done
            bar.update(len(logits))
        if pending is not None:
            pending.result()
    bar.close()
    zarr.open_group(str(store), path=spec.id, mode="r+").attrs["complete"] = True


def group_is_complete(store: Path, network_id: str) -> dict | None:
    """The attrs of a complete group, or None when the group is missing or was left incomplete."""
    try:
        attrs = dict(zarr.open_group(str(store), path=network_id, mode="r").attrs)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError, KeyError):
        return None
    return attrs if attrs.get("complete") else None


def consolidate(store: Path) -> None:
    """Consolidate the store's metadata so ``xr.open_datatree(store, engine="zarr")`` reads it in one request."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zarr notes that consolidated metadata is an extension of Zarr v3
        zarr.consolidate_metadata(str(store))


def extraction_specs(run_dir: Path, networks: list[str] | None, batch_size: int,
                     chunk_size: int | None) -> tuple[Study, list[NetworkSpec], dict]:
    """Check an extraction's settings against ``run_dir``: its study, the networks to extract, and data.json."""
    if batch_size < 1:
        raise ProbeError(f"batch size {batch_size} must be a positive integer")
    if chunk_size is not None and chunk_size < 1:
        raise ProbeError(f"chunk size {chunk_size} must be a positive integer")
    study, plan = read_plan(run_dir)
    specs = [p.spec for p in plan]
    if networks:
        unknown = [n for n in networks if not any(n in (s.id, s.name) for s in specs)]
        if unknown:
            raise ProbeError(f"no planned network is called {unknown[0]!r}")
        specs = [s for s in specs if s.id in networks or s.name in networks]
    if not (run_dir / DATA).exists():
        raise ProbeError(f"{run_dir} has no {DATA} yet: no network of it has trained ('probe train {run_dir}')")
    return study, specs, read_json(run_dir / DATA)


def extract_one(run_dir: Path, spec: NetworkSpec, store: Path, arrays: ImageArrays, normalize: Normalize,
                probe_set: ProbeSet, reduction: Reduction, device: torch.device, batch_size: int,
                progress: bool, chunk_size: int | None) -> str:
    """Extract one network into its group of ``store`` unless that group is complete and current: returns
    ``"written"``, ``"skipped"`` or ``"untrained"``. Writes touch only the network's own group, so several
    processes may extract different networks into one store at once."""
    if network_state(run_dir, spec)[0] != "done":
        return "untrained"
    weights = network_dir(run_dir, spec) / WEIGHTS
    done = group_is_complete(store, spec.id)
    if done is not None and done.get("weights_fingerprint") != weights_fingerprint(weights):
        done = None  # extracted from weights that have since been replaced: write it anew
    if done is not None:
        if (json.loads(done["probe_set"]), json.loads(done["reduction"])) != (asdict(probe_set), asdict(reduction)):
            raise ProbeError(f"{store} already holds {spec.id} with probe set {done['probe_set']} and reduction "
                             f"{done['reduction']}; write other settings to another store (--out)")
        return "skipped"
    state, _ = load_weights(weights, spec)
    model = build_model(spec)
    model.load_state_dict(state)
    if (store / spec.id).exists():
        shutil.rmtree(store / spec.id)  # left incomplete by an interrupted run
    extract_network(store, spec, model, arrays, normalize, probe_set, reduction, device, batch_size,
                    weights.relative_to(run_dir), progress, chunk_size, weights_fingerprint(weights))
    return "written"


def extract_run(run_dir: Path, store: Path | None = None, networks: list[str] | None = None,
                probe_set: ProbeSet = ProbeSet(), reduction: Reduction = Reduction(), device: torch.device | None = None,
                batch_size: int = 256, cache_dir: Path | None = None, progress: bool = True,
                chunk_size: int | None = None) -> dict[str, list[str]]:
    """Extract every finished network of ``run_dir`` (or those named in ``networks``) into ``store``.

    Complete groups with the same probe set and reduction are skipped; incomplete ones are rewritten. Returns the
    ids written, skipped and not yet trained."""
    run_dir = Path(run_dir)
    store = Path(store or run_dir / STORE)
    device = device or torch.device("cpu")
    study, specs, stats = extraction_specs(run_dir, networks, batch_size, chunk_size)
    arrays = load_dataset(study.data, cache_dir, progress=progress)
    normalize = Normalize(stats["mean"], stats["std"], device)
    result = {"written": [], "skipped": [], "untrained": []}
    for spec in tqdm(specs, desc="extract", unit="net", disable=not progress, dynamic_ncols=True):
        outcome = extract_one(run_dir, spec, store, arrays, normalize, probe_set, reduction, device, batch_size,
                              progress, chunk_size)
        result[outcome].append(spec.id)
    if store.exists():
        consolidate(store)
    return result

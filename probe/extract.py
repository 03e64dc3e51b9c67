"""Per-layer activations of a run's networks, written through xarray into one zarr store.

The store is a tree with one group per network (its id, e.g. ``random-s0/init0/A3B+``), one variable per cut layer
(through the architecture's ``forward_intermediates``) plus ``logits``. Every network of a run sees the same probe
images in the same order, so groups line up sample by sample. Batches are appended as they come, so memory stays
bounded.

A group is written under the store's ``.probe/partial/`` folder, which zarr does not see (it has no zarr.json),
and renamed into place only once its last batch is in; meanwhile its place holds an empty group marked incomplete.
A group records its layers in its attrs, and its manifest (every array's shape, dtype, dims and a CRC-32 of each
chunk file) goes to ``.probe/manifests/``: outside the attrs, which would otherwise differ between two extractions
of the same activations chunked differently. :func:`verify_group` checks both before a group is skipped as done or
analyzed; a group that fails is written again. The root's consolidated metadata is dropped before any group is
replaced, and rebuilt at the end of a run.
"""

from __future__ import annotations

import functools
import json
import re
import shutil
import warnings
import zlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from urllib.parse import quote

import numpy as np
import torch
import xarray as xr
import zarr
from tqdm import tqdm

from probe.data.datasets import ImageArrays, load_dataset
from probe.architectures import LayeredNet, build_model, build_network
from probe.atomic import read_json, write_error, write_json
from probe.batches import Normalize, center_crop, to_device
from probe.checkpoint import WEIGHTS, load_state, load_weights
from probe.errors import ProbeError
from probe.plan import Study, read_plan
from probe.spec import NetworkSpec
from probe.sweep import DATA, network_state
from probe.train import network_dir

STORE = "activations.zarr"
PROBE_DIR = ".probe"  # inside the store (one file system, copied with it) but outside zarr's hierarchy
META = "zarr.json"
ARRAY_KEYS = ("shape", "data_type", "dimension_names")  # what a manifest records of each array's metadata
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


def _group_attrs(spec: NetworkSpec, probe_set: ProbeSet, reduction: Reduction, weights: Path, fingerprint: str,
                 layers: list[str]) -> dict:
    return {"spec": json.dumps(spec.to_dict(), sort_keys=True), "network": spec.id, "name": spec.name,
            "probe_set": json.dumps(asdict(probe_set)), "reduction": json.dumps(asdict(reduction)),
            "weights": str(weights), "weights_fingerprint": fingerprint, "layers": json.dumps(layers),
            "complete": False}


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
    images, appended in zarr chunks of ``chunk_size`` samples (default four batches), in the store's
    ``.probe/partial/`` folder until the last one is in (see the module's docstring)."""
    store = Path(store)
    work = _scratch(store, spec.id)
    chunk_size = chunk_size or 4 * batch_size
    classes = probe_set.classes(spec)
    samples = probe_set.indices(arrays, classes)
    model = model.to(device).eval()
    layers = model.cut_points
    dtype = np.dtype(reduction.dtype)
    class_names = np.array(arrays.classes, dtype=object)
    task_of = {c: "A" for c in spec.classes_a} | {c: "B" for c in spec.classes_b}
    attrs = _group_attrs(spec, probe_set, reduction, weights, fingerprint, layers)
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
            ds.to_zarr(work, mode="w", encoding=encoding, consolidated=False)
        else:
            ds.to_zarr(work, append_dim="sample", consolidated=False)

    try:
        _make_way(store, spec.id, attrs)
        _write_batches(model, spec, arrays, samples, normalize, device, batch_size, chunk_size, reduce_batch, write,
                       progress)
        _move_into_place(store, spec.id, work)
    except OSError as e:  # a full disk, or no permission: the group stays marked incomplete, and a rerun rewrites it
        raise write_error(store / spec.id, e) from None


def _write_batches(model: LayeredNet, spec: NetworkSpec, arrays: ImageArrays, samples: np.ndarray,
                   normalize: Normalize, device: torch.device, batch_size: int, chunk_size: int, reduce_batch,
                   write, progress: bool) -> None:
    """Run the probe images through ``model`` and hand each chunk of reduced activations to ``write``."""
    layers = model.cut_points
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


def _scratch(store: Path, network_id: str) -> Path:
    """Where a group is written before it is renamed into place: a folder of its own, which zarr (and with it xarray
    and consolidation) never lists as a group."""
    return store / PROBE_DIR / "partial" / quote(network_id, safe="")


def _manifest_path(store: Path, network_id: str) -> Path:
    return Path(store) / PROBE_DIR / "manifests" / f"{quote(network_id, safe='')}.json"


def _make_way(store: Path, network_id: str, attrs: dict) -> None:
    """Prepare the place of a new group: the hierarchy above it whole, the root's consolidated metadata dropped (so
    that a kill from here on never leaves it describing a group that is gone), the old group (stale or damaged)
    moved aside in one step and deleted there, and in its place an empty group with ``attrs``, marked incomplete."""
    ensure_hierarchy(store, [network_id])
    drop_consolidated(store)
    final, work = store / network_id, _scratch(store, network_id)
    trash = work.with_name(work.name + ".old")
    for leftover in (work, trash):  # of an interrupted run: each network has one writer at a time
        shutil.rmtree(leftover, ignore_errors=True)
    if final.exists():
        trash.parent.mkdir(parents=True, exist_ok=True)
        final.rename(trash)
        shutil.rmtree(trash)
    write_json(final / META, {"zarr_format": 3, "node_type": "group", "attributes": attrs})
    _manifest_path(store, network_id).unlink(missing_ok=True)


def _move_into_place(store: Path, network_id: str, work: Path) -> None:
    """Mark the group written at ``work`` complete, record its manifest, and rename it onto its empty placeholder:
    readers see the placeholder or the whole group, never part of one."""
    zarr.open_group(str(work), mode="r+").attrs["complete"] = True
    write_json(_manifest_path(store, network_id), _manifest(work))
    final = store / network_id
    shutil.rmtree(final, ignore_errors=True)
    work.rename(final)


def _manifest(group: Path) -> dict:
    """Each array of the group at ``group``: its shape, dtype and dims as its metadata says, and the CRC-32 of each
    of its chunk files (by path within the array), for :func:`verify_group` to tell a whole group from a damaged one."""
    out = {}
    for array in sorted(p for p in group.iterdir() if p.is_dir()):
        meta = json.loads((array / META).read_bytes())
        chunks = {f.relative_to(array).as_posix(): _crc32(f) for f in sorted(array.rglob("*"))
                  if f.is_file() and f != array / META}
        out[array.name] = {**{k: meta.get(k) for k in ARRAY_KEYS}, "chunks": chunks}
    return out


def _crc32(path: Path) -> int:
    crc = 0
    with open(path, "rb") as f:
        while block := f.read(1 << 20):  # a chunk of whole maps can be large: read it piecewise
            crc = zlib.crc32(block, crc)
    return crc


def extracted_layers(spec: NetworkSpec) -> list[str]:
    """The layers a network's group holds besides ``logits``: the cut points of the network ``spec`` builds."""
    return list(_cut_points(spec.arch, spec.in_channels, spec.input_size))


@functools.lru_cache(maxsize=16)
def _cut_points(arch, in_channels: int, input_size: int) -> tuple[str, ...]:
    # One build per architecture: layer names depend neither on the weights nor on the number of classes.
    return tuple(build_network(arch, in_channels, 2, input_size, 0).cut_points)


class _Damage(Exception):
    """What :func:`verify_group` found wrong, in words."""


def verify_group(store: Path, network_id: str, expected_layers: list[str] | None = None) -> str | None:
    """What is wrong with the group ``network_id`` of ``store``, in one line, or None when it is complete and whole:
    marked complete; recording ``expected_layers`` (default: the cut points of the spec it records), each of them
    and ``logits`` in its manifest; every array of the manifest there with the recorded shape, dtype and dims; and
    every chunk file there with the recorded CRC-32. Reads every chunk file once."""
    group = Path(store) / network_id
    try:
        attrs = _node(group, "group").get("attributes") or {}
        if attrs.get("complete") is not True:
            return "it is incomplete: an extraction of it was interrupted (or is under way)"
        recorded, manifest = _layers_attr(attrs), _read_manifest(store, network_id)
        expected = _spec_layers(attrs) if expected_layers is None else list(expected_layers)
        if recorded != expected:
            return f"it holds layers {', '.join(recorded)}, where its spec has {', '.join(expected)}"
        data_vars = [*expected, "logits"]
        lost = [name for name in data_vars if name not in manifest]
        if lost:
            return f"layer {lost[0]} is missing from its manifest"
        for name, entry in manifest.items():
            _check_array(group / name, entry, f"layer {name}" if name in data_vars else f"coordinate {name}")
    except _Damage as e:
        return str(e)
    return None


def _node(path: Path, kind: str) -> dict:
    """The zarr.json of the node at ``path``, checked to describe a zarr ``kind`` (group or array)."""
    meta = path / META
    try:
        node = json.loads(meta.read_bytes())
    except FileNotFoundError:
        raise _Damage(f"its metadata file {meta} is missing") from None
    except (OSError, ValueError) as e:  # JSONDecodeError and UnicodeDecodeError are ValueErrors
        raise _Damage(f"its metadata file {meta} is unreadable ({e})") from None
    if not isinstance(node, dict) or node.get("node_type") != kind:
        raise _Damage(f"its metadata file {meta} does not describe a zarr {kind}")
    return node


def _layers_attr(attrs: dict) -> list:
    try:
        layers = json.loads(attrs["layers"])
    except KeyError:
        raise _Damage("it records no layers (it was written by an older probe)") from None
    except (TypeError, ValueError):
        raise _Damage("its layers attribute is not JSON") from None
    if not isinstance(layers, list):
        raise _Damage("its layers attribute is not a JSON list")
    return layers


def _read_manifest(store: Path, network_id: str) -> dict:
    path = _manifest_path(store, network_id)
    try:
        manifest = json.loads(path.read_bytes())
    except FileNotFoundError:
        raise _Damage(f"its manifest {path} is missing (or it was written by an older probe)") from None
    except (OSError, ValueError) as e:
        raise _Damage(f"its manifest {path} is unreadable ({e})") from None
    if not isinstance(manifest, dict) or not all(isinstance(e, dict) for e in manifest.values()):
        raise _Damage(f"its manifest {path} is not a JSON object of arrays")
    return manifest


def _spec_layers(attrs: dict) -> list[str]:
    try:
        return extracted_layers(NetworkSpec.from_dict(json.loads(attrs["spec"])))
    except (KeyError, TypeError, ValueError) as e:  # ProbeError is a ValueError
        raise _Damage(f"its recorded spec is unreadable ({e})") from None


def _check_array(array: Path, entry: dict, label: str) -> None:
    """Raise _Damage (prefixed with ``label``) unless the array at ``array`` is as its manifest ``entry`` records."""
    try:
        meta = _node(array, "array")
        for key in ARRAY_KEYS:
            if meta.get(key) != entry.get(key):
                raise _Damage(f"its {key} is {meta.get(key)}, where its manifest recorded {entry.get(key)}")
        chunks = entry.get("chunks")
        if not isinstance(chunks, dict):
            raise _Damage("its manifest entry lists no chunk files")
        for key, crc in chunks.items():
            chunk = array / key
            try:
                whole = _crc32(chunk) == crc
            except FileNotFoundError:
                raise _Damage(f"chunk file {chunk} is missing") from None
            except OSError as e:
                raise _Damage(f"chunk file {chunk} is unreadable ({e})") from None
            if not whole:
                raise _Damage(f"chunk file {chunk} does not match the checksum recorded when it was written")
    except _Damage as e:
        raise _Damage(f"{label}: {e}") from None


def group_is_complete(store: Path, network_id: str) -> dict | None:
    """The attrs of a group marked complete, or None when the group is missing, unreadable or was left incomplete
    (whether it is also whole is :func:`verify_group`'s question)."""
    try:
        attrs = _node(Path(store) / network_id, "group").get("attributes") or {}
    except _Damage:
        return None
    return attrs if attrs.get("complete") is True else None


def ensure_hierarchy(store: Path, network_ids: list[str]) -> dict[str, str]:
    """Write the zarr.json of the root and of every group above ``network_ids`` (``random-s0``, ...) where it is
    missing or unreadable. They hold no data (the root's consolidated metadata is rebuilt by :func:`consolidate`), so
    writing them anew loses nothing. Returns what was wrong with those of them that held something, by node path."""
    nodes = sorted({"/".join(nid.split("/")[:depth]) for nid in network_ids for depth in range(nid.count("/") + 1)})
    repaired = {}
    for node in nodes:
        path = store / node
        try:
            _node(path, "group")
        except _Damage as e:
            if path.is_dir() and any(path.iterdir()):  # not merely a store (or group) yet to be created
                repaired[node or "/"] = str(e)
            write_json(path / META, {"zarr_format": 3, "node_type": "group", "attributes": {}})
    return repaired


def drop_consolidated(store: Path) -> None:
    """Remove the consolidated metadata from the root's zarr.json (readers then list the groups themselves)."""
    root = json.loads((store / META).read_bytes())
    if root.pop("consolidated_metadata", None) is not None:
        write_json(store / META, root)


def consolidate(store: Path) -> None:
    """Consolidate the store's metadata so ``xr.open_datatree(store, engine="zarr")`` reads it in one request.

    A group whose metadata cannot be read (damaged, and not written anew: its weights are gone, or it was not
    among the networks asked for) makes zarr fail; the store is then left without consolidated metadata, and
    says why in a warning: readers list the groups themselves, and :func:`verify_group` names the damaged one."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # zarr notes that consolidated metadata is an extension of Zarr v3
        try:
            zarr.consolidate_metadata(str(store))
        except (ValueError, TypeError, KeyError) as e:  # JSONDecodeError and zarr's metadata errors are ValueErrors
            failure = e
        else:
            return
    drop_consolidated(store)
    warnings.warn(f"left {store} without consolidated metadata: a group's metadata is unreadable ({failure})",
                  stacklevel=2)


def check_store_path(store: Path) -> Path:
    """``store``, refused when it is a regular file: a zarr store is a directory."""
    if store.exists() and not store.is_dir():
        raise ProbeError(f"the store path {str(store)!r} is a file, not a zarr store (a directory); remove it or "
                         "write the store elsewhere (--out)")
    return store


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
                progress: bool, chunk_size: int | None) -> tuple[str, str | None]:
    """Extract one network into its group of ``store`` unless that group verifies and is current. Returns the
    outcome, ``"written"``, ``"skipped"``, ``"untrained"`` or ``"failed"``, with a note: what was wrong with a group
    written anew, or why the network could not be extracted (its weights are missing or unreadable). Writes touch
    only the network's own group, so several processes may extract different networks into one store at once."""
    if network_state(run_dir, spec)[0] != "done":
        return "untrained", None
    weights = network_dir(run_dir, spec) / WEIGHTS
    if not weights.is_file():
        return "failed", (f"its weights file {str(weights)!r} is missing; delete the folder {str(weights.parent)!r} "
                          f"and rerun 'probe train {run_dir}' to train it again")
    damage = verify_group(store, spec.id, extracted_layers(spec)) if (store / spec.id).exists() else None
    done = group_is_complete(store, spec.id) if damage is None else None
    if done is not None and done.get("weights_fingerprint") == weights_fingerprint(weights):
        if (json.loads(done["probe_set"]), json.loads(done["reduction"])) != (asdict(probe_set), asdict(reduction)):
            raise ProbeError(f"{store} already holds {spec.id} with probe set {done['probe_set']} and reduction "
                             f"{done['reduction']}; write other settings to another store (--out)")
        return "skipped", None
    model = build_model(spec)
    try:
        load_state(model, load_weights(weights, spec)[0], weights)
    except ProbeError as e:
        return "failed", str(e)
    extract_network(store, spec, model, arrays, normalize, probe_set, reduction, device, batch_size,
                    weights.relative_to(run_dir), progress, chunk_size, weights_fingerprint(weights))
    return "written", damage


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
                probe_set: ProbeSet = ProbeSet(), reduction: Reduction = Reduction(), device: torch.device | None = None,
                batch_size: int = 256, cache_dir: Path | None = None, progress: bool = True,
                chunk_size: int | None = None) -> dict:
    """Extract every finished network of ``run_dir`` (or those named in ``networks``) into ``store``.

    Groups that verify, are current and have the same probe set and reduction are skipped; the others are
    (re)written. Returns the ids ``written``, ``skipped`` and ``untrained``, with ``damaged`` (what was wrong with
    each group or hierarchy node written anew, by path) and ``failed`` (why a network could not be extracted: the
    others are extracted all the same)."""
    run_dir = Path(run_dir)
    store = check_store_path(Path(store or run_dir / STORE))
    device = device or torch.device("cpu")
    study, specs, stats = extraction_specs(run_dir, networks, batch_size, chunk_size)
    arrays = load_dataset(study.data, cache_dir, progress=progress)
    normalize = Normalize(stats["mean"], stats["std"], device)
    result = start_result(store, [s.id for s in specs])
    for spec in tqdm(specs, desc="extract", unit="net", disable=not progress, dynamic_ncols=True):
        record(result, spec.id, *extract_one(run_dir, spec, store, arrays, normalize, probe_set, reduction, device,
                                             batch_size, progress, chunk_size))
    if store.exists():
        consolidate(store)
    return result

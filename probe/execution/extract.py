"""Per-layer activations of a run's networks, extracted into one zarr store: which networks, one task each on an
executor, the outcome of each, and the lines that say what an extraction will do and has done.

Its parts live in :mod:`probe.execution.extraction`: the images (:mod:`~probe.execution.extraction.images`), what
is kept of each layer (:mod:`~probe.execution.extraction.reduction`), how a network's group is written
(:mod:`~probe.execution.extraction.writing`) and the store's one set of settings
(:mod:`~probe.execution.extraction.settings`).
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm

from probe.architectures.build import build_model
from probe.data.arrays import ImageArrays
from probe.errors import ProbeError
from probe.execution.batches import Normalize
from probe.execution.executor import CANCELLED, Executor, LocalExecutor
from probe.execution.extraction.images import ExtractionImages
from probe.execution.extraction.reduction import Reduction, check_class_token
from probe.execution.extraction.settings import (
    asked_settings,
    claim_settings,
    resolve_settings,
    run_defaults,
    settings_objects,
)
from probe.execution.extraction.writing import SAMPLE_ORDER, extract_network
from probe.execution.sweep import read_run_data
from probe.execution.train import resolve_device
from probe.planning.plan import PlannedNetwork, read_plan
from probe.specs.variants import LONG_BASE, Variant
from probe.storage.activation_store import (
    check_store_path,
    consolidate,
    ensure_hierarchy,
    group_attrs,
    group_lock,
    store_lock,
    verify_group,
)
from probe.storage.checkpoint import load_state, load_weights, weights_fingerprint
from probe.storage.loaded import loaded_dataset
from probe.storage.run import Run
from probe.storage.state import network_state
from probe.storage.store_settings import describe_settings, group_settings, same_settings


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
    arrays = loaded_dataset(planned.spec.data, cache_dir, tuple(images.classes(planned.spec)))
    return extract_one(Path(run_dir), planned, Path(store), arrays,
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
        check_class_token(planned[0].spec)
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

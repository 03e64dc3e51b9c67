"""A store's settings: one set per store, so that its groups always compare.

A store's first extraction records its settings; every later one (a resume, the rewrite of a damaged group) uses them
where it is given none, and one that asks for others is refused (:func:`resolve_settings`).
"""

from __future__ import annotations

import os
from pathlib import Path

from probe.errors import ProbeError
from probe.execution.extraction.images import RUN_CAP, ExtractionImages
from probe.execution.extraction.reduction import Reduction
from probe.planning.plan import read_plan
from probe.storage.activation_store import group_attrs, store_lock
from probe.storage.run import Run
from probe.storage.store_settings import (
    SIZE_SETTINGS,
    VALUE_SETTINGS,
    describe_settings,
    disagreement,
    groups_settings,
    option_name,
    record_settings,
    recorded_settings,
)


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

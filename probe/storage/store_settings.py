"""A store's settings: what an extraction was asked for, recorded in the store's ``.probe/settings.json`` by its first
extraction and in each group's attrs, read back, compared and said as the command line's options."""

from __future__ import annotations

import json
from pathlib import Path

from probe.storage.activation_store import PROBE_DIR, group_attrs, network_ids
from probe.storage.atomic import write_json

# A store's settings that change the stored values (as the command line names them), and those recorded only so
# that a rewrite repeats the first extraction's computation (other batch sizes give the same values up to rounding)
VALUE_SETTINGS = ("probe_set", "test_per_class", "per_class", "per_class_mode", "spatial", "tokens", "seed", "dtype")
SIZE_SETTINGS = ("batch_size", "chunk_size")
# Value settings that a store's record (or a group's attrs) written before they existed lacks, with what its
# extraction did: it took every test image whatever the run's cap, and no layer gave it tokens to reduce
LEGACY_SETTINGS = {"test_per_class": None, "tokens": "auto"}


def _settings_path(store: Path) -> Path:
    return Path(store) / PROBE_DIR / "settings.json"


def recorded_settings(store: Path) -> dict | None:
    """The settings the store records (:data:`VALUE_SETTINGS` and :data:`SIZE_SETTINGS`, by name), or None when it
    records none: a store written before probe recorded them, or whose record is lost or unreadable (its groups'
    attrs then say what it holds: :func:`groups_settings`)."""
    try:
        settings = json.loads(_settings_path(store).read_bytes())
    except (OSError, ValueError):
        return None
    if not isinstance(settings, dict) or any(key not in settings for key in VALUE_SETTINGS
                                             if key not in LEGACY_SETTINGS):
        return None
    return {**LEGACY_SETTINGS, **settings}


def record_settings(store: Path, settings: dict) -> None:
    """Record the settings the store is extracted with (the store's lock held)."""
    write_json(_settings_path(store), {key: settings.get(key) for key in (*VALUE_SETTINGS, *SIZE_SETTINGS)})


def group_settings(attrs: dict | None) -> dict | None:
    """The settings (:data:`VALUE_SETTINGS`) a group was extracted with, from its ``probe_set`` and ``reduction``
    attrs, or None when it records none. A group written before per_class_mode existed took exactly per_class
    images of each class; one written before the test cap and the token policy existed, every test image
    (:data:`LEGACY_SETTINGS`)."""
    try:
        images = {"per_class_mode": "exactly", "test_per_class": LEGACY_SETTINGS["test_per_class"],
                  **json.loads(attrs["probe_set"])}
        reduction = {"tokens": LEGACY_SETTINGS["tokens"], **json.loads(attrs["reduction"])}
        # one seed draws the subset and the sampled positions (the command line's --seed); a group seeded apart
        # differs from every store's settings, so it is written again
        seed = images["seed"] if images["seed"] == reduction["seed"] else [images["seed"], reduction["seed"]]
        return {"probe_set": images["tasks"], "test_per_class": images["test_per_class"],
                "per_class": images["per_class"], "per_class_mode": images["per_class_mode"],
                "spatial": reduction["spatial"], "tokens": reduction["tokens"], "seed": seed,
                "dtype": reduction["dtype"]}
    except (KeyError, TypeError, ValueError):
        return None


def same_settings(a: dict, b: dict) -> bool:
    """Whether two settings give the same stored values."""
    return all(a.get(key) == b.get(key) for key in VALUE_SETTINGS)


def describe_settings(settings: dict) -> str:
    """Settings as ``probe extract``'s options, e.g. ``--probe-set both --all-test-images --spatial full --tokens
    auto --seed 0 --dtype float32`` (every image of the probe set, ``per_class`` None, is no ``--per-class``, and
    then its mode means nothing; no cap on the test images, ``test_per_class`` None, is ``--all-test-images``, as
    the default is the run's cap)."""
    shown = [key for key in VALUE_SETTINGS
             if settings.get(key) is not None or (key == "test_per_class" and key in settings)]
    if settings.get("per_class") is None:
        shown = [key for key in shown if key != "per_class_mode"]
    return " ".join("--all-test-images" if key == "test_per_class" and settings.get(key) is None
                    else f"{option_name(key)} {settings[key]}" for key in shown)


def option_name(setting: str) -> str:
    """The command line's option for a setting: ``per_class`` -> ``--per-class``."""
    return "--" + setting.replace("_", "-")


def groups_settings(store: Path) -> dict[str, dict]:
    """The settings of each complete network group of the store that records them, by network id."""
    found = {}
    for network_id in network_ids(Path(store)):
        attrs = group_attrs(store, network_id) or {}
        settings = group_settings(attrs)
        if attrs.get("complete") is True and settings is not None:
            found[network_id] = settings
    return found


def disagreement(settings: dict[str, dict]) -> tuple[str, str] | None:
    """Two networks of ``settings`` (by network id) extracted with different settings, the first with the settings
    most of them share, or None when all agree."""
    kinds = [describe_settings(s) for s in settings.values()]
    common = max(kinds, key=kinds.count, default=None)
    ids = list(settings)
    usual = next((nid for nid, kind in zip(ids, kinds) if kind == common), None)
    other = next((nid for nid, kind in zip(ids, kinds) if kind != common), None)
    return None if other is None else (usual, other)

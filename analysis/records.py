"""A run's records: all that the analysis reads of a run (its study, its planned networks and their metrics), without
the weights, in one gzip-compressed JSON file.

A report commits them so that its tables can be collected again, by a later version of its collector, after the run
directory is gone (run directories are not kept for long; weights are never committed), and so that seeds trained
later, in another run directory of the same study, join the seeds recorded (:func:`merge`).
"""

from __future__ import annotations

import gzip
import json
import zlib
from collections.abc import Sequence
from pathlib import Path

from probe.analysis.accuracies import RunMetrics
from probe.errors import ProbeError
from probe.planning.plan import probe_version
from probe.planning.spec import NetworkSpec
from probe.storage.atomic import write_atomic

VERSION = 1
SUFFIX = ".json.gz"
# What may differ between two runs whose networks are merged: which seeds each trained
SEED_KEYS = ("seeds", "init_seeds")


def is_records(path: Path) -> bool:
    """Whether ``path`` names a records file (rather than a run directory)."""
    return Path(path).name.endswith(SUFFIX)


def records_name(path: Path) -> str:
    """The name a records file gives what it records: its file name without the suffix."""
    return Path(path).name.removesuffix(SUFFIX)


def write_records(run: RunMetrics, path: Path) -> None:
    """Write ``run`` to ``path`` (``NAME.json.gz``), atomically. The same records give the same bytes (no time in
    the gzip header), so a file collected again changes only where its content does."""
    payload = {"version": VERSION, "probe": probe_version(), "study": run.study, "layers": run.layers,
               "split_labels": run.split_labels, "specs": [s.to_dict() for s in run.specs],
               "longer": [s.to_dict() for s in run.longer], "metrics": run.metrics}
    data = gzip.compress(json.dumps(payload, sort_keys=True).encode(), compresslevel=9, mtime=0)

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(data)

    write_atomic(path, write)


def read_records(path: Path) -> RunMetrics:
    """The run that ``path`` records. A file that cannot be read is a one-line error naming it."""
    fix = "restore it from version control, or collect the run again from its run directory"
    try:
        d = json.loads(gzip.decompress(Path(path).read_bytes()))
    except (OSError, EOFError, zlib.error, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ProbeError(f"cannot read the records {str(path)!r} ({e}); {fix}") from None
    if not isinstance(d, dict) or d.get("version") != VERSION:
        found = d.get("version") if isinstance(d, dict) else None
        raise ProbeError(f"{path} is not a records file of version {VERSION} (found version {found!r}); {fix}")
    try:
        return RunMetrics(d["study"], [NetworkSpec.from_dict(s) for s in d["specs"]],
                          tuple(d["layers"]) if d["layers"] is not None else None, d["metrics"],
                          tuple(NetworkSpec.from_dict(s) for s in d["longer"]), d["split_labels"])
    except (KeyError, TypeError, ValueError) as e:
        raise ProbeError(f"{path} is damaged ({type(e).__name__}: {e}); {fix}") from None


def _plain(study: dict) -> dict:
    """``study`` as JSON holds it (lists for tuples), so that a study read from records and the same study read from
    a plan compare equal."""
    return json.loads(json.dumps(study))


def merge(runs: Sequence[RunMetrics], names: Sequence[str]) -> RunMetrics:
    """One run of the networks of ``runs`` (named ``names`` in messages): runs of one study that trained other seeds
    (``probe train`` with other ``--seeds``), e.g. the seeds a later session added to those recorded. A network
    finished in a later run replaces the same network of an earlier one; one unfinished in a later run keeps the
    earlier run's. Runs whose studies differ in more than their seeds are refused, naming what differs."""
    if not runs:
        raise ProbeError("no run to merge")
    first, first_name = runs[0], names[0]
    study = _plain(first.study)
    specs = {s.id: s for s in first.specs}
    longer = {s.id: s for s in first.longer}
    metrics = dict(first.metrics)
    labels = dict(first.split_labels)
    for run, name in zip(runs[1:], names[1:]):
        other = _plain(run.study)
        differ = sorted(k for k in {*study, *other} - set(SEED_KEYS) if study.get(k) != other.get(k))
        if differ:
            raise ProbeError(f"cannot merge {name} into {first_name}: their studies differ in {', '.join(differ)}, "
                             f"not only in their seeds ({', '.join(SEED_KEYS)})")
        if run.layers != first.layers:
            raise ProbeError(f"cannot merge {name} into {first_name}: their networks have other layers "
                             f"({run.layers} against {first.layers})")
        for into, new in ((specs, run.specs), (longer, run.longer)):
            for s in new:
                if s.id in into and into[s.id] != s:
                    raise ProbeError(f"cannot merge {name} into {first_name}: network {s.id} is planned "
                                     "differently in each")
                into[s.id] = s
        for i, m in run.metrics.items():
            if m.get("status") == "done" or metrics.get(i, {}).get("status") != "done":
                metrics[i] = m
        for key in SEED_KEYS:
            seeds = [v for v in (study.get(key), other.get(key)) if v is not None]
            study[key] = sorted({s for v in seeds for s in v}) if seeds else None
        labels |= run.split_labels
    return RunMetrics(study, list(specs.values()), first.layers, metrics, tuple(longer.values()), labels)

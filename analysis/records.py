"""A run's records: all that the analysis reads of a run (its study, its planned networks and their metrics), without
the weights, in one gzip-compressed JSON file.

A report commits them so that its tables can be collected again, by a later version of its collector, after the run
directory is gone (run directories are not kept for long; weights are never committed), and so that seeds trained
later, in another run directory of the same study, join the seeds recorded (:func:`merge`).
"""

from __future__ import annotations

import gzip
import json
import sys
import zlib
from collections.abc import Sequence
from pathlib import Path

from probe.analysis.accuracies import RunMetrics
from probe.errors import ProbeError
from probe.planning.plan import probe_version
from probe.specs.spec import NetworkSpec
from probe.storage.atomic import write_atomic

VERSION = 1
SUFFIX = ".json.gz"


def is_records(path: Path) -> bool:
    """Whether ``path`` names a records file (rather than a run directory)."""
    return Path(path).name.endswith(SUFFIX)


def records_name(path: Path) -> str:
    """The name a records file gives what it records: its file name without the suffix."""
    return Path(path).name.removesuffix(SUFFIX)


def _payload(run: RunMetrics) -> dict:
    return {"version": VERSION, "study": run.study, "layers": run.layers, "split_labels": run.split_labels,
            "specs": [s.to_dict() for s in run.specs], "longer": [s.to_dict() for s in run.longer],
            "metrics": run.metrics}


def _decoded(path: Path) -> dict:
    """The JSON of a records file; OSError, EOFError, zlib.error or a JSON error where it cannot be read."""
    return json.loads(gzip.decompress(Path(path).read_bytes()))


def write_records(run: RunMetrics, path: Path) -> None:
    """Write ``run`` to ``path`` (``NAME.json.gz``), atomically. A file that already records the same content is
    left as it is, whatever probe, Python or zlib wrote it (their gzip bytes differ), so that collecting an arm again
    changes only the files whose content changed; a new file has no time in its gzip header."""
    payload = _payload(run)
    try:
        same = {k: v for k, v in _decoded(path).items() if k != "probe"} == _plain(payload)
    except (OSError, EOFError, zlib.error, UnicodeDecodeError, json.JSONDecodeError, AttributeError):
        same = False  # none yet, or one that cannot be read: written anew
    if same:
        return
    # in the order given, not sorted: the study's keys read back as a plan's, and a report shows them
    data = gzip.compress(json.dumps({**payload, "probe": probe_version()}).encode(), compresslevel=9, mtime=0)

    def write(tmp: str) -> None:
        with open(tmp, "wb") as f:
            f.write(data)

    write_atomic(path, write)


def read_records(path: Path) -> RunMetrics:
    """The run that ``path`` records. A file that cannot be read, or does not hold what records hold, is a one-line
    error naming it."""
    fix = "restore it from version control, or collect the run again from its run directory"
    try:
        d = _decoded(path)
    except (OSError, EOFError, zlib.error, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ProbeError(f"cannot read the records {str(path)!r} ({e}); {fix}") from None
    if not isinstance(d, dict) or d.get("version") != VERSION:
        found = d.get("version") if isinstance(d, dict) else None
        if isinstance(found, int) and found > VERSION:
            fix = f"it was written by probe {d.get('probe')}: upgrade probe to read it"
        raise ProbeError(f"{path} is not a records file of version {VERSION} (found version {found!r}); {fix}")
    try:
        specs = [NetworkSpec.from_dict(s) for s in d["specs"]]
        longer = tuple(NetworkSpec.from_dict(s) for s in d["longer"])
        metrics, layers, labels = d["metrics"], d["layers"], d["split_labels"]
        if not isinstance(d["study"], dict) or not isinstance(labels, dict) or not (
                layers is None or isinstance(layers, list) and all(isinstance(x, str) for x in layers)):
            raise TypeError("its study, split labels or layers are not what records hold")
        if not isinstance(metrics, dict) or not all(isinstance(metrics.get(s.id), dict) for s in (*specs, *longer)):
            raise TypeError("its metrics are not one object per planned network")
        return RunMetrics(d["study"], specs, tuple(layers) if layers is not None else None, metrics, longer, labels)
    except (KeyError, TypeError, ValueError, AttributeError) as e:
        raise ProbeError(f"{path} is damaged ({type(e).__name__}: {e}); {fix}") from None


def _plain(value: dict) -> dict:
    """``value`` as JSON holds it (lists for tuples), so that what records hold and the same read from a plan
    compare equal."""
    return json.loads(json.dumps(value))


def merge(runs: Sequence[RunMetrics], names: Sequence[str]) -> RunMetrics:
    """One run of the networks of ``runs`` (named ``names`` in messages): runs of one study that trained other seeds
    (``probe train`` with other ``--seeds``), e.g. the seeds a later session added to those recorded. A network
    finished in a later run replaces the same network of an earlier one (said on stderr); one unfinished in a later
    run keeps the earlier run's. The networks are in the order of their seeds, as one run of all of them plans them.
    Runs whose studies differ in more than their seeds are refused, naming what differs, and so are runs with
    explicit init seeds (``--init-seeds``), which pair with the seeds one by one."""
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
        differ = sorted(k for k in {*study, *other} - {"seeds"} if study.get(k) != other.get(k))
        if differ:
            raise ProbeError(f"cannot merge {name} into {first_name}: their studies differ in {', '.join(differ)}, "
                             "not only in their seeds")
        if study.get("init_seeds") is not None:
            raise ProbeError(f"cannot merge {name} into {first_name}: their seeds pair with explicit init seeds "
                             "(--init-seeds), which a merge of seeds would break apart; train the seeds in one run")
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
            if m.get("status") == "done":
                if metrics.get(i, {}).get("status") == "done":
                    print(f"note: {i} is finished in {first_name} and in {name}; {name}'s is kept", file=sys.stderr)
                metrics[i] = m
            elif metrics.get(i, {}).get("status") != "done":
                metrics[i] = m
        study["seeds"] = sorted({*study.get("seeds", []), *other.get("seeds", [])})
        labels |= run.split_labels

    def order(s: NetworkSpec) -> tuple:  # stable: within a seed, the plan's own (dependency) order
        return (s.split_seed is not None, s.split_seed or 0, s.init_seed)

    return RunMetrics(study, sorted(specs.values(), key=order), first.layers, metrics,
                      tuple(sorted(longer.values(), key=order)), labels)

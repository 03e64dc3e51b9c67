"""What a careful user trips on (issue 25): files that survive a power loss, failures recorded only under their
network's lock, cancelled tasks, extraction retried like training, plans of a newer probe, accuracies without
signs, and options that a dataset kind cannot honour."""

from __future__ import annotations

import inspect
import os
from pathlib import Path

import pytest

from probe.storage import atomic


def test_write_atomic_fsyncs_the_file_before_the_rename_and_the_folder_after(tmp_path, monkeypatch):
    calls = []
    opened = {}
    real_open, real_fsync, real_replace = os.open, os.fsync, os.replace

    def fake_open(path, flags, *args):
        fd = real_open(path, flags, *args)
        opened[fd] = Path(path)
        return fd

    def fake_fsync(fd):
        calls.append(("fsync", opened.get(fd)))
        real_fsync(fd)

    def fake_replace(src, dst):
        calls.append(("replace", Path(dst)))
        real_replace(src, dst)

    monkeypatch.setattr(atomic.os, "open", fake_open)
    monkeypatch.setattr(atomic.os, "fsync", fake_fsync)
    monkeypatch.setattr(atomic.os, "replace", fake_replace)
    target = tmp_path / "metrics.json"
    atomic.write_json(target, {"status": "done"})
    kinds = [kind for kind, _ in calls]
    assert kinds == ["fsync", "replace", "fsync"], calls
    assert calls[0][1].parent == tmp_path and calls[0][1].name.startswith(".metrics.json.")  # the temporary file
    assert calls[2][1] == tmp_path  # the folder holding the new entry
    assert target.read_text().strip().startswith("{")


def _planned_run(tmp_path, cache_dir):
    from conftest import TINY_STUDY, invoke

    run = tmp_path / "run"
    result = invoke(cache_dir, "train", run, *TINY_STUDY, "--variants", "BnB", "--cuts", "2", "--seeds", "0",
                    "--networks", "baseB")
    assert result.exit_code == 0, result.output
    return run


def test_a_plan_of_a_later_probe_says_to_upgrade_in_one_line(tmp_path, cache_dir):
    import json

    from probe.errors import ProbeError
    from probe.planning.plan import probe_version, read_plan_file

    run = _planned_run(tmp_path, cache_dir)
    path = run / "plan.json"
    d = json.loads(path.read_text())
    assert d["probe"] == probe_version()
    # a field this probe has never heard of, from a later one
    d["probe"] = "99.0.0"
    d["study"]["data"]["colour_space"] = "lab"
    path.write_text(json.dumps(d))
    with pytest.raises(ProbeError) as e:
        read_plan_file(path)
    assert "written by probe 99.0.0 (plan format 1)" in str(e.value) and "upgrade probe" in str(e.value)
    assert "\n" not in str(e.value)
    d["version"] = 2
    path.write_text(json.dumps(d))
    with pytest.raises(ProbeError, match="written by probe 99.0.0 .plan format 2.; this is probe"):
        read_plan_file(path)
    # the same damage from this probe's own version is a damaged file, not an upgrade
    d["probe"], d["version"] = probe_version(), 1
    path.write_text(json.dumps(d))
    with pytest.raises(ProbeError, match="does not describe a plan"):
        read_plan_file(path)


def test_the_reports_accuracy_tables_print_accuracies_unsigned_and_differences_signed(tmp_path, cache_dir):
    from conftest import TINY_STUDY, invoke

    run = tmp_path / "run"
    assert invoke(cache_dir, "train", run, *TINY_STUDY, "--variants", "BnB,AnB", "--cuts", "2", "--seeds", "0,1"
                  ).exit_code == 0
    assert invoke(cache_dir, "analyze", run).exit_code == 0
    report = (run / "analysis" / "report.md").read_text()
    accuracy = report.split("## Test accuracy", 1)[1].split("\n## ", 1)[0]
    rows = [line for line in accuracy.splitlines() if line.startswith("| 0 ") or line.startswith("| 2 ")]
    assert rows and not any("+" in row for row in rows), rows
    assert "[0." in accuracy
    assert "+0." in report or "-0." in report  # the decomposition's differences keep their sign


def test_a_failure_recorded_late_leaves_the_next_holder_of_the_lock_alone(tmp_path, cache_dir):
    """A failed attempt has released the network's lock when its failure is recorded; if another process took the
    lock meanwhile and is training the network again, its running.json stays and nothing is marked failed."""
    from probe.execution.train import record_failure
    from probe.planning.plan import read_plan
    from probe.storage.lock import note_holder, training_lock
    from probe.storage.run import Run

    run = _planned_run(tmp_path, cache_dir)
    spec = next(p.spec for p in read_plan(run)[1] if p.spec.name == "B2B")
    files = Run(run).network(spec.id)
    with training_lock(files, spec.id):  # the next holder
        note_holder(files)
        record_failure(run, spec, "RuntimeError: the earlier attempt's")
        assert files.running.exists() and not files.metrics.exists()
    record_failure(run, spec, "RuntimeError: nobody holds it now")
    assert not files.running.exists() and '"failed"' in files.metrics.read_text()
    # a network finished in the meantime is not marked failed
    base = next(p.spec for p in read_plan(run)[1] if p.spec.name == "baseB")
    record_failure(run, base, "RuntimeError: too late")
    assert '"done"' in Run(run).network(base.id).metrics.read_text()


class _Cancelled:
    """A dask future cancelled as its client closed: asking for its result or error raises CancelledError."""

    status = "cancelled"

    def result(self):
        from concurrent.futures import CancelledError

        raise CancelledError()

    exception = result


class _CancellingExecutor:
    """Every task it is given is cancelled before it runs; it records what each was submitted with."""

    in_process = False

    def __init__(self):
        self.submitted = []

    def submit(self, fn, *args, key, gpu=False, retries=0, **kwargs):
        self.submitted.append({"key": key, "retries": retries})
        return _Cancelled()

    def as_completed(self, futures):
        return iter(list(futures))

    def gather(self, futures):
        return [f.result() for f in futures]


def test_tasks_cancelled_when_the_client_closes_are_left_to_resume_not_raised(tmp_path, cache_dir):
    from probe.execution.executor import CANCELLED
    from probe.execution.extract import ExtractionImages, Reduction, extract_with
    from probe.execution.sweep import train_study
    from probe.planning.plan import read_plan

    run = _planned_run(tmp_path, cache_dir)
    study = read_plan(run)[0]
    result = train_study(_CancellingExecutor(), run, study, "cpu", cache_dir, progress=False)
    assert result.blocked and set(result.blocked.values()) == {CANCELLED} and not result.failed
    out = extract_with(_CancellingExecutor(), run, tmp_path / "store.zarr", None, ExtractionImages(), Reduction(),
                       "cpu", 64, cache_dir, False, None)
    assert set(out["failed"].values()) == {CANCELLED}


def test_extraction_on_dask_is_retried_as_training_is(tmp_path, monkeypatch):
    from probe.execution import distributed
    from probe.execution.executor import TASK_RETRIES

    seen = {}
    monkeypatch.setattr(distributed, "extract_with", lambda *args, **kwargs: seen.update(kwargs) or {})
    distributed.extract_run_dask(object(), tmp_path, device="cpu", progress=False)
    assert seen["retries"] == TASK_RETRIES > 0
    assert inspect.signature(distributed.run_study_dask).parameters["retries"].default == TASK_RETRIES

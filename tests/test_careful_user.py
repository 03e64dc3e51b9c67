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


def own_images():
    """A dataset of one's own for the options test: 6 classes of 12-pixel RGB images, by import path."""
    from probe.data.synthetic import synthetic_arrays

    train_x, train_y, test_x, test_y, classes = synthetic_arrays(n_classes=6, size=12, train_per_class=20,
                                                                 test_per_class=5)
    return train_x, train_y, test_x, test_y, classes


KINDS = {"synthetic": ["--dataset", "synthetic"], "own": ["--dataset", "test_careful_user:own_images"],
         "fashion-mnist": ["--dataset", "fashion-mnist"], "cifar10": ["--dataset", "cifar10"],
         "imagefolder": ["--dataset", "imagefolder"]}
# option -> (the kinds that honour it, what a refusal says); a dataset of one's own takes a root where its function
# has a root parameter (own_images has none)
OPTIONS = {
    ("--data-root", "/nowhere/root"): ({"fashion-mnist", "cifar10", "imagefolder"}, "drop --data-root"),
    ("--resize-mode", "pad"): (set(), "(--image-size)"),
    ("--unreadable", "skip"): ({"cifar10", "imagefolder"}, "drop --unreadable"),
}


@pytest.mark.parametrize("kind", sorted(KINDS))
@pytest.mark.parametrize("option", sorted(OPTIONS))
def test_every_data_option_works_or_is_refused_in_one_line_for_every_kind(kind, option, cache_dir, tmp_path):
    """Planned with an option its kind cannot honour, a study is refused in one line naming the option; an option
    it honours gets past that check (to the data, absent here for the file kinds, which is another error)."""
    from conftest import assert_one_line_error, invoke

    honoured, culprit = OPTIONS[option]
    result = invoke(cache_dir, "plan", *KINDS[kind], *option, "--arch", "caffenet-small")
    if kind in honoured:
        assert culprit not in result.output, result.output
    else:
        assert_one_line_error(result, culprit)


@pytest.mark.parametrize("kind, size", [("synthetic", 32), ("own", 20)])
def test_the_generated_and_ones_own_images_take_the_image_size(kind, size, cache_dir):
    """`probe plan --dataset synthetic --image-size 32` plans 32-pixel networks (it used to stay at 16)."""
    import json

    from conftest import invoke

    result = invoke(cache_dir, "plan", *KINDS[kind], "--image-size", str(size), "--arch", "caffenet-small",
                    "--json")
    assert result.exit_code == 0, result.output
    spec = json.loads(result.output)["networks"][0]["spec"]
    assert spec["input_size"] == size


@pytest.mark.parametrize("kind, honoured", [("synthetic", False), ("own", False), ("imagefolder", False),
                                            ("fashion-mnist", True), ("cifar10", True)])
def test_download_is_refused_for_kinds_that_cannot_fetch(kind, honoured):
    from probe.data.datasets import check_honoured
    from probe.errors import ProbeError
    from probe.specs.spec import DataSpec

    spec = DataSpec(KINDS[kind][1])
    if honoured:
        check_honoured(spec, download=True)
    else:
        with pytest.raises(ProbeError, match="drop --download"):
            check_honoured(spec, download=True)


@pytest.mark.parametrize("command", ["train", "extract", "analyze"])
@pytest.mark.parametrize("options, culprit", [(["--workers", "3"], "--workers 3"),
                                              (["--scheduler", "tcp://nowhere:8786"], "--scheduler"),
                                              (["--executor", "dask", "--scheduler", "tcp://nowhere:8786",
                                                "--workers", "3"], "--workers 3")])
def test_executor_options_that_change_nothing_are_refused(command, options, culprit, tmp_path, cache_dir):
    from conftest import assert_one_line_error, invoke

    assert_one_line_error(invoke(cache_dir, command, tmp_path / "run", *options), culprit)

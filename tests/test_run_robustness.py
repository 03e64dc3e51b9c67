"""A run directory that meets the real world: processes killed anywhere, pids reused, two sweeps at once, damaged
files, a full disk, a umask.

One tiny finished run (both bases, and the selffers and random baselines at cut 1: six networks) is trained once
per module; every test damages a copy of it.
"""

from __future__ import annotations

import errno
import os
import shutil
import socket
import stat
import subprocess
import sys
import threading
from pathlib import Path
from types import SimpleNamespace

import pytest
import safetensors.torch
import torch
from conftest import TINY_STUDY, assert_one_line_error, invoke
from safetensors import SafetensorError

import probe.execution.sweep as sweep
import probe.storage.checkpoint as checkpoint
from probe.architectures import build_model
from probe.errors import ProbeError
from probe.planning.plan import read_plan
from probe.specs.spec import NetworkSpec
from probe.storage.atomic import read_json, write_atomic, write_json
from probe.storage.checkpoint import save_tensors
from probe.storage.run import LOCK, METRICS, RESUME, RUNNING, WEIGHTS, Run

SMALL = [*TINY_STUDY, "--cuts", "1", "--variants", "BnB,RnB", "--seeds", "0"]
CPU = torch.device("cpu")
# Holds a network's lock, as a process training it would, until it is killed.
HOLD_LOCK = ("import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT); "
             "fcntl.flock(fd, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(600)")


@pytest.fixture(scope="module")
def done_run(tmp_path_factory, cache_dir):
    run = tmp_path_factory.mktemp("done") / "run"
    result = invoke(cache_dir, "train", run, *SMALL)
    assert result.exit_code == 0, result.output
    study, plan = read_plan(run)
    return SimpleNamespace(run=run, study=study, specs={p.spec.name: p.spec for p in plan})


@pytest.fixture
def specs(done_run) -> dict[str, NetworkSpec]:
    return done_run.specs


@pytest.fixture
def run(done_run, tmp_path) -> Path:
    """A copy of the finished run, to damage."""
    copy = tmp_path / "run"
    shutil.copytree(done_run.run, copy)
    return copy


def _folder(run: Path, spec: NetworkSpec) -> Path:
    return Run(run).network(spec.id).folder


def _forget(run: Path, specs: dict[str, NetworkSpec], *names: str) -> None:
    """Make these networks untrained (their folders gone)."""
    for name in names:
        shutil.rmtree(_folder(run, specs[name]))


def _states(result) -> dict[str, tuple[str, str]]:
    """``probe status`` output as {network id: (state, detail)}."""
    assert result.exit_code == 0, result.output
    rows = {}
    for line in result.output.splitlines():
        parts = line.split(maxsplit=2)
        if len(parts) >= 2 and "/" in parts[0]:
            rows[parts[0]] = (parts[1], parts[2] if len(parts) > 2 else "")
    return rows


def _other_settings(spec: NetworkSpec, **recipe) -> NetworkSpec:
    d = spec.to_dict()
    return NetworkSpec.from_dict({**d, "recipe": {**d["recipe"], **recipe}})


def _wider(spec: NetworkSpec) -> NetworkSpec:
    """The same network at twice the width: its tensors have other shapes."""
    d = spec.to_dict()
    return NetworkSpec.from_dict({**d, "arch": {**d["arch"], "options": {"width": 0.25}}})


# --- 5: running means a live process holds the network's lock ------------------------------------------------------

def test_a_recorded_pid_that_is_alive_does_not_make_a_network_running(run, specs, cli):
    """An interrupted network's running.json names a pid that is alive again (PID 1 in a container, a pid reused
    after a reboot: here, this test's own): no process holds its lock, so it is not running, and train trains it."""
    _forget(run, specs, "baseA", "A1A")
    folder = _folder(run, specs["baseA"])
    folder.mkdir(parents=True)
    write_json(folder / RUNNING, {"pid": os.getpid(), "host": socket.gethostname(), "started": 0.0})
    assert _states(cli("status", run))[specs["baseA"].id][0] == "missing"
    result = cli("train", run)
    assert result.exit_code == 0, result.output
    assert "trained 2, already done 4, failed 0, blocked 0" in result.output
    assert not (folder / RUNNING).exists()


def test_a_network_is_running_while_a_live_process_holds_its_lock(run, specs, cli, synthetic_arrays):
    from probe.execution.train import train_network
    from probe.storage.lock import NetworkBusy

    _forget(run, specs, "baseA", "A1A")
    base = specs["baseA"]
    folder = _folder(run, base)
    folder.mkdir(parents=True)
    holder = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(folder / LOCK)], stdout=subprocess.PIPE)
    try:
        assert holder.stdout.readline() == b"locked\n"
        status = cli("status", run)
        assert _states(status)[base.id][0] == "running"
        assert "4 done, 1 running, 0 interrupted, 0 failed, 1 missing, 0 corrupt" in status.output
        # train_network itself refuses, so a caller that looked before the lock was taken trains nothing
        with pytest.raises(NetworkBusy, match=base.id):
            train_network(base, _task_tensors(run, synthetic_arrays, base), run, CPU, progress=False)
        assert not (folder / METRICS).exists() and not (folder / WEIGHTS).exists()
        # a sweep waits for the other process rather than reporting the network (and A1A above it) blocked: here
        # the holder dies without finishing, its lock is released, and the sweep trains both itself
        killer = threading.Timer(3.0, holder.kill)
        killer.start()
        result = cli("train", run)
        killer.join()
        assert result.exit_code == 0, result.output
        assert "trained 2, already done 4, failed 0, blocked 0" in result.output, result.output
    finally:
        holder.kill()
        holder.wait()
        holder.stdout.close()
    assert _states(cli("status", run))[base.id][0] == "done"


def test_a_network_finished_by_another_process_meanwhile_is_not_trained_again(run, specs, done_run, cache_dir,
                                                                              monkeypatch):
    """Two sweeps both find baseA unfinished; one trains it while the other is about to. The other must find it
    finished once it holds the lock, and keep the first one's files."""
    base = specs["baseA"]
    _forget(run, specs, "baseA")
    real_readiness = sweep.readiness

    def other_process_finishes_base(run_dir, plan, planned, underway=()):
        verdict = real_readiness(run_dir, plan, planned, underway)
        if verdict[0] == "ready" and planned.spec == base:
            shutil.copytree(_folder(done_run.run, base), _folder(run, base))
        return verdict

    monkeypatch.setattr(sweep, "readiness", other_process_finishes_base)
    result = sweep.run_study(run, done_run.study, CPU, cache_dir, progress=False)
    assert result.trained == [] and base.id in result.skipped and len(result.skipped) == 6
    weights = _folder(run, base) / WEIGHTS
    assert weights.read_bytes() == (_folder(done_run.run, base) / WEIGHTS).read_bytes()
    assert weights.stat().st_mtime_ns == (_folder(done_run.run, base) / WEIGHTS).stat().st_mtime_ns


def _task_tensors(run: Path, arrays, spec: NetworkSpec):
    from probe.data.tasks import task_data
    from probe.execution.train import TaskTensors

    stats = read_json(run / "data.json")
    return TaskTensors.from_task(task_data(arrays, list(spec.target_classes), spec.data), stats["mean"],
                                 stats["std"], CPU)


# --- 6: a network that cannot start fails alone ----------------------------------------------------------------------

def test_an_unreadable_parent_fails_only_the_networks_that_copy_from_it(run, specs, cli, monkeypatch):
    _forget(run, specs, "A1A", "B1B", "R1A")
    weights = _folder(run, specs["baseA"]) / WEIGHTS
    real_read = checkpoint._read

    def bad_sector(path, with_tensors):
        """baseA's header reads (so it counts as done), its tensors do not (an I/O error)."""
        if with_tensors and Path(path) == weights:
            raise checkpoint.checkpoint_error(path, f"cannot read checkpoint {str(path)!r}: Input/output error")
        return real_read(path, with_tensors)

    monkeypatch.setattr(checkpoint, "_read", bad_sector)
    result = cli("train", run)
    assert result.exit_code == 1, result.output
    assert "trained 2, already done 3, failed 1, blocked 0" in result.output
    metrics = read_json(_folder(run, specs["A1A"]) / METRICS)
    assert metrics["status"] == "failed" and "\n" not in metrics["error"]
    for culprit in ("Input/output error", str(weights), "rerun 'probe train'"):
        assert culprit in metrics["error"]
    assert f"failed  {specs['A1A'].id}: {metrics['error']}" in result.output
    states = _states(cli("status", run))
    assert states[specs["A1A"].id] == ("failed", metrics["error"])
    assert states[specs["B1B"].id][0] == states[specs["R1A"].id][0] == "done"


def test_a_network_that_cannot_start_is_failed_and_blocks_its_dependents(run, specs, cli):
    """baseA cannot start (its resume file was saved for other settings): it is recorded failed with the reason,
    the network copying from it is blocked, and the rest trains."""
    _forget(run, specs, "baseA", "A1A", "R1B")
    base = specs["baseA"]
    folder = _folder(run, base)
    folder.mkdir(parents=True)
    save_tensors(folder / RESUME, {"x": torch.zeros(1)}, _other_settings(base, lr=0.02), epoch=1, history=[])
    result = cli("train", run)
    assert result.exit_code == 1, result.output
    assert "trained 1, already done 3, failed 1, blocked 1" in result.output
    error = read_json(folder / METRICS)["error"]
    assert "other settings" in error and str(folder / RESUME) in error
    assert f"failed  {base.id}: {error}" in result.output
    assert f"blocked {specs['A1A'].id}: needs {base.id}" in result.output
    assert _states(cli("status", run))[specs["R1B"].id][0] == "done"


def test_a_dask_task_records_a_network_that_cannot_start_as_failed(run, specs, cache_dir):
    """The dask executor's task records it too, as the local sweep does, instead of raising for dask to retry."""
    from probe.execution.sweep import train_task

    _forget(run, specs, "A1A")
    (_folder(run, specs["baseA"]) / WEIGHTS).write_bytes(b"")
    stats = read_json(run / "data.json")
    out = train_task(str(run), specs["A1A"].to_dict(), (stats["mean"], stats["std"]), "cpu", str(cache_dir),
                     {"id": specs["baseA"].id, "status": "done"})
    assert out["status"] == "failed" and "cannot read checkpoint" in out["error"]
    assert read_json(_folder(run, specs["A1A"]) / METRICS)["error"] == out["error"]


# --- 7: damaged files are one line, and a network's own damage is that network's ------------------------------------

def _plan_damages(text: str) -> list[bytes]:
    return [b"", b"{not json", text[: len(text) // 2].encode(), b"[]", b'{"version": 1}',
            b'{"version": 1, "study": {}, "networks": [{"id": "x"}]}']


@pytest.mark.parametrize("damage", range(6), ids=["empty", "garbage", "truncated", "list", "no-networks",
                                                  "bad-network"])
def test_a_damaged_plan_is_one_line_naming_it(run, cli, damage):
    path = run / "plan.json"
    path.write_bytes(_plan_damages(path.read_text())[damage])
    for args in (["status", run], ["train", run], ["train", run, *SMALL]):
        assert_one_line_error(cli(*args), str(path))


def test_a_damaged_data_json_is_one_line_naming_it(run, cli):
    (run / "data.json").write_text('{"mean": [0.5]')
    assert_one_line_error(cli("train", run), str(run / "data.json"), "delete it")


@pytest.mark.parametrize("content", [b"", b"{", b'{"status": "done", "test_', b"[]", b'{"status": "done"}',
                                     b'{"status": "done", "test_acc": "high"}', b'{"status": "running"}'],
                         ids=["empty", "garbage", "truncated", "list", "no-accuracy", "text-accuracy", "bad-status"])
def test_a_damaged_metrics_file_makes_only_its_network_corrupt(run, specs, cli, content):
    path = _folder(run, specs["R1A"]) / METRICS
    path.write_bytes(content)
    status = cli("status", run)
    states = _states(status)
    state, detail = states.pop(specs["R1A"].id)
    assert state == "corrupt" and str(path) in detail and "probe train" in detail
    assert {s for s, _ in states.values()} == {"done"}
    assert "5 done, 0 running, 0 interrupted, 0 failed, 0 missing, 1 corrupt" in status.output
    result = cli("train", run)
    assert result.exit_code == 0, result.output
    assert "trained 1, already done 5, failed 0, blocked 0" in result.output
    assert read_json(path)["status"] == "done"


def test_read_metrics_names_a_bad_file(tmp_path):
    from probe.storage.checkpoint import read_metrics

    path = tmp_path / METRICS
    assert read_metrics(path) is None
    write_json(path, {"status": "done", "test_acc": 0.5})
    assert read_metrics(path) == {"status": "done", "test_acc": 0.5}
    path.write_text("{")
    with pytest.raises(ProbeError, match="metrics.json") as raised:
        read_metrics(path)
    assert str(path) in str(raised.value) and "\n" not in str(raised.value)


def _damaged_resume(path: Path, spec: NetworkSpec, damage: str) -> None:
    if damage == "garbage":
        path.write_bytes(b"\x00" * 40)
    elif damage == "no-epoch":
        save_tensors(path, {"x": torch.zeros(1)}, spec, history=[])
    else:  # the network's spec, other shapes: load_state_dict's "size mismatch for stages.conv1.0.bias"
        state = {f"model.{k}": v for k, v in build_model(_wider(spec)).state_dict().items()}
        save_tensors(path, state, spec, epoch=1, history=[{"epoch": 1}])


@pytest.mark.parametrize("damage", ["garbage", "no-epoch", "other-shapes"])
def test_an_unusable_resume_file_restarts_its_network_from_scratch(run, specs, done_run, cli, damage):
    spec = specs["R1A"]
    _forget(run, specs, "R1A")
    folder = _folder(run, spec)
    folder.mkdir(parents=True)
    _damaged_resume(folder / RESUME, spec, damage)
    if damage != "other-shapes":  # (the shapes show only once the network is built)
        state, detail = _states(cli("status", run))[spec.id]
        assert state == "corrupt" and str(folder / RESUME) in detail and "from scratch" in detail
    result = cli("train", run)
    assert result.exit_code == 0, result.output
    assert "trained 1, already done 5, failed 0, blocked 0" in result.output
    notice = [line for line in result.output.splitlines() if str(folder / RESUME) in line]
    assert len(notice) == 1 and "from scratch" in notice[0], result.output
    assert read_json(folder / METRICS)["resumed_at_epoch"] == 0
    # trained from scratch as if the file had never been there (the same computation in this process)
    ours = checkpoint.load_weights(folder / WEIGHTS)[0]
    theirs = checkpoint.load_weights(_folder(done_run.run, spec) / WEIGHTS)[0]
    assert all(torch.equal(ours[k], theirs[k]) for k in theirs)


def test_parent_weights_of_other_shapes_fail_their_copies_in_one_line(run, specs, cli, synthetic_arrays):
    """Loading them says so in one line; the sweep finds the parent corrupt first, and trains it again before its
    copies."""
    base = specs["baseA"]
    _forget(run, specs, "A1A")
    weights = _folder(run, base) / WEIGHTS
    save_tensors(weights, build_model(_wider(base)).state_dict(), base)
    from probe.execution.train import train_network

    with pytest.raises(ProbeError) as e:
        train_network(specs["A1A"], _task_tensors(run, synthetic_arrays, specs["A1A"]), run, CPU, progress=False)
    error = str(e.value)
    assert "\n" not in error and str(weights) in error and "stages.conv1." in error and "probe train" in error
    state, detail = _states(cli("status", run))[base.id]
    assert state == "corrupt" and str(weights) in detail and "stages.conv1." in detail, detail
    result = cli("train", run)
    assert result.exit_code == 0, result.output
    assert "trained 2, already done 4, failed 0, blocked 0" in result.output


# --- 10: a full disk ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("failure", [OSError(errno.ENOSPC, "No space left on device"),
                                     SafetensorError("Error while serializing: No space left on device")])
def test_a_failed_write_names_the_file_and_leaves_the_old_one(tmp_path, failure):
    path = tmp_path / "metrics.json"
    write_json(path, {"old": True})

    def write(tmp: str) -> None:
        Path(tmp).write_text("half")
        raise failure

    with pytest.raises(ProbeError, match="No space left on device") as raised:
        write_atomic(path, write)
    assert str(path) in str(raised.value) and "rerun" in str(raised.value)
    assert read_json(path) == {"old": True} and sorted(p.name for p in tmp_path.iterdir()) == ["metrics.json"]


def test_a_full_disk_during_train_is_one_line_and_a_rerun_resumes(tmp_path, cli, monkeypatch):
    run = tmp_path / "run"
    real_save = safetensors.torch.save_file

    def disk_full_for_weights(tensors, path, metadata=None):
        if Path(path).name.startswith(f".{WEIGHTS}."):
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(tensors, path, metadata=metadata)

    monkeypatch.setattr(safetensors.torch, "save_file", disk_full_for_weights)
    result = cli("train", run, *SMALL)
    assert_one_line_error(result, WEIGHTS, "No space left on device", "rerun")
    assert not list(run.rglob("*.tmp")) and not list(run.rglob(RUNNING))
    first = next(iter(_states(cli("status", run)).values()))
    assert first == ("interrupted", "resumes after epoch 1/1")

    monkeypatch.setattr(safetensors.torch, "save_file", real_save)
    result = cli("train", run)
    assert result.exit_code == 0, result.output
    assert "trained 6, already done 0, failed 0, blocked 0" in result.output
    _, plan = read_plan(run)
    assert read_json(_folder(run, plan[0].spec) / METRICS)["resumed_at_epoch"] == 1


# --- 11: the umask --------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("umask", [0o022, 0o077, 0o002], ids=oct)
def test_written_files_honour_the_umask(tmp_path, specs, umask):
    previous = os.umask(umask)
    try:
        write_json(tmp_path / "plan.json", {})
        save_tensors(tmp_path / WEIGHTS, {"x": torch.zeros(1)}, specs["baseA"])
        write_atomic(tmp_path / "report.html", lambda tmp: Path(tmp).write_text("<html>"))
    finally:
        os.umask(previous)
    for name in ("plan.json", WEIGHTS, "report.html"):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o666 & ~umask, name


# --- 13: leftovers of a kill after the metrics were written ---------------------------------------------------------

def test_a_finished_network_loses_its_leftover_resume_and_running_files(run, specs, cli):
    """Killed between writing its metrics and cleaning up, a network keeps a resume and a running file: the next
    sweep that sees it finished removes them, and trains nothing."""
    spec = specs["R1A"]
    folder = _folder(run, spec)
    save_tensors(folder / RESUME, {"x": torch.zeros(1)}, spec, epoch=1, history=[])
    write_json(folder / RUNNING, {"pid": os.getpid(), "host": socket.gethostname(), "started": 0.0})
    weights = (folder / WEIGHTS).stat().st_mtime_ns
    assert _states(cli("status", run))[spec.id][0] == "done"
    result = cli("train", run)
    assert result.exit_code == 0, result.output
    assert "trained 0, already done 6" in result.output
    assert not (folder / RESUME).exists() and not (folder / RUNNING).exists()
    assert (folder / WEIGHTS).stat().st_mtime_ns == weights


def test_a_plan_written_before_a_spec_field_existed_still_resumes(run, cli):
    """plan.json of an earlier probe lacks fields added since (here DataSpec.unreadable): they take their defaults,
    so the same command resumes the run instead of calling its plan different."""
    plan = read_json(run / "plan.json")
    for d in [plan["study"]["data"], *(n["spec"]["data"] for n in plan["networks"])]:
        del d["unreadable"]
    write_json(run / "plan.json", plan)
    for args in ([], SMALL):  # the run's own plan, and the options that made it
        result = cli("train", run, *args)
        assert result.exit_code == 0, result.output
        assert "trained 0, already done 6" in result.output


@pytest.mark.parametrize("damage", ["missing", "garbage", "truncated"])
def test_a_done_network_whose_weights_are_gone_is_corrupt_and_trained_again(run, specs, cli, damage):
    """metrics.json alone does not make a network done: with its weights missing, garbage or truncated (a power
    loss can leave the metrics on disk without them) it is reported corrupt, and 'probe train' trains it again
    instead of failing every network that copies from it."""
    weights = _folder(run, specs["baseA"]) / WEIGHTS
    if damage == "missing":
        weights.unlink()
    else:
        weights.write_bytes(b"not a checkpoint" if damage == "garbage" else weights.read_bytes()[:-64])
    _forget(run, specs, "A1A")
    state, detail = _states(cli("status", run))[specs["baseA"].id]
    assert state == "corrupt" and str(weights) in detail, detail
    result = cli("train", run)
    assert result.exit_code == 0, result.output
    assert "trained 2, already done 4, failed 0" in result.output
    assert _states(cli("status", run))[specs["baseA"].id][0] == "done"


def test_a_file_system_without_locks_stops_the_sweep_in_one_line(run, specs, cli, monkeypatch):
    """flock refused (ENOLCK, as on NFS mounted with nolock) concerns every network: one line naming the lock file
    and what the run directory needs, not a failure recorded for each network."""
    import fcntl

    def no_locks(fd, mode):
        raise OSError(errno.ENOLCK, "No locks available")

    _forget(run, specs, "baseA", "A1A", "R1A")
    monkeypatch.setattr(fcntl, "flock", no_locks)
    result = cli("train", run)
    assert_one_line_error(result, "cannot lock", "No locks available", "flock")
    assert not (_folder(run, specs["baseA"]) / METRICS).exists()  # nothing recorded failed


def test_an_unreadable_lock_file_is_one_line(run, specs, cli, monkeypatch):
    """A lock file this user cannot open (another user's run, an I/O error) is named, not a traceback."""
    _forget(run, specs, "baseA")  # not done: its lock decides whether it is running
    lock = Run(run).network(specs["baseA"].id).lock
    lock.parent.mkdir(parents=True)
    lock.touch()
    real_open = os.open

    def denied(path, flags, *args):
        if Path(path) == lock:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real_open(path, flags, *args)

    monkeypatch.setattr(os, "open", denied)
    assert_one_line_error(cli("status", run), str(lock), "Permission denied")


def test_a_second_train_waits_for_what_another_is_training_and_both_end_well(tmp_path):
    """Two 'probe train' of one fresh run directory at once: the later one finds baseA trained by the other, waits
    for it rather than reporting it (and AnB above it) blocked, trains the rest, and both exit 0."""
    import time

    run = tmp_path / "run"
    study = [*TINY_STUDY, "--cuts", "1", "--variants", "AnB", "--quiet", "--device", "cpu",
             "--cache-dir", str(tmp_path / "cache")]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    probe = [sys.executable, "-m", "probe.cli.main"]
    first = subprocess.Popen([*probe, "train", str(run), *study, "--epochs", "40", "--networks", "baseA"],
                             stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    running = run / "networks" / "random-s0" / "init0" / "baseA" / "running.json"
    deadline = time.monotonic() + 120
    while not running.exists() and first.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    assert running.exists(), "baseA never started"
    second = subprocess.run([*probe, "train", str(run), *study, "--epochs", "40"], capture_output=True, text=True,
                            env=env, timeout=600)
    out_first = first.communicate(timeout=600)[0]
    assert first.returncode == 0, out_first
    assert second.returncode == 0, second.stdout + second.stderr
    assert "blocked 0" in second.stdout and "failed 0" in second.stdout, second.stdout
    assert "already done 1" in second.stdout  # baseA, which the other trained

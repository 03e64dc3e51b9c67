"""Sweeps and extraction on a real dask.distributed LocalCluster of two worker processes."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import dask.array
import numpy as np
import pytest
import torch
import xarray as xr
from conftest import assert_one_line_error, assert_same_up_to_rounding

from probe.analysis.representations import representation_dataset
from probe.analysis.similarity import streaming_cka
from probe.analysis.stores import open_store
from probe.execution.distributed import dask_client, extract_run_dask, run_study_dask
from probe.execution.extract import extract_run
from probe.execution.sweep import run_study
from probe.planning.plan import Study
from probe.specs.spec import ArchSpec, DataSpec, Recipe
from probe.storage.atomic import read_json
from probe.storage.checkpoint import load_weights, save_tensors

DATA = DataSpec("synthetic", train_per_class=30)
ARCH = ArchSpec("caffenet-small", "kaiming", {"width": 0.125})
STUDY = Study(DATA, ARCH, Recipe(epochs=2, batch_size=32), cuts=(1, 3), variants=("BnB", "AnB+", "RnB"))


@pytest.fixture(scope="module")
def client():
    with dask_client(None, workers=2, threads=1) as c:
        yield c


def test_local_workers_give_torch_their_share_of_the_cores(client, monkeypatch):
    """dask_client tells each local worker its torch threads (here 1), and a task sets torch to that number."""
    import torch

    from probe.execution.executor import THREADS, set_torch_threads

    assert set(client.run(lambda: os.environ.get(THREADS)).values()) == {"1"}
    before = torch.get_num_threads()
    monkeypatch.setenv(THREADS, "2")
    try:
        set_torch_threads()
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_the_dask_executor_keeps_the_interface(client):
    from test_executor import check_semantics

    from probe.execution.executor import DaskExecutor

    check_semantics(DaskExecutor(client))


def _metrics(run: Path) -> dict[str, dict]:
    return {m["id"]: m for m in (json.loads(p.read_text()) for p in run.rglob("metrics.json"))}


def test_dask_sweep_matches_the_local_executor_in_dependency_order(tmp_path, cache_dir, client):
    local = run_study(tmp_path / "local", STUDY, torch.device("cpu"), cache_dir, progress=False)
    result = run_study_dask(client, tmp_path / "dask", STUDY, "cpu", cache_dir, progress=False)
    assert not result.failed and not result.blocked and not result.skipped
    assert sorted(result.trained) == sorted(local.trained) and len(local.trained) == 2 + 2 * 3 * 2

    ran, expected = _metrics(tmp_path / "dask"), _metrics(tmp_path / "local")
    plan = json.loads((tmp_path / "dask" / "plan.json").read_text())["networks"]
    for network in plan:
        nid = network["id"]
        # a worker process may run other float kernels than this one: the same training, up to rounding that a
        # step or two of SGD can grow, and never more than a test image or two apart
        assert abs(ran[nid]["test_acc"] - expected[nid]["test_acc"]) <= 2 / ran[nid]["n_test"], nid
        for parent in network["depends_on"]:  # started only once the network it copies from had finished
            assert ran[nid]["started_at"] >= ran[parent]["finished_at"], (nid, parent)
        ours, _, _ = load_weights(tmp_path / "dask" / "networks" / nid / "weights.safetensors")
        theirs, _, _ = load_weights(tmp_path / "local" / "networks" / nid / "weights.safetensors")
        for k in theirs:
            torch.testing.assert_close(ours[k], theirs[k], rtol=1e-3, atol=1e-4, msg=f"{nid} {k}")

    # a second run finds everything done and trains nothing
    again = run_study_dask(client, tmp_path / "dask", STUDY, "cpu", cache_dir, progress=False)
    assert again.trained == [] and len(again.skipped) == len(local.trained)


def test_a_killed_worker_costs_only_its_unfinished_epochs(tmp_path, cache_dir, client):
    """Kill the worker process training a network after its first epoch: dask runs the task again, the network
    resumes from its checkpoint, and every network is written exactly once."""
    study = Study(DataSpec("synthetic", train_per_class=120), ARCH, Recipe(epochs=3, batch_size=16), cuts=(2,),
                  variants=("BnB", "AnB"))
    run = tmp_path / "run"
    writes: dict[Path, set] = {}
    outcome: dict = {}
    stop = threading.Event()

    def sweep():
        outcome["result"] = run_study_dask(client, run, study, "cpu", cache_dir, progress=False)
        stop.set()

    def watch_weights():
        while not stop.is_set():
            for p in run.rglob("weights.safetensors"):
                try:
                    st = p.stat()
                except FileNotFoundError:
                    continue
                writes.setdefault(p, set()).add((st.st_ino, st.st_mtime_ns))
            time.sleep(0.02)

    threads = [threading.Thread(target=sweep), threading.Thread(target=watch_weights)]
    for t in threads:
        t.start()
    victim = None
    deadline = time.time() + 120
    while victim is None and time.time() < deadline and not stop.is_set():
        for resume in run.rglob("resume.safetensors"):
            running = resume.parent / "running.json"
            try:
                victim = (resume.parent, read_json(running)["pid"])
            except (FileNotFoundError, json.JSONDecodeError):
                continue
            break
        time.sleep(0.01)
    assert victim is not None, "no network reached its first epoch checkpoint"
    os.kill(victim[1], signal.SIGKILL)
    for t in threads:
        t.join(300)

    result = outcome["result"]
    assert not result.failed and not result.blocked, (result.failed, result.blocked)
    metrics = _metrics(run)
    assert len(metrics) == 2 + 2 * 2 and all(m["status"] == "done" for m in metrics.values())
    killed = next(m for m in metrics.values() if run / "networks" / m["id"] == victim[0])
    assert killed["resumed_at_epoch"] >= 1 and [e["epoch"] for e in killed["epochs"]] == [1, 2, 3]
    assert set(result.trained) | set(result.skipped) == set(metrics)
    assert all(len(seen) == 1 for seen in writes.values()), writes  # nothing finished was trained again


def test_a_network_that_keeps_failing_is_reported_and_the_rest_finish(tmp_path, cache_dir, client):
    run = tmp_path / "run"
    bases = run_study(run, STUDY, torch.device("cpu"), cache_dir, progress=False, only=["baseA", "baseB"])
    assert len(bases.trained) == 2
    broken = next(run.rglob("baseA/weights.safetensors"))
    state, spec, meta = load_weights(broken)
    # baseA's own tensors, so it is done, but NaN: every network copying its layers diverges at its first step
    save_tensors(broken, {k: torch.full_like(v, float("nan")) if v.is_floating_point() else v
                          for k, v in state.items()}, spec, normalization=meta)
    result = run_study_dask(client, run, STUDY, "cpu", cache_dir, progress=False, retries=1)
    # every network copying from the broken baseA fails with the reason; baseB's and the random ones finish
    copies_a = {nid for nid in result.failed}
    assert copies_a and all("diverged" in e for e in result.failed.values())
    assert all(read_json(run / "networks" / nid / "metrics.json")["status"] == "failed" for nid in copies_a)
    assert not list(run.rglob("running.json"))  # a failure leaves no network looking as if it were still running
    assert len(result.trained) == 2 + 2 * 3 * 2 - 2 - len(copies_a) and not result.blocked


def test_dask_extraction_writes_the_same_store_as_the_local_one(tmp_path, cache_dir, client):
    run = tmp_path / "run"
    run_study(run, Study(DATA, ARCH, Recipe(epochs=1, batch_size=32), cuts=(1,), variants=("BnB",)),
              torch.device("cpu"), cache_dir, progress=False)
    local = extract_run(run, tmp_path / "local.zarr", cache_dir=cache_dir, progress=False)
    ours = extract_run_dask(client, run, tmp_path / "dask.zarr", device="cpu", cache_dir=cache_dir, progress=False)
    assert sorted(ours["written"]) == sorted(local["written"]) and len(local["written"]) == 4
    a = xr.open_datatree(tmp_path / "local.zarr", engine="zarr")
    b = xr.open_datatree(tmp_path / "dask.zarr", engine="zarr")
    for nid in local["written"]:  # the same networks on the same images, in a worker of one thread and here
        assert_same_up_to_rounding(a[nid].to_dataset().drop_attrs(deep=False),
                                   b[nid].to_dataset().drop_attrs(deep=False))
    again = extract_run_dask(client, run, tmp_path / "dask.zarr", device="cpu", cache_dir=cache_dir, progress=False)
    assert again["written"] == [] and len(again["skipped"]) == 4

    # a store opened on dask chunks computes on the cluster, and streaming CKA over it is the in-memory value
    lazy = open_store(tmp_path / "dask.zarr", chunks={})
    base, selffer = sorted(n for n in local["written"] if n.endswith(("/baseB", "/B1B")))[::-1]
    x, y = lazy[base].to_dataset()["fc7"], lazy[selffer].to_dataset()["fc7"]  # both probed on task B's images
    assert isinstance(x.data, dask.array.Array)
    assert streaming_cka(x, y, batch_size=40) == pytest.approx(
        streaming_cka(x.compute(), y.compute(), batch_size=40), abs=1e-12)

    # the representation views computed as dask tasks are the local ones
    local_views = representation_dataset(run, tmp_path / "local.zarr", max_samples=100)
    assert_same_up_to_rounding(representation_dataset(run, tmp_path / "dask.zarr", max_samples=100, client=client),
                               local_views)
    assert np.isfinite(local_views["cka_target"]).any()


def test_cli_train_and_extract_with_the_dask_executor(tmp_path, cli, cache_dir):
    from conftest import TINY_STUDY

    run = tmp_path / "run"
    result = cli("train", run, *TINY_STUDY, "--cuts", "1", "--variants", "AnB", "--executor", "dask",
                 "--workers", "2", "--quiet")
    assert result.exit_code == 0, result.output
    assert "trained 4" in result.output and "LocalCluster of 2 workers" in result.output
    result = cli("extract", run, "--executor", "dask", "--workers", "2", "--quiet", "--cache-dir", cache_dir)
    assert result.exit_code == 0, result.output
    assert "wrote 4" in result.output
    result = cli("analyze", run, "--executor", "dask", "--workers", "2", "--max-samples", "100")
    assert result.exit_code == 0, result.output
    assert (run / "analysis" / "representations.zarr").exists()


def test_cli_unreachable_scheduler_and_bad_device_are_one_line(tmp_path, cli):
    from conftest import TINY_STUDY

    result = cli("train", tmp_path / "run", *TINY_STUDY, "--executor", "dask", "--scheduler", "tcp://127.0.0.1:9")
    assert_one_line_error(result, "tcp://127.0.0.1:9")
    result = cli("train", tmp_path / "run", *TINY_STUDY, "--executor", "dask", "--device", "gpu0")
    assert_one_line_error(result, "'gpu0'")


def test_ctrl_c_stops_a_dask_sweep_cleanly_and_the_same_command_resumes(tmp_path, cache_dir, cli):
    """Ctrl-C in a terminal sends SIGINT to the whole process group: the CLI, its LocalCluster's nannies and
    workers. The sweep stops within seconds with one line and status 130, and rerunning finishes it."""
    from conftest import REPO_ROOT

    run = tmp_path / "run"
    study = ["--dataset", "synthetic", "--arch-option", "width=0.125", "--epochs", "60", "--batch-size", "32",
             "--train-per-class", "30", "--cuts", "1", "--variants", "AnB", "--seeds", "0"]
    # Python's own SIGINT handler even where this test runs with SIGINT ignored (a background job), so that the
    # processes it starts get the default too; a process group of its own, as a shell gives a foreground job
    main = ("import signal; signal.signal(signal.SIGINT, signal.default_int_handler); "
            "from probe.cli.main import main; main()")
    cmd = [sys.executable, "-c", main, "train", str(run), *study, "--quiet", "--cache-dir", str(cache_dir),
           "--executor", "dask", "--workers", "2"]
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while not list(run.glob("networks/*/*/*/resume.safetensors")):
            assert proc.poll() is None, proc.communicate()
            assert time.monotonic() < deadline, "no epoch finished within the time limit"
            time.sleep(0.1)
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:  # nothing of the group outlives the test, whatever happened
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    err = err.decode()
    assert proc.returncode == 130, err
    assert "interrupted; what finished is saved" in err and "Traceback" not in err, err
    # stopped before the end (the workers may still finish the epochs they were in while the cluster closes)
    done = int(re.search(r"(\d+) done", cli("status", run).output).group(1))
    assert done < 4

    result = cli("train", run, "--quiet", "--executor", "dask", "--workers", "2")
    assert result.exit_code == 0, result.output
    assert f"trained {4 - done}, already done {done}, failed 0, blocked 0" in result.output  # what finished is kept
    assert all(read_json(m)["status"] == "done" for m in run.glob("networks/*/*/*/metrics.json"))
    assert len(list(run.glob("networks/*/*/*/metrics.json"))) == 4


def test_local_workers_start_without_distributeds_malloc_trim_threshold():
    """distributed's MALLOC_TRIM_THRESHOLD_=65536 made glibc return and re-fault every activation buffer: the workers
    spent 39% of their time in the kernel (docs/benchmarks.md); probe's LocalCluster starts them without it."""
    from probe.execution.distributed import dask_client

    with dask_client(None, workers=1) as client:
        found = client.run(lambda: os.environ.get("MALLOC_TRIM_THRESHOLD_"))
    assert list(found.values()) == [None]

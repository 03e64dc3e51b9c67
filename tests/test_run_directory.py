"""A run directory as its readers meet it: one layout, a plan.json that says everything needed to read the run, a
`probe status` and `probe --help` that load no torch, and a weights file enough to run its network."""

from __future__ import annotations

import shutil
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import REPO_ROOT, TINY_STUDY, invoke

from probe.architectures import REGISTRY, build_model
from probe.data.datasets import load_dataset
from probe.data.tasks import task_data
from probe.execution.batches import Normalize, center_crop, to_device
from probe.planning.plan import Study, make_plan, read_plan
from probe.specs.spec import ArchSpec, DataSpec, NetworkSpec
from probe.storage.atomic import read_json, write_json
from probe.storage.checkpoint import load_tensors, load_weights, save_tensors
from probe.storage.run import Run

HEAVY = ("torch", "torchvision", "dask", "distributed", "matplotlib", "xarray", "zarr")


@pytest.fixture(scope="module")
def done_run(tmp_path_factory, cache_dir):
    """A finished tiny run with an activation store: both bases and the selffers at cut 1."""
    run = tmp_path_factory.mktemp("run") / "run"
    result = invoke(cache_dir, "train", run, *TINY_STUDY, "--cuts", "1", "--variants", "BnB")
    assert result.exit_code == 0, result.output
    result = invoke(cache_dir, "extract", run, "--probe-set", "both", "--quiet", "--device", "cpu",
                    "--cache-dir", cache_dir)
    assert result.exit_code == 0, result.output
    _, plan = read_plan(run)
    return SimpleNamespace(run=run, plan=plan)


def test_every_file_of_a_run_is_where_run_says(done_run):
    run = Run(done_run.run)
    assert run.plan.is_file() and run.data.is_file() and run.store.is_dir()
    for p in done_run.plan:
        files = run.network(p.spec.id)
        assert files.folder == done_run.run / "networks" / p.spec.id
        assert files.weights.is_file() and files.metrics.is_file() and files.spec.is_file() and files.lock.is_file()
        assert not files.resume.exists() and not files.running.exists()


def test_the_plan_records_the_layers_and_planning_builds_no_network(done_run, monkeypatch):
    for n in read_json(Run(done_run.run).plan)["networks"]:
        assert n["layers"] == list(REGISTRY["caffenet-small"].layers)

    def no_building(*args, **kwargs):
        raise AssertionError("planning built a network")

    monkeypatch.setattr("probe.architectures.caffenet._build", no_building)
    study = Study(DataSpec("synthetic"), ArchSpec("caffenet-small", options={"width": 0.125}), cuts=(2,))
    plan = make_plan(study, [f"c{i}" for i in range(10)], 3, 16)
    assert {p.layers for p in plan} == {REGISTRY["caffenet-small"].layers}
    assert {p.cut_points for p in plan} == {REGISTRY["caffenet-small"].cut_points}


def _as_unknown_architecture(run, tmp_path):
    """A copy of ``run`` whose plan and weights name an architecture this installation does not have."""
    copy = tmp_path / "run"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("analysis"))
    plan = read_json(Run(copy).plan)
    for arch in [plan["study"]["arch"], *(n["spec"]["arch"] for n in plan["networks"])]:
        arch["name"] = "plugin-net"
    write_json(Run(copy).plan, plan)
    for n in plan["networks"]:  # a network is done only with weights that name it, as planned
        weights = Run(copy).network(n["id"]).weights
        state, _, meta = load_tensors(weights)
        save_tensors(weights, state, NetworkSpec.from_dict(n["spec"]), **meta)
    return copy


def test_status_and_analyze_read_a_run_whose_architecture_is_not_installed(done_run, tmp_path, cli):
    run = _as_unknown_architecture(done_run.run, tmp_path)
    status = cli("status", run)
    assert status.exit_code == 0, status.output
    assert "4 done, 0 running, 0 interrupted, 0 failed, 0 missing, 0 corrupt" in status.output
    result = cli("analyze", run, "--max-samples", "100")
    assert result.exit_code == 0, result.output
    assert "architecture `plugin-net`" in (Run(run).analysis / "report.md").read_text()
    assert "conv1" in (Run(run).analysis / "representations.csv").read_text()  # the plan's layers, from the store
    # what needs the architecture's code says so in one line
    train = cli("train", run)
    assert train.exit_code != 0 and "unknown architecture 'plugin-net'" in train.output


def _heavy_modules_after(*args: str) -> list[str]:
    """The heavy modules loaded by running the command line with ``args`` in a fresh interpreter."""
    code = ("import sys; import probe.cli.main as cli\n"
            "try:\n    cli.main(sys.argv[1:], prog_name='probe')\nexcept SystemExit:\n    pass\n"
            f"print(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code, *args], cwd=REPO_ROOT, capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    return eval(out.stdout.strip().splitlines()[-1])


def test_help_and_status_load_no_torch(done_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(done_run.run, run, ignore=shutil.ignore_patterns("*.zarr", "analysis"))
    # one network interrupted (status reads its resume file's metadata) and one missing
    resumed, missing = done_run.plan[2].spec, done_run.plan[3].spec
    for spec in (resumed, missing):
        shutil.rmtree(Run(run).network(spec.id).folder)
    save_tensors(Run(run).network(resumed.id).resume, {"x": torch.zeros(1)}, resumed, epoch=1, history=[])
    assert _heavy_modules_after("--help") == []
    assert _heavy_modules_after("status", str(run)) == []
    out = subprocess.run([sys.executable, "-m", "probe.cli.main", "status", str(run)], cwd=REPO_ROOT,
                         capture_output=True, text=True, timeout=120)
    assert "2 done, 0 running, 1 interrupted, 0 failed, 1 missing, 0 corrupt" in out.stdout, out.stderr


def test_a_weights_file_is_enough_to_run_its_network(done_run):
    planned = next(p for p in done_run.plan if p.spec.name == "baseB")
    files = Run(done_run.run).network(planned.spec.id)
    state, spec, normalization = load_weights(files.weights)
    assert spec == planned.spec
    stats = read_json(Run(done_run.run).data)
    assert normalization == {"mean": stats["mean"], "std": stats["std"]}
    model = build_model(spec)
    model.load_state_dict(state)
    task = task_data(load_dataset(spec.data), list(spec.target_classes), spec.data)
    images = to_device(task.test_x, torch.device("cpu"))
    normalize = Normalize(normalization["mean"], normalization["std"], "cpu")
    with torch.inference_mode():
        logits = model.eval()(normalize(center_crop(images, spec.input_size)))
    accuracy = float(np.mean(logits.argmax(1).numpy() == task.test_y))
    # the network's own test accuracy, up to an image whose argmax rounding may flip
    assert abs(accuracy - read_json(files.metrics)["test_acc"]) <= 1 / len(task.test_y)


def test_the_runs_normalization_is_that_of_the_training_images_of_the_classes_it_uses(tmp_path, cache_dir):
    """A study of some classes of a dataset normalizes by their training images, not by classes it never reads (a
    dataset decoded class by class has no others decoded); one of every class, by the whole training split."""
    import numpy as np

    from probe.data.datasets import load_dataset
    from probe.execution.batches import channel_stats
    from probe.execution.sweep import plan_classes, plan_study, prepare_run_data
    from probe.planning.plan import Study
    from probe.specs.spec import ArchSpec, DataSpec, Recipe

    data = DataSpec("synthetic", train_per_class=30)
    arrays = load_dataset(data, cache_dir)
    for per_task, run in ((2, tmp_path / "some"), (None, tmp_path / "all")):
        study = Study(data, ArchSpec("caffenet-small", options={"width": 0.125}), Recipe(epochs=1, batch_size=32),
                      cuts=(1,), variants=("BnB",), classes_per_task=per_task)
        plan, _ = plan_study(run, study, cache_dir, progress=False)
        used = plan_classes(plan)
        mean, std = prepare_run_data(run, arrays, None, used)
        chosen = np.flatnonzero(np.isin(arrays.train_y, [arrays.classes.index(c) for c in used]))
        assert (mean, std) == channel_stats(arrays.train_x, None if per_task is None else chosen)
        assert len(used) == (4 if per_task else len(arrays.classes))

"""Training whole plans through the command line: copying, freezing, checkpoints, resuming, divergence, errors.

Everything runs on the synthetic dataset with a CaffeNet at 1/8 width, so a network trains in a fraction of a
second on one CPU thread. One complete plan (every variant at all seven cut points, two replicates: 144 networks)
is trained once per module and shared by the tests that only read it.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import REPO_ROOT, TINY_STUDY, assert_one_line_error, invoke

import probe.execution.sweep as sweep
import probe.execution.train as train
from probe.architectures import build_model
from probe.data.tasks import task_data
from probe.errors import ProbeError
from probe.execution.batches import channel_stats
from probe.execution.train import TaskTensors, make_optimizer, prepare_model, train_network
from probe.planning.plan import Study, read_plan
from probe.specs.spec import ArchSpec, DataSpec, NetworkSpec, Recipe
from probe.storage.atomic import read_json
from probe.storage.checkpoint import load_weights, read_metadata
from probe.storage.run import METRICS, RESUME, RUNNING, SPEC, WEIGHTS, Run

FULL_STUDY = [*TINY_STUDY, "--seeds", "0,1"]  # all variants, all cut points
N_FULL = 2 * (2 + 2 * 5 * 7)


def _weights(run: Path, spec: NetworkSpec) -> Path:
    return Run(run).network(spec.id).weights


def _mtimes(run: Path, plan) -> dict[str, int]:
    return {p.spec.id: _weights(run, p.spec).stat().st_mtime_ns for p in plan if _weights(run, p.spec).exists()}


def _layer_keys(model, i: int) -> list[str]:
    name = model.layer_names[i - 1]
    return [k for k in model.state_dict() if k.startswith(f"stages.{name}.")]


def _status_lines(result) -> dict[str, str]:
    """``probe status`` output as {network id: state}."""
    rows = {}
    for line in result.output.splitlines():
        parts = line.split()
        if len(parts) >= 2 and "/" in parts[0]:
            rows[parts[0]] = parts[1]
    return rows


# --- one complete plan, trained once ----------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def full_run(tmp_path_factory, cache_dir):
    run = tmp_path_factory.mktemp("full") / "run"
    # first only the base networks (a sweep that stopped after them) ...
    first = invoke(cache_dir, "train", run, *FULL_STUDY, "--networks", "baseA,baseB")
    assert first.exit_code == 0, first.output
    _, plan = read_plan(run)
    bases = _mtimes(run, plan)
    # ... then the whole plan
    second = invoke(cache_dir, "train", run, *FULL_STUDY)
    assert second.exit_code == 0, second.output
    return SimpleNamespace(run=run, plan=plan, first=first, second=second, base_mtimes=bases,
                           specs={p.spec.id: p.spec for p in plan})


def test_full_plan_is_planned(full_run):
    assert len(full_run.plan) == N_FULL
    assert {p.spec.cut for p in full_run.plan} == set(range(8))
    assert {p.spec.replicate for p in full_run.plan} == {"random-s0/init0", "random-s1/init1"}
    assert len({p.spec.name for p in full_run.plan}) == N_FULL // 2


def test_every_planned_network_is_trained(full_run):
    assert "trained 4, already done 0, failed 0, blocked 0" in full_run.first.output
    assert f"trained {N_FULL - 4}, already done 4, failed 0, blocked 0" in full_run.second.output
    for p in full_run.plan:
        folder = Run(full_run.run).network(p.spec.id).folder
        assert (folder / WEIGHTS).is_file(), p.spec.id
        assert (folder / SPEC).is_file(), p.spec.id
        metrics = read_json(folder / METRICS)
        assert metrics["status"] == "done", p.spec.id
        assert metrics["id"] == p.spec.id and metrics["name"] == p.spec.name
        assert 0.0 <= metrics["test_acc"] <= 1.0
        assert [e["epoch"] for e in metrics["epochs"]] == [1]
        assert metrics["n_train"] == 5 * 27 and metrics["n_val"] == 5 * 3 and metrics["n_test"] == 5 * 30
        assert not (folder / RESUME).exists() and not (folder / RUNNING).exists()
    assert read_json(full_run.run / "data.json")["classes"] == [f"class{i}" for i in range(10)]


def test_status_reports_all_done(full_run, cli):
    result = cli("status", full_run.run)
    assert result.exit_code == 0, result.output
    states = _status_lines(result)
    assert states == {p.spec.id: "done" for p in full_run.plan}
    assert f"{N_FULL} done, 0 running, 0 interrupted, 0 failed, 0 missing" in result.output


def test_accuracy_table(full_run):
    from probe.analysis.accuracies import accuracy_dataset, format_table, rows

    ds, missing = accuracy_dataset(full_run.run)
    assert missing == []
    assert ds.sizes["replicate"] == 2 and ds.sizes["target"] == 2 and list(ds["n"].values) == list(range(1, 8))
    assert bool(np.isfinite(ds["acc"].values).all()) and bool(np.isfinite(ds["base"].values).all())
    assert len(rows(ds)) == N_FULL
    expected = read_json(Run(full_run.run).network("random-s1/init1/A4B+").metrics)["test_acc"]
    assert float(ds["acc"].sel(split="random", replicate="s1/init1", target="B", n=4, variant="AnB+")) == expected
    table = format_table(ds)
    assert "split random" in table
    assert table.count("(4)") == 1 + 7 * 5  # every cell: 2 replicates x 2 directions
    assert table in full_run.second.output


def test_a_finished_sweep_part_is_not_retrained(full_run):
    """The bases trained by the first (partial) run keep their files when the whole plan runs."""
    assert len(full_run.base_mtimes) == 4
    assert _mtimes(full_run.run, full_run.plan).items() >= full_run.base_mtimes.items()


def _source_state(full_run, spec: NetworkSpec) -> dict[str, torch.Tensor]:
    if spec.variant == "random":
        return build_model(spec).state_dict()
    return load_weights(_weights(full_run.run, spec.parent), spec.parent)[0]


def test_frozen_layers_are_the_source_layers_and_upper_layers_are_trained(full_run):
    checked = 0
    for p in full_run.plan:
        spec = p.spec
        if spec.variant == "base" or spec.fine_tune:
            continue
        state, _, _ = load_weights(_weights(full_run.run, spec), spec)
        source = _source_state(full_run, spec)
        model = build_model(spec)
        for i in range(1, len(model.layer_names) + 1):
            keys = _layer_keys(model, i)
            if not keys:
                continue
            if i <= spec.cut:
                for k in keys:
                    assert torch.equal(state[k], source[k]), (spec.id, k)
            else:  # retrained (fc8 may even differ in shape from the source's, when A and B differ in size)
                assert any(state[k].shape != source[k].shape or not torch.equal(state[k], source[k])
                           for k in keys), (spec.id, i)
        checked += 1
    assert checked == 2 * 2 * 3 * 7  # BnB, AnB, RnB in both directions at 7 cuts, 2 replicates


def test_fine_tuned_copied_layers_change(full_run):
    checked = 0
    for p in full_run.plan:
        spec = p.spec
        if not spec.fine_tune:
            continue
        state, _, _ = load_weights(_weights(full_run.run, spec), spec)
        source = _source_state(full_run, spec)
        model = build_model(spec)
        for i in range(1, spec.cut + 1):
            keys = _layer_keys(model, i)
            if keys:
                assert any(not torch.equal(state[k], source[k]) for k in keys), (spec.id, i)
        checked += 1
    assert checked == 2 * 2 * 2 * 7


@pytest.mark.parametrize("name", ["B3B", "A3B", "B3B+", "A3B+", "R3B", "A7B+", "R1A"])
def test_prepare_model_copies_and_freezes(full_run, name):
    """The network at the start of training: copied layers equal to the source, the rest fresh from the init seed;
    frozen layers without gradients and outside the optimizer."""
    spec = full_run.specs[f"random-s1/init1/{name}"]
    model = prepare_model(spec, full_run.run)
    fresh = build_model(spec).state_dict()
    source = _source_state(full_run, spec)
    state = model.state_dict()
    for k, v in state.items():
        layer = model.layer_index(k.split(".")[1])
        expected = source[k] if layer <= spec.cut else fresh[k]
        assert torch.equal(v, expected), k
    frozen = not spec.fine_tune
    assert model.n_frozen == (spec.cut if frozen else 0)
    optimized = {id(p) for g in make_optimizer(model, spec).param_groups for p in g["params"]}
    for i, stage in enumerate(model.stages.values(), start=1):
        for param in stage.parameters():
            trainable = not (frozen and i <= spec.cut)
            assert param.requires_grad == trainable
            assert (id(param) in optimized) == trainable


def test_specs_round_trip_through_checkpoints(full_run):
    for p in full_run.plan:
        folder = Run(full_run.run).network(p.spec.id).folder
        state, spec, _ = load_weights(folder / WEIGHTS)
        assert spec == NetworkSpec.from_dict(read_json(folder / SPEC)) == p.spec
        model = build_model(spec)
        result = model.load_state_dict(state)  # strict: every key, every shape
        assert not result.missing_keys and not result.unexpected_keys
    # and a checkpoint refuses to pass for another network
    a, b = full_run.plan[0].spec, full_run.plan[1].spec
    with pytest.raises(ProbeError, match=b.id):
        load_weights(_weights(full_run.run, a), b)


def test_a_loaded_checkpoint_reproduces_the_test_accuracy(full_run, synthetic_arrays):
    spec = full_run.specs["random-s0/init0/A4B+"]
    state, spec, _ = load_weights(_weights(full_run.run, spec))
    model = build_model(spec)
    model.load_state_dict(state)
    data = read_json(full_run.run / "data.json")
    task = task_data(synthetic_arrays, list(spec.target_classes), spec.data)
    tensors = TaskTensors.from_task(task, data["mean"], data["std"], torch.device("cpu"))
    acc = train.evaluate(model, tensors.test_x, tensors.test_y, tensors.normalize, spec.input_size)
    assert acc == read_json(Run(full_run.run).network(spec.id).metrics)["test_acc"]
    logits, feats = model.eval().forward_intermediates(tensors.normalize(tensors.test_x[:4]), layers=["conv5", "fc6"])
    assert logits.shape == (4, 5) and list(feats) == ["conv5", "fc6"]


def test_rerun_without_options_resumes_the_stored_plan(full_run, cli):
    before = _mtimes(full_run.run, full_run.plan)
    result = cli("train", full_run.run)
    assert result.exit_code == 0, result.output
    assert f"trained 0, already done {N_FULL}, failed 0, blocked 0" in result.output
    assert _mtimes(full_run.run, full_run.plan) == before
    # the same options again are the same plan, and also train nothing
    result = cli("train", full_run.run, *FULL_STUDY)
    assert result.exit_code == 0, result.output
    assert f"trained 0, already done {N_FULL}" in result.output
    assert _mtimes(full_run.run, full_run.plan) == before


def test_plan_command_lists_the_same_networks(full_run, cli):
    result = cli("plan", *FULL_STUDY, "--cache-dir", full_run.run.parent / "plan-cache")
    assert result.exit_code == 0, result.output
    assert f"{N_FULL} networks" in result.output
    listed = [line.split()[0] for line in result.output.splitlines() if "/" in line.split()[0]]
    assert listed == [p.spec.id for p in full_run.plan]
    assert "random-s0/init0/A3B+" in result.output and "<- random-s0/init0/baseA" in result.output


def test_archs_command(cli):
    from probe.architectures import REGISTRY

    result = cli("archs")
    assert result.exit_code == 0, result.output
    for name in REGISTRY:
        assert f"{name}:" in result.output
    assert "conv1, conv2, conv3, conv4, conv5, fc6, fc7" in result.output


# --- resuming ---------------------------------------------------------------------------------------------------------

RESUME_STUDY = ["--dataset", "synthetic", "--arch-option", "width=0.125", "--epochs", "6", "--batch-size", "32",
                "--train-per-class", "60", "--cuts", "1", "--variants", "RnB", "--seeds", "0"]


def _epochs_saved(resume: Path) -> int:
    """The epochs a resume file holds; one gone since it was listed (its network finished) holds them all."""
    try:
        return read_metadata(resume)["epoch"]
    except (OSError, ProbeError):
        return 6


def test_an_interrupted_network_resumes_from_its_last_epoch(tmp_path, cache_dir, cli, monkeypatch):
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    cmd = [sys.executable, "-c", "from probe.cli.main import main; main()", "train", str(run), *RESUME_STUDY,
           "--quiet", "--device", "cpu", "--cache-dir", str(cache_dir)]
    proc = subprocess.Popen(cmd, cwd=REPO_ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    try:
        while True:
            assert proc.poll() is None, f"the sweep ended before it could be killed: {proc.stderr.read()!r}"
            assert time.monotonic() < deadline, "no network was trained within the time limit"
            done = [m for m in run.glob("networks/*/*/*/" + METRICS) if read_json(m).get("status") == "done"]
            # a network between epochs: the resume file of its last epoch stands while it tests, and a kill then
            # would interrupt a network with no epoch left (under load that window is wide)
            if done and any(_epochs_saved(r) < 6 for r in run.glob("networks/*/*/*/" + RESUME)):
                break
            time.sleep(0.005)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stderr.close()

    _, plan = read_plan(run)
    finished = {p.spec.id for p in plan if Run(run).network(p.spec.id).weights.exists()}
    interrupted = [p.spec for p in plan if Run(run).network(p.spec.id).resume.exists()]
    assert finished and len(interrupted) == 1
    victim = interrupted[0]
    meta = read_metadata(Run(run).network(victim.id).resume)
    k = meta["epoch"]
    assert 1 <= k < 6 and [e["epoch"] for e in meta["history"]] == list(range(1, k + 1))
    finished_mtimes = _mtimes(run, plan)

    status = cli("status", run)
    states = _status_lines(status)
    assert states[victim.id] == "interrupted", status.output
    assert f"resumes after epoch {k}/6" in status.output
    assert all(states[i] == "done" for i in finished)
    assert "1 interrupted" in status.output

    # rerun in this process, watching what is trained, what is resumed, and how many steps each network takes
    trained, resumed, steps = [], [], {}
    real_train, real_resume, real_crop = sweep.train_network, train._resume, train.random_crop_flip

    def spy_train(spec, *args, **kwargs):
        trained.append(spec.id)
        steps[spec.id] = 0
        return real_train(spec, *args, **kwargs)

    def spy_resume(path, spec, *args):
        out = real_resume(path, spec, *args)
        resumed.append((spec.id, out[0]))
        return out

    def spy_crop(*args, **kwargs):
        steps[trained[-1]] += 1
        return real_crop(*args, **kwargs)

    monkeypatch.setattr(sweep, "train_network", spy_train)
    monkeypatch.setattr(train, "_resume", spy_resume)
    monkeypatch.setattr(train, "random_crop_flip", spy_crop)
    result = cli("train", run)
    assert result.exit_code == 0, result.output

    assert set(trained) == {p.spec.id for p in plan} - finished  # nothing finished is trained again
    assert len(trained) == len(set(trained))
    assert resumed == [(victim.id, k)]
    assert _mtimes(run, plan).items() >= finished_mtimes.items()
    for spec_id in trained:
        metrics = read_json(Run(run).network(spec_id).metrics)
        assert metrics["status"] == "done"
        assert [e["epoch"] for e in metrics["epochs"]] == list(range(1, 7)), spec_id
        per_epoch = math.ceil(metrics["n_train"] / 32)
        assert steps[spec_id] == (6 - k if spec_id == victim.id else 6) * per_epoch, spec_id
    victim_metrics = read_json(Run(run).network(victim.id).metrics)
    assert victim_metrics["epochs"][:k] == meta["history"]  # the epochs before the kill are kept, not redone
    assert not list(run.glob("networks/*/*/*/" + RESUME)) and not list(run.glob("networks/*/*/*/" + RUNNING))
    assert "4 done, 0 running, 0 interrupted" in cli("status", run).output


def _task_tensors(arrays, spec: NetworkSpec) -> TaskTensors:
    mean, std = channel_stats(arrays.train_x)
    return TaskTensors.from_task(task_data(arrays, list(spec.target_classes), spec.data), mean, std,
                                 torch.device("cpu"))


def _first_spec(arrays, options: dict, epochs: int = 2) -> NetworkSpec:
    from probe.planning.plan import make_plan

    study = Study(DataSpec("synthetic", train_per_class=30), ArchSpec("caffenet-small", options=options),
                  Recipe(epochs=epochs, batch_size=32), cuts=(1,), variants=("RnB",))
    return make_plan(study, arrays.classes, 3, 16)[-1].spec  # R1B: needs no other network


@pytest.mark.parametrize("dropout", [0.0, 0.5])
def test_training_is_a_function_of_the_spec(tmp_path, synthetic_arrays, dropout):
    """A network's weights depend on its spec only, not on what ran before it in the process (with dropout too:
    otherwise a resumed network, or one trained alone, differs from the same network trained in a sweep)."""
    spec = _first_spec(synthetic_arrays, {"width": 0.125, "dropout": dropout})
    data = _task_tensors(synthetic_arrays, spec)
    states = []
    for seed in (1, 2):
        torch.manual_seed(seed)  # some unrelated earlier use of the global RNG
        train_network(spec, data, tmp_path / f"run{seed}", torch.device("cpu"), progress=False)
        states.append(load_weights(_weights(tmp_path / f"run{seed}", spec), spec)[0])
    assert all(torch.equal(states[0][k], states[1][k]) for k in states[0])


def test_resumed_training_equals_uninterrupted_training(tmp_path, synthetic_arrays, monkeypatch):
    spec = _first_spec(synthetic_arrays, {"width": 0.125, "dropout": 0.0}, epochs=3)
    data = _task_tensors(synthetic_arrays, spec)
    straight = train_network(spec, data, tmp_path / "straight", torch.device("cpu"), progress=False)

    real_save = train._save_resume

    def crash_after_two(path, spec_, model, optimizer, generator, epoch, history, seconds, sessions):
        real_save(path, spec_, model, optimizer, generator, epoch, history, seconds, sessions)
        if epoch == 2:
            raise KeyboardInterrupt

    monkeypatch.setattr(train, "_save_resume", crash_after_two)
    with pytest.raises(KeyboardInterrupt):
        train_network(spec, data, tmp_path / "resumed", torch.device("cpu"), progress=False)
    assert read_metadata(Run(tmp_path / "resumed").network(spec.id).resume)["epoch"] == 2
    monkeypatch.setattr(train, "_save_resume", real_save)
    resumed = train_network(spec, data, tmp_path / "resumed", torch.device("cpu"), progress=False)
    assert resumed["epochs"] == straight["epochs"] and resumed["test_acc"] == straight["test_acc"]
    assert resumed["resumed_at_epoch"] == 2 and straight["resumed_at_epoch"] == 0
    assert resumed["seconds"] > resumed["finished_at"] - resumed["started_at"]  # both sessions' training counted
    (first_start, first_end), (second_start, second_end) = resumed["sessions"]  # and both sessions' wall-clock spans
    assert first_start < first_end <= second_start == resumed["started_at"] < second_end == resumed["finished_at"]
    assert len(straight["sessions"]) == 1
    assert not Run(tmp_path / "resumed").network(spec.id).running.exists()
    a = load_weights(_weights(tmp_path / "straight", spec))[0]
    b = load_weights(_weights(tmp_path / "resumed", spec))[0]
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_file_of_other_settings_is_refused(tmp_path, synthetic_arrays, monkeypatch):
    spec = _first_spec(synthetic_arrays, {"width": 0.125}, epochs=2)
    other = NetworkSpec.from_dict({**spec.to_dict(), "recipe": {**spec.to_dict()["recipe"], "lr": 0.02}})
    assert other.id == spec.id and other != spec
    data = _task_tensors(synthetic_arrays, spec)
    real_save = train._save_resume

    def save_then_stop(*args, **kwargs):
        real_save(*args, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(train, "_save_resume", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        train_network(spec, data, tmp_path, torch.device("cpu"), progress=False)
    monkeypatch.setattr(train, "_save_resume", real_save)
    assert Run(tmp_path).network(spec.id).resume.exists()
    with pytest.raises(ProbeError, match="other settings"):
        train_network(other, data, tmp_path, torch.device("cpu"), progress=False)


def test_a_base_network_learns_the_synthetic_task(tmp_path, cache_dir):
    """Training works at all: the base networks beat chance (1/5) clearly within a few epochs (test accuracy above
    1/3 on 150 test images is over four standard errors above chance; they reach 0.5-0.6 here)."""
    study = Study(DataSpec("synthetic"), ArchSpec("caffenet-small", options={"width": 0.25}),
                  Recipe(epochs=6, batch_size=32, schedule="constant", crop_padding=2), cuts=(1,), variants=("RnB",))
    torch.manual_seed(0)  # dropout draws from the global RNG (see test_training_is_a_function_of_the_spec)
    result = sweep.run_study(tmp_path, study, torch.device("cpu"), cache_dir, progress=False,
                             only=["baseA", "baseB"])
    assert len(result.trained) == 2
    for spec_id in result.trained:
        metrics = read_json(tmp_path / "networks" / spec_id / METRICS)
        assert metrics["test_acc"] > 1 / 3, metrics
        assert metrics["epochs"][-1]["train_loss"] < metrics["epochs"][0]["train_loss"]


# --- divergence -------------------------------------------------------------------------------------------------------

SMALL_STUDY = [*TINY_STUDY, "--cuts", "1", "--variants", "BnB,RnB", "--seeds", "0"]


def test_huge_learning_rate_fails_networks_clearly(tmp_path, cli):
    run = tmp_path / "run"
    result = cli("train", run, *SMALL_STUDY, "--lr", "1e6")
    assert result.exit_code == 1
    assert isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    _, plan = read_plan(run)
    ids = {p.spec.name: p.spec.id for p in plan}
    for base in ("baseA", "baseB"):
        metrics = read_json(tmp_path / "run" / "networks" / ids[base] / METRICS)
        assert metrics["status"] == "failed"
        assert "diverged" in metrics["error"] and "--lr" in metrics["error"]
        assert f"failed  {ids[base]}: {metrics['error']}" in result.output
    for selffer, base in (("A1A", "baseA"), ("B1B", "baseB")):
        assert f"blocked {ids[selffer]}: needs {ids[base]}" in result.output
        assert not (run / "networks" / ids[selffer] / METRICS).exists()
    for random_baseline in ("R1A", "R1B"):  # independent of the bases: attempted, not blocked
        assert (run / "networks" / ids[random_baseline] / METRICS).exists()
        assert f"blocked {ids[random_baseline]}" not in result.output
    states = _status_lines(cli("status", run))
    assert states[ids["baseA"]] == states[ids["baseB"]] == "failed"
    assert states[ids["A1A"]] == states[ids["B1B"]] == "missing"


def test_failed_bases_block_their_dependents_and_others_train(tmp_path, cli, monkeypatch):
    run = tmp_path / "run"
    real_build = train.build_model

    def exploding_bases(spec):
        model = real_build(spec)
        if spec.variant == "base":  # logits of size 1e6: the first batch's loss is far above --diverge-loss
            with torch.no_grad():
                model.layer(len(model.layer_names))[0].weight.mul_(1e6)
        return model

    monkeypatch.setattr(train, "build_model", exploding_bases)
    result = cli("train", run, *SMALL_STUDY)
    assert result.exit_code == 1, result.output
    assert "trained 2, already done 0, failed 2, blocked 2" in result.output
    _, plan = read_plan(run)
    ids = {p.spec.name: p.spec.id for p in plan}
    for base in ("baseA", "baseB"):
        metrics = read_json(run / "networks" / ids[base] / METRICS)
        assert metrics["status"] == "failed" and "diverged at epoch 1, step 1" in metrics["error"]
        assert not (run / "networks" / ids[base] / WEIGHTS).exists()
    for name in ("R1A", "R1B"):
        assert read_json(run / "networks" / ids[name] / METRICS)["status"] == "done"
    assert f"blocked {ids['B1B']}: needs {ids['baseB']}" in result.output
    random_mtimes = _mtimes(run, plan)

    # once the cause is gone, a rerun retries the failed networks and trains what they blocked
    monkeypatch.setattr(train, "build_model", real_build)
    result = cli("train", run)
    assert result.exit_code == 0, result.output
    assert "trained 4, already done 2, failed 0, blocked 0" in result.output
    assert _mtimes(run, plan).items() >= random_mtimes.items()
    assert set(_status_lines(cli("status", run)).values()) == {"done"}


def test_only_selected_networks_whose_base_is_missing_are_blocked(tmp_path, cli):
    run = tmp_path / "run"
    result = cli("train", run, *SMALL_STUDY, "--networks", "B1B,R1B")
    assert result.exit_code == 1
    assert "trained 1, already done 0, failed 0, blocked 1" in result.output
    assert "blocked random-s0/init0/B1B: needs random-s0/init0/baseB" in result.output


# --- command-line errors ----------------------------------------------------------------------------------------------

@pytest.mark.parametrize("options, culprit", [
    (["--dataset", "mnist"], "'mnist'"),
    (["--dataset", "imagefolder"], "imagefolder:PATH"),
    (["--dataset", "cifar10"], "'cifar10'"),
    (["--split", "halves"], "'halves'"),
    (["--split", "vehicles-animals"], "'airplane'"),
    (["--arch", "alexnet"], "'alexnet'"),
    (["--arch-option", "depth=3"], "'depth'"),
    (["--arch-option", "width=-1"], "width -1"),
    (["--arch-option", "width=wide"], "wide"),
    (["--arch", "resnet18", "--arch-option", "width=0.5"], "'width'"),
    (["--cuts", "9"], "cut 9"),
    (["--cuts", "0"], "cut 0"),
    (["--variants", "BnB,XnB"], "'XnB'"),
    (["--seeds", "1,1"], "[1, 1]"),
    (["--init-seeds", "1,2"], "[1, 2]"),
    (["--epochs", "0"], "epochs 0"),
    (["--lr", "-0.1"], "lr -0.1"),
    (["--val-fraction", "1"], "val_fraction 1.0"),
    (["--crop-size", "40"], "crop size 40"),
    (["--device", "tpu"], "'tpu'"),
    (["--networks", "baseC"], "'baseC'"),
])
def test_cli_errors_are_one_line(tmp_path, cli, options, culprit):
    result = cli("train", tmp_path / "run", *_with(SMALL_STUDY, options))
    assert_one_line_error(result, culprit)
    assert len(result.output.strip().splitlines()) == 1, result.output


def _with(options: list[str], changes: list[str]) -> list[str]:
    """``options`` with each ``--flag value`` of ``changes`` replacing the same flag's value (appended if absent,
    and always appended for the repeatable --arch-option)."""
    out = list(options)
    for flag, value in zip(changes[::2], changes[1::2]):
        if flag in out and flag != "--arch-option":
            out[out.index(flag) + 1] = value
        else:
            out += [flag, value]
    return out


@pytest.mark.parametrize("options, culprit", [
    (["--arch-option", "width"], "KEY=VALUE"),
    (["--seeds", "0,x"], "'0,x'"),
    (["--schedule", "linear"], "linear"),
])
def test_cli_usage_errors(tmp_path, cli, options, culprit):
    assert_one_line_error(cli("train", tmp_path / "run", *_with(SMALL_STUDY, options)), culprit)


def test_cli_error_for_a_different_plan_in_a_run_dir(tmp_path, cli):
    run = tmp_path / "run"
    result = cli("train", run, *SMALL_STUDY, "--networks", "R1A")
    assert result.exit_code == 0, result.output
    plan_text = (run / "plan.json").read_text()
    for change, setting in ((["--epochs", "2"], "recipe.epochs"), (["--seeds", "1"], "seeds"),
                            (["--cuts", "2"], "cuts"), (["--arch-option", "dropout=0.1"], "arch.options")):
        result = cli("train", run, *_with(SMALL_STUDY, change))
        assert_one_line_error(result, "different plan", str(run), setting)
        assert (run / "plan.json").read_text() == plan_text


def test_cli_extend_grows_a_run_without_retraining(tmp_path, cli):
    run = tmp_path / "run"
    assert cli("train", run, *SMALL_STUDY, "--quiet").exit_code == 0
    weights = {p: p.stat().st_mtime_ns for p in run.rglob("weights.safetensors")}
    assert len(weights) == 6
    grown = _with(SMALL_STUDY, ["--seeds", "0,1", "--variants", "BnB,RnB,AnB"])
    assert_one_line_error(cli("train", run, *grown), "different plan", "--extend")
    result = cli("train", run, *grown, "--extend", "--quiet")
    assert result.exit_code == 0, result.output
    assert "already done 6" in result.output  # seed 0's two bases and four cut-1 networks
    assert {p: p.stat().st_mtime_ns for p in weights} == weights
    assert len(list(run.rglob("weights.safetensors"))) == 2 * (2 + 2 * 3)
    # extending may only add: a changed recipe or a dropped seed is refused, naming the network
    for change in (["--epochs", "2"], ["--seeds", "1"]):
        assert_one_line_error(cli("train", run, *_with(grown, change), "--extend"), "cannot extend")


def test_cli_status_of_a_non_run_dir(tmp_path, cli):
    assert_one_line_error(cli("status", tmp_path), "not a run directory")


def test_cli_tiny_train_per_class(tmp_path, cli):
    """``--train-per-class 2`` (a smoke run): two images of a class leave none to hold out for a stratified
    validation split, which is refused in one line naming the setting and the way out; without a validation split
    the network trains."""
    options = [o if o != "30" else "2" for o in SMALL_STUDY]
    result = cli("train", tmp_path / "run", *options, "--networks", "R1A")
    assert_one_line_error(result, "validation fraction 0.1", "train_per_class 2", "a validation fraction of 0")
    result = cli("train", tmp_path / "no-validation", *options, "--val-fraction", "0", "--networks", "R1A")
    assert result.exit_code == 0, result.output
    assert "trained 1, already done 0, failed 0" in result.output

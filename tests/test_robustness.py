"""Layer re-initialization robustness: resetting one layer of a trained base network, nothing trained again."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from conftest import TINY_STUDY

from probe.analysis.robustness import kept_share, robustness_dataset, robustness_rows, verdict
from probe.architectures.build import build_model
from probe.data.tasks import task_data
from probe.errors import ProbeError
from probe.execution.robustness import fresh_seed, layer_resets, read_robustness, robustness_run
from probe.execution.sweep import read_run_data
from probe.execution.train import TaskTensors, evaluate
from probe.planning.plan import read_plan
from probe.storage.checkpoint import load_state, load_weights
from probe.storage.loaded import loaded_dataset
from probe.storage.run import Run


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory, cache_dir):
    from conftest import invoke

    run = tmp_path_factory.mktemp("robust") / "run"
    result = invoke(cache_dir, "train", run, *TINY_STUDY, "--epochs", "2", "--cuts", "2", "--variants", "BnB")
    assert result.exit_code == 0, result.output
    return run


def _base(run, cache_dir, target="B"):
    _, plan = read_plan(run)
    spec = next(p.spec for p in plan if p.spec.variant == "base" and p.spec.target == target)
    stats = read_run_data(run)
    task = task_data(loaded_dataset(spec.data, str(cache_dir)), list(spec.target_classes), spec.data)
    data = TaskTensors.from_task(task, stats["mean"], stats["std"], torch.device("cpu"))
    weights = Run(run).network(spec.id).weights
    model = build_model(spec)
    load_state(model, load_weights(weights, spec)[0], weights)
    return spec, model, data


def test_resetting_a_layer_to_its_own_trained_weights_changes_nothing(trained_run, cache_dir):
    spec, model, data = _base(trained_run, cache_dir)
    own = evaluate(model, data.test_x, data.test_y, data.normalize, spec.input_size)
    twin = build_model(spec)
    twin.load_state_dict(model.state_dict())
    resets = layer_resets(model, {"self": twin}, data, spec.input_size)
    assert [r["top1"] for r in resets["self"]] == pytest.approx([own] * len(model.layer_names))
    # and the trained network is left as it was
    assert evaluate(model, data.test_x, data.test_y, data.normalize, spec.input_size) == own


def test_a_network_reset_to_its_initial_weights_everywhere_is_the_untrained_network(trained_run, cache_dir):
    spec, model, data = _base(trained_run, cache_dir)
    initial = build_model(spec)
    for k in range(1, len(model.layer_names) + 1):
        model.layer(k).load_state_dict(initial.layer(k).state_dict())
    for a, b in zip(model.state_dict().values(), initial.state_dict().values()):
        assert torch.equal(a, b)  # copied weights: bit identity is right here


def test_random_weights_come_from_another_seed():
    from probe.specs.spec import NetworkSpec

    for seed in (0, 1, 2**32 - 1):
        spec = type("S", (), {"init_seed": seed})()
        assert fresh_seed(spec) != seed and 0 <= fresh_seed(spec) < 2**32
    assert NetworkSpec  # the real spec type has the init_seed field read above


def test_robustness_run_writes_every_base_and_resumes(trained_run, cache_dir):
    result = robustness_run(trained_run, torch.device("cpu"), cache_dir, progress=False)
    assert len(result["written"]) == 2 and not result["untrained"]
    again = robustness_run(trained_run, torch.device("cpu"), cache_dir, progress=False)
    assert again["written"] == [] and len(again["skipped"]) == 2
    _, plan = read_plan(trained_run)
    base = next(p.spec for p in plan if p.spec.name == "baseB")
    record = read_robustness(Run(trained_run).network(base.id).robustness)
    assert len(record["initial"]) == len(record["random"]) == len(record["layers"]) == 8
    assert record["test_acc"] == pytest.approx(json.loads(Run(trained_run).network(base.id).metrics.read_text())
                                               ["test_acc"])
    rob = robustness_dataset(trained_run)
    assert rob.sizes["layer"] == 8 and np.isfinite(rob["acc"]).all()
    share = kept_share(rob)
    above = (rob["base"] > rob["chance"]).broadcast_like(share)
    assert bool(np.isfinite(share).where(above, True).all()) and bool(share.isnull().where(~above, True).all())
    rows = robustness_rows(rob)
    assert {r["reset"] for r in rows} == {"initial", "random"} and len(rows) == 16
    assert all(r["seeds"] == 1 for r in rows)


def test_a_damaged_record_is_named(trained_run, tmp_path):
    bad = tmp_path / "robustness.json"
    bad.write_text("{not json")
    with pytest.raises(ProbeError, match="robustness.json"):
        read_robustness(bad)
    bad.write_text(json.dumps({"layers": "conv1"}))
    with pytest.raises(ProbeError, match="layer resets"):
        read_robustness(bad)


def test_verdicts():
    assert verdict(0.95) == "robust" and verdict(0.3) == "critical" and verdict(0.7) == "in between"
    assert verdict(float("nan")) == ""


def test_the_report_shows_the_resets_once_measured(tmp_path, cli, cache_dir):
    run = tmp_path / "run"
    assert cli("train", run, *TINY_STUDY, "--cuts", "2", "--variants", "BnB").exit_code == 0
    result = cli("analyze", run)
    assert result.exit_code == 0, result.output
    report = (run / "analysis" / "report.md").read_text()
    assert "## Layer re-initialization" in report and f"probe robustness {run}" in report
    assert not (run / "analysis" / "robustness.csv").exists()
    assert cli("robustness", run, "--device", "cpu", "--quiet", "--cache-dir", cache_dir).exit_code == 0
    assert cli("analyze", run).exit_code == 0
    report = (run / "analysis" / "report.md").read_text()
    assert "reset to initial" in report and "figure_robustness_random.png" in report
    import csv

    with (run / "analysis" / "robustness.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert {r["reset"] for r in rows} == {"initial", "random"} and {r["layer"] for r in rows} >= {"conv1", "fc8"}
    assert (run / "analysis" / "figures" / "figure_robustness_random.png").exists()

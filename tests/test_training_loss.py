"""The training loss beside every drop, and what happens at the cut: hand-made metrics with known answers, and
``probe analyze`` on a tiny run, with its records and without them (networks trained before probe recorded them)."""

from __future__ import annotations

import csv
import json
import shutil
from types import SimpleNamespace

import numpy as np
import pytest
import xarray as xr
from conftest import TINY_STUDY, invoke

from probe.analysis.accuracies import RunMetrics
from probe.analysis.decomposition import decompose, summarize
from probe.analysis.report import _boundary_blocks, _training_blocks
from probe.analysis.training import (
    FITS,
    LAYER,
    UNDECIDED,
    UNDERFIT,
    arrange,
    boundary_dataset,
    boundary_rows,
    fit_rows,
    fit_sentence,
    loss_dataset,
)
from probe.architectures.registry import CAFFENET_LAYERS
from probe.planning.plan import Study, make_plan
from probe.specs.spec import ArchSpec, DataSpec
from probe.specs.variants import Variant

CLASSES = [f"class{i}" for i in range(10)]
CUT_POINTS = CAFFENET_LAYERS[:-1]


def _specs(seeds=(0, 1, 2), cuts=(3, 7)):
    study = Study(DataSpec("synthetic"), ArchSpec("caffenet-small", options={"width": 0.125}), seeds=seeds,
                  cuts=cuts)
    return [p.spec for p in make_plan(study, CLASSES, 3, 16)]


def _accuracy(spec) -> float:
    """A co-adaptation drop of 0.05 at every cut: BnB below its base."""
    return 0.8 - (0.05 if Variant.of(spec).name == "BnB" else 0.0) * (spec.cut > 0)


def _boundary(scale=1.0, dead=0.0, **at) -> dict:
    """Every cut point at ``scale`` and ``dead``; ``at``: layer -> (scale, dead) where they differ."""
    return {layer: dict(zip(("scale", "dead"), at.get(layer, (scale, dead)))) for layer in CUT_POINTS}


def _run(specs, loss, accuracy=_accuracy, boundary=None) -> RunMetrics:
    """Finished networks whose final training loss is ``loss(spec)`` (NaN: not recorded), and, with ``boundary``
    (spec -> a boundary record), the cut's records."""
    metrics = {}
    for s in specs:
        last = {"epoch": 2, "val_acc": 0.5, "lr": 0.01}
        if np.isfinite(loss(s)):
            last["train_loss"] = loss(s)
        if boundary:
            last["boundary"] = boundary(s)
        metrics[s.id] = {"id": s.id, "status": "done", "test_acc": accuracy(s), "train_eval_loss": loss(s) - 0.1,
                         "epochs": [{"epoch": 1, "train_loss": 2.0, "val_acc": 0.4, "lr": 0.01}, last]}
    return RunMetrics({}, specs, CAFFENET_LAYERS, metrics)


def _fits(run: RunMetrics) -> dict[int, dict]:
    ds = run.dataset()
    drops = summarize(decompose(ds)["coadaptation"])
    return {r["n"]: r for r in fit_rows(loss_dataset(run, ds), drops)}


def test_a_selffer_that_cannot_fit_its_training_set_underfits():
    rng = np.random.default_rng(0)
    noise = {s.id: rng.normal(scale=0.01) for s in _specs()}
    rows = _fits(_run(_specs(), lambda s: 0.5 + noise[s.id] + (0.3 if Variant.of(s).name == "BnB" else 0.0)))
    assert rows[3]["verdict"] == UNDERFIT and rows[3]["train_loss"].low > 0.2
    assert rows[3]["train_loss"].replicates == 3  # seeds: each the mean of its two directions
    assert rows[3]["train_loss"].mean == pytest.approx(0.3, abs=0.02)
    assert rows[3]["train_eval_loss"].mean == pytest.approx(0.3, abs=0.02)
    sentence = fit_sentence(rows[3])
    assert f"**{UNDERFIT}**" in sentence and "optimization difficulty" in sentence and "(conv3)" in sentence


def test_a_selffer_that_fits_as_well_as_its_base_does_not_underfit():
    rows = _fits(_run(_specs(), lambda s: 0.5))
    assert rows[3]["verdict"] == FITS and rows[3]["train_loss"].mean == 0.0
    sentence = fit_sentence(rows[3])
    assert f"**{FITS}**" in sentence and "generalizes worse" in sentence


def test_a_difference_whose_interval_spans_zero_is_undecided():
    swing = {0: 0.1, 1: -0.1, 2: 0.05}  # BnB above its base in two seeds, below in one

    def loss(s):
        return 0.5 + (swing[s.split_seed] if Variant.of(s).name == "BnB" else 0.0)

    rows = _fits(_run(_specs(), loss))
    assert rows[3]["verdict"] == UNDECIDED and rows[3]["train_loss"].low < 0 < rows[3]["train_loss"].high
    assert f"**{UNDECIDED}**" in fit_sentence(rows[3]) and "spans 0" in fit_sentence(rows[3])
    one_seed = _fits(_run(_specs(seeds=(0,)), lambda s: 0.5 + 0.3 * (Variant.of(s).name == "BnB")))
    assert one_seed[3]["verdict"] == UNDECIDED and "no interval" in fit_sentence(one_seed[3])


def test_only_cuts_with_a_positive_co_adaptation_drop_get_a_sentence():
    def accuracy(s):  # BnB loses 0.05 at n = 3, gains 0.01 at n = 7
        return 0.8 + {"BnB": {3: -0.05, 7: 0.01}}.get(Variant.of(s).name, {}).get(s.cut, 0.0)

    assert set(_fits(_run(_specs(), lambda s: 0.5, accuracy))) == {3}


def test_the_cut_shows_where_scale_or_dead_units_differ_from_the_base():
    def boundary(s):
        name = Variant.of(s).name
        if name == "RnB" and s.cut == 3:
            return _boundary(conv3=(2.0, 0.0))  # twice the base's scale at layer n
        if name == "BnB+" and s.cut == 3:
            return _boundary(conv4=(1.0, 0.25))  # a quarter of layer n+1's units dead
        if name == "AnB" and s.cut == 3:
            return _boundary(conv3=(1.2, 0.03))  # within both bounds
        return _boundary()

    run = _run(_specs(), lambda s: 0.5, boundary=boundary)
    rows = {(r["variant"], r["n"]): r for r in boundary_rows(boundary_dataset(run, run.dataset()))}
    assert {k for k, r in rows.items() if r["differs"]} == {("RnB", 3), ("BnB+", 3)}
    assert rows[("RnB", 3)]["scale"] == 2.0 and rows[("RnB", 3)]["base_scale"] == 1.0
    assert rows[("BnB+", 3)]["next_layer"] == "conv4" and rows[("BnB+", 3)]["dead_next"] == 0.25
    assert rows[("BnB", 7)]["next_layer"] == "" and np.isnan(rows[("BnB", 7)]["dead_next"])  # fc8 is no cut point


def test_networks_of_variants_it_does_not_know_are_left_out():
    specs = _specs(seeds=(0,))
    run = _run(specs, lambda s: 0.5)
    ds = run.dataset()
    base = next(s for s in specs if s.variant == "base")
    longer = SimpleNamespace(id="longer", split=base.split, split_seed=base.split_seed, init_seed=base.init_seed,
                             target=base.target, cut=0, variant="long-base", fine_tune=False)
    unknown = SimpleNamespace(**{**vars(longer), "id": "unknown", "variant": "no-such-family"})
    base_values, acc_values = arrange([*specs, longer, unknown], {"longer": 9.0, "unknown": 9.0}, ds)
    assert np.isnan(base_values).all() and np.isnan(acc_values).all()


def test_metrics_without_the_records_say_so():
    specs = _specs(seeds=(0, 1))
    run = _run(specs, lambda s: np.nan)
    ds = run.dataset()
    losses = loss_dataset(run, ds)
    blocks, figures = _training_blocks(run, ds, losses, [], None, False)
    assert figures == [] and [b.text for b in blocks[1:]] == ["No finished network recorded a training loss."]
    blocks, figures = _boundary_blocks(run, ds, None, False)
    (line,) = blocks[1:]
    assert figures == []
    assert "predate" in line.text


# ------------------------------------------------------------------------------------------------ probe analyze


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, cache_dir):
    """Two epochs of baseA/baseB, BnB and RnB at n = 1 and 7 (fc7, the last cut point), one seed."""
    run = tmp_path_factory.mktemp("training-loss") / "run"
    result = invoke(cache_dir, "train", run, *TINY_STUDY, "--epochs", "2", "--cuts", "1,7", "--variants", "BnB,RnB")
    assert result.exit_code == 0, result.output
    return run


def _analyze(cache_dir, run):
    result = invoke(cache_dir, "analyze", run)
    assert result.exit_code == 0, result.output
    out = run / "analysis"
    with (out / "accuracies.csv").open() as f:
        table = list(csv.DictReader(f))
    return out, table, xr.open_zarr(out / "accuracies.zarr").load(), (out / "report.md").read_text()


def test_analyze_puts_the_losses_beside_the_accuracies(tiny_run, cache_dir, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    out, table, stored, md = _analyze(cache_dir, run)
    for name in ("base_train_loss", "train_loss", "base_train_eval_loss", "train_eval_loss"):
        assert stored[name].attrs["description"]
    assert stored["train_loss"].dims == stored["acc"].dims and stored["base_train_loss"].dims == stored["base"].dims
    assert np.isfinite(stored["base_train_loss"]).all() and np.isfinite(stored["train_loss"].sel(variant="BnB")).all()
    assert {"train_loss", "train_eval_loss"} <= set(table[0]) and len(table) == 2 + 2 * 2 * 2
    metrics = {json.loads(p.read_text())["name"]: json.loads(p.read_text()) for p in run.rglob("metrics.json")}
    row = next(r for r in table if r["variant"] == "BnB" and r["n"] == "7" and r["target"] == "B")
    assert float(row["train_loss"]) == pytest.approx(metrics["B7B"]["epochs"][-1]["train_loss"])
    for suffix in ("png", "svg"):
        assert (out / "figures" / f"training_loss_random.{suffix}").exists()
    assert "## Training loss" in md and "![training_loss_random](figures/training_loss_random.png)" in md
    assert "## At the cut" in md


def test_old_metrics_without_the_new_records_still_analyze(tiny_run, cache_dir, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    for path in run.rglob("metrics.json"):
        m = json.loads(path.read_text())
        for key in ("train_eval_loss", "train_eval_acc", "test_loss", "boundary_initial"):
            m.pop(key, None)
        m["epochs"] = [{k: v for k, v in e.items() if k not in ("val_loss", "boundary")} for e in m["epochs"]]
        path.write_text(json.dumps(m))
    out, table, stored, md = _analyze(cache_dir, run)
    assert np.isnan(stored["train_eval_loss"]).all() and np.isfinite(stored["base_train_loss"]).all()
    assert all(r["train_eval_loss"] == "nan" for r in table)
    at_cut = md[md.index("## At the cut"):]
    assert "predate" in at_cut.split("\n\n")[1]
    assert "predate the loss on the whole training set" in md
    assert (out / "figures" / "training_loss_random.png").exists()


def test_the_boundary_layer_dim_follows_the_cut_points():
    run = _run(_specs(seeds=(0,)), lambda s: 0.5, boundary=lambda s: _boundary())
    b = boundary_dataset(run, run.dataset())
    assert list(b[LAYER].values) == list(CUT_POINTS) and float(b["base_scale"].max()) == 1.0

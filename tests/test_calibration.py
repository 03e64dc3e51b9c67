"""The instrument, calibrated: independent initial weights by default (shared as a control), a convergence check that
can fail (longer bases), and what happens at the cut recorded per epoch."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
import xarray as xr
from conftest import TINY_STUDY, assert_one_line_error

from probe.analysis.accuracies import build_dataset, read_run_metrics
from probe.analysis.sanity import LONGER_GAIN, convergence_note, init_note, longer_findings, longer_gains
from probe.architectures.build import build_model
from probe.planning.plan import Study, make_plan, read_plan
from probe.specs.spec import SEED_LIMIT, ArchSpec, DataSpec, NetworkSpec, Recipe
from probe.storage.checkpoint import load_tensors
from probe.storage.run import Run

# A learning rate that moves no weight measurably: trained networks keep the weights they started from
FROZEN_LR = ["--lr", "1e-12", "--warmup", "0", "--weight-decay", "0"]
# One cut, the selffer alone: the fewest networks that show what each one starts from
SMALL = [*TINY_STUDY, "--cuts", "2", "--variants", "BnB,AnB"]


def _weights(run_dir, nid):
    return load_tensors(Run(run_dir).network(f"random-s0/init0/{nid}").weights)[0]


def _upper(state, first_layer):
    """The tensors of layers ``first_layer``.. of a caffenet-small state dict (stages conv1..fc8)."""
    layers = ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"][first_layer - 1:]
    return {k: v for k, v in state.items() if any(k.startswith(f"stages.{name}.") for name in layers)}


def _differ(a, b):
    return any(not torch.equal(a[k], b[k]) for k in a)


def _spec(**kw):
    base = dict(data=DataSpec("synthetic"), split="random", split_seed=0, target="B", classes_a=("x", "y"),
                classes_b=("p", "q"), arch=ArchSpec("caffenet-small", "kaiming", {"width": 0.125}), in_channels=1,
                input_size=16)
    return NetworkSpec(**{**base, **kw})


# ------------------------------------------------------------------------------------------- initial weights


def test_independent_seeds_differ_per_network_and_are_reproducible():
    specs = [_spec(), _spec(target="A"), _spec(variant="selffer", source="B", cut=2),
             _spec(variant="selffer", source="B", cut=3), _spec(variant="selffer", source="B", cut=2, fine_tune=True),
             _spec(variant="transfer", source="A", cut=2), _spec(variant="random", cut=2)]
    seeds = [s.weight_seed for s in specs]
    assert len(set(seeds)) == len(seeds)
    assert all(0 <= s < SEED_LIMIT for s in seeds)
    assert [s.weight_seed for s in specs] == seeds  # a property of the spec alone
    # another replicate draws other seeds; the split does not enter (a fixed split's replicate k starts as seed k's)
    assert _spec(init_seed=1).weight_seed != _spec().weight_seed
    assert _spec(split="vehicles-animals", split_seed=None).weight_seed == _spec().weight_seed


def test_shared_control_is_the_replicate_seed():
    shared = Recipe(init_sharing="shared")
    assert {_spec(recipe=shared, init_seed=5).weight_seed,
            _spec(recipe=shared, init_seed=5, target="A").weight_seed,
            _spec(recipe=shared, init_seed=5, variant="selffer", source="B", cut=2).weight_seed} == {5}


def test_a_spec_stored_before_the_choice_reads_as_shared():
    d = _spec().to_dict()
    assert d["recipe"]["init_sharing"] == "independent"
    del d["recipe"]["init_sharing"]
    old = NetworkSpec.from_dict(d)
    assert old.recipe.init_sharing == "shared" and old.weight_seed == old.init_seed


def test_independent_by_default_networks_start_apart(tmp_path, cli):
    """With a learning rate that moves nothing, every network ends where it started: baseA and baseB differ, BnB's
    re-initialized layers differ from its base's start, and its copied layers are its base's, bit for bit."""
    run = tmp_path / "run"
    result = cli("train", run, *SMALL, *FROZEN_LR)
    assert result.exit_code == 0, result.output
    base_a, base_b, bnb, anb = (_weights(run, n) for n in ("baseA", "baseB", "B2B", "A2B"))
    assert _differ(_upper(base_a, 1), _upper(base_b, 1))
    assert _differ(_upper(bnb, 3), _upper(base_b, 3))
    assert _differ(_upper(anb, 3), _upper(base_b, 3))  # AnB's new top is not baseB's initial top either
    copied = {k: v for k, v in bnb.items() if k not in _upper(bnb, 3)}
    assert copied and all(torch.equal(v, base_b[k]) for k, v in copied.items())
    assert "Initial weights: independent" in result.output


def test_shared_control_starts_every_network_alike(tmp_path, cli):
    run = tmp_path / "run"
    result = cli("train", run, *SMALL, *FROZEN_LR, "--init-sharing", "shared")
    assert result.exit_code == 0, result.output
    base_a, base_b, bnb = (_weights(run, n) for n in ("baseA", "baseB", "B2B"))
    # the classifiers have as many outputs (two classes a task), so every tensor compares; at lr 1e-12 equal up to
    # the one step's rounding, far below the O(0.1) of two draws
    for k, v in base_a.items():
        torch.testing.assert_close(v, base_b[k], rtol=0, atol=1e-9)
        torch.testing.assert_close(bnb[k], base_b[k], rtol=0, atol=1e-9)
    assert "Initial weights: shared" in result.output
    study, plan = read_plan(run)
    assert study.recipe.init_sharing == "shared" and all(p.spec.recipe.init_sharing == "shared" for p in plan)


def test_a_run_planned_before_keeps_shared(tmp_path, cli):
    """A plan.json without the field (an earlier probe's) resumes as shared, and its report says so."""
    run = tmp_path / "run"
    assert cli("train", run, *SMALL, "--init-sharing", "shared").exit_code == 0
    path = Run(run).plan
    d = json.loads(path.read_text())
    del d["study"]["recipe"]["init_sharing"]
    for n in d["networks"]:
        del n["spec"]["recipe"]["init_sharing"]
    path.write_text(json.dumps(d))
    result = cli("train", run)  # no options: resumes its own plan, everything already done
    assert result.exit_code == 0, result.output
    assert "already done 6" in result.output and "Initial weights: shared" in result.output
    # the same options under the new default are another plan: refused, naming the difference
    assert_one_line_error(cli("train", run, *SMALL), "init_sharing")


# ---------------------------------------------------------------------------------------- the convergence check


def test_convergence_check_plans_longer_bases(synthetic_classes):
    study = Study(DataSpec("synthetic"), ArchSpec("caffenet-small", options={"width": 0.125}),
                  Recipe(epochs=3, warmup=0.2, schedule="cosine"), cuts=(2,), variants=("BnB",),
                  convergence_factor=3)
    plan = make_plan(study, synthetic_classes, 1, 16)
    longer = [p.spec for p in plan if p.spec.variant == "long-base"]
    assert [s.name for s in longer] == ["baseA-long", "baseB-long"]
    assert all(s.recipe.epochs == 9 and s.recipe.warmup == 0.2 for s in longer)
    base_b = next(p.spec for p in plan if p.spec.name == "baseB")
    # the longer base starts where its base does: the two differ only in their budget
    assert longer[1].weight_seed == base_b.weight_seed
    assert all(torch.equal(a, b) for a, b in zip(build_model(longer[1]).state_dict().values(),
                                                 build_model(base_b).state_dict().values()))
    assert "convergence_factor" not in Study(DataSpec("synthetic"), ArchSpec("caffenet-small")).to_dict()
    with pytest.raises(ValueError, match="convergence factor 1"):
        Study(DataSpec("synthetic"), ArchSpec("caffenet-small"), convergence_factor=1)


def _accuracies(base, base_long):
    """An accuracy Dataset of one split, three seeds and both directions, with longer bases."""
    reps = ["s0/init0", "s1/init1", "s2/init2"]
    ds = xr.Dataset({"base": (("split", "replicate", "target"), np.array(base, float)[None]),
                     "base_long": (("split", "replicate", "target"), np.array(base_long, float)[None])},
                    coords={"split": ["random"], "replicate": reps, "target": ["A", "B"]})
    ds.attrs["study"] = json.dumps({"convergence_factor": 2, "recipe": {"init_sharing": "independent"}})
    return ds


def test_longer_bases_that_gain_say_not_converged():
    base = [[0.60, 0.62], [0.61, 0.59], [0.58, 0.60]]
    gained = _accuracies(base, [[a + 0.05 + 0.01 * i for a in row] for i, row in enumerate(base)])
    gain = longer_gains(gained)["random"]
    assert gain.replicates == 3 and gain.mean == pytest.approx(0.06)
    found = longer_findings(gained)
    assert len(found) == 1 and found[0].check == "not-converged" and "2 times as long" in found[0].text
    assert "Convergence, checked" in convergence_note(gained)
    flat = _accuracies(base, [[a + 0.002 for a in row] for row in base])
    assert longer_findings(flat) == [] and longer_gains(flat)["random"].mean < LONGER_GAIN
    unfinished = _accuracies(base, [[np.nan, np.nan]] * 3)
    assert [f.check for f in longer_findings(unfinished)] == ["convergence-check"]


def test_longer_bases_at_chance_are_left_out_of_the_check():
    """A longer base that never trained gains nothing over a base that did not either, and loses everything against
    one that did: counted, either would pass the check without measuring convergence. A base at chance beside a
    longer base that learned stays in, the plainest "not converged" (5 classes: near chance below 0.28)."""
    base = [[0.60, 0.20], [0.61, 0.59], [0.20, 0.60]]
    ds = _accuracies(base, [[0.66, 0.20], [0.66, 0.64], [0.20, 0.66]])
    ds["chance"] = (("split", "target"), np.full((1, 2), 0.2))
    ds["classes"] = (("split", "target"), np.full((1, 2), 5))
    assert longer_gains(ds.drop_vars(["chance", "classes"]))["random"].mean < 0.04  # dead pairs counted as 0
    gain = longer_gains(ds)["random"]
    assert gain.replicates == 3 and gain.mean == pytest.approx((0.06 + 0.05 + 0.06) / 3)
    found = longer_findings(ds)
    assert [f.check for f in found] == ["not-converged"] and "2 pairs with the longer base at chance" in found[0].text
    assert "2 pairs with the longer base at chance left out" in convergence_note(ds)
    died = _accuracies([[0.60, 0.62]] * 3, [[0.25, 0.70]] * 3)  # one longer base near chance in each seed
    died["chance"], died["classes"] = ds["chance"], ds["classes"]
    assert longer_gains(died)["random"].mean == pytest.approx(0.08)
    assert [f.check for f in longer_findings(died)] == ["not-converged"]
    late = _accuracies([[0.20, 0.62]] * 3, [[0.65, 0.62]] * 3)  # a base still at chance that learns when longer
    late["chance"], late["classes"] = ds["chance"], ds["classes"]
    assert longer_gains(late)["random"].mean == pytest.approx(0.225) and "left out" not in convergence_note(late)
    dead = _accuracies([[0.20, 0.21]] * 3, [[0.20, 0.20]] * 3)
    dead["chance"], dead["classes"] = ds["chance"], ds["classes"]
    found = longer_findings(dead)
    assert [f.check for f in found] == ["convergence-check"] and "at or near chance (6 networks)" in found[0].text
    assert "unchecked" in convergence_note(dead)
    # bases unfinished beside live longer bases: unfinished, not "every longer base at chance"
    waiting = _accuracies([[np.nan, 0.20]] * 3, [[0.66, 0.20]] * 3)
    waiting["chance"], waiting["classes"] = ds["chance"], ds["classes"]
    found = longer_findings(waiting)
    assert [f.check for f in found] == ["convergence-check"] and "not finished" in found[0].text


def test_without_the_check_the_report_says_what_was_not_checked():
    ds = _accuracies([[0.6, 0.6]] * 3, [[0.6, 0.6]] * 3).drop_vars("base_long")
    assert longer_findings(ds) == []
    note = convergence_note(ds)
    assert "not run" in note and "--check-convergence" in note and "weak" in note
    assert "independent" in init_note(ds)


def test_a_short_schedule_fails_the_check_end_to_end(tmp_path, cli):
    """One epoch is far from converged on the synthetic task: the bases trained six times as long gain (about 0.3),
    and analyze says 'not converged' from them."""
    run = tmp_path / "run"
    result = cli("train", run, *SMALL, "--variants", "BnB", "--seeds", "0,1", "--schedule", "constant",
                 "--check-convergence", "--convergence-factor", "6")
    assert result.exit_code == 0, result.output
    metrics = read_run_metrics(run)
    assert sorted(s.name for s in metrics.longer) == ["baseA-long", "baseA-long", "baseB-long", "baseB-long"]
    assert all(len(metrics.metrics[s.id]["epochs"]) == 6 for s in metrics.longer)
    assert "baseB-long" not in str(metrics.dataset()["acc"].coords["variant"].values)
    gain = longer_gains(metrics.dataset())["random"]
    assert gain.mean > LONGER_GAIN, gain
    assert "not converged" in result.output
    # the longer bases are no part of the protocol: extraction leaves them out, and the analysis reads them apart
    extracted = cli("extract", run, "--per-class", "5", "--quiet")
    assert extracted.exit_code == 0 and "wrote 8" in extracted.output, extracted.output
    analyzed = cli("analyze", run)
    assert analyzed.exit_code == 0, analyzed.output
    report = (run / "analysis" / "report.md").read_text()
    assert "not converged" in report and "Convergence, checked" in report
    # what each null could have seen, from this run's own two seeds, where the user reads it
    assert "Sensitivity of the co-adaptation drop" in report and "at 2 seeds" in report
    assert "excludes a drop of" in report and "Sensitivity of the co-adaptation drop" in result.output
    for figure in ("training_loss_random", "boundary_random"):  # the training loss and the cut, per epoch
        assert (run / "analysis" / "figures" / f"{figure}.png").exists() and f"figures/{figure}.png" in report
    assert xr.open_zarr(run / "analysis" / "accuracies.zarr")["base_long"].notnull().all()


def test_check_options_are_refused_alone(tmp_path, cli):
    assert_one_line_error(cli("train", tmp_path / "r", *SMALL, "--convergence-factor", "3"), "--convergence-factor 3")
    assert_one_line_error(cli("plan", *SMALL, "--check-convergence", "--convergence-factor", "1"),
                          "convergence factor 1")


def test_dataset_keeps_longer_bases_apart():
    specs = [_spec(target=t) for t in "AB"] + [_spec(target=t, variant="long-base") for t in "AB"]
    ds = build_dataset(specs, {s.id: 0.5 + 0.1 * (s.variant == "long-base") for s in specs},
                       layers=("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8"))
    assert float(ds["base_long"].mean() - ds["base"].mean()) == pytest.approx(0.1)


# ------------------------------------------------------------------------------------------------- at the cut


def test_cut_records_and_losses_in_metrics(tmp_path, cli):
    run = tmp_path / "run"
    assert cli("train", run, *SMALL, "--variants", "BnB", "--epochs", "2").exit_code == 0
    metrics = read_run_metrics(run).metrics
    cut_points = ["conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7"]
    for nid, m in metrics.items():
        assert set(m["boundary_initial"]) == set(cut_points), nid
        for epoch in m["epochs"]:
            assert set(epoch["boundary"]) == set(cut_points) and np.isfinite(epoch["val_loss"])
            for record in epoch["boundary"].values():
                assert record["scale"] >= 0 and 0 <= record["dead"] <= 1
        assert np.isfinite(m["train_eval_loss"]) and 0 <= m["train_eval_acc"] <= 1 and np.isfinite(m["test_loss"])
    # BnB starts with its base's trained layers 1..2: at conv1 and conv2 it hands on what its base hands on
    bnb, base = metrics["random-s0/init0/B2B"], metrics["random-s0/init0/baseB"]
    for layer in ("conv1", "conv2"):
        assert bnb["boundary_initial"][layer]["scale"] == pytest.approx(base["epochs"][-1]["boundary"][layer]["scale"],
                                                                        rel=1e-4)


def test_boundary_counts_dead_units():
    from probe.execution.train import boundary

    class Two(torch.nn.Module):
        def forward_intermediates(self, x):
            return None, {"relu": torch.relu(x), "tokens": x.reshape(len(x), 2, -1)}

        def train(self, mode=True):
            return self

    x = torch.randn(64, 4, 3, 3)
    x[:, 1] = -1.0  # channel 1 never positive: dead
    out = boundary(Two(), x)
    assert out["relu"]["dead"] == pytest.approx(0.25)
    assert out["relu"]["scale"] == pytest.approx(float(torch.relu(x).pow(2).mean().sqrt()))
    assert 0 <= out["tokens"]["dead"] <= 1


def test_every_null_says_what_it_could_have_seen():
    """The sensitivity note: per cut, the drop, the smallest drop its seeds detect at their own spread (smaller with
    less scatter), and what it excludes once the longer bases bound the bases' bias (drop's upper + gain's upper)."""
    from probe.analysis.sanity import sensitivity, sensitivity_note
    from probe.analysis.stats import detection_limit

    base = [[0.60, 0.62], [0.61, 0.59], [0.58, 0.60]]
    ds = _accuracies(base, [[a + 0.01 for a in row] for row in base])
    bnb = np.array(base)[:, :, None, None] - np.array([0.00, 0.01, 0.02])[:, None, None, None]
    ds["acc"] = (("split", "replicate", "target", "n", "variant"), bnb[None])
    ds = ds.assign_coords(n=[5], variant=["BnB"])
    found = sensitivity(ds)[("random", 5)]
    assert found["drop"].mean == pytest.approx(0.01) and found["spread"] == pytest.approx(0.01)
    assert found["limit"] == pytest.approx(detection_limit(0.01, 3)) and found["limit_5"] < found["limit"]
    gain = longer_gains(ds)["random"]
    assert found["excluded"] == pytest.approx(found["drop"].high + gain.high)
    note = sensitivity_note(ds)
    assert "random n=5" in note and "at 3 seeds" in note and "excludes a drop of" in note
    unchecked = sensitivity_note(ds.drop_vars("base_long"))
    assert "excludes nothing" in unchecked
    tighter = ds.copy()
    tighter["acc"] = ds["acc"] * 0 + (np.array(base)[None, :, :, None, None] - 0.01)
    assert sensitivity(tighter)[("random", 5)]["spread"] == pytest.approx(0)
    assert sensitivity_note(ds.assign_coords(variant=["AnB"])) is None  # no selffer planned: nothing to say

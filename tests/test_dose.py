"""The positive control's dose: a function-preserving rescale of the copied layer n (probe.specs.dose,
probe.architectures.rescale), planned, named, trained and tabled."""

from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
from conftest import TINY_STUDY, assert_one_line_error
from torch import nn

from probe.analysis.accuracies import accuracy_dataset
from probe.architectures import build_model
from probe.architectures.layered import LayeredNet
from probe.architectures.rescale import apply_dose, channel_factors, compensate_next, dose_sites, scale_layer
from probe.errors import ProbeError
from probe.execution.train import prepare_model
from probe.planning.plan import Study, read_plan
from probe.specs.dose import Dose, parse_doses
from probe.specs.spec import ArchSpec, DataSpec, NetworkSpec
from probe.storage.checkpoint import load_weights
from probe.storage.run import Run

ARCH = ArchSpec("caffenet-small", init="kaiming", options={"width": 0.125, "dropout": 0.5})


def _spec(**kw) -> NetworkSpec:
    base = dict(data=DataSpec("synthetic"), split="random", split_seed=0, target="B", arch=ARCH,
                classes_a=("a", "b"), classes_b=("c", "d", "e"), input_size=32)
    return NetworkSpec(**{**base, **kw})


# --- doses as text ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("text, factor, per_channel, label, path", [
    ("10", 10.0, False, "×10", "x10"), ("1/10", 0.1, False, "×0.1", "x0.1"), ("0.1", 0.1, False, "×0.1", "x0.1"),
    ("~30", 30.0, True, "×~30", "x~30"), (" 3 ", 3.0, False, "×3", "x3")])
def test_doses_parse_and_name(text, factor, per_channel, label, path):
    d = Dose.parse(text)
    assert (d.factor, d.per_channel, d.label, d.path_label) == (factor, per_channel, label, path)
    assert Dose.parse(d.text) == d


def test_a_dose_of_one_is_no_dose():
    assert Dose.parse("1") is None and Dose.parse("2/2") is None
    assert parse_doses(["1", "10", "1.0"]) == ("10",)


@pytest.mark.parametrize("text, culprit", [("0", "dose 0.0"), ("-3", "dose -3.0"), ("ten", "'ten'"),
                                           ("1/0", "'1/0'"), ("inf", "inf"), ("~1", "~1"), ("~0.5", "~0.5")])
def test_bad_doses_are_refused_by_name(text, culprit):
    with pytest.raises(ProbeError, match="dose") as e:
        Dose.parse(text)
    assert culprit in str(e.value) and "\n" not in str(e.value)


# --- specs: names, ids, round trips -----------------------------------------------------------------------------------

def test_a_dosed_selffer_is_named_and_keeps_its_plain_forms_seed_and_parent():
    plain = _spec(variant="selffer", source="B", cut=5)
    dosed = dataclasses.replace(plain, dose=Dose(10))
    assert (dosed.name, dosed.variant_label, dosed.id) == ("B5B×10", "BnB×10", "random-s0/init0/B5Bx10")
    assert dataclasses.replace(plain, dose=Dose(30, True)).name == "B5B×~30"
    assert dataclasses.replace(plain, fine_tune=True, dose=Dose(0.1)).name == "B5B+×0.1"
    assert dosed.weight_seed == plain.weight_seed and dosed.parent == plain.parent
    assert NetworkSpec.from_dict(json.loads(dosed.to_json())) == dosed
    assert "dose" not in plain.to_dict()  # an undosed spec reads as it did before doses existed


@pytest.mark.parametrize("kw", [dict(), dict(variant="random", cut=5)])
def test_only_networks_copying_from_a_base_take_a_dose(kw):
    with pytest.raises(ProbeError, match="only BnB, BnB\\+, AnB and AnB\\+ take one"):
        _spec(dose=Dose(10), **kw)


# --- the rescale preserves the function -------------------------------------------------------------------------------

@pytest.mark.parametrize("cut", [3, 4, 5, 6, 7])
@pytest.mark.parametrize("dose", [Dose(10), Dose(0.1), Dose(30, True)])
def test_the_compensated_network_computes_the_same_logits(cut, dose):
    """Layer n × α and layer n+1 ÷ α: the same logits up to float rounding (ReLU and max-pooling commute with a
    positive scale), while layer n's own output is α times the base's."""
    model = build_model(_spec()).eval()
    x = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        before, mids = model.forward_intermediates(x, [cut])
        factors = apply_dose(model, cut, dose, seed=7)
        _, scaled = model.forward_intermediates(x, [cut])
        compensate_next(model, cut, factors)
        after = model(x)
    name = model.layer_names[cut - 1]
    shape = (1, -1) + (1,) * (mids[name].dim() - 2)
    expected = mids[name] * factors.reshape(shape)
    torch.testing.assert_close(scaled[name], expected, rtol=1e-4, atol=1e-5 * expected.abs().max().item())
    torch.testing.assert_close(after, before, rtol=1e-4, atol=1e-4 * before.abs().max().item())
    assert not torch.allclose(scaled[name], mids[name])  # the dose did something


def test_a_grouped_convolution_after_the_cut_is_compensated_group_by_group():
    layers = LayeredNet([("one", nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.MaxPool2d(2))),
                         ("two", nn.Sequential(nn.Conv2d(8, 4, 3, groups=2), nn.ReLU(), nn.Flatten(),
                                               nn.LazyLinear(2)))])
    x = torch.randn(4, 3, 12, 12, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        before = layers(x)
        factors = channel_factors(Dose(10, True), 8, seed=3)
        scale_layer(layers, 1, factors)
        compensate_next(layers, 1, factors)
        torch.testing.assert_close(layers(x), before, rtol=1e-4, atol=1e-5)


def test_per_channel_factors_are_log_uniform_and_seeded():
    f = channel_factors(Dose(30, True), 4000, seed=5)
    assert torch.equal(f, channel_factors(Dose(30, True), 4000, seed=5))
    assert not torch.equal(f, channel_factors(Dose(30, True), 4000, seed=6))
    assert f.min() >= 1 / 30 and f.max() <= 30
    logs = torch.log(f) / math.log(30)
    assert abs(logs.mean().item()) < 0.05 and abs((logs.abs() < 0.5).float().mean().item() - 0.5) < 0.05


@pytest.mark.parametrize("stages, culprit", [
    ([("one", nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU())),
      ("two", nn.Sequential(nn.Flatten(), nn.LazyLinear(2)))], "one.1 (BatchNorm2d)"),
    ([("one", nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.LocalResponseNorm(3))),
      ("two", nn.Sequential(nn.Flatten(), nn.LazyLinear(2)))], "one.2 (LocalResponseNorm)"),
    ([("one", nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())),
      ("two", nn.Sequential(nn.BatchNorm2d(4), nn.Flatten(), nn.LazyLinear(2)))], "two.0 (BatchNorm2d)"),
    ([("one", nn.Sequential(nn.Conv2d(3, 4, 3), nn.Tanh())),
      ("two", nn.Sequential(nn.Flatten(), nn.LazyLinear(2)))], "one.1 (Tanh)"),
    ([("one", nn.Conv2d(3, 4, 3)), ("two", nn.Sequential(nn.Flatten(), nn.LazyLinear(2)))], "is a Conv2d, not a plain"),
])
def test_cuts_a_rescale_would_change_are_refused_naming_the_module(stages, culprit):
    net = LayeredNet(stages)
    with pytest.raises(ProbeError) as e:
        dose_sites(net, 1)
    assert culprit in str(e.value)


# --- planned, trained, tabled -----------------------------------------------------------------------------------------

def test_plan_refuses_doses_at_cuts_with_lrn_and_without_a_copying_variant(cli):
    assert_one_line_error(cli("plan", *TINY_STUDY, "--cuts", "1", "--variants", "BnB", "--dose", "10"),
                          "LocalResponseNorm", "layer 1")
    assert_one_line_error(cli("plan", *TINY_STUDY, "--cuts", "5", "--variants", "RnB", "--dose", "10"),
                          "doses 10", "RnB")
    assert_one_line_error(cli("plan", *TINY_STUDY, "--cuts", "5", "--variants", "BnB", "--dose", "0"), "dose 0")


def test_plan_shows_the_dose(cli):
    result = cli("plan", *TINY_STUDY, "--cuts", "5", "--variants", "BnB", "--dose", "10,~30", "--dose", "1")
    assert result.exit_code == 0, result.output
    lines = [line for line in result.output.splitlines() if "B5B" in line or "A5A" in line]
    assert len(lines) == 6  # a dose of 1 is the plain selffer, planned once
    assert any("B5Bx10" in line and "conv5 x 10" in line for line in lines)
    assert any("B5Bx~30" in line and "[1/30, 30]" in line for line in lines)


@pytest.fixture(scope="module")
def dosed_run(tmp_path_factory, cache_dir):
    from conftest import invoke

    run_dir = tmp_path_factory.mktemp("dosed")
    result = invoke(cache_dir, "train", run_dir, *TINY_STUDY, "--cuts", "5", "--variants", "BnB,AnB",
                    "--dose", "10", "--dose", "~30", "--split", "random")
    assert result.exit_code == 0, result.output
    return run_dir


def test_dosed_networks_train_with_their_frozen_layers_the_bases_but_layer_n_scaled(dosed_run):
    study, plan = read_plan(dosed_run)
    assert study.doses == ("10", "~30")
    specs = {p.spec.name: p.spec for p in plan}
    assert {"B5B", "B5B×10", "B5B×~30", "A5B", "A5B×10", "A5B×~30"} <= set(specs)
    for name in ("B5B×10", "A5B×~30"):
        spec = specs[name]
        base, _, _ = load_weights(Run(dosed_run).network(spec.parent.id).weights, spec.parent)
        trained, _, _ = load_weights(Run(dosed_run).network(spec.id).weights, spec)
        model = build_model(spec)
        scaled, _ = dose_sites(model, spec.cut)
        factors = channel_factors(spec.dose, scaled.weight.shape[0], spec.weight_seed)
        for key in model.prefix_state(spec.cut):
            if key.startswith("stages.conv5.0."):
                shape = (-1,) + (1,) * (base[key].dim() - 1)
                torch.testing.assert_close(trained[key], base[key] * factors.reshape(shape), rtol=1e-6, atol=0)
            else:
                assert torch.equal(trained[key], base[key]), key


def test_a_dose_of_one_is_the_plain_network_bit_for_bit(dosed_run):
    _, plan = read_plan(dosed_run)
    plain = next(p.spec for p in plan if p.spec.name == "B5B")
    model = prepare_model(plain, dosed_run)
    again = prepare_model(dataclasses.replace(plain, dose=Dose.parse("1")), dosed_run)
    for (k, a), b in zip(model.state_dict().items(), again.state_dict().values()):
        assert torch.equal(a, b), k


def test_dosed_networks_are_variants_of_their_own_in_the_accuracy_table(dosed_run):
    ds, missing = accuracy_dataset(dosed_run)
    assert not missing
    variants = list(ds["variant"].values)
    assert variants[:2] == ["BnB", "BnB+"] and {"BnB×10", "BnB×~30", "AnB×10", "AnB×~30"} <= set(variants)
    assert ds["acc"].sel(variant="BnB×10", n=5).notnull().all()
    assert not ds["acc"].sel(variant="BnB", n=5).equals(ds["acc"].sel(variant="BnB×10", n=5))


def test_a_study_with_doses_round_trips_through_its_plan(dosed_run):
    study, _ = read_plan(dosed_run)
    assert Study(**{**{f: getattr(study, f) for f in ("data", "arch", "recipe", "splits", "seeds", "cuts",
                                                      "variants", "doses")}}).doses == ("10", "~30")


# --- the control's collector and its verdicts -------------------------------------------------------------------------

def _rows(drop=(0.03, 0.01, 0.05), vs=(-0.03, -0.05, -0.01), loss=(0.1, 0.05, 0.15), up=9, chance=0, n=5):
    row = {"n": n, "loss_up": up, "directions": 10, "at_chance": chance}
    for prefix, (m, lo, hi) in (("drop_", drop), ("vs_plain_", vs), ("loss_diff_", loss)):
        row |= {f"{prefix}mean": m, f"{prefix}low": lo, f"{prefix}high": hi, f"{prefix}seeds": 5}
    return [row]


@pytest.mark.parametrize("kw, seeds, failed, expected", [
    ({}, 5, [], "passes"),
    ({}, 1, [], "kept"),
    (dict(chance=2), 1, [], "dropped: 2 at chance"),
    ({}, 1, ["s0/B5Bx30"], "dropped: diverged (s0/B5Bx30)"),
    ({}, 3, [], "pending (3 of 5 seeds)"),
    (dict(drop=(0.015, 0.01, 0.02)), 5, [], "fails: drop"),
    (dict(drop=(0.03, -0.01, 0.07)), 5, [], "fails: drop"),
    (dict(vs=(-0.03, -0.06, 0.001)), 5, [], "fails: against the plain selffer"),
    (dict(loss=(0.1, -0.01, 0.2)), 5, [], "fails: the training loss"),
    (dict(up=7), 5, [], "fails: training loss above the base's in 7 of 10"),
    (dict(chance=1), 5, [], "fails: 0 diverged, 1 at chance"),
    (dict(n=3), 5, [], "cut 5 not trained"),
])
def test_the_success_rule_fixed_before_the_runs(kw, seeds, failed, expected):
    from probe.studies.control import verdict

    assert verdict(_rows(**kw), seeds, failed).startswith(expected)


def test_the_detection_limit_agrees_with_the_noncentral_t_power():
    """(t(.975) + t(.8)) s / sqrt(k) against the exact power of the one-sample t test at that effect: near 0.8, as
    the approximation promises, and never for a limit off by a factor of two."""
    from scipy import stats

    from probe.analysis.stats import detection_limit

    for k in (3, 5, 10):
        limit = detection_limit(0.01, k)
        crit = stats.t.ppf(0.975, k - 1)
        power = stats.nct.sf(crit, k - 1, limit / (0.01 / math.sqrt(k)))
        assert 0.7 < power < 0.85, (k, power)
        half = stats.nct.sf(crit, k - 1, limit / 2 / (0.01 / math.sqrt(k)))
        assert half < 0.45
    assert detection_limit(0.02, 5) == pytest.approx(2 * detection_limit(0.01, 5))
    assert detection_limit(0.01, 5) < detection_limit(0.01, 3)
    assert math.isnan(detection_limit(0.01, 1)) and math.isnan(detection_limit(math.nan, 5))


def test_a_null_excludes_the_drop_bound_plus_the_bases_bias():
    from probe.analysis.stats import Estimate, excluded_drop

    drop, gain = Estimate(0.002, -0.004, 0.009, 3, 0.3), Estimate(0.011, 0.003, 0.019, 3, 0.01)
    assert excluded_drop(drop, gain) == pytest.approx(0.028)
    assert excluded_drop(drop, Estimate(-0.01, -0.02, -0.001, 3, 0.1)) == pytest.approx(0.009)
    assert math.isnan(excluded_drop(drop, Estimate(math.nan, math.nan, math.nan, 0, math.nan)))


def test_the_control_is_collected_rendered_and_recollected_from_its_records(dosed_run, tmp_path):
    from probe.studies.control import Control, collect, recollect

    dest = collect([dosed_run], docs=tmp_path)
    rows = (dest / "control.csv").read_text().splitlines()
    assert len(rows) == 1 + 3  # plain, x10, x~30 at n = 5
    info = json.loads((dest / "control.json").read_text())["arms"][0]
    assert set(info["verdicts"]) == {"10", "~30"}
    assert all(v == "kept" or v.startswith("dropped") for v in info["verdicts"].values())
    text = Control(dest).section()
    assert "×10:" in text and "detection limit" in text
    before = (dest / "control.csv").read_bytes()
    recollect(docs=tmp_path)
    assert (dest / "control.csv").read_bytes() == before


def test_the_spread_behind_an_interval_is_the_values_own():
    import numpy as np

    from probe.analysis.stats import estimate, spread, spread_of_interval

    values = np.array([0.01, -0.004, 0.02, 0.007, 0.0])
    e = estimate(values)
    assert spread_of_interval(e.low, e.high, e.replicates) == pytest.approx(spread(values))
    assert math.isnan(spread_of_interval(math.nan, math.nan, 1))


def test_an_arm_of_the_second_stage_is_pending_until_its_seeds_are_in():
    from probe.studies.control import verdict

    assert verdict(_rows(), 1, [], finding=False) == "pending (1 of 5 seeds)"
    assert verdict(_rows(), 1, [], finding=True) == "kept"


def test_seeds_trained_after_the_run_was_gone_merge_into_the_committed_records(dosed_run, tmp_path):
    from probe.studies.control import collect

    dest = collect([dosed_run], docs=tmp_path)
    before = json.loads((dest / "control.json").read_text())["arms"][0]
    merged = collect([dosed_run], docs=tmp_path, merge_into=True)  # the same seeds again: the same arm
    assert json.loads((merged / "control.json").read_text())["arms"][0]["seeds"] == before["seeds"]
    with pytest.raises(ProbeError, match="no committed records to merge"):
        collect([dosed_run], docs=tmp_path / "elsewhere", merge_into=True)


# --- the remedy: the new top's initial scale matched to a fresh base's ------------------------------------------------

@pytest.mark.parametrize("cut", [3, 5, 7])
def test_matching_the_scale_puts_the_new_layers_pre_activations_where_a_fresh_networks_are(cut):
    """After a dose of ×10 below it, the fresh layer n+1's pre-activations are ten times a fresh network's; matched,
    they have the fresh network's RMS (to float rounding), and the factor undoes the dose."""
    from probe.architectures.rescale import _pre_activation_rms, match_scale

    spec = _spec(variant="selffer", source="B", cut=cut)
    fresh = build_model(spec)
    model = build_model(spec)
    model.load_state_dict(fresh.state_dict())
    apply_dose(model, cut, Dose.parse("10"), seed=0)
    x = torch.randn(16, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    target = _pre_activation_rms(fresh, cut + 1, x)
    assert _pre_activation_rms(model, cut + 1, x) == pytest.approx(10 * target, rel=1e-4)
    factor = match_scale(model, fresh, x, cut)
    assert factor == pytest.approx(0.1, rel=1e-4)
    assert _pre_activation_rms(model, cut + 1, x) == pytest.approx(target, rel=1e-4)
    assert model.training  # the measurement in eval mode leaves the network as it was
    with pytest.raises(ProbeError, match="cannot match the scale above layer 8"):
        match_scale(model, fresh, x, 8)


@pytest.fixture(scope="module")
def matched_run(tmp_path_factory, cache_dir):
    from conftest import invoke

    run_dir = tmp_path_factory.mktemp("matched")
    result = invoke(cache_dir, "train", run_dir, *TINY_STUDY, "--cuts", "5", "--variants", "BnB", "--dose", "10",
                    "--split", "random", "--match-scale")
    assert result.exit_code == 0, result.output
    return run_dir


def test_a_recipe_that_matches_the_scale_starts_a_dosed_selffers_new_layer_where_a_fresh_network_does(matched_run):
    """--match-scale: the dosed selffer's new layer n+1 starts scaled, by one factor, so that its pre-activations on
    the task's images have a fresh network's RMS; every other weight is as without it; without a batch it is
    refused; a base is untouched."""
    from probe.architectures.rescale import _pre_activation_rms

    study, plan = read_plan(matched_run)
    assert study.recipe.match_scale
    dosed = next(p.spec for p in plan if p.spec.name == "B5B×10")
    side = dosed.input_size
    batch = torch.randn(32, 3, side, side, generator=torch.Generator().manual_seed(2))
    model, fresh = prepare_model(dosed, matched_run, batch), build_model(dosed)
    assert _pre_activation_rms(model, 6, batch) == pytest.approx(_pre_activation_rms(fresh, 6, batch), rel=1e-4)
    base, _, _ = load_weights(Run(matched_run).network(dosed.parent.id).weights, dosed.parent)
    state, start = model.state_dict(), fresh.state_dict()
    copied = set(model.prefix_state(dosed.cut))
    ratios = {k: (state[k] / start[k]).flatten() for k in state if k not in copied and k.endswith("weight")
              and not torch.equal(state[k], start[k])}
    assert len(ratios) == 1  # fc6's weights alone, by one factor
    (ratio,) = ratios.values()
    torch.testing.assert_close(ratio, torch.full_like(ratio, float(ratio[0])))
    assert all(torch.equal(state[k], start[k]) for k in state if k not in copied and k not in ratios)
    with pytest.raises(ProbeError, match="matches its new layer's initial scale"):
        prepare_model(dosed, matched_run)
    base_spec = next(p.spec for p in plan if p.spec.name == "baseB")
    assert all(torch.equal(a, b) for a, b in zip(prepare_model(base_spec, matched_run).state_dict().values(),
                                                  build_model(base_spec).state_dict().values()))
    trained = json.loads(Run(matched_run).network(dosed.id).metrics.read_text())
    assert trained["status"] == "done"

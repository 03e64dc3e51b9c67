"""The positive control's dose: a function-preserving rescale of the copied layer n (probe.planning.dose,
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
from probe.planning.dose import Dose, parse_doses
from probe.planning.plan import Study, read_plan
from probe.planning.spec import ArchSpec, DataSpec, NetworkSpec
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

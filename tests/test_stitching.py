"""Model stitching: the bottom of one base, a trainable stitch, the frozen top of another."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from probe.architectures.build import build_model
from probe.architectures.stitch import Stitch
from probe.planning.plan import Study, make_plan
from probe.specs.spec import ArchSpec, DataSpec
from probe.specs.variants import STITCH_NAMES, Variant

CLASSES = [f"class{i}" for i in range(10)]


def _specs(variants=STITCH_NAMES, cuts=(2, 6)):
    study = Study(DataSpec("synthetic"), ArchSpec("caffenet-small", options={"width": 0.125}), variants=variants,
                  cuts=cuts)
    return make_plan(study, CLASSES, 3, 16)


def test_stitched_variants_are_planned_after_both_of_their_bases():
    plan = _specs()
    names = {p.spec.name: p for p in plan if p.spec.target == "B"}
    assert {"A2B-stitch", "B2B-stitch", "A6B-stitch", "B6B-stitch"} <= set(names)
    a2b = names["A2B-stitch"]
    assert Variant.of(a2b.spec).name == "AnB-stitch" and a2b.spec.source == "A"
    assert set(a2b.depends_on) == {a2b.spec.parent.id, a2b.spec.top_parent.id}
    assert a2b.spec.parent.name == "baseA" and a2b.spec.top_parent.name == "baseB"
    assert names["B2B-stitch"].depends_on == (names["baseB"].spec.id,)  # self-stitched: one parent, once
    order = [p.spec.id for p in plan]
    for p in plan:
        assert all(order.index(d) < order.index(p.spec.id) for d in p.depends_on)


def test_a_stitched_network_has_its_stitch_between_layer_n_and_n_plus_1():
    spec = next(p.spec for p in _specs() if p.spec.name == "A2B-stitch")
    net = build_model(spec)
    assert isinstance(net.stitch, Stitch) and net.stitch_after == 2
    assert any(k.startswith("stitch.") for k in net.state_dict())
    assert not any(k.startswith("stitch.") for k in net.prefix_state(len(net.layer_names)))
    x = torch.randn(4, 3, 16, 16)
    net.eval()
    logits, acts = net.forward_intermediates(x, ["conv2", "conv3"])
    with torch.no_grad():
        bottom = net.layer(2)(net.layer(1)(x))
        assert torch.allclose(acts["conv2"], bottom)  # layer n's output is taken before the stitch
        assert torch.allclose(acts["conv3"], net.layer(3)(net.stitch(bottom)))
    assert torch.allclose(logits, net(x))
    # built from the spec alone: the same stitch every time
    again = build_model(spec)
    assert all(torch.equal(a, b) for a, b in zip(net.state_dict().values(), again.state_dict().values()))


def test_only_the_stitch_trains_when_every_layer_is_frozen():
    spec = next(p.spec for p in _specs() if p.spec.name == "A6B-stitch")
    net = build_model(spec)
    net.freeze_all_layers()
    trainable = {n for n, p in net.named_parameters() if p.requires_grad}
    assert trainable and all(n.startswith("stitch.") for n in trainable)
    _, upper = net.parameter_groups(spec.cut)
    assert {id(p) for p in net.stitch.parameters()} <= {id(p) for p in upper}
    net.train()
    assert net.stitch.training and not any(s.training for s in net.stages.values())


def test_a_stitched_spec_has_no_plus_form():
    spec = next(p.spec for p in _specs() if p.spec.name == "A2B-stitch")
    with pytest.raises(ValueError, match="stitch"):
        dataclasses.replace(spec, fine_tune=True)


@pytest.fixture(scope="module")
def stitched_run(tmp_path_factory, cache_dir):
    from conftest import invoke

    run = tmp_path_factory.mktemp("stitch") / "run"
    # bases that learn the synthetic task well (about 0.9 against chance 0.2): the control needs a base to match
    result = invoke(cache_dir, "train", run, "--dataset", "synthetic", "--arch", "caffenet-small", "--arch-option",
                    "width=0.25", "--epochs", "8", "--batch-size", "32", "--schedule", "cosine", "--lr", "0.01",
                    "--warmup", "0.2", "--crop-padding", "2", "--cuts", "3", "--variants", "AnB,BnB-stitch,AnB-stitch")
    assert result.exit_code == 0, result.output
    return run


def _metrics(run):
    import json

    from probe.planning.plan import read_plan
    from probe.storage.run import Run

    _, plan = read_plan(run)
    return {p.spec.id: (p.spec, json.loads(Run(run).network(p.spec.id).metrics.read_text())) for p in plan}


def test_a_self_stitched_network_is_within_noise_of_its_base(stitched_run):
    """Stitched to itself through a trained stitch, a base loses nothing real: its accuracy stays within three
    standard errors of a difference of two accuracies on the same test images (the control of model stitching,
    Bansal et al. 2021). A stitch that did not train, or a top that was not copied, is at chance."""
    import math

    metrics = _metrics(stitched_run)
    bases = {(s.replicate, s.target): m for s, m in metrics.values() if s.variant == "base"}
    checked = 0
    for spec, m in metrics.values():
        if spec.variant != "self-stitch":
            continue
        base = bases[(spec.replicate, spec.target)]
        assert base["test_acc"] > 1 / 3, base  # a base that learned the task, or the control proves nothing
        n, p = m["n_test"], base["test_acc"]
        # one image either way is allowed (+ 1/n, with room for the float rounding of two accuracies: at a base of
        # 1.0 the binomial term is 0 and 1 - 149/150 is a hair above 1/150)
        slack = 3 * math.sqrt(2 * p * (1 - p) / n) + 1 / n + 1e-9
        assert abs(m["test_acc"] - p) <= slack, (spec.id, m["test_acc"], p)
        checked += 1
    assert checked == 2  # both targets


def test_only_the_stitch_changed_in_training(stitched_run):
    """The stitched network's layers are its parents', bit for bit (copied and frozen): only the stitch trained."""
    from probe.storage.checkpoint import load_weights
    from probe.storage.run import Run

    metrics = _metrics(stitched_run)
    spec = next(s for s, _ in metrics.values() if s.name == "A3B-stitch")
    state = load_weights(Run(stitched_run).network(spec.id).weights, spec)[0]
    bottom = load_weights(Run(stitched_run).network(spec.parent.id).weights, spec.parent)[0]
    top = load_weights(Run(stitched_run).network(spec.top_parent.id).weights, spec.top_parent)[0]
    layers = build_model(spec).layer_names
    for key, value in state.items():
        if key.startswith("stitch."):
            continue
        layer = layers.index(key.split(".")[1]) + 1
        assert torch.equal(value, (bottom if layer <= 3 else top)[key]), key


def test_analysis_reports_the_stitching_penalty(stitched_run, cli):
    import csv

    result = cli("analyze", stitched_run)
    assert result.exit_code == 0, result.output
    with (stitched_run / "analysis" / "decomposition.csv").open() as f:
        quantities = {r["quantity"] for r in csv.DictReader(f)}
    assert {"stitching", "stitch_over_transfer", "self_stitching"} <= quantities
    report = (stitched_run / "analysis" / "report.md").read_text()
    assert "**stitching** = baseB - AnB-stitch" in report and "baseB - BnB-stitch" in report


def test_a_stitch_on_flat_features_trains_when_the_last_batch_is_one_image(tmp_path, cache_dir):
    """n_train % batch_size == 1: a stitch's BatchNorm1d cannot take a batch of one image, which is left out."""
    from conftest import invoke

    # synthetic: 5 classes x 30 per class, 10% held out: 135 training images, 135 % 67 == 1
    result = invoke(cache_dir, "train", tmp_path / "run", "--dataset", "synthetic", "--arch", "caffenet-small",
                    "--arch-option", "width=0.125", "--epochs", "1", "--batch-size", "67", "--train-per-class", "30",
                    "--cuts", "6", "--variants", "BnB-stitch")
    assert result.exit_code == 0, result.output
    assert "failed 0" in result.output


def test_a_stitch_after_a_token_sequence_is_refused_when_planned():
    from probe.errors import ProbeError

    study = Study(DataSpec("synthetic"), ArchSpec("torchvision.models.vision_transformer:VisionTransformer", None,
                                                  {"patch_size": 4, "num_layers": 2, "num_heads": 2,
                                                   "hidden_dim": 16, "mlp_dim": 32}),
                  variants=("BnB-stitch",), cuts=(1,))
    with pytest.raises(ProbeError, match=r"a stitch cannot follow layer 1 .*shape"):
        make_plan(study, CLASSES, 3, 16)

"""Model stitching: the bottom of one base, a trainable stitch, the frozen top of another."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from probe.architectures.build import build_model
from probe.architectures.stitch import Stitch
from probe.plan import Study, make_plan
from probe.spec import ArchSpec, DataSpec
from probe.variants import STITCH_NAMES, Variant

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

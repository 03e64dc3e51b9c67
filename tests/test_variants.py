"""The one vocabulary of network variants (Yosinski et al. 2014, Sec. 2): names, families, sources and lookups."""

from __future__ import annotations

from types import SimpleNamespace

import pytest

from probe.errors import ProbeError
from probe.specs.spec import DataSpec, NetworkSpec
from probe.specs.variants import BASE, CUT_NAMES, FAMILIES, TASKS, VARIANTS, Variant, other_task


def test_the_papers_variants_in_order():
    assert [v.name for v in VARIANTS] == ["base", "BnB", "BnB+", "AnB", "AnB+", "RnB"]
    assert VARIANTS[0] is BASE and CUT_NAMES == ("BnB", "BnB+", "AnB", "AnB+", "RnB")
    # source: SnB/SnB+, from a source file; the stitched networks and their self-stitched controls
    assert FAMILIES == ("base", "selffer", "transfer", "random", "source", "self-stitch", "stitch", "long-base")
    assert [v.name for v in VARIANTS if v.fine_tune] == ["BnB+", "AnB+"]
    assert TASKS == ("A", "B") and other_task("A") == "B" and other_task("B") == "A"


@pytest.mark.parametrize("name, target, source, cut, network", [
    ("base", "A", None, 0, "baseA"),
    ("BnB", "B", "B", 3, "B3B"),
    ("BnB+", "A", "A", 1, "A1A+"),
    ("AnB", "B", "A", 7, "A7B"),
    ("AnB+", "A", "B", 2, "B2A+"),
    ("RnB", "B", None, 12, "R12B"),
    ("AnB-stitch", "B", "A", 3, "A3B-stitch"),
    ("BnB-stitch", "A", "A", 5, "A5A-stitch"),
    ("base-long", "B", None, 0, "baseB-long"),
])
def test_source_task_and_network_name(name, target, source, cut, network):
    v = Variant.named(name)
    assert v.source_task(target) == source
    assert v.network_name(target, cut) == network


def test_the_variant_of_a_spec():
    data = DataSpec("synthetic")
    assert Variant.of(NetworkSpec(data, "random", 0, "A")) is BASE
    spec = NetworkSpec(data, "random", 0, "A", variant="transfer", source="B", cut=2, fine_tune=True)
    assert Variant.of(spec) == Variant.named("AnB+")
    assert Variant.of(spec).network_name(spec.target, spec.cut) == spec.name == "B2A+"


def test_unknown_variants_are_named():
    with pytest.raises(ProbeError, match="unknown variant 'XnB'; expected one of base, BnB"):
        Variant.named("XnB")
    with pytest.raises(ProbeError, match="no variant is a fine-tuned random network"):
        Variant.of(SimpleNamespace(variant="random", fine_tune=True))

"""Network specs (names, ids, serialization, validation) and the planner."""

from __future__ import annotations

import dataclasses
import json

import pytest

from probe.errors import ProbeError
from probe.execution.sweep import plan_study
from probe.planning.plan import Study, make_plan, plan_to_dict, read_plan, write_plan
from probe.specs.spec import ArchSpec, DataSpec, NetworkSpec, Recipe
from probe.specs.variants import CUT_NAMES

DATA = DataSpec("synthetic", train_per_class=30)
ARCH = ArchSpec("caffenet-small", options={"width": 0.125})
CLASSES_A, CLASSES_B = ("class0", "class2"), ("class1", "class3", "class4")


def spec(**kw) -> NetworkSpec:
    base = dict(data=DATA, split="random", split_seed=0, target="B", arch=ARCH, classes_a=CLASSES_A,
                classes_b=CLASSES_B, input_size=16)
    return NetworkSpec(**{**base, **kw})


# --- names and ids ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kw, name", [
    (dict(target="A"), "baseA"),
    (dict(target="B"), "baseB"),
    (dict(variant="selffer", source="B", cut=3), "B3B"),
    (dict(variant="selffer", source="A", target="A", cut=1), "A1A"),
    (dict(variant="transfer", source="A", cut=3, fine_tune=True), "A3B+"),
    (dict(variant="transfer", source="B", target="A", cut=7), "B7A"),
    (dict(variant="selffer", source="B", cut=2, fine_tune=True), "B2B+"),
    (dict(variant="random", target="A", cut=5), "R5A"),
    (dict(variant="random", cut=12), "R12B"),
])
def test_names(kw, name):
    assert spec(**kw).name == name


def test_ids_and_replicates():
    s = spec(variant="transfer", source="A", cut=3, fine_tune=True, split_seed=4, init_seed=2)
    assert s.replicate == "random-s4/init2"
    assert s.id == "random-s4/init2/A3B+"
    fixed = spec(split="vehicles-animals", split_seed=None, init_seed=1)
    assert fixed.id == "vehicles-animals/init1/baseB"
    from_file = spec(split="file:/tmp/my splits/s.json", split_seed=None)
    assert "/" not in from_file.replicate.split("/init")[0] and ":" not in from_file.id


def test_target_classes_and_parent():
    transfer = spec(variant="transfer", source="A", cut=3, fine_tune=True)
    assert transfer.target_classes == CLASSES_B
    parent = transfer.parent
    assert parent.name == "baseA" and parent.target_classes == CLASSES_A
    assert parent == spec(target="A")
    assert spec(variant="selffer", source="B", cut=2).parent == spec()
    assert spec(variant="random", cut=2).parent is None
    assert spec().parent is None


# --- serialization ----------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("s", [
    spec(),
    spec(variant="transfer", source="A", cut=3, fine_tune=True, init_seed=5),
    spec(arch=ArchSpec("caffenet", "gaussian", {"width": 0.5, "groups": False, "dropout": 0.25})),
    spec(recipe=Recipe(epochs=3, lr=0.05, schedule="cosine", crop_size=12, flip=False, lr_step_every=0.5)),
    spec(data=DataSpec("imagefolder", root="/data/x", image_size=24, train_per_class=None, val_fraction=0.0),
         split="file:/tmp/s.json", split_seed=None, in_channels=1),
])
def test_dict_and_json_round_trip(s):
    assert NetworkSpec.from_dict(s.to_dict()) == s
    assert NetworkSpec.from_dict(json.loads(s.to_json())) == s
    assert NetworkSpec.from_dict(json.loads(s.to_json())).id == s.id
    d = json.loads(s.to_json())
    assert d["arch"]["options"] == dict(s.arch.options)  # options are stored as a mapping


def test_arch_options_are_order_independent():
    assert ArchSpec("caffenet", options={"width": 1, "lrn": False}) == ArchSpec(
        "caffenet", options=(("lrn", False), ("width", 1)))
    assert ArchSpec("caffenet", options={"width": 1}) != ArchSpec("caffenet", options={"width": 2})
    assert ArchSpec("caffenet", options={"width": 0.5}).kwargs == {"width": 0.5}


def test_round_trip_detects_a_difference():
    s = spec()
    d = s.to_dict()
    d["recipe"]["epochs"] = 99
    assert NetworkSpec.from_dict(d) != s


@pytest.mark.parametrize("mutate", [
    lambda d: d.pop("data"),
    lambda d: d.update(colour="blue"),
    lambda d: d["recipe"].update(momentun=0.9),
    lambda d: d["arch"].pop("name"),
])
def test_from_dict_rejects_non_specs(mutate):
    d = spec().to_dict()
    mutate(d)
    with pytest.raises(ProbeError, match="not a network spec"):
        NetworkSpec.from_dict(d)


# --- validation -------------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("kw, culprit", [
    (dict(variant="frankenstein", source="A", cut=1), "'frankenstein'"),
    (dict(target="C"), "'C'"),
    (dict(cut=2), "base"),
    (dict(source="A"), "base"),
    (dict(fine_tune=True), "base"),
    (dict(variant="random", cut=2, fine_tune=True), "'+'"),
    (dict(variant="random", cut=2, source="A"), "not A"),
    (dict(variant="selffer", source="A", cut=2), "not A"),
    (dict(variant="transfer", source="B", cut=2), "not B"),
    (dict(variant="transfer", source=None, cut=2), "not None"),
    (dict(variant="selffer", source="B", cut=0), "cut 0"),
])
def test_network_spec_validation(kw, culprit):
    with pytest.raises(ProbeError) as err:
        spec(**kw)
    assert culprit in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("kw, culprit", [
    (dict(epochs=0), "epochs 0"),
    (dict(batch_size=-4), "batch_size -4"),
    (dict(lr=0.0), "lr 0.0"),
    (dict(lr=-1e-3), "lr -0.001"),
    (dict(schedule="linear"), "'linear'"),
    (dict(lr_step_every=0.0), "lr_step_every 0.0"),
    (dict(lr_step_every=1.5), "lr_step_every 1.5"),
    (dict(crop_padding=-1), "crop_padding -1"),
])
def test_recipe_validation(kw, culprit):
    with pytest.raises(ProbeError) as err:
        Recipe(**kw)
    assert culprit in str(err.value)


@pytest.mark.parametrize("kw, culprit", [
    (dict(val_fraction=1.0), "val_fraction 1.0"),
    (dict(val_fraction=-0.1), "val_fraction -0.1"),
    (dict(train_per_class=0), "train_per_class 0"),
    (dict(image_size=4), "image_size 4"),
])
def test_data_spec_validation(kw, culprit):
    with pytest.raises(ProbeError) as err:
        DataSpec("synthetic", **kw)
    assert culprit in str(err.value)


@pytest.mark.parametrize("crop_size", [0, -3])
def test_recipe_crop_size_must_be_positive(crop_size):
    """``--crop-size 0`` must not be taken silently as "the image's own size" (the planner reads ``crop_size or
    image_size``), and a negative side is bad input of the recipe, not of the architecture."""
    with pytest.raises(ProbeError, match="crop_size"):
        Recipe(crop_size=crop_size)


def test_arch_spec_validation():
    with pytest.raises(ProbeError, match="'xavier'"):
        ArchSpec("caffenet", init="xavier")


def test_recipe_defaults_follow_the_paper():
    r = Recipe()
    assert (r.lr, r.momentum, r.weight_decay, r.lr_gamma, r.finetune_lr_scale) == (0.01, 0.9, 5e-4, 0.1, 1.0)
    assert r.flip and r.schedule == "step"


# --- the planner ------------------------------------------------------------------------------------------------------

def paper_name(variant: str, n: int, target: str) -> str:
    """The name of a variant label (BnB, AnB+, RnB, ...) at cut n, trained on ``target`` (B, or A mirrored)."""
    other = "A" if target == "B" else "B"
    first = {"B": target, "A": other, "R": "R"}[variant[0]]
    return f"{first}{n}{target}{'+' if variant.endswith('+') else ''}"


def plan(cache_dir, **kw):
    study = Study(**{"data": DATA, "arch": ARCH, **kw})
    networks, arrays = plan_study(None, study, cache_dir)
    return study, networks


@pytest.mark.parametrize("seeds, cuts, variants", [
    ((0,), None, CUT_NAMES),
    ((0, 1), (1, 4, 7), CUT_NAMES),
    ((3, 1, 2), (2,), ("AnB", "RnB")),
    ((0,), (1, 2), ()),
])
def test_plan_counts_order_and_directions(cache_dir, seeds, cuts, variants):
    study, networks = plan(cache_dir, seeds=seeds, cuts=cuts, variants=variants)
    n_cuts = 7 if cuts is None else len(cuts)
    assert len(networks) == len(seeds) * (2 + 2 * len(variants) * n_cuts)
    ids = [p.spec.id for p in networks]
    assert len(set(ids)) == len(ids)
    position = {i: k for k, i in enumerate(ids)}
    for k, p in enumerate(networks):
        for dep in p.depends_on:
            assert position[dep] < k, (p.spec.id, dep)
        parent = p.spec.parent
        assert p.depends_on == ((parent.id,) if parent else ())
        assert p.spec.data == DATA and p.spec.input_size == 16 and p.spec.in_channels == 3
        assert p.spec.arch == study.arch == dataclasses.replace(ARCH, init="kaiming")  # the study fills in the default
    for seed in seeds:
        replicate = f"random-s{seed}/init{seed}"
        names = {p.spec.name for p in networks if p.spec.replicate == replicate}
        assert {"baseA", "baseB"} <= names
        for n in (range(1, 8) if cuts is None else cuts):
            for v in variants:
                for target in ("B", "A"):  # both directions
                    assert paper_name(v, n, target) in names, (replicate, v, n, target)
        # the replicate's tasks: a seeded random half of the ten classes
        spec0 = next(p.spec for p in networks if p.spec.replicate == replicate)
        assert len(spec0.classes_a) == 5 and set(spec0.classes_a).isdisjoint(spec0.classes_b)
    if variants:
        assert {p.spec.cut for p in networks if p.spec.variant != "base"} == (
            set(range(1, 8)) if cuts is None else set(cuts))


def test_plan_random_split_replicates_differ(cache_dir):
    _, networks = plan(cache_dir, seeds=(0, 1), cuts=(1,), variants=("BnB",))
    by_replicate = {p.spec.replicate: p.spec.classes_a for p in networks}
    assert by_replicate["random-s0/init0"] != by_replicate["random-s1/init1"]


def test_plan_init_seeds(cache_dir):
    _, networks = plan(cache_dir, seeds=(0, 1), init_seeds=(10, 11), cuts=(1,), variants=("RnB",))
    assert {(p.spec.split_seed, p.spec.init_seed) for p in networks} == {(0, 10), (1, 11)}
    with pytest.raises(ProbeError, match="pair"):
        Study(DATA, ARCH, seeds=(0, 1), init_seeds=(3,))


def test_fixed_split_ignores_split_seeds(cache_dir, split_file):
    split = split_file({"A": ["class0", "class1", "class2"], "B": [3, 4, 5, 6]})
    _, networks = plan(cache_dir, splits=(split,), seeds=(0, 1, 2), cuts=(2,), variants=("AnB",))
    assert len(networks) == 3 * (2 + 2)
    assert {p.spec.split_seed for p in networks} == {None}
    assert {p.spec.init_seed for p in networks} == {0, 1, 2}
    assert {p.spec.classes_a for p in networks} == {("class0", "class1", "class2")}
    assert {p.spec.classes_b for p in networks} == {("class3", "class4", "class5", "class6")}
    assert len({p.spec.id for p in networks}) == len(networks)


def test_several_splits(cache_dir, split_file):
    split = split_file({"A": [0, 1], "B": [2, 3]})
    _, networks = plan(cache_dir, splits=("random", split), seeds=(0, 1), cuts=(1,), variants=("BnB",))
    assert len(networks) == 2 * 2 * 4
    assert len({p.spec.id for p in networks}) == len(networks)


@pytest.mark.parametrize("kw", [dict(cuts=(1, 1)), dict(variants=("BnB", "BnB")), dict(splits=("random", "random"))])
def test_repeated_choices_do_not_plan_a_network_twice(cache_dir, kw):
    """Repeating a cut, variant or split either is refused or plans each network once."""
    try:
        _, networks = plan(cache_dir, **{"cuts": (1,), "variants": ("BnB",), **kw})
    except ProbeError:
        return
    ids = [p.spec.id for p in networks]
    assert len(ids) == len(set(ids)), ids


def test_repeated_init_seeds_of_a_fixed_split_do_not_plan_a_replicate_twice(cache_dir, split_file):
    """``--split file:... --seeds 0,1 --init-seeds 3,3`` must not plan (and count) the same networks twice."""
    split = split_file({"A": [0, 1], "B": [2, 3]})
    try:
        _, networks = plan(cache_dir, splits=(split,), seeds=(0, 1), init_seeds=(3, 3), cuts=(1,),
                           variants=("BnB",))
    except ProbeError:
        return
    ids = [p.spec.id for p in networks]
    assert len(ids) == len(set(ids)), ids


@pytest.mark.parametrize("cut", [0, 8, -1])
def test_bad_cut(cache_dir, cut):
    with pytest.raises(ProbeError) as err:
        plan(cache_dir, cuts=(cut,))
    assert f"cut {cut}" in str(err.value) and "1..7" in str(err.value) and "conv1" in str(err.value)


@pytest.mark.parametrize("kw, culprit", [
    (dict(variants=("BnB", "XnB")), "'XnB'"),
    (dict(splits=("halves",)), "'halves'"),
    (dict(seeds=()), "seed"),
    (dict(seeds=(1, 1)), "[1, 1]"),
    (dict(arch=ArchSpec("caffenet-small", options={"depth": 3})), "'depth'"),
    (dict(arch=ArchSpec("alexnet")), "'alexnet'"),
])
def test_study_validation(kw, culprit):
    with pytest.raises(ProbeError) as err:
        Study(**{"data": DATA, "arch": ARCH, **kw})
    assert culprit in str(err.value)


def test_crop_larger_than_padded_image(cache_dir):
    with pytest.raises(ProbeError, match="crop size 30"):
        plan(cache_dir, recipe=Recipe(crop_size=30, crop_padding=4), cuts=(1,))
    _, networks = plan(cache_dir, recipe=Recipe(crop_size=12, crop_padding=0), cuts=(1,), variants=())
    assert {p.spec.input_size for p in networks} == {12}


def test_plan_file_round_trip(cache_dir, tmp_path):
    study, networks = plan(cache_dir, seeds=(0, 1), cuts=(1, 3), variants=("BnB+", "RnB"))
    write_plan(tmp_path, study, networks)
    study2, networks2 = read_plan(tmp_path)
    assert study2 == study
    assert networks2 == networks
    assert json.loads((tmp_path / "plan.json").read_text()) == json.loads(json.dumps(plan_to_dict(study, networks)))
    with pytest.raises(ProbeError, match="not a run directory"):
        read_plan(tmp_path / "elsewhere")


def test_plan_study_writes_and_checks_the_run_plan(cache_dir, tmp_path):
    study = Study(DATA, ARCH, cuts=(1,), variants=("BnB",))
    plan_study(tmp_path, study, cache_dir)
    assert (tmp_path / "plan.json").exists()
    plan_study(tmp_path, study, cache_dir)  # the same study again: fine
    other = dataclasses.replace(study, recipe=Recipe(epochs=2))
    plan_study(tmp_path, other, cache_dir)  # no network began: the plan gives way (its command failed, say)
    assert read_plan(tmp_path)[0] == other
    (tmp_path / "networks" / "random-s0").mkdir(parents=True)  # a network began
    with pytest.raises(ProbeError, match="different plan"):
        plan_study(tmp_path, study, cache_dir)


def test_make_plan_on_other_shapes():
    study = Study(DataSpec("synthetic"), ArchSpec("resnet18"), cuts=(1, 9), variants=("AnB",))
    networks = make_plan(study, [f"c{i}" for i in range(6)], in_channels=1, image_size=28)
    assert len(networks) == 2 + 2 * 2
    assert {p.spec.in_channels for p in networks} == {1} and {p.spec.input_size for p in networks} == {28}
    with pytest.raises(ProbeError, match="cut 10"):
        make_plan(dataclasses.replace(study, cuts=(10,)), [f"c{i}" for i in range(6)], 1, 28)


@pytest.mark.parametrize("field, value", [("momentum", 1.5), ("momentum", -0.1), ("weight_decay", -1e-4),
                                          ("lr_gamma", 0.0), ("bias_lr_scale", -2.0), ("finetune_lr_scale", -1.0)])
def test_recipe_rejects_out_of_range_numbers(field, value):
    from probe.errors import ProbeError
    from probe.specs.spec import Recipe

    with pytest.raises(ProbeError, match=field):
        Recipe(**{field: value})

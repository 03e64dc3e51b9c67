"""Class splits: random halves, the semantic splits, user files, and their one-line errors."""

from __future__ import annotations

import pytest

from probe.data.splits import CIFAR100_MAN_MADE_SUPERCLASSES, SPLITS, check_split_name, resolve_split, split_is_seeded
from probe.data.wordnet import class_label, ilsvrc12
from probe.errors import ProbeError

CIFAR10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
# torchvision.datasets.FashionMNIST.classes
FASHION_MNIST = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                 "Ankle boot"]
MAN_MADE = [c for names in CIFAR100_MAN_MADE_SUPERCLASSES.values() for c in names]
SOME_NATURAL = ["apple", "aquarium_fish", "baby", "bear", "beaver", "bee", "beetle", "cloud", "forest", "maple_tree"]
WNIDS = list(ilsvrc12())  # the 1,000 ILSVRC-2012 WordNet ids, in their standard order
CLASSES = [f"class{i}" for i in range(10)]


def _error(split, classes, seed=None) -> str:
    with pytest.raises(ProbeError) as err:
        resolve_split(split, classes, seed)
    message = str(err.value)
    assert "\n" not in message, f"not one line: {message!r}"
    return message


@pytest.mark.parametrize("n_classes", [2, 7, 10, 100])
def test_random_split_halves_the_classes(n_classes):
    classes = [f"c{i:03d}" for i in range(n_classes)]
    tasks = resolve_split("random", classes, 0)
    a, b = tasks["A"], tasks["B"]
    assert set(a).isdisjoint(b)
    assert sorted(a + b) == sorted(classes)
    assert len(a) == n_classes // 2 and len(b) == n_classes - n_classes // 2
    # each task lists its classes in the dataset's order
    assert a == [c for c in classes if c in a] and b == [c for c in classes if c in b]


def test_random_split_is_deterministic_per_seed_and_differs_across_seeds():
    assert resolve_split("random", CLASSES, 3) == resolve_split("random", CLASSES, 3)
    splits = {tuple(resolve_split("random", CLASSES, seed)["A"]) for seed in range(6)}
    assert len(splits) > 1
    assert resolve_split("random", CLASSES, 0)["A"] != resolve_split("random", CLASSES, 1)["A"]


def test_random_split_needs_a_seed():
    assert "seed" in _error("random", CLASSES, None)


def test_vehicles_animals():
    tasks = resolve_split("vehicles-animals", CIFAR10)
    assert tasks["A"] == ["airplane", "automobile", "ship", "truck"]
    assert tasks["B"] == ["bird", "cat", "deer", "dog", "frog", "horse"]
    assert not split_is_seeded("vehicles-animals")
    assert resolve_split("vehicles-animals", CIFAR10, 5) == tasks  # a seed does not move a fixed split


def test_clothing_accessories():
    tasks = resolve_split("clothing-accessories", FASHION_MNIST)
    assert tasks["A"] == ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Shirt"]
    assert tasks["B"] == ["Sandal", "Sneaker", "Bag", "Ankle boot"]


def test_man_made_natural():
    assert len(MAN_MADE) == 30 and len(set(MAN_MADE)) == 30
    classes = sorted(MAN_MADE + SOME_NATURAL)
    tasks = resolve_split("man-made-natural", classes)
    assert sorted(tasks["A"]) == sorted(MAN_MADE)
    assert tasks["B"] == sorted(SOME_NATURAL)
    assert tasks["A"] == [c for c in classes if c in MAN_MADE]


def test_man_made_natural_needs_cifar100_classes():
    classes = sorted(set(MAN_MADE) - {"rocket"} | set(SOME_NATURAL))
    message = _error("man-made-natural", classes)
    assert "'rocket'" in message and "cifar100" in message
    assert "'bottle'" in _error("man-made-natural", CIFAR10)


def test_natural_man_made_on_imagenet_wnids():
    tasks = resolve_split("natural-man-made", WNIDS)
    assert len(tasks["A"]) == 449 and len(tasks["B"]) == 551
    assert set(tasks["A"]).isdisjoint(tasks["B"]) and sorted(tasks["A"] + tasks["B"]) == WNIDS
    # the natural classes: ILSVRC's animals (0..397) first, then the authors' 936-958, 970 and 972-998
    assert tasks["A"][:398] == WNIDS[:398]
    assert {WNIDS[398], WNIDS[971], WNIDS[999]} <= set(tasks["B"])  # abacus, bubble, toilet tissue
    assert {WNIDS[936], WNIDS[970], WNIDS[998]} <= set(tasks["A"])  # head cabbage, alp, ear
    assert class_label(WNIDS[1]) == "n01443537 goldfish" and class_label("cat") == "cat"


def test_natural_man_made_by_wordnet_id_on_a_subset_in_any_order():
    """Tiny ImageNet's classes are 200 of ILSVRC's: split by id, not by position, whatever the order they come in."""
    some = WNIDS[::5][::-1]
    tasks = resolve_split("natural-man-made", some)
    natural = set(resolve_split("natural-man-made", WNIDS)["A"])
    assert set(tasks["A"]) == natural & set(some) and set(tasks["B"]) == set(some) - natural


@pytest.mark.parametrize("classes, culprit", [(WNIDS[:10] + ["n99999999"], "'n99999999' is not an ILSVRC-2012"),
                                              (CIFAR10, "'airplane' is not a WordNet id")])
def test_natural_man_made_refuses_a_class_outside_ilsvrc_by_name(classes, culprit):
    message = _error("natural-man-made", classes)
    assert culprit in message and "\n" not in message


def test_file_split_by_names_and_indices(split_file):
    by_name = resolve_split(split_file({"A": ["class7", "class1"], "B": ["class3", "class0"]}), CLASSES)
    assert by_name == {"A": ["class1", "class7"], "B": ["class0", "class3"]}  # dataset order
    by_index = resolve_split(split_file({"A": [7, 1], "B": [3, 0]}, "idx.json"), CLASSES)
    assert by_index == by_name
    mixed = resolve_split(split_file({"A": [7, "class1"], "B": ["class3", 0]}, "mixed.json"), CLASSES)
    assert mixed == by_name
    assert not split_is_seeded(split_file({"A": [0], "B": [1]}))


def test_file_split_need_not_use_every_class(split_file):
    tasks = resolve_split(split_file({"A": [0], "B": [9]}), CLASSES)
    assert tasks == {"A": ["class0"], "B": ["class9"]}


@pytest.mark.parametrize("obj, culprits", [
    ({"A": ["class0", "kangaroo"], "B": ["class1"]}, ["'kangaroo'", "task A"]),
    ({"A": ["class0"], "B": [1, 42]}, ["42", "task B"]),
    ({"A": ["class0", "class2", "class0"], "B": ["class1"]}, ["'class0'", "twice"]),
    ({"A": [2, "class2"], "B": ["class1"]}, ["'class2'", "twice"]),
    ({"A": ["class0", "class3"], "B": ["class1", "class3"]}, ["'class3'", "both"]),
    ({"A": [3], "B": ["class3"]}, ["'class3'", "both"]),
    ({"A": [], "B": ["class1"]}, ["task A", "no classes"]),
    ({"A": ["class1"], "B": []}, ["task B", "no classes"]),
])
def test_file_split_errors(split_file, obj, culprits):
    message = _error(split_file(obj), CLASSES)
    for culprit in culprits:
        assert culprit in message, message


@pytest.mark.parametrize("text, culprit", [
    ('{"A": ["class0"], "B": ["class1"]', "not JSON"),
    ("", "not JSON"),
    ('{"A": ["class0"], "C": ["class1"]}', "'C'"),
    ('{"A": ["class0"]}', "'B'"),
    ('{"A": ["class0"], "B": ["class1"], "extra": []}', "'extra'"),
    ('[["class0"], ["class1"]]', "list"),
])
def test_file_split_bad_files(split_file, text, culprit):
    split = split_file(text)
    message = _error(split, CLASSES)
    assert culprit in message and split[len("file:"):] in message


@pytest.mark.parametrize("obj, culprit", [
    ({"A": 0, "B": ["class1"]}, "task A"),
    ({"A": "class0", "B": ["class1"]}, "'class0'"),
    ({"A": ["class0"], "B": None}, "task B"),
])
def test_file_split_tasks_must_be_lists(split_file, obj, culprit):
    """A task that is not a list of classes is a one-line ProbeError naming it (not a TypeError, and a string is
    not read as a list of one-letter class names)."""
    message = _error(split_file(obj), CLASSES)
    assert culprit in message


def test_file_split_missing_file(tmp_path):
    missing = tmp_path / "nope.json"
    assert str(missing) in _error(f"file:{missing}", CLASSES)


def test_split_for_the_wrong_dataset():
    message = _error("vehicles-animals", FASHION_MNIST)
    assert "cifar10" in message and "'airplane'" in message
    message = _error("clothing-accessories", CIFAR10)
    assert "fashion-mnist" in message and "'T-shirt/top'" in message


def test_unknown_split_name():
    message = _error("halves", CLASSES, 0)
    assert "'halves'" in message and "random" in message
    with pytest.raises(ProbeError, match="'halves'"):
        check_split_name("halves")
    with pytest.raises(ProbeError, match="'halves'"):
        split_is_seeded("halves")


def test_split_names(split_file):
    """Every split the CLI offers resolves, on the dataset it is meant for, to two disjoint tasks of that dataset's
    classes; only ``random`` depends on a seed, and a ``file:`` name is checked without reading the file."""
    meant_for = {"random": (CLASSES, 5, 5), "vehicles-animals": (CIFAR10, 4, 6),
                 "clothing-accessories": (FASHION_MNIST, 6, 4), "man-made-natural": (MAN_MADE + SOME_NATURAL, 30, 10),
                 "natural-man-made": (WNIDS, 449, 551)}
    assert set(SPLITS) == {*meant_for, "file:PATH"}
    for name, (classes, size_a, size_b) in meant_for.items():
        check_split_name(name)
        tasks = resolve_split(name, classes, 0)
        assert (len(tasks["A"]), len(tasks["B"])) == (size_a, size_b), name
        assert set(tasks["A"]).isdisjoint(tasks["B"]) and set(tasks["A"] + tasks["B"]) <= set(classes), name
        assert split_is_seeded(name) == (name == "random")
    check_split_name("file:/anything.json")
    named = split_file({"A": ["class2"], "B": [5]})
    assert resolve_split(named, CLASSES) == {"A": ["class2"], "B": ["class5"]} and not split_is_seeded(named)


def test_classes_per_task_is_a_nested_seeded_draw():
    from probe.data.splits import draw_classes

    tasks = resolve_split("natural-man-made", WNIDS[::5])  # 200 classes of ILSVRC, unequal tasks
    small, large = (draw_classes(tasks, k, seed=3, split="natural-man-made") for k in (10, 25))
    for task in ("A", "B"):
        assert len(small[task]) == 10 and len(large[task]) == 25
        assert set(small[task]) <= set(large[task]) <= set(tasks[task])  # nested at one seed
        assert small[task] == [c for c in tasks[task] if c in small[task]]  # the dataset's order kept
    assert draw_classes(tasks, 10, seed=4)["A"] != small["A"]  # another seed, another draw
    with pytest.raises(ProbeError, match="task A has 90 classes, fewer than the 100"):
        draw_classes(tasks, 100, seed=0, split="natural-man-made")


def test_plan_draws_classes_per_task_and_names_them(cli, split_file):
    result = cli("plan", "--dataset", "synthetic", "--seeds", "0", "--cuts", "5", "--variants", "BnB",
                 "--classes-per-task", "2")
    assert result.exit_code == 0, result.output
    assert sum("task A, 2 classes" in line or "task B, 2 classes" in line for line in result.output.splitlines()) == 2
    bad = cli("plan", "--dataset", "synthetic", "--seeds", "0", "--classes-per-task", "9")
    assert bad.exit_code != 0 and "fewer than the 9" in bad.output and "Traceback" not in bad.output

"""Datasets: the synthetic set, task selection and validation hold-out, the decoded-image cache, real datasets."""

from __future__ import annotations

import os
import shutil
from collections import Counter
from dataclasses import astuple
from pathlib import Path

import numpy as np
import pytest
from conftest import FASHION_MNIST_DIR, SHARED_DATA
from PIL import Image

import probe.data.datasets as datasets
from probe.data.datasets import load_dataset, parse_dataset
from probe.data.splits import resolve_split
from probe.data.synthetic import synthetic_arrays
from probe.data.tasks import task_data
from probe.errors import ProbeError
from probe.specs.spec import DataSpec

CIFAR10 = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
FASHION_MNIST = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
                 "Ankle boot"]


# --- synthetic -------------------------------------------------------------------------------------------------

def test_synthetic_dataset_is_deterministic_and_shaped():
    train_x, train_y, test_x, test_y, classes = synthetic_arrays()
    again = synthetic_arrays()
    for a, b in zip((train_x, train_y, test_x, test_y), again[:4]):
        assert np.array_equal(a, b)
    assert again[4] == classes == [f"class{i}" for i in range(10)]
    assert train_x.shape == (1000, 16, 16, 3) and test_x.shape == (300, 16, 16, 3)
    assert train_x.dtype == np.uint8 and test_x.dtype == np.uint8
    assert train_y.dtype == np.int64 and test_y.dtype == np.int64
    assert Counter(train_y.tolist()) == {k: 100 for k in range(10)}
    assert Counter(test_y.tolist()) == {k: 30 for k in range(10)}
    assert len(np.unique(train_x.reshape(len(train_x), -1), axis=0)) == len(train_x)
    other = synthetic_arrays(seed=1)
    assert not np.array_equal(other[0], train_x)


def test_synthetic_through_load_dataset(synthetic_arrays):
    assert synthetic_arrays.train_x.shape == (1000, 16, 16, 3)
    assert synthetic_arrays.classes == [f"class{i}" for i in range(10)]


# --- tasks -----------------------------------------------------------------------------------------------------

def _lookup(x: np.ndarray, y: np.ndarray) -> dict[bytes, int]:
    table = {img.tobytes(): int(label) for img, label in zip(x, y)}
    assert len(table) == len(x)  # images are unique, so bytes identify them
    return table


def test_task_data_relabels_in_class_order_and_holds_out_val(synthetic_arrays):
    arrays = synthetic_arrays
    classes = ["class7", "class2", "class5"]
    task = task_data(arrays, classes, DataSpec("synthetic", val_fraction=0.2))
    assert task.classes == classes
    train_orig, test_orig = _lookup(arrays.train_x, arrays.train_y), _lookup(arrays.test_x, arrays.test_y)

    for x, y, source in ((task.train_x, task.train_y, train_orig), (task.val_x, task.val_y, train_orig),
                         (task.test_x, task.test_y, test_orig)):
        assert x.dtype == np.uint8 and x.shape[1:] == (16, 16, 3) and len(x) == len(y)
        assert set(y.tolist()) == {0, 1, 2}
        for img, label in zip(x, y):
            assert arrays.classes[source[img.tobytes()]] == classes[label]

    # stratified 20% of the 100 training images of each class; every test image of the classes
    assert Counter(task.val_y.tolist()) == {0: 20, 1: 20, 2: 20}
    assert Counter(task.train_y.tolist()) == {0: 80, 1: 80, 2: 80}
    assert Counter(task.test_y.tolist()) == {0: 30, 1: 30, 2: 30}
    train_keys = {img.tobytes() for img in task.train_x}
    val_keys = {img.tobytes() for img in task.val_x}
    assert train_keys.isdisjoint(val_keys)
    assert len(train_keys) == 240 and len(val_keys) == 60


def test_task_data_train_per_class_subsamples(synthetic_arrays):
    spec = DataSpec("synthetic", train_per_class=30, val_fraction=0.1)
    task = task_data(synthetic_arrays, ["class0", "class1", "class3", "class4"], spec)
    assert Counter(task.train_y.tolist()) == {k: 27 for k in range(4)}
    assert Counter(task.val_y.tolist()) == {k: 3 for k in range(4)}
    assert {i.tobytes() for i in task.train_x}.isdisjoint({i.tobytes() for i in task.val_x})
    assert len(task.test_y) == 120  # the test split is never subsampled
    # the same images for every network of a run
    again = task_data(synthetic_arrays, ["class0", "class1", "class3", "class4"], spec)
    assert np.array_equal(task.train_x, again.train_x) and np.array_equal(task.val_x, again.val_x)
    assert np.array_equal(task.train_y, again.train_y) and np.array_equal(task.val_y, again.val_y)
    # and the subsample of a class does not depend on which other classes share its task
    other = task_data(synthetic_arrays, ["class0", "class9"], spec)
    zero = lambda t: {i.tobytes() for i, y in zip(np.concatenate([t.train_x, t.val_x]),  # noqa: E731
                                                  np.concatenate([t.train_y, t.val_y])) if y == 0}
    assert zero(task) == zero(other)


def test_task_data_without_val(synthetic_arrays):
    task = task_data(synthetic_arrays, ["class1", "class0"], DataSpec("synthetic", val_fraction=0.0))
    assert len(task.val_y) == 0 and len(task.val_x) == 0
    assert Counter(task.train_y.tolist()) == {0: 100, 1: 100}
    # class1 is label 0
    first = synthetic_arrays.train_x[synthetic_arrays.train_y == 1]
    assert {i.tobytes() for i in task.train_x[task.train_y == 0]} == {i.tobytes() for i in first}


def test_task_data_unknown_class(synthetic_arrays):
    with pytest.raises(ProbeError, match="'zebra'"):
        task_data(synthetic_arrays, ["class0", "zebra"], DataSpec("synthetic"))


@pytest.mark.parametrize("per_class", [1, 2, 5])
def test_task_data_tiny_subsample_with_val(synthetic_arrays, per_class):
    """A smoke run with very few images per class either works or says why in one line (--train-per-class 5 on
    five classes asks for a 10% hold-out of 25 images)."""
    classes = [f"class{i}" for i in range(5)]
    try:
        task = task_data(synthetic_arrays, classes, DataSpec("synthetic", train_per_class=per_class))
    except ProbeError as e:
        assert str(per_class) in str(e) and "\n" not in str(e)
    else:
        assert len(task.train_y) + len(task.val_y) == 5 * per_class
        assert len(task.train_y) > 0


# --- image-folder trees and the cache ----------------------------------------------------------------------------

def _image(value: int, size: int = 12) -> Image.Image:
    a = np.zeros((size, size, 3), np.uint8)
    a[..., 0] = value
    a[..., 1] = np.arange(size, dtype=np.uint8)[:, None] * 3
    a[..., 2] = 255 - value
    return Image.fromarray(a)


def make_tree(root: Path, sizes: dict[str, int] | None = None, test_name: str = "test") -> Path:
    """train/ and test/ with classes cats and dogs, three 12x12 PNGs each; ``sizes`` overrides some sides."""
    sizes = sizes or {}
    for part in ("train", test_name):
        for c, cls in enumerate(("cats", "dogs")):
            (root / part / cls).mkdir(parents=True, exist_ok=True)
            for i in range(3):
                rel = f"{part}/{cls}/{i}.png"
                _image(40 * c + 10 * i + (100 if part != "train" else 0), sizes.get(rel, 12)).save(root / rel)
    return root


def test_imagefolder_tree_decodes(tmp_path):
    tree = make_tree(tmp_path / "tree")
    arrays = load_dataset(DataSpec("imagefolder", root=str(tree)), cache_dir=tmp_path / "cache")
    assert arrays.classes == ["cats", "dogs"]
    assert arrays.train_x.shape == (6, 12, 12, 3) and arrays.test_x.shape == (6, 12, 12, 3)
    assert arrays.train_x.dtype == np.uint8
    assert arrays.train_y.tolist() == [0, 0, 0, 1, 1, 1] and arrays.test_y.tolist() == [0, 0, 0, 1, 1, 1]
    assert arrays.train_x[:, 0, 0, 0].tolist() == [0, 10, 20, 40, 50, 60]
    assert arrays.test_x[:, 0, 0, 0].tolist() == [100, 110, 120, 140, 150, 160]
    assert np.array_equal(arrays.train_x[4], np.asarray(Image.open(tree / "train/dogs/1.png")))


def test_decoding_progress_is_shown_unless_turned_off(tmp_path, capfd):
    tree = make_tree(tmp_path / "tree")
    load_dataset(DataSpec("imagefolder", root=str(tree)), cache_dir=tmp_path / "shown")
    assert "decoding tree/" in capfd.readouterr().err
    load_dataset(DataSpec("imagefolder", root=str(tree)), cache_dir=tmp_path / "quiet", progress=False)
    assert "decoding" not in capfd.readouterr().err


def test_imagefolder_with_val_folder(tmp_path):
    tree = make_tree(tmp_path / "tree", test_name="val")
    arrays = load_dataset(DataSpec("imagefolder", root=str(tree)), cache_dir=tmp_path / "cache")
    assert arrays.test_x.shape == (6, 12, 12, 3)


def _counting_decodes(monkeypatch) -> list[list[str]]:
    """The members each decode of an image-folder tree is given, recorded as the class-by-class cache asks."""
    calls = []
    reader = datasets.BY_CLASS["imagefolder"]

    def counting(*args):
        members, decode = reader(*args)
        return members, lambda paths: (calls.append([Path(p).name for p in paths]), decode(paths))[1]

    monkeypatch.setitem(datasets.BY_CLASS, "imagefolder", counting)
    return calls


def test_cache_is_reused_and_keyed_by_the_files(tmp_path, monkeypatch):
    tree = make_tree(tmp_path / "tree")
    cache = tmp_path / "cache"
    spec = DataSpec("imagefolder", root=str(tree))
    calls = _counting_decodes(monkeypatch)
    first = load_dataset(spec, cache_dir=cache)
    assert calls  # the first image (for the shape), then both splits
    entries = sorted(p.name for p in cache.iterdir() if not p.name.startswith("."))
    assert len(entries) == 1 and entries[0].startswith("imagefolder-")

    calls.clear()
    second = load_dataset(spec, cache_dir=cache)
    assert calls == [], "decoded again although the tree did not change"
    for field in ("train_x", "train_y", "test_x", "test_y"):
        assert np.array_equal(np.asarray(getattr(first, field)), np.asarray(getattr(second, field)))
    assert second.classes == first.classes

    # a new image: a new key, decoded again
    _image(222).save(tree / "train" / "cats" / "3.png")
    third = load_dataset(spec, cache_dir=cache)
    assert calls
    assert third.train_x.shape == (7, 12, 12, 3) and third.train_x[3, 0, 0, 0] == 222
    assert len([p for p in cache.iterdir() if not p.name.startswith(".")]) == 2

    # an image rewritten in place (new modification time) is also a changed source
    path = tree / "test" / "dogs" / "0.png"
    _image(7).save(path)
    st = path.stat()
    os.utime(path, ns=(st.st_atime_ns, st.st_mtime_ns + 10_000_000))
    calls.clear()
    fourth = load_dataset(spec, cache_dir=cache)
    assert calls and fourth.test_x[3, 0, 0, 0] == 7
    # the image size is part of the key
    load_dataset(DataSpec("imagefolder", root=str(tree), image_size=8), cache_dir=cache)
    assert len([p for p in cache.iterdir() if not p.name.startswith(".")]) == 4


def _three_class_tree(root: Path) -> Path:
    """cats, dogs and owls, four training and two test images each, every image's red channel its own value."""
    for part, n in (("train", 4), ("test", 2)):
        for c, cls in enumerate(("cats", "dogs", "owls")):
            (root / part / cls).mkdir(parents=True, exist_ok=True)
            for i in range(n):
                _image(60 * c + 10 * i + (5 if part == "test" else 0)).save(root / part / cls / f"{i}.png")
    return root


def test_only_the_classes_asked_for_are_decoded_and_keep_their_numbers(tmp_path, monkeypatch):
    tree = _three_class_tree(tmp_path / "tree")
    spec = DataSpec("imagefolder", root=str(tree))
    whole = load_dataset(spec, cache_dir=tmp_path / "whole")
    calls = _counting_decodes(monkeypatch)
    cache = tmp_path / "cache"
    index = load_dataset(spec, cache_dir=cache, classes=[])
    assert index.train_y.tolist() == whole.train_y.tolist() and index.test_y.tolist() == whole.test_y.tolist()
    assert index.train_x.shape == whole.train_x.shape and calls == [["0.png"]]  # one image, for the shape
    calls.clear()
    some = load_dataset(spec, cache_dir=cache, classes=["owls"])
    assert calls == [["0.png", "1.png", "2.png", "3.png", "0.png", "1.png"]]  # owls' images, both splits at once
    owls = np.flatnonzero(whole.train_y == 2)
    assert np.array_equal(some.train_x[owls], whole.train_x[owls])
    assert np.array_equal(some.test_x[np.flatnonzero(whole.test_y == 2)], whole.test_x[whole.test_y == 2])
    with pytest.raises(ProbeError, match="class 'cats' is not decoded"):
        some.train_x[0]
    # a later study of other classes decodes only those it lacks, and its tasks are those of a whole decode
    calls.clear()
    more = load_dataset(spec, cache_dir=cache, classes=["owls", "cats"])
    assert [len(c) for c in calls] == [6]
    data = DataSpec("imagefolder", root=str(tree), train_per_class=3, val_fraction=0.34)
    tasks = [astuple(task_data(arrays, ["owls", "cats"], data)) for arrays in (more, whole)]
    for a, b in zip(*tasks):
        assert np.array_equal(np.asarray(a), np.asarray(b))
    with pytest.raises(ProbeError, match="class 'wolves' is not in the dataset"):
        load_dataset(spec, cache_dir=cache, classes=["wolves"])


def test_a_class_decoded_later_at_another_image_size_is_refused(tmp_path):
    tree = _three_class_tree(tmp_path / "tree")
    for path in [*(tree / "train" / "owls").iterdir(), *(tree / "test" / "owls").iterdir()]:
        _image(1, size=10).save(path)
    spec = DataSpec("imagefolder", root=str(tree))
    load_dataset(spec, cache_dir=tmp_path / "cache", classes=["cats"])
    with pytest.raises(ProbeError, match=r"is 10x10, unlike the 12x12 .*--image-size"):
        load_dataset(spec, cache_dir=tmp_path / "cache", classes=["owls"])


@pytest.mark.parametrize("odd", ["train/cats/0.png", "train/cats/1.png", "test/dogs/1.png"])
def test_mixed_size_tree_needs_image_size(tmp_path, odd):
    tree = make_tree(tmp_path / "tree", sizes={odd: 10})
    with pytest.raises(ProbeError, match="image size") as err:
        load_dataset(DataSpec("imagefolder", root=str(tree)), cache_dir=tmp_path / "cache")
    assert "\n" not in str(err.value)
    arrays = load_dataset(DataSpec("imagefolder", root=str(tree), image_size=8), cache_dir=tmp_path / "cache")
    assert arrays.train_x.shape == (6, 8, 8, 3) and arrays.test_x.shape == (6, 8, 8, 3)


def test_tree_without_test_folder(tmp_path):
    tree = make_tree(tmp_path / "tree")
    shutil.rmtree(tree / "test")
    with pytest.raises(ProbeError, match="val/ or test/"):
        load_dataset(DataSpec("imagefolder", root=str(tree)), cache_dir=tmp_path / "cache")


def test_tree_whose_test_classes_differ(tmp_path):
    tree = make_tree(tmp_path / "tree")
    (tree / "test" / "dogs").rename(tree / "test" / "wolves")
    with pytest.raises(ProbeError, match="classes"):
        load_dataset(DataSpec("imagefolder", root=str(tree)), cache_dir=tmp_path / "cache")


# --- names and roots ---------------------------------------------------------------------------------------------

def test_parse_dataset():
    assert parse_dataset("synthetic") == ("synthetic", None)
    assert parse_dataset("cifar10:/data/c10") == ("cifar10", "/data/c10")
    assert parse_dataset("cifar10", "/data/c10") == ("cifar10", "/data/c10")
    assert parse_dataset("imagefolder:/x", "/x") == ("imagefolder", "/x")


@pytest.mark.parametrize("text, root, culprit", [
    ("mnist", None, "'mnist'"),
    ("imagenet:/data", None, "'imagenet'"),
    ("CIFAR10", None, "'CIFAR10'"),
    ("imagefolder", None, "imagefolder:PATH"),
    ("cifar10:/a", "/b", "'/b'"),
])
def test_parse_dataset_errors(text, root, culprit):
    with pytest.raises(ProbeError) as err:
        parse_dataset(text, root)
    assert culprit in str(err.value) and "\n" not in str(err.value)


def test_dataset_roots_are_checked(tmp_path):
    with pytest.raises(ProbeError, match="needs a root"):
        load_dataset(DataSpec("cifar10"), cache_dir=tmp_path)
    with pytest.raises(ProbeError, match="not a directory"):
        load_dataset(DataSpec("cifar100", root=str(tmp_path / "nowhere")), cache_dir=tmp_path)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ProbeError, match="cifar-10-batches-py"):
        load_dataset(DataSpec("cifar10", root=str(tmp_path / "empty")), cache_dir=tmp_path)


# --- real datasets ----------------------------------------------------------------------------------------------

@pytest.mark.skipif(not (FASHION_MNIST_DIR / "train-images-idx3-ubyte.gz").exists(),
                    reason="Debian's dataset-fashion-mnist is not installed")
def test_fashion_mnist_from_debian(cache_dir):
    arrays = load_dataset(DataSpec("fashion-mnist"), cache_dir=cache_dir)
    assert arrays.train_x.shape == (60000, 28, 28, 1) and arrays.test_x.shape == (10000, 28, 28, 1)
    assert arrays.train_x.dtype == np.uint8
    assert arrays.classes == FASHION_MNIST
    assert Counter(arrays.train_y.tolist()) == {k: 6000 for k in range(10)}
    assert Counter(arrays.test_y.tolist()) == {k: 1000 for k in range(10)}
    assert resolve_split("clothing-accessories", arrays.classes)["B"] == ["Sandal", "Sneaker", "Bag", "Ankle boot"]
    assert 60 < arrays.train_x.mean() < 80  # Fashion-MNIST's mean pixel is about 72.9


CIFAR10_TREE = SHARED_DATA / "cifar10"
needs_cifar10 = pytest.mark.skipif(not (CIFAR10_TREE / "train").is_dir(),
                                   reason="../shared/data/cifar10 is not here")


@needs_cifar10
def test_cifar10_tree_subset(tmp_path):
    """Two images a class of the shared CIFAR-10 tree, read the way the whole tree is read."""
    subset = tmp_path / "cifar10"
    for part in ("train", "test"):
        classes = sorted(p.name for p in (CIFAR10_TREE / part).iterdir() if p.is_dir())
        assert classes == CIFAR10
        for cls in classes:
            (subset / part / cls).mkdir(parents=True)
            for f in sorted((CIFAR10_TREE / part / cls).iterdir())[:2]:
                shutil.copy(f, subset / part / cls / f.name)
    arrays = load_dataset(DataSpec(f"cifar10:{subset}"), cache_dir=tmp_path / "cache")
    assert arrays.classes == CIFAR10
    assert arrays.train_x.shape == (20, 32, 32, 3) and arrays.test_x.shape == (20, 32, 32, 3)
    assert arrays.train_y.tolist() == np.repeat(np.arange(10), 2).tolist()
    assert resolve_split("vehicles-animals", arrays.classes)["A"] == ["airplane", "automobile", "ship", "truck"]


@pytest.mark.slow
@needs_cifar10
def test_cifar10_whole_tree(cache_dir):
    arrays = load_dataset(DataSpec("cifar10", root=str(CIFAR10_TREE)), cache_dir=cache_dir)
    assert arrays.classes == CIFAR10
    assert arrays.train_x.shape == (50000, 32, 32, 3) and arrays.test_x.shape == (10000, 32, 32, 3)
    assert Counter(arrays.train_y.tolist()) == {k: 5000 for k in range(10)}
    assert Counter(arrays.test_y.tolist()) == {k: 1000 for k in range(10)}
    mean = (np.asarray(arrays.train_x, dtype=np.float64) / 255).mean(axis=(0, 1, 2))
    assert np.allclose(mean, [0.4913, 0.4821, 0.4465], atol=0.003)

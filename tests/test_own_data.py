"""Your own data: a function returning arrays or torchvision-style datasets, named by import path (--dataset
MODULE:FUNCTION), registered with @register_dataset or through an entry point; checked in one line."""

from __future__ import annotations

import json

import numpy as np
import pytest
from conftest import assert_one_line_error
from PIL import Image

from probe import register_dataset
from probe.data.custom import DATASET_REGISTRY, complete_data_spec
from probe.data.datasets import load_dataset
from probe.data.synthetic import synthetic_arrays
from probe.errors import ProbeError
from probe.planning.plan import Study
from probe.specs.spec import ArchSpec, DataSpec
from probe.storage.run import Run

# Dataset functions of this module, importable by the tests' processes as test_own_data:NAME.


def nchw_arrays():
    """The synthetic images, channels first, as a user's function might return them."""
    train_x, train_y, test_x, test_y, classes = synthetic_arrays(train_per_class=20, test_per_class=5)
    return train_x.transpose(0, 3, 1, 2), train_y, test_x.transpose(0, 3, 1, 2), test_y, classes


def gray_arrays():
    train_x, train_y, test_x, test_y, classes = synthetic_arrays(train_per_class=4, test_per_class=2)
    return train_x[..., 0], train_y, test_x[..., 0], test_y, classes


class PairDataset:
    """A torchvision-style dataset of (PIL image, label) pairs."""

    def __init__(self, x: np.ndarray, y: np.ndarray, classes: list[str]):
        self.x, self.y, self.classes = x, y, classes

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int):
        return Image.fromarray(self.x[i]), int(self.y[i])


def pair_datasets():
    train_x, train_y, test_x, test_y, classes = synthetic_arrays(train_per_class=4, test_per_class=2)
    return PairDataset(train_x, train_y, classes), PairDataset(test_x, test_y, classes)


def rooted(root):
    """A function that reads from its root (here: only checks it is given)."""
    assert root.endswith("images")
    return nchw_arrays()


def float_images():
    train_x, train_y, test_x, test_y, classes = synthetic_arrays(train_per_class=2, test_per_class=1)
    return train_x / 255.0, train_y, test_x / 255.0, test_y, classes


def bad_labels():
    train_x, train_y, test_x, test_y, classes = synthetic_arrays(train_per_class=2, test_per_class=1)
    return train_x, train_y + 7, test_x, test_y, classes


def wide_images():
    train_x, train_y, test_x, test_y, classes = synthetic_arrays(train_per_class=2, test_per_class=1)
    return train_x[:, :, :12], train_y, test_x[:, :, :12], test_y, classes


def failing():
    raise FileNotFoundError("/data/mine/train.npz")


def a_dict():
    return {"train": None}


@pytest.fixture
def datasets():
    """The dataset registry, restored after the test."""
    saved = dict(DATASET_REGISTRY)
    yield DATASET_REGISTRY
    DATASET_REGISTRY.clear()
    DATASET_REGISTRY.update(saved)


def test_a_dataset_function_trains(tmp_path, cli):
    run = tmp_path / "run"
    result = cli("train", run, "--dataset", "test_own_data:nchw_arrays", "--arch", "caffenet-small", "--arch-option",
                 "width=0.125", "--epochs", "1", "--batch-size", "32", "--networks", "baseA")
    assert result.exit_code == 0, result.output
    plan = json.loads(Run(run).plan.read_text())
    assert plan["study"]["data"]["name"] == "test_own_data:nchw_arrays"
    base = next(n for n in plan["networks"] if n["id"].endswith("/baseA"))
    assert base["spec"]["in_channels"] == 3 and base["spec"]["input_size"] == 16
    assert json.loads(Run(run).network(base["id"]).metrics.read_text())["status"] == "done"


def test_arrays_and_datasets_become_channels_last_uint8():
    expected = synthetic_arrays(train_per_class=20, test_per_class=5)
    arrays = load_dataset(DataSpec("test_own_data:nchw_arrays"))
    assert np.array_equal(arrays.train_x, expected[0]) and np.array_equal(arrays.test_y, expected[3])
    assert arrays.classes == expected[4]
    pairs = load_dataset(DataSpec("test_own_data:pair_datasets"))
    small = synthetic_arrays(train_per_class=4, test_per_class=2)
    assert np.array_equal(pairs.train_x, small[0]) and np.array_equal(pairs.train_y, small[1])
    assert pairs.train_x.dtype == np.uint8 and pairs.train_y.dtype == np.int64
    gray = load_dataset(DataSpec("test_own_data:gray_arrays"))
    assert gray.train_x.shape == (40, 16, 16, 1)
    assert load_dataset(DataSpec("test_own_data:nchw_arrays", image_size=8)).test_x.shape == (50, 8, 8, 3)
    assert load_dataset(DataSpec("test_own_data:rooted", root="/data/images")).train_x.shape == (200, 16, 16, 3)


def test_registered_datasets_are_recorded_by_where_their_function_is(datasets):
    register_dataset("own-data")(nchw_arrays)
    register_dataset("own-data")(nchw_arrays)  # its module imported again: the same function
    study = Study(DataSpec("own-data", train_per_class=5), ArchSpec("caffenet-small"))
    assert study.data.builder == "test_own_data:nchw_arrays"
    datasets.clear()  # another process, which has not registered it, loads it from there
    assert load_dataset(study.data).train_x.shape == (200, 16, 16, 3)
    register_dataset("own-data")(gray_arrays)
    with pytest.raises(ProbeError, match="dataset 'own-data' is already registered"):
        register_dataset("own-data")(nchw_arrays)
    register_dataset("own-data", replace=True)(nchw_arrays)
    for name in ("cifar10", "mine:x", ""):
        with pytest.raises(ProbeError, match="dataset name"):
            register_dataset(name)


def test_an_entry_point_adds_a_dataset(datasets, entry_point):
    entry_point("own-ep-data", "test_own_data:gray_arrays", "probe.datasets")
    assert load_dataset(DataSpec("own-ep-data")).train_x.shape == (40, 16, 16, 1)
    assert DATASET_REGISTRY["own-ep-data"].origin == "entry point"
    assert complete_data_spec(DataSpec("own-ep-data")).builder is None  # found by name where it is installed


@pytest.mark.parametrize("dataset, extra, culprits", [
    ("test_own_data:float_images", [], ["float64", "uint8"]),
    ("test_own_data:bad_labels", [], ["label 16", "0..9"]),
    ("test_own_data:wide_images", [], ["16x12", "--image-size"]),
    ("test_own_data:nchw_arrays", ["--data-root", "/data"], ["takes no root", "'/data'"]),
    ("test_own_data:failing", [], ["FileNotFoundError", "/data/mine/train.npz"]),
    ("test_own_data:a_dict", [], ["dict"]),
    ("test_own_data:nowhere", [], ["'nowhere'"]),
    ("mine", [], ["unknown dataset 'mine'", "MODULE:FUNCTION"]),
])
def test_refusals_are_one_line(cli, dataset, extra, culprits):
    assert_one_line_error(cli("plan", "--dataset", dataset, *extra), *culprits)

"""What ``probe plan`` says before the hours of training start: the layer each cut follows, a source network's file,
hash and checked tensors, each SnB's parent, the test split's smallest and largest class, advice where the epochs
are few for the recipe; and the one-line refusals of a bad ``--source`` file (before any data is decoded) and of a
forward that slices a Sequential.

The source files are built from a network of the tiny study's own spec (no training), saved the way torchvision
ships its weights (``torch.save`` of a ``state_dict``).
"""

from __future__ import annotations

import hashlib
import json

import numpy as np
import pytest
import torch
from conftest import TINY_STUDY, assert_one_line_error
from torch import nn

from probe.architectures.build import build_model
from probe.planning.summary import budget_advice
from probe.specs.spec import NetworkSpec, Recipe

CUTS = ["--cuts", "1,2"]
ADVICE = "--schedule cosine --warmup 0.2 --lr 0.02"


# --- a network and a dataset of one's own, named by import path -----------------------------------------------------

class Chain(nn.Module):
    """A plain chain of a Sequential and a classifier; ``sliced`` runs the Sequential in two slices."""

    def __init__(self, in_channels: int = 3, num_classes: int = 10, sliced: bool = False):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(in_channels, 8, 3, padding=1), nn.ReLU(),
                                      nn.Conv2d(8, 8, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.fc = nn.Linear(8, num_classes)
        self.sliced = sliced

    def forward(self, x):
        if self.sliced:  # what the user wrote: the first four modules, then the rest
            x = self.features[:4](x)
            x = self.features[4:](x)
        else:
            x = self.features(x)
        return self.fc(x)


def chain(in_channels: int, num_classes: int) -> nn.Module:
    return Chain(in_channels, num_classes)


def sliced(in_channels: int, num_classes: int) -> nn.Module:
    return Chain(in_channels, num_classes, sliced=True)


def uneven():
    """Three classes of 10, 20 and 40 training images and 2, 3 and 6 test images (8-pixel gray squares)."""
    rng = np.random.default_rng(0)
    train_y = np.repeat([0, 1, 2], [10, 20, 40])
    test_y = np.repeat([0, 1, 2], [2, 3, 6])
    images = lambda n: rng.integers(0, 256, (n, 8, 8), dtype=np.uint8)  # noqa: E731
    return images(len(train_y)), train_y, images(len(test_y)), test_y, ["few", "some", "many"]


def _lines(result) -> list[str]:
    assert result.exit_code == 0, result.output
    return result.output.splitlines()


# --- the layer each cut follows ------------------------------------------------------------------------------------

def test_each_cut_is_named_by_the_layer_it_follows(cli):
    lines = _lines(cli("plan", *TINY_STUDY, "--cuts", "1,3"))
    assert "cut 1: after conv1 (layer 1 of 8)" in lines and "cut 3: after conv3 (layer 3 of 8)" in lines
    assert not any(line.startswith("cut 2") for line in lines)


def test_an_adapted_modules_cuts_are_named_by_its_module_paths(cli):
    lines = _lines(cli("plan", "--dataset", "synthetic", "--arch", "test_plan_output:chain", "--cut-at",
                       "features.1,features.3", "--variants", "BnB"))
    assert "cut 1: after features_1 (layer 1 of 3)" in lines and "cut 2: after features_3 (layer 2 of 3)" in lines


# --- the test split's smallest and largest class --------------------------------------------------------------------

def test_the_test_splits_smallest_and_largest_class(cli, split_file):
    split = split_file({"A": ["few"], "B": ["some", "many"]})
    lines = _lines(cli("plan", "--dataset", "test_plan_output:uneven", "--arch-option", "width=0.125", "--cuts", "1",
                       "--variants", "BnB", "--split", split, "--val-fraction", "0"))
    assert "    train 60 (smallest class 'some': 20, largest 'many': 40), val 0, test 9" in lines
    assert "    test: smallest class 'some': 3, largest 'many': 6" in lines
    assert "    train 10 (every class 10), val 0, test 2" in lines and "    test: every class 2" in lines


def test_a_cap_every_class_reaches_is_said_once(cli):
    """Capped, every class has as many images: the plan says so, rather than naming one class as both extremes."""
    lines = _lines(cli("plan", *TINY_STUDY, "--cuts", "1", "--test-per-class", "7"))
    assert [line for line in lines if line.startswith("    train ")] == ["    train 135 (every class 27), val 15, "
                                                                          "test 35"] * 2
    assert [line for line in lines if line.startswith("    test:")] == ["    test: every class 7"] * 2
    assert not any("largest" in line for line in lines)


# --- a source network: its file, hash, checked tensors and each SnB's parent ----------------------------------------

@pytest.fixture(scope="module")
def source_state(tmp_path_factory, cache_dir):
    """The state_dict of a network of the tiny study (as planned on the synthetic data), untrained."""
    from conftest import invoke

    result = invoke(cache_dir, "plan", *TINY_STUDY, "--cuts", "1", "--variants", "", "--json")
    assert result.exit_code == 0, result.output
    spec = NetworkSpec.from_dict(json.loads(result.output)["networks"][0]["spec"])
    return build_model(spec).state_dict()


@pytest.fixture
def save(tmp_path):
    """``save(name, obj)``: a file of ``torch.save(obj)`` in the test's folder."""
    def write(name: str, obj) -> object:
        path = tmp_path / name
        torch.save(obj, path)
        return path
    return write


def test_the_plan_shows_the_source_file_its_hash_and_the_tensors_checked_per_cut(cli, save, source_state):
    path = save("source.pth", source_state)
    lines = _lines(cli("plan", *TINY_STUDY, *CUTS, "--source", path))
    assert f"source network file {path}" in lines
    assert f"  SHA-256 {hashlib.sha256(path.read_bytes()).hexdigest()}" in lines
    # conv1 and conv2 hold a weight and a bias each
    assert ("cut 1: after conv1 (layer 1 of 8); the source file's 2 tensors of layers 1..1 checked (names and "
            "shapes)") in lines
    assert "cut 2: after conv2 (layer 2 of 8); the source file's 4 tensors of layers 1..2 checked (names and shapes)" \
        in lines
    parents = {line.split()[0]: line.split("<- ")[-1] for line in lines if line.startswith("target/")}
    assert parents["target/init0/S1B"] == parents["target/init0/S2B+"] == "source file source.pth"
    assert parents["target/init0/B2B"] == "target/init0/baseB"


@pytest.fixture
def no_data(monkeypatch):
    """Decoding the data fails the test: a source file's checks must come first."""
    import probe.execution.sweep

    def refuse(*args, **kwargs):
        raise AssertionError("the data was decoded before the source file was checked")

    monkeypatch.setattr(probe.execution.sweep, "load_dataset", refuse)


def _bad_sources(save, state: dict) -> dict[str, tuple[object, str]]:
    """name -> (a bad source file, what its one-line error says)."""
    whole = save("whole.pth", state)
    truncated = whole.with_name("truncated.pth")
    truncated.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    return {
        "truncated": (truncated, "is a damaged or truncated torch.save file"),
        "not a state_dict": (save("list.pth", list(state.values())), "not a state_dict"),
        "lacks a key": (save("lacks.pth", {k: v for k, v in state.items() if k != "stages.conv2.0.weight"}),
                        "has no 'stages.conv2.0.weight' for layer conv2"),
        # conv2's bias has as many values whatever the images' channels and size: told without the data
        "wrong shape": (save("shape.pth", {**state, "stages.conv2.0.bias": torch.zeros(3)}),
                        "stages.conv2.0.bias of shape [3]"),
        "DataParallel": (save("parallel.pth", {f"module.{k}": v for k, v in state.items()}),
                         "--source-key-map =module."),
    }


@pytest.mark.parametrize("bad", ["truncated", "not a state_dict", "lacks a key", "wrong shape", "DataParallel"])
def test_a_bad_source_file_is_refused_in_one_short_line_before_any_data_is_decoded(cli, save, source_state, no_data,
                                                                                     bad):
    path, culprit = _bad_sources(save, source_state)[bad]
    result = cli("plan", *TINY_STUDY, *CUTS, "--source", path)
    assert_one_line_error(result, path, culprit)
    if bad == "truncated":  # torch's own message of a truncated zip alone is 400 characters
        error = next(line for line in result.output.splitlines() if line.startswith("Error:"))
        assert "save or download it again" in error and "miniz" not in error, error
        assert len(error) < 200 + len(str(path)), error


def test_a_good_source_file_passes_the_early_check(cli, save, source_state, no_data):
    """The early check refuses nothing a good file holds: the command goes on to the data (refused here)."""
    result = cli("plan", *TINY_STUDY, *CUTS, "--source", save("source.pth", source_state))
    assert isinstance(result.exception, AssertionError) and "data was decoded" in str(result.exception)


def test_a_dataparallel_file_plans_with_the_hinted_key_map(cli, save, source_state):
    path = save("parallel.pth", {f"module.{k}": v for k, v in source_state.items()})
    lines = _lines(cli("plan", *TINY_STUDY, *CUTS, "--source", path, "--source-key-map", "=module."))
    assert "  key map: '' -> 'module.'" in lines
    assert any(line.startswith("cut 2: after conv2") and "4 tensors" in line for line in lines)


# --- advice where the epochs are few for the recipe -----------------------------------------------------------------

@pytest.mark.parametrize("recipe, advised", [
    (Recipe(epochs=4), True),  # the paper's step schedule in four epochs: the run, at chance
    (Recipe(epochs=4, schedule="cosine", warmup=0.2, lr=0.02), False),
    (Recipe(epochs=4, schedule="cosine", lr=0.02), False),  # what the user found by trial
    (Recipe(epochs=4, schedule="cosine", lr=0.05), True),  # a high rate, no warm-up
    (Recipe(epochs=4, schedule="cosine", lr=0.05, warmup=0.1), False),
    (Recipe(epochs=10), False),
    (Recipe(), False),  # the paper's 30 epochs
])
def test_budget_advice(recipe, advised):
    advice = budget_advice(recipe)
    assert (advice is not None) == advised
    if advised:
        assert "\n" not in advice and advice.startswith("short budget: 4 epochs") and advice.endswith(ADVICE)


def test_plan_advises_a_short_budget_in_one_line(cli):
    lines = _lines(cli("plan", *TINY_STUDY, "--cuts", "1", "--variants", "", "--epochs", "4"))
    advice = [line for line in lines if line.startswith("short budget:")]
    assert len(advice) == 1 and "4 epochs of the step schedule" in advice[0] and advice[0].endswith(ADVICE)
    lines = _lines(cli("plan", *TINY_STUDY, "--cuts", "1", "--variants", "", *ADVICE.split()))
    assert not any(line.startswith("short budget:") for line in lines)
    result = cli("plan", *TINY_STUDY, "--cuts", "1", "--variants", "", "--json")  # JSON for machines: no advice
    assert result.exit_code == 0 and json.loads(result.output)["networks"]


def test_train_advises_when_it_plans(cli, tmp_path):
    run = tmp_path / "run"
    result = cli("train", run, *TINY_STUDY, "--cuts", "1", "--variants", "", "--networks", "baseB")
    assert result.exit_code == 0, result.output
    assert sum(line.startswith("short budget:") for line in result.output.splitlines()) == 1
    result = cli("train", run)  # resuming the run's own plan: nothing is planned
    assert result.exit_code == 0, result.output
    assert "short budget:" not in result.output
    # a refusal stays one line: the advice comes only once the run is planned
    refused = cli("train", tmp_path / "other", *TINY_STUDY, "--cuts", "9")
    assert refused.exit_code != 0 and "short budget:" not in refused.output


# --- a forward that slices a Sequential -----------------------------------------------------------------------------

def test_a_forward_that_slices_a_sequential_is_refused_in_one_line(cli):
    result = cli("plan", "--dataset", "synthetic", "--arch", "test_plan_output:sliced", "--cut-at",
                 "features.1,features.3", "--variants", "BnB")
    assert_one_line_error(result, "forward slices the module 'features' (features[0:4])",
                          "a Sequential slice builds a new module at every call", "--cut-at", "features.3",
                          "without slicing")
    assert "not installed as a submodule" not in result.output

"""Pretrained source networks by name (``--source torchvision:WEIGHTS``, ``--source timm:NAME``): resolved through the
library's own weights API to the file in its cache, recorded in the plan like a file source, with the weights' own
normalization and input size as the defaults.

Nothing is downloaded: the weights file is planted in a temporary ``TORCH_HOME`` (a torchvision resnet18 with random
weights, saved under the name of ``ResNet18_Weights.IMAGENET1K_V1``'s url), and the download itself is faked.
"""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path

import pytest
import torch
import torchvision
from conftest import assert_one_line_error

from probe.cli.options import study_from_options
from probe.errors import ProbeError
from probe.planning.named_source import is_named_source, resolve_named_source

WEIGHTS = "ResNet18_Weights.IMAGENET1K_V1"
FILE = "resnet18-f37072fd.pth"  # the file name in that enum's url
IMAGENET = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])  # its transforms' mean and std
STUDY = ["--dataset", "synthetic", "--arch", "torchvision.models:resnet18", "--epochs", "1", "--batch-size", "32",
         "--train-per-class", "5", "--val-fraction", "0", "--cuts", "1"]


@pytest.fixture(scope="module")
def resnet18_state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return torchvision.models.resnet18().state_dict()


@pytest.fixture
def torch_home(tmp_path, monkeypatch) -> Path:
    """An empty TORCH_HOME: torch.hub's checkpoints live in TORCH_HOME/hub/checkpoints."""
    home = tmp_path / "torch-home"
    monkeypatch.setenv("TORCH_HOME", str(home))
    return home


@pytest.fixture
def planted(torch_home, resnet18_state) -> Path:
    """ResNet18_Weights.IMAGENET1K_V1's file in the cache, as torchvision would have downloaded it."""
    path = torch_home / "hub" / "checkpoints" / FILE
    path.parent.mkdir(parents=True)
    torch.save(resnet18_state, path)
    return path


def _study(command: str, *args):
    """The study a command line describes, as ``probe COMMAND`` builds it (its source checked, no data decoded)."""
    from probe.cli.main import main

    cmd = main.commands[command]
    ctx = cmd.make_context(command, [str(a) for a in args])
    with ctx:
        return study_from_options(dict(ctx.params))


def test_which_sources_are_names():
    assert is_named_source("torchvision:ResNet50_Weights.IMAGENET1K_V2")
    assert is_named_source("timm:resnet50.a1_in1k")
    assert not is_named_source("/home/me/resnet50-0676ba61.pth")
    assert not is_named_source("weights.pth")
    assert not is_named_source("hub:thing")


def test_the_plan_records_the_cached_file_and_the_enums_normalization(cli, planted):
    result = cli("plan", *STUDY, "--image-size", "64", "--source", f"torchvision:{WEIGHTS}", "--json")
    assert result.exit_code == 0, result.output
    plan = json.loads(result.stdout)
    source = plan["study"]["source"]
    assert source["path"] == str(planted)
    assert source["sha256"] == hashlib.sha256(planted.read_bytes()).hexdigest()
    assert (source["mean"], source["std"]) == IMAGENET
    snb = [n["spec"]["source_network"] for n in plan["networks"] if n["spec"].get("source_network")]
    assert snb and all(s == source for s in snb)
    stated = [line for line in result.stderr.splitlines() if line.startswith("source ")]
    assert len(stated) == 1, result.stderr
    assert f"torchvision:{WEIGHTS}" in stated[0] and str(planted) in stated[0]
    assert "torchvision.models:resnet18" in stated[0] and "mean [0.485, 0.456, 0.406]" in stated[0]
    table = cli("plan", *STUDY, "--image-size", "64", "--source", f"torchvision:{WEIGHTS}")
    assert table.exit_code == 0, table.output
    assert f"source network file {planted}" in table.stdout
    assert "input normalization: mean [0.485, 0.456, 0.406], std [0.229, 0.224, 0.225]" in table.stdout


@pytest.mark.parametrize("name", [WEIGHTS, "resnet18.IMAGENET1K_V1", "resnet18", "ResNet18_Weights.DEFAULT"])
def test_the_forms_of_a_torchvision_name(planted, name):
    named = resolve_named_source(f"torchvision:{name}")
    assert named.name == f"torchvision:{WEIGHTS}"
    assert named.path == planted
    assert named.network == "torchvision.models:resnet18"
    assert (list(named.mean), list(named.std), named.image_size) == (*IMAGENET, 224)


def test_the_enums_input_size_is_the_default_image_size(planted):
    study = _study("plan", *STUDY, "--source", f"torchvision:{WEIGHTS}")
    assert study.data.image_size == 224
    assert (list(study.source.mean), list(study.source.std)) == IMAGENET
    study = _study("plan", *STUDY, "--source", f"torchvision:{WEIGHTS}", "--image-size", "64",
                   "--source-normalization", "data")
    assert study.data.image_size == 64
    assert study.source.mean is None  # the run's own statistics, as asked
    study = _study("plan", *STUDY, "--source", f"torchvision:{WEIGHTS}", "--crop-size", "16")
    assert study.data.image_size is None  # a network input of its own: the images keep theirs


def test_a_missing_file_is_one_line_naming_it_and_where_it_goes(cli, torch_home):
    result = cli("plan", *STUDY, "--source", f"torchvision:{WEIGHTS}")
    where = torch_home / "hub" / "checkpoints" / FILE
    assert_one_line_error(result, f"torchvision:{WEIGHTS}", FILE, where, "https://download.pytorch.org/models/" + FILE,
                          "--download")
    assert not where.exists()


def test_only_train_with_download_fetches_it(torch_home, resnet18_state, monkeypatch):
    fetched = []

    def download_url_to_file(url, dst, hash_prefix=None, progress=True):
        fetched.append((url, hash_prefix))
        torch.save(resnet18_state, dst)

    monkeypatch.setattr(torch.hub, "download_url_to_file", download_url_to_file)
    with pytest.raises(ProbeError, match="--download"):
        _study("train", "run", *STUDY, "--source", f"torchvision:{WEIGHTS}")
    assert not fetched
    study = _study("train", "run", *STUDY, "--source", f"torchvision:{WEIGHTS}", "--download")
    assert fetched == [("https://download.pytorch.org/models/" + FILE, "f37072fd")]  # checked as torch.hub does
    assert study.source.path == str(torch_home / "hub" / "checkpoints" / FILE)


def test_a_failed_download_is_one_line(torch_home, monkeypatch):
    def offline(url, dst, hash_prefix=None, progress=True):
        raise OSError("<urlopen error [Errno -3] Temporary failure in name resolution>")

    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(ProbeError, match=f"cannot download .* put the file {FILE} in .*checkpoints by hand"):
        resolve_named_source(f"torchvision:{WEIGHTS}", download=True)


@pytest.mark.parametrize("name, culprits", [
    ("ResNet18_Weights.NOPE", ["has no 'NOPE'", "IMAGENET1K_V1"]),
    ("NoSuch_Weights.V1", ["'NoSuch_Weights.V1'", "ResNet50_Weights.IMAGENET1K_V2"]),
    ("", ["names no weights"]),
])
def test_unknown_torchvision_weights(cli, torch_home, name, culprits):
    assert_one_line_error(cli("plan", *STUDY, "--source", f"torchvision:{name}"), *culprits)


def test_weights_of_another_network_are_refused_early(cli, planted):
    result = cli("plan", *STUDY, "--image-size", "64", "--arch", "torchvision.models:resnet34",
                 "--source", f"torchvision:{WEIGHTS}", "--cuts", "2")
    assert_one_line_error(result, FILE)
    assert "torchvision.models:resnet18" in result.stderr  # the stated line says whose weights they are


def test_timm_without_timm_is_one_line(cli, monkeypatch):
    monkeypatch.setitem(sys.modules, "timm", None)  # import timm fails, installed or not
    monkeypatch.setitem(sys.modules, "timm.models", None)
    assert_one_line_error(cli("plan", *STUDY, "--source", "timm:resnet50.a1_in1k"), "timm", "pip install timm")

"""Your own network: a builder by import path (--arch MODULE:FUNCTION, cut with --cut-at or at a torchvision family's
default cut points), one registered with @register_architecture or through an entry point; the spec records where
its code is, so later commands and dask workers rebuild it, and a process without that code still reads the run."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from conftest import assert_one_line_error
from torch import nn

from probe import register_architecture
from probe.architectures import REGISTRY, build_network, get_architecture
from probe.architectures.registry import complete_arch_spec
from probe.errors import ProbeError
from probe.plugins import function_path
from probe.specs.spec import ArchSpec
from probe.storage.run import Run

MYNET = '''
"""A user's own networks."""
import torch
from torch import nn

from probe import register_architecture


def cnn4(in_channels, num_classes, width=8):
    """Four conv blocks and a classifier, as a plain nn.Sequential."""
    blocks, channels = [], in_channels
    for i in range(4):
        blocks.append(nn.Sequential(nn.Conv2d(channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
                                    nn.MaxPool2d(2) if i % 2 else nn.Identity()))
        channels = width
    return nn.Sequential(*blocks, nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, num_classes)))


class TinyVGG(nn.Module):
    def __init__(self, in_channels, num_classes, width):
        super().__init__()
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(width, 2 * width, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(2 * width, 2 * width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1))
        self.classifier = nn.Linear(2 * width, num_classes)

    def forward(self, x):
        return self.classifier(torch.flatten(self.features(x), 1))


@register_architecture("tinyvgg", cut_at=("features.2", "features.5", "features.8"),
                       layers=("pool1", "pool2", "pool3", "head"))
def tinyvgg(in_channels, num_classes, width=8):
    """A VGG-style network: three conv-relu-pool stages and a linear classifier."""
    return TinyVGG(in_channels, num_classes, width)
'''

# A wrapper script: the command line, with tinyvgg registered (a plain 'probe' does not import mynet).
MYPROBE = '''
import mynet  # noqa: F401 (registers tinyvgg)
from probe.cli.main import main

if __name__ == "__main__":
    main()
'''

TINY = ["--dataset", "synthetic", "--arch-option", "width=4", "--epochs", "1", "--batch-size", "32",
        "--train-per-class", "10", "--quiet", "--device", "cpu"]


# Builders of this module, importable by the tests' processes as test_own_network:NAME.

def plain_net(in_channels, num_classes):
    return nn.Sequential(nn.Conv2d(in_channels, 4, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                         nn.Linear(4, num_classes))


def constant_net(in_channels, num_classes):
    """A builder that sets its weights itself (as one loading pretrained weights does)."""
    net = plain_net(in_channels, num_classes)
    with torch.no_grad():
        for p in net.parameters():
            p.fill_(0.5)
    return net


def not_a_module(in_channels):
    return "a network"


def other_builder(in_channels, num_classes):
    return plain_net(in_channels, num_classes)


def layered_builder(in_channels, num_classes):
    """A builder returning a LayeredNet of its own, used as it is."""
    from probe.architectures.layered import LayeredNet

    return LayeredNet([("body", nn.Sequential(nn.Conv2d(in_channels, 4, 3), nn.ReLU())),
                       ("head", nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(4, num_classes)))])


def scripted(in_channels, num_classes):
    return plain_net(in_channels, num_classes)


@pytest.fixture
def registry():
    """The registry, restored after the test (registrations are process-wide)."""
    saved = dict(REGISTRY)
    yield REGISTRY
    REGISTRY.clear()
    REGISTRY.update(saved)


def _env(*paths) -> dict:
    return {**os.environ, "PYTHONPATH": os.pathsep.join(map(str, paths))}


def _probe(cwd, env, *args, script=("-m", "probe.cli.main")) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, *script, *map(str, args)], cwd=cwd, env=env, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stdout + out.stderr
    return out


@pytest.fixture(scope="module")
def user_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("user")
    (folder / "mynet.py").write_text(MYNET)
    (folder / "myprobe.py").write_text(MYPROBE)
    return folder


def test_a_chain_by_import_path_runs_the_whole_protocol(user_dir, cache_dir):
    """train, status, extract, analyze of --arch mynet:cnn4 --cut-at, each its own process; status and analyze also
    where mynet cannot be imported."""
    run, env = user_dir / "chain", _env(user_dir)
    _probe(user_dir, env, "train", run, *TINY, "--arch", "mynet:cnn4", "--cut-at", "0,1,2,3", "--cuts", "2",
           "--variants", "BnB,AnB", "--cache-dir", cache_dir)
    plan = json.loads(Run(run).plan.read_text())
    assert plan["study"]["arch"] == {"name": "mynet:cnn4", "init": "none", "options": {"width": 4},
                                     "cut_at": ["0", "1", "2", "3"], "builder": None}
    assert {tuple(n["layers"]) for n in plan["networks"]} == {("0", "1", "2", "3", "head")}
    _probe(user_dir, env, "extract", run, "--quiet", "--device", "cpu", "--cache-dir", cache_dir)
    without = _env()  # mynet is not importable
    assert "6 done, 0 running" in _probe(user_dir, without, "status", run).stdout
    _probe(user_dir, without, "analyze", run, "--max-samples", "100")
    assert "cka_anb_baseb" in (Run(run).analysis / "representations.csv").read_text()  # views from the store


def test_a_registered_builder_runs_on_dask_workers_and_in_plain_commands(user_dir, cache_dir):
    """tinyvgg is registered by the wrapper script's import of mynet; the workers, plain 'probe extract' and 'probe
    status' find it through the import path the spec records (status without importing it)."""
    run, env = user_dir / "registered", _env(user_dir)
    _probe(user_dir, env, "train", run, *TINY, "--arch", "tinyvgg", "--cuts", "1", "--variants", "BnB",
           "--cache-dir", cache_dir, "--executor", "dask", "--workers", "1", script=("myprobe.py",))
    plan = json.loads(Run(run).plan.read_text())
    assert plan["study"]["arch"]["builder"] == "mynet:tinyvgg"
    assert {tuple(n["layers"]) for n in plan["networks"]} == {("pool1", "pool2", "pool3", "head")}
    out = _probe(user_dir, env, "extract", run, "--quiet", "--device", "cpu", "--cache-dir", cache_dir,
                 "--executor", "dask", "--workers", "1")
    assert "wrote 4, already complete 0" in out.stdout
    assert "4 done, 0 running" in _probe(user_dir, _env(), "status", run).stdout


def test_torchvision_resnet18_by_import_path_plans_and_trains(tmp_path, cli):
    run = tmp_path / "run"
    result = cli("train", run, "--dataset", "synthetic", "--arch", "torchvision.models:resnet18", "--epochs", "1",
                 "--batch-size", "32", "--train-per-class", "5", "--val-fraction", "0", "--networks", "baseA")
    assert result.exit_code == 0, result.output
    plan = json.loads(Run(run).plan.read_text())
    assert plan["networks"][0]["layers"] == ["stem", "layer1", "layer2", "layer3", "layer4", "head"]
    assert plan["study"]["arch"]["init"] == "none"
    assert json.loads(Run(run).network(n_id(plan, "baseA")).metrics.read_text())["status"] == "done"
    net = build_network(ArchSpec("torchvision.models:resnet18"), 3, 5, 16, 0)
    first = net.stages["stem"].conv1
    assert (first.kernel_size, first.stride) == ((3, 3), (1, 1))  # the small-image stem on 16-pixel images


def n_id(plan: dict, name: str) -> str:
    return next(n["id"] for n in plan["networks"] if n["id"].endswith("/" + name))


def test_a_vision_transformer_by_import_path_plans_and_trains(tmp_path, cli):
    run = tmp_path / "run"
    options = ["patch_size=4", "num_layers=2", "num_heads=2", "hidden_dim=16", "mlp_dim=32"]
    result = cli("train", run, "--dataset", "synthetic", "--arch",
                 "torchvision.models.vision_transformer:VisionTransformer",
                 *(a for o in options for a in ("--arch-option", o)), "--epochs", "1", "--batch-size", "32",
                 "--train-per-class", "5", "--val-fraction", "0", "--networks", "baseB")
    assert result.exit_code == 0, result.output
    plan = json.loads(Run(run).plan.read_text())
    assert plan["networks"][0]["layers"] == ["embedding", "encoder1", "encoder2", "head"]
    assert json.loads(Run(run).network(n_id(plan, "baseB")).metrics.read_text())["status"] == "done"


def test_init_none_keeps_the_builders_weights(registry):
    arch = ArchSpec("test_own_network:constant_net", "none", cut_at=("1",))
    net = build_network(arch, 3, 4, 8, seed=0)
    assert net.layer_names == ["1", "head"]
    assert all(torch.equal(p, torch.full_like(p, 0.5)) for p in net.parameters())
    reinitialized = build_network(ArchSpec(arch.name, "kaiming", cut_at=("1",)), 3, 4, 8, seed=0)
    assert not all(torch.equal(p, torch.full_like(p, 0.5)) for p in reinitialized.parameters())
    # an import path's default init is none: the builder's own
    assert complete_arch_spec(ArchSpec(arch.name, cut_at=("1",))).init == "none"


def test_registering_records_the_builder_and_refuses_duplicates(registry):
    register_architecture("own-plain", cut_at=("1",))(plain_net)
    entry = get_architecture("own-plain")
    assert (entry.builder, entry.origin, entry.default_init) == ("test_own_network:plain_net", "registered", "none")
    assert complete_arch_spec(ArchSpec("own-plain")).builder == "test_own_network:plain_net"
    assert build_network(ArchSpec("own-plain"), 1, 3, 8, 0).layer_names == ["1", "head"]
    register_architecture("own-plain", cut_at=("1",))(plain_net)  # its module imported again: the same builder
    for name in ("own-plain", "caffenet"):
        with pytest.raises(ProbeError, match=f"architecture '{name}' is already registered") as err:
            register_architecture(name)(other_builder)
        assert "\n" not in str(err.value)
    register_architecture("own-plain", replace=True)(other_builder)
    assert get_architecture("own-plain").builder == "test_own_network:other_builder"
    # a spec made with the old builder is refused rather than built from another one
    with pytest.raises(ProbeError, match="test_own_network:plain_net"):
        build_network(ArchSpec("own-plain", "none", builder="test_own_network:plain_net"), 1, 3, 8, 0)

    def local(in_channels):
        return plain_net(in_channels, 2)

    with pytest.raises(ProbeError, match="top level of a module"):
        register_architecture("own-local")(local)
    with pytest.raises(ProbeError, match="import path"):
        register_architecture("own:plain")(plain_net)


def test_declared_layers_name_the_cuts_and_are_held_to(registry):
    register_architecture("own-named", cut_at=("1",), layers=("conv", "head"))(plain_net)
    assert build_network(ArchSpec("own-named"), 3, 2, 8, 0).layer_names == ["conv", "head"]
    # a spec cut elsewhere names its layers after its cuts
    assert build_network(ArchSpec("own-named", cut_at=("3",)), 3, 2, 8, 0).layer_names == ["3", "head"]
    register_architecture("own-layered", layers=("body", "head"))(layered_builder)
    assert build_network(ArchSpec("own-layered"), 3, 2, 8, 0).layer_names == ["body", "head"]
    register_architecture("own-wrong", layers=("a", "b", "head"))(layered_builder)
    with pytest.raises(ProbeError, match="declares layers a, b, head, but its builder .* built body, head"):
        build_network(ArchSpec("own-wrong"), 3, 2, 8, 0)
    with pytest.raises(ProbeError, match="cuts after 1 modules, making 2 layers, but declares 3"):
        register_architecture("own-short", cut_at=("1",), layers=("a", "b", "head"))


def test_a_script_run_as_a_program_is_named_by_its_file(monkeypatch, tmp_path):
    """A builder registered in a script run as a program (__main__) is imported elsewhere by the script's name."""
    main = type(sys)("__main__")
    main.__file__, main.__spec__ = str(tmp_path / "wrapper.py"), None
    monkeypatch.setitem(sys.modules, "__main__", main)
    monkeypatch.setattr(scripted, "__module__", "__main__")
    assert function_path(scripted, "a builder") == "wrapper:scripted"


def test_an_entry_point_adds_an_architecture(registry, entry_point):
    entry_point("own-ep", "test_own_network:plain_net", "probe.architectures")
    with pytest.raises(ProbeError, match="no default cut points"):  # found, and cut where the spec says
        build_network(ArchSpec("own-ep"), 3, 2, 8, 0)
    assert get_architecture("own-ep").origin == "entry point"
    assert build_network(ArchSpec("own-ep", cut_at=("1",)), 3, 2, 8, 0).layer_names == ["1", "head"]
    # found by name wherever the distribution is installed: the spec records no builder
    assert complete_arch_spec(ArchSpec("own-ep", cut_at=("1",))).builder is None


def test_probe_archs_lists_registered_networks_and_says_how_to_bring_ones_own(registry, cli):
    register_architecture("own-plain", cut_at=("1",))(plain_net)
    result = cli("archs")
    assert result.exit_code == 0, result.output
    assert "caffenet-small: CaffeNet's 8 layers" in result.output and "conv1, conv2" in result.output
    assert "own-plain (registered, test_own_network:plain_net)" in result.output
    assert "--arch MODULE:FUNCTION" in result.output and "--cut-at" in result.output


@pytest.mark.parametrize("args, culprits", [
    (["--arch", "no_such_module:build"], ["'no_such_module'", "PYTHONPATH"]),
    (["--arch", "test_own_network:missing"], ["'missing'"]),
    (["--arch", "test_own_network:plain_net"], ["Sequential", "--cut-at"]),
    (["--arch", "test_own_network:plain_net", "--cut-at", "7"], ["'7'"]),
    (["--arch", "test_own_network:plain_net", "--cut-at", "1,,2"], ["'1,,2'"]),
    (["--arch", "test_own_network:not_a_module", "--cut-at", "1"], ["str", "not an nn.Module"]),
    (["--arch", "test_own_network:plain_net", "--cut-at", "1", "--arch-option", "depth=3"], ["depth"]),
    (["--arch", "torchvision.models:resnet18", "--arch-option", "weights=DEFAULT"], ["'weights'", "set by probe"]),
    (["--arch", "caffenet-small", "--cut-at", "1"], ["LayeredNet", "--cut-at"]),
    (["--arch", "vgg99"], ["'vgg99'", "MODULE:FUNCTION"]),
    (["--arch", "torchvision.models.vision_transformer:VisionTransformer", "--arch-option", "patch_size=5",
      "--arch-option", "num_layers=1", "--arch-option", "num_heads=1", "--arch-option", "hidden_dim=8",
      "--arch-option", "mlp_dim=8"], ["VisionTransformer", "patch_size=5"]),
])
def test_refusals_are_one_line(cli, args, culprits):
    assert_one_line_error(cli("plan", "--dataset", "synthetic", *args), *culprits)

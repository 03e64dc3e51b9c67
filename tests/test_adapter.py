"""Adapting a module to the layer contract: torchvision's families and chains of one's own give the original's
logits and cut outputs, freeze exactly their pieces up to a cut, and keep the original's state_dict one to one;
modules that are not chains are refused in one line; adapted networks train with their frozen prefix untouched."""

from __future__ import annotations

import math
from functools import partial

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.testing import assert_close

from probe.architectures.adapter import layered_from_module
from probe.architectures.builders import torchvision_network
from probe.architectures.torchvision_models import default_cut_points, layered_torchvision
from probe.errors import ProbeError

NUM_CLASSES = 5
SIZE = 32
VIT = "torchvision.models.vision_transformer:VisionTransformer"
VIT_OPTIONS = {"patch_size": 4, "num_layers": 2, "num_heads": 2, "hidden_dim": 32, "mlp_dim": 64}


def _tiny(family: str) -> nn.Module:
    """A small instance of a torchvision family for 32-pixel inputs."""
    from torchvision import models
    from torchvision.models.convnext import CNBlockConfig
    from torchvision.models.efficientnet import MBConvConfig
    from torchvision.models.vgg import make_layers

    if family.startswith("resnet"):
        return models.resnet18(num_classes=NUM_CLASSES)
    if family == "vgg":  # VGG's classifier is 25088 x 4096 whatever its features; init_weights=False keeps it quick
        return models.VGG(make_layers([8, "M", 16, "M", 512, "M"], batch_norm=True), NUM_CLASSES, init_weights=False)
    if family == "mobilenet_v3":
        return models.mobilenet_v3_small(num_classes=NUM_CLASSES)
    if family == "efficientnet":
        mb = partial(MBConvConfig, width_mult=0.25, depth_mult=0.5)
        return models.EfficientNet([mb(1, 3, 1, 32, 16, 1), mb(6, 3, 2, 16, 24, 2), mb(6, 5, 2, 24, 40, 2)], 0.2,
                                   num_classes=NUM_CLASSES)
    if family == "convnext":
        stages = [CNBlockConfig(8, 16, 1), CNBlockConfig(16, 32, 1), CNBlockConfig(32, None, 1)]
        return models.ConvNeXt(stages, num_classes=NUM_CLASSES)
    return models.VisionTransformer(image_size=SIZE, num_classes=NUM_CLASSES, **VIT_OPTIONS)


FAMILIES = ["resnet", "resnet-blocks", "vgg", "mobilenet_v3", "efficientnet", "convnext", "vit"]


def _build(family: str, seed: int = 0) -> tuple[nn.Module, list[str]]:
    torch.manual_seed(seed)
    model = _tiny(family)
    return model, [path for path, _ in default_cut_points(model, blocks=family == "resnet-blocks")]


def _input(in_channels: int = 3, batch: int = 2, size: int = SIZE) -> torch.Tensor:
    return torch.randn(batch, in_channels, size, size, generator=torch.Generator().manual_seed(1))


def _outputs_of(model: nn.Module, paths: list[str], x: torch.Tensor) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """The model's logits and the outputs of its modules at ``paths``, by forward hooks."""
    out = {}
    hooks = [model.get_submodule(p).register_forward_hook(lambda m, i, o, p=p: out.setdefault(p, o)) for p in paths]
    try:
        logits = model(x)
    finally:
        for hook in hooks:
            hook.remove()
    return logits, out


def _parameters_behind(model: nn.Module, path: str, x: torch.Tensor) -> set[str]:
    """The names of the model's parameters the output of the module at ``path`` depends on."""
    _, out = _outputs_of(model, [path], x)
    params = dict(model.named_parameters())
    grads = torch.autograd.grad(out[path].sum(), list(params.values()), allow_unused=True)
    return {name for name, grad in zip(params, grads) if grad is not None}


def _same(a: torch.Tensor, b: torch.Tensor) -> None:
    assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("family", FAMILIES)
def test_adapted_family_is_the_original_cut_at_its_pieces(family):
    model, paths = _build(family)
    net = layered_torchvision(model, blocks=family == "resnet-blocks")
    assert len(net.cut_points) == len(paths) and net.layer_names[-1] == "head"
    model.eval()
    net.eval()
    x = _input()

    # the same logits, and each cut output is the output of its piece
    with torch.no_grad():
        expected, pieces = _outputs_of(model, paths, x)
        logits, feats = net.forward_intermediates(x)
    _same(logits, expected)
    assert list(feats) == net.cut_points
    for path, name in zip(paths, net.cut_points):
        _same(feats[name], pieces[path])

    # the state_dict is the original's, one to one, under stages.<layer>.<original key>, sharing its tensors
    state, source = net.state_dict(), model.state_dict()
    assert sorted(net.source_keys) == sorted(state)
    assert sorted(net.source_keys.values()) == sorted(source)
    for key, source_key in net.source_keys.items():
        assert key.split(".", 2)[2] == source_key
        assert state[key].data_ptr() == source[source_key].data_ptr()
        _same(state[key], source[source_key])

    # freeze(n) freezes exactly the parameters the output of piece n depends on, and keeps them in eval mode
    cuts = sorted({1, len(paths) // 2, len(paths)})
    behind = {n: _parameters_behind(model, paths[n - 1], x) for n in cuts}
    for n in cuts:
        net.freeze(n)
        net.train()
        assert {net.source_keys[k] for k, p in net.named_parameters() if not p.requires_grad} == behind[n], n
        assert not any(m.training for stage in list(net.stages.values())[:n] for m in stage.modules())


@pytest.mark.parametrize("family", [f for f in FAMILIES if f != "vgg"])  # VGG's state_dict is 0.5 GB
def test_a_saved_state_dict_of_the_original_loads_bit_identically(family, tmp_path):
    source, _ = _build(family, seed=1)
    torch.save(source.state_dict(), tmp_path / "weights.pt")
    model, _ = _build(family, seed=2)
    net = layered_torchvision(model, blocks=family == "resnet-blocks")
    saved = torch.load(tmp_path / "weights.pt", weights_only=True)
    net.load_state_dict({key: saved[source_key] for key, source_key in net.source_keys.items()})
    state = net.state_dict()
    for key, source_key in net.source_keys.items():
        assert torch.equal(state[key], saved[source_key]), key
    source.eval()
    net.eval()
    with torch.no_grad():
        _same(net(_input()), source(_input()))


def test_a_sequential_adapts_at_dotted_cut_points():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()),
                          nn.Sequential(nn.Conv2d(4, 4, 3), nn.ReLU(), nn.MaxPool2d(2)),
                          nn.Flatten(), nn.Linear(4 * 14 * 14, NUM_CLASSES))
    net = layered_from_module(model, ["0", "1.2"])
    assert net.layer_names == ["0", "1_2", "head"]
    assert "stages.1_2.1.0.weight" in net.state_dict()
    x = _input()
    with torch.no_grad():
        expected, pieces = _outputs_of(model, ["0", "1.2"], x)
        logits, feats = net.forward_intermediates(x)
    _same(logits, expected)
    _same(feats["0"], pieces["0"])
    _same(feats["1_2"], pieces["1.2"])


class _Chain(nn.Module):
    """A module calling its children in order, with a reshape before the classifier."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 4, 3, stride=2), nn.ReLU(), nn.Conv2d(4, 4, 3, stride=2), nn.ReLU())
        self.fc = nn.Linear(4 * 7 * 7, NUM_CLASSES)

    def forward(self, x):
        x = self.body(x)
        x = x.view(x.size(0), -1)
        return self.fc(x)


def test_a_module_calling_its_children_in_order_adapts_with_the_reshape_in_the_layer_above():
    torch.manual_seed(0)
    model = _Chain()
    net = layered_from_module(model, ["body.1", "body.3"], ["conv1", "conv2", "fc"])
    assert net.cut_points == ["conv1", "conv2"]
    x = _input()
    with torch.no_grad():
        expected, pieces = _outputs_of(model, ["body.3"], x)
        logits, feats = net.forward_intermediates(x)
    _same(logits, expected)
    _same(feats["conv2"], pieces["body.3"])  # the activation map, not its flattened view
    assert net.source_keys["stages.fc.fc.weight"] == "fc.weight"


class _Affine(nn.Module):
    def __init__(self):
        super().__init__()
        self.a, self.b = nn.Linear(4, 4), nn.Linear(4, 4)

    def forward(self, x):
        x = self.a(x)
        x = x * 2 + 1
        return self.b(x)


class _Skip(_Affine):
    def forward(self, x):
        return self.b(self.a(x)) + x


class _Twice(_Affine):
    def forward(self, x):
        return self.b(self.a(self.a(x)))


class _TrainingBranch(_Affine):
    def forward(self, x):
        x = self.b(self.a(x))
        return x * 0.5 if self.training else x


class _DataBranch(_Affine):
    def forward(self, x):
        x = self.a(x)
        return self.b(x) if x.sum() > 0 else x


@pytest.mark.parametrize("module, cut_after, message", [
    (_Affine, ["a"], r"_Affine's forward does functional work \(mul\) on the output of 'a'"),
    (_Affine, ["c"], "_Affine has no module 'c'"),
    (_Affine, ["b"], "_Affine's forward computes nothing after its last cut 'b'"),
    (_Affine, ["b", "a"], "_Affine's forward runs its pieces in another order"),
    (_Skip, ["a"], "_Skip is not a chain at cut 'a'"),
    (_Twice, ["a"], "_Twice's forward calls 'a' 2 times"),
    (_TrainingBranch, ["a"], "_TrainingBranch's forward computes differently in training and eval mode"),
    (_DataBranch, ["a"], "torch.fx cannot trace _DataBranch's forward"),
])
def test_a_module_that_is_not_a_chain_is_refused_in_one_line(module, cut_after, message):
    model = module()
    with pytest.raises(ProbeError, match=message) as err:
        layered_from_module(model, cut_after)
    assert "\n" not in str(err.value)
    assert model.training  # tracing in both modes leaves the model's mode as it was


def test_refusals_of_torchvision_network():
    with pytest.raises(ProbeError, match="no default cut points for Sequential"):
        layered_torchvision(nn.Sequential(nn.Linear(2, 2), nn.Linear(2, 2)))
    with pytest.raises(ProbeError, match="'weights' of resnet18 is set by probe"):
        torchvision_network("resnet18", 3, NUM_CLASSES, SIZE, weights="DEFAULT")
    with pytest.raises(ProbeError, match="torchvision has no model 'resnet19'"):
        torchvision_network("resnet19", 3, NUM_CLASSES, SIZE)
    with pytest.raises(ProbeError, match="per-block cut points are defined for ResNet, not VisionTransformer"):
        torchvision_network(VIT, 3, NUM_CLASSES, SIZE, blocks=True, **VIT_OPTIONS)


@pytest.mark.parametrize("builder, in_channels, size, options, names", [
    ("resnet18", 1, 32, {}, ["stem", "layer1", "layer2", "layer3", "layer4", "head"]),
    ("resnet18", 3, 64, {"blocks": True}, ["stem", *(f"block{i}" for i in range(1, 9)), "head"]),
    ("vgg11_bn", 1, 32, {}, ["pool1", "pool2", "pool3", "pool4", "pool5", "head"]),
    ("mobilenet_v3_small", 1, 32, {}, [*(f"features_{i}" for i in range(13)), "head"]),
    (VIT, 1, 32, VIT_OPTIONS, ["embedding", "encoder1", "encoder2", "head"]),
])
def test_torchvision_network_builds_for_the_input(builder, in_channels, size, options, names):
    torch.manual_seed(0)
    net = torchvision_network(builder, in_channels, NUM_CLASSES, size, **options)
    assert net.layer_names == names
    first = next(m for m in net.modules() if isinstance(m, nn.Conv2d))
    assert first.in_channels == in_channels
    if builder == "resnet18":  # the small-image stem under 64 pixels: 3x3 at stride 1, no max-pooling
        stem = net.stages["stem"]
        assert (first.kernel_size, first.stride) == (((3, 3), (1, 1)) if size < 64 else ((7, 7), (2, 2)))
        assert any(isinstance(m, nn.MaxPool2d) for m in stem.modules()) == (size >= 64)
    net.eval()
    with torch.no_grad():
        logits = net(_input(in_channels, size=size))
    assert logits.shape == (2, NUM_CLASSES) and torch.isfinite(logits).all()


@pytest.mark.parametrize("builder, options", [("resnet18", {}), (VIT, VIT_OPTIONS)])
def test_an_adapted_network_trains_with_its_frozen_prefix_unchanged(builder, options):
    torch.manual_seed(0)
    net = torchvision_network(builder, 3, NUM_CLASSES, SIZE, **options)
    net.freeze(2)
    frozen = {key: value.clone() for key, value in net.prefix_state(2).items()}  # BatchNorm statistics included
    before = {key: value.clone() for key, value in net.state_dict().items() if key not in frozen}
    net.train()
    below, above = net.parameter_groups(2)
    optimizer = torch.optim.SGD(above, lr=0.01, momentum=0.9)
    x, y = _input(batch=8), torch.arange(8) % NUM_CLASSES
    losses = []
    for _ in range(4):
        loss = F.cross_entropy(net(x), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(math.isfinite(loss) for loss in losses) and losses[-1] < losses[0], losses
    assert all(p.grad is None for p in below)  # no back-propagation into the frozen layers
    for key, value in net.prefix_state(2).items():
        assert torch.equal(value, frozen[key]), key
    state = net.state_dict()
    assert any(not torch.equal(state[key], value) for key, value in before.items())

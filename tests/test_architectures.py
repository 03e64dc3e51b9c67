"""The layer contract of every registered architecture, freezing, and building from a spec."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from probe.architectures import REGISTRY, LayeredNet, build_model, build_network, get_architecture
from probe.errors import ProbeError
from probe.specs.spec import ArchSpec, DataSpec, NetworkSpec

NUM_CLASSES = 4


def _net(name: str, in_channels: int = 3, seed: int = 0, **options) -> LayeredNet:
    entry = REGISTRY[name]
    return build_network(ArchSpec(name, entry.default_init, options), in_channels, NUM_CLASSES,
                         entry.small_input_size, seed)


def _input(name: str, in_channels: int, batch: int = 2) -> torch.Tensor:
    size = REGISTRY[name].small_input_size
    return torch.randn(batch, in_channels, size, size, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_declared_layers_are_those_of_the_built_network(name):
    """Plans take an architecture's layers and cut points from its declaration; they must be the network's."""
    entry = REGISTRY[name]
    for in_channels in (1, 3):
        net = _net(name, in_channels)
        assert tuple(net.layer_names) == entry.layers and tuple(net.cut_points) == entry.cut_points


@pytest.mark.parametrize("name", sorted(name for name, a in REGISTRY.items() if a.checker))
def test_the_check_refuses_what_the_builder_cannot_build(name):
    """Planning checks options and input sizes without building: exactly what building would refuse."""
    entry = REGISTRY[name]
    for size in range(1, entry.small_input_size + 8):
        for options in ({"width": 0.0625}, {"width": -1.0}, {"width": 0.0625, "dropout": 1.0}):
            arch = ArchSpec(name, entry.default_init, options)
            try:
                build_network(arch, 1, 2, size, 0)
            except ProbeError as e:
                with pytest.raises(ProbeError) as refused:
                    entry.check(arch, 1, size)
                assert str(refused.value) == str(e)
            else:
                entry.check(arch, 1, size)


@pytest.mark.parametrize("in_channels", [1, 3])
@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_layer_contract(name, in_channels):
    _check_layer_contract(_net(name, in_channels), _input(name, in_channels))


def _check_layer_contract(net: LayeredNet, x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Check the layer contract of ``net`` on a batch ``x`` of two images; its cut layers' outputs."""
    assert isinstance(net, LayeredNet)
    names = net.layer_names
    assert len(names) >= 3 and len(set(names)) == len(names)
    assert net.cut_points == names[:-1]
    net.eval()

    # every cut point, batch first, finite, and equal to running the stages one by one
    logits, feats = net.forward_intermediates(x)
    assert list(feats) == net.cut_points
    with torch.no_grad():
        h = x
        for i, layer_name in enumerate(names, start=1):
            h = net.layer(i)(h)
            if layer_name in feats:
                assert feats[layer_name].shape[0] == 2, layer_name
                assert torch.isfinite(feats[layer_name]).all(), layer_name
                assert torch.equal(feats[layer_name], h), layer_name
    assert logits.shape == (2, NUM_CLASSES)
    assert torch.isfinite(logits).all()
    with torch.no_grad():
        assert torch.equal(logits, net(x))
        assert torch.equal(logits, h)

    # stop_early: no logits, only the requested layers, nothing above the last one runs
    ran = []
    hooks = [stage.register_forward_hook(lambda m, i, o, n=n: ran.append(n)) for n, stage in net.stages.items()]
    try:
        early_logits, early = net.forward_intermediates(x, layers=[1, 3], stop_early=True)
    finally:
        for hook in hooks:
            hook.remove()
    assert early_logits is None
    assert list(early) == [names[0], names[2]]
    assert ran == names[:3]
    for key, value in early.items():
        assert torch.equal(value, feats[key])

    # layers by index and by name select the same outputs
    _, by_index = net.forward_intermediates(x, layers=[2, len(net.cut_points)])
    _, by_name = net.forward_intermediates(x, layers=[names[1], net.cut_points[-1]])
    assert list(by_index) == list(by_name) == [names[1], net.cut_points[-1]]
    for key in by_index:
        assert torch.equal(by_index[key], by_name[key])
    assert net.layer_index(names[1]) == 2 and net.layer_index(2) == 2

    for bad in ("no-such-layer", 0, len(names) + 1):
        with pytest.raises(ProbeError, match="no-such-layer" if isinstance(bad, str) else str(bad)):
            net.forward_intermediates(x, layers=[bad])
    return feats


def tiny_vit(in_channels, num_classes, input_size):
    """A two-layer vision transformer (torchvision's) for ``in_channels``: its layers output token sequences."""
    from torchvision.models.vision_transformer import VisionTransformer

    net = VisionTransformer(input_size, 4, num_layers=2, num_heads=2, hidden_dim=16, mlp_dim=32,
                            num_classes=num_classes)
    net.conv_proj = nn.Conv2d(in_channels, 16, 4, stride=4)
    return net


@pytest.fixture
def registered_vit():
    """tiny_vit registered by name, as a user's package would; the registry restored after the test."""
    from probe import register_architecture

    saved = dict(REGISTRY)
    register_architecture("tiny-vit", layers=("embedding", "encoder1", "encoder2", "head"),
                          cut_at=("encoder.dropout", "encoder.layers.encoder_layer_0",
                                  "encoder.layers.encoder_layer_1"))(tiny_vit)
    yield "tiny-vit"
    REGISTRY.clear()
    REGISTRY.update(saved)


@pytest.mark.filterwarnings("ignore::zarr.errors.ZarrUserWarning")
def test_a_registered_architecture_of_token_layers(registered_vit, synthetic_arrays, tmp_path):
    """A registered architecture whose layers output token sequences (N, T, D) keeps the layer contract, and its
    layers are extracted by the token policy: the class token by default, as a (sample, unit) variable."""
    import xarray as xr

    from probe.execution.batches import Normalize, to_device
    from probe.execution.extract import ExtractionImages, Reduction, extract_network

    arch = ArchSpec(registered_vit)
    for in_channels in (1, 3):
        net = build_network(arch, in_channels, NUM_CLASSES, 16, 0)
        assert tuple(net.layer_names) == REGISTRY[registered_vit].layers
        x = torch.randn(2, in_channels, 16, 16, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():  # attention takes another kernel with autograd, equal to this one up to rounding
            feats = _check_layer_contract(net, x)
        assert {name: tuple(out.shape) for name, out in feats.items()} == dict.fromkeys(net.cut_points, (2, 17, 16))

    classes = list(synthetic_arrays.classes)
    spec = NetworkSpec(DataSpec("synthetic", test_per_class=4), "random", 0, "B", classes_a=tuple(classes[:5]),
                       classes_b=tuple(classes[5:]), arch=arch, in_channels=3, input_size=16)
    model = build_model(spec)
    normalize = Normalize([0.5] * 3, [0.25] * 3, torch.device("cpu"))
    extract_network(tmp_path / "acts.zarr", spec, model, synthetic_arrays, normalize, ExtractionImages(),
                    Reduction(), torch.device("cpu"), progress=False)
    ds = xr.open_zarr(tmp_path / "acts.zarr", group=spec.id, consolidated=False).load()
    assert ds.sizes["sample"] == 4 * 5  # the spec's test cap
    x = normalize(to_device(np.asarray(synthetic_arrays.test_x[ds["sample"].values]), torch.device("cpu")))
    with torch.no_grad():
        _, outs = model.eval().forward_intermediates(x)
    for name in model.cut_points:
        # the class token, except where it is the same for every image (before any attention): there the mean
        constant = float((outs[name][:, 0] - outs[name][:1, 0]).abs().max()) <= 1e-6 * max(
            1.0, float(outs[name][:, 0].abs().max()))
        want = outs[name].mean(dim=1) if constant else outs[name][:, 0]
        assert ds[name].dims == ("sample", f"{name}_unit")
        assert ds[name].attrs["tokens"] == ("mean" if constant else "cls")
        np.testing.assert_allclose(ds[name].values, want.numpy(), rtol=1e-5, atol=1e-5)
    assert any(ds[name].attrs["tokens"] == "cls" for name in model.cut_points)


def _flagged_modules(stage: nn.Module) -> list[nn.Module]:
    return [m for m in stage.modules() if isinstance(m, (nn.Dropout, nn.modules.batchnorm._BatchNorm))]


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_freeze_stops_gradients_and_keeps_frozen_layers_in_eval(name):
    net = _net(name)
    n_layers = len(net.layer_names)
    for n in sorted({1, n_layers // 2, n_layers - 1}):
        net.freeze(n)
        assert net.n_frozen == n
        net.eval()
        net.train()
        assert net.training
        frozen_flagged = []
        for i, stage in enumerate(net.stages.values(), start=1):
            params = list(stage.parameters())
            assert all(p.requires_grad == (i > n) for p in params), (n, i)
            for m in stage.modules():
                assert m.training == (i > n), (n, i, m)
            if i <= n:
                frozen_flagged += _flagged_modules(stage)
        if n == n_layers - 1:  # dropout (CaffeNet) or BatchNorm (ResNet) exists somewhere below the classifier
            assert frozen_flagged, f"{name} has no dropout or BatchNorm to keep in eval mode"
        # gradients reach exactly the unfrozen layers
        net.zero_grad(set_to_none=True)
        net(_input(name, 3)).sum().backward()
        for i, stage in enumerate(net.stages.values(), start=1):
            for p in stage.parameters():
                assert (p.grad is None) == (i <= n), (n, i)
    net.freeze(0)
    net.train()
    assert all(p.requires_grad for p in net.parameters())
    assert all(m.training for m in net.modules())
    for bad in (-1, n_layers):
        with pytest.raises(ProbeError, match=str(bad)):
            net.freeze(bad)


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_frozen_layers_compute_the_same_in_train_mode(name):
    """Frozen dropout does not drop and frozen BatchNorm neither normalizes by the batch nor updates its stats."""
    net = _net(name)
    top = len(net.cut_points)
    net.freeze(top)
    net.train()
    buffers = {k: v.clone() for k, v in net.state_dict().items()}
    x = _input(name, 3, batch=4)
    with torch.no_grad():
        _, a = net.forward_intermediates(x, layers=[top])
        _, b = net.forward_intermediates(x, layers=[top])
        reference = net.eval()(x)
    assert torch.equal(a[net.cut_points[-1]], b[net.cut_points[-1]])
    for k, v in net.state_dict().items():
        assert torch.equal(v, buffers[k]), k
    # and in eval mode the frozen part computes what it computed in train mode
    with torch.no_grad():
        _, c = net.forward_intermediates(x, layers=[top])
    assert torch.equal(c[net.cut_points[-1]], a[net.cut_points[-1]])
    assert reference.shape == (4, NUM_CLASSES)


def test_unfrozen_dropout_is_active_in_train_mode():
    """The check above can fail: without freezing, CaffeNet's fc6 output changes from call to call."""
    net = _net("caffenet-small", width=0.25)
    net.train()
    x = _input("caffenet-small", 3, batch=4)
    with torch.no_grad():
        _, a = net.forward_intermediates(x, layers=["fc6"])
        _, b = net.forward_intermediates(x, layers=["fc6"])
    assert not torch.equal(a["fc6"], b["fc6"])


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_same_spec_and_seed_give_identical_weights(name):
    torch.manual_seed(123)
    a = _net(name, seed=7).state_dict()
    torch.manual_seed(456)  # the global RNG must not matter
    b = _net(name, seed=7).state_dict()
    c = _net(name, seed=8).state_dict()
    assert a.keys() == b.keys() == c.keys()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert any(not torch.equal(a[k], c[k]) for k in a if a[k].is_floating_point())


def test_build_model_follows_the_spec():
    spec = NetworkSpec(DataSpec("synthetic"), "random", 0, "B", classes_a=("x", "y"), classes_b=("p", "q", "r"),
                       arch=ArchSpec("caffenet-small", options={"width": 0.25}), init_seed=3, in_channels=1,
                       input_size=16)
    model = build_model(spec)
    ref = build_network(spec.arch, 1, 3, 16, seed=spec.weight_seed)  # its own seed, derived from init seed 3
    assert model.state_dict().keys() == ref.state_dict().keys()
    assert all(torch.equal(v, ref.state_dict()[k]) for k, v in model.state_dict().items())
    logits = model.eval()(torch.zeros(2, 1, 16, 16))
    assert logits.shape == (2, 3)  # the target task B has three classes


def test_width_option_scales_the_network():
    narrow, wide = _net("caffenet-small", width=0.25), _net("caffenet-small", width=0.5)
    assert sum(p.numel() for p in narrow.parameters()) < sum(p.numel() for p in wide.parameters())
    assert narrow.layer(1)[0].out_channels == 24 and wide.layer(1)[0].out_channels == 48


def test_input_too_small_for_caffenet():
    entry = get_architecture("caffenet")
    build_network(ArchSpec("caffenet", "gaussian"), 3, 2, entry.small_input_size, 0)
    for size in (32, entry.small_input_size - 1):
        with pytest.raises(ProbeError, match=f"input size {size} is too small for caffenet"):
            build_network(ArchSpec("caffenet", "gaussian"), 3, 2, size, 0)


@pytest.mark.parametrize("name", sorted(REGISTRY))
def test_unknown_arch_option_is_named(name):
    with pytest.raises(ProbeError) as err:
        build_network(ArchSpec(name, options={"colour": 3}), 3, 2, REGISTRY[name].small_input_size, 0)
    assert "'colour'" in str(err.value) and name in str(err.value)
    assert "\n" not in str(err.value)


def test_unknown_architecture():
    with pytest.raises(ProbeError, match="'vgg99'"):
        build_network(ArchSpec("vgg99"), 3, 2, 32, 0)


@pytest.mark.parametrize("options, culprit", [({"width": -1}, "-1"), ({"width": 0}, "0"),
                                               ({"dropout": 1.5}, "1.5"), ({"width": "wide"}, "wide")])
def test_bad_arch_option_values_are_probe_errors(options, culprit):
    """A bad option value is a one-line ProbeError naming it, whatever its type (``--arch-option width=wide``)."""
    with pytest.raises(ProbeError) as err:
        build_network(ArchSpec("caffenet-small", options=options), 3, 2, 16, 0)
    assert culprit in str(err.value)


@pytest.mark.parametrize("size", [5, 4, 1])
def test_local_response_norm_agrees_with_torch(size):
    """Two formulations: probe's channel-window LRN with its written-out gradient, and torch's own."""
    from probe.architectures.caffenet import LocalResponseNorm

    ours, theirs = LocalResponseNorm(size, 0.3, 0.75, 2.0), torch.nn.LocalResponseNorm(size, 0.3, 0.75, 2.0)
    x = torch.randn(3, 7, 4, 5, dtype=torch.float64, requires_grad=True)
    assert torch.autograd.gradcheck(ours, (x,))
    for layout in (torch.contiguous_format, torch.channels_last):
        x_ = x.detach().contiguous(memory_format=layout).requires_grad_()
        g = torch.randn_like(x_)
        torch.testing.assert_close(ours(x_), theirs(x_))
        torch.testing.assert_close(torch.autograd.grad(ours(x_), x_, g)[0], torch.autograd.grad(theirs(x_), x_, g)[0])


@pytest.mark.parametrize("name", ["caffenet", "caffenet-small"])
def test_pooled_stages_match_caffes_rectify_then_pool_order(name):
    """Rectifying after max-pooling gives exactly what Caffe's conv -> ReLU -> pool -> LRN gives, values and
    gradients, from padded pooling windows too."""
    net = _net(name, 3, width=0.25)
    x = _input(name, 3)
    pooled = 0
    for stage_name, stage in net.stages.items():
        modules = list(stage)
        if not any(isinstance(m, nn.MaxPool2d) for m in modules):
            x = stage(x).detach()
            continue
        pooled += 1
        conv, pool, relu, *rest = modules
        assert isinstance(pool, nn.MaxPool2d) and isinstance(relu, nn.ReLU), stage_name
        caffe = nn.Sequential(conv, nn.ReLU(), pool, *rest)
        ours_in, caffe_in = x.clone().requires_grad_(), x.clone().requires_grad_()
        ours_out, caffe_out = stage(ours_in), caffe(caffe_in)
        assert torch.equal(ours_out, caffe_out), stage_name
        g = torch.randn_like(ours_out)
        ours_grads = torch.autograd.grad(ours_out, [ours_in, conv.weight], g)
        caffe_grads = torch.autograd.grad(caffe_out, [caffe_in, conv.weight], g)
        for a, b in zip(ours_grads, caffe_grads):
            torch.testing.assert_close(a, b, rtol=0, atol=0)
        x = ours_out.detach()
    assert pooled == 3  # conv1, conv2 and conv5

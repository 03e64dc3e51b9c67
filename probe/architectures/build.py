"""Building a network from its spec alone, in one pass: the ``--arch`` resolved to its builder
(:func:`probe.architectures.registry.resolve`), the builder run from a seed and its module cut into a LayeredNet
(:func:`probe.architectures.builders.layered_network`), then initialized."""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from probe.architectures.builders import layered_network
from probe.architectures.layered import LayeredNet
from probe.architectures.registry import Architecture, Resolved, declared_layers, resolve
from probe.architectures.stitch import add_stitch
from probe.errors import ProbeError
from probe.plugins import reason
from probe.specs.spec import ArchSpec, NetworkSpec
from probe.specs.variants import STITCH_FAMILIES


def build_network(arch: ArchSpec, in_channels: int, num_classes: int, input_size: int, seed: int) -> LayeredNet:
    """Build and initialize a network; the same arguments always give the same weights (the builder runs on torch's
    generator seeded with ``seed``, so its own random initialization is seeded too). Init ``none`` keeps what the
    builder made, weights it loaded included."""
    return _seeded_network(resolve(arch), in_channels, num_classes, input_size, seed)


def _seeded_network(resolved: Resolved, in_channels: int, num_classes: int, input_size: int, seed: int) -> LayeredNet:
    entry = resolved.entry
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = layered_network(resolved, in_channels, num_classes, input_size)
        init = resolved.arch.init or entry.default_init  # None: the name was unknown when the spec was made
        if init != "none":
            initialize(net, init, entry.gaussian)
    return net


def build_model(spec: NetworkSpec) -> LayeredNet:
    """The network ``spec`` describes, freshly initialized from its own weight seed (nothing copied, nothing frozen);
    a stitched network's with its stitch after layer ``cut``."""
    net = build_network(spec.arch, spec.in_channels, len(spec.target_classes), spec.input_size, spec.weight_seed)
    if spec.variant in STITCH_FAMILIES:
        add_stitch(net, spec.cut, spec.in_channels, spec.input_size, spec.weight_seed)
    return net


def network_layers(resolved: Resolved, in_channels: int, num_classes: int, input_size: int) -> tuple[str, ...]:
    """The layers of networks of a resolved ``--arch`` on this input, from building one and running it on a blank
    image, so that planning refuses a builder that cannot take the input before anything trains."""
    arch = resolved.arch
    net = _seeded_network(resolved, in_channels, num_classes, input_size, seed=0)
    shape = (1, in_channels, input_size, input_size)
    try:
        with torch.no_grad():
            logits = net.eval()(torch.zeros(shape))
    except Exception as e:  # a forward pass refuses a wrong shape with any exception type
        raise ProbeError(f"a network of {arch.name} cannot run on {in_channels}-channel {input_size}-pixel images "
                         f"({reason(e)}); change its options, or the input size (--image-size, --crop-size)") from e
    if tuple(logits.shape) != (1, num_classes):
        raise ProbeError(f"a network of {arch.name} returns shape {tuple(logits.shape)} for one image, not one logit "
                         f"per class (1, {num_classes}); let its builder take num_classes")
    return tuple(net.layer_names)


def initialize(net: LayeredNet, scheme: str, gaussian: dict[str, tuple[float, float]]) -> None:
    """Initialize every layer: ``gaussian`` is the paper's Caffe scheme (per-layer std and constant bias, default
    std 0.01 and bias 0); ``kaiming`` is He et al.'s normal init for the ReLU layers with zero biases, and Caffe's
    std 0.01 for the classifier, which has no ReLU after it: the first logits start near zero instead of at a loss
    twice log(classes) that can kill ReLUs in the first steps."""
    classifier = net.layer_names[-1]
    for name, stage in net.stages.items():
        std, bias = gaussian.get(name, (0.01, 0.0))
        for m in stage.modules():
            if isinstance(m, (nn.Conv2d, nn.Linear)):
                if scheme == "gaussian" or name == classifier:
                    nn.init.normal_(m.weight, 0.0, std)
                else:
                    nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
                if m.bias is not None:
                    nn.init.constant_(m.bias, bias if scheme == "gaussian" else 0.0)
            elif isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.reset_running_stats()
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)


def planned_architecture(arch: ArchSpec, in_channels: int, num_classes: int, input_size: int) -> Architecture:
    """The architecture of ``arch``, checked for this input, with the layers its networks have: as declared, or
    else from building one network now (which also refuses a builder that cannot take this input)."""
    resolved = resolve(arch)
    entry = resolved.entry
    entry.check(arch, in_channels, input_size)
    if declared_layers(arch):
        return entry
    return dataclasses.replace(entry, layers=network_layers(resolved, in_channels, num_classes, input_size))

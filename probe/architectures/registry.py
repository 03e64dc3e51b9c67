"""The architecture registry, and building a network from its spec alone."""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn

from probe.architectures.caffenet import CAFFENET_GAUSSIAN, caffenet, caffenet_small
from probe.architectures.layered import LayeredNet
from probe.architectures.resnet import resnet18
from probe.errors import ProbeError
from probe.spec import ArchSpec, NetworkSpec


@dataclass(frozen=True)
class Architecture:
    """A registered architecture: ``build(in_channels, num_classes, input_size, **options)`` returns a
    :class:`LayeredNet`; ``gaussian`` maps layer names to (std, bias) for the paper's Gaussian initialization."""

    name: str
    build: Callable[..., LayeredNet]
    default_init: str
    input_size: int  # the size it was designed for
    small_input_size: int  # the smallest convenient input, for tests
    gaussian: dict[str, tuple[float, float]] = field(default_factory=dict)
    description: str = ""

    @property
    def options(self) -> dict[str, object]:
        """Option names and defaults accepted by ``build``."""
        params = list(inspect.signature(self.build).parameters.values())[3:]
        return {p.name: p.default for p in params}


REGISTRY: dict[str, Architecture] = {}


def register(arch: Architecture) -> Architecture:
    REGISTRY[arch.name] = arch
    return arch


register(Architecture("caffenet", caffenet, "gaussian", 227, 67, CAFFENET_GAUSSIAN,
                      "the paper's 5 conv + 3 fc network for 227-pixel crops"))
register(Architecture("caffenet-small", caffenet_small, "kaiming", 32, 16, CAFFENET_GAUSSIAN,
                      "CaffeNet's 8 layers for 28-32 pixel inputs"))
register(Architecture("resnet18", resnet18, "kaiming", 224, 16, {},
                      "ResNet-18, cut at the stem and after each residual block"))


def get_architecture(name: str) -> Architecture:
    if name not in REGISTRY:
        raise ProbeError(f"unknown architecture {name!r}; registered: {', '.join(REGISTRY)}")
    return REGISTRY[name]


def check_arch_spec(arch: ArchSpec) -> Architecture:
    entry = get_architecture(arch.name)
    for key, value in arch.options:
        if key not in entry.options:
            raise ProbeError(f"architecture {arch.name!r} has no option {key!r}; its options: "
                             f"{', '.join(f'{k}={v}' for k, v in entry.options.items()) or 'none'}")
        default = entry.options[key]
        is_bool = isinstance(value, bool)
        if isinstance(default, bool) != is_bool or (isinstance(default, (int, float)) and not is_bool
                                                    and not isinstance(value, (int, float))):
            raise ProbeError(f"architecture option {key}={value!r} of {arch.name!r} must be a "
                             f"{type(default).__name__} like its default {default!r}")
    return entry


def build_network(arch: ArchSpec, in_channels: int, num_classes: int, input_size: int, seed: int) -> LayeredNet:
    """Build and initialize a network; the same arguments always give the same weights."""
    entry = check_arch_spec(arch)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        net = entry.build(in_channels, num_classes, input_size, **arch.kwargs)
        initialize(net, arch.init, entry.gaussian)
    return net


def build_model(spec: NetworkSpec) -> LayeredNet:
    """The network ``spec`` describes, freshly initialized from its init seed (nothing copied, nothing frozen)."""
    return build_network(spec.arch, spec.in_channels, len(spec.target_classes), spec.input_size, spec.init_seed)


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

"""The architecture registry: each architecture's name, layers, initialization, options and where its code is.

Declarations only, so that reading a run's plan never imports torch; an architecture's code is imported when a
network is built (:mod:`probe.architectures.build`) or its options are checked.
"""

from __future__ import annotations

import importlib
import inspect
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Callable

from probe.errors import ProbeError
from probe.spec import ArchSpec

if TYPE_CHECKING:
    from probe.architectures.layered import LayeredNet


@dataclass(frozen=True)
class Architecture:
    """A registered architecture: ``builder`` (``module:function``) names a ``build(in_channels, num_classes,
    input_size, **options)`` that returns a :class:`LayeredNet` whose layers, bottom up, are ``layers``;
    ``checker``, when there is one, a ``check(in_channels, input_size, **options)`` that refuses (ProbeError) what
    ``build`` cannot build, without building it; ``gaussian`` maps layer names to (std, bias) for the paper's
    Gaussian initialization."""

    name: str
    builder: str
    layers: tuple[str, ...]
    default_init: str
    input_size: int  # the size it was designed for
    small_input_size: int  # the smallest convenient input, for tests
    gaussian: dict[str, tuple[float, float]] = field(default_factory=dict)
    description: str = ""
    checker: str | None = None

    @property
    def build(self) -> Callable[..., LayeredNet]:
        return _function(self.builder)

    def check(self, arch: ArchSpec, in_channels: int, input_size: int) -> None:
        """Refuse options or an input shape that a network of ``arch`` cannot be built for (planning checks them
        before anything trains)."""
        if self.checker is not None:
            _function(self.checker)(in_channels, input_size, **arch.kwargs)

    @property
    def cut_points(self) -> tuple[str, ...]:
        """Layers 1..L-1: where a network can be cut (layer L is the classifier)."""
        return self.layers[:-1]

    @property
    def options(self) -> dict[str, object]:
        """Option names and defaults accepted by ``build``."""
        params = list(inspect.signature(self.build).parameters.values())[3:]
        return {p.name: p.default for p in params}


def _function(path: str) -> Callable:
    module, function = path.split(":")
    return getattr(importlib.import_module(module), function)


REGISTRY: dict[str, Architecture] = {}


def register(arch: Architecture) -> Architecture:
    REGISTRY[arch.name] = arch
    return arch


CAFFENET_LAYERS = ("conv1", "conv2", "conv3", "conv4", "conv5", "fc6", "fc7", "fc8")
# Caffe's bvlc_reference_caffenet fillers: Gaussian std per layer and constant bias (Krizhevsky et al. 2012).
CAFFENET_GAUSSIAN = {"conv1": (0.01, 0.0), "conv2": (0.01, 1.0), "conv3": (0.01, 0.0), "conv4": (0.01, 1.0),
                     "conv5": (0.01, 1.0), "fc6": (0.005, 1.0), "fc7": (0.005, 1.0), "fc8": (0.01, 0.0)}

register(Architecture("caffenet", "probe.architectures.caffenet:caffenet", CAFFENET_LAYERS, "gaussian", 227, 67,
                      CAFFENET_GAUSSIAN, "the paper's 5 conv + 3 fc network for 227-pixel crops",
                      "probe.architectures.caffenet:check_caffenet"))
register(Architecture("caffenet-small", "probe.architectures.caffenet:caffenet_small", CAFFENET_LAYERS, "kaiming",
                      32, 16, CAFFENET_GAUSSIAN, "CaffeNet's 8 layers for 28-32 pixel inputs",
                      "probe.architectures.caffenet:check_caffenet_small"))
register(Architecture("resnet18", "probe.architectures.resnet:resnet18",
                      ("stem", *(f"block{i}" for i in range(1, 9)), "head"), "kaiming", 224, 16, {},
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

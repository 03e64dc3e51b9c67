"""Architectures that follow the layer contract of :class:`LayeredNet`, by name."""

from probe.architectures.layered import LayeredNet
from probe.architectures.registry import REGISTRY, Architecture, build_model, build_network, get_architecture

__all__ = ["LayeredNet", "REGISTRY", "Architecture", "build_model", "build_network", "get_architecture"]

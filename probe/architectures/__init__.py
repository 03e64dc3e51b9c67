"""Architectures that follow the layer contract of :class:`LayeredNet`, by name.

The registry loads with the package; the networks and their builders load torch, so they are imported on first
use (reading a run's plan looks architectures up without building one).
"""

from __future__ import annotations

from importlib import import_module

from probe.architectures.registry import REGISTRY, Architecture, get_architecture, register_architecture

_TORCH_BACKED = {"LayeredNet": "probe.architectures.layered", "build_model": "probe.architectures.build",
                 "build_network": "probe.architectures.build"}

__all__ = ["LayeredNet", "REGISTRY", "Architecture", "build_model", "build_network", "get_architecture",
           "register_architecture"]


def __getattr__(name: str):
    if name not in _TORCH_BACKED:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(_TORCH_BACKED[name]), name)

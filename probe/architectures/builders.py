"""Calling an architecture's builder, and making the module it returns a :class:`LayeredNet`.

A builder is any function (or class) that returns an nn.Module. It gets those of ``in_channels``, ``num_classes``
and ``input_size`` it takes (``image_size`` too: a vision transformer's; ``num_classes`` also where it takes any
keyword, as torchvision's builders do), ``weights=None`` where it takes weights (nothing is ever downloaded), and the
architecture's options. A builder that takes neither ``in_channels`` nor
``input_size`` (torchvision's) cannot have fitted its model to the input, so its first convolution is rebuilt for
the input's channels and a ResNet under 64 pixels gets the small-image stem (:func:`fit_input`).

What it returns becomes a LayeredNet: a LayeredNet as it is; another module cut after the dotted module paths of
``cut_at`` (:func:`layered_from_module`); without them, a torchvision classification model at its family's default
cut points (:mod:`probe.architectures.torchvision_models`); anything else is refused, asking for cut points.
"""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Callable, Sequence

from torch import nn

from probe.architectures import timm_models
from probe.architectures.adapter import layered_at, layered_from_module
from probe.architectures.layered import LayeredNet
from probe.architectures.registry import SET_BY_PROBE, Resolved
from probe.architectures.torchvision_models import family_cut_points, layered_torchvision
from probe.errors import ProbeError
from probe.plugins import reason


def layered_network(resolved: Resolved, in_channels: int, num_classes: int, input_size: int) -> LayeredNet:
    """A network of a resolved ``--arch`` as its builder initializes it: its module built, then cut into layers."""
    arch, entry = resolved.arch, resolved.entry
    model = call_builder(resolved.build, arch.name, in_channels, num_classes, input_size, arch.kwargs)
    cut_at = resolved.cut_at
    if entry.origin == "timm" and not cut_at:  # timm's own feature extraction points
        cut_at = timm_models.cut_points(model, arch.name)
    net = as_layered(model, arch.name, cut_at, resolved.layer_names)
    declared = resolved.declared_layers
    if declared and tuple(net.layer_names) != declared:
        raise ProbeError(f"architecture {arch.name!r} declares layers {', '.join(declared)}, but its builder "
                         f"{entry.builder} built {', '.join(net.layer_names)}; declare the built ones")
    return net


def call_builder(build: Callable[..., nn.Module], label: str, in_channels: int, num_classes: int, input_size: int,
                 options: dict[str, object]) -> nn.Module:
    """Call ``build`` with what it takes of the input's shape and the number of classes, and ``options``."""
    taken = [key for key in SET_BY_PROBE if key in options]
    if taken:
        raise ProbeError(f"option {taken[0]!r} of {label} is set by probe: in_channels, num_classes and input_size "
                         "(image_size) from the data, and weights are never downloaded")
    params, takes_any = _parameters(build)
    given = {"in_channels": in_channels, "num_classes": num_classes, "input_size": input_size,
             "image_size": input_size, "weights": None}
    kwargs = {key: value for key, value in given.items() if key in params}
    if takes_any:  # torchvision's builders pass their **kwargs to the model, which takes num_classes
        kwargs["num_classes"] = num_classes
    # torchvision's ViT builders take image_size through **kwargs, so their signature does not show it
    if getattr(build, "__module__", None) == "torchvision.models.vision_transformer":
        kwargs["image_size"] = input_size
    try:
        model = build(**kwargs, **options)
    except ProbeError:  # a builder's own refusal says what is wrong already
        raise
    except Exception as e:  # a builder refuses its arguments with any exception type
        arguments = ", ".join(f"{key}={value!r}" for key, value in {**kwargs, **options}.items())
        raise ProbeError(f"{label} cannot be built with {arguments or 'no arguments'}: {reason(e)}") from e
    if not isinstance(model, nn.Module):
        raise ProbeError(f"{label} returned a {type(model).__name__}, not an nn.Module")
    if "in_channels" not in params and "input_size" not in params:
        fit_input(model, in_channels, input_size)
    return model


def _parameters(build: Callable) -> tuple[set[str], bool]:
    """The parameter names of ``build``, and whether it takes any keyword (``**kwargs``)."""
    try:
        params = inspect.signature(build).parameters.values()
    except (TypeError, ValueError):  # no signature to read: it gets its options alone
        return set(), False
    return {p.name for p in params}, any(p.kind is p.VAR_KEYWORD for p in params)


def as_layered(model: nn.Module, label: str, cut_at: Sequence[str] = (),
               layer_names: Sequence[str] | None = None) -> LayeredNet:
    """``model`` as a LayeredNet: as it is, cut after ``cut_at`` (its layers named ``layer_names``), or at the
    default cut points of its torchvision family."""
    if isinstance(model, LayeredNet):
        if cut_at:
            raise ProbeError(f"{label} builds a LayeredNet, already cut into layers {', '.join(model.layer_names)}; "
                             "give no cut points (--cut-at) for it")
        return model
    if cut_at:
        return layered_from_module(model, cut_at, layer_names)
    cuts = family_cut_points(model)
    if cuts is not None:
        return layered_at(model, cuts)
    children = ", ".join(name for name, _ in model.named_children()) or "none"
    raise ProbeError(f"{label} returned a {type(model).__name__}, which has no default cut points; give the modules "
                     f"to cut after as dotted paths, --cut-at a,b,c (its children: {children})")


def torchvision_network(function_path_or_name: str, in_channels: int, num_classes: int, input_size: int,
                        blocks: bool = False, cut_after: Sequence[str] | None = None, **options) -> LayeredNet:
    """Build a torchvision classification model (``resnet18``) or any builder by import path
    (``torchvision.models.vgg11_bn``, ``package.module:function``) and return it as a LayeredNet.

    The builder is called as :func:`probe.architectures.builders.call_builder` calls it: ``num_classes``,
    ``weights=None`` where it takes weights (nothing is ever downloaded), ``image_size=input_size`` for a vision
    transformer, and ``options``; the model is fitted to the input (:func:`fit_input`). The cut points are the
    family's defaults (``blocks``: after each residual block of a ResNet) unless ``cut_after`` gives dotted module
    paths.
    """
    build = _builder(function_path_or_name)
    model = call_builder(build, function_path_or_name, in_channels, num_classes, input_size, options)
    if cut_after is not None:
        return layered_from_module(model, cut_after)
    return layered_torchvision(model, blocks)


def _builder(function_path_or_name: str) -> Callable[..., nn.Module]:
    """A torchvision model name, or an import path ``module.function`` / ``module:function``."""
    if "." not in function_path_or_name and ":" not in function_path_or_name:
        from torchvision import models

        try:
            return models.get_model_builder(function_path_or_name)
        except ValueError:
            raise ProbeError(f"torchvision has no model {function_path_or_name!r} "
                             f"(torchvision.models.list_models() lists them)") from None
    module_name, _, attr = function_path_or_name.replace(":", ".").rpartition(".")
    try:
        build = getattr(importlib.import_module(module_name), attr, None)
    except ImportError as e:
        raise ProbeError(f"cannot import {module_name!r} for builder {function_path_or_name!r}: {e}") from None
    if not callable(build):
        raise ProbeError(f"{module_name} has no callable {attr!r} to build a network")
    return build


def fit_input(model: nn.Module, in_channels: int, input_size: int) -> None:
    """Give the model a first convolution for ``in_channels`` where its own takes other channels, and a ResNet
    under 64 pixels the small-image stem of :mod:`probe.architectures.resnet` (a 3x3 convolution at stride 1 and no
    max-pooling), so 32-pixel images keep enough resolution for its four stages."""
    from torchvision.models import ResNet

    from probe.architectures.resnet import SMALL_INPUT

    if isinstance(model, ResNet) and input_size < SMALL_INPUT:
        model.conv1 = nn.Conv2d(in_channels, model.conv1.out_channels, 3, padding=1, bias=False)
        model.maxpool = nn.Identity()
    else:
        _replace_first_conv(model, in_channels)


def _replace_first_conv(model: nn.Module, in_channels: int) -> None:
    """The first Conv2d (torchvision's families register their input convolution first), rebuilt for ``in_channels``
    unless it takes them already (a model without convolutions is left to take what it takes)."""
    found = next(((path, m) for path, m in model.named_modules() if isinstance(m, nn.Conv2d)), None)
    if found is None or found[1].in_channels == in_channels:
        return
    path, conv = found
    parent, _, attr = path.rpartition(".")
    setattr(model.get_submodule(parent), attr,
            nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                      bias=conv.bias is not None, padding_mode=conv.padding_mode))

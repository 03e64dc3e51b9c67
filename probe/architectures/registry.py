"""The architecture registry: each architecture's name, where its builder is, its layers and its initialization.

probe's own architectures are declarations, so that reading a run's plan never imports torch. Other code adds
architectures with the :func:`register_architecture` decorator, or through an entry point of group
``probe.architectures`` (loaded when a name is not registered), and any builder can be named by its import path,
``module:function``. :func:`resolve` turns a spec's ``--arch`` into its architecture and imported builder, once per
network built (:mod:`probe.architectures.build`) or per options checked.
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from probe.architectures.timm_models import check_name, create, is_timm
from probe.errors import ProbeError
from probe.plugins import function_path, import_function, is_import_path, load_plugins_into
from probe.specs.spec import INITS, ArchSpec

if TYPE_CHECKING:
    from torch import nn

ENTRY_POINTS = "probe.architectures"
# What probe passes to a builder that takes it; never an option.
SET_BY_PROBE = ("in_channels", "num_classes", "input_size", "image_size", "weights")


@dataclass(frozen=True)
class Architecture:
    """An architecture. ``builder`` (``module:function``) names a function, or class, that returns an nn.Module
    (:mod:`probe.architectures.builders` says how it is called and cut into layers); ``layers`` are its networks'
    layers, bottom up, as declared (empty: known from building a network when a study is planned); ``cut_at`` the
    dotted module paths a module it returns is cut after; ``checker``, when there is one, a ``check(in_channels,
    input_size, **options)`` that refuses (ProbeError) what the builder cannot build, without building it;
    ``gaussian`` maps layer names to (std, bias) for the paper's Gaussian initialization; ``origin`` is where it
    comes from: probe, registered (by :func:`register_architecture`), entry point or import path."""

    name: str
    builder: str
    layers: tuple[str, ...] = ()
    default_init: str = "none"
    input_size: int | None = None  # the size it was designed for
    small_input_size: int | None = None  # the smallest convenient input, for tests
    gaussian: dict[str, tuple[float, float]] = field(default_factory=dict)
    description: str = ""
    checker: str | None = None
    cut_at: tuple[str, ...] = ()
    origin: str = "probe"

    @property
    def build(self) -> Callable[..., nn.Module]:
        return import_function(self.builder, f"the builder of architecture {self.name!r}")

    def check(self, arch: ArchSpec, in_channels: int, input_size: int) -> None:
        """Refuse options or an input shape that a network of ``arch`` cannot be built for (planning checks them
        before anything trains)."""
        if self.checker is not None:
            import_function(self.checker, f"the check of architecture {self.name!r}")(in_channels, input_size,
                                                                                       **arch.kwargs)

    @property
    def cut_points(self) -> tuple[str, ...]:
        """Layers 1..L-1: where a network can be cut (layer L is the classifier)."""
        return self.layers[:-1]

    @property
    def options(self) -> dict[str, object]:
        """Option names and defaults accepted by the builder (``inspect.Parameter.empty``: required)."""
        return builder_options(self.build)[0]


def builder_options(build: Callable) -> tuple[dict[str, object], bool]:
    """The options a builder takes by name, with their defaults, and whether it takes any keyword (``**kwargs``)."""
    try:
        params = list(inspect.signature(build).parameters.values())
    except (TypeError, ValueError):  # a callable without a signature: let the call judge
        return {}, True
    named = {p.name: p.default for p in params
             if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY) and p.name not in SET_BY_PROBE}
    return named, any(p.kind is p.VAR_KEYWORD for p in params)


REGISTRY: dict[str, Architecture] = {}


def register(arch: Architecture) -> Architecture:
    """Declare one of probe's own architectures (their builders import torch, so they are declared, not decorated)."""
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


def register_architecture(name: str, *, layers: Sequence[str] | None = None, cut_at: Sequence[str] | None = None,
                          default_init: str = "none", description: str | None = None, replace: bool = False):
    """Register the decorated builder as architecture ``name`` (``--arch NAME``).

    The builder returns an nn.Module; it takes those of ``in_channels``, ``num_classes`` and ``input_size`` it needs,
    and its options (``--arch-option``) as further keyword arguments. A LayeredNet is used as it is; another module
    is cut after the dotted module paths ``cut_at``, or, without them, a torchvision classification model at its
    family's default cut points. ``layers`` declares the layers' names (with ``cut_at``: names them, one more than
    the cuts), so planning takes them without building a network, and every network built must have them; without
    them, planning builds one network to learn them. ``default_init`` ``none`` keeps the builder's own
    initialization. The spec of a run records the builder's import path, so another process (``probe extract``, a
    dask worker) imports it from there. A name registered from another builder is refused unless ``replace``.
    """
    layers, cut_at = tuple(layers or ()), tuple(cut_at or ())
    if not name or ":" in name:
        raise ProbeError(f"architecture name {name!r} must be non-empty and without ':' (which marks an import path)")
    if default_init not in INITS:
        raise ProbeError(f"default init {default_init!r} of architecture {name!r} is not one of {', '.join(INITS)}")
    if layers and cut_at and len(layers) != len(cut_at) + 1:
        raise ProbeError(f"architecture {name!r} cuts after {len(cut_at)} modules, making {len(cut_at) + 1} layers, "
                         f"but declares {len(layers)} layer names")

    def decorate(build: Callable) -> Callable:
        path = function_path(build, f"the builder of architecture {name!r}")
        old = REGISTRY.get(name)
        if old is not None and old.builder != path and not replace:  # the same builder again is its module re-imported
            raise ProbeError(f"architecture {name!r} is already registered (builder {old.builder}); register {path} "
                             "under another name, or pass replace=True")
        doc = (build.__doc__ or "").strip().splitlines()
        REGISTRY[name] = Architecture(name, path, layers, default_init, description=description or next(iter(doc), ""),
                                      cut_at=cut_at, origin="registered")
        return build

    return decorate


def load_plugins(name: str | None = None) -> None:
    """Load the entry points of group ``probe.architectures`` (those called ``name``, or all): modules that register
    architectures, or builders, registered with the decorator's defaults (see
    :func:`probe.plugins.load_plugins_into`)."""
    load_plugins_into(REGISTRY, ENTRY_POINTS, register_architecture, name)


def get_architecture(name: str) -> Architecture:
    """The architecture called ``name``: registered, added by an entry point (loaded now), or a builder's import path
    (imported when a network is built)."""
    if name in REGISTRY:
        return REGISTRY[name]
    if is_timm(name):  # before the import paths, whose form timm:NAME also has
        check_name(name)
        return Architecture(name, "probe.architectures.timm_models:create", default_init="none", origin="timm",
                            description="a timm model (timm.create_model), cut at its feature_info modules")
    if is_import_path(name):
        return Architecture(name, name, origin="import path")
    load_plugins(name)
    if name not in REGISTRY:
        raise ProbeError(f"unknown architecture {name!r}; registered: {', '.join(REGISTRY)}; or name a builder by "
                         "its import path MODULE:FUNCTION (see 'probe archs')")
    return REGISTRY[name]


def architecture_of(arch: ArchSpec) -> Architecture:
    """The architecture ``arch`` names. One registered outside probe is imported from the builder the spec records
    when this process has not registered it (a later command, a dask worker)."""
    if arch.builder is not None and arch.name not in REGISTRY:
        import_function(arch.builder, f"the builder of architecture {arch.name!r}")  # its module registers it
        if arch.name not in REGISTRY:
            raise ProbeError(f"importing {arch.builder} registered no architecture {arch.name!r}; register it with "
                             "@register_architecture where the builder is defined")
    entry = get_architecture(arch.name)
    if arch.builder is not None and entry.builder != arch.builder:
        raise ProbeError(f"architecture {arch.name!r} is registered here from {entry.builder}, but the spec was made "
                         f"with {arch.builder}; register that builder under its name (or plan with this one)")
    return entry


def complete_arch_spec(arch: ArchSpec) -> ArchSpec:
    """``arch`` checked (:func:`check_arch_spec`), with what a study records filled in: its init when None (the
    architecture's default), and where an architecture registered in this process outside probe is defined, so that
    every other process (a later command, a dask worker) imports it from there (an entry point's is found by name
    wherever its distribution is installed)."""
    entry = check_arch_spec(arch)
    builder = arch.builder or (entry.builder if entry.origin == "registered" else None)
    return dataclasses.replace(arch, init=arch.init or entry.default_init, builder=builder)


def declared_layers(arch: ArchSpec) -> tuple[str, ...] | None:
    """The layers networks of ``arch`` have as this process's registry declares them, importing nothing; None when
    only building one tells (an import path, a registration declaring none, a spec cut elsewhere, an unknown name)."""
    entry = REGISTRY.get(arch.name)
    return entry.layers if entry is not None and entry.layers and not arch.cut_at else None


@dataclass(frozen=True)
class Resolved:
    """An ``--arch`` resolved: its spec, its architecture, and the function that builds its module (imported, with
    the spec's options checked against what it takes)."""

    arch: ArchSpec
    entry: Architecture
    build: Callable[..., nn.Module]

    @property
    def cut_at(self) -> tuple[str, ...]:
        """The module paths a built module is cut after: the spec's, else the architecture's (none: the module's own
        default cut points)."""
        return self.arch.cut_at or self.entry.cut_at

    @property
    def layer_names(self) -> tuple[str, ...] | None:
        """The names of the layers cut at :attr:`cut_at`: declared layer names name the declared cuts; cuts given in
        the spec are named after their modules (None)."""
        entry = self.entry
        return entry.layers if entry.cut_at and not self.arch.cut_at and entry.layers else None

    @property
    def declared_layers(self) -> tuple[str, ...]:
        """The layers every network built must have, as the architecture declares them (none where the spec cuts
        elsewhere)."""
        return () if self.arch.cut_at else self.entry.layers


def resolve(arch: ArchSpec) -> Resolved:
    """The one place an ``--arch`` becomes a builder: its architecture (:func:`architecture_of`), its builder imported
    once, and the spec's options checked against the options the builder takes. A timm architecture's builder is
    :func:`probe.architectures.timm_models.create` for its model name."""
    entry = architecture_of(arch)
    build = entry.build
    _check_options(arch, *builder_options(build))
    if entry.origin == "timm":
        build = functools.partial(create, arch.name)
    return Resolved(arch, entry, build)


def check_arch_spec(arch: ArchSpec) -> Architecture:
    """The architecture of ``arch``, its options checked against those its builder takes."""
    return resolve(arch).entry


def _check_options(arch: ArchSpec, options: dict[str, object], takes_any: bool) -> None:
    """Refuse an option of ``arch`` that probe sets, that its builder does not take (``options``, and whether it
    takes any keyword), or whose type differs from its default's."""
    for key, value in arch.options:
        if key in SET_BY_PROBE:
            raise ProbeError(f"architecture option {key!r} of {arch.name!r} is set by probe: in_channels, "
                             "num_classes and input_size (image_size) from the data, and weights are never downloaded")
        if key not in options:
            if takes_any:
                continue
            raise ProbeError(f"architecture {arch.name!r} has no option {key!r}; its options: "
                             f"{describe_options(options)}")
        default = options[key]
        is_bool = isinstance(value, bool)
        if default is not inspect.Parameter.empty and (
                isinstance(default, bool) != is_bool or (isinstance(default, (int, float)) and not is_bool
                                                         and not isinstance(value, (int, float)))):
            raise ProbeError(f"architecture option {key}={value!r} of {arch.name!r} must be a "
                             f"{type(default).__name__} like its default {default!r}")


def describe_options(options: dict[str, object]) -> str:
    return ", ".join(k if v is inspect.Parameter.empty else f"{k}={v}" for k, v in options.items()) or "none"

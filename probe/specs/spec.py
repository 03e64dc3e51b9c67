"""Frozen specifications: one dataclass describes one network completely.

A :class:`NetworkSpec` names the data, the class split, the source and target tasks, the cut layer n, whether the
copied layers are frozen or fine-tuned, the seeds, the architecture and the training recipe. Models are built from a
spec alone, and ``spec.to_dict()`` is stored in every checkpoint so that a file always says what it holds.

A spec's ``variant`` is the family of one of the paper's variants (base, selffer, transfer, random) or of the
source-transfer networks (source), and ``fine_tune`` its ``+``; :mod:`probe.specs.variants` names them (baseB, BnB,
BnB+, AnB, AnB+, RnB, SnB, SnB+). A :class:`SourceSpec` describes a network trained elsewhere that donates the layers of
the source-transfer networks.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
import numbers
import re
from dataclasses import dataclass, field
from typing import Any

from probe.errors import ProbeError
from probe.specs.dose import Dose
from probe.specs.variants import DOSED_FAMILIES, FAMILIES, STITCH_FAMILIES, TASKS, Variant, family_source_task

INITS = ("gaussian", "kaiming", "none")  # none: keep the builder's own initialization
SCHEDULES = ("step", "cosine", "constant")
UNREADABLE = ("error", "skip")
RESIZE_MODES = ("crop", "pad", "squash")
# independent: every network draws its own initial weights, data order and augmentation (the paper's design: its Caffe
# solvers set no random_seed); shared: every network of a replicate starts from the replicate's one initialization
INIT_SHARINGS = ("independent", "shared")
# What a spec stored before init sharing was a choice did: the replicate's one initialization for every network
LEGACY_INIT_SHARING = "shared"
# Seeds go into numpy (non-negative) and torch (below 2**64) generators, some scaled on the way (``init_seed *
# 1_000_003 + 29`` in training): below 2**32, every seed derived that way is still below 2**63.
SEED_LIMIT = 2**32


def _check_choice(what: str, value: Any, choices: tuple) -> None:
    if value not in choices:
        raise ProbeError(f"{what} {value!r} is not one of {', '.join(map(str, choices))}")


def check_seed(what: str, value: Any) -> None:
    """Refuse a seed that is not an integer in [0, SEED_LIMIT)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or not 0 <= value < SEED_LIMIT:
        raise ProbeError(f"{what} {value!r} must be an integer in [0, 2**32)")


def _non_finite(value: Any) -> bool:
    """NaN or an infinity: a comparison-based range check lets NaN through, and json.loads reads both."""
    return isinstance(value, float) and not math.isfinite(value)


@dataclass(frozen=True)
class DataSpec:
    """Which images: a dataset by name, where it lives, how they are sized, and how much of each split to use.

    ``name`` is one of probe's datasets (``cifar10``, ``imagefolder:PATH``, ...), a registered dataset, or a
    function's import path ``module:function`` (:mod:`probe.data.custom`). ``builder``: where a dataset registered
    outside probe is defined (a study fills it in from the registry), so that every other process imports it.

    ``image_size`` makes every image an ``image_size`` square, as ``resize_mode`` says: ``crop`` resizes the shorter
    side and center-crops (the longer side loses its ends), ``pad`` resizes the longer side and pads the shorter
    one with zeros (the whole image is kept, smaller), ``squash`` resizes both sides (the aspect ratio changes).

    ``train_per_class`` and ``test_per_class`` keep at most that many images of each class of a task, a seeded
    subset that every network of a run shares (the training cap applies before the validation hold-out). A class
    with fewer keeps all of its own, so a capped split is balanced only when every class has at least that many."""

    name: str
    root: str | None = None
    image_size: int | None = None  # the side images are resized to (image-folder trees of mixed sizes)
    resize_mode: str = "crop"  # how a non-square image becomes an image_size square: crop, pad or squash
    train_per_class: int | None = None  # at most this many training images per class (smoke runs, balancing)
    test_per_class: int | None = None  # at most this many test images per class (None: every one)
    val_fraction: float = 0.1  # held out of train, stratified, for model selection; test is only reported
    unreadable: str = "error"  # image-folder files that cannot be decoded: "error" names the first, "skip" drops them
    builder: str | None = None

    def __post_init__(self) -> None:
        _check_choice("unreadable", self.unreadable, UNREADABLE)
        _check_choice("resize mode", self.resize_mode, RESIZE_MODES)
        if not 0.0 <= self.val_fraction < 1.0:
            raise ProbeError(f"val_fraction {self.val_fraction} must lie in [0, 1)")
        for name in ("train_per_class", "test_per_class"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, numbers.Integral)
                                      or value < 1):
                raise ProbeError(f"{name} {value!r} must be a positive integer")
        if self.image_size is not None and self.image_size < 8:
            raise ProbeError(f"image_size {self.image_size} must be at least 8 pixels")
        if self.resize_mode != "crop" and self.image_size is None:
            # without a size nothing is resized, and a spec that names a mode it does not use would mislead
            raise ProbeError(f"resize mode {self.resize_mode!r} needs an image size to resize to (--image-size)")


@dataclass(frozen=True)
class ArchSpec:
    """An architecture, its initialization scheme and its options (e.g. ``width``).

    ``name`` is a registered architecture (``probe archs``) or a builder's import path ``module:function``.
    ``init`` None is the architecture's default (``none``, the builder's own initialization, for import paths),
    which a study fills in. ``cut_at``: dotted module paths of the built module to cut its layers after, in place of
    its default cut points. ``builder``: where an architecture registered outside probe is defined (a study fills it
    in from the registry), so that every other process (a later command, a dask worker) imports it from there."""

    name: str
    init: str | None = None
    options: tuple[tuple[str, Any], ...] = ()
    cut_at: tuple[str, ...] = ()
    builder: str | None = None

    def __post_init__(self) -> None:
        if self.init is not None:
            _check_choice("init", self.init, INITS)
        opts = self.options.items() if isinstance(self.options, dict) else self.options
        object.__setattr__(self, "options", tuple(sorted((str(k), v) for k, v in opts)))
        for key, value in self.options:
            if _non_finite(value):
                raise ProbeError(f"architecture option {key}={value} must be a finite number")
        if isinstance(self.cut_at, str):
            raise ProbeError(f"cut points {self.cut_at!r} of {self.name!r} must be a sequence of module paths, e.g. "
                             "('features.2', 'features.5')")
        object.__setattr__(self, "cut_at", tuple(self.cut_at))
        for path in self.cut_at:
            if not isinstance(path, str) or not path.strip():
                raise ProbeError(f"cut point {path!r} of {self.name!r} must be a dotted module path, e.g. layer2.1")

    @property
    def kwargs(self) -> dict[str, Any]:
        return dict(self.options)


@dataclass(frozen=True)
class Recipe:
    """How a network is trained. The defaults follow the paper's Caffe recipe (Yosinski et al. 2014, Sec. 3):
    SGD with momentum 0.9, learning rate 0.01 divided by 10 in steps, weight decay 5e-4, random crops and mirroring;
    fine-tuned copied layers train at the same learning rate (``finetune_lr_scale`` 1)."""

    epochs: int = 30
    batch_size: int = 128
    lr: float = 0.01
    momentum: float = 0.9
    weight_decay: float = 5e-4
    schedule: str = "step"
    lr_step_every: float = 1 / 3  # step schedule: multiply by lr_gamma after each such fraction of training
    lr_gamma: float = 0.1
    warmup: float = 0.0  # fraction of training over which the learning rate ramps up linearly from 0 (paper: none)
    finetune_lr_scale: float = 1.0  # learning-rate factor of copied layers in "+" networks
    bias_lr_scale: float = 2.0  # Caffe's lr_mult 2 for biases
    bias_weight_decay: bool = False  # Caffe's decay_mult 0 for biases
    crop_padding: int = 4  # random crop from the image padded by this much (0 for a crop from a larger image)
    crop_size: int | None = None  # model input side; None keeps the image's own size
    flip: bool = True
    diverge_loss: float = 1e3  # a batch loss above this (or not finite) stops the network as diverged
    # Where a network's random draws come from (INIT_SHARINGS): its own seed (the paper's design), or the replicate's
    # shared one, under which BnB's new top restarts from its base's initial top and baseA starts where baseB does
    init_sharing: str = "independent"
    # A cut network's fresh layer n+1 starts with its initial weights scaled so that its pre-activations on the task's
    # training images have the RMS a fresh network's have (the positive control's remedy): not the paper's recipe
    match_scale: bool = False

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            if _non_finite(getattr(self, f.name)):
                raise ProbeError(f"{f.name} {getattr(self, f.name)} must be a finite number")
        _check_choice("schedule", self.schedule, SCHEDULES)
        _check_choice("init sharing", self.init_sharing, INIT_SHARINGS)
        for name in ("epochs", "batch_size"):
            if getattr(self, name) < 1:
                raise ProbeError(f"{name} {getattr(self, name)} must be a positive integer")
        if self.lr <= 0:
            raise ProbeError(f"lr {self.lr} must be positive")
        if not 0 <= self.momentum < 1:
            raise ProbeError(f"momentum {self.momentum} must lie in [0, 1)")
        for name in ("weight_decay", "finetune_lr_scale"):
            if getattr(self, name) < 0:
                raise ProbeError(f"{name} {getattr(self, name)} must be >= 0")
        for name in ("lr_gamma", "bias_lr_scale", "diverge_loss"):
            if getattr(self, name) <= 0:
                raise ProbeError(f"{name} {getattr(self, name)} must be positive")
        if not 0 <= self.warmup < 1:
            raise ProbeError(f"warmup {self.warmup} must be a fraction of training in [0, 1)")
        if not 0 < self.lr_step_every <= 1:
            raise ProbeError(f"lr_step_every {self.lr_step_every} must be a fraction of training in (0, 1]")
        if self.crop_padding < 0:
            raise ProbeError(f"crop_padding {self.crop_padding} must be >= 0")
        if self.crop_size is not None and self.crop_size < 1:
            raise ProbeError(f"crop_size {self.crop_size} must be a positive number of pixels")


def legacy_recipe(d: dict[str, Any]) -> Recipe:
    """A stored recipe: one written before init sharing was a choice keeps what its networks did."""
    return Recipe(**{"init_sharing": LEGACY_INIT_SHARING, **d})


@dataclass(frozen=True)
class SourceSpec:
    """A network trained elsewhere whose layers 1..n the source-transfer networks (SnB, SnB+) copy: its weights file
    (``path``, absolute), the file's SHA-256 when the run was planned (a file changed since is refused), how the
    file names its tensors (``key_map``: (network prefix, file prefix) pairs, see :mod:`probe.planning.source`), and the
    per-channel input normalization it was trained with (``mean``, ``std`` on the 0..1 scale; None: the run's own
    data statistics)."""

    path: str
    sha256: str
    key_map: tuple[tuple[str, str], ...] = ()
    mean: tuple[float, ...] | None = None
    std: tuple[float, ...] | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "key_map", tuple((str(a), str(b)) for a, b in self.key_map))
        for name in ("mean", "std"):
            if getattr(self, name) is not None:
                object.__setattr__(self, name, tuple(float(v) for v in getattr(self, name)))
        if not re.fullmatch(r"[0-9a-f]{64}", self.sha256):
            raise ProbeError(f"source file hash {self.sha256!r} is not a SHA-256 hex digest")
        if (self.mean is None) != (self.std is None):
            raise ProbeError("a source normalization needs both its mean and its std")
        if self.mean is not None:
            if not self.mean or len(self.mean) != len(self.std):
                raise ProbeError(f"source normalization mean {list(self.mean)} and std {list(self.std)} must give "
                                 "one value per channel each")
            if not all(math.isfinite(v) for v in self.mean + self.std) or min(self.std) <= 0:
                raise ProbeError(f"source normalization mean {list(self.mean)} and std {list(self.std)} must be "
                                 "finite, with every std positive")


@dataclass(frozen=True)
class NetworkSpec:
    """One network of the protocol. ``source`` is the task whose base network donates layers 1..cut (None for base
    and random networks, and for source-transfer networks, whose donor is ``source_network``); ``target`` is the
    task the network is trained and tested on."""

    data: DataSpec
    split: str
    split_seed: int | None
    target: str
    variant: str = "base"
    source: str | None = None
    cut: int = 0
    fine_tune: bool = False
    init_seed: int = 0
    arch: ArchSpec = field(default_factory=lambda: ArchSpec("caffenet-small"))
    recipe: Recipe = field(default_factory=Recipe)
    # What the split resolved to and the input shape, so a network can be built from its spec alone
    classes_a: tuple[str, ...] = ()
    classes_b: tuple[str, ...] = ()
    in_channels: int = 3
    input_size: int = 32
    source_network: SourceSpec | None = None  # the donor of a source-transfer network (SnB, SnB+), only theirs
    # The positive control (probe.specs.dose): layer n, copied from the parent base, rescaled; None: not dosed
    dose: Dose | None = None

    def __post_init__(self) -> None:
        if isinstance(self.dose, dict):
            object.__setattr__(self, "dose", Dose(**self.dose))
        if self.dose is not None and self.variant not in DOSED_FAMILIES:
            raise ProbeError(f"a dose rescales layer n of what a network copies from a base: only BnB, BnB+, AnB and "
                             f"AnB+ take one, not a {self.variant} network")
        object.__setattr__(self, "classes_a", tuple(self.classes_a))
        object.__setattr__(self, "classes_b", tuple(self.classes_b))
        _check_choice("variant", self.variant, FAMILIES)
        _check_choice("target task", self.target, TASKS)
        check_seed("init seed", self.init_seed)
        if self.split_seed is not None:
            check_seed("split seed", self.split_seed)
        if self.variant in ("base", "long-base"):
            if self.cut != 0 or self.source is not None or self.fine_tune:
                raise ProbeError("a base network has cut 0, no source task and nothing to fine-tune")
        else:
            if self.cut < 1:
                raise ProbeError(f"cut {self.cut} of a {self.variant} network must be a layer n >= 1")
            expected = family_source_task(self.variant, self.target)
            if self.source != expected:
                raise ProbeError(
                    f"a {self.variant} network trained on {self.target} takes its layers from {expected}, "
                    f"not {self.source}")
            if self.variant == "random" and self.fine_tune:
                raise ProbeError("the random-weights baseline keeps its first n layers frozen; it has no '+' form")
            if self.variant in STITCH_FAMILIES and self.fine_tune:
                raise ProbeError("a stitched network trains only its stitch; it has no '+' form")
        if (self.variant == "source") != (self.source_network is not None):
            raise ProbeError("a source-transfer network, and only one, copies its layers from a source network file")

    @property
    def target_classes(self) -> tuple[str, ...]:
        return self.classes_a if self.target == "A" else self.classes_b

    @property
    def name(self) -> str:
        """The paper's name: baseB, BnB, AnB+, RnB with n replaced by the cut, e.g. ``A3B+``; a dosed network's
        followed by its dose, ``B5B×10`` or ``B5B×~10``."""
        return Variant.of(self).network_name(self.target, self.cut) + (self.dose.label if self.dose else "")

    @property
    def variant_label(self) -> str:
        """The generic name of its variant, with its dose: ``BnB``, ``BnB×10`` (the accuracy Dataset's variant)."""
        return Variant.of(self).name + (self.dose.label if self.dose else "")

    @property
    def replicate(self) -> str:
        """The split and seeds this network belongs to, e.g. ``random-s0/init0``."""
        split = self.split if self.split_seed is None else f"{self.split}-s{self.split_seed}"
        return f"{split.replace('/', '_').replace(':', '_')}/init{self.init_seed}"

    @property
    def id(self) -> str:
        """Unique within a run directory: the folder (relative to ``RUN/networks``) that holds this network (a dose
        written in ASCII, ``B5Bx10``)."""
        name = Variant.of(self).network_name(self.target, self.cut) + (self.dose.path_label if self.dose else "")
        return f"{self.replicate}/{name}"

    @property
    def weight_seed(self) -> int:
        """The seed of this network's own random draws: its initial weights (those of every layer it re-initializes),
        its data order, augmentation and dropout. Shared: the replicate's init seed, the same for every network of
        it. Independent: derived from the init seed, the target task, the variant and the cut, so that it is
        reproducible and resumable yet unrelated to any other network's. A convergence check's longer base draws
        its base's, so that the two differ only in their training budget. A dosed network draws its plain form's, so
        that the two differ only in the dose (a paired comparison), its per-channel factors aside."""
        if self.recipe.init_sharing == "shared":
            return self.init_seed
        variant = "base" if self.variant == "long-base" else Variant.of(self).name
        key = f"{self.init_seed}/{self.target}/{variant}/{self.cut}".encode()
        return int.from_bytes(hashlib.sha256(key).digest()[:4], "little")  # below SEED_LIMIT

    @property
    def parent(self) -> NetworkSpec | None:
        """The base network whose first ``cut`` layers this one copies, or None."""
        if self.variant not in ("selffer", "transfer", *STITCH_FAMILIES):
            return None
        return dataclasses.replace(self, variant="base", target=self.source, source=None, cut=0, fine_tune=False,
                                   dose=None)

    @property
    def top_parent(self) -> NetworkSpec | None:
        """A stitched network's other parent: the base of its target task, whose layers cut+1..L it runs above the
        stitch (None for every other network)."""
        if self.variant not in STITCH_FAMILIES:
            return None
        return dataclasses.replace(self, variant="base", source=None, cut=0, fine_tune=False, dose=None)

    @property
    def parents(self) -> tuple[NetworkSpec, ...]:
        """Every network this one copies layers from, each once."""
        found = [p for p in (self.parent, self.top_parent) if p is not None]
        return tuple(p for i, p in enumerate(found) if p not in found[:i])

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["arch"]["options"] = dict(self.arch.options)
        if self.source_network is None:  # so that every other network's spec reads as before SourceSpec existed
            del d["source_network"]
        if self.dose is None:  # likewise for every undosed network
            del d["dose"]
        return d

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> NetworkSpec:
        try:
            d = dict(d)
            d["data"] = DataSpec(**d["data"])
            d["arch"] = ArchSpec(**d["arch"])
            d["recipe"] = legacy_recipe(d["recipe"])
            if d.get("source_network") is not None:
                d["source_network"] = SourceSpec(**d["source_network"])
            return cls(**d)
        except (TypeError, KeyError) as e:
            raise ProbeError(f"not a network spec ({e}): {json.dumps(d, default=str)[:200]}") from None

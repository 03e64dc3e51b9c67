"""The networks of the protocol, named once: Yosinski et al. (2014), Sec. 2.

Every network is trained on a target task (A or B) and is one of six variants, named by the paper's generic label
for target B with n standing for the cut: ``base`` (baseB), the selffer ``BnB`` (layers 1..n copied from the base of
its own task), the transfer ``AnB`` (copied from the other task's base), their fine-tuned forms ``BnB+`` and
``AnB+``, and the random-weights baseline ``RnB`` (layers 1..n left at their random initialization). The copied or
random layers stay frozen unless the variant is fine-tuned.

A plan whose donor is a network trained elsewhere (a source file, :class:`probe.specs.spec.SourceSpec`) is
one-directional: it trains only on task B, and the source-transfer networks ``SnB`` and ``SnB+`` (layers 1..n copied
from the source network, frozen or fine-tuned) take the places of AnB and AnB+.

Two more variants probe the features directly, by model stitching (:mod:`probe.architectures.stitch`): ``AnB-stitch``
runs layers 1..n of baseA, a trainable stitching layer and layers n+1..L of baseB, all but the stitch frozen; its
control ``BnB-stitch`` stitches baseB to itself. A study plans them only when asked (``--variants``).

The convergence check (``--check-convergence``) adds ``base-long``: per replicate and task, the base network trained
k times as long, its schedule stretched to match (``baseB-long``). It is no part of the protocol: nothing is cut from
it, and the decomposition never reads it; its gain over the base says whether the bases had converged.
"""

from __future__ import annotations

from dataclasses import dataclass

from probe.errors import ProbeError

TASKS = ("A", "B")
ONE_DIRECTION = ("B",)  # the target of a one-directional plan: a source network trained elsewhere is its donor


def other_task(task: str) -> str:
    return TASKS[1 - TASKS.index(task)]


@dataclass(frozen=True)
class Variant:
    """One variant: its generic ``name``; its ``family`` (base, selffer, transfer, random, source: what a
    NetworkSpec stores as its ``variant``); whether the copied layers are fine-tuned; and what donates layers 1..n,
    relative to the target: the task ``own`` or ``other``, an ``external`` network (a source file), or ``none`` for
    base and random networks, which copy nothing."""

    name: str
    family: str
    fine_tune: bool
    source: str

    def source_task(self, target: str) -> str | None:
        """The task whose base network donates layers 1..n to this variant trained on ``target`` (None: no task's,
        for the networks that copy nothing or copy from a source file)."""
        return {"own": target, "other": other_task(target), "none": None, "external": None}[self.source]

    def network_name(self, target: str, cut: int) -> str:
        """The paper's name of one network: the generic name with its tasks and cut filled in, e.g. ``A3B+``; a
        source-transfer network is ``S3B``, a random-weights one ``R3B``."""
        if self.family == "base":
            return f"base{target}"
        if self.family == "long-base":
            return f"base{target}-long"
        donor = {"external": "S", "none": "R"}.get(self.source) or self.source_task(target)
        suffix = "-stitch" if self.family in STITCH_FAMILIES else "+" if self.fine_tune else ""
        return f"{donor}{cut}{target}{suffix}"

    @classmethod
    def named(cls, name: str) -> Variant:
        """The variant of generic name ``name`` (base, BnB, BnB+, AnB, AnB+, RnB, SnB, SnB+)."""
        for v in EVERY_VARIANT:
            if v.name == name:
                return v
        raise ProbeError(f"unknown variant {name!r}; expected one of {', '.join(v.name for v in EVERY_VARIANT)}")

    @classmethod
    def of(cls, spec) -> Variant:
        """The variant of the network a NetworkSpec ``spec`` describes (read from its ``variant`` and ``fine_tune``;
        not imported here, since spec.py builds on this module)."""
        for v in EVERY_VARIANT:
            if (v.family, v.fine_tune) == (spec.variant, spec.fine_tune):
                return v
        raise ProbeError(f"no variant is a {'fine-tuned ' if spec.fine_tune else ''}{spec.variant} network")


BASE = Variant("base", "base", fine_tune=False, source="none")
_BNB, _BNB_PLUS = (Variant("BnB", "selffer", fine_tune=False, source="own"),
                   Variant("BnB+", "selffer", fine_tune=True, source="own"))
_RNB = Variant("RnB", "random", fine_tune=False, source="none")
SOURCE_VARIANTS = (Variant("SnB", "source", fine_tune=False, source="external"),
                   Variant("SnB+", "source", fine_tune=True, source="external"))
# The networks cut at n, in the order of the accuracy Dataset's variant dim and of a study's default variants
CUT_VARIANTS = (_BNB, _BNB_PLUS,
                Variant("AnB", "transfer", fine_tune=False, source="other"),
                Variant("AnB+", "transfer", fine_tune=True, source="other"),
                _RNB)
# The same for a one-directional plan: SnB and SnB+ where the paper's plan has AnB and AnB+
SOURCE_CUT_VARIANTS = (_BNB, _BNB_PLUS, *SOURCE_VARIANTS, _RNB)
VARIANTS = (BASE, *CUT_VARIANTS)  # the paper's
# Model stitching: the bottom of the source task's base, a trainable stitch, the frozen top of the target's base
STITCH_VARIANTS = (Variant("BnB-stitch", "self-stitch", fine_tune=False, source="own"),
                   Variant("AnB-stitch", "stitch", fine_tune=False, source="other"))
STITCH_FAMILIES = ("self-stitch", "stitch")
# The convergence check's longer base: planned by the study's convergence factor, never by --variants
LONG_BASE = Variant("base-long", "long-base", fine_tune=False, source="none")
EVERY_VARIANT = (*VARIANTS, *SOURCE_VARIANTS, *STITCH_VARIANTS, LONG_BASE)
CUT_NAMES = tuple(v.name for v in CUT_VARIANTS)  # a study's default variants
STITCH_NAMES = tuple(v.name for v in STITCH_VARIANTS)  # planned when a study names them
SOURCE_CUT_NAMES = tuple(v.name for v in SOURCE_CUT_VARIANTS)  # ... and those of a study with a source network
FAMILIES = tuple(dict.fromkeys(v.family for v in EVERY_VARIANT))
# The families whose copied layer n a dose can rescale (probe.specs.dose): those copying from a base of the study
DOSED_FAMILIES = ("selffer", "transfer")


def cut_variants(one_directional: bool) -> tuple[Variant, ...]:
    """The networks cut at n of a plan: the paper's (both directions), or a one-directional plan's."""
    return SOURCE_CUT_VARIANTS if one_directional else CUT_VARIANTS


def family_source_task(family: str, target: str) -> str | None:
    """The task that donates layers 1..n to a network of ``family`` (one of FAMILIES) trained on ``target``, for a
    spec whose fine-tuning is not yet checked: it does not change where the layers come from."""
    return next(v for v in EVERY_VARIANT if v.family == family).source_task(target)

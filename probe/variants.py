"""The networks of the protocol, named once: Yosinski et al. (2014), Sec. 2.

Every network is trained on a target task (A or B) and is one of six variants, named by the paper's generic label
for target B with n standing for the cut: ``base`` (baseB), the selffer ``BnB`` (layers 1..n copied from the base of
its own task), the transfer ``AnB`` (copied from the other task's base), their fine-tuned forms ``BnB+`` and
``AnB+``, and the random-weights baseline ``RnB`` (layers 1..n left at their random initialization). The copied or
random layers stay frozen unless the variant is fine-tuned.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from probe.errors import ProbeError

if TYPE_CHECKING:
    from probe.spec import NetworkSpec

TASKS = ("A", "B")


def other_task(task: str) -> str:
    return TASKS[1 - TASKS.index(task)]


@dataclass(frozen=True)
class Variant:
    """One variant: its generic ``name``; its ``family`` (base, selffer, transfer, random: what a NetworkSpec
    stores as its ``variant``); whether the copied layers are fine-tuned; and the task that donates layers 1..n,
    relative to the target (``own``, ``other``, or ``none`` for base and random networks, which copy nothing)."""

    name: str
    family: str
    fine_tune: bool
    source: str

    def source_task(self, target: str) -> str | None:
        """The task whose base network donates layers 1..n to this variant trained on ``target``."""
        return {"own": target, "other": other_task(target), "none": None}[self.source]

    def network_name(self, target: str, cut: int) -> str:
        """The paper's name of one network: the generic name with its tasks and cut filled in, e.g. ``A3B+``."""
        if self.family == "base":
            return f"base{target}"
        return f"{self.source_task(target) or 'R'}{cut}{target}{'+' if self.fine_tune else ''}"

    @classmethod
    def named(cls, name: str) -> Variant:
        """The variant of generic name ``name`` (base, BnB, BnB+, AnB, AnB+, RnB)."""
        for v in VARIANTS:
            if v.name == name:
                return v
        raise ProbeError(f"unknown variant {name!r}; expected one of {', '.join(v.name for v in VARIANTS)}")

    @classmethod
    def of(cls, spec: NetworkSpec) -> Variant:
        """The variant of the network ``spec`` describes."""
        for v in VARIANTS:
            if (v.family, v.fine_tune) == (spec.variant, spec.fine_tune):
                return v
        raise ProbeError(f"no variant is a {'fine-tuned ' if spec.fine_tune else ''}{spec.variant} network")


BASE = Variant("base", "base", fine_tune=False, source="none")
# The networks cut at n, in the order of the accuracy Dataset's variant dim and of a study's default variants
CUT_VARIANTS = (Variant("BnB", "selffer", fine_tune=False, source="own"),
                Variant("BnB+", "selffer", fine_tune=True, source="own"),
                Variant("AnB", "transfer", fine_tune=False, source="other"),
                Variant("AnB+", "transfer", fine_tune=True, source="other"),
                Variant("RnB", "random", fine_tune=False, source="none"))
VARIANTS = (BASE, *CUT_VARIANTS)
CUT_NAMES = tuple(v.name for v in CUT_VARIANTS)  # what a study's variants are chosen from
FAMILIES = tuple(dict.fromkeys(v.family for v in VARIANTS))


def family_source_task(family: str, target: str) -> str | None:
    """The task that donates layers 1..n to a network of ``family`` (one of FAMILIES) trained on ``target``, for a
    spec whose fine-tuning is not yet checked: it does not change where the layers come from."""
    return next(v for v in VARIANTS if v.family == family).source_task(target)

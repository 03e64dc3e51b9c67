"""Doses: a function-preserving rescale of the frozen features a cut network copies (the positive control).

A dosed network copies layers 1..n from a base as its plain form does, then multiplies the weights and bias of the
last weighted module of layer n by a factor α (``×10``), or each of its output channels by its own factor drawn
log-uniform in [1/α, α] from the network's weight seed (``×~10``, an ill-conditioned basis). Wherever what lies between
that module and layer n+1's first weighted module is positively homogeneous (ReLU, max-pooling, dropout: f(αx) = αf(x)
for α > 0), the base with layer n × α and layer n+1 ÷ α computes the same function: the frozen features carry the same
information at another scale, and only the fresh top's optimization meets something new
(:mod:`probe.architectures.rescale` applies and checks it). A dose of 1 is no dose: the plain network, bit for bit.

Written on the command line and in plans as text: ``10``, ``0.1`` or ``1/10`` (uniform), ``~10`` (per channel).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction

from probe.errors import ProbeError


@dataclass(frozen=True)
class Dose:
    """A rescale of layer n's output: ``factor`` α > 0; ``per_channel``: each channel by its own log-uniform factor
    in [1/α, α] (α > 1) instead of all by α."""

    factor: float
    per_channel: bool = False

    def __post_init__(self) -> None:
        factor = self.factor
        if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not math.isfinite(factor) \
                or factor <= 0:
            raise ProbeError(f"dose {factor!r} must be a positive finite factor, e.g. 10, 1/10 or ~10")
        object.__setattr__(self, "factor", float(factor))
        if self.per_channel and self.factor <= 1:
            raise ProbeError(f"per-channel dose ~{_number(self.factor)} draws each channel's factor in [1/α, α]: it "
                             "needs α above 1, e.g. ~10")

    @property
    def text(self) -> str:
        """As written on the command line and stored in a plan: ``10``, ``0.1``, ``~10``."""
        return ("~" if self.per_channel else "") + _number(self.factor)

    @property
    def label(self) -> str:
        """What a network's name carries after its plain name: ``×10``, ``×0.1``, ``×~10``."""
        return "×" + self.text

    @property
    def path_label(self) -> str:
        """The label in a network's folder name, ASCII: ``x10``, ``x0.1``, ``x~10``."""
        return "x" + self.text

    @classmethod
    def parse(cls, text: str) -> Dose | None:
        """``10``, ``1/10``, ``0.1`` or ``~10`` as a Dose; None for a uniform dose of 1 (the plain network)."""
        raw = str(text).strip()
        per_channel = raw.startswith("~")
        body = raw[1:].strip() if per_channel else raw
        try:
            factor = float(Fraction(body)) if "/" in body else float(body)
        except (ValueError, ZeroDivisionError):
            raise ProbeError(f"dose {text!r} is not a factor; expected a positive number such as 10, 1/10 or 0.1, "
                             "or ~10 for per-channel factors") from None
        dose = cls(factor, per_channel)
        return None if dose.factor == 1 and not per_channel else dose


def _number(x: float) -> str:
    """A factor as short text: 10, 0.1, 3, 0.333333."""
    return f"{x:.6g}"


def parse_doses(texts) -> tuple[str, ...]:
    """A study's doses as their canonical texts, checked; a dose of 1 (the plain network, always planned) dropped."""
    out = []
    for t in texts:
        dose = Dose.parse(t)
        if dose is not None:
            out.append(dose.text)
    return tuple(out)

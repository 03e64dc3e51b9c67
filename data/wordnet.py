"""ImageNet's classes by WordNet id: the ILSVRC-2012 list with the paper's natural vs man-made tasks, and their names.

Read from the package's reference data (``reference_data/ilsvrc12_classes.tsv``, made from the authors' own lists;
its README says how), once, when first asked. A dataset whose classes are ILSVRC-2012 WordNet ids (ImageNet, Tiny
ImageNet, a user's subset) is split by id, never by position, and shown by id and name (``n01443537 goldfish``).
"""

from __future__ import annotations

import csv
import re
from functools import cache
from importlib import resources

from probe.errors import ProbeError

NATURAL, MAN_MADE = "natural", "man-made"
_WNID = re.compile(r"n\d{8}")


@cache
def ilsvrc12() -> dict[str, tuple[str, str]]:
    """WordNet id -> (task, name) of the 1,000 ILSVRC-2012 classes, in their standard order; the name is WordNet's
    first (``goldfish`` of ``goldfish, Carassius auratus``)."""
    text = resources.files("probe.data").joinpath("reference_data/ilsvrc12_classes.tsv").read_text()
    return {r["wnid"]: (r["task"], r["name"].split(",")[0].strip()) for r in csv.DictReader(text.splitlines(),
                                                                                            delimiter="\t")}


def is_wnid(name: str) -> bool:
    return bool(_WNID.fullmatch(str(name)))


def natural_man_made(classes: list[str]) -> tuple[list[str], list[str]]:
    """The paper's natural (task A) and man-made (task B) classes among ``classes``, by WordNet id; a class that is
    not an ILSVRC-2012 WordNet id is refused by name, before any image is decoded."""
    known = ilsvrc12()
    for c in classes:
        if c not in known:
            what = "an ILSVRC-2012 class" if is_wnid(c) else "a WordNet id (n########)"
            raise ProbeError(f"split natural-man-made sorts ILSVRC-2012 classes by WordNet id, and class {c!r} is not "
                             f"{what}; use it on ImageNet, Tiny ImageNet or a subset of their classes")
    return ([c for c in classes if known[c][0] == NATURAL], [c for c in classes if known[c][0] == MAN_MADE])


def class_label(name: str) -> str:
    """How plans and reports show a class: an ILSVRC-2012 WordNet id with its name (``n01443537 goldfish``), any
    other class as it is."""
    entry = ilsvrc12().get(name) if is_wnid(name) else None
    return f"{name} {entry[1]}" if entry else str(name)

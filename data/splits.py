"""Class splits: which of a dataset's classes form task A and which form task B.

``random`` halves the classes with a seed (the paper's "similar" tasks, Yosinski et al. 2014, Sec. 3). The named
semantic splits are the dissimilar tasks of the paper's Sec. 4.1 (ImageNet natural vs man-made) and their
counterparts on the small datasets. ``file:PATH`` reads a user's JSON ``{"A": [...], "B": [...]}`` of class names or
indices, optionally with a ``"name"`` (a short label: letters, digits, ``-_.``) and a ``"note"`` (free text) for
reports; a run reads the file once, when it is planned, and its plan keeps what it resolved to. Task A is always the
first group a split's name mentions.
"""

from __future__ import annotations

import json
import re

import numpy as np

from probe.data.wordnet import natural_man_made
from probe.errors import ProbeError

CIFAR100_MAN_MADE_SUPERCLASSES = {
    "food containers": ["bottle", "bowl", "can", "cup", "plate"],
    "household electrical devices": ["clock", "keyboard", "lamp", "telephone", "television"],
    "household furniture": ["bed", "chair", "couch", "table", "wardrobe"],
    "large man-made outdoor things": ["bridge", "castle", "house", "road", "skyscraper"],
    "vehicles 1": ["bicycle", "bus", "motorcycle", "pickup_truck", "train"],
    "vehicles 2": ["lawn_mower", "rocket", "streetcar", "tank", "tractor"],
}

def _by_name(a: list[str], b: list[str]):
    return lambda classes: (a, b)


def _complement(a: list[str]):
    return lambda classes: (a, [c for c in classes if c not in a])


# name -> (the dataset it is meant for, a function from the dataset's classes to (A, B))
SEMANTIC_SPLITS = {
    "vehicles-animals": ("cifar10", _by_name(
        ["airplane", "automobile", "ship", "truck"], ["bird", "cat", "deer", "dog", "frog", "horse"])),
    "clothing-accessories": ("fashion-mnist", _by_name(
        ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Shirt"], ["Sandal", "Sneaker", "Bag", "Ankle boot"])),
    "man-made-natural": ("cifar100", _complement(
        [c for names in CIFAR100_MAN_MADE_SUPERCLASSES.values() for c in names])),
    "natural-man-made": ("ImageNet classes (ImageNet, Tiny ImageNet, a subset)", natural_man_made),
}
SPLITS = ("random", *SEMANTIC_SPLITS, "file:PATH")
# What a split file may hold besides its two tasks: labels for reports, which change no network
SPLIT_FILE_LABELS = ("name", "note")
_SPLIT_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
# The split of a one-directional plan, whose layers come from a source network trained elsewhere: every class (or a
# study's chosen target classes) is task B, the target, and there is no task A
TARGET_SPLIT = "target"


def split_is_seeded(split: str) -> bool:
    """Whether the split's classes depend on a split seed (only ``random`` does)."""
    check_split_name(split)
    return split == "random"


def check_split_name(split: str) -> None:
    if split not in ("random", TARGET_SPLIT) and split not in SEMANTIC_SPLITS and not split.startswith("file:"):
        raise ProbeError(f"unknown split {split!r}; expected one of {', '.join(SPLITS)} (or {TARGET_SPLIT}, with a "
                         "source network)")


def resolve_split(split: str, classes: list[str], seed: int | None = None,
                  recorded: dict | None = None) -> dict:
    """Return ``{"A": [...], "B": [...]}``: each task's class names, in the dataset's class order, with the
    ``"name"`` and ``"note"`` a split file gives. ``recorded``: what a ``file:`` split resolved to when its run was
    planned (the same dict, from the run's plan.json), used in place of the file, which a resumed run need not find
    again (a relative path read from another directory, a file moved since); it is checked against ``classes``."""
    check_split_name(split)
    if recorded is not None and split.startswith("file:"):
        labels = {k: recorded[k] for k in SPLIT_FILE_LABELS if k in recorded}
        return {**_checked(split, classes, list(recorded["A"]), list(recorded["B"])), **labels}
    if split == TARGET_SPLIT:
        return {"A": [], "B": list(classes)}
    if split == "random":
        if seed is None:
            raise ProbeError("split 'random' needs a split seed")
        if len(classes) < 2:
            raise ProbeError(f"split 'random' needs at least 2 classes, the dataset has {len(classes)}")
        chosen = np.random.default_rng(seed).permutation(len(classes))[: len(classes) // 2]
        a = [c for i, c in enumerate(classes) if i in set(chosen.tolist())]
        return _checked(split, classes, a, [c for c in classes if c not in a])
    if split.startswith("file:"):
        a, b, labels = _read_split_file(split[len("file:"):], classes)
        return {**_checked(split, classes, a, b), **labels}
    meant_for, groups = SEMANTIC_SPLITS[split]
    a, b = groups(classes)
    missing = [c for c in a + b if c not in classes]
    if missing:
        raise ProbeError(f"split {split!r} is for {meant_for}, but this dataset has no class {missing[0]!r} "
                         f"(its classes: {', '.join(classes[:12])}{', ...' if len(classes) > 12 else ''})")
    return _checked(split, classes, a, b)


def draw_classes(tasks: dict, per_task: int, seed: int, split: str = "") -> dict:
    """``tasks`` with ``per_task`` classes of each task kept, a seeded draw: one permutation of each task's classes
    by ``seed``, of which the first ``per_task`` are kept, so that at one seed a smaller draw lies inside a larger
    one (nested) and tasks of unequal size become balanced. The kept classes stay in the dataset's order."""
    out = dict(tasks)
    for i, task in enumerate(("A", "B")):
        names = list(tasks[task])
        if not names:
            continue  # a one-directional plan's empty task A
        if per_task > len(names):
            raise ProbeError(f"split {split!r}: task {task} has {len(names)} classes, fewer than the "
                             f"{per_task} a task asked for (--classes-per-task)")
        order = np.random.default_rng([seed, i, 7919]).permutation(len(names))
        kept = set(order[:per_task].tolist())
        out[task] = [c for j, c in enumerate(names) if j in kept]
    return out


def _read_split_file(path: str, classes: list[str]) -> tuple[list[str], list[str], dict[str, str]]:
    """Task A's and task B's class names, and the file's labels (name, note; those it gives)."""
    try:
        with open(path) as f:
            obj = json.load(f)
    except FileNotFoundError:
        raise ProbeError(f"split file {path!r} does not exist") from None
    except IsADirectoryError:
        raise ProbeError(f"split file {path!r} is a directory; expected a JSON file "
                         '{"A": [...], "B": [...]}') from None
    except OSError as e:
        raise ProbeError(f"split file {path!r} cannot be read: {e.strerror or e}") from None
    except UnicodeDecodeError:
        raise ProbeError(f"split file {path!r} is not text; expected a JSON file "
                         '{"A": [...], "B": [...]}') from None
    except json.JSONDecodeError as e:
        raise ProbeError(f"split file {path!r} is not JSON: {e}") from None
    if not isinstance(obj, dict) or not {"A", "B"} <= set(obj) <= {"A", "B", *SPLIT_FILE_LABELS}:
        raise ProbeError(f"split file {path!r} must hold an object with the keys 'A' and 'B' (and optionally "
                         f"'name' and 'note'), got {sorted(obj) if isinstance(obj, dict) else type(obj).__name__}")
    tasks = []
    for task in ("A", "B"):
        if not isinstance(obj[task], list):
            raise ProbeError(f"split file {path!r}: task {task} must be a list of class names or indices, "
                             f"got {obj[task]!r}")
        names = []
        for c in obj[task]:
            if not isinstance(c, (str, int)) or isinstance(c, bool):
                raise ProbeError(f"split file {path!r}: {c!r} in task {task} is neither a class name "
                                 "nor an index")
            if isinstance(c, int) and not isinstance(c, bool):
                if not 0 <= c < len(classes):
                    raise ProbeError(f"split file {path!r}: class index {c} in task {task} is out of range "
                                     f"0..{len(classes) - 1}")
                c = classes[c]
            names.append(c)
        tasks.append(names)
    return tasks[0], tasks[1], _labels(path, obj)


def _labels(path: str, obj: dict) -> dict[str, str]:
    """A split file's name and note, checked: the name is shown where the split is (reports, ``probe plan``), so
    it is a short label that is safe in a file name or a table cell; the note is any one string."""
    name, note = obj.get("name"), obj.get("note")
    if name is not None and not (isinstance(name, str) and _SPLIT_NAME.fullmatch(name)):
        raise ProbeError(f"split file {path!r}: name {name!r} must be 1 to 64 letters, digits, '-', '_' or '.'")
    if name is not None and (name in SPLITS or name == TARGET_SPLIT):
        raise ProbeError(f"split file {path!r}: name {name!r} is one of probe's own splits; choose another")
    if note is not None and not isinstance(note, str):
        raise ProbeError(f"split file {path!r}: note {note!r} must be a string")
    return {k: obj[k] for k in SPLIT_FILE_LABELS if obj.get(k) is not None}


def _checked(split: str, classes: list[str], a: list[str], b: list[str]) -> dict[str, list[str]]:
    for task, names in (("A", a), ("B", b)):
        if not names:
            raise ProbeError(f"split {split!r}: task {task} has no classes")
        for c in names:
            if c not in classes:
                raise ProbeError(f"split {split!r}: unknown class {c!r} in task {task}; "
                                 f"the dataset's classes are {', '.join(map(str, classes[:12]))}"
                                 f"{', ...' if len(classes) > 12 else ''}")
        seen = set()
        for c in names:
            if c in seen:
                raise ProbeError(f"split {split!r}: class {c!r} appears twice in task {task}")
            seen.add(c)
    both = [c for c in a if c in set(b)]
    if both:
        raise ProbeError(f"split {split!r}: class {both[0]!r} is in both task A and task B")
    order = {c: i for i, c in enumerate(classes)}
    return {"A": sorted(a, key=order.__getitem__), "B": sorted(b, key=order.__getitem__)}

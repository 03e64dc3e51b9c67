"""A plan as the command line shows it: its networks and what each copies from, its cuts, its source network, its
splits with their image counts, and advice on a short training budget."""

from __future__ import annotations

from pathlib import Path

from probe.data.wordnet import class_label
from probe.planning.plan import PlannedNetwork
from probe.specs.spec import Recipe, SourceSpec


def task_summaries(plan: list[PlannedNetwork], arrays) -> list[dict]:
    """What each split and split seed of ``plan`` trains on: ``split``, ``split_seed``, its ``replicates`` (their
    ids' first part), its file's ``name`` and ``note`` where given, and ``tasks``: per task with classes, its
    ``classes`` and the image counts of :func:`probe.data.tasks.task_counts`, the test split's smallest and largest
    class included. ``arrays``: the dataset's images."""
    from probe.data.tasks import task_counts  # sklearn, which reading a run (status, analyze) does without

    out: dict[tuple, dict] = {}
    for p in plan:
        spec = p.spec
        # a fixed split's replicates differ in their classes where a study draws some of each task
        key = (spec.split, spec.split_seed, spec.classes_a, spec.classes_b)
        if key not in out:
            tasks = {task: {"classes": list(classes),
                            **task_counts(arrays, list(classes), spec.data, test_classes=True)}
                     for task, classes in (("A", spec.classes_a), ("B", spec.classes_b)) if classes}
            out[key] = {"split": spec.split, "split_seed": spec.split_seed, "replicates": [], **p.split_labels,
                        "tasks": tasks}
        if spec.replicate not in out[key]["replicates"]:
            out[key]["replicates"].append(spec.replicate)
    return list(out.values())


def format_task_summaries(summaries: list[dict], names_shown: int = 20) -> list[str]:
    """:func:`task_summaries` as lines for a terminal (no line starts with an id, so a plan's network lines stay the
    only ones that do); a task of more than ``names_shown`` classes lists its first ones."""
    lines = []
    for s in summaries:
        split = s["split"] if s["split_seed"] is None else f"{s['split']} seed {s['split_seed']}"
        named = f"{s['name']} ({split})" if "name" in s else split
        lines.append(f"split {named}, replicates {', '.join(s['replicates'])}")
        if "note" in s:
            lines.append(f"  note: {s['note']}")
        for task, t in s["tasks"].items():
            names = ", ".join(map(class_label, t["classes"][:names_shown])) + (
                ", ..." if len(t["classes"]) > names_shown else "")
            lines.append(f"  task {task}, {len(t['classes'])} classes: {names}")
            lines.append(f"    train {t['train']} ({_class_range(t['smallest'], t['largest'])}), val {t['val']}, "
                         f"test {t['test']}")
            if "test_smallest" in t:  # summaries made before the test split's classes were counted have none
                lines.append(f"    test: {_class_range(t['test_smallest'], t['test_largest'])}")
    return lines


def _class_range(smallest: tuple[str, int], largest: tuple[str, int]) -> str:
    """The smallest and largest class of a split, or, when every class has as many images (a cap every class
    reaches), that count alone: naming one class as both would read as if the split had one class."""
    (small, n_small), (large, n_large) = smallest, largest
    if n_small == n_large:
        return f"every class {n_small}"
    return f"smallest class {small!r}: {n_small}, largest {large!r}: {n_large}"


def format_networks(plan: list[PlannedNetwork]) -> list[str]:
    """One line per network: its id, then what it copies its layers 1..n from (a base network of the plan, or the
    source network's file, named by its file name; the plan's source lines give its path)."""
    lines = []
    for p in plan:
        parents = list(p.depends_on)
        if p.spec.source_network is not None:
            parents.append(f"source file {Path(p.spec.source_network.path).name}")
        dose = p.spec.dose
        if dose is not None:  # what the name's x10 means, where the reader meets it
            each = "each channel by its own factor in [1/{0}, {0}]" if dose.per_channel else "x {0}"
            parents.append(f"{p.layers[p.spec.cut - 1]} {each.format(dose.text.lstrip('~'))}")
        lines.append(f"{p.spec.id:<40} {'<- ' + ', '.join(parents) if parents else ''}")
    return lines


def planned_cuts(plan: list[PlannedNetwork]) -> list[int]:
    """The cuts at which ``plan`` cuts any network, ascending (a base network's cut is 0: it is cut nowhere)."""
    return sorted({p.spec.cut for p in plan if p.spec.cut})


def format_cuts(plan: list[PlannedNetwork], checked: dict[int, int] | None = None) -> list[str]:
    """Per planned cut n, the layer it cuts after (layers 1..n are copied or frozen, the rest trained anew), and
    with a source network how many of the file's tensors (layers 1..n) were checked, by name and shape."""
    if not plan:
        return []
    layers = plan[0].layers
    lines = []
    for n in planned_cuts(plan):
        line = f"cut {n}: after {layers[n - 1]} (layer {n} of {len(layers)})"
        if checked is not None and n in checked:
            line += (f"; the source file's {checked[n]} tensors of layers 1..{n} checked (names and shapes)")
        lines.append(line)
    return lines


def format_source(source: SourceSpec) -> list[str]:
    """The source network's file as planned: its path, SHA-256 (every SnB's spec records both, and a file changed
    since is refused), key map and input normalization."""
    lines = [f"source network file {source.path}", f"  SHA-256 {source.sha256}"]
    if source.key_map:
        lines.append("  key map: " + ", ".join(f"{a!r} -> {b!r}" for a, b in source.key_map))
    if source.mean is not None:
        lines.append(f"  input normalization: mean {list(source.mean)}, std {list(source.std)}")
    return lines


SHORT_RUN_EPOCHS = 10  # fewer epochs than this is a short budget for the paper's step schedule
HIGH_LR = 0.02  # above this, the first steps of an un-warmed run can throw a network off (short runs: no recovery)
SHORT_RUN_OPTIONS = "--schedule cosine --warmup 0.2 --lr 0.02"


def budget_advice(recipe: Recipe) -> str | None:
    """One line when the recipe's epochs are few for its schedule, naming the options that train in short runs;
    None otherwise. The paper's step schedule divides the rate tenfold after each third of training: in a few
    epochs the rate drops before the networks leave chance (a 4-epoch run of the defaults left its bases at
    0.03-0.17 on 42-51 classes), and a high rate without warm-up can throw them off in the first steps."""
    if recipe.epochs >= SHORT_RUN_EPOCHS:
        return None
    epochs = f"{recipe.epochs} epoch{'s' if recipe.epochs != 1 else ''}"
    if recipe.schedule == "step":
        why = (f"{epochs} of the step schedule (lr {recipe.lr:g}, divided by {1 / recipe.lr_gamma:g} after every "
               f"{recipe.lr_step_every:.0%} of training) can leave the bases near chance")
    elif recipe.warmup == 0 and recipe.lr > HIGH_LR:
        why = f"{epochs} at lr {recipe.lr:g} without warm-up can throw the networks off in their first steps"
    else:
        return None
    return f"short budget: {why}; for short runs use {SHORT_RUN_OPTIONS}"

"""Every network's test accuracy on its target task, as a labelled xarray Dataset.

Dims: ``split`` (random, vehicles-animals, ...), ``replicate`` (split seed and init seed, e.g. ``s0/init0``),
``target`` (A or B: both directions of a split count as replicates, as in Yosinski et al. 2014, Sec. 4.1), ``n``
(the cut layer) and ``variant`` (BnB, BnB+, AnB, AnB+, RnB). ``base`` holds baseA/baseB per split, replicate and
target; ``acc`` holds the cut networks; ``classes`` and ``chance`` (1 / classes) the target task's class count and
chance level per split and target. Missing networks are NaN.

The accuracy is one of :data:`METRICS` (the Dataset's ``metric`` attr says which): top-1, the paper's, or the
class-balanced accuracy (mean per-class recall), which an imbalanced test set cannot inflate by its large classes.
A network whose metrics.json predates the balanced accuracy has NaN there.

A one-directional run's (a source network trained elsewhere donates the layers) has the one target B, and SnB and
SnB+ in the places of AnB and AnB+.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import xarray as xr

from probe.architectures.registry import get_architecture
from probe.errors import ProbeError
from probe.planning.plan import read_plan
from probe.specs.spec import NetworkSpec
from probe.specs.variants import (
    BASE,
    LONG_BASE,
    ONE_DIRECTION,
    SOURCE_VARIANTS,
    STITCH_VARIANTS,
    TASKS,
    Variant,
    cut_variants,
)
from probe.storage.checkpoint import read_metrics
from probe.storage.run import Run


@dataclass(frozen=True)
class Metric:
    field: str  # metrics.json's field, and accuracies.csv's column
    name: str
    meaning: str


METRICS = {"top1": Metric("test_acc", "top-1", "the fraction of test images classified correctly"),
           "balanced": Metric("test_balanced_acc", "class-balanced", "the mean over classes of each class's recall")}


def check_metric(metric: str) -> None:
    if metric not in METRICS:
        raise ProbeError(f"accuracy metric {metric!r} is not one of {', '.join(METRICS)}")


def replicate_label(spec: NetworkSpec) -> str:
    """``s0/init0`` for a seeded split, ``init0`` for a fixed one."""
    init = f"init{spec.init_seed}"
    return init if spec.split_seed is None else f"s{spec.split_seed}/{init}"


@dataclass(frozen=True)
class RunMetrics:
    """A run's planned networks and their metrics.json (an empty dict where a network has none, or a damaged one),
    read once for everything the analysis derives from them."""

    study: dict
    specs: list[NetworkSpec]  # the protocol's networks
    layers: tuple[str, ...] | None
    metrics: dict[str, dict]
    longer: tuple[NetworkSpec, ...] = ()  # the convergence check's longer bases, apart: no part of the protocol
    # split -> the name its split file gives itself, which reports show in place of the path
    split_labels: dict[str, str] = field(default_factory=dict)

    @property
    def missing(self) -> list[str]:
        """The planned networks that are not finished."""
        return [s.id for s in (*self.specs, *self.longer) if self.metrics[s.id].get("status") != "done"]

    def labelled(self, metric: str = "top1") -> xr.Dataset:
        """:meth:`dataset` with each split named as its split file names it (:func:`label_splits`): what a report
        shows."""
        return label_splits(self.dataset(metric), self.split_labels)

    def label(self, split: str) -> str:
        """A split as reports show it: its file's name, or the split itself."""
        return self.split_labels.get(split, split)

    def dataset(self, metric: str = "top1") -> xr.Dataset:
        """The accuracy Dataset in ``metric``; NaN for a finished network whose metrics.json lacks it."""
        check_metric(metric)
        field = METRICS[metric].field
        found = {i: _accuracy(m.get(field)) for i, m in self.metrics.items() if m.get("status") == "done"}
        return build_dataset([*self.specs, *self.longer], found, self.study, self.layers, metric)


def _accuracy(value) -> float:
    """A metrics.json accuracy, NaN where it is absent (older files) or not a number."""
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else math.nan


def read_run_metrics(run_dir: Path) -> RunMetrics:
    """The plan of ``run_dir`` and every planned network's metrics."""
    study, plan = read_plan(run_dir)
    metrics = {}
    for p in plan:
        try:
            metrics[p.spec.id] = read_metrics(Run(run_dir).network(p.spec.id).metrics) or {}
        except ProbeError as e:  # one damaged file leaves its network out, not the whole analysis
            print(f"warning: {e}; left out as unfinished", file=sys.stderr)
            metrics[p.spec.id] = {}
    specs = [p.spec for p in plan]
    labels = {p.spec.split: p.split_name for p in plan if p.split_name}
    return RunMetrics(study.to_dict(), [s for s in specs if Variant.of(s) != LONG_BASE],
                      plan[0].layers if plan else None, metrics, tuple(s for s in specs if Variant.of(s) == LONG_BASE),
                      labels)


def label_splits(ds: xr.Dataset, labels: dict[str, str]) -> xr.Dataset:
    """``ds`` (any Dataset with a ``split`` dim) with each split that a split file names (``labels``: split -> name)
    under that name: reports, tables and figure files then show ``holdout-animals`` where the run says
    ``file:splits/ao.json``. Names are unique within a study (the planner refuses two alike)."""
    if not labels or "split" not in ds.dims:
        return ds
    return ds.assign_coords(split=_strings(labels.get(str(s), str(s)) for s in ds["split"].values))


def accuracy_dataset(run_dir: Path, metric: str = "top1") -> tuple[xr.Dataset, list[str]]:
    """The run's test accuracies in ``metric`` (:data:`METRICS`), and the ids of planned networks that are not
    finished."""
    check_metric(metric)
    run = read_run_metrics(run_dir)
    return run.dataset(metric), run.missing


def build_dataset(specs: list[NetworkSpec], accuracy: dict[str, float], study: dict | None = None,
                  layers: tuple[str, ...] | None = None, metric: str = "top1") -> xr.Dataset:
    """Arrange ``accuracy`` (network id -> test accuracy in ``metric``) of ``specs`` on the dims above; ``layers``:
    the architecture's layer names (default: as the registry declares them), for the ``layer`` coord of each n.
    The run is one-directional when its ``study`` has a source network, or one of ``specs`` copies from one. The
    convergence check's longer bases, where planned, are ``base_long``, beside ``base``."""
    check_metric(metric)
    longer = [s for s in specs if Variant.of(s) == LONG_BASE]
    specs = [s for s in specs if Variant.of(s) != LONG_BASE]
    splits = list(dict.fromkeys(s.split for s in specs))
    replicates = list(dict.fromkeys(replicate_label(s) for s in specs))
    cuts = sorted({s.cut for s in specs if s.cut > 0})
    one_way = bool((study or {}).get("source")) or any(s.source_network for s in specs)
    targets, variants = ONE_DIRECTION if one_way else TASKS, cut_variants(one_way)
    variants += tuple(v for v in STITCH_VARIANTS if any(Variant.of(s) == v for s in specs))  # when planned
    # a dosed network (the positive control) is a variant of its own, BnB×10, after the plain ones
    variants = [v.name for v in variants]
    variants += list(dict.fromkeys(s.variant_label for s in specs if s.dose is not None))
    base = np.full((len(splits), len(replicates), len(targets)), np.nan)
    acc = np.full((len(splits), len(replicates), len(targets), len(cuts), len(variants)), np.nan)
    planned = np.zeros(acc.shape, dtype=bool)
    classes = np.zeros((len(splits), len(targets)), dtype=np.int64)
    for s in specs:
        i, r, t = splits.index(s.split), replicates.index(replicate_label(s)), targets.index(s.target)
        classes[i, t] = len(s.target_classes)  # the same for every seed of a split: its halves' sizes are fixed
        value, variant = accuracy.get(s.id, np.nan), Variant.of(s)
        if variant == BASE:
            base[i, r, t] = value
        else:
            j, v = cuts.index(s.cut), variants.index(s.variant_label)
            acc[i, r, t, j, v] = value
            planned[i, r, t, j, v] = True
    layer_names = {}
    if specs:
        names = layers or get_architecture(specs[0].arch.name).layers
        layer_names = {"layer": ("n", _strings([names[n - 1] for n in cuts]))}
    base_long = np.full(base.shape, np.nan)
    for s in longer:
        if s.split in splits and replicate_label(s) in replicates:
            base_long[splits.index(s.split), replicates.index(replicate_label(s)), targets.index(s.target)] = \
                accuracy.get(s.id, np.nan)
    with np.errstate(divide="ignore"):
        chance = np.where(classes > 0, 1.0 / classes, np.nan)  # NaN: specs that do not name their classes
    ds = xr.Dataset(
        {"base": (("split", "replicate", "target"), base),
         "acc": (("split", "replicate", "target", "n", "variant"), acc),
         "planned": (("split", "replicate", "target", "n", "variant"), planned),
         "classes": (("split", "target"), classes), "chance": (("split", "target"), chance)},
        coords={"split": _strings(splits), "replicate": _strings(replicates), "target": _strings(targets),
                "n": cuts, "variant": _strings(variants), **layer_names})
    text = f"{METRICS[metric].name}: {METRICS[metric].meaning}"
    ds.attrs["metric"] = metric
    ds["acc"].attrs["description"] = f"test accuracy ({text}) on the target task"
    ds["base"].attrs["description"] = f"test accuracy ({text}) of baseA/baseB on their own task"
    ds["classes"].attrs["description"] = "classes of the target task"
    ds["chance"].attrs["description"] = "chance level of the target task: 1 / classes"
    if longer:
        factor = longer[0].recipe.epochs / specs[0].recipe.epochs if specs else math.nan
        ds["base_long"] = (("split", "replicate", "target"), base_long)
        ds["base_long"].attrs["description"] = (f"test accuracy ({text}) of the convergence check's longer bases, "
                                                f"trained {factor:g} times as long as baseA/baseB")
    if study is not None:
        ds.attrs["study"] = json.dumps(study, sort_keys=True)
    return ds


def _strings(values) -> np.ndarray:
    """Variable-length strings: zarr v3 has a specified encoding for them, not for fixed-width unicode."""
    return np.array(list(values), dtype=object)


def one_directional(ds: xr.Dataset) -> bool:
    """Whether ``ds`` is a one-directional run's: target B only, its layers donated by a source network."""
    return SOURCE_VARIANTS[0].name in ds["variant"].values


def trained_targets(ds: xr.Dataset) -> list[str]:
    """The target tasks any network of ``ds`` finished on: both directions, or one where the other was not trained
    (``probe train --networks`` on one task's networks, a one-directional run)."""
    done = ds["base"].notnull().any([d for d in ds["base"].dims if d != "target"])
    if "acc" in ds and ds["acc"].size:
        done = done | ds["acc"].notnull().any([d for d in ds["acc"].dims if d != "target"])
    return [str(t) for t, d in zip(ds["target"].values, done.values) if d]


def format_table(ds: xr.Dataset) -> str:
    """Mean test accuracy per split, cut n and variant over replicates (and both directions), with the count, and
    the split's chance level."""
    lines = []
    names = [str(v) for v in ds["variant"].values]
    over = "seeds" if one_directional(ds) or len(trained_targets(ds)) < 2 else "seeds and both directions"
    metric = METRICS[ds.attrs.get("metric", "top1")].name
    for split in ds["split"].values:
        d = ds.sel(split=split)
        lines.append(f"split {split}: mean test accuracy ({metric}) over {over} (networks)")
        lines.append("   n  " + "".join(f"{v:>15}" for v in [BASE.name, *names]))
        base = d["base"].values.ravel()
        lines.append(f"{0:>4}  " + _cell(base) + "".join(f"{'':>15}" for _ in names))
        for n in d["n"].values:
            cells = [_cell(d["acc"].sel(n=n, variant=v).values.ravel()) for v in names]
            lines.append(f"{int(n):>4}  " + f"{'':>15}" + "".join(cells))
        lines.append(f"chance: {chance_text(ds, split)}")
    return "\n".join(lines) if lines else "no networks planned"


def chance_levels(ds: xr.Dataset, split: str) -> list[tuple[float, int, list[str]]]:
    """The distinct chance levels of ``split``'s target tasks: ``(chance, classes, targets)``, one entry when its
    tasks have as many classes (random halves of an even count), two for a split of unequal tasks."""
    levels: dict[int, list[str]] = {}
    if "classes" not in ds:  # a Dataset rebuilt from an accuracies.csv, which does not record them
        return []
    for t in ds["target"].values:
        k = int(ds["classes"].sel(split=split, target=t))
        if k > 0:
            levels.setdefault(k, []).append(str(t))
    return [(1.0 / k, k, targets) for k, targets in levels.items()]


def chance_text(ds: xr.Dataset, split: str) -> str:
    """``0.200 (5 classes)``, or per target task where they differ: ``0.250 (4 classes, target A), ...``."""
    levels = chance_levels(ds, split)
    if not levels:
        return "unknown (the plan does not name the classes)"
    if len(levels) == 1:
        return f"{levels[0][0]:.3f} ({levels[0][1]} classes)"
    return ", ".join(f"{c:.3f} ({k} classes, target {'/'.join(t)})" for c, k, t in levels)


def _cell(values: np.ndarray) -> str:
    values = values[np.isfinite(values)]
    return f"{values.mean():>10.4f} ({len(values)})" if len(values) else f"{'-':>15}"


def rows(ds: xr.Dataset, *others: xr.Dataset) -> list[dict]:
    """One row per finished network: split, replicate, target, variant, n, and its test accuracy in the metric of
    ``ds`` and of each of ``others`` (the same networks in other metrics), one column each: ``test_acc`` (top-1),
    ``test_balanced_acc`` (class-balanced). A network is a row when any of them is finite."""
    datasets = (ds, *others)
    columns = [METRICS[d.attrs.get("metric", "top1")].field for d in datasets]
    out = []

    def add(key: dict, values: list[float]) -> None:
        if any(np.isfinite(v) for v in values):
            out.append({**key, **dict(zip(columns, values))})

    for split in ds["split"].values:
        for rep in ds["replicate"].values:
            for t in ds["target"].values:
                cell = dict(split=split, replicate=rep, target=t)
                add({**cell, "variant": BASE.name, "n": 0}, [float(d["base"].sel(**cell)) for d in datasets])
                if "base_long" in ds:
                    add({**cell, "variant": LONG_BASE.name, "n": 0},
                        [float(d["base_long"].sel(**cell)) for d in datasets])
                for n in ds["n"].values:
                    for v in ds["variant"].values:
                        add({**cell, "variant": v, "n": int(n)},
                            [float(d["acc"].sel(**cell, n=n, variant=v)) for d in datasets])
    return out


def per_class_rows(run: RunMetrics) -> list[dict]:
    """One row per finished network and class of its target task: correct and total test images, and their ratio
    (the class's recall). Networks whose metrics.json predates the per-class counts have none."""
    out = []
    for s in run.specs:
        m = run.metrics[s.id]
        per_class = m.get("test_per_class") if m.get("status") == "done" else None
        if not isinstance(per_class, dict):
            continue
        for name, correct, count in zip(per_class["classes"], per_class["correct"], per_class["count"]):
            out.append({"network": s.id, "split": run.label(s.split), "replicate": replicate_label(s),
                        "target": s.target, "variant": s.variant_label, "n": s.cut, "class": name,
                        "correct": correct, "count": count, "accuracy": correct / count if count else math.nan})
    return out

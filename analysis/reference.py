"""The original paper's ImageNet numbers (shipped in ``reference_data/``), as accuracy relative to each run's own
base network, per cut n — the scale on which a small-data reproduction can be set beside them — and how each of its
networks trained (the training loss and validation loss along its 450k iterations).

Yosinski, Clune, Bengio & Lipson, "How transferable are features in deep neural networks?", NIPS 2014.
"""

from __future__ import annotations

import csv
from collections import defaultdict
from importlib import resources

import numpy as np

CITATION = ("Yosinski, Clune, Bengio & Lipson, How transferable are features in deep neural networks? NIPS 2014 "
            "(ImageNet, CaffeNet; per-run numbers from the authors' published logs)")

# our variant label -> the paper's run kind
KINDS = {"BnB": "selffer_frozen", "BnB+": "selffer_ft", "AnB": "transfer_frozen", "AnB+": "transfer_ft",
         "dissimilar AnB": "transfer_frozen_natman", "RnB": "random_frozen_1000class"}


def reference_runs() -> list[dict]:
    """Every run of the paper as a dict of the CSV's columns (n and accuracy as numbers)."""
    text = resources.files("probe.analysis").joinpath("reference_data/yosinski2014_imagenet_runs.csv").read_text()
    runs = list(csv.DictReader(text.splitlines()))
    for r in runs:
        r["n"] = int(r["n"])
        r["top1"] = float(r["top1_mean_best10"])
    return runs


# The paper's training length: every network trained for this many iterations (its curves' last point)
PAPER_ITERATIONS = 450_000


def reference_curves() -> list[dict]:
    """Every run's training curve points as dicts of the CSV's columns, the numbers as numbers (NaN where a point has
    no validation pass): ``kind``, ``n``, ``iteration``, ``train_loss`` (Caffe's mean over the 1,000 iterations
    before, with dropout and augmentation on), ``val_top1``, ``val_loss``."""
    text = resources.files("probe.analysis").joinpath("reference_data/yosinski2014_training_curves.csv").read_text()
    points = list(csv.DictReader(text.splitlines()))
    for r in points:
        r["n"], r["iteration"] = int(r["n"]), int(r["iteration"])
        r["train_loss"] = float(r.pop("train_loss_mean_1000"))
        for key in ("val_top1", "val_loss"):
            r[key] = float(r[key]) if r[key] else float("nan")
    return points


def reference_curve_mean(label: str, n: int, iteration: int, column: str = "train_loss") -> tuple[float, int]:
    """The paper's mean ``column`` over its networks of variant ``label`` (base or one of :data:`KINDS`) cut at ``n``
    (0 for the bases) at ``iteration``, and how many networks it averages."""
    kind = "base" if label == "base" else KINDS[label]
    values = [r[column] for r in reference_curves()
              if r["kind"] == kind and r["n"] == n and r["iteration"] == iteration and np.isfinite(r[column])]
    return (float(np.mean(values)) if values else float("nan")), len(values)


def reference_relative() -> dict[str, dict[int, np.ndarray]]:
    """Our variant label -> n -> the paper's runs' accuracy divided by the base network of the same target task
    (same split seed; natural/man-made bases for the dissimilar split; the 1000-class base for random weights)."""
    runs = reference_runs()
    base = {(r["split"], r["target"]): r["top1"] for r in runs if r["kind"] in ("base", "base_natman")}
    whole = next(r["top1"] for r in runs if r["kind"] == "base_1000class")
    natman_base = {r["target"].split("(")[0]: r["top1"] for r in runs if r["kind"] == "base_natman"}
    out: dict[str, dict[int, list[float]]] = {label: defaultdict(list) for label in KINDS}
    for label, kind in KINDS.items():
        for r in runs:
            if r["kind"] != kind:
                continue
            if kind == "random_frozen_1000class":
                b = whole
            elif kind == "transfer_frozen_natman":
                b = natman_base[r["target"]]
            else:
                b = base[(r["split"], r["target"])]
            out[label][r["n"]].append(r["top1"] / b)
    return {label: {n: np.array(v) for n, v in sorted(per_n.items())} for label, per_n in out.items()}

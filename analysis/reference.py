"""The original paper's ImageNet numbers (shipped in ``reference_data/``), as accuracy relative to each run's own
base network, per cut n — the scale on which a small-data reproduction can be set beside them.

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

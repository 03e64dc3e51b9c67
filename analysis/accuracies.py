"""Every finished network's test accuracy on its target task, and the per-cut table the paper's Figure 2 plots."""

from __future__ import annotations

from collections import defaultdict
from pathlib import Path

import numpy as np

from probe.atomic import read_json
from probe.checkpoint import METRICS
from probe.plan import read_plan
from probe.train import network_dir

COLUMNS = ("base", "BnB", "BnB+", "AnB", "AnB+", "RnB")


def collect_accuracies(run_dir: Path) -> list[dict]:
    """One row per finished network: id, split, replicate, target, paper-style variant label, cut, test accuracy."""
    _, plan = read_plan(run_dir)
    rows = []
    for p in plan:
        s = p.spec
        path = network_dir(run_dir, s) / METRICS
        if not path.exists() or (m := read_json(path)).get("status") != "done":
            continue
        label = "base" if s.variant == "base" else {"selffer": "BnB", "transfer": "AnB", "random": "RnB"}[s.variant]
        rows.append({"id": s.id, "split": s.split, "replicate": s.replicate, "target": s.target, "name": s.name,
                     "variant": label + ("+" if s.fine_tune else ""), "cut": s.cut, "test_acc": m["test_acc"]})
    return rows


def format_table(rows: list[dict]) -> str:
    """Mean test accuracy per split, cut n and variant over replicates and both directions, with the count."""
    if not rows:
        return "no finished networks yet"
    cells: dict[tuple, list[float]] = defaultdict(list)
    for r in rows:
        cells[(r["split"], r["cut"], r["variant"])].append(r["test_acc"])
    lines = []
    for split in sorted({r["split"] for r in rows}):
        lines.append(f"split {split}: mean test accuracy over replicates and directions (count)")
        lines.append("   n  " + "".join(f"{c:>14}" for c in COLUMNS))
        for n in sorted({r["cut"] for r in rows if r["split"] == split}):
            row = []
            for c in COLUMNS:
                v = cells.get((split, n, c))
                row.append(f"{np.mean(v):>9.4f} ({len(v)})" if v else f"{'':>14}")
            lines.append(f"{n:>4}  " + "".join(f"{x:>14}" for x in row))
    return "\n".join(lines)

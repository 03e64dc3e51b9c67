"""Claim 8 and initialization: does the random-weights baseline collapse under the paper's Gaussian initialization,
and is the collapse a network that never trained?

Yosinski et al. (2014) report that a network whose layers 1..n (n >= 3) are frozen at random weights falls to near
chance on ImageNet. Their Caffe networks were initialized with a Gaussian of std 0.01 (no BatchNorm), under which a
deep stack of random layers passes on almost no signal, and the original logs show those networks' loss staying at
ln(1000) throughout: they never trained. This study trains the bases and RnB at a few cuts under ``--init
gaussian`` and under He's initialization (``kaiming``), and reads, beside RnB's accuracy relative to its base, the
training loss of the first and last epochs: a loss that does not move is a network that never trained, not one that
learned from poor features.

``collect`` reads the run directories (one per dataset and initialization) and writes
``docs/reproduction/initialization/initialization.csv`` (per run and cut n: RnB's accuracy and its accuracy
relative to the base, with intervals over seeds, and the mean first- and last-epoch training loss of the bases and
of RnB, beside ln(classes)) and ``initialization.json`` (each run's study and its bases' accuracy).

    python -m probe.studies.reproduction initialization runs/init/*
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np

from probe.analysis.accuracies import accuracy_dataset
from probe.analysis.decomposition import relative, summarize, variant_means
from probe.analysis.render import Block, Code, Paragraph, Table, estimate, markdown, number, read_table, write_table
from probe.errors import ProbeError
from probe.planning.plan import read_plan
from probe.specs.variants import BASE
from probe.storage.atomic import read_json, write_json
from probe.storage.checkpoint import read_metrics
from probe.storage.run import Run

DOCS = Path(__file__).resolve().parents[1] / "docs"
FOLDER = "initialization"


def _losses(metrics: list[dict], epoch: int) -> float:
    """The mean training loss at ``epoch`` (0: first, -1: last) of these networks' metrics."""
    values = [m["epochs"][epoch]["train_loss"] for m in metrics if m.get("epochs")]
    return float(np.mean(values)) if values else float("nan")


def run_rows(run_dir: Path) -> tuple[dict, list[dict]]:
    """One run's description and its rows (one per cut n, and one for the bases at n = 0)."""
    run = Run(run_dir)
    study, plan = read_plan(run)
    split = study.splits[0]
    done = {p.spec.id: m for p in plan if (m := read_metrics(run.network(p.spec.id).metrics))
            and m.get("status") == "done"}
    classes = len(plan[0].spec.target_classes)
    ds, missing = accuracy_dataset(run)
    ds = ds.sel(split=[split])
    means = variant_means(ds)
    rel = summarize(relative(ds).sel(variant="RnB", drop=True))  # over seeds, each the mean of its directions
    name = Path(run_dir).name
    info = {"name": name, "run": str(run_dir), "dataset": study.data.name.partition(":")[0],
            "init": study.arch.init, "classes": classes, "study": study.to_dict(), "missing": missing}

    def losses(variant: str, n: int) -> dict:
        ms = [done[p.spec.id] for p in plan if p.spec.id in done and p.spec.cut == n
              and (p.spec.variant == variant)]
        return {"first_loss": _losses(ms, 0), "last_loss": _losses(ms, -1), "networks": len(ms)}

    base = means[(split, BASE.name, 0)]
    rows = [{"run": name, "dataset": info["dataset"], "init": info["init"], "n": 0, "variant": BASE.name,
             "acc": base.mean, "acc_low": base.low, "acc_high": base.high, "relative": 1.0, "rel_low": "",
             "rel_high": "", "seeds": base.replicates, "chance": 1 / classes, "ln_classes": math.log(classes),
             **losses("base", 0)}]
    for n in ds["n"].values:
        acc = means[(split, "RnB", int(n))]
        r = rel[(split, int(n))]
        rows.append({"run": name, "dataset": info["dataset"], "init": info["init"], "n": int(n), "variant": "RnB",
                     "acc": acc.mean, "acc_low": acc.low, "acc_high": acc.high, "relative": r.mean,
                     "rel_low": r.low, "rel_high": r.high, "seeds": r.replicates, "chance": 1 / classes,
                     "ln_classes": math.log(classes), **losses("random", int(n))})
    return info, rows


def collect(run_dirs: list[Path], docs: Path = DOCS) -> Path:
    """Write initialization.csv and initialization.json of the runs ``run_dirs``."""
    if not run_dirs:
        raise ProbeError("no run to collect: name the run directories of the initialization study")
    runs = sorted((run_rows(Path(r)) for r in run_dirs), key=lambda r: (r[0]["dataset"], r[0]["init"]))
    dest = docs / "reproduction" / FOLDER
    shutil.rmtree(dest, ignore_errors=True)
    dest.mkdir(parents=True)
    write_table(dest / "initialization.csv", [row for _, rs in runs for row in rs])
    write_json(dest / "initialization.json", {"runs": [info for info, _ in runs]})
    return dest


def _accuracy(row: dict) -> str:
    """An initialization.csv row's test accuracy, as the report prints an estimate."""
    return estimate({"mean": row["acc"], "low": row["acc_low"], "high": row["acc_high"], "replicates": row["seeds"]})


def _relative(row: dict) -> str:
    """An initialization.csv row's accuracy relative to its base (no interval for the bases' own row)."""
    return estimate({"mean": row["relative"], "low": row["rel_low"] or "nan", "high": row["rel_high"] or "nan",
                     "replicates": row["seeds"]})


class Initialization:
    """The committed tables of the initialization study, as the reproduction report renders them."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.info = read_json(folder / "initialization.json")
        self.rows = read_table(folder / "initialization.csv")

    def value(self, kind: str, *keys: str) -> str:
        """``relative:RUN:N`` (RnB relative to base), ``acc:RUN:N`` (n = 0: the bases), ``loss:RUN:N:first|last``."""
        try:
            if kind in ("relative", "acc", "loss"):
                name, n, *rest = keys
                row = next(r for r in self.rows if r["run"] == name and r["n"] == n)
                if kind == "relative":
                    return _relative(row)
                if kind == "acc":
                    return _accuracy(row)
                (which,) = rest
                return number(row[f"{which}_loss"])
        except (StopIteration, ValueError, KeyError):
            pass
        raise ProbeError(f"no initialization result {':'.join((kind, *keys))!r} in {self.folder} (placeholders: "
                         "relative:RUN:N, acc:RUN:N, loss:RUN:N:first|last)")

    def section(self) -> str:
        return markdown(self.blocks())

    def blocks(self) -> list[Block]:
        table = [[f"`{r['run']}`", r["init"], r["n"] if r["n"] != "0" else "base",
                  _accuracy(r), _relative(r) if r["n"] != "0" else "1",
                  number(r["chance"]), number(r["first_loss"]), number(r["last_loss"]), number(r["ln_classes"])]
                 for r in self.rows]
        runs = self.info["runs"]
        return [Table(["run", "init", "n", "test accuracy", "relative to base", "chance", "train loss, epoch 1",
                       "train loss, last epoch", "ln(classes)"], table),
                Paragraph("Commands:"),
                Code(["make init-study", *(f"# {r['name']}: {r['study']['data']['name']}, --init {r['init']}"
                                           for r in runs)])]

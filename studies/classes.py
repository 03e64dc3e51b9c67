"""Co-adaptation against the number of classes (docs/reproduction.md, "Co-adaptation and the number of classes").

Each rung is a run directory of a selffer-only study with the convergence check on one split of Tiny ImageNet with K
classes a task (``--classes-per-task K``: a nested draw, so a smaller rung's classes lie inside a larger one's at the
same seed, and each seed's line across rungs is a paired comparison), the same images per class, recipe and network
at every rung. ``collect`` writes ``docs/reproduction/classes/``:

- ``classes.csv``: per rung and cut n, the recipe experiment's row (:func:`probe.studies.recipe.arm`: the drop, the
  selffer's final training loss against its base's, the cut records, the bases' fit) with the rung's classes, the
  drop's detection limit at its seeds and at 5, and the smallest drop its null excludes once the longer bases bound
  the bases' bias;
- ``classes_seeds.csv``: per rung, replicate (its split seed and initial weights) and cut, the drop (the mean of the
  seed's two directions), the unit the trend is fitted over;
- ``trend.csv``: per cut and set of rungs (every rung; the converged ones), the slope of the drop against
  ln(classes), fitted per seed, with its interval over seeds, and the drop the seeds' lines give at the paper's 500
  classes: an extrapolation, beside the paper's own drop;
- ``classes.json``: per rung, what :func:`probe.studies.recipe.arm` says of it (study, convergence, warnings, networks
  at chance);
- ``records/RUNG.json.gz``: each rung's records, to collect it again without its run;
- ``figures/classes.png``: the drop against the classes a task, one line per cut.

    python -m probe.studies.reproduction classes runs/classes/tin-k5 runs/classes/tin-k10 ...
    python -m probe.studies.reproduction classes --add runs/classes/tin-k100   # beside the committed rungs
    python -m probe.studies.reproduction classes --pilot runs/classes/pilot-k100   # the recipe's pilot

``pilot.csv`` holds the recipe's pilots (:func:`pilot_rows`), kept when the rungs are collected again.
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from probe.analysis.decomposition import SIMILAR_SPLIT, decompose, replicates
from probe.analysis.records import SUFFIX, read_records, records_name, write_records
from probe.analysis.render import Block, Image, Paragraph, Table, estimate, markdown, number, read_table, write_table
from probe.analysis.stats import Estimate, detection_limit, excluded_drop, line_fits, spread_of_interval
from probe.analysis.stats import estimate as interval
from probe.errors import ProbeError
from probe.storage.atomic import read_json_file, write_json
from probe.studies.ladder import paper_drops
from probe.studies.recipe import DOCS, PAPER_CLASSES, arm, read_source

FOLDER = "classes"
RECORDS = "records"
PILOT = "pilot.csv"  # the recipe's pilots: each base's fit, the rule the ladder's recipe was chosen by
TREND_CUT = 5  # the paper's deepest dip, where the extrapolation is read
# The pilot's rule, fixed before it ran: a base fits its training set when its final training loss is at most this
# fraction of its final validation loss
FIT_RATIO = 0.5


def rung(run, name: str, source: str, split: str = SIMILAR_SPLIT) -> tuple[dict, list[dict], list[dict]]:
    """One rung's description, its rows of classes.csv (one per cut) and of classes_seeds.csv (one per seed and
    cut)."""
    info, rows, _ = arm(run, name, source, split)
    gain = Estimate(**info["convergence_gain"])
    for r in rows:
        k = int(r["drop_seeds"])
        scatter = spread_of_interval(r["drop_low"], r["drop_high"], k)
        drop = Estimate(r["drop_mean"], r["drop_low"], r["drop_high"], k, math.nan)
        r |= {"classes": info["classes"], "limit": detection_limit(scatter, k), "limit_5": detection_limit(scatter, 5),
              "excluded": excluded_drop(drop, gain)}
    drops = replicates(decompose(run.dataset("top1").sel(split=[split]))["coadaptation"].sel(split=split))
    seed_rows = [{"rung": name, "classes": info["classes"], "replicate": str(seed), "n": int(n),
                  "drop": float(drops.sel(rep=seed, n=n))}
                 for seed in drops["rep"].values for n in drops["n"].values]
    return info, rows, seed_rows


def trend_rows(seed_rows: list[dict], infos: list[dict]) -> list[dict]:
    """Per cut, over every rung and over the converged rungs: the slope of the drop against ln(classes) fitted per
    seed (a seed's rungs share its classes, nested), with its interval over seeds, and the drop the seeds' lines give
    at the paper's PAPER_CLASSES classes a task, an extrapolation beyond the largest rung, beside the paper's drops
    at that cut (mean and range)."""
    paper = paper_drops()
    seeds = sorted({r["replicate"] for r in seed_rows})
    converged = [i["name"] for i in infos if i["converged"] == "yes"]
    out = []
    for n in sorted({int(r["n"]) for r in seed_rows}):
        for subset, names in (("all", [i["name"] for i in infos]), ("converged", converged)):
            classes = {r["rung"]: int(r["classes"]) for r in seed_rows}
            names = sorted((m for m in names if m in classes), key=classes.get)
            x = np.log([classes[m] for m in names])
            y = np.full((len(seeds), len(names)), np.nan)
            for r in seed_rows:
                if int(r["n"]) == n and r["rung"] in names:
                    y[seeds.index(r["replicate"]), names.index(r["rung"])] = float(r["drop"])
            a, b = line_fits(x, y) if names else (np.array([]), np.array([]))
            slope, at_paper = interval(b), interval(a + b * math.log(PAPER_CLASSES))
            out.append({"n": n, "rungs": subset, "names": " ".join(names),
                        "slope_mean": slope.mean, "slope_low": slope.low, "slope_high": slope.high,
                        "slope_seeds": slope.replicates, "at_paper_mean": at_paper.mean,
                        "at_paper_low": at_paper.low, "at_paper_high": at_paper.high,
                        "largest": max((classes[m] for m in names), default=math.nan),
                        "paper_mean": float(paper[n].mean()) if n in paper else math.nan,
                        "paper_low": float(paper[n].min()) if n in paper else math.nan,
                        "paper_high": float(paper[n].max()) if n in paper else math.nan})
    return out


def pilot_rows(run, name: str) -> list[dict]:
    """Per base of a pilot run: its epochs, final training loss (the last epoch's, as it trained), the loss on the
    training set after training (eval mode), final validation loss, test accuracy, and whether it fits its training
    set by the rule fixed before the pilot ran (training loss at most FIT_RATIO of the validation loss)."""
    rows = []
    for spec in sorted((s for s in run.specs if s.variant == "base"), key=lambda s: s.id):
        m = run.metrics.get(spec.id) or {}
        if m.get("status") != "done" or not m.get("epochs"):
            continue
        last = m["epochs"][-1]
        ratio = last["train_loss"] / last["val_loss"]
        rows.append({"pilot": name, "network": spec.id, "classes": len(spec.target_classes),
                     "epochs": len(m["epochs"]), "train_loss": last["train_loss"],
                     "train_eval_loss": m.get("train_eval_loss", math.nan), "val_loss": last["val_loss"],
                     "ratio": ratio, "test_acc": m["test_acc"], "fits": "yes" if ratio <= FIT_RATIO else "no"})
    if not rows:
        raise ProbeError(f"pilot {name} has no finished base network")
    return rows


def collect_pilot(sources: list[Path], docs: Path = DOCS) -> Path:
    """Write the pilots ``sources`` (run directories, or records files) into ``docs/reproduction/classes/pilot.csv``,
    beside the committed ones (a pilot of the same name is replaced)."""
    dest = docs / "reproduction" / FOLDER
    fresh = [r for source in sources for r in pilot_rows(*reversed(read_source(Path(source))))]
    names = {r["pilot"] for r in fresh}
    kept = [r for r in read_table(dest / PILOT) if r["pilot"] not in names] if (dest / PILOT).exists() else []
    dest.mkdir(parents=True, exist_ok=True)
    write_table(dest / PILOT, kept + fresh)
    return dest


def collect(sources: list[Path], docs: Path = DOCS, add: bool = False) -> Path:
    """Write the tables, figure and records of the rungs ``sources`` (run directories, or records files) into
    ``docs/reproduction/classes/``; with ``add``, the committed rungs are collected again from their records beside
    them (a committed rung of the same name is replaced)."""
    dest = docs / "reproduction" / FOLDER
    read = [read_source(Path(s)) + (str(s),) for s in sources]
    names = [name for name, _, _ in read]
    if len(set(names)) < len(names):
        twice = next(n for n in names if names.count(n) > 1)
        raise ProbeError(f"two sources name rung {twice}: collect one source a rung")
    if add:
        origin = {i["name"]: i["run"] for i in read_json_file(dest / "classes.json", "collect every rung again "
                                                              "without --add")["rungs"]} \
            if (dest / "classes.json").exists() else {}
        kept = [p for p in sorted((dest / RECORDS).glob(f"*{SUFFIX}")) if records_name(p) not in names]
        read = [(records_name(p), read_records(p), origin.get(records_name(p), str(p))) for p in kept] + read
    if not read:
        raise ProbeError("no rung to collect: name the run directories of the classes ladder")
    rungs = sorted((rung(run, name, source) for name, run, source in read), key=lambda t: t[0]["classes"])
    records = {name: run for name, run, _ in read}
    scratch = dest.with_name(f".{FOLDER}.new")
    shutil.rmtree(scratch, ignore_errors=True)
    (scratch / "figures").mkdir(parents=True)
    for info, _, _ in rungs:
        write_records(records[info["name"]], scratch / RECORDS / f"{info['name']}{SUFFIX}")
    infos = [info for info, _, _ in rungs]
    rows = [r for _, rs, _ in rungs for r in rs]
    seed_rows = [r for _, _, ss in rungs for r in ss]
    write_table(scratch / "classes.csv", rows)
    write_table(scratch / "classes_seeds.csv", seed_rows)
    write_table(scratch / "trend.csv", trend_rows(seed_rows, infos))
    write_json(scratch / "classes.json", {"rungs": infos, "trend_cut": TREND_CUT, "paper_classes": PAPER_CLASSES})
    figure(read_table(scratch / "classes.csv"), scratch / "figures" / "classes.png")
    if (dest / PILOT).exists():  # the pilots are not rungs: they stay
        shutil.copy2(dest / PILOT, scratch / PILOT)
    shutil.rmtree(dest, ignore_errors=True)  # the whole folder at once: no table of one collection beside another's
    scratch.rename(dest)
    return dest


def figure(rows: list[dict], path: Path) -> None:
    """The drop against the classes a task (log axis), one line per cut, with its interval over seeds."""
    fig = Figure(figsize=(6.5, 4.5), layout="constrained")
    ax = fig.subplots()
    for n in sorted({int(r["n"]) for r in rows}):
        rs = sorted((r for r in rows if int(r["n"]) == n), key=lambda r: int(r["classes"]))
        k = np.array([int(r["classes"]) for r in rs])
        mean, low, high = (np.array([float(r[f"drop_{q}"] or "nan") for r in rs]) for q in ("mean", "low", "high"))
        ax.errorbar(k, mean, yerr=[mean - low, high - mean], marker="o", capsize=3, label=f"n = {n}")
    ax.axhline(0, color="grey", lw=0.8)
    ax.set_xscale("log")
    ax.set_xlabel("classes a task")
    ax.set_ylabel("co-adaptation drop (baseB - BnB)")
    ax.legend()
    fig.savefig(path, dpi=110)


class Classes:
    """The committed ladder of classes, as the reproduction chapter shows it."""

    def __init__(self, folder: Path):
        self.folder = folder
        collected = (folder / "classes.json").exists()  # before any rung, the pilots alone
        self.info = read_json_file(folder / "classes.json", "collect the rungs again") if collected else {"rungs": []}
        self.rows = read_table(folder / "classes.csv") if collected else []
        self.trend = read_table(folder / "trend.csv") if collected else []
        self.pilots = read_table(folder / PILOT) if (folder / PILOT).exists() else []

    def value(self, *keys: str) -> str:
        """``drop:RUNG:N`` (the drop and its interval), ``slope:SUBSET:N``, ``at_paper:SUBSET:N``;
        ``pilots`` (the pilots' table), ``pilot:PILOT:NETWORK:FIELD`` (a base's field of pilot.csv), ``fit:PILOT``
        (whether every base fits)."""
        what, name, n = (keys + ("", "", ""))[:3]
        if what == "pilots":
            return self.pilot_section()
        if what == "pilot" and len(keys) == 4:
            row = next((r for r in self.pilots if r["pilot"] == name and r["network"].endswith(n)), None)
            if row is not None and keys[3] in row:
                value = row[keys[3]]
                return number(value) if keys[3] in ("train_loss", "train_eval_loss", "val_loss", "ratio",
                                                    "test_acc") else value
        elif what == "fit":
            rows = [r for r in self.pilots if r["pilot"] == name]
            if rows:
                return "fits" if all(r["fits"] == "yes" for r in rows) else "does not fit"
        elif what == "drop":
            row = next((r for r in self.rows if r["arm"] == name and r["n"] == n), None)
            if row is not None:
                return estimate({k[5:]: v for k, v in row.items() if k.startswith("drop_")}
                                | {"replicates": row["drop_seeds"]})
        elif what in ("slope", "at_paper"):
            row = next((r for r in self.trend if r["rungs"] == name and r["n"] == n), None)
            if row is not None:
                return estimate({k[len(what) + 1:]: v for k, v in row.items() if k.startswith(f"{what}_")}
                                | {"replicates": row["slope_seeds"]})
        raise ProbeError(f"no classes-ladder value {':'.join(keys)!r} (values are drop:RUNG:N, slope:SUBSET:N, "
                         "at_paper:SUBSET:N, SUBSET all or converged, pilot:PILOT:NETWORK:FIELD, fit:PILOT)")

    def section(self) -> str:
        return markdown(self.blocks())

    def pilot_section(self) -> str:
        """The pilots' table: per base, its fit by the rule fixed before they ran."""
        return markdown([Table(["pilot", "base", "classes a task", "epochs", "final training loss",
                                "training loss, eval mode", "final validation loss", "training / validation",
                                "test accuracy", f"fits (at most {FIT_RATIO})"],
                               [[f"`{r['pilot']}`", r["network"], r["classes"], r["epochs"], number(r["train_loss"]),
                                 number(r["train_eval_loss"]), number(r["val_loss"]), number(r["ratio"]),
                                 number(r["test_acc"]), r["fits"]] for r in self.pilots])])

    def blocks(self) -> list[Block]:
        if not self.rows:
            return [Paragraph("No rung of the ladder has been collected yet.")]
        cuts = sorted({int(r["n"]) for r in self.rows})
        table, losses = [], []
        for info in self.info["rungs"]:
            rs = {int(r["n"]): r for r in self.rows if r["arm"] == info["name"]}
            first = next(iter(rs.values()))
            missing = f" ({len(info['missing'])} networks unfinished)" if info["missing"] else ""
            table.append([f"`{info['name']}`{missing}", info["classes"],
                          estimate({k[5:]: v for k, v in first.items() if k.startswith("base_")}
                                   | {"replicates": first["base_seeds"]}),
                          f"{estimate(info['convergence_gain'])} ({info['converged']})",
                          *[self.value("drop", info["name"], str(n)) for n in cuts], info["signature"]])
            for n, r in rs.items():
                losses.append([f"`{info['name']}`", n, number(r["base_train_loss"]), number(r["base_val_loss"]),
                               number(r["bnb_train_loss"]),
                               estimate({k[10:]: v for k, v in r.items() if k.startswith("loss_diff_")}
                                        | {"replicates": r["loss_diff_seeds"]}),
                               number(r["base_scale"]), number(r["bnb_scale"]),
                               *(number(float(r[c])) if math.isfinite(float(r[c] or "nan")) else "-"
                                 for c in ("limit", "limit_5", "excluded"))])
        trend = [[r["n"], r["rungs"], r["names"] or "-", self.value("slope", r["rungs"], r["n"]),
                  self.value("at_paper", r["rungs"], r["n"]),
                  f"{number(r['paper_mean'])} [{number(r['paper_low'])}, {number(r['paper_high'])}]"
                  if math.isfinite(float(r["paper_mean"] or "nan")) else "-"] for r in self.trend]
        return [Table(["rung", "classes a task", "base (mean of baseA and baseB)", "longer bases' gain (converged)",
                       *[f"drop n={n}" for n in cuts], "signature n=5"], table),
                *[Paragraph(f"`{info['name']}`: " + " ".join(
                    ([f"networks at chance: {', '.join(info['at_chance'])}."] if info.get("at_chance") else [])
                    + [f"Warning: {w}." for w in info.get("voided", [])]))
                  for info in self.info["rungs"] if info.get("at_chance") or info.get("voided")],
                Paragraph("Per rung and cut: the bases' final training loss beside their last validation loss (a "
                          "base that fits its training set sits far below), BnB's final training loss and its "
                          "paired difference with the base's; the scale of layer n's output at the end, base and "
                          "BnB; the drop the rung's seeds would detect four times in five, the same at 5 seeds, and "
                          "the smallest drop its null excludes once the longer bases bound the bases' bias:"),
                Table(["rung", "n", "base loss", "base val loss", "BnB loss", "BnB - base loss", "base scale",
                       "BnB scale", "detection limit", "at 5 seeds", "excludes"], losses),
                Paragraph(f"The trend: per cut, the slope of the drop against ln(classes), fitted seed by seed, and "
                          f"what the seeds' lines give at the paper's {PAPER_CLASSES} classes a task. That is an "
                          "extrapolation beyond the largest rung, not a measurement; the paper's own drops at the "
                          "cut (mean and range over its networks) stand beside it."),
                Table(["n", "rungs", "which", "slope per ln(classes)", f"drop at {PAPER_CLASSES} classes",
                       "paper's drop"], trend),
                Image(f"reproduction/{FOLDER}/figures/classes.png", "the drop against the classes a task")]

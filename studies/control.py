"""The positive control: does probe detect a dip it is given? (docs/reproduction.md, "A positive control").

Each arm is a run directory of a selffer-only study with doses (``--variants BnB --dose ...``): the bases, at each cut
the plain selffer BnB, and beside it one dosed selffer per dose (:mod:`probe.specs.dose`: the copied layer n
rescaled, the function it computes with a compensated layer n+1 unchanged). ``collect`` writes
``docs/reproduction/control/``:

- ``control.csv``: per arm, dose (``1`` for the plain selffer) and cut n: the base's and the selffer's accuracy, the
  drop (base - selffer), the dosed selffer against the plain one (paired per seed), its final training loss minus
  its base's (paired per seed) and in how many directions it is above, the networks at chance, and the drop's
  detection limit at 3 and 5 seeds from the arm's own seed-to-seed spread (:func:`probe.analysis.stats.
  detection_limit`);
- ``control.json``: per arm, its study, the convergence check's gain and, per dose, its verdict: in a one-seed arm
  (stage 1) whether the dose goes on (``kept``, or ``dropped`` and why), in a longer one whether it passes the success
  rule fixed before the runs (:func:`verdict`);
- ``records/ARM.json.gz``: the arm's records (:mod:`probe.analysis.records`), to collect it again without its run.

    python -m probe.studies.reproduction control runs/control/doses-P runs/control/doses-M
    python -m probe.studies.reproduction control --add runs/control/cuts-P     # beside the committed arms
    python -m probe.studies.reproduction control --recollect                   # every arm again, from its records
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import xarray as xr

from probe.analysis.accuracies import RunMetrics
from probe.analysis.decomposition import SIMILAR_SPLIT, replicates, summarize
from probe.analysis.records import SUFFIX, is_records, merge, read_records, write_records
from probe.analysis.render import Block, Paragraph, Table, estimate, markdown, number, read_table, write_table
from probe.analysis.sanity import LONGER_GAIN, longer_gains, near_chance
from probe.analysis.stats import Estimate, detection_limit, spread
from probe.analysis.training import loss_dataset
from probe.errors import ProbeError
from probe.storage.atomic import read_json_file, write_json
from probe.studies.recipe import DOCS, read_source

FOLDER = "control"
RECORDS = "records"
PILOT = "pilot.csv"  # the pilot run by hand before the control was fixed: its figures as reported, no records
PLAIN = "BnB"
# The success rule, fixed before the runs: at DOSE_CUT, over SEEDS seeds (each the mean of its two directions), the
# drop at least SIZE with its interval above zero; the dosed selffer below the plain one by at least SIZE with the
# paired interval below zero; its training loss above its base's (interval above zero) in at least DIRECTIONS of
# its directions; no network of the dose at chance.
DOSE_CUT, SEEDS, SIZE, DIRECTIONS = 5, 5, 0.02, 0.8


def _row(e: Estimate, prefix: str) -> dict:
    return {f"{prefix}mean": e.mean, f"{prefix}low": e.low, f"{prefix}high": e.high, f"{prefix}seeds": e.replicates}


def _est(row: dict, prefix: str) -> Estimate:
    return Estimate(*(float(row[f"{prefix}{k}"]) for k in ("mean", "low", "high")), int(float(row[f"{prefix}seeds"])),
                    math.nan)


def dose_labels(ds: xr.Dataset) -> list[str]:
    """The selffer variants of an arm, the plain one first: ``BnB``, ``BnB×10``, ..."""
    return [str(v) for v in ds["variant"].values if str(v) == PLAIN or str(v).startswith(PLAIN + "×")]


def dose_text(label: str) -> str:
    """``1`` for the plain selffer, else the dose as written (``10``, ``~30``)."""
    return "1" if label == PLAIN else label[len(PLAIN) + 1:]


def arm(run: RunMetrics, name: str, source: str, split: str = SIMILAR_SPLIT) -> tuple[dict, list[dict]]:
    """One arm's description (its verdicts per dose) and its rows of control.csv."""
    if split not in {s.split for s in run.specs}:
        raise ProbeError(f"{source} plans no network on split {split!r}")
    ds = run.dataset("top1").sel(split=[split])
    labels = dose_labels(ds)
    if len(labels) < 2:
        raise ProbeError(f"{source} has no dosed selffer (plan it with --variants BnB --dose F)")
    losses = loss_dataset(run, ds)
    classes = len(next(s for s in run.specs if s.variant == "base").target_classes)
    bar = near_chance(1 / classes)
    base = ds["base"]
    plain = ds["acc"].sel(variant=PLAIN, drop=True)
    base_loss = losses["base_train_loss"]
    rows, failed = [], {}
    for label in labels:
        acc = ds["acc"].sel(variant=label, drop=True)
        drop_values = base - acc
        drop = summarize(drop_values)
        versus = summarize(acc - plain)
        loss_values = losses["train_loss"].sel(variant=label, drop=True) - base_loss
        loss = summarize(loss_values)
        means, base_mean = summarize(acc), summarize(base.expand_dims(n=ds["n"].values))
        for n in map(int, ds["n"].values):
            key = (split, n)
            directions = loss_values.sel(split=split, n=n).values.ravel()
            directions = directions[np.isfinite(directions)]
            cell = acc.sel(split=split, n=n).values.ravel()
            scatter = spread(replicates(drop_values.sel(split=split, n=n)).values)
            rows.append({"arm": name, "dose": dose_text(label), "n": n, **_row(base_mean[key], "base_"),
                         **_row(means[key], "selffer_"), **_row(drop[key], "drop_"), **_row(versus[key], "vs_plain_"),
                         **_row(loss[key], "loss_diff_"), "loss_up": int((directions > 0).sum()),
                         "directions": len(directions), "at_chance": int((cell[np.isfinite(cell)] < bar).sum()),
                         "drop_spread": scatter, "limit_3": detection_limit(scatter, 3),
                         "limit_5": detection_limit(scatter, 5)})
        failed[label] = sorted(s.id for s in run.specs if s.variant_label == label and s.split == split
                               and run.metrics[s.id].get("status") == "failed")
    gain = longer_gains(ds).get(split, Estimate(math.nan, math.nan, math.nan, 0, math.nan))
    seeds = int(replicates(ds["base"].sel(split=split)).notnull().sum())
    finding = not run.study.get("convergence_factor")  # stage 1 runs without the convergence check, stage 2 with it
    info = {"name": name, "run": source, "split": split, "study": run.study, "classes": classes,
            "seeds": seeds, "networks_planned": len(run.specs) + len(run.longer), "missing": run.missing,
            "convergence_gain": gain.to_dict(),
            "converged": "unchecked" if gain.replicates == 0 else "yes" if gain.mean <= LONGER_GAIN else "no",
            "stage": "dose finding" if finding else "cuts and seeds",
            "verdicts": {dose_text(label): verdict([r for r in rows if r["dose"] == dose_text(label)], seeds,
                                                   failed[label], finding)
                         for label in labels if label != PLAIN}}
    return info, rows


def verdict(rows: list[dict], seeds: int, failed: list[str], finding: bool | None = None) -> str:
    """What a dose's rows say. In dose finding (stage 1; by default, an arm of one seed): ``kept``, or ``dropped``
    with why (a network diverged or ended at chance). Else: ``passes`` when every condition of the success rule
    holds at DOSE_CUT over at least SEEDS seeds, else ``fails`` with the first that does not (``pending`` while
    fewer seeds are in)."""
    chance = sum(int(r["at_chance"]) for r in rows)
    if finding if finding is not None else seeds <= 1:
        if failed:
            return f"dropped: diverged ({', '.join(failed)})"
        return f"dropped: {chance} at chance" if chance else "kept"
    at = next((r for r in rows if int(r["n"]) == DOSE_CUT), None)
    if at is None:
        return f"cut {DOSE_CUT} not trained"
    if failed or chance:
        return f"fails: {len(failed)} diverged, {chance} at chance"
    if seeds < SEEDS:
        return f"pending ({seeds} of {SEEDS} seeds)"
    drop, versus, loss = _est(at, "drop_"), _est(at, "vs_plain_"), _est(at, "loss_diff_")
    if not (drop.mean >= SIZE and drop.above(0)):
        return f"fails: drop {drop.text()} is not at least {SIZE} with its interval above zero"
    if not (versus.mean <= -SIZE and versus.below(0)):
        return f"fails: against the plain selffer {versus.text()} is not {SIZE} or more below with its interval " \
               "below zero"
    if not loss.above(0):
        return f"fails: the training loss above the base's {loss.text()} has an interval reaching zero"
    if int(at["loss_up"]) < DIRECTIONS * int(at["directions"]):
        return f"fails: training loss above the base's in {at['loss_up']} of {at['directions']} directions"
    return "passes"


def collect(sources: list[Path], docs: Path = DOCS, add: bool = False, merge_into: bool = False) -> Path:
    """Write control.csv, control.json and the records of the arms ``sources`` (run directories or records files)
    into ``docs/reproduction/control/``; with ``add``, the committed arms are kept beside them (one of the same name
    replaced, in its place). With ``merge_into``, each source's networks join the committed records of the arm of
    its name (seeds trained in a fresh run directory after the first was gone), the other arms kept."""
    add = add or merge_into
    dest = docs / "reproduction" / FOLDER
    kept = read_json_file(dest / "control.json", "collect every arm again without --add")["arms"] \
        if add and (dest / "control.json").exists() else []
    kept_rows = read_table(dest / "control.csv") if kept else []
    fresh = []
    for source in map(Path, sources):
        name, run = read_source(source)
        if merge_into:
            committed = dest / RECORDS / f"{name}{SUFFIX}"
            if not committed.exists():
                raise ProbeError(f"arm {name} has no committed records to merge {source} into ({committed} is "
                                 "missing): collect the arm whole, without --merge")
            run = merge([read_records(committed), run], [f"{RECORDS}/{committed.name}", str(source)])
        if not is_records(source):
            write_records(run, dest / RECORDS / f"{name}{SUFFIX}")
        label = str(source) if not is_records(source) else next(
            (info["run"] for info in kept if info["name"] == name), f"{RECORDS}/{source.name}")
        fresh.append(arm(run, name, label))
    if not fresh:
        raise ProbeError("no arm to collect: name the run directories of the positive control")
    by_name = {info["name"]: (info, rows) for info, rows in fresh}
    arms = [by_name.pop(info["name"]) if info["name"] in by_name else
            (info, [r for r in kept_rows if r["arm"] == info["name"]]) for info in kept]
    arms += list(by_name.values())
    write_table(dest / "control.csv", [r for _, rows in arms for r in rows])
    write_json(dest / "control.json", {"arms": [info for info, _ in arms]})
    return dest


def recollect(docs: Path = DOCS) -> Path:
    """Every committed arm again, from its records."""
    folder = docs / "reproduction" / FOLDER / RECORDS
    files = sorted(folder.glob(f"*{SUFFIX}"))
    if not files:
        raise ProbeError(f"no records to collect in {folder}")
    order = [a["name"] for a in read_json_file(folder.parent / "control.json", "collect the arms again")["arms"]] \
        if (folder.parent / "control.json").exists() else []
    files.sort(key=lambda f: (order.index(f.name.removesuffix(SUFFIX)) if f.name.removesuffix(SUFFIX) in order
                              else len(order), f.name))
    return collect(files, docs, add=True)


class Control:
    """The committed tables of the positive control, as the reproduction report renders them."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.info = read_json_file(folder / "control.json", "collect the arms again")
        self.rows = read_table(folder / "control.csv")

    def value(self, kind: str, *keys: str) -> str:
        """``verdict:ARM:DOSE``, ``drop:ARM:DOSE:N``, ``vs_plain:ARM:DOSE:N``, ``loss:ARM:DOSE:N`` (the dosed
        selffer's training loss minus its base's), ``limit:ARM:N:SEEDS`` (the plain selffer's detection limit)."""
        try:
            if kind == "pilot":
                return self.pilot()
            if kind == "verdict":
                name, dose = keys
                return next(a for a in self.info["arms"] if a["name"] == name)["verdicts"][dose]
            if kind == "gain":  # gain:ARM, the convergence check's
                (name,) = keys
                return estimate(next(a for a in self.info["arms"] if a["name"] == name)["convergence_gain"])
            if kind == "limit":
                name, n, seeds = keys
                row = next(r for r in self.rows if r["arm"] == name and r["dose"] == "1" and r["n"] == n)
                return number(row[f"limit_{seeds}"])
            name, dose, n = keys
            row = next(r for r in self.rows if r["arm"] == name and r["dose"] == dose and r["n"] == n)
            prefix = {"drop": "drop_", "vs_plain": "vs_plain_", "loss": "loss_diff_"}[kind]
            return estimate({k[len(prefix):]: v for k, v in row.items() if k.startswith(prefix)}
                            | {"replicates": row[f"{prefix}seeds"]})
        except (StopIteration, ValueError, KeyError):
            raise ProbeError(f"no control result {':'.join((kind, *keys))!r} in {self.folder} (placeholders: "
                             "verdict:ARM:DOSE, drop:ARM:DOSE:N, vs_plain:ARM:DOSE:N, loss:ARM:DOSE:N, "
                             "limit:ARM:N:SEEDS, gain:ARM)") from None

    def pilot(self) -> str:
        """The pilot run by hand before the control was fixed (``pilot.csv``), as a table: test accuracy / final
        training-set loss per recipe, seed and task, for the base and B5B at each dose it tried."""
        rows = read_table(self.folder / PILOT)
        doses = list(dict.fromkeys(r["network"] for r in rows if r["network"] != "base"))
        table = []
        for key in dict.fromkeys((r["recipe"], r["seed"], r["task"]) for r in rows):
            cells = {r["network"]: f"{number(r['test_acc'])} / {number(r['train_loss'])}" for r in rows
                     if (r["recipe"], r["seed"], r["task"]) == key}
            table.append([f"{key[0]}, seed {key[1]}, task {key[2]}", cells.get("base", ""),
                          *(cells.get(d, "") for d in doses)])
        return markdown([Table(["recipe", "base", *(f"B5B ×{d}" for d in doses)], table)]).strip()

    def section(self) -> str:
        return markdown(self.blocks())

    def blocks(self) -> list[Block]:
        out: list[Block] = []
        for info in self.info["arms"]:
            rows = [r for r in self.rows if r["arm"] == info["name"]]
            missing = f"; {len(info['missing'])} networks unfinished" if info["missing"] else ""
            gain = (f"; the longer bases gain {estimate(info['convergence_gain'])} ({info['converged']})"
                    if info["converged"] != "unchecked" else "")
            out.append(Paragraph(f"`{info['name']}` ({info['seeds']} seed{'s' if info['seeds'] != 1 else ''}, "
                                 f"both directions{missing}{gain}):"))
            table = []
            for r in rows:
                est = {p: estimate({k[len(p):]: v for k, v in r.items() if k.startswith(p)}
                                   | {"replicates": r[f"{p}seeds"]}) for p in ("drop_", "vs_plain_", "loss_diff_")}
                table.append([r["dose"], r["n"], number(r["base_mean"]), number(r["selffer_mean"]), est["drop_"],
                              "-" if r["dose"] == "1" else est["vs_plain_"], est["loss_diff_"],
                              f"{r['loss_up']} of {r['directions']}", r["at_chance"],
                              f"{number(r['limit_3'])} / {number(r['limit_5'])}"
                              if math.isfinite(float(r["limit_3"])) else "-"])
            out.append(Table(["dose", "n", "base", "selffer", "drop (base − selffer)", "dosed − plain",
                              "training loss − base's", "loss above base's", "at chance",
                              "detection limit, 3 / 5 seeds"], table))
            out.append(Paragraph("Verdicts: " + "; ".join(f"×{d}: {v}" for d, v in info["verdicts"].items()) + "."))
        return out

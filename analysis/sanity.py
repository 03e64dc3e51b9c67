"""Sanity checks of a run before anything is read into its decomposition: findings that make its numbers
meaningless or misleading, each one plain sentence with the numbers and what to do.

The decomposition compares cut networks with their base networks, so it only measures transfer when the bases
learned their task (above chance), finished learning it (their validation accuracy stopped rising: cut networks are
trained as long, so an under-trained base makes BnB beat it and the co-adaptation drop negative), and when the
accuracy measures every class (a test set of unequal classes lets top-1 reward the large ones). ``probe train``
prints the findings after its table, ``probe analyze`` at the top of the report.

The checks are pure functions on the accuracy Dataset (:mod:`analysis.accuracies`) and the networks' metrics.json
dicts; :func:`run_findings` runs them all on what :func:`analysis.accuracies.read_run_metrics` read.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import xarray as xr

from probe.analysis.accuracies import METRICS, RunMetrics, one_directional, replicate_label
from probe.analysis.decomposition import replicates
from probe.analysis.render import Block, Heading, Items, Paragraph, Table, number
from probe.analysis.stats import Estimate, detection_limit, estimate, excluded_drop, spread
from probe.specs.variants import BASE

if TYPE_CHECKING:
    from probe.specs.spec import NetworkSpec

# A mean validation gain below this per epoch counts as "stopped improving" (half a point: below what a few hundred
# validation images resolve, well below the gains of a network still learning)
PLATEAU = 0.005
# The convergence check: longer bases (k times the epochs) whose mean gain over the bases, over seeds, exceeds this
# say the bases had not converged. One point: the claims' margin is 0.02 and the paper's co-adaptation dip 0.03, so a
# budget that leaves a point on the table moves the drops by a third or more of what they are read for
LONGER_GAIN = 0.01
# A base is at or near chance below chance + CHANCE_SHARE * (1 - chance): it covered less than a tenth of the way
# from guessing to perfect, a bar with the same meaning for 2 classes (0.55) as for 50 (0.118) or 1000 (0.101)
CHANCE_SHARE = 0.1
# A frozen cut network (BnB; AnB in a two-way run) whose mean gain over its base exceeds this, and two standard errors
# of that mean over seeds: in the paper neither beats its base by more than about 0.01 at any n, so a gain beyond the
# claims' own margin (0.02) that noise does not explain points at an under-trained base
BEAT_MARGIN = 0.03
# A class with fewer than 1/IMBALANCE of the largest class's images: top-1 then mostly measures the large classes
IMBALANCE = 4
# Top-1 and balanced accuracy of the bases further apart than this: the test set's imbalance moves the accuracy by
# more than the claims' margin, so which metric is read changes the answer
METRIC_GAP = 0.05

CHECKED = (f"every base network is above chance (chance + {CHANCE_SHARE} x (1 - chance))",
           f"the bases' mean validation accuracy gained less than {PLATEAU} in their last epoch (a weak test under "
           "an annealed schedule, whose last epochs gain little whatever the budget)",
           f"no frozen cut network beats its base by more than {BEAT_MARGIN}",
           "no network failed",
           f"no class has under 1/{IMBALANCE} of the largest class's training or test images",
           f"the bases' top-1 and balanced accuracy agree within {METRIC_GAP}")


@dataclass(frozen=True)
class Finding:
    check: str  # chance, convergence, not-converged, convergence-check, beats-base, failed, imbalance, metric-gap, ...
    text: str
    split: str | None = None  # the split it concerns (None: the run)


# The findings that make a claim's verdict meaningless on their split: bases at chance or still improving, a cut
# network far above its base. A claim decided there becomes undecided, with the finding as its reason
VOIDING = ("chance", "convergence", "not-converged", "beats-base")
# Each voiding check in a few words, as a voided claim's verdict says it
VOIDING_LABELS = {"chance": "bases at chance", "convergence": "bases still improving",
                  "not-converged": "bases not converged", "beats-base": "a cut network far above its base"}


def table_findings(ds: xr.Dataset, converged: dict[str, dict]) -> list[Finding]:
    """The voiding findings (:data:`VOIDING`) that an accuracy Dataset and the bases' convergence (:func:`convergence`)
    still tell without the networks' files: what a committed table is judged by when it is recomputed."""
    return [*chance_findings(ds), *curve_findings(converged), *longer_findings(ds), *beats_base_findings(ds)]


def voids(found: list[Finding]) -> list[dict]:
    """What :func:`probe.analysis.claims.check_claims` leaves undecided: ``{"split", "reason"}`` per voiding finding."""
    return [{"split": f.split, "reason": f.text, "label": VOIDING_LABELS[f.check]} for f in found
            if f.check in VOIDING]


def _base_name(target: str) -> str:
    return f"{BASE.name}{target}"


def _count(n: int, what: str) -> str:
    return f"{n} {what}{'' if n == 1 else 's'}"


def _listed(items: list[str], at_most: int = 5) -> str:
    more = len(items) - at_most
    return ", ".join(items[:at_most]) + (f" and {more} more" if more > 0 else "")


# --------------------------------------------------------------------------------------------------- the checks


def near_chance(chance: float) -> float:
    """The accuracy below which a network is at or near ``chance``: CHANCE_SHARE of the way to perfect."""
    return chance + CHANCE_SHARE * (1 - chance)


def chance_findings(ds: xr.Dataset) -> list[Finding]:
    """Per split and target task: the base networks at or near chance (``ds``'s metric); none where ``ds`` does not
    know the tasks' classes (one rebuilt from an older committed table)."""
    if "chance" not in ds:
        return []
    out = []
    for split in map(str, ds["split"].values):
        for t in map(str, ds["target"].values):
            chance, k = float(ds["chance"].sel(split=split, target=t)), int(ds["classes"].sel(split=split, target=t))
            if not np.isfinite(chance):
                continue
            bar = near_chance(chance)
            base = ds["base"].sel(split=split, target=t)
            low = [(rep, a) for rep, a in zip(map(str, base["replicate"].values), base.values)
                   if np.isfinite(a) and a < bar]
            if not low:
                continue
            finished = int(np.isfinite(base.values).sum())
            if finished == 1:
                which, values = f"({low[0][0]}) is", f"{low[0][1]:.3f}"
            else:
                which = f"is, in {len(low)} of {_count(finished, 'replicate')},"
                values = _listed([f"{rep} {a:.3f}" for rep, a in low])
            out.append(Finding("chance", (
                f"{_base_name(t)} of split {split} {which} at or near chance ({values}; chance {chance:.3f} with {k} "
                f"classes, near it below {bar:.3f}): nothing below measures transfer there; train longer (--epochs), "
                "change the learning rate or schedule (--lr, --schedule, --warmup), or check the data"), split))
    return out


def convergence(metrics: list[dict], specs: dict[str, dict]) -> dict[str, dict]:
    """Per split: the base networks' mean validation accuracy per epoch, and the first epoch from which on it gains
    less than PLATEAU per epoch (None: it still gained that much in the last epoch)."""
    out = {}
    for split in sorted({s["split"] for s in specs.values()}):
        curves = [[e["val_acc"] for e in m["epochs"]] for m in metrics if m.get("status") == "done"
                  and specs[m["id"]]["split"] == split and specs[m["id"]]["variant"] == "base"]
        if not curves:
            continue
        mean = np.mean(np.array(curves, dtype=float), axis=0)
        gains = np.diff(mean)
        flat = next((i + 1 for i in range(len(gains)) if np.all(gains[i:] < PLATEAU)), None)
        out[split] = {"bases": len(curves), "mean_val_acc": [round(float(v), 4) for v in mean], "plateau": flat}
    return out


def convergence_findings(metrics: list[dict], specs: dict[str, dict]) -> list[Finding]:
    """Per split: base networks still improving in their last epoch, or too few epochs (or no validation images) to
    tell. ``specs``: network id -> spec dict (at least ``split`` and ``variant``)."""
    return curve_findings(convergence(metrics, specs))


def curve_findings(converged: dict[str, dict]) -> list[Finding]:
    """:func:`convergence_findings` from what :func:`convergence` made of the bases' curves (a collected run's
    run.json keeps it)."""
    out = []
    for split, c in converged.items():
        curve = c["mean_val_acc"]
        if not np.all(np.isfinite(curve)):
            out.append(Finding("convergence-unchecked", (
                f"the base networks of split {split} have no validation accuracy (no validation images: "
                "--val-fraction 0), so whether they converged was not checked; train with a validation fraction"),
                split))
        elif len(curve) < 2:
            out.append(Finding("convergence", (
                f"the base networks of split {split} trained one epoch, so whether they converged cannot be told "
                "and cut networks (trained as long) may be compared with under-trained bases; train with more "
                "--epochs"), split))
        elif c["plateau"] is None:
            out.append(Finding("convergence", (
                f"the base networks of split {split} still gained {curve[-1] - curve[-2]:.3f} validation accuracy "
                f"in their last epoch ({curve[-2]:.3f} to {curve[-1]:.3f}, mean of {c['bases']}; converged means "
                f"below {PLATEAU} per epoch): they have not converged, so cut networks (trained as long) are compared "
                "with under-trained bases; train with more --epochs"), split))
    return out


def _live_pairs(ds: xr.Dataset) -> tuple[xr.DataArray, xr.DataArray]:
    """The longer bases' gains over the bases (``base_long - base``) where the longer base learned its task, and the
    pairs left out because it is at or near chance: beside a base that never trained either it gains nothing, or
    beside one that did it loses everything, and either would pass the check without measuring convergence. A base
    at chance beside a longer base that learned is kept: that gain is the check's plainest "not converged"."""
    gain = ds["base_long"] - ds["base"]
    if "chance" not in ds:  # a Dataset rebuilt from an older committed table does not know the tasks' classes
        return gain, xr.zeros_like(gain, dtype=bool)
    dead = ds["base_long"] < near_chance(ds["chance"])
    return gain.where(~dead), dead


def _longer_check(ds: xr.Dataset) -> dict[str, tuple[Estimate, int]]:
    """Per split: the convergence check's gain (as :func:`longer_gains`) and how many pairs of a base and its longer
    base it left out, the longer base at or near chance ({} when the run has no longer bases)."""
    if "base_long" not in ds:
        return {}
    gain, dead = _live_pairs(ds)
    per_seed = replicates(gain)
    return {split: (estimate(per_seed.sel(split=split).values), int(dead.sel(split=split).sum()))
            for split in map(str, ds["split"].values)}


def longer_gains(ds: xr.Dataset) -> dict[str, Estimate]:
    """Per split: the convergence check's gain, the longer bases' accuracy over the bases' (``base_long - base``),
    per seed the mean of its directions, with its interval over seeds ({} when the run has no longer bases). Pairs
    whose longer base is at or near chance are left out (:func:`_live_pairs`); a seed with none left is no replicate."""
    return {split: gain for split, (gain, _) in _longer_check(ds).items()}


def _left_out(count: int) -> str:
    return f", {_count(count, 'pair')} with the longer base at chance left out" if count else ""


def _factor(ds: xr.Dataset) -> str:
    """How many times as long the longer bases trained, from the run's study."""
    return str(json.loads(ds.attrs.get("study", "{}")).get("convergence_factor", "k"))


def longer_findings(ds: xr.Dataset) -> list[Finding]:
    """Per split: "not converged" when the longer bases gain more than LONGER_GAIN over the bases (mean over seeds);
    or that the check is unfinished, or could not measure anything because every longer base is at chance."""
    out = []
    for split, (gain, dead) in _longer_check(ds).items():
        k = _factor(ds)
        finished = int(ds["base_long"].sel(split=split).notnull().sum())
        if gain.replicates == 0 and dead and dead == finished:
            out.append(Finding("convergence-check", (
                f"every finished longer base of split {split} is at or near chance ({_count(dead, 'network')}), "
                "so whether the bases converged is unchecked: a network that never trained measures no gain from "
                "training longer; change the learning rate or schedule (--lr, --schedule, --warmup)"), split))
        elif gain.replicates == 0:
            out.append(Finding("convergence-check", (
                f"the convergence check's longer bases of split {split} (or their bases) are not finished"
                f"{_left_out(dead)}, so whether the bases converged is unchecked; rerun 'probe train RUN' to "
                "finish them"), split))
        elif gain.mean > LONGER_GAIN:
            out.append(Finding("not-converged", (
                f"not converged: on split {split} bases trained {k} times as long gain {gain.text()} test accuracy "
                f"over the bases (more than {LONGER_GAIN}{_left_out(dead)}), so the cut networks (trained as "
                "long as the bases) are compared with under-trained bases and the drops are biased; train a new run "
                "with more --epochs"), split))
    return out


def convergence_note(ds: xr.Dataset) -> str:
    """What was checked of the bases' convergence, said whether or not it found anything: the longer bases' gain
    per split when the check ran, or that only the weak last-epoch test did."""
    checked = _longer_check(ds)
    if not checked:
        return ("Convergence: only the bases' last-epoch validation gain was checked, a weak test that an annealed "
                "schedule (cosine, steps) passes whatever the budget; the longer-base check was not run "
                "('probe train --check-convergence' trains, per seed and task, a base twice as long and compares).")
    parts = [f"split {split}: {gain.text() if gain.replicates else 'unchecked, no pair finished and trained'}"
             f"{_left_out(dead)}" for split, (gain, dead) in checked.items()]
    return (f"Convergence, checked: bases trained {_factor(ds)} times as long gain, over the bases, {'; '.join(parts)} "
            f"(not converged above {LONGER_GAIN}).")


def sensitivity(ds: xr.Dataset) -> dict[tuple[str, int], dict]:
    """Per split and cut with a planned selffer: what a null of its co-adaptation drop (baseB - BnB) could have seen.
    ``drop``: the drop over seeds (each the mean of its directions); ``spread``: its seed-to-seed standard deviation;
    ``limit``: the smallest drop its seeds would detect with 80% power at that spread (and ``limit_5`` with 5 seeds);
    ``excluded``: the smallest drop it excludes once the bases' bias is bounded by the convergence check (the drop's
    upper limit plus the longer bases' gain's, :func:`probe.analysis.stats.excluded_drop`; NaN without the check)."""
    if "BnB" not in ds["variant"].values:
        return {}
    gains = {split: gain for split, (gain, _) in _longer_check(ds).items()}
    out = {}
    for split in map(str, ds["split"].values):
        per = replicates((ds["base"] - ds["acc"].sel(variant="BnB")).sel(split=split))
        gain = gains.get(split, Estimate(np.nan, np.nan, np.nan, 0, np.nan))
        for n in map(int, ds["n"].values):
            values = per.sel(n=n).values
            drop = estimate(values)
            if drop.replicates == 0:
                continue
            scatter = spread(values)
            out[(split, n)] = {"drop": drop, "spread": scatter, "limit": detection_limit(scatter, drop.replicates),
                               "limit_5": detection_limit(scatter, 5), "excluded": excluded_drop(drop, gain)}
    return out


def sensitivity_note(ds: xr.Dataset) -> str | None:
    """What the co-adaptation drops could have detected and what they exclude, one clause per split and cut (None
    where no selffer finished): a null says nothing without its detection limit."""
    found = sensitivity(ds)
    if not found:
        return None
    parts = []
    for (split, n), s in found.items():
        seeds = s["drop"].replicates
        if seeds < 2:
            parts.append(f"{split} n={n}: one seed, no interval, so no detection limit")
            continue
        bound = (f"excludes a drop of {number(s['excluded'])} or more" if np.isfinite(s["excluded"])
                 else "excludes nothing (the longer-base check bounds the bases' bias; it did not run or measure)")
        parts.append(f"{split} n={n}: drop {s['drop'].text()}, detectable from {number(s['limit'])} at "
                     f"{seeds} seeds ({number(s['limit_5'])} at 5), {bound}")
    return ("Sensitivity of the co-adaptation drop (baseB - BnB; the smallest drop these seeds detect with 80% power "
            "at their own seed-to-seed spread, and the smallest a null excludes: the drop's upper limit plus the "
            "longer bases' gain's): " + "; ".join(parts) + ".")


def init_note(ds: xr.Dataset) -> str:
    """Which initial weights the run's networks drew: their own, or the replicate's shared ones."""
    sharing = json.loads(ds.attrs.get("study", "{}")).get("recipe", {}).get("init_sharing")
    if sharing == "shared":
        return ("Initial weights: shared (a control, and what runs planned before probe 0.4 did): every network of a "
                "seed started from one initialization, so BnB's new layers restarted from its base's initial ones "
                "and baseA from baseB's start; the paper drew every network afresh.")
    if sharing == "independent":
        return ("Initial weights: independent, as the paper's: every network drew its own initial weights, data order "
                "and augmentation from a seed of its own.")
    return "Initial weights: not recorded."


def beats_base_findings(ds: xr.Dataset) -> list[Finding]:
    """Per split and frozen cut variant: the cuts n where it beats its base by more than BEAT_MARGIN and two
    standard errors, in pairs of the same seed and direction. Only the variants whose layers come from a base of
    the run: a source network trained elsewhere (SnB) may well beat a base trained from scratch."""
    variants = ["BnB"] if one_directional(ds) else ["BnB", "AnB"]
    out = []
    for split in map(str, ds["split"].values):
        d = ds.sel(split=split)
        for v in variants:
            flagged = []
            for n in d["n"].values:
                acc = d["acc"].sel(n=n, variant=v)
                paired = acc.notnull() & d["base"].notnull()
                # per seed, the mean of its finished directions (xarray's mean skips NaN; an empty seed stays NaN)
                cut, base = (x.where(paired).mean("target").values for x in (acc, d["base"]))
                gains = (cut - base)[np.isfinite(cut - base)]
                if not len(gains):
                    continue
                gain = float(gains.mean())
                noise = 2 * gains.std(ddof=1) / np.sqrt(len(gains)) if len(gains) > 1 else 0.0
                if gain > BEAT_MARGIN and gain > noise:
                    flagged.append((int(n), float(np.nanmean(cut)), float(np.nanmean(base)), gain, len(gains)))
            if flagged:
                n, a, b, gain, count = max(flagged, key=lambda f: f[3])
                where = f"n = {', '.join(str(f[0]) for f in flagged)}"
                out.append(Finding("beats-base", (
                    f"{v} beats its base network on split {split} at {where} by more than {BEAT_MARGIN}; most at "
                    f"n = {n}: {a:.3f} against the base's {b:.3f} ({gain:+.3f}, {_count(count, 'seed')}): an "
                    "under-trained base, so the decomposition's drops are not meaningful until the bases converge; "
                    "train with more --epochs"), split))
    return out


def failure_findings(metrics: list[dict]) -> list[Finding]:
    """The networks marked failed: how many, which, and how many of them diverged."""
    failed = [m for m in metrics if m.get("status") == "failed"]
    if not failed:
        return []
    diverged = [m["id"] for m in failed if "diverged" in str(m.get("error", ""))]
    other = [m["id"] for m in failed if m["id"] not in diverged]
    parts = [f"{len(ids)} {what} ({_listed(ids, 3)})" for what, ids in (("diverged", diverged), ("other", other))
             if ids]
    advice = []
    if diverged:
        advice.append("a diverged network diverges again on retraining: train a new run directory with a smaller "
                      "--lr, a --warmup or another --init")
    if other:
        advice.append("'probe status RUN' shows why the others failed; rerun 'probe train RUN' to retry them")
    return [Finding("failed", f"{_count(len(failed), 'network')} failed, {' and '.join(parts)}; the networks that "
                              f"copy from a failed base are missing too: {'; '.join(advice)}")]


def imbalance_findings(metrics: list[dict], specs: dict[str, NetworkSpec],
                       labels: dict[str, str] | None = None) -> list[Finding]:
    """Tasks whose smallest class has under 1/IMBALANCE of the images of its largest, in the training or the test
    split (per-class counts of metrics.json; older files have none). ``specs``: network id -> NetworkSpec, to name
    the task."""
    out = []
    for what, counts_of in (("training", _train_counts), ("test", _test_counts)):
        tasks: dict[tuple[str, ...], tuple[dict[str, int], str]] = {}
        for m in metrics:
            counts = counts_of(m) if m.get("status") == "done" else None
            if counts and m["id"] in specs:
                spec = specs[m["id"]]
                split = (labels or {}).get(spec.split, spec.split)
                tasks.setdefault(tuple(counts), (counts, f"task {spec.target} of split {split}, "
                                                         f"{replicate_label(spec)}"))
        skewed = [(min(c.values()) / max(c.values()), c, label) for c, label in tasks.values()
                  if max(c.values()) and min(c.values()) * IMBALANCE < max(c.values())]
        if skewed:
            _, counts, label = min(skewed, key=lambda s: s[0])
            small, large = min(counts, key=counts.get), max(counts, key=counts.get)
            out.append(Finding("imbalance", (
                f"class '{small}' has {counts[small]} {what} images, the largest '{large}' {counts[large]} ({label}; "
                f"{len(skewed)} of {len(tasks)} tasks have a class under 1/{IMBALANCE} of their largest): top-1 "
                "favours the large classes; see the balanced accuracy (--metric balanced), or cap with "
                "--train-per-class/--test-per-class")))
    return out


def _train_counts(m: dict) -> dict[str, int] | None:
    counts = m.get("train_class_counts")
    return counts if isinstance(counts, dict) else None


def _test_counts(m: dict) -> dict[str, int] | None:
    per_class = m.get("test_per_class")
    return dict(zip(per_class["classes"], per_class["count"])) if isinstance(per_class, dict) else None


def metric_gap_findings(top1: xr.Dataset, balanced: xr.Dataset) -> list[Finding]:
    """Per split and target task: bases whose mean top-1 and balanced accuracy differ by more than METRIC_GAP."""
    out = []
    for split in map(str, top1["split"].values):
        for t in map(str, top1["target"].values):
            a = top1["base"].sel(split=split, target=t).values
            b = balanced["base"].sel(split=split, target=t).values
            both = np.isfinite(a) & np.isfinite(b)
            if both.any() and abs(a[both].mean() - b[both].mean()) > METRIC_GAP:
                out.append(Finding("metric-gap", (
                    f"{_base_name(t)} of split {split} has top-1 accuracy {a[both].mean():.3f} but class-balanced "
                    f"accuracy {b[both].mean():.3f} (mean of {_count(int(both.sum()), 'replicate')}): its test set's "
                    "classes are unequal and top-1 weighs the large ones more; compare with --metric balanced, or cap "
                    "the test set with --test-per-class"), split))
    return out


def old_metrics_findings(metrics: list[dict]) -> list[Finding]:
    """Finished networks whose metrics.json predates the balanced accuracy and the per-class counts."""
    old = [m["id"] for m in metrics if m.get("status") == "done" and METRICS["balanced"].field not in m]
    if not old:
        return []
    return [Finding("old-metrics", (
        f"{_count(len(old), 'finished network')} ({_listed(old, 3)}) {'has' if len(old) == 1 else 'have'} a "
        "metrics.json from before probe recorded "
        "balanced and per-class accuracy: their balanced accuracy is NaN (--metric balanced leaves them out) and the "
        "class checks skip them; delete their folders and rerun 'probe train' to measure them"))]


# ------------------------------------------------------------------------------------------------- all of them


def findings(top1: xr.Dataset, balanced: xr.Dataset, metrics: dict[str, dict], specs: dict[str, NetworkSpec],
             metric: str = "top1", labels: dict[str, str] | None = None) -> list[Finding]:
    """Every check: on the accuracy Datasets in both metrics (chance and under-trained bases judged in the
    decomposition's ``metric``), the networks' ``metrics`` (id -> metrics.json, empty where none) and their
    ``specs`` (id -> NetworkSpec); ``labels``: the names the Datasets show in place of splits."""
    ds = balanced if metric == "balanced" else top1
    recorded = [{"id": i, **m} for i, m in metrics.items() if m]  # done or failed
    kinds = {i: {"split": (labels or {}).get(s.split, s.split), "variant": s.variant} for i, s in specs.items()}
    return [*chance_findings(ds), *convergence_findings(recorded, kinds), *longer_findings(ds),
            *beats_base_findings(ds),
            *failure_findings(recorded), *imbalance_findings(recorded, specs, labels),
            *metric_gap_findings(top1, balanced), *old_metrics_findings(recorded)]


def run_findings(run: RunMetrics, metric: str = "top1") -> list[Finding]:
    """:func:`findings` of a run's metrics, as read once by :func:`analysis.accuracies.read_run_metrics`."""
    return findings(run.labelled("top1"), run.labelled("balanced"), run.metrics,
                    {s.id: s for s in (*run.specs, *run.longer)}, metric, run.split_labels)


def no_warnings_text() -> str:
    return "No warnings: " + "; ".join(CHECKED) + "."


def warning_lines(found: list[Finding], ds: xr.Dataset | None = None) -> list[str]:
    """What ``probe train`` prints after its table: one line per finding, or the one line of what was checked; with
    the run's accuracy Dataset ``ds``, what was checked of convergence and which initial weights were drawn."""
    lines = [f"warning: {f.text}" for f in found] or [no_warnings_text()]
    if ds is None:
        return lines
    return lines + [convergence_note(ds), *filter(None, [sensitivity_note(ds)]), init_note(ds)]


def report_blocks(found: list[Finding], top1: xr.Dataset, balanced: xr.Dataset, metric: str) -> list[Block]:
    """The report's first section: the warnings (or what was checked), which accuracy the report reads, and the
    base networks' top-1 and balanced accuracy beside their chance level."""
    b: list[Block] = ([Heading(2, "Warnings"), Items([f"{f.text}." for f in found])] if found
                      else [Paragraph(no_warnings_text())])
    b += [Paragraph(convergence_note(top1)), *(Paragraph(t) for t in filter(None, [sensitivity_note(top1)])),
          Paragraph(init_note(top1))]
    other = "balanced" if metric == "top1" else "top1"
    paper = ", the paper's measure" if metric == "top1" else ""
    b.append(Paragraph(f"Accuracy in this report: **{METRICS[metric].name}** ({METRICS[metric].meaning}{paper}); "
                       f"`probe analyze --metric {other}` reads the {METRICS[other].name} accuracy instead. The base "
                       "networks, mean over seeds:"))
    rows = []
    for split in map(str, top1["split"].values):
        for t in map(str, top1["target"].values):
            a, c = top1["base"].sel(split=split, target=t).values, balanced["base"].sel(split=split, target=t).values
            finished = np.isfinite(a)
            if not finished.any():
                continue
            chance = float(top1["chance"].sel(split=split, target=t))
            rows.append([split, _base_name(t), int(top1["classes"].sel(split=split, target=t)), number(chance),
                         number(a[finished].mean()),
                         number(c[np.isfinite(c)].mean()) if np.isfinite(c).any() else "-", int(finished.sum())])
    if rows:
        b.append(Table(["split", "network", "classes", "chance", "top-1", "balanced", "seeds"], rows))
    else:
        b.append(Paragraph("No base network is finished."))
    return b

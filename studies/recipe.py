"""The recipe experiment: where the paper's co-adaptation dip comes from.

Each arm is a run directory of a selffer-only study (``--variants BnB``: the bases and, at each cut, the selffers BnB
and AnA) with the convergence check (``--check-convergence``), on one split and several seeds; the arms differ in the
recipe (the ladder's cosine schedule with warm-up, or the paper's steps with dropout), the training length and the
initial weights (independent, or the shared control). ``collect`` writes ``docs/reproduction/recipe/``:

- ``recipe.csv``: one row per arm and cut n: the co-adaptation drop (baseB - BnB) and BnB's and the base's accuracy,
  each with its interval over seeds (each seed the mean of its two directions); BnB's final training loss minus its
  base's, paired per seed, with its interval; both final training losses and both eval-mode losses on the training
  set after training; and what crosses the cut at the end (the scale of layer n's output, the dead units of layer
  n+1, BnB's beside the base's);
- ``curves.csv``: per arm, network (base, or BnB at n) and epoch, the mean training loss over seeds and directions,
  with the epoch as a fraction of training, the scale on which they are drawn beside the paper's;
- ``recipe.json``: per arm, its study, the command that trains it, its networks, the convergence check's gain of
  the longer bases over the bases, and the verdicts: whether it shows the dip (:func:`dip`) and the paper's
  signature (:func:`signature`);
- ``figures/curves_ARM.png``: the training loss per cut, base and BnB, beside the paper's at the same cut, both as a
  fraction of the chance loss ln(classes) against the fraction of training (a network at chance is left out of the
  curves: it never trained);
- ``records/ARM.json.gz``: the arm's records (:mod:`probe.analysis.records`), from which the arm is collected again
  once its run directory is gone, and to which seeds trained later are merged.

An arm whose bases fail the convergence check is shown, marked, and its verdict is "not converged": a drop measured
against a base still improving is not co-adaptation. Likewise an arm under a warning that voids its split's claims
(bases at chance or still improving by the last-epoch test, a cut network far above its base) is "voided", the
warnings quoted; every network at chance is named, cut networks included. An arm whose check measured nothing (no
pair of a base and a longer base finished with the longer base above chance) is "convergence unchecked".

    python -m probe.studies.reproduction recipe runs/recipe/M-20 runs/recipe/P-long ...
    python -m probe.studies.reproduction recipe --add runs/recipe/M-long    # one more arm beside the committed
    python -m probe.studies.reproduction recipe --merge runs/recipe/M-long  # its seeds join the committed arm's
    python -m probe.studies.reproduction recipe --recollect                 # every arm again, from its records
"""

from __future__ import annotations

import math
import shutil
from pathlib import Path

import numpy as np
import xarray as xr
from matplotlib.figure import Figure

from probe.analysis.accuracies import RunMetrics, read_run_metrics
from probe.analysis.decomposition import SIMILAR_SPLIT, decompose, replicates, summarize, variant_means
from probe.analysis.records import SUFFIX, is_records, merge, read_records, records_name, write_records
from probe.analysis.reference import PAPER_ITERATIONS, reference_curves
from probe.analysis.render import Block, Image, Paragraph, Table, estimate, markdown, number, read_table, write_table
from probe.analysis.sanity import LONGER_GAIN, VOIDING, longer_gains, near_chance, run_findings
from probe.analysis.stats import Estimate, detection_limit, excluded_drop, spread_of_interval
from probe.analysis.training import LAYER, boundary_curve_dataset, boundary_dataset, curve_dataset, loss_dataset
from probe.errors import ProbeError
from probe.storage.atomic import read_json_file, write_atomic, write_json

DOCS = Path(__file__).resolve().parents[1] / "docs"
FOLDER = "recipe"
RECORDS = "records"  # under FOLDER: each arm's records (analysis/records.py), NAME.json.gz
# The paper's deepest dip and its flanks: a dip is the drop at DIP_CUT above zero (its whole interval) with BnB there
# below BnB at both flanks
DIP_CUT, FLANKS = 5, (3, 7)
# The paper's classes a task: its chance loss, ln(500), is the scale its training losses are drawn on
PAPER_CLASSES = 500


def _row(e: Estimate, prefix: str) -> dict:
    return {f"{prefix}mean": e.mean, f"{prefix}low": e.low, f"{prefix}high": e.high, f"{prefix}seeds": e.replicates}


def _seed_mean(values: xr.DataArray) -> float:
    per = replicates(values).values.ravel()
    per = per[np.isfinite(per)]
    return float(per.mean()) if len(per) else math.nan


def read_source(source: Path) -> tuple[str, RunMetrics]:
    """An arm's name and networks from ``source``: a run directory (named by its folder) or a records file
    (``NAME.json.gz``, named by its file)."""
    source = Path(source)
    if is_records(source):
        return records_name(source), read_records(source)
    return source.name, read_run_metrics(source)


def arm(run: RunMetrics, name: str, source: str, split: str = SIMILAR_SPLIT) -> tuple[dict, list[dict], list[dict]]:
    """One arm's description, its rows of recipe.csv (one per cut n) and of curves.csv, from its networks ``run``
    (read from ``source``, which the description names)."""
    if split not in {s.split for s in run.specs}:
        raise ProbeError(f"{source} plans no network on split {split!r}")
    ds = run.dataset("top1").sel(split=[split])
    drops = summarize(decompose(ds)["coadaptation"])
    means = variant_means(ds)
    losses = loss_dataset(run, ds)
    diff = summarize(losses["train_loss"].sel(variant="BnB", drop=True) - losses["base_train_loss"])
    records = boundary_dataset(run, ds)
    layers = [str(v) for v in records["boundary_layer"].values]
    rows = []
    for n in map(int, ds["n"].values):
        bnb = {k: losses[k].sel(split=split, n=n, variant="BnB") for k in ("train_loss", "train_eval_loss")}
        at = {"n": n, "variant": "BnB"}
        after = layers[n] if n < len(layers) else None  # layer n+1, when it is a cut point (it has records)
        rows.append({"arm": name, "n": n, "layer": layers[n - 1] if n <= len(layers) else "",
                     **_row(drops[(split, n)], "drop_"), **_row(means[(split, "BnB", n)], "bnb_"),
                     **_row(means[(split, "base", 0)], "base_"), **_row(diff[(split, n)], "loss_diff_"),
                     "bnb_train_loss": _seed_mean(bnb["train_loss"]),
                     "base_train_loss": _seed_mean(losses["base_train_loss"].sel(split=split)),
                     "bnb_train_eval_loss": _seed_mean(bnb["train_eval_loss"]),
                     "base_train_eval_loss": _seed_mean(losses["base_train_eval_loss"].sel(split=split)),
                     "bnb_scale": _seed_mean(records["scale"].sel(split=split, boundary_layer=layers[n - 1], **at)),
                     "base_scale": _seed_mean(records["base_scale"].sel(split=split, boundary_layer=layers[n - 1])),
                     "bnb_dead_next": _seed_mean(records["dead"].sel(split=split, boundary_layer=after, **at))
                     if after else math.nan,
                     "base_dead_next": _seed_mean(records["base_dead"].sel(split=split, boundary_layer=after))
                     if after else math.nan})
    val = [m["epochs"][-1].get("val_loss") for s in run.specs if s.variant == "base" and s.split == split
           and (m := run.metrics[s.id]).get("status") == "done" and m.get("epochs")]
    val = [float(v) for v in val if isinstance(v, (int, float))]
    for r in rows:  # the bases' last validation loss, beside their training loss: do they fit better than generalize?
        r["base_val_loss"] = float(np.mean(val)) if val else math.nan
    classes = len(next(s for s in run.specs if s.variant == "base").target_classes)
    # a network at chance never trained: its flat curve at ln(classes), averaged with a live direction's, would draw
    # a curve that no network followed (it is named in the arm's paragraph instead)
    bar = near_chance(1 / classes)
    trained = {"base": ds["base"].sel(split=split) >= bar, "acc": ds["acc"].sel(split=split) >= bar}
    curves = curve_dataset(run, ds).sel(split=split)
    epochs = run.study["recipe"]["epochs"]
    curve_rows = []
    for network, values in [("base", curves["base_train_loss"].where(trained["base"])),
                            *((f"B{int(n)}B", curves["train_loss"].sel(n=n, variant="BnB")
                               .where(trained["acc"].sel(n=n, variant="BnB"))) for n in ds["n"].values)]:
        per = replicates(values)  # (rep, epoch): per seed, the mean of its directions
        for e in per["epoch"].values:
            v = per.sel(epoch=e).values
            v = v[np.isfinite(v)]
            if len(v):
                curve_rows.append({"arm": name, "network": network, "epoch": int(e), "fraction": int(e) / epochs,
                                   "train_loss": float(v.mean())})
    gain = longer_gains(ds).get(split, Estimate(math.nan, math.nan, math.nan, 0, math.nan))
    label = run.split_labels.get(split, split)
    voided = [f.text for f in run_findings(run) if f.check in VOIDING and f.split == label]
    info = {"name": name, "run": source, "split": split, "study": run.study, "epochs": epochs,
            "classes": classes, "init_sharing": run.study["recipe"]["init_sharing"],
            "networks_planned": len(run.specs) + len(run.longer), "missing": run.missing,
            "convergence_gain": gain.to_dict(), "converged": _converged(gain),
            "voided": voided, "at_chance": at_chance(run, split, classes)}
    info["dip"], info["signature"] = dip(rows, info["converged"], voided), signature(rows, info["converged"], voided)
    return info, rows, curve_rows


def at_chance(run, split: str, classes: int) -> list[str]:
    """The finished networks of ``split`` (cut networks and longer bases too) whose test accuracy is at or near
    chance, by the bar the report's chance warning uses for bases: a network that never trained measures neither
    transfer nor co-adaptation, and a drop against it or from it is the recipe's failure to train."""
    bar = near_chance(1 / classes)
    return sorted(s.id for s in (*run.specs, *run.longer) if s.split == split
                  and (m := run.metrics.get(s.id) or {}).get("status") == "done"
                  and isinstance(m.get("test_acc"), (int, float)) and m["test_acc"] < bar)


def _converged(gain: Estimate) -> str:
    """``yes`` when the longer bases gain no more than LONGER_GAIN (mean over seeds), ``no`` above it, ``unchecked``
    without the check's networks."""
    if gain.replicates == 0:
        return "unchecked"
    return "yes" if gain.mean <= LONGER_GAIN else "no"


def _at(rows: list[dict], n: int) -> dict | None:
    return next((r for r in rows if int(r["n"]) == n), None)


def _unreadable(converged: str, voided: list[str]) -> str | None:
    """Why neither verdict of an arm can be read, whatever its rows: its bases still gain when trained longer
    (``not converged``, said first), a warning voids its split (``voided``), or no pair of a base and a longer base
    finished and trained, so convergence is unknown (``convergence unchecked``)."""
    if converged == "no":
        return "not converged"
    if voided:
        return "voided"
    return "convergence unchecked" if converged == "unchecked" else None


def dip(rows: list[dict], converged: str, voided: list[str] = ()) -> str:
    """Whether an arm shows the paper's dip: the drop at DIP_CUT above zero (its whole interval), with BnB's mean
    accuracy there below BnB's at both FLANKS. ``yes``, ``no``, or why it cannot say (bases not converged, a warning
    that voids the split's claims (``voided``: bases at chance or still improving, a cut network far above its
    base), the cuts not trained, one seed)."""
    if unreadable := _unreadable(converged, voided):
        return unreadable
    middle, flanks = _at(rows, DIP_CUT), [_at(rows, n) for n in FLANKS]
    if middle is None or None in flanks or not np.isfinite(float(middle["drop_mean"])):
        return "cuts missing"
    if not np.isfinite(float(middle["drop_low"])):
        return "one seed"
    below = all(float(middle["bnb_mean"]) < float(f["bnb_mean"]) for f in flanks)
    return "yes" if float(middle["drop_low"]) > 0 and below else "no"


def signature(rows: list[dict], converged: str, voided: list[str] = ()) -> str:
    """Whether BnB at DIP_CUT carries the paper's signature, a final training loss above its base's: ``yes`` (the
    paired difference's whole interval above zero), ``no`` (its whole interval at or below zero), ``undecided``;
    ``not converged`` or ``voided`` as for :func:`dip`."""
    if unreadable := _unreadable(converged, voided):
        return unreadable
    middle = _at(rows, DIP_CUT)
    if middle is None or not np.isfinite(float(middle["loss_diff_low"])):
        return "undecided"
    if float(middle["loss_diff_low"]) > 0:
        return "yes"
    return "no" if float(middle["loss_diff_high"]) <= 0 else "undecided"


def collect(sources: list[Path], docs: Path = DOCS, add: bool = False, merge_into: bool = False) -> Path:
    """Write recipe.csv, curves.csv, recipe.json, the figures and the records of the arms ``sources`` (run
    directories, or records files: :func:`read_source`) into ``docs/reproduction/recipe/``; with ``add``, the
    committed arms are kept beside them (an arm of the same name is replaced). With ``merge_into``, each source's
    networks join the committed records of the arm of its name (seeds trained after that arm's run directory was
    gone: :func:`probe.analysis.records.merge`), and the other committed arms are kept as with ``add``."""
    dest = docs / "reproduction" / FOLDER
    kept_records = dest / RECORDS
    try:
        kept = read_json_file(dest / "recipe.json", "collect every arm again without --add")["arms"] \
            if (dest / "recipe.json").exists() else []
    except ProbeError:
        if add or merge_into:
            raise
        kept = []  # all is collected anew: a damaged file of the arms before is replaced
    # where each committed arm came from: an arm collected again from its own records keeps it
    origin = {info["name"]: info["run"] for info in kept}
    read = []
    for source in map(Path, sources):
        name, run = read_source(source)
        if is_records(source) and source.resolve().parent == kept_records.resolve():
            label = origin.get(name, f"{RECORDS}/{source.name}")
        else:
            label = str(source)
        if twin := next((other for n, _, other in read if n == name), None):
            raise ProbeError(f"{twin} and {label} both name arm {name}: collect one source an arm (seeds of another "
                             "run directory join a committed arm with --merge)")
        read.append((name, run, label))
    if not read:
        raise ProbeError("no arm to collect: name the run directories of the recipe experiment")
    if merge_into:
        merged = []
        for name, run, source in read:
            committed = kept_records / f"{name}{SUFFIX}"
            if not committed.exists():
                raise ProbeError(f"arm {name} has no committed records to merge {source} into ({committed} is "
                                 "missing): collect the arm whole, without --merge")
            earlier = origin.get(name, f"{RECORDS}/{committed.name}")
            merged.append((name, merge([read_records(committed), run], [earlier, source]), f"{earlier} + {source}"))
        read = merged
    arms = [arm(run, name, source) for name, run, source in read]
    if (add or merge_into) and kept:
        rows, curves = read_table(dest / "recipe.csv"), read_table(dest / "curves.csv")
        # an arm collected again keeps its place in the tables; a new one goes last
        fresh = {info["name"]: (info, r, c) for info, r, c in arms}
        arms = [fresh.pop(info["name"]) if info["name"] in fresh else
                (info, [r for r in rows if r["arm"] == info["name"]], [r for r in curves if r["arm"] == info["name"]])
                for info in kept] + list(fresh.values())
    shutil.rmtree(dest / "figures", ignore_errors=True)
    (dest / "figures").mkdir(parents=True)
    for name, run, _ in read:
        write_records(run, kept_records / f"{name}{SUFFIX}")
    present = {info["name"] for info, _, _ in arms}
    for stale in kept_records.glob(f"*{SUFFIX}"):  # an arm no longer collected takes its records with it
        if records_name(stale) not in present:
            stale.unlink()
    write_table(dest / "recipe.csv", [r for _, rows, _ in arms for r in rows])
    write_table(dest / "curves.csv", [r for _, _, curves in arms for r in curves])
    write_json(dest / "recipe.json", {"arms": [info for info, _, _ in arms], "longer_gain": LONGER_GAIN,
                                      "dip_cut": DIP_CUT, "flanks": list(FLANKS)})
    derive(dest)
    return dest


def committed_records(docs: Path = DOCS) -> list[Path]:
    """The records files of the committed arms: what collects them again without their run directories."""
    return sorted((docs / "reproduction" / FOLDER / RECORDS).glob(f"*{SUFFIX}"))


def derive(folder: Path) -> None:
    """The figures from the committed tables alone."""
    infos = read_json_file(folder / "recipe.json", "collect the arms again")["arms"]
    curves = read_table(folder / "curves.csv")
    for info in infos:
        rows = [r for r in curves if r["arm"] == info["name"]]
        if rows:  # none where every network of the arm is at chance: nothing trained to draw
            curve_figure(info, rows, folder / "figures" / f"curves_{info['name']}.png")


def paper_curve(label: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    """The paper's mean training loss of its bases (``base``) or its frozen selffers cut at ``n`` (``BnB``), against
    the fraction of its training, as a fraction of its chance loss ln(PAPER_CLASSES)."""
    kind = "base" if label == "base" else "selffer_frozen"
    points: dict[int, list[float]] = {}
    for r in reference_curves():
        if r["kind"] == kind and r["n"] == (0 if label == "base" else n):
            points.setdefault(r["iteration"], []).append(r["train_loss"])
    its = sorted(points)
    return (np.array(its) / PAPER_ITERATIONS,
            np.array([np.mean(points[i]) for i in its]) / math.log(PAPER_CLASSES))


def curve_figure(info: dict, rows: list[dict], path: Path) -> None:
    """One panel per cut: the arm's base (dotted) and BnB training loss against the fraction of training, beside the
    paper's (grey), both as a fraction of their chance loss ln(classes)."""
    cuts = sorted({int(r["network"][1:-1]) for r in rows if r["network"] != "base"})
    fig = Figure(figsize=(3.4 * max(1, len(cuts)), 3.4), layout="constrained")
    axes = fig.subplots(1, max(1, len(cuts)), sharey=True, squeeze=False)[0]
    chance = math.log(info["classes"])

    def ours(network: str) -> tuple[np.ndarray, np.ndarray]:
        rs = [r for r in rows if r["network"] == network]
        return (np.array([float(r["fraction"]) for r in rs]), np.array([float(r["train_loss"]) for r in rs]) / chance)

    for ax, n in zip(axes, cuts):
        ax.plot(*paper_curve("base", n), color="grey", ls=":", lw=1.5, label="paper's base")
        ax.plot(*paper_curve("BnB", n), color="grey", lw=1.5, label="paper's BnB")
        ax.plot(*ours("base"), color="black", ls=":", lw=1.5, label="base")
        ax.plot(*ours(f"B{n}B"), color="tab:blue", lw=1.5, label="BnB")
        ax.set_title(f"n = {n}", fontsize=9)
        ax.set_xlabel("fraction of training")
    axes[0].set_ylabel("training loss / ln(classes)")
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=4, fontsize=8)
    fig.suptitle(f"{info['name']}: training loss beside the paper's (ImageNet, {PAPER_CLASSES} classes a task)",
                 fontsize=10)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120, bbox_inches="tight"))


class Recipe:
    """The committed tables of the recipe experiment, as the reproduction report renders them."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.info = read_json_file(folder / "recipe.json", "collect the arms again")
        self.rows = read_table(folder / "recipe.csv")

    def value(self, kind: str, *keys: str) -> str:
        """``drop:ARM:N``, ``loss:ARM:N`` (BnB's final training loss minus its base's), ``base:ARM:WHICH`` (the bases'
        mean ``train_loss``, ``train_eval_loss`` or ``val_loss``), ``gain:ARM`` (the convergence check's),
        ``dip:ARM``, ``signature:ARM``, ``chance:ARM`` (its networks at chance, of those finished)."""
        try:
            if kind in ("drop", "loss"):
                name, n = keys
                row = next(r for r in self.rows if r["arm"] == name and r["n"] == n)
                prefix = "drop_" if kind == "drop" else "loss_diff_"
                return estimate({k[len(prefix):]: v for k, v in row.items() if k.startswith(prefix)}
                                | {"replicates": row[f"{prefix}seeds"]})
            if kind == "base":  # base:ARM:train_loss|train_eval_loss|val_loss, the bases' mean
                name, which = keys
                return number(next(r for r in self.rows if r["arm"] == name)[f"base_{which}"], 2)
            if kind in ("limit", "excludes"):  # limit:ARM:N (at its seeds), excludes:ARM:N
                name, n = keys
                info = next(a for a in self.info["arms"] if a["name"] == name)
                limit, _, excluded = self.sensitivity(info, next(r for r in self.rows
                                                                 if r["arm"] == name and r["n"] == n))
                return number(limit if kind == "limit" else excluded)
            if kind == "network":  # network:ARM:ID:FIELD, one network's metrics.json field, from the arm's records
                name, nid, field = keys
                return number(read_records(self.folder / RECORDS / f"{name}{SUFFIX}").metrics[nid][field])
            if kind == "growth":  # growth:ARM:N, the live bases' layer n output RMS trained over initial
                name, n = keys
                return number(self.growth(name, int(n)), 2)
            (name,) = keys
            info = next(a for a in self.info["arms"] if a["name"] == name)
            if kind == "gain":
                return estimate(info["convergence_gain"])
            if kind in ("dip", "signature"):
                return info[kind]
            if kind == "chance":
                return f"{len(info.get('at_chance', []))} of {info['networks_planned'] - len(info['missing'])}"
        except (StopIteration, ValueError, KeyError):
            pass
        raise ProbeError(f"no recipe result {':'.join((kind, *keys))!r} in {self.folder} (placeholders: drop:ARM:N, "
                         "loss:ARM:N, base:ARM:WHICH, gain:ARM, dip:ARM, signature:ARM, chance:ARM, growth:ARM:N, "
                         "limit:ARM:N, excludes:ARM:N, network:ARM:ID:FIELD)")

    def growth(self, name: str, n: int) -> float:
        """How far training moved the scale of what crosses cut n: the RMS of layer n's output at the end over its
        RMS before the first step, mean over the arm's bases that trained (above chance), from its records. Below 1,
        a selffer's fresh layer n+1 meets inputs smaller than a fresh base's layer n+1 did at its start."""
        run = read_records(self.folder / RECORDS / f"{name}{SUFFIX}")
        ds = run.dataset("top1")
        layer = run.layers[n - 1]
        scale = boundary_curve_dataset(run, ds)["base_scale"].sel({LAYER: layer})
        ratio = (scale.isel(epoch=-1) / scale.isel(epoch=0)).where(ds["base"] >= near_chance(ds["chance"]))
        values = ratio.values[np.isfinite(ratio.values)]
        return float(values.mean()) if len(values) else math.nan

    def section(self) -> str:
        return markdown(self.blocks())

    def sensitivity(self, info: dict, row: dict) -> tuple[float, float, float]:
        """What an arm's null at a cut could have seen: the drop its seeds detect (80% power, at the spread of its
        per-seed drops, read from the committed interval), the same at 5 seeds, and the smallest drop it excludes
        once the longer bases bound the bases' bias (:func:`probe.analysis.stats.excluded_drop`)."""
        k = int(float(row["drop_seeds"]))
        scatter = spread_of_interval(float(row["drop_low"]), float(row["drop_high"]), k)
        drop = Estimate(float(row["drop_mean"]), float(row["drop_low"]), float(row["drop_high"]), k, math.nan)
        gain = Estimate(**info["convergence_gain"])
        return detection_limit(scatter, k), detection_limit(scatter, 5), excluded_drop(drop, gain)

    def _sensitivity_blocks(self, arms: list[dict]) -> list[Block]:
        table = []
        for info in arms:
            for r in (r for r in self.rows if r["arm"] == info["name"]):
                limit, limit_5, excluded = self.sensitivity(info, r)
                table.append([f"`{info['name']}`", r["n"], self.value("drop", info["name"], r["n"]),
                              *(number(x) if math.isfinite(x) else "-" for x in (limit, limit_5, excluded))])
        return [Paragraph("What each null could have seen. The detection limit is the smallest drop the arm's seeds "
                          "would detect (interval above zero) four times in five, at the seed-to-seed spread of its "
                          "own paired drops; 'excludes' is the smallest drop the null rules out once the bases' own "
                          "bias is bounded: the drop's upper limit plus the upper limit of the longer bases' gain. "
                          "An arm whose bases are 'not converged' still bounds the drop this way: the label says the "
                          "bases gain, the bound says by how much at most."),
                Table(["arm", "n", "drop", "detection limit, its seeds", "detection limit, 5 seeds",
                       "excludes a drop of"], table)]

    def blocks(self) -> list[Block]:
        arms = self.info["arms"]
        cuts = sorted({int(r["n"]) for r in self.rows})
        table = []
        for info in arms:
            rs = {int(r["n"]): r for r in self.rows if r["arm"] == info["name"]}
            first = next(iter(rs.values()))
            missing = f" ({len(info['missing'])} networks unfinished)" if info["missing"] else ""
            table.append([f"`{info['name']}`{missing}", info["init_sharing"], info["epochs"],
                          estimate({k[5:]: v for k, v in first.items() if k.startswith("base_")}
                                   | {"replicates": first["base_seeds"]}),
                          f"{estimate(info['convergence_gain'])} ({info['converged']})",
                          *[self.value("drop", info["name"], str(n)) for n in cuts], info["dip"],
                          info["signature"]])
        losses = []
        for info in arms:
            for r in (r for r in self.rows if r["arm"] == info["name"]):
                losses.append([f"`{info['name']}`", r["n"], number(r["base_train_loss"]), number(r["bnb_train_loss"]),
                               self.value("loss", info["name"], r["n"]), number(r["base_train_eval_loss"]),
                               number(r["bnb_train_eval_loss"]), number(r["base_scale"]), number(r["bnb_scale"]),
                               number(r["base_dead_next"]), number(r["bnb_dead_next"])])
        return [Table(["arm", "initial weights", "epochs", "base (mean of baseA and baseB)",
                       "longer bases' gain (converged)",
                       *[f"drop n={n}" for n in cuts], "dip", "signature"], table),
                *[Paragraph(f"`{info['name']}`: " + " ".join(
                    ([f"networks at chance: {', '.join(info['at_chance'])}."] if info.get("at_chance") else [])
                    + [f"Warning: {w}." for w in info.get("voided", [])]))
                  for info in arms if info.get("at_chance") or info.get("voided")],
                *self._sensitivity_blocks(arms),
                Paragraph("Per arm and cut: the final training loss of the base and of BnB and their paired "
                          "difference over seeds; the eval-mode loss on the training set after training; the scale "
                          "of layer n's output and the dead units of layer n+1 at the end, the base's beside BnB's "
                          "(means over seeds):"),
                Table(["arm", "n", "base loss", "BnB loss", "BnB - base", "base eval loss", "BnB eval loss",
                       "base scale", "BnB scale", "base dead n+1", "BnB dead n+1"], losses),
                *[Image(f"reproduction/{FOLDER}/figures/curves_{info['name']}.png", f"training loss, {info['name']}")
                  for info in arms if (self.folder / "figures" / f"curves_{info['name']}.png").exists()]]

"""The committed reproduction report: small result tables copied out of analysed runs, and ``docs/reproduction.md``
rendered from them, so that every number the report shows comes from a table (``tests/test_reproduction.py``
renders it again and compares).

    python -m probe.studies.reproduction collect runs/repro-fashion-mnist fashion-mnist --title Fashion-MNIST \
        --command "probe train runs/repro-fashion-mnist ..."
    python -m probe.studies.reproduction recompute   # after a change to the statistics: no network retrains
    python -m probe.studies.reproduction render

``collect`` runs the analysis of a run (``probe analyze``) and copies its tables and figures, never checkpoints or
activation stores, into ``docs/reproduction/NAME/`` with ``run.json``. ``recompute`` writes a collected dataset's
decomposition tables, claims and figures 2 and 3 again from its committed ``accuracies.csv`` (one row per network),
so that a change to how the statistics are computed reaches the report without retraining anything. ``run.json``
holds the study, the commands, network counts, training and wall time and the base networks' validation curves.
``render`` fills the template
``docs/reproduction.in.md``: ``{{section:NAME}}`` becomes a dataset's generated section, and ``{{value:NAME:TABLE:
KEY...}}`` one number of a table (``relative:SPLIT:VARIANT:N``, ``decomposition:SPLIT:QUANTITY:N``,
``direction:SPLIT:DIRECTION:QUANTITY:N`` (DIRECTION ``A->B`` or ``B->A``), ``claim:NUMBER``, ``epochs:SPLIT``,
``representations:SPLIT:K:COLUMN``, ``correlation:SPLIT:SCORE``, ``done:FIELD`` of run.json), so the discussion
quotes tables rather than typing numbers.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import click
import numpy as np
import pandas as pd
import xarray as xr

from probe.analysis.accuracies import METRICS as ACCURACY_METRICS
from probe.analysis.claims import MARGIN
from probe.analysis.reference import CITATION, reference_curve_mean
from probe.analysis.render import (
    Block,
    Code,
    Heading,
    Image,
    Items,
    Paragraph,
    Table,
    estimate,
    markdown,
    number,
    read_table,
)
from probe.analysis.report import VIEW_TITLES, analyze_run, measured_alike, write_decomposition
from probe.analysis.sanity import PLATEAU, convergence, table_findings, voids
from probe.analysis.transferability import DESCRIPTIONS
from probe.architectures.registry import get_architecture
from probe.errors import ProbeError
from probe.planning.plan import read_plan_file
from probe.specs.variants import BASE, CUT_VARIANTS, ONE_DIRECTION, STITCH_VARIANTS, TASKS, cut_variants
from probe.storage.atomic import read_json, write_atomic, write_json
from probe.storage.checkpoint import read_metrics
from probe.storage.run import METRICS, Run
from probe.studies.classes import FOLDER as CLASSES_FOLDER
from probe.studies.classes import Classes
from probe.studies.classes import collect as collect_classes
from probe.studies.classes import collect_pilot as collect_classes_pilot
from probe.studies.control import Control
from probe.studies.control import collect as collect_control
from probe.studies.control import recollect as recollect_control
from probe.studies.initialization import Initialization
from probe.studies.initialization import collect as collect_initialization
from probe.studies.ladder import FOLDER as LADDER_FOLDER
from probe.studies.ladder import Ladder
from probe.studies.ladder import collect as collect_ladder
from probe.studies.ladder import derive as derive_ladder
from probe.studies.recipe import Recipe
from probe.studies.recipe import collect as collect_recipe
from probe.studies.recipe import committed_records as committed_recipe_records

DOCS = Path(__file__).resolve().parents[1] / "docs"
TABLES = ("decomposition.csv", "directions.csv", "relative.csv", "accuracies.csv", "claims.json",
          "representations.csv", "correlations.csv")
# What recompute writes again from accuracies.csv (report.write_decomposition's files)
DECOMPOSITION_TABLES = ("decomposition.csv", "directions.csv", "relative.csv", "claims.json")
# The relative-accuracy tables' columns: the frozen selffer beside the frozen transfer, then their fine-tuned forms,
# then the random baseline, so that the pairs the decomposition compares sit side by side
TABLE_VARIANTS = tuple(sorted(CUT_VARIANTS, key=lambda v: (v.family == "random", v.fine_tune)))


def _metrics(run_dir: Path) -> list[dict]:
    return [read_metrics(p) for p in sorted(Run(run_dir).networks.rglob(METRICS))]


def busy_seconds(spans: list[tuple[float, float]]) -> float:
    """The wall time covered by at least one of the ``(start, end)`` spans: a sweep's running time, without the
    pauses between the sessions it was resumed in."""
    total, reach = 0.0, -np.inf
    for start, end in sorted(tuple(span) for span in spans):
        if end > reach and end > start:
            total += end - max(start, reach)
            reach = end
    return total


def collect(run_dir: Path, name: str, title: str, commands: list[str], docs: Path = DOCS,
            store: Path | None = None) -> Path:
    """Analyse ``run_dir`` and copy its result tables and figures into ``docs/reproduction/<name>/``."""
    run_dir = Path(run_dir)
    result = analyze_run(run_dir, store)
    dest = docs / "reproduction" / name
    if dest.exists():
        shutil.rmtree(dest)
    (dest / "figures").mkdir(parents=True)
    for table in TABLES:
        if (result["out"] / table).exists():
            shutil.copy2(result["out"] / table, dest / table)
    for figure in result["figures"]:
        shutil.copy2(figure, dest / "figures" / figure.name)
    plan = read_plan_file(Run(run_dir).plan)[0]
    specs = {n["id"]: n["spec"] for n in plan["networks"]}
    metrics = [m for m in _metrics(run_dir) if m["id"] in specs]
    done = [m for m in metrics if m.get("status") == "done"]
    # every session that trained a network (a resumed one has several; older runs record only the last)
    spans = [span for m in done for span in m.get("sessions") or
             ([(m["started_at"], m["finished_at"])] if "started_at" in m else [])]
    write_json(dest / "run.json", {
        "name": name, "title": title, "commands": commands, "study": plan["study"],
        "networks_planned": len(specs), "networks_done": len(done),
        "devices": sorted({m["device"] for m in done}),
        "train_hours": round(sum(m.get("seconds", 0.0) for m in done) / 3600, 2),
        "networks_without_timing": sum("seconds" not in m for m in done),
        "figures": [f.name for f in result["figures"]],
        "convergence": convergence(done, specs),
        # each task's classes, which accuracies.csv does not hold: a recomputed analysis judges chance by them
        "classes": {str(split): {str(t): int(result["dataset"]["classes"].sel(split=split, target=t))
                                 for t in result["dataset"]["target"].values}
                    for split in result["dataset"]["split"].values},
        "wall_hours": round(busy_seconds(spans) / 3600, 2) if spans else None,
        # networks resumed before sessions were recorded: their earlier sessions are missing from the wall time
        "wall_hours_is_lower_bound": any(m.get("resumed_at_epoch") and "sessions" not in m for m in done)})
    return dest


def dataset_from_table(rows: list[dict], study: dict, column: str = "test_acc",
                       classes: dict[str, dict[str, int]] | None = None) -> xr.Dataset:
    """The accuracy Dataset (:mod:`analysis.accuracies`) of a run from its accuracies.csv rows (split, replicate,
    target, variant, n, and the accuracy ``column``: test_acc, or test_balanced_acc) and the study its run.json
    records: the committed tables hold no checkpoint to read the accuracies from again. ``classes`` (split -> target
    -> classes, as run.json records them since probe 0.4) adds each task's class count and chance level."""
    one_way = bool(study.get("source"))
    splits = list(dict.fromkeys(r["split"] for r in rows))
    replicates = list(dict.fromkeys(r["replicate"] for r in rows))
    variants = [v.name for v in cut_variants(one_way)]
    variants += [v.name for v in STITCH_VARIANTS if any(r["variant"] == v.name for r in rows)]
    table = pd.DataFrame(rows).astype({"n": int, column: float})
    cuts = sorted(set(table["n"]) - {0})
    base = table[table["variant"] == BASE.name].set_index(["split", "replicate", "target"])[column]
    acc = table[table["variant"] != BASE.name].set_index(["split", "replicate", "target", "n", "variant"])[column]
    coords = {"split": splits, "replicate": replicates, "target": list(ONE_DIRECTION if one_way else TASKS),
              "n": cuts, "variant": variants}
    ds = xr.Dataset({"base": base.to_xarray().reindex({k: coords[k] for k in ("split", "replicate", "target")}),
                     "acc": acc.to_xarray().reindex(coords)})
    layers = get_architecture(study["arch"]["name"]).layers
    ds = ds.assign_coords(layer=("n", [layers[n - 1] for n in cuts]))
    ds["planned"] = ds["acc"].notnull()
    if classes:
        k = np.array([[classes.get(str(split), {}).get(str(t), 0) for t in ds["target"].values]
                      for split in ds["split"].values], dtype=np.int64)
        ds["classes"] = (("split", "target"), k)
        with np.errstate(divide="ignore"):
            ds["chance"] = (("split", "target"), np.where(k > 0, 1.0 / k, np.nan))
    ds.attrs["study"] = json.dumps(study, sort_keys=True)
    return ds


def recompute(folder: Path) -> None:
    """Write a collected dataset's decomposition tables, claims and figures 2 and 3 again from its accuracies.csv."""
    results = read_json(folder / "run.json")
    table = read_table(folder / "accuracies.csv")
    ds = dataset_from_table(table, results["study"], classes=results.get("classes"))
    # the warnings that void claims, as far as the tables tell them, and the class-balanced accuracy to check top-1
    # verdicts against, where the table has it for every network (as analyze judges a run)
    voided = voids(table_findings(ds, results.get("convergence") or {}))
    balanced = ACCURACY_METRICS["balanced"].field
    other = None
    if table and all(row.get(balanced) not in (None, "") for row in table):
        other = dataset_from_table(table, results["study"], column=balanced, classes=results.get("classes"))
        other = other if measured_alike(ds, other) else None
    pngs = write_decomposition(ds, folder, voided=voided, other=other)[-1]
    for png in pngs:  # the committed report shows the PNGs, as collect copies them
        png.with_suffix(".svg").unlink(missing_ok=True)
    figures = [png.name for png in pngs]
    kept = [f for f in results["figures"] if f not in figures]  # the CKA figures, drawn from a store
    write_json(folder / "run.json", {**results, "figures": [*figures, *kept]})


# ------------------------------------------------------------------------------------------------ rendering


class Results:
    """One dataset's committed tables, as ``render`` reads them."""

    def __init__(self, folder: Path):
        self.folder = folder
        self.run = read_json(folder / "run.json")
        self.relative = read_table(folder / "relative.csv")
        self.decomposition = read_table(folder / "decomposition.csv")
        self.directions = read_table(folder / "directions.csv")
        self.representations = read_table(folder / "representations.csv")
        self.correlations = read_table(folder / "correlations.csv")
        self.claims = read_json(folder / "claims.json")

    @property
    def splits(self) -> list[str]:
        return list(dict.fromkeys(r["split"] for r in self.relative))

    def cuts(self) -> list[int]:
        return sorted({int(r["n"]) for r in self.relative if int(r["n"]) > 0})

    def find(self, table: list[dict], **keys) -> dict | None:
        return next((r for r in table if all(str(r[k]) == str(v) for k, v in keys.items())), None)

    def row(self, table: list[dict], **keys) -> dict:
        """The row with these keys; a LookupError where the table has none."""
        row = self.find(table, **keys)
        if row is None:
            raise LookupError(f"no row with {keys}")
        return row

    def value(self, kind: str, *keys: str) -> str:
        """One quoted result: ``kind`` and ``keys`` as in the module's docstring."""
        # Refused: a missing row, claim, column or field (LookupError), a cell a short CSV row lacks (TypeError), a
        # cell that is not a number, or too many or too few keys for the kind (ValueError)
        try:
            return self._value(kind, *keys)
        except (LookupError, TypeError, ValueError):
            raise ProbeError(f"no result {':'.join((self.run['name'], kind, *keys))!r} in the tables of "
                             f"{self.folder} (placeholders: relative:SPLIT:VARIANT:N, "
                             "decomposition:SPLIT:QUANTITY:N, direction:SPLIT:DIRECTION:QUANTITY:N, "
                             "claim:NUMBER, epochs:SPLIT, "
                             "representations:SPLIT:K:COLUMN, correlation:SPLIT:SCORE, done:FIELD)") from None

    def _value(self, kind: str, *keys: str) -> str:
        if kind == "relative":
            split, variant, n = keys
            return estimate(self.row(self.relative, split=split, variant=variant, n=n))
        if kind == "decomposition":
            split, quantity, n = keys
            return estimate(self.row(self.decomposition, split=split, quantity=quantity, n=n))
        if kind == "direction":
            split, direction, quantity, n = keys
            return estimate(self.row(self.directions, split=split, direction=direction, quantity=quantity, n=n))
        if kind == "claim":
            (claim,) = keys
            return self.row(self.claims["claims"], number=claim)["verdict"]
        if kind == "representations":
            split, k, column = keys
            return number(self.row(self.representations, split=split, k=k)[column])
        if kind == "correlation":
            split, score = keys
            row = self.row(self.correlations, split=split, score=score)
            return f"{number(row['rho'])} (p = {number(row['p'])}, {row['pairs']} pairs)"
        if kind == "done":
            (field,) = keys
            return str(self.run[field])
        if kind == "epochs":
            (split,) = keys
            c = self.run["convergence"][split]
            return f"{c['plateau'] or 'none'} of {len(c['mean_val_acc'])}"
        raise KeyError(kind)

    def section(self) -> str:
        """The dataset's section of the report, in Markdown."""
        return markdown([Heading(2, self.run["title"]), *self._setup_blocks(), *self._relative_blocks(),
                         *self._decomposition_blocks(), *self._claim_blocks(), *self._representation_blocks(),
                         *self._figure_blocks()])

    def _setup_blocks(self) -> list[Block]:
        """How the networks were trained, the commands that regenerate them and how far the bases converged."""
        r, study = self.run, self.run["study"]
        recipe, data, arch = study["recipe"], study["data"], study["arch"]
        setup = (f"`{arch['name']}` (options {json.dumps(arch['options'])}, init {arch['init']}); "
                 f"{data['train_per_class'] or 'all'} training images per class ({data['val_fraction']:.0%} of them "
                 f"held out for validation), the whole test set; {recipe['epochs']} epochs of SGD (batch "
                 f"{recipe['batch_size']}, lr {recipe['lr']}, {recipe['schedule']} schedule, warm-up "
                 f"{recipe['warmup']}, momentum {recipe['momentum']}, weight decay {recipe['weight_decay']}), random "
                 f"crops (padding {recipe['crop_padding']}) and mirroring. Splits: {', '.join(study['splits'])}; "
                 f"seeds {', '.join(str(s) for s in study['seeds'])}, each in both directions. Networks finished: "
                 f"{r['networks_done']} of {r['networks_planned']} planned, on {', '.join(r['devices'])}: "
                 f"{r['train_hours']} hours of training summed over networks, "
                 f"{'at least ' if r.get('wall_hours_is_lower_bound') else ''}"
                 f"{r.get('wall_hours') or 'unknown'} hours of wall time while the sweep ran.")
        return [Paragraph(setup), Paragraph("Commands:"), Code(r["commands"]),
                Items([_convergence(split, c) for split, c in r["convergence"].items()])]

    def _relative_blocks(self) -> list[Block]:
        b: list[Block] = [Heading(3, "Accuracy relative to the base network (Figure 3's scale)"),
                          Paragraph(f"Mean over {self.over()}, 95% t interval, (the count behind it).")]
        for split in self.splits:
            b.append(Paragraph(f"**{split} split**"))
            b.append(Table(["n", *(v.name for v in TABLE_VARIANTS)],
                           [[n, *[estimate(self.find(self.relative, split=split, variant=v.name, n=n))
                                  for v in TABLE_VARIANTS]] for n in self.cuts()]))
        return b

    def _decomposition_blocks(self) -> list[Block]:
        b: list[Block] = [Heading(3, "Decomposition"),
                          Paragraph("Co-adaptation drop = base - BnB, specialization drop = BnB - AnB, lingering "
                                    "boost = AnB+ - base (absolute test accuracy).")]
        quantities = ("coadaptation", "specialization", "lingering")
        for split in self.splits:
            b.append(Paragraph(f"**{split} split**"))
            b.append(Table(["n", "co-adaptation", "specialization", "lingering"],
                           [[n, *[estimate(self.find(self.decomposition, split=split, quantity=q, n=n))
                                  for q in quantities]] for n in self.cuts()]))
        if self.directions:
            b.append(Paragraph("Each direction on its own (A->B: target task B, AnB's layers from baseA; B->A: the "
                               "mirror image), over seeds."))
            directions = list(dict.fromkeys(r["direction"] for r in self.directions))
            for split in self.splits:
                b.append(Paragraph(f"**{split} split, per direction**"))
                b.append(Table(["n", *[f"{q} {d}" for q in quantities for d in directions]],
                               [[n, *[estimate(self.find(self.directions, split=split, direction=d, quantity=q, n=n))
                                      for q in quantities for d in directions]] for n in self.cuts()]))
        return b

    def over(self) -> str:
        """What the committed intervals are over, as the decomposition table says."""
        over = {r.get("over") for r in self.decomposition}
        if over == {"seeds"}:
            return "seeds, each seed the mean of its two directions"
        return "seeds and both directions pooled as replicates (optimistic)"

    def _claim_blocks(self) -> list[Block]:
        return [Heading(3, f"The paper's claims, checked on the {self.claims['split']} split"),
                Table(["#", "claim", "verdict", "evidence"],
                      [[c["number"], c["claim"], f"**{c['verdict']}**", "; ".join(c["evidence"])]
                       for c in self.claims["claims"]])]

    def _representation_blocks(self) -> list[Block]:
        if not self.representations:
            return []
        b: list[Block] = [Heading(3, "Representations"),
                          Paragraph("Debiased linear CKA at layer k of the networks cut at n = k, the AnB accuracy "
                                    "there, and the other task's base network scored layer by layer on the target "
                                    "task.")]
        for split in self.splits:
            rows = [r for r in self.representations if r["split"] == split]
            if not rows:
                continue
            views = [v for v in VIEW_TITLES if v in rows[0]]  # tables collected before a view existed lack it
            b.append(Paragraph(f"**{split} split**"))
            b.append(Table(["k", "layer", *(VIEW_TITLES[v] for v in views), *DESCRIPTIONS],
                           [[r["k"], r["layer"], *[number(r[v]) for v in views],
                             *[number(r[k]) for k in DESCRIPTIONS]] for r in rows]))
            corr = [c for c in self.correlations if c["split"] == split]
            if corr:
                b.append(Paragraph("Spearman correlation with AnB accuracy: " + "; ".join(
                    f"{c['score']} rho = {number(c['rho'])} (p = {number(c['p'])}, {c['pairs']} pairs)"
                    for c in corr) + "."))
        return b

    def _figure_blocks(self) -> list[Block]:
        name = self.run["name"]
        return [Heading(3, "Figures"), *[Image(f"reproduction/{name}/figures/{figure}", figure)
                                         for figure in self.run["figures"] if figure.endswith(".png")]]


def _convergence(split: str, c: dict) -> str:
    """One split's convergence line: the bases' mean validation accuracy per epoch, and whether it flattened."""
    curve = c["mean_val_acc"]
    if c["plateau"]:
        verdict = f"it gained less than {PLATEAU} per epoch from epoch {c['plateau']} on"
    elif len(curve) > 1:
        verdict = f"it was still gaining {number(curve[-1] - curve[-2])} in the last epoch: not converged"
    else:
        verdict = "one epoch shows no convergence"
    return (f"Convergence, {split} split: the base networks' mean validation accuracy per epoch was "
            f"{', '.join(number(v) for v in curve)} ({c['bases']} networks); {verdict}.")


class Paper:
    """The paper's own numbers the chapter quotes, read from the shipped reference tables (:mod:`analysis.reference`):
    ``loss:VARIANT:N:ITERATION`` and ``val_loss:VARIANT:N:ITERATION``, the mean training or validation loss of its
    networks of VARIANT (base, BnB, ...) cut at N (0: the bases) at that iteration."""

    COLUMNS = {"loss": "train_loss", "val_loss": "val_loss"}

    def value(self, kind: str, *keys: str) -> str:
        try:
            label, n, iteration = keys
            mean, count = reference_curve_mean(label, int(n), int(iteration), self.COLUMNS[kind])
            if count:
                return f"{mean:.2f}"
        except (KeyError, ValueError):
            pass
        raise ProbeError(f"no paper result {':'.join((kind, *keys))!r} (placeholders: loss:VARIANT:N:ITERATION, "
                         "val_loss:VARIANT:N:ITERATION, at an iteration its curves hold)")


def render(docs: Path = DOCS) -> str:
    """``docs/reproduction.in.md`` with its placeholders filled from ``docs/reproduction/*/``."""
    template = (docs / "reproduction.in.md").read_text()
    folders = sorted((docs / "reproduction").iterdir())
    results: dict[str, Results | Ladder | Initialization | Recipe | Control | Classes | Paper] = {
        p.name: Results(p) for p in folders if (p / "run.json").exists()}
    results |= {p.name: Ladder(p) for p in folders if (p / "ladder.json").exists()}
    results |= {p.name: Initialization(p) for p in folders if (p / "initialization.json").exists()}
    results |= {p.name: Recipe(p) for p in folders if (p / "recipe.json").exists()}
    results |= {p.name: Control(p) for p in folders if (p / "control.json").exists()}
    # the classes ladder's folder holds its pilots before any rung (another study's pilot.csv is its own)
    results |= {p.name: Classes(p) for p in folders if (p / "classes.json").exists() or p.name == CLASSES_FOLDER}
    results["paper"] = Paper()

    def fill(match: re.Match) -> str:
        kind = match.group(1)
        name, *keys = match.group(2).split(":")
        if name not in results:
            raise ProbeError(f"the template names results {name!r}, but docs/reproduction holds "
                             f"{', '.join(results) or 'none'}")
        if kind == "section":
            return results[name].section()
        return results[name].value(*keys)

    text = re.sub(r"\{\{(section|value):([^}]*)\}\}", fill, template)
    for name, value in {"margin": str(MARGIN), "plateau": str(PLATEAU), "citation": CITATION}.items():
        text = text.replace(f"{{{{{name}}}}}", value)
    return text


@click.group()
def main() -> None:
    """Collect analysed runs into docs/reproduction/ and render docs/reproduction.md from them."""


@main.command("collect")
@click.argument("run_dir", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("name")
@click.option("--title", default=None, help="Section title. Default: NAME.")
@click.option("--command", "commands", multiple=True, help="A command that regenerates the run (repeatable).")
@click.option("--store", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Activation store for the representation views. Default: RUN_DIR/activations.zarr if present.")
def collect_command(run_dir: Path, name: str, title: str | None, commands: tuple[str, ...],
                    store: Path | None) -> None:
    """Analyse RUN_DIR and copy its tables and figures into docs/reproduction/NAME/."""
    try:
        dest = collect(run_dir, name, title or name, list(commands), store=store)
    except ProbeError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"wrote {dest}")


@main.command("recompute")
@click.argument("names", nargs=-1)
def recompute_command(names: tuple[str, ...]) -> None:
    """Write the decomposition tables, claims and figures 2 and 3 of docs/reproduction/NAME (default: every
    collected dataset) again from its committed accuracies.csv; no network is retrained."""
    folders = [DOCS / "reproduction" / n for n in names] or sorted(
        p for p in (DOCS / "reproduction").iterdir() if (p / "run.json").exists())
    for folder in folders:
        if not (folder / "accuracies.csv").exists():
            raise click.ClickException(f"{folder} holds no accuracies.csv to recompute from")
        recompute(folder)
        click.echo(f"recomputed {folder}")


@main.command("ladder")
@click.argument("run_dirs", nargs=-1, type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.option("--recompute", is_flag=True, help="Write the trend and figures again from the committed tables "
              "(ladder_seeds.csv, ladder.csv); no run directory is read.")
@click.option("--add", is_flag=True, help="Keep the committed rungs beside RUN_DIRS (a committed rung of the same "
              "name is replaced), for a rung trained after the others' run directories are gone.")
def ladder_command(run_dirs: tuple[Path, ...], recompute: bool, add: bool) -> None:
    """Collect the co-adaptation ladder's rungs RUN_DIRS (selffer-only runs) into docs/reproduction/ladder/."""
    if recompute:
        if run_dirs or add:
            raise click.UsageError("--recompute reads the committed tables alone: name no run directory, no --add")
        folder = DOCS / "reproduction" / LADDER_FOLDER
        if not (folder / "ladder_seeds.csv").exists():
            raise click.ClickException(f"{folder} holds no ladder_seeds.csv to recompute from: collect the rungs")
        derive_ladder(folder)
        click.echo(f"recomputed {folder}")
        return
    _collected(lambda dirs: collect_ladder(dirs, add=add), run_dirs)


@main.command("initialization")
@click.argument("run_dirs", nargs=-1, type=click.Path(exists=True, file_okay=False, path_type=Path))
def initialization_command(run_dirs: tuple[Path, ...]) -> None:
    """Collect the initialization study's runs RUN_DIRS (bases and RnB under one initialization each) into
    docs/reproduction/initialization/."""
    _collected(collect_initialization, run_dirs)


@main.command("recipe")
@click.argument("sources", nargs=-1, type=click.Path(exists=True, path_type=Path))
@click.option("--add", is_flag=True, default=False,
              help="Keep the committed arms beside SOURCES (an arm of the same name is replaced).")
@click.option("--merge", "merge_into", is_flag=True, default=False,
              help="Each source's networks join the committed records of the arm of its name (seeds trained in "
                   "another run directory of the same study); the other committed arms are kept.")
@click.option("--recollect", is_flag=True, default=False,
              help="Collect every committed arm again from its committed records (docs/reproduction/recipe/"
                   "records/); no run directory is read.")
def recipe_command(sources: tuple[Path, ...], add: bool, merge_into: bool, recollect: bool) -> None:
    """Collect the recipe experiment's arms SOURCES into docs/reproduction/recipe/: run directories of selffer-only
    runs with the convergence check (an arm is named by its directory), or records files ARM.json.gz."""
    if recollect:
        if sources or merge_into:
            raise click.UsageError("--recollect reads the committed records alone: name no source, no --merge")
        sources = tuple(committed_recipe_records())
        if not sources:
            raise click.ClickException("no committed recipe arm has records to collect again from: collect the "
                                       "arms from their run directories")
    _collected(lambda dirs: collect_recipe(dirs, add=add or recollect, merge_into=merge_into), sources)


@main.command("control")
@click.argument("sources", nargs=-1, type=click.Path(exists=True, path_type=Path))
@click.option("--add", is_flag=True, default=False,
              help="Keep the committed arms beside SOURCES (an arm of the same name is replaced, in its place).")
@click.option("--merge", "merge_into", is_flag=True, default=False,
              help="Each source's networks join the committed records of the arm of its name (seeds trained in a "
                   "fresh run directory of the same study); the other committed arms are kept.")
@click.option("--recollect", is_flag=True, default=False,
              help="Collect every committed arm again from its committed records (docs/reproduction/control/"
                   "records/); no run directory is read.")
def control_command(sources: tuple[Path, ...], add: bool, merge_into: bool, recollect: bool) -> None:
    """Collect the positive control's arms SOURCES into docs/reproduction/control/: run directories of selffer-only
    runs with doses (an arm is named by its directory), or records files ARM.json.gz."""
    if recollect:
        if sources or merge_into:
            raise click.UsageError("--recollect reads the committed records alone: name no source, no --merge")
        _collected(lambda _: recollect_control(), ())
        return
    _collected(lambda dirs: collect_control(dirs, add=add, merge_into=merge_into), sources)


@main.command("classes")
@click.argument("sources", nargs=-1, type=click.Path(exists=True, path_type=Path))
@click.option("--add", is_flag=True, default=False,
              help="Collect the committed rungs again from their records beside SOURCES (a committed rung of the "
                   "same name is replaced).")
@click.option("--pilot", is_flag=True, default=False,
              help="SOURCES are the recipe's pilots: write each base's fit into pilot.csv, beside the committed "
                   "pilots (one of the same name is replaced).")
def classes_command(sources: tuple[Path, ...], add: bool, pilot: bool) -> None:
    """Collect the classes ladder's rungs SOURCES into docs/reproduction/classes/: run directories of selffer-only
    runs with the convergence check, one number of classes a task each (a rung is named by its directory), or
    records files RUNG.json.gz."""
    if pilot and add:
        raise click.UsageError("--pilot writes pilot.csv alone: no --add")
    _collected(lambda dirs: collect_classes_pilot(dirs) if pilot else collect_classes(dirs, add=add), sources)


def _collected(collect_study, run_dirs: tuple[Path, ...]) -> None:
    try:
        dest = collect_study(list(run_dirs))
    except ProbeError as e:
        raise click.ClickException(str(e)) from None
    click.echo(f"wrote {dest}")


@main.command("render")
def render_command() -> None:
    """Write docs/reproduction.md from its template and the collected tables."""
    try:
        text = render()
    except ProbeError as e:
        raise click.ClickException(str(e)) from None
    write_atomic(DOCS / "reproduction.md", lambda tmp: Path(tmp).write_text(text))
    click.echo(f"wrote {DOCS / 'reproduction.md'}")


if __name__ == "__main__":
    main()

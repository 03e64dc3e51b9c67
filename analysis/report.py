"""``probe analyze``: the decomposition, its statistics, the figures and a report, written into ``RUN/analysis/``.

Files: ``report.md`` and a self-contained ``report.html`` (figures embedded), ``figures/`` (PNG and SVG),
``accuracies.zarr`` (the accuracy Dataset, with every network's training losses beside it), ``accuracies.csv`` (one row
per network: top-1 and balanced accuracy, final training loss and the loss on the whole training set after training),
``per_class.csv`` (one row per network and class), ``decomposition.csv`` (mean, 95% interval, number of seeds and
p-value per split, quantity and n), ``directions.csv`` (the same for each direction on its own), ``relative.csv`` (each
variant's accuracy relative to its base, per split and n) and ``claims.json``; with an activation store also
``representations.zarr``, ``representations.csv`` (per layer) and ``correlations.csv`` (scores against AnB accuracy).

Beside the decomposition the report shows how the networks trained (:mod:`analysis.training`): every variant's final
training loss beside its base's, its curves (``figures/training_loss_SPLIT.png``), whether the selffer BnB underfits
where it loses accuracy to its base, and what the layer above each cut received.

A one-directional run's report (layers donated by a source network trained elsewhere) names SnB and SnB+ where the
paper's names AnB and AnB+, says which source file, and leaves out what needs task A: the claim and the contrast of
a dissimilar split, the probes and estimators of baseA and its CKA with baseB.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import xarray as xr

from probe.analysis.accuracies import (
    METRICS,
    RunMetrics,
    check_metric,
    format_table,
    label_splits,
    one_directional,
    per_class_rows,
    read_run_metrics,
    rows,
    trained_targets,
)
from probe.analysis.claims import LEFT_OUT, MARGIN, check_claims, supported
from probe.analysis.decomposition import (
    DIRECTIONS,
    OVER,
    SIMILAR_SPLIT,
    decompose,
    direction_rows,
    quantities,
    relative_rows,
    replicates,
    seed_count,
    split_contrast,
    summarize,
    summary_rows,
    variant_means,
)
from probe.analysis.figures import (
    diagonal,
    figure2,
    figure3,
    figure_boundary,
    figure_cka,
    figure_directions,
    figure_robustness,
    figure_training_loss,
)
from probe.analysis.reference import CITATION
from probe.analysis.render import Block, Heading, Image, Items, Paragraph, Table, html, markdown, number, write_table
from probe.analysis.representations import representation_dataset, score_correlations
from probe.analysis.robustness import CRITICAL, ROBUST, robustness_dataset, robustness_rows
from probe.analysis.sanity import report_blocks, run_findings, voids
from probe.analysis.stats import Estimate
from probe.analysis.training import (
    DEAD_GAP,
    SCALE_RATIO,
    boundary_curve_dataset,
    boundary_dataset,
    boundary_rows,
    curve_dataset,
    fit_rows,
    fit_sentence,
    has_boundary,
    has_boundary_record,
    has_losses,
    loss_columns,
    loss_dataset,
    loss_means,
    predating,
    train_eval_loss,
)
from probe.analysis.transferability import DESCRIPTIONS, too_few_pairs
from probe.planning.plan import read_plan
from probe.specs.variants import BASE
from probe.storage.activation_store import consolidate, token_policies
from probe.storage.atomic import write_atomic, write_json
from probe.storage.run import Run


def _write_text(path: Path, text: str) -> None:
    def write(tmp: str) -> None:
        Path(tmp).write_text(text)

    write_atomic(path, write)


def _write_zarr(ds: xr.Dataset, path: Path) -> None:
    """Write a Dataset as a zarr store beside ``path`` and move it into place."""
    tmp = path.with_name(f".{path.name}.tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    ds.to_zarr(tmp, mode="w", consolidated=False)
    consolidate(tmp)
    shutil.rmtree(path, ignore_errors=True)
    tmp.rename(path)


def analyze_run(run_dir: Path, store: Path | None = None, max_samples: int = 2000, client=None,
                pooled: bool = False, metric: str = "top1", out: Path | None = None) -> dict:
    """Write everything into ``out`` (default ``run_dir/analysis``, or beside it for another metric or pooled
    directions: :meth:`probe.storage.run.Run.analysis_for`) and return a summary (table text, missing ids, claims,
    paths).

    Intervals are over seeds, each seed the mean of its two directions; ``pooled`` counts every direction of every
    seed as a replicate instead (optimistic: :mod:`analysis.decomposition` says why).

    When the run has an activation store (``store``, default ``RUN/activations.zarr``), the representation views
    (CKA, linear probes, transferability estimators; :mod:`analysis.representations`) are added, on at most
    ``max_samples`` images per comparison; with a dask ``client`` they are computed on its workers.

    The decomposition and the claims read ``metric``: ``top1`` (the paper's) or ``balanced`` (the class-balanced
    accuracy); accuracies.csv holds both, per_class.csv every class's. The report opens with the sanity checks
    (:mod:`analysis.sanity`)."""
    run = Run(run_dir)
    _, plan = read_plan(run)  # not a run directory (a typo): refused before anything is written there
    check_metric(metric)
    store = Path(store) if store else run.store
    rep, extra = None, []
    if store.exists():  # first, so that a damaged store is refused before anything is written
        rep = representation_dataset(run, store.resolve() if client else store, max_samples=max_samples,
                                     client=client)
    out = Path(out) if out is not None else run.analysis_for(metric, pooled)
    out.mkdir(parents=True, exist_ok=True)
    metrics = read_run_metrics(run)  # once: the accuracies in both metrics, the checks and per_class.csv read them
    # every split under the name its split file gives it, wherever the report shows one
    ds, missing = metrics.labelled(metric), metrics.missing
    top1, balanced = metrics.labelled("top1"), metrics.labelled("balanced")
    if rep is not None:
        rep = label_splits(rep, metrics.split_labels)
    found = run_findings(metrics, metric)
    losses = loss_dataset(metrics, ds)
    _write_zarr(ds.assign(losses.data_vars), out / "accuracies.zarr")
    write_table(out / "accuracies.csv", loss_columns(rows(top1, balanced), losses))
    write_table(out / "per_class.csv", per_class_rows(metrics))
    # top-1 verdicts stand only where the class-balanced accuracy reaches them too (on equal test classes the two
    # agree; networks recorded before balanced accuracies have none to check against)
    other = balanced if metric == "top1" and measured_alike(top1, balanced) else None
    summary, directions, claims, claim_split, figures = write_decomposition(ds, out, pooled, voids(found), other)
    if rep is not None:
        _write_zarr(rep, out / "representations.zarr")
        table, correlations = representation_rows(rep, ds), correlation_rows(rep, ds)
        write_table(out / "representations.csv", table)
        write_table(out / "correlations.csv", correlations)
        figures += [figure_cka(rep, out / "figures", str(split))[0] for split in rep["split"].values]
        extra = _representation_blocks(rep["split"].values, table, correlations, store, one_directional(ds))
    else:  # no store: tables of an earlier analysis with one would describe other activations
        for stale in ("representations.csv", "correlations.csv"):
            (out / stale).unlink(missing_ok=True)
        shutil.rmtree(out / "representations.zarr", ignore_errors=True)
        extra = [Heading(2, "Representations"), Paragraph(
            f"No activation store at `{store}`: run `probe extract {run_dir} --probe-set both`, then `probe analyze "
            f"{run_dir}`, for the CKA views, per-layer probes and transferability estimators.")]
    robust, robust_figures = _robustness(run, ds, out, metric, metrics.split_labels)
    figures += robust_figures
    fit, fit_figures = _training_blocks(metrics, ds, losses, summary, out, pooled)
    cut_blocks, cut_figures = _boundary_blocks(metrics, ds, out, pooled)
    extra = [*fit, *cut_blocks, *_stitching_blocks(ds, run_dir), *robust, *extra]
    blocks = _report_blocks(ds, missing, summary, directions, claims, claim_split, figures, out, extra, pooled)
    # the sanity checks right after the title: they say whether anything below can be read as transfer
    blocks = [blocks[0], *report_blocks(found, top1, balanced, metric), *_split_file_blocks(plan), *blocks[1:]]
    _write_text(out / "report.md", markdown(blocks))
    _write_text(out / "report.html", html(blocks, TITLE, out))
    # the training-loss and cut figures sit in their sections, not under Figures: last, so that a recomputed
    # reproduction report, which redraws the figures before them, keeps their order
    return {"table": format_table(ds), "missing": missing, "claims": claims, "out": out,
            "figures": [*figures, *fit_figures, *cut_figures],
            "dataset": ds, "representations": rep, "warnings": found, "intervals": intervals_text(ds, pooled)}


def measured_alike(top1: xr.Dataset, balanced: xr.Dataset) -> bool:
    """Whether every network with a top-1 accuracy has a balanced one too."""
    return all(bool((np.isfinite(balanced[v]) | ~np.isfinite(top1[v])).all()) for v in ("base", "acc"))


def write_decomposition(ds: xr.Dataset, out: Path, pooled: bool = False, voided: list[dict] = (),
                        other: xr.Dataset | None = None) -> tuple:
    """The decomposition of the accuracy Dataset ``ds`` into ``out``: decomposition.csv, directions.csv,
    relative.csv, claims.json and figures 2 and 3 (what ``probe analyze`` writes, and the committed reproduction
    report recomputes from its accuracies.csv). The claims are left undecided where the warnings ``voided``
    (:func:`analysis.sanity.voids`) void their split, and, with ``other`` (the same networks in the class-balanced
    accuracy), where that accuracy does not reach the same verdict. Returns the summary and direction rows, the
    claims, the split they were checked on and the figures' PNG paths."""
    summary, directions = summary_rows(ds, pooled), direction_rows(ds)
    write_table(out / "decomposition.csv", summary)
    write_table(out / "directions.csv", directions)
    write_table(out / "relative.csv", relative_rows(ds, pooled))
    splits = [str(s) for s in ds["split"].values]
    claim_split = SIMILAR_SPLIT if SIMILAR_SPLIT in splits else splits[0]
    claims = check_claims(ds, claim_split, pooled=pooled, voided=list(voided))
    if other is not None:
        claims = supported(claims, check_claims(other, claim_split, pooled=pooled), METRICS["balanced"].name)
    write_json(out / "claims.json", {"split": claim_split, "intervals_over": OVER[pooled],
                                     "claims": [c.to_dict() for c in claims], "voided": list(voided),
                                     "checked_against": METRICS["balanced"].name if other is not None else None})
    figures = [figure2(ds, out / "figures", split)[0] for split in splits]
    figures.append(figure3(ds, out / "figures")[0])
    if directions:
        figures += [figure_directions(ds, out / "figures", split)[0] for split in splits]
    return summary, directions, claims, claim_split, figures


def _robustness(run: Run, ds: xr.Dataset, out: Path, metric: str,
                labels: dict[str, str]) -> tuple[list[Block], list[Path]]:
    """The layer re-initialization section (robustness.csv and its figure) in the decomposition's ``metric``, or the
    one line that says how to get it."""
    rob = robustness_dataset(run, metric)
    rob = label_splits(rob, labels) if rob is not None else None
    if rob is None:
        (out / "robustness.csv").unlink(missing_ok=True)
        return [Heading(2, "Layer re-initialization"), Paragraph(
            f"Not measured: run `probe robustness {run.path}`, then `probe analyze {run.path}`, to test every base "
            "network with each layer reset to its initial and to random weights (forward passes only).")], []
    rows = robustness_rows(rob, summarize(decompose(ds)["coadaptation"]))
    write_table(out / "robustness.csv", rows)
    figures = [figure_robustness(rob, ds, out / "figures", str(split))[0] for split in rob["split"].values]
    b: list[Block] = [Heading(2, "Layer re-initialization"), Paragraph(
        "Each base network with one layer k reset, to the weights it started from (*initial*) or to random weights "
        "of the same scheme (*random*), every other layer as trained and nothing trained again (Zhang, Bengio & "
        "Singer 2022): accuracy relative to the base, mean [95% interval] (seeds). A layer is *robust* when the "
        f"reset network keeps at least {ROBUST:.0%} of the base's accuracy above chance, *critical* when it keeps "
        f"at most {CRITICAL:.0%}. Beside it, the co-adaptation drop (baseB - BnB) of the selffer cut at n = k.")]
    for split in map(str, rob["split"].values):
        table = []
        for k, layer in zip(rob["k"].values, rob["layer"].values):
            cells = {r["reset"]: r for r in rows if r["split"] == split and r["k"] == int(k)}
            drop = cells["initial"]["coadaptation_at_n"]
            table.append([int(k), str(layer), *[f"{_relative(cells[kind])} {cells[kind]['verdict']}"
                                                for kind in ("initial", "random")], number(drop)])
        b.append(Heading(3, f"{split} split"))
        b.append(Table(["k", "layer", "reset to initial", "reset to random", "co-adaptation drop at n = k"], table))
    return b, figures


def _training_blocks(metrics: RunMetrics, ds: xr.Dataset, losses: xr.Dataset, summary: list[dict], out: Path,
                    pooled: bool) -> tuple[list[Block], list[Path]]:
    """The training-loss section (:mod:`analysis.training`): per split, the mean final training loss of every
    variant and cut beside the base's, the curves, and at every cut with a co-adaptation drop whether BnB fits its
    training set as well as its base; and the figures it shows."""
    b: list[Block] = [Heading(2, "Training loss")]
    if not has_losses(losses):
        return [*b, Paragraph("No finished network recorded a training loss.")], []
    count = "seeds x directions" if pooled else "seeds"
    b.append(Paragraph(
        "Each network's final training loss (the mean cross-entropy over its last epoch's training batches, in "
        f"training mode and augmented) beside its base's: mean [95% interval] (n = {count}). The paper reads the "
        "co-adaptation drop (baseB - BnB) as an optimization difficulty: layers n+1.. cannot find again the features "
        "that co-adapted with the frozen layers 1..n. Then BnB should end training at a higher loss than its base "
        "(**underfit**); at no higher loss (**not underfit**) it fits its training set as well and generalizes "
        "worse. The difference is paired per seed and direction, and *undecided* where its interval spans 0."))
    evals = has_losses(losses, "train_eval_loss")
    lacking, finished = predating(metrics, lambda m: np.isfinite(train_eval_loss(m)))
    if lacking:
        b.append(Paragraph(f"{lacking} of {finished} finished networks predate the loss on the whole training set "
                           "after training (eval mode, center crops, no augmentation)"
                           + (": NaN there." if evals else ": it is not shown.")))
    drops = {(s, n): e for (s, q, n), e in _estimates(summary, "split", "quantity", "n").items()
             if q == "coadaptation"}
    fits = fit_rows(losses, drops, pooled)
    curves = curve_dataset(metrics, ds)
    figures = []
    tables = [("final training loss", loss_means(losses, "train_loss", pooled))]
    if evals:
        tables.append(("loss on the whole training set after training, eval mode",
                       loss_means(losses, "train_eval_loss", pooled)))
    names = [str(v) for v in ds["variant"].values]
    for split in map(str, ds["split"].values):
        b.append(Heading(3, f"{split} split"))
        for title, means in tables:
            b.append(Paragraph(f"**{title}**, mean [95% interval] (n = {count})"))
            table = [[0, "-", means[(split, BASE.name, 0)].text(signed=False), *[""] * len(names)]]
            for i, n in enumerate(ds["n"].values):
                layer = str(ds["layer"].values[i]) if "layer" in ds.coords else ""
                table.append([int(n), layer, "", *[means[(split, v, int(n))].text(signed=False) for v in names]])
            b.append(Table(["n", "layer", BASE.name, *names], table))
        if np.isfinite(curves["base_train_loss"].sel(split=split)).any():
            png = figure_training_loss(curves, out / "figures", split)[0]
            figures.append(png)
            b.append(Image(png.relative_to(out), png.stem))
        here = [fit_sentence(r) for r in fits if r["split"] == split]
        b.append(Items(here) if here else Paragraph("No cut n has a positive mean co-adaptation drop here."))
    return b, figures


def _boundary_blocks(metrics: RunMetrics, ds: xr.Dataset, out: Path, pooled: bool) -> tuple[list[Block], list[Path]]:
    """The section on what the layer above each cut received (:func:`analysis.training.boundary_rows`): per split, a
    figure of the records per epoch, and the cut networks whose output scale at layer n, or dead units at layer n or
    n+1, differ from their base's at the end; and the figures' files."""
    b: list[Block] = [Heading(2, "At the cut")]
    records = boundary_dataset(metrics, ds)
    if not has_boundary(records):
        return [*b, Paragraph("The networks predate the records of each cut point's output scale and dead units: "
                              "networks trained since record them at every epoch.")], []
    curves = boundary_curve_dataset(metrics, ds)
    figures = [figure_boundary(curves, out / "figures", split)[0] for split in map(str, ds["split"].values)
               if np.isfinite(curves["base_scale"].sel(split=split)).any()]
    b += [Image(png.relative_to(out), png.stem) for png in figures]
    lacking, finished = predating(metrics, has_boundary_record)
    b.append(Paragraph(
        "At the end of training, on one fixed batch of training images in eval mode: *scale*, the RMS of layer n's "
        "output (what layer n+1 receives), and *dead*, the fraction of a layer's units never positive on the batch, "
        "at layer n and at layer n+1, beside the base's at the same layers; means over "
        f"{'seeds and directions' if pooled else 'seeds (each the mean of its directions)'}, of the networks with "
        f"the record and their bases. Shown where the scale ratio lies outside [{1 / SCALE_RATIO:.2f}, "
        f"{SCALE_RATIO:.2f}] or a dead fraction differs from the base's by more than {DEAD_GAP}."
        + (f" {lacking} of {finished} finished networks predate these records and are left out." if lacking
           else "")))
    rows = boundary_rows(records, pooled)
    differ = [r for r in rows if r["differs"]]
    if not differ:
        return [*b, Paragraph(f"None differ: every cut network's {len(rows)} means are within these bounds of its "
                              "base's.")], figures
    for split in map(str, ds["split"].values):
        here = [r for r in differ if r["split"] == split]
        if not here:
            b.append(Paragraph(f"**{split} split**: none differ."))
            continue
        b.append(Heading(3, f"{split} split"))
        b.append(Table(["n", "variant", "layer n", "scale", "base's", "ratio", "dead", "base's", "layer n+1",
                        "dead n+1", "base's"],
                       [[r["n"], r["variant"], r["layer"], number(r["scale"]), number(r["base_scale"]),
                         number(r["ratio"], 2), number(r["dead"]), number(r["base_dead"]),
                         r["next_layer"] or "-", number(r["dead_next"]), number(r["base_dead_next"])]
                        for r in here]))
    return b, figures


def _split_file_blocks(plan) -> list[Block]:
    """What the run's split files call themselves, and their notes."""
    labels = {p.spec.split: p.split_labels for p in plan if p.split_labels}
    return [Paragraph(f"Split `{split}`" + (f" is **{label['name']}**" if "name" in label else "")
                      + (f": {label['note']}" if "note" in label else "") + ".") for split, label in labels.items()]


def _relative(row: dict) -> str:
    return str(Estimate(row["relative"], row["low"], row["high"], row["seeds"], np.nan)).replace("+", "")


def _stitching_blocks(ds: xr.Dataset, run_dir: Path) -> list[Block]:
    """One line on model stitching where the run has none of its networks (the decomposition tables show them
    where it does)."""
    if one_directional(ds) or {"AnB-stitch", "BnB-stitch"} <= set(ds["variant"].values):
        return []
    return [Heading(2, "Model stitching"), Paragraph(
        "Not planned: `probe train RUN --extend --variants BnB,BnB+,AnB,AnB+,RnB,BnB-stitch,AnB-stitch` (with the "
        "run's other study options) adds the stitched networks (the bottom of one base, a trained linear stitch and "
        "the frozen top of the other, Bansal, Nakkiran & Barak 2021) and their self-stitched controls; the "
        "decomposition then shows the stitching penalty beside the specialization drop.")]


def _mean_over_replicates(values: xr.DataArray) -> np.ndarray:
    return replicates(values).mean("rep").values  # xarray's NaN-skipping mean: all-NaN cells stay NaN, unwarned


def representation_rows(rep: xr.Dataset, acc: xr.Dataset) -> list[dict]:
    """Per split and layer k: the CKA views of the networks cut at n = k, the AnB accuracy there, and the probe and
    estimator scores of the other task's base at layer k; means over replicates and both directions. A
    one-directional run has no other task's base, and its source network is in no store: its rows hold the views
    of SnB and BnB+ against baseB, and the SnB accuracy."""
    one_way = one_directional(acc)
    if one_way:
        views = {"cka_snb_baseb": diagonal(rep["cka_target"].sel(variant="SnB")),
                 "cka_bnbplus_baseb": diagonal(rep["cka_source"].sel(variant="BnB+")),
                 "cka_rnb_baseb": diagonal(rep["cka_target"].sel(variant="RnB")),
                 "snb_acc": acc["acc"].sel(variant="SnB")}
    else:
        views = {"cka_anb_baseb": diagonal(rep["cka_target"].sel(variant="AnB")),
                 "cka_anbplus_basea": diagonal(rep["cka_source"].sel(variant="AnB+")),
                 "cka_bnbplus_baseb": diagonal(rep["cka_source"].sel(variant="BnB+")),
                 "cka_rnb_baseb": diagonal(rep["cka_target"].sel(variant="RnB")),
                 "anb_acc": acc["acc"].sel(variant="AnB")}
    scores = () if one_way else DESCRIPTIONS
    layer_names = list(rep["layer"].values)
    out = []
    for split in rep["split"].values:
        cells = {name: _mean_over_replicates(v.sel(split=split)) for name, v in views.items()}
        probe = {k: _mean_over_replicates(rep[k].sel(split=split)) for k in scores}
        for j, n in enumerate(rep["n"].values):
            layer = layer_names[int(n) - 1]
            flat = rep["constant"].sel(split=split, layer=layer).values if "constant" in rep else np.array([np.nan])
            out.append({"split": str(split), "k": int(n), "layer": layer,
                        **{v: float(cells[v][j]) for v in views},
                        **{k: float(probe[k][int(n) - 1]) for k in scores},
                        "constant": bool(np.nanmax(flat) > 0) if np.isfinite(flat).any() else False})
    return out


UNDEFINED = "undefined: constant features"


def _cell(row: dict, column: str) -> str:
    """A representation table's cell: the number, or why there is none where the layer does not vary."""
    value = float(row[column])
    return UNDEFINED if not np.isfinite(value) and str(row.get("constant")) in ("True", "1") else number(value, 4)


def _correlation_text(c: dict) -> str:
    """One score's rank correlation as the report says it; below the fewest pairs, that it has too few."""
    few = too_few_pairs(int(c["pairs"]))
    return f"{c['score']} {few}" if few else f"{c['score']} rho = {number(c['rho'], 4)} (p = {number(c['p'])}, " \
                                             f"{c['pairs']} pairs)"


def correlation_rows(rep: xr.Dataset, acc: xr.Dataset) -> list[dict]:
    """Per split and score: Spearman's rho with the AnB accuracy at n = k, its p-value and the pairs behind it
    (none in a one-directional run, whose scores would be those of a baseA it does not train)."""
    if one_directional(acc):
        return []
    out = []
    for split in rep["split"].values:
        for k, (r, p, c) in score_correlations(rep.sel(split=[split]), acc.sel(split=[split])).items():
            out.append({"split": str(split), "score": k, "rho": r, "p": p, "pairs": c, "note": too_few_pairs(c) or ""})
    return out


# CKA(RnB_k, baseB_k) is the floor of every view: layer k fed by random frozen layers 1..k, against the trained one
FLOOR_TITLE = "floor: CKA(RnB_k, baseB_k)"
VIEW_TITLES = {"cka_anb_baseb": "CKA(AnB_k, baseB_k)", "cka_anbplus_basea": "CKA(AnB+_k, baseA_k)",
               "cka_bnbplus_baseb": "CKA(BnB+_k, baseB_k)", "cka_rnb_baseb": FLOOR_TITLE, "anb_acc": "AnB accuracy"}
SOURCE_VIEW_TITLES = {"cka_snb_baseb": "CKA(SnB_k, baseB_k)", "cka_bnbplus_baseb": "CKA(BnB+_k, baseB_k)",
                      "cka_rnb_baseb": FLOOR_TITLE, "snb_acc": "SnB accuracy"}  # a one-directional run's
TITLE = "Transferability report"


TOKEN_MEANINGS = {"cls": "the class token", "mean": "the mean over tokens", "all": "every token"}


def _token_text(policies: dict[str, str]) -> str:
    """Which tokens each token layer's features are, as the store recorded them."""
    parts = [f"{layer}: {TOKEN_MEANINGS.get(p, p)}" for layer, p in policies.items()]
    text = f"Token layers, as extracted: {'; '.join(parts)}."
    if "cls" in policies.values() and "mean" in policies.values():
        text += (" Under --tokens auto, a layer where the class token is the same for every image (before any "
                 "attention mixes it with the image: a ViT's embedding) takes the mean of its tokens, since a constant "
                 "feature measures nothing.")
    return text


def _representation_blocks(splits, table: list[dict], correlations: list[dict], store: Path,
                           one_way: bool) -> list[Block]:
    """The report's representation section from the rows of representations.csv and correlations.csv. Views the
    store cannot give (all empty) are left out of the tables, and one line says what to run for them."""
    b: list[Block] = [Heading(2, "Representations")]
    if one_way:
        titles, scores = SOURCE_VIEW_TITLES, ()
        b.append(Paragraph(
            f"From the activation store `{store}`: debiased linear CKA (Nguyen, Raghu & Kornblith 2021) on the target "
            "task's test images, for the networks cut at n = k at their layer k, against baseB, beside the measured "
            "SnB accuracy at n = k; means over replicates. The source network is in no store, and this run trains "
            "no other task's base to probe or score."))
    else:
        titles, scores = VIEW_TITLES, DESCRIPTIONS
        b.append(Paragraph(
            f"From the activation store `{store}`: debiased linear CKA (Nguyen, Raghu & Kornblith 2021) on the target "
            "task's test images, for the networks cut at n = k at their layer k; linear-probe accuracy and "
            "transferability estimators (LogME, H-score, LEEP, NCE) of the other task's base network, layer by "
            "layer, beside the measured AnB accuracy at n = k. Means over replicates and both directions."))
    if policies := token_policies(store):
        b.append(Paragraph(_token_text(policies)))
    # a view is shown where the store gave it: a number, or a layer it is undefined on (constant features)
    columns = [c for c in [*titles, *scores] if any(np.isfinite(float(r[c])) or _cell(r, c) == UNDEFINED
                                                    for r in table)]
    empty = [titles.get(c, c) for c in [*titles, *scores] if c not in columns]
    if empty:
        b.append(Paragraph(
            f"Not in this store: {', '.join(empty)}. They need the other task's base network run on the target "
            "task's images: `probe extract RUN --probe-set both --out RUN/activations-both.zarr`, then `probe "
            "analyze RUN --store RUN/activations-both.zarr`."))
    for split in splits:
        b.append(Heading(3, f"{split} split, per layer"))
        b.append(Table(["k", "layer", *[titles.get(c, c) for c in columns]],
                       [[r["k"], r["layer"], *[_cell(r, c) for c in columns]]
                        for r in table if r["split"] == split]))
        corr = [c for c in correlations if c["split"] == split and c["pairs"] > 0]
        if corr:
            b.append(Paragraph("Spearman rank correlation with the AnB accuracy at n = k, pooled over replicates, "
                               "directions and n: " + "; ".join(_correlation_text(c) for c in corr) + "."))
    return b


def _report_blocks(ds: xr.Dataset, missing: list[str], summary: list[dict], directions: list[dict], claims,
                   claim_split: str, figures: list[Path], out: Path, extra: list[Block], pooled: bool) -> list[Block]:
    """The whole report; ``extra`` (the representation section) goes before the figures."""
    return [Heading(1, TITLE), *_overview_blocks(ds, missing, pooled), *_claim_blocks(claims, claim_split),
            *_accuracy_blocks(ds, pooled), *_decomposition_blocks(ds, summary, directions, pooled), *extra,
            Heading(2, "Figures"), *[Image(f.relative_to(out), f.stem) for f in figures],
            Paragraph(f"Paper's numbers: {CITATION}.")]


def _overview_blocks(ds: xr.Dataset, missing: list[str], pooled: bool) -> list[Block]:
    study = json.loads(ds.attrs.get("study", "{}"))
    arch = study.get("arch", {})
    trained = trained_targets(ds)
    directions = ("on target task B only" if one_directional(ds) else "each in both directions"
                  if len(trained) > 1 else f"on target task {''.join(trained) or '-'} only (the other direction "
                                          "not trained)")
    b: list[Block] = [Paragraph(
        f"Dataset `{study.get('data', {}).get('name')}`, architecture `{arch.get('name')}` (init {arch.get('init')}, "
        f"options {arch.get('options')}), {study.get('recipe', {}).get('epochs')} epochs per network; splits "
        f"{', '.join(str(s) for s in ds['split'].values)}; replicates "
        f"{', '.join(str(r) for r in ds['replicate'].values)}, {directions}."), Paragraph(intervals_text(ds, pooled))]
    if study.get("source"):
        b.append(Paragraph(_source_text(study["source"])))
    if missing:
        b.append(Paragraph(f"**Partial run:** {len(missing)} planned networks are not finished and are left out: "
                           + ", ".join(f"`{m}`" for m in missing[:20]) + (" ..." if len(missing) > 20 else "")))
    return b


def intervals_text(ds: xr.Dataset, pooled: bool) -> str:
    """What the intervals are over, and what a run of one seed can and cannot tell."""
    seeds = min((seed_count(ds, str(s)) for s in ds["split"].values), default=0)
    one_way = one_directional(ds)
    if pooled:
        return ("Intervals are 95% t intervals over seeds and directions pooled (`--pool-directions`): the two "
                "directions of a seed share their base networks and class halves, so counting them as independent "
                "replicates makes these intervals too narrow; the count behind each number is seeds times "
                "directions.")
    text = ("The unit of replication is the seed (a split and its initialization). Intervals are 95% t intervals "
            "over seeds" + ("" if one_way else ", each seed's value the mean of its two directions, which are paired "
                                               "measurements within it (they share their base networks)")
            + "; the number in parentheses is the number of seeds behind each value.")
    if seeds >= 2:
        return text
    return (text + f" **This run has {'no finished' if seeds == 0 else 'one'} seed**: every number below is one "
            "measurement" + ("" if one_way else " (the mean of its two directions)") + ", no interval can be computed "
            "and no claim can be decided, so differences of a few points may be noise between seeds. "
            + ("" if one_way else "The per-direction tables show how much the two directions differ, which measures "
                                  "how asymmetric the split is, not the noise between seeds. ")
            + "Add seeds to measure it (`probe train RUN --extend --seeds 0,1,2`, then `probe analyze RUN`); probe's "
              "reproduction report (docs/reproduction.md in its repository) runs the whole protocol at three seeds.")


def _source_text(source: dict) -> str:
    """Which source network a one-directional run's SnB and SnB+ copy from, and the inputs it expects."""
    inputs = ("the run's own data statistics" if source.get("mean") is None
              else f"mean {source['mean']} and std {source['std']}")
    return (f"Layers 1..n of SnB and SnB+ are copied from the source network `{source['path']}` (SHA-256 "
            f"`{source['sha256'][:16]}`...); every network of the run standardizes its inputs with {inputs}, as that "
            "network expects.")


def _claim_blocks(claims, claim_split: str) -> list[Block]:
    checked = [c for c in claims if c.verdict != LEFT_OUT]
    return [Heading(2, "Claims of the paper, checked"),
            Paragraph(f"On the `{claim_split}` split. *holds*: every interval lies on the claimed side (for the "
                      f"no-difference claims 1 and 3: within +-{MARGIN} accuracy); *does not hold*: an interval "
                      "lies on the other side (wholly beyond the margin, for claims 1 and 3); *undecided*: neither, "
                      "or too few seeds (one seed never decides). A claim resting on m intervals uses "
                      "Bonferroni-corrected 1 - 0.05/m intervals."),
            Table(["#", "claim", "verdict", "evidence"],
                  [[c.number, c.text, f"**{c.verdict_text}**", "; ".join(c.evidence)] for c in checked]),
            *[Paragraph(f"Claim {c.number} ({c.text}) is left out: {c.evidence[0]}.") for c in claims
              if c.verdict == LEFT_OUT]]


def _accuracy_blocks(ds: xr.Dataset, pooled: bool) -> list[Block]:
    """Per split, every variant's mean test accuracy: the base networks in row 0, the cut networks per n."""
    means = variant_means(ds, pooled)
    names = [str(v) for v in ds["variant"].values]
    count = "seeds x directions" if pooled else "seeds"
    b: list[Block] = [Heading(2, "Test accuracy")]
    for split in map(str, ds["split"].values):
        table = [[0, "-", means[(split, BASE.name, 0)].text(signed=False), *[""] * len(names)]]
        for i, n in enumerate(ds["n"].values):
            layer = str(ds["layer"].values[i]) if "layer" in ds.coords else ""
            table.append([int(n), layer, "", *[means[(split, v, int(n))].text(signed=False) for v in names]])
        b.append(Heading(3, f"{split} split: mean [95% interval] (n = {count})"))
        b.append(Table(["n", "layer", BASE.name, *names], table))
    return b


def _estimates(rows: list[dict], *keys: str) -> dict[tuple, Estimate]:
    """Table rows of estimates by the values of ``keys``."""
    return {tuple(r[k] for k in keys): Estimate(r["mean"], r["low"], r["high"], r["replicates"], r["p"])
            for r in rows}


def _decomposition_blocks(ds: xr.Dataset, summary: list[dict], directions: list[dict], pooled: bool) -> list[Block]:
    """Per split and n, every quantity of the decomposition; each direction on its own; then the dissimilar splits
    against the similar one."""
    formulas = quantities(ds)
    b: list[Block] = [
        Heading(2, "Decomposition per cut n"),
        Paragraph("; ".join(f"**{k}** = {text.split(': ')[1]}" for k, (_, text) in formulas.items()) + ". "
                  f"Mean [95% interval] (n = {'seeds x directions' if pooled else 'seeds'}).")]
    estimates = _estimates(summary, "split", "quantity", "n")
    for split in map(str, ds["split"].values):
        b.append(Heading(3, f"{split} split"))
        b.append(Table(["n", *formulas], [[int(n), *[str(estimates[(split, q, int(n))]) for q in formulas]]
                                          for n in ds["n"].values]))
    if directions:
        b += _direction_blocks(ds, directions)
    contrast = split_contrast(ds, pooled=pooled)
    if contrast:
        b.append(Heading(3, f"Dissimilar minus similar ({SIMILAR_SPLIT}) split: relative total drop (Welch)"))
        b.append(Table(["split", "n", f"difference [95% interval] ({'seeds x directions' if pooled else 'seeds'} "
                                      "of both splits)", "p"],
                       [[s, n, str(e), f"{e.p:.3g}"] for (s, n), e in contrast.items()]))
    return b


DIRECTION_QUANTITIES = ("coadaptation", "specialization", "lingering")


def _direction_blocks(ds: xr.Dataset, directions: list[dict]) -> list[Block]:
    """The co-adaptation drop, specialization drop and lingering boost of each direction on its own, over seeds:
    for an asymmetric split (one task harder, or its features more general) the two differ."""
    estimates = _estimates(directions, "split", "direction", "quantity", "n")
    names = [DIRECTIONS[str(t)] for t in ds["target"].values]
    b: list[Block] = [Heading(3, "Each direction on its own"), Paragraph(
        "A->B: target task B, layers of AnB from baseA, against baseB; B->A: the mirror image. Mean [95% interval] "
        "over seeds (n = seeds).")]
    for split in map(str, ds["split"].values):
        b.append(Paragraph(f"**{split} split**"))
        b.append(Table(["n", *[f"{q} {d}" for q in DIRECTION_QUANTITIES for d in names]],
                       [[int(n), *[str(estimates[(split, d, q, int(n))]) for q in DIRECTION_QUANTITIES
                                   for d in names]] for n in ds["n"].values]))
    return b

"""``probe analyze``: the decomposition, its statistics, the figures and a report, written into ``RUN/analysis/``.

Files: ``report.md`` and a self-contained ``report.html`` (figures embedded), ``figures/`` (PNG and SVG),
``accuracies.zarr`` (the accuracy Dataset), ``accuracies.csv`` (one row per network), ``decomposition.csv`` (mean,
95% interval, replicate count and p-value per split, quantity and n), ``relative.csv`` (each variant's accuracy
relative to its base, per split and n) and ``claims.json``; with an activation store also ``representations.zarr``,
``representations.csv`` (per layer) and ``correlations.csv`` (scores against AnB accuracy).

A one-directional run's report (layers donated by a source network trained elsewhere) names SnB and SnB+ where the
paper's names AnB and AnB+, says which source file, and leaves out what needs task A: the claim and the contrast of
a dissimilar split, the probes and estimators of baseA and its CKA with baseB.
"""

from __future__ import annotations

import csv
import io
import json
import shutil
from pathlib import Path

import numpy as np
import xarray as xr

from probe.activation_store import consolidate
from probe.analysis.accuracies import accuracy_dataset, format_table, one_directional, rows
from probe.analysis.claims import LEFT_OUT, MARGIN, check_claims
from probe.analysis.decomposition import (
    SIMILAR_SPLIT,
    quantities,
    relative_rows,
    replicates,
    split_contrast,
    summary_rows,
    variant_means,
)
from probe.analysis.figures import diagonal, figure2, figure3, figure_cka
from probe.analysis.reference import CITATION
from probe.analysis.render import Block, Heading, Image, Paragraph, Table, html, markdown, number
from probe.analysis.representations import representation_dataset, score_correlations
from probe.analysis.stats import Estimate
from probe.analysis.transferability import DESCRIPTIONS
from probe.atomic import write_atomic, write_json
from probe.plan import read_plan
from probe.run import Run
from probe.variants import BASE


def _csv_text(records: list[dict]) -> str:
    buf = io.StringIO()
    if records:
        writer = csv.DictWriter(buf, fieldnames=list(records[0]))
        writer.writeheader()
        writer.writerows(records)
    return buf.getvalue()


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


def analyze_run(run_dir: Path, store: Path | None = None, max_samples: int = 2000, client=None) -> dict:
    """Write everything into ``run_dir/analysis`` and return a summary (table text, missing ids, claims, paths).

    When the run has an activation store (``store``, default ``RUN/activations.zarr``), the representation views
    (CKA, linear probes, transferability estimators; :mod:`analysis.representations`) are added, on at most
    ``max_samples`` images per comparison; with a dask ``client`` they are computed on its workers."""
    run = Run(run_dir)
    read_plan(run)  # not a run directory (a typo): refused before anything is written there
    store = Path(store) if store else run.store
    rep, extra = None, []
    if store.exists():  # first, so that a damaged store is refused before anything is written
        rep = representation_dataset(run, store.resolve() if client else store, max_samples=max_samples,
                                     client=client)
    out = run.analysis
    out.mkdir(parents=True, exist_ok=True)
    ds, missing = accuracy_dataset(run)
    _write_zarr(ds, out / "accuracies.zarr")
    _write_text(out / "accuracies.csv", _csv_text(rows(ds)))
    summary = summary_rows(ds)
    _write_text(out / "decomposition.csv", _csv_text(summary))
    _write_text(out / "relative.csv", _csv_text(relative_rows(ds)))
    splits = [str(s) for s in ds["split"].values]
    claim_split = SIMILAR_SPLIT if SIMILAR_SPLIT in splits else splits[0]
    claims = check_claims(ds, claim_split)
    write_json(out / "claims.json", {"split": claim_split, "claims": [c.to_dict() for c in claims]})
    figures = []
    for split in splits:
        figures.append(figure2(ds, out / "figures", split)[0])
    figures.append(figure3(ds, out / "figures")[0])
    if rep is not None:
        _write_zarr(rep, out / "representations.zarr")
        table, correlations = representation_rows(rep, ds), correlation_rows(rep, ds)
        _write_text(out / "representations.csv", _csv_text(table))
        _write_text(out / "correlations.csv", _csv_text(correlations))
        figures += [figure_cka(rep, out / "figures", str(split))[0] for split in rep["split"].values]
        extra = _representation_blocks(rep["split"].values, table, correlations, store, one_directional(ds))
    else:  # no store: tables of an earlier analysis with one would describe other activations
        for stale in ("representations.csv", "correlations.csv"):
            (out / stale).unlink(missing_ok=True)
        shutil.rmtree(out / "representations.zarr", ignore_errors=True)
    blocks = _report_blocks(ds, missing, summary, claims, claim_split, figures, out, extra)
    _write_text(out / "report.md", markdown(blocks))
    _write_text(out / "report.html", html(blocks, TITLE, out))
    return {"table": format_table(ds), "missing": missing, "claims": claims, "out": out, "figures": figures,
            "dataset": ds, "representations": rep}


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
                 "snb_acc": acc["acc"].sel(variant="SnB")}
    else:
        views = {"cka_anb_baseb": diagonal(rep["cka_target"].sel(variant="AnB")),
                 "cka_anbplus_basea": diagonal(rep["cka_source"].sel(variant="AnB+")),
                 "cka_bnbplus_baseb": diagonal(rep["cka_source"].sel(variant="BnB+")),
                 "anb_acc": acc["acc"].sel(variant="AnB")}
    scores = () if one_way else DESCRIPTIONS
    layer_names = list(rep["layer"].values)
    out = []
    for split in rep["split"].values:
        cells = {name: _mean_over_replicates(v.sel(split=split)) for name, v in views.items()}
        probe = {k: _mean_over_replicates(rep[k].sel(split=split)) for k in scores}
        for j, n in enumerate(rep["n"].values):
            out.append({"split": str(split), "k": int(n), "layer": layer_names[int(n) - 1],
                        **{v: float(cells[v][j]) for v in views},
                        **{k: float(probe[k][int(n) - 1]) for k in scores}})
    return out


def correlation_rows(rep: xr.Dataset, acc: xr.Dataset) -> list[dict]:
    """Per split and score: Spearman's rho with the AnB accuracy at n = k, its p-value and the pairs behind it
    (none in a one-directional run, whose scores would be those of a baseA it does not train)."""
    if one_directional(acc):
        return []
    out = []
    for split in rep["split"].values:
        for k, (r, p, c) in score_correlations(rep.sel(split=[split]), acc.sel(split=[split])).items():
            out.append({"split": str(split), "score": k, "rho": r, "p": p, "pairs": c})
    return out


VIEW_TITLES = {"cka_anb_baseb": "CKA(AnB_k, baseB_k)", "cka_anbplus_basea": "CKA(AnB+_k, baseA_k)",
               "cka_bnbplus_baseb": "CKA(BnB+_k, baseB_k)", "anb_acc": "AnB accuracy"}
SOURCE_VIEW_TITLES = {"cka_snb_baseb": "CKA(SnB_k, baseB_k)", "cka_bnbplus_baseb": "CKA(BnB+_k, baseB_k)",
                      "snb_acc": "SnB accuracy"}  # a one-directional run's
TITLE = "Transferability report"


def _representation_blocks(splits, table: list[dict], correlations: list[dict], store: Path,
                           one_way: bool) -> list[Block]:
    """The report's representation section from the rows of representations.csv and correlations.csv."""
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
            "layer, beside the measured AnB accuracy at n = k. Means over replicates and both directions; empty "
            "cells need a store extracted with `--probe-set both`."))
    for split in splits:
        b.append(Heading(3, f"{split} split, per layer"))
        b.append(Table(["k", "layer", *titles.values(), *scores],
                       [[r["k"], r["layer"], *[number(r[v], 4) for v in titles],
                         *[number(r[k], 4) for k in scores]] for r in table if r["split"] == split]))
        corr = [c for c in correlations if c["split"] == split]
        if corr:
            b.append(Paragraph("Spearman rank correlation with the AnB accuracy at n = k, pooled over replicates, "
                               "directions and n: " + "; ".join(f"{c['score']} rho = {number(c['rho'], 4)} "
                                                                f"(p = {number(c['p'])}, {c['pairs']} pairs)"
                                                                for c in corr) + "."))
    return b


def _report_blocks(ds: xr.Dataset, missing: list[str], summary: list[dict], claims, claim_split: str,
                   figures: list[Path], out: Path, extra: list[Block]) -> list[Block]:
    """The whole report; ``extra`` (the representation section) goes before the figures."""
    return [Heading(1, TITLE), *_overview_blocks(ds, missing), *_claim_blocks(claims, claim_split),
            *_accuracy_blocks(ds), *_decomposition_blocks(ds, summary), *extra,
            Heading(2, "Figures"), *[Image(f.relative_to(out), f.stem) for f in figures],
            Paragraph(f"Paper's numbers: {CITATION}.")]


def _overview_blocks(ds: xr.Dataset, missing: list[str]) -> list[Block]:
    study = json.loads(ds.attrs.get("study", "{}"))
    arch = study.get("arch", {})
    directions = "on target task B only" if one_directional(ds) else "each in both directions"
    b: list[Block] = [Paragraph(
        f"Dataset `{study.get('data', {}).get('name')}`, architecture `{arch.get('name')}` (init {arch.get('init')}, "
        f"options {arch.get('options')}), {study.get('recipe', {}).get('epochs')} epochs per network; splits "
        f"{', '.join(str(s) for s in ds['split'].values)}; replicates "
        f"{', '.join(str(r) for r in ds['replicate'].values)}, {directions}. Intervals are 95% t "
        "intervals over replicates (n = replicates behind each number; one replicate gives no interval).")]
    if study.get("source"):
        b.append(Paragraph(_source_text(study["source"])))
    if missing:
        b.append(Paragraph(f"**Partial run:** {len(missing)} planned networks are not finished and are left out: "
                           + ", ".join(f"`{m}`" for m in missing[:20]) + (" ..." if len(missing) > 20 else "")))
    return b


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
                      "or too few replicates. A claim resting on m intervals uses Bonferroni-corrected 1 - 0.05/m "
                      "intervals."),
            Table(["#", "claim", "verdict", "evidence"],
                  [[c.number, c.text, f"**{c.verdict}**", "; ".join(c.evidence)] for c in checked]),
            *[Paragraph(f"Claim {c.number} ({c.text}) is left out: {c.evidence[0]}.") for c in claims
              if c.verdict == LEFT_OUT]]


def _accuracy_blocks(ds: xr.Dataset) -> list[Block]:
    """Per split, every variant's mean test accuracy: the base networks in row 0, the cut networks per n."""
    means = variant_means(ds)
    names = [str(v) for v in ds["variant"].values]
    b: list[Block] = [Heading(2, "Test accuracy")]
    for split in map(str, ds["split"].values):
        table = [[0, "-", str(means[(split, BASE.name, 0)]), *[""] * len(names)]]
        for i, n in enumerate(ds["n"].values):
            layer = str(ds["layer"].values[i]) if "layer" in ds.coords else ""
            table.append([int(n), layer, "", *[str(means[(split, v, int(n))]) for v in names]])
        b.append(Heading(3, f"{split} split: mean [95% interval] (n)"))
        b.append(Table(["n", "layer", BASE.name, *names], table))
    return b


def _decomposition_blocks(ds: xr.Dataset, summary: list[dict]) -> list[Block]:
    """Per split and n, every quantity of the decomposition; then the dissimilar splits against the similar one."""
    formulas = quantities(ds)
    b: list[Block] = [
        Heading(2, "Decomposition per cut n"),
        Paragraph("; ".join(f"**{k}** = {text.split(': ')[1]}" for k, (_, text) in formulas.items()) + ".")]
    estimates = {(r["split"], r["quantity"], r["n"]): Estimate(r["mean"], r["low"], r["high"], r["replicates"], r["p"])
                 for r in summary}
    for split in map(str, ds["split"].values):
        b.append(Heading(3, f"{split} split"))
        b.append(Table(["n", *formulas], [[int(n), *[str(estimates[(split, q, int(n))]) for q in formulas]]
                                          for n in ds["n"].values]))
    contrast = split_contrast(ds)
    if contrast:
        b.append(Heading(3, f"Dissimilar minus similar ({SIMILAR_SPLIT}) split: relative total drop (Welch)"))
        b.append(Table(["split", "n", "difference [95% interval] (replicates)", "p"],
                       [[s, n, str(e), f"{e.p:.3g}"] for (s, n), e in contrast.items()]))
    return b

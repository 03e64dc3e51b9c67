"""``probe analyze``: its options and its body."""

from __future__ import annotations

from pathlib import Path

import click

from probe.cli.options import errors_as_messages, executor_options


@click.command()
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--store", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Activation store for the representation views. Default: RUN_DIR/activations.zarr when present.")
@click.option("--max-samples", type=int, default=2000, show_default=True,
              help="Images per CKA comparison and per task for the probes and estimators (seeded subsample).")
@click.option("--metric", type=click.Choice(("top1", "balanced")), default="top1", show_default=True,
              help="Accuracy the decomposition and the claims read: top1 (the paper's) or balanced (the mean "
                   "per-class recall, which a test set of unequal classes cannot inflate).")
@click.option("--pool-directions", is_flag=True, default=False,
              help="Count the two directions of every seed as independent replicates (the optimistic intervals of "
                   "reports before 0.3). Default: intervals over seeds, each the mean of its directions.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where to write the report. Default: RUN_DIR/analysis, or RUN_DIR/analysis-balanced with "
                   "--metric balanced (analysis-pooled, analysis-balanced-pooled with --pool-directions), so that "
                   "the reports of two metrics sit side by side.")
@executor_options
@errors_as_messages
def analyze(run_dir: Path, store: Path | None, max_samples: int, metric: str, pool_directions: bool,
            out: Path | None, executor: str, scheduler: str | None, workers: int) -> None:
    """Decompose RUN_DIR's accuracies into co-adaptation and specialization, check the paper's claims, and write
    the report, figures and tables into RUN_DIR/analysis (works on a partial run; another metric's report goes
    beside it, see --out). With an activation store ('probe extract'), the report adds CKA views, per-layer probes
    and transferability estimators."""
    from probe.analysis.report import analyze_run
    from probe.analysis.sanity import warning_lines

    if store is not None and not store.exists():
        raise click.ClickException(f"no activation store at {store}")
    if executor == "dask":
        from probe.execution.distributed import dask_client

        with dask_client(scheduler, workers) as client:
            result = analyze_run(run_dir, store, max_samples, client, metric=metric, pooled=pool_directions, out=out)
    else:
        result = analyze_run(run_dir, store, max_samples, metric=metric, pooled=pool_directions, out=out)
    click.echo(result["table"])
    for line in warning_lines(result["warnings"], result["dataset"]):
        click.echo(line)
    if result["missing"]:
        click.echo(f"partial run: {len(result['missing'])} planned networks not finished "
                   f"(e.g. {result['missing'][0]}); they are left out")
    for c in result["claims"]:
        click.echo(f"claim {c.number}: {c.verdict_text:<14} {c.text}")
    click.echo(result["intervals"].replace("**", "").replace("`", "'"))
    click.echo(f"report: {result['out'] / 'report.md'} (and report.html, figures/, accuracies.zarr, *.csv)")

"""``probe train``: its options and its body."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from probe.cli.options import errors_as_messages, executor_options, study_from_options, study_given, study_options
from probe.planning.plan import read_plan
from probe.planning.summary import budget_advice
from probe.storage.run import Run


@click.command()
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@study_options
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Decoded-dataset cache. Default: $PROBE_CACHE or ~/.cache/probe.")
@click.option("--download/--no-download", default=False, show_default=True,
              help="Let torchvision download a missing dataset, or the weights a --source torchvision:WEIGHTS or "
                   "timm:NAME names (needs network access).")
@click.option("--networks", default="", help="Train only these networks (ids or names, comma-separated).")
@click.option("--extend", is_flag=True, default=False,
              help="Let an existing RUN_DIR's plan grow by the given seeds, splits, cuts or variants.")
@click.option("--quiet", is_flag=True, default=False, help="No progress bars.")
@executor_options
@click.pass_context
@errors_as_messages
def train(ctx: click.Context, run_dir: Path, device: str, cache_dir: Path | None, download: bool, networks: str,
          extend: bool, quiet: bool, executor: str, scheduler: str | None, workers: int, **kw) -> None:
    """Train every network of a study into RUN_DIR; rerun to resume.

    With no study options, an existing RUN_DIR's own plan is resumed."""
    from probe.analysis.accuracies import format_table, read_run_metrics
    from probe.analysis.sanity import run_findings, warning_lines
    from probe.execution.sweep import run_study
    from probe.execution.train import resolve_device

    planned_here = study_given(ctx) or not Run(run_dir).plan.exists()
    study = study_from_options(kw) if planned_here else read_plan(run_dir)[0]
    only = [n.strip() for n in networks.split(",") if n.strip()] or None
    if executor == "dask":
        from probe.execution.distributed import dask_client, run_study_dask

        if not scheduler:
            resolve_device(device)  # the LocalCluster's workers are this machine: check the device here
        with dask_client(scheduler, workers) as client:
            result = run_study_dask(client, run_dir, study, device, cache_dir, not quiet, only, extend,
                                    download=download)
        where = f"dask: {scheduler or f'LocalCluster of {workers} workers'}"
    else:
        dev = resolve_device(device)
        result = run_study(run_dir, study, dev, cache_dir, download, progress=not quiet, only=only, extend=extend)
        where = f"device {dev}"
    click.echo(f"trained {len(result.trained)}, already done {len(result.skipped)}, failed {len(result.failed)}, "
               f"blocked {len(result.blocked)} ({where})")
    for nid, err in result.failed.items():
        click.echo(f"failed  {nid}: {err}", err=True)
    for nid, dep in result.blocked.items():
        click.echo(f"blocked {nid}: needs {dep}", err=True)
    accuracies = read_run_metrics(run_dir)
    table = accuracies.labelled()
    click.echo(format_table(table))
    # bases at chance, not converged, ...: said before any analysis
    for line in warning_lines(run_findings(accuracies), table):
        click.echo(line)
    # a recipe whose epochs are few for it, said where the run was planned from options ('probe plan' says it before
    # anything trains); never before a refusal, which stays one line
    if planned_here and (advice := budget_advice(study.recipe)):
        click.echo(advice)
    if result.failed or result.blocked:
        sys.exit(1)

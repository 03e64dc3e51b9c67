"""``probe plan``: its options and its body."""

from __future__ import annotations

import json
from pathlib import Path

import click

from probe.cli.options import errors_as_messages, study_from_options, study_options


@click.command()
@study_options
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Decoded-dataset cache. Default: $PROBE_CACHE or ~/.cache/probe.")
@click.option("--json", "as_json", is_flag=True, default=False, help="Print plan.json instead of a table.")
@errors_as_messages
def plan(cache_dir: Path | None, as_json: bool, **kw) -> None:
    """Print the networks a study would train, in dependency order, without training, then each split's tasks: their
    classes and how many images each trains, validates and tests on."""
    from probe.execution.sweep import plan_study
    from probe.planning.plan import format_task_summaries, plan_to_dict, task_summaries

    study = study_from_options(kw)
    networks, arrays = plan_study(None, study, cache_dir)
    if as_json:
        click.echo(json.dumps(plan_to_dict(study, networks), indent=2))
        return
    for p in networks:
        click.echo(f"{p.spec.id:<40} {'<- ' + ', '.join(p.depends_on) if p.depends_on else ''}")
    click.echo(f"{len(networks)} networks")
    click.echo("\n".join(format_task_summaries(task_summaries(networks, arrays))))

"""``probe plan``: its options and its body."""

from __future__ import annotations

import json
from pathlib import Path

import click

from probe.cli.options import errors_as_messages, study_from_options, study_options
from probe.planning.plan import PlannedNetwork, Study, plan_to_dict
from probe.planning.summary import (
    budget_advice,
    format_cuts,
    format_networks,
    format_source,
    format_task_summaries,
    planned_cuts,
    task_summaries,
)
from probe.specs.spec import SourceSpec


@click.command()
@study_options
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Decoded-dataset cache. Default: $PROBE_CACHE or ~/.cache/probe.")
@click.option("--json", "as_json", is_flag=True, default=False, help="Print plan.json instead of a table.")
@errors_as_messages
def plan(cache_dir: Path | None, as_json: bool, **kw) -> None:
    """Print the networks a study would train, in dependency order, without training, then the layer each cut
    follows, the source network's file and what of it was checked, each split's tasks (their classes and how many
    images each trains, validates and tests on), and a line of advice where the epochs are few for the recipe."""
    from probe.execution.sweep import plan_study

    study = study_from_options(kw)
    networks, arrays = plan_study(None, study, cache_dir)
    if as_json:
        click.echo(json.dumps(plan_to_dict(study, networks), indent=2))
        return
    click.echo("\n".join(plan_lines(study, networks, arrays)))


def plan_lines(study: Study, networks: list[PlannedNetwork], arrays) -> list[str]:
    """The plan as lines for a terminal; only a network's line starts with its id."""
    lines = [*format_networks(networks), f"{len(networks)} networks"]
    checked = None
    if study.source is not None:
        lines += format_source(study.source)
        checked = _source_checks(study.source, networks, planned_cuts(networks))
    lines += format_cuts(networks, checked)
    lines += format_task_summaries(task_summaries(networks, arrays))
    advice = budget_advice(study.recipe)
    return lines + ([advice] if advice else [])


def _source_checks(source: SourceSpec, networks: list[PlannedNetwork], cuts: list[int]) -> dict[int, int] | None:
    """How many of the source file's tensors each cut copies, as checked for the plan's SnB networks (None: the
    plan has none)."""
    from probe.planning.source import checked_per_cut

    spec = next((p.spec for p in networks if p.spec.source_network is not None), None)
    return None if spec is None else checked_per_cut(source, spec, cuts)

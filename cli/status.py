"""``probe status``: its options and its body."""

from __future__ import annotations

from pathlib import Path

import click

from probe.cli.options import errors_as_messages


@click.command()
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@errors_as_messages
def status(run_dir: Path) -> None:
    """Say which networks of RUN_DIR are done, running, interrupted, failed, missing or corrupt (a file of the
    network cannot be used, or its weights file names another network or other settings; 'probe train' trains it
    again)."""
    from collections import Counter

    from probe.planning.plan import read_plan
    from probe.storage.state import STATES, network_state

    # the plan says which networks there are, their files what became of them (storage sits below planning)
    _, plan = read_plan(run_dir)
    rows = [(p.spec, *network_state(run_dir, p.spec)) for p in plan]
    for spec, state, detail in rows:
        click.echo(f"{spec.id:<40} {state:<12} {detail}")
    counts = Counter(state for _, state, _ in rows)
    click.echo(", ".join(f"{counts[s]} {s}" for s in STATES))

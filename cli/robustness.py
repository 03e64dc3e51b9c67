"""``probe robustness``: its options and its body."""

from __future__ import annotations

from pathlib import Path

import click

from probe.cli.options import errors_as_messages


@click.command()
@click.argument("run_dir", type=click.Path(file_okay=False, path_type=Path))
@click.option("--device", default="auto", show_default=True, help="auto, cpu, cuda or cuda:N.")
@click.option("--cache-dir", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Decoded-dataset cache. Default: $PROBE_CACHE or ~/.cache/probe.")
@click.option("--quiet", is_flag=True, default=False, help="No progress bar.")
@errors_as_messages
def robustness(run_dir: Path, device: str, cache_dir: Path | None, quiet: bool) -> None:
    """Reset each layer of every trained base network of RUN_DIR, one at a time, to its initial weights and to
    random ones, and test it without training (Zhang, Bengio & Singer 2022); 'probe analyze' reports it beside the
    co-adaptation drop. Forward passes only; rerun to resume."""
    from probe.execution.robustness import robustness_run
    from probe.execution.train import resolve_device

    result = robustness_run(run_dir, resolve_device(device), cache_dir, progress=not quiet)
    click.echo(f"wrote {len(result['written'])}, already current {len(result['skipped'])}, "
               f"not trained yet {len(result['untrained'])} base networks' layer resets")

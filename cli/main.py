"""The ``probe`` command: the group and its subcommands, each in a module of its own (``cli/train.py``,
``cli/extract.py``, ...) holding its options and its body; the options they share are ``cli/options.py``'s.
Thin wrappers that parse options into specs and call the library."""

from __future__ import annotations

import click

from probe.cli.analyze import analyze
from probe.cli.archs import archs
from probe.cli.extract import extract
from probe.cli.plan import plan
from probe.cli.robustness import robustness
from probe.cli.status import status
from probe.cli.train import train


@click.group()
@click.version_option(package_name="probe-transfer")
def main() -> None:
    """Layer-by-layer transferability of deep features (Yosinski et al. 2014): train, extract, analyze."""


main.add_command(train)
main.add_command(plan)
main.add_command(status)
main.add_command(extract)
main.add_command(analyze)
main.add_command(robustness)
main.add_command(archs)


if __name__ == "__main__":
    main()

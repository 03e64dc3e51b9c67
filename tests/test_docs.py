"""The manual builds strictly, and its references come from the code: every click option's help text is in the
command-line reference and a public function's docstring in the API reference, though neither is written in docs/.
Skipped where the docs extra is not installed (make docs installs it)."""

from __future__ import annotations

import html
import re
import subprocess
import sys

import click
import pytest
from conftest import REPO_ROOT

pytest.importorskip("mkdocs")
pytest.importorskip("mkdocs_click")
pytest.importorskip("mkdocstrings")

# Help text that markdown would render otherwise than it is written is left out of the comparison
MARKUP = re.compile(r"[`*_<>\[\]]")


def _text(page) -> str:
    """A built page's text: tags dropped, entities decoded, whitespace collapsed."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", page.read_text())).split())


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    site = tmp_path_factory.mktemp("site")
    result = subprocess.run([sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
                            cwd=REPO_ROOT, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-5000:]
    return site


def test_every_options_help_is_in_the_command_line_reference(site):
    from probe.cli.main import main

    text = _text(site / "cli" / "index.html")
    checked = 0
    for name, command in main.commands.items():
        assert f"probe {name}" in text
        for param in command.params:
            if isinstance(param, click.Option) and param.help and not MARKUP.search(param.help):
                assert " ".join(param.help.split()) in text, f"probe {name} {param.opts[0]}"
                checked += 1
    assert checked > 50


def test_the_api_reference_is_the_docstrings(site):
    import probe

    function = probe.open_store
    page = site / "api" / function.__module__.replace(".", "/") / "index.html"
    summary = " ".join(function.__doc__.split("\n\n")[0].split())
    assert summary in _text(page)

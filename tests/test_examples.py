"""The scripts in examples/ run on a small run's outputs as the manual shows them: a trained run, its activation
store (both tasks' images) and its analysis."""

from __future__ import annotations

import subprocess
import sys

import pytest
from conftest import REPO_ROOT, TINY_STUDY, invoke

EXAMPLES = sorted((REPO_ROOT / "examples").glob("*.py"))


@pytest.fixture(scope="module")
def analyzed_run(tmp_path_factory, cache_dir):
    """One seed, cut 1, every variant; extracted on both tasks' images and analyzed."""
    run_dir = tmp_path_factory.mktemp("examples-run")
    for args in (("train", run_dir, *TINY_STUDY, "--cuts", "1", "--seeds", "0"),
                 ("extract", run_dir, "--probe-set", "both", "--per-class", "10", "--quiet"),
                 ("analyze", run_dir)):
        result = invoke(cache_dir, *args)
        assert result.exit_code == 0, result.output
    return run_dir


def test_there_are_examples():
    assert {p.name for p in EXAMPLES} >= {"cka_layers.py", "probe_layers.py", "decomposition_table.py",
                                          "plot_layers.py"}


@pytest.mark.parametrize("script", EXAMPLES, ids=lambda p: p.name)
def test_example_runs_on_a_run(script, analyzed_run, tmp_path):
    result = subprocess.run([sys.executable, str(script), str(analyzed_run)], cwd=tmp_path, capture_output=True,
                            text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip(), f"{script.name} printed nothing"
    figures = list(tmp_path.glob("*.png"))
    assert all(f.read_bytes().startswith(b"\x89PNG") for f in figures)
    if script.name == "plot_layers.py":
        assert figures, "plot_layers.py wrote no figure"


"""The reproduction report: its numbers come from the committed result tables."""

from __future__ import annotations

import csv
import json
import re
import shutil

import pytest
import torch

from probe.execution.sweep import run_study
from probe.planning.plan import Study
from probe.specs.spec import ArchSpec, DataSpec, Recipe
from probe.studies.reproduction import DOCS, busy_seconds, collect, render


def test_the_committed_report_is_rendered_from_the_committed_tables():
    """docs/reproduction.md is exactly what the template and the tables under docs/reproduction/ render to."""
    assert (DOCS / "reproduction.md").read_text() == render(DOCS)


def test_the_template_types_no_numbers_of_its_own():
    """Every result the discussion quotes is a placeholder filled from a table, never a typed number."""
    prose = re.sub(r"\{\{[^}]*\}\}", "", (DOCS / "reproduction.in.md").read_text())
    prose = re.sub(r"`[^`]*`|    .*", "", prose)  # code and commands (widths, learning rates) are settings
    assert re.findall(r"\d\.\d", prose) == []


def test_the_readme_links_the_report():
    assert "docs/reproduction.md" in (DOCS.parent / "README.md").read_text()


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, cache_dir):
    run = tmp_path_factory.mktemp("run") / "run"
    study = Study(DataSpec("synthetic", train_per_class=30), ArchSpec("caffenet-small", "kaiming", {"width": 0.125}),
                  Recipe(epochs=2, batch_size=32), seeds=(0, 1), cuts=(1, 3))
    run_study(run, study, torch.device("cpu"), cache_dir, progress=False)
    return run


@pytest.fixture(scope="module")
def docs(tmp_path_factory, tiny_run):
    run = tiny_run
    docs = tmp_path_factory.mktemp("docs")
    collect(run, "tiny", "Tiny", ["probe train RUN --dataset synthetic"], docs)
    return docs


def test_collect_copies_tables_and_figures_but_no_weights(docs):
    folder = docs / "reproduction" / "tiny"
    names = {p.name for p in folder.rglob("*") if p.is_file()}
    assert {"decomposition.csv", "relative.csv", "accuracies.csv", "claims.json", "run.json",
            "figure3.png"} <= names
    assert not [n for n in names if n.endswith((".safetensors", ".zarr", ".json")) and n not in
                ("claims.json", "run.json")]


def test_rendered_numbers_are_the_table_numbers(docs):
    (docs / "reproduction.in.md").write_text("# Report\n\nAnB at n=3: {{value:tiny:relative:random:AnB:3}}.\n"
                                             "Claim 5 {{value:tiny:claim:5}}.\n\n{{section:tiny}}\n")
    text = render(docs)
    with (docs / "reproduction" / "tiny" / "relative.csv").open() as f:
        row = next(r for r in csv.DictReader(f) if (r["split"], r["variant"], r["n"]) == ("random", "AnB", "3"))
    quoted = f"{float(row['mean']):.3f} [{float(row['low']):.3f}, {float(row['high']):.3f}] ({row['replicates']})"
    assert f"AnB at n=3: {quoted}." in text
    assert re.search(r"Claim 5 (holds|does not hold|undecided)\.", text)
    assert "## Tiny" in text and "| 3 |" in text and "probe train RUN --dataset synthetic" in text
    assert "{{" not in text


def test_a_placeholder_for_unknown_results_is_named(docs):
    from probe.errors import ProbeError

    (docs / "reproduction.in.md").write_text("{{section:cifar}}\n")
    with pytest.raises(ProbeError, match="'cifar'"):
        render(docs)


@pytest.mark.parametrize("placeholder", ["{{value:tiny:relative:random:AnB:9}}", "{{value:tiny:claim:12}}",
                                         "{{value:tiny:epochs:nowhere}}", "{{value:tiny:relative:random}}"])
def test_a_placeholder_for_a_missing_number_is_named(docs, placeholder):
    from probe.errors import ProbeError

    (docs / "reproduction.in.md").write_text(f"x {placeholder}\n")
    with pytest.raises(ProbeError, match="no result 'tiny:"):
        render(docs)


@pytest.mark.parametrize("spans, expected", [
    ([], 0.0),
    ([(0.0, 10.0)], 10.0),
    ([(0.0, 10.0), (5.0, 12.0)], 12.0),  # two workers overlapping
    ([(0.0, 10.0), (2.0, 4.0)], 10.0),  # one span inside another
    ([(100.0, 110.0), (0.0, 10.0), (8.0, 20.0)], 30.0),  # a pause between sessions is not counted, order is free
    ([(0.0, 10.0), (12.0, 11.0)], 10.0),  # a span that ends before it starts (the clock was set back) counts nothing
])
def test_busy_seconds_counts_wall_time_covered_by_some_network(spans, expected):
    assert busy_seconds(spans) == expected


def test_wall_time_counts_every_session_and_says_when_it_cannot(docs, tiny_run, tmp_path):
    run_json = json.loads((docs / "reproduction" / "tiny" / "run.json").read_text())
    assert run_json["wall_hours"] is not None and run_json["wall_hours_is_lower_bound"] is False
    assert all(len(json.loads(p.read_text())["sessions"]) == 1 for p in tiny_run.rglob("metrics.json"))

    # a network resumed by a version that did not record its sessions: its earlier ones are unknown
    run = tmp_path / "run"
    shutil.copytree(tiny_run, run)
    path = next(run.rglob("metrics.json"))
    metrics = json.loads(path.read_text())
    del metrics["sessions"]
    path.write_text(json.dumps({**metrics, "resumed_at_epoch": 1}))
    collect(run, "tiny", "Tiny", ["probe train RUN --dataset synthetic"], tmp_path / "docs")
    assert json.loads((tmp_path / "docs" / "reproduction" / "tiny" / "run.json").read_text())[
        "wall_hours_is_lower_bound"] is True
    (tmp_path / "docs" / "reproduction.in.md").write_text("{{section:tiny}}\n")
    assert "at least " in render(tmp_path / "docs")


def test_recompute_from_the_committed_accuracies_gives_what_collect_wrote(docs, tmp_path):
    """The accuracy Dataset read back from accuracies.csv decomposes to the same tables as the run's own (two ways
    of arranging the accuracies agree), so the report can follow a change of the statistics without retraining."""
    from probe.studies.reproduction import DECOMPOSITION_TABLES, recompute

    folder = tmp_path / "tiny"
    shutil.copytree(docs / "reproduction" / "tiny", folder)
    for table in DECOMPOSITION_TABLES:
        (folder / table).unlink()
    recompute(folder)
    for table in DECOMPOSITION_TABLES:
        assert (folder / table).read_text() == (docs / "reproduction" / "tiny" / table).read_text(), table
    assert json.loads((folder / "run.json").read_text())["figures"] == \
        json.loads((docs / "reproduction" / "tiny" / "run.json").read_text())["figures"]
    with (folder / "decomposition.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert {r["over"] for r in rows} == {"seeds"} and {r["replicates"] for r in rows} <= {"0", "1", "2"}

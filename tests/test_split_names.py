"""A split file's name, shown wherever a report shows the split: tables, headings, warnings, claims, figure files and
accuracies.csv; network ids keep the path."""

from __future__ import annotations

import csv

from conftest import TINY_STUDY

from probe.analysis.accuracies import label_splits, read_run_metrics


def test_a_named_split_file_is_shown_by_its_name(tmp_path, cli, split_file):
    split = split_file({"A": [0, 1, 2, 3, 4], "B": [5, 6, 7, 8, 9], "name": "holdout-animals", "note": "a test"})
    run = tmp_path / "run"
    result = cli("train", run, *TINY_STUDY, "--split", split, "--cuts", "2", "--variants", "BnB,AnB", "--seeds", "0,1")
    assert result.exit_code == 0, result.output
    assert "split holdout-animals:" in result.output and "file:" not in result.output.split("trained")[1]
    assert all("split.json/init" in i for i in read_run_metrics(run).metrics)  # ids keep the path
    analyzed = cli("analyze", run)
    assert analyzed.exit_code == 0, analyzed.output
    out = run / "analysis"
    report = (out / "report.md").read_text()
    assert "### holdout-animals split" in report and "On the `holdout-animals` split" in report
    # the path appears only where the report says which file carries the name
    assert [line for line in report.splitlines() if "file:" in line] == [
        f"Split `{split}` is **holdout-animals**: a test."]
    figures = {p.name for p in (out / "figures").glob("*.png")}
    assert "figure2_holdout-animals.png" in figures and not any("file" in name for name in figures)
    with (out / "accuracies.csv").open() as f:
        assert {r["split"] for r in csv.DictReader(f)} == {"holdout-animals"}
    with (out / "per_class.csv").open() as f:
        assert {r["split"] for r in csv.DictReader(f)} == {"holdout-animals"}


def test_label_splits_leaves_unnamed_splits_and_other_datasets_alone():
    import xarray as xr

    ds = xr.Dataset({"x": ("split", [1, 2])}, coords={"split": ["random", "file:a.json"]})
    named = label_splits(ds, {"file:a.json": "a"})
    assert list(named["split"].values) == ["random", "a"]
    assert label_splits(ds, {}) is ds and label_splits(xr.Dataset({"y": ("n", [1])}), {"x": "y"})["y"].size == 1

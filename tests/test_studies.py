"""The committed studies beside the reproduction: the co-adaptation ladder and the initialization study, collected
from tiny synthetic runs and rendered as the report renders them."""

from __future__ import annotations

import csv
import json
import math

import pytest
from conftest import TINY_STUDY

from probe.analysis.initialization import Initialization
from probe.analysis.initialization import collect as collect_initialization
from probe.analysis.ladder import Ladder
from probe.analysis.ladder import collect as collect_ladder
from probe.analysis.reproduction import render
from probe.errors import ProbeError

SELFFER = [*TINY_STUDY, "--variants", "BnB", "--cuts", "2,5", "--seeds", "0,1"]


@pytest.fixture(scope="module")
def rungs(tmp_path_factory, cache_dir):
    from conftest import invoke

    root = tmp_path_factory.mktemp("ladder")
    out = []
    for per_class in (20, 40):
        run = root / f"synthetic-{per_class}"
        study = [*SELFFER]
        study[study.index("--train-per-class") + 1] = str(per_class)
        result = invoke(cache_dir, "train", run, *study)
        assert result.exit_code == 0, result.output
        out.append(run)
    return out


def test_the_ladder_has_one_row_per_rung_and_cut(rungs, tmp_path):
    dest = collect_ladder(list(reversed(rungs)), tmp_path)
    with (dest / "ladder.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [(r["rung"], r["n"]) for r in rows] == [("synthetic-20", "2"), ("synthetic-20", "5"),
                                                   ("synthetic-40", "2"), ("synthetic-40", "5")]  # by images seen
    assert {r["seeds"] for r in rows} == {"2"}
    small, large = rows[0], rows[2]
    assert int(large["images_seen"]) == 2 * int(small["images_seen"]) and int(large["parameters"]) > 0
    info = json.loads((dest / "ladder.json").read_text())
    assert [r["epochs"] for r in info["rungs"]] == [1, 1] and info["rungs"][0]["convergence"]["bases"] == 4
    assert (dest / "figures" / "ladder.png").stat().st_size > 0
    ladder = Ladder(dest)
    assert ladder.value("rungs") == "2" and "(2)" in ladder.value("drop", "synthetic-40", "5")
    with pytest.raises(ProbeError, match="drop:synthetic-40:3"):
        ladder.value("drop", "synthetic-40", "3")
    section = ladder.section()
    assert "make ladder LADDER_RUNGS=40:1" in section and "drop n=5" in section and "ladder.png" in section


def test_the_ladder_renders_in_the_report(rungs, tmp_path):
    collect_ladder(rungs, tmp_path)
    (tmp_path / "reproduction.in.md").write_text("# R\n\n{{section:ladder}}\n\nAt n = 5: "
                                                 "{{value:ladder:drop:synthetic-20:5}}.\n")
    text = render(tmp_path)
    assert "| `synthetic-20` |" in text and "At n = 5: " in text and "{{" not in text


@pytest.fixture(scope="module")
def init_runs(tmp_path_factory, cache_dir):
    from conftest import invoke

    root = tmp_path_factory.mktemp("init")
    out = []
    for init in ("gaussian", "kaiming"):
        run = root / f"synthetic-{init}"
        result = invoke(cache_dir, "train", run, *TINY_STUDY, "--variants", "RnB", "--cuts", "1,4", "--seeds", "0,1",
                        "--init", init)
        assert result.exit_code == 0, result.output
        out.append(run)
    return out


def test_the_initialization_study_reads_accuracy_and_the_training_loss(init_runs, tmp_path):
    dest = collect_initialization(init_runs, tmp_path)
    with (dest / "initialization.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert [(r["init"], r["n"]) for r in rows] == [("gaussian", "0"), ("gaussian", "1"), ("gaussian", "4"),
                                                   ("kaiming", "0"), ("kaiming", "1"), ("kaiming", "4")]
    for r in rows:
        assert float(r["ln_classes"]) == pytest.approx(math.log(5)) and float(r["chance"]) == pytest.approx(0.2)
        assert math.isfinite(float(r["first_loss"])) and math.isfinite(float(r["last_loss"]))
        assert r["networks"] == "4"  # 2 seeds x 2 directions, bases and RnB alike
    study = Initialization(dest)
    assert study.value("loss", "synthetic-gaussian", "4", "first") == f"{float(rows[2]['first_loss']):.3f}"
    assert "(2)" in study.value("relative", "synthetic-kaiming", "4")
    section = study.section()
    assert "train loss, epoch 1" in section and "`synthetic-gaussian`" in section


def test_the_ladder_shows_the_rungs_layer_resets_once_measured(rungs, tmp_path, cache_dir):
    import torch

    from probe.robustness import robustness_run

    robustness_run(rungs[0], torch.device("cpu"), cache_dir, progress=False)
    dest = collect_ladder(rungs, tmp_path)
    ladder = Ladder(dest)
    rows = {(r["rung"], r["n"]): r for r in ladder.rows}
    assert rows[("synthetic-20", "2")]["reset_initial"] != "" and rows[("synthetic-40", "2")]["reset_initial"] == ""
    assert float(ladder.value("reset", "synthetic-20", "5", "random")) >= 0
    assert "layer k reset" in ladder.section()

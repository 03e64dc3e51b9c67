"""The committed studies beside the reproduction: the co-adaptation ladder and the initialization study, collected
from tiny synthetic runs and rendered as the report renders them."""

from __future__ import annotations

import csv
import json
import math

import pytest
from conftest import TINY_STUDY

from probe.errors import ProbeError
from probe.studies.initialization import Initialization
from probe.studies.initialization import collect as collect_initialization
from probe.studies.ladder import Ladder
from probe.studies.ladder import collect as collect_ladder
from probe.studies.reproduction import render

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

    from probe.execution.robustness import robustness_run

    robustness_run(rungs[0], torch.device("cpu"), cache_dir, progress=False)
    dest = collect_ladder(rungs, tmp_path)
    ladder = Ladder(dest)
    rows = {(r["rung"], r["n"]): r for r in ladder.rows}
    assert rows[("synthetic-20", "2")]["reset_initial"] != "" and rows[("synthetic-40", "2")]["reset_initial"] == ""
    assert float(ladder.value("reset", "synthetic-20", "5", "random")) >= 0
    assert "layer k reset" in ladder.section()


def test_the_ladder_records_seeds_convergence_and_a_trend_that_recomputes_byte_for_byte(rungs, tmp_path):
    from probe.studies.ladder import derive

    dest = collect_ladder(rungs, tmp_path)
    with (dest / "ladder_seeds.csv").open() as f:
        seeds = list(csv.DictReader(f))
    assert {(r["rung"], r["seed"], r["n"]) for r in seeds} == {
        (f"synthetic-{k}", s, n) for k in (20, 40) for s in {r["seed"] for r in seeds} for n in ("2", "5")}
    assert len({r["seed"] for r in seeds}) == 2
    with (dest / "ladder.csv").open() as f:
        rows = list(csv.DictReader(f))
    # one-epoch rungs: the convergence measure cannot say they converged, and the table says so
    assert {r["converged"] for r in rows} == {"no"} and "width" in rows[0]
    assert "**no**" in Ladder(dest).section() and "No trend" in Ladder(dest).section()
    written = {p.name: p.read_bytes() for p in dest.glob("*.csv")}
    (dest / "trend.csv").unlink()
    derive(dest)
    assert {p.name: p.read_bytes() for p in dest.glob("*.csv")} == written


def _seed_rows(drops: dict, converged: dict | None = None) -> list[dict]:
    """ladder_seeds.csv rows as read back (strings): drops maps (per_class, width, epochs[, init sharing]) -> seed ->
    n -> drop; a rung's initial weights are shared unless the key says otherwise."""
    out = []
    for scale, by_seed in drops.items():
        per_class, width, epochs, sharing = (*scale, "shared")[:4]
        name = f"r{per_class}-w{width}-e{epochs}" + ("-independent" if sharing == "independent" else "")
        done = "yes" if (converged or {}).get(name, True) else "no"
        for seed, by_n in by_seed.items():
            for n, drop in by_n.items():
                out.append({"rung": name, "train_images_per_class": str(per_class), "train_images": str(5 * per_class),
                            "width": str(width), "epochs": str(epochs), "init_sharing": sharing,
                            "converged": done, "seed": seed,
                            "n": str(n), "base": "0.6", "drop": repr(float(drop))})
    return out


def test_the_trend_fits_each_seed_along_each_axis_and_predicts_at_the_paper_scale():
    """A drop exactly linear in log10 images (slope 0.01 per decade) and log2 width (0.002 per doubling), with a
    different offset per seed (its class halves): every seed's line has those slopes, the interval has no width,
    and the prediction is the line at the paper's scale. Unconverged rungs and shorter twins stay out."""
    import numpy as np

    from probe.studies.ladder import PAPER_IMAGES_PER_CLASS, axes, trend_rows

    def drop(per_class, width, seed):
        return 0.003 * seed + 0.01 * np.log10(per_class) + 0.002 * np.log2(width / 0.125)

    scales = [(225, 0.125, 30), (450, 0.125, 30), (900, 0.125, 20), (225, 0.25, 30), (225, 0.5, 30)]
    drops = {s: {str(seed): {5: drop(s[0], s[1], seed)} for seed in range(3)} for s in scales}
    drops[(4500, 0.125, 12)] = {str(seed): {5: 1.0} for seed in range(3)}  # not converged: left out
    drops[(450, 0.125, 10)] = {str(seed): {5: -1.0} for seed in range(3)}  # a shorter twin of a converged rung
    rows = _seed_rows(drops, {"r4500-w0.125-e12": False})
    found = axes(rows)
    assert found["data"]["rungs"] == ["r225-w0.125-e30", "r450-w0.125-e30", "r900-w0.125-e20"]
    assert found["width"]["rungs"] == ["r225-w0.125-e30", "r225-w0.25-e30", "r225-w0.5-e30"]
    trend = {(r["quantity"], r["axis"], r["n"]): r for r in trend_rows(rows)}
    data, width = trend[("slope", "data", 5)], trend[("slope", "width", 5)]
    assert data["mean"] == pytest.approx(0.01) and data["high"] - data["low"] == pytest.approx(0, abs=1e-9)
    assert width["mean"] == pytest.approx(0.002) and data["seeds"] == width["seeds"] == 3
    # the paper's images per class lie within the rungs' (900 the largest converged here); its width beyond them
    assert data["beyond"] == pytest.approx(np.log10(PAPER_IMAGES_PER_CLASS / 900))
    assert width["beyond"] == pytest.approx(1)
    expected = np.mean([drop(PAPER_IMAGES_PER_CLASS, 1.0, seed) for seed in range(3)])
    predicted = trend[("prediction", "paper", 5)]
    assert predicted["mean"] == pytest.approx(expected)
    assert 0.0274 <= predicted["paper_low"] < predicted["paper_high"] <= 0.0320  # the paper's drops at n = 5


def test_the_trend_rests_on_independent_rungs_where_they_exist():
    """A rung remeasured with independent initial weights takes the place of its shared twin of the same scale, even
    a shorter one; where no independent twin exists the shared rung stays."""
    from probe.studies.ladder import axes

    flat = {str(seed): {5: 0.0} for seed in range(3)}
    rows = _seed_rows({(225, 0.125, 30): flat, (450, 0.125, 30): flat, (900, 0.125, 20): flat,
                       (900, 0.125, 12, "independent"): flat})
    assert axes(rows)["data"]["rungs"] == ["r225-w0.125-e30", "r450-w0.125-e30", "r900-w0.125-e12-independent"]


def test_the_trend_interval_is_over_seeds_not_points():
    """Noise that differs between seeds widens the slope's interval; more rungs per seed do not make three seeds
    into more replicates (the interval's t has two degrees of freedom)."""
    from probe.studies.ladder import trend_rows

    slopes = {"0": 0.01, "1": 0.02, "2": 0.03}
    drops = {(k, 0.125, 30): {s: {5: b * k / 1000} for s, b in slopes.items()} for k in (225, 450, 900, 1800)}
    row = next(r for r in trend_rows(_seed_rows(drops)) if r["axis"] == "data" and r["n"] == 5)
    import numpy as np
    from scipy import stats

    per_seed = [np.polyfit(np.log10([k for k in (225, 450, 900, 1800)]), [b * k / 1000 for k in
                                                                               (225, 450, 900, 1800)], 1)[0]
                for b in slopes.values()]
    half = stats.t.ppf(0.975, 2) * np.std(per_seed, ddof=1) / np.sqrt(3)
    assert row["seeds"] == 3 and row["high"] - row["mean"] == pytest.approx(half)


def test_the_cka_profile_of_a_rung_with_a_store_is_one_below_the_cut(rungs, tmp_path, cache_dir):
    """BnB's layers up to its cut are baseB's own, frozen: their CKA with baseB's is 1; above the cut they are
    retrained, and the profile says how far they came back."""
    from conftest import invoke

    run = rungs[1]
    assert invoke(cache_dir, "extract", run, "--probe-set", "both").exit_code == 0
    assert invoke(cache_dir, "analyze", run).exit_code == 0
    dest = collect_ladder(rungs, tmp_path)
    with (dest / "cka_profile.csv").open() as f:
        rows = list(csv.DictReader(f))
    assert {r["rung"] for r in rows} == {"synthetic-40"} and "cka_rnb_baseb" not in rows[0]  # no RnB trained
    below = [float(r["cka_bnb_baseb"]) for r in rows if int(r["k"]) <= int(r["n"])]
    above = [float(r["cka_bnb_baseb"]) for r in rows if int(r["k"]) > int(r["n"])]
    assert below and all(v == pytest.approx(1.0, abs=1e-4) for v in below)
    assert above and all(-0.5 < v < 1.0001 for v in above)
    ladder = Ladder(dest)
    assert ladder.value("cka", "synthetic-40", "BnB", "2", "1") == "1.000"
    assert "The CKA profile of `synthetic-40`" in ladder.section()


def test_a_rung_grown_by_other_variants_counts_only_its_own_networks(rungs, tmp_path, cache_dir):
    """``make ladder-top`` plans AnB and more in a rung's run and trains only some of them: what it leaves untrained
    belongs to the stitching study, and the rung's own networks are all there."""
    import shutil

    from conftest import invoke

    run = tmp_path / "synthetic-20"
    shutil.copytree(rungs[0], run)
    study = [*SELFFER]
    study[study.index("--train-per-class") + 1] = "20"
    study[study.index("--variants") + 1] = "BnB,AnB"
    # --networks names one trained network: the plan grows by AnB at both cuts, and nothing new trains
    result = invoke(cache_dir, "train", run, *study, "--extend", "--networks", "random-s0/init0/B2B")
    assert result.exit_code == 0, result.output
    assert len(json.loads((run / "plan.json").read_text())["networks"]) == 20
    grown = json.loads((collect_ladder([run], tmp_path / "grown") / "ladder.json").read_text())["rungs"][0]
    own = json.loads((collect_ladder([rungs[0]], tmp_path / "own") / "ladder.json").read_text())["rungs"][0]
    assert grown["networks_done"] == grown["networks_planned"] == 12 and grown["missing"] == []
    assert {k: v for k, v in grown.items() if k not in ("run", "study")} == \
        {k: v for k, v in own.items() if k not in ("run", "study")}


def test_a_rung_added_to_the_committed_ladder_gives_the_bytes_of_collecting_them_all(rungs, tmp_path):
    """``ladder --add``: the other rungs' run directories are gone, their committed rows stay as they were."""
    together = collect_ladder(rungs, tmp_path / "together")
    written = {p.relative_to(together): p.read_bytes() for p in together.rglob("*.csv")}
    json_before = json.loads((together / "ladder.json").read_text())
    dest = collect_ladder([rungs[0]], tmp_path / "together", add=True)  # replaces synthetic-20, keeps synthetic-40
    assert {p.relative_to(dest): p.read_bytes() for p in dest.rglob("*.csv")} == written
    assert json.loads((dest / "ladder.json").read_text()) == json_before
    with pytest.raises(ProbeError, match="no collected ladder to add to"):
        collect_ladder([rungs[0]], tmp_path / "empty", add=True)


def test_rungs_of_one_scale_keep_their_order_whichever_is_collected_again(rungs, tmp_path):
    """Two rungs with the same images seen and size (as the full-data rung's two initializations) are ordered by
    what they are, not by which was collected last."""
    import shutil

    twin = tmp_path / "synthetic-20-twin"
    shutil.copytree(rungs[0], twin)
    together = collect_ladder([rungs[0], twin, rungs[1]], tmp_path / "together")
    written = {p.relative_to(together): p.read_bytes() for p in together.rglob("*.csv")}
    reversed_ = collect_ladder([rungs[1], twin, rungs[0]], tmp_path / "reversed")
    assert {p.relative_to(reversed_): p.read_bytes() for p in reversed_.rglob("*.csv")} == written
    again = collect_ladder([rungs[0]], tmp_path / "together", add=True)
    assert {p.relative_to(again): p.read_bytes() for p in again.rglob("*.csv")} == written
    # at one scale the paper's design comes first, whatever the names (the committed full-data rungs' order)
    from probe.studies.ladder import _place

    scale = {"images_seen": 270000, "parameters": 257461}
    shared = ({**scale, "name": "cifar10-5000", "init_sharing": "shared"}, [], [])
    independent = ({**scale, "name": "cifar10-5000-independent", "init_sharing": "independent"}, [], [])
    assert sorted([shared, independent], key=_place) == [independent, shared]


@pytest.fixture(scope="module")
def arm_run(tmp_path_factory, cache_dir):
    """A tiny arm of the recipe experiment: the selffer alone at cuts 3, 5, 7, two seeds, with the convergence
    check."""
    from conftest import TINY_STUDY, invoke

    run = tmp_path_factory.mktemp("recipe") / "P-tiny"
    result = invoke(cache_dir, "train", run, *TINY_STUDY, "--variants", "BnB", "--cuts", "3,5,7", "--seeds", "0,1",
                    "--epochs", "2", "--check-convergence")
    assert result.exit_code == 0, result.output
    return run


def test_the_recipe_arm_collects_drops_losses_cut_records_and_curves(arm_run, tmp_path):
    import numpy as np

    from probe.analysis.render import read_table
    from probe.studies.recipe import Recipe, collect, dip, signature

    dest = collect([arm_run], tmp_path)
    rows = read_table(dest / "recipe.csv")
    assert [r["n"] for r in rows] == ["3", "5", "7"] and {r["arm"] for r in rows} == {"P-tiny"}
    for r in rows:  # every quantity measured: the networks of this probe record them all
        for column in ("drop_mean", "loss_diff_mean", "bnb_train_loss", "base_train_eval_loss", "bnb_scale",
                       "base_scale"):
            assert np.isfinite(float(r[column])), column
    assert np.isfinite(float(rows[0]["bnb_dead_next"])) and rows[-1]["bnb_dead_next"] in ("", "nan")  # fc8: none
    curves = read_table(dest / "curves.csv")
    recipe = Recipe(dest)
    info = recipe.info["arms"][0]
    drawn = {c["network"] for c in curves}
    assert "base" in drawn and drawn <= {"base", "B3B", "B5B", "B7B"} and max(float(c["fraction"]) for c in
                                                                              curves) == 1.0
    for n in {3, 5, 7} - {int(c[1:-1]) for c in drawn - {"base"}}:  # a cut left out: its selffers never trained
        assert {f"random-s{s}/init{s}/{v}" for s in (0, 1) for v in (f"B{n}B", f"A{n}A")} <= set(info["at_chance"])
    assert (dest / "figures" / "curves_P-tiny.png").exists()
    # a seed whose longer bases are both at chance measured no gain (the check leaves such pairs out)
    dead = sum(all(f"random-s{s}/init{s}/base{t}-long" in info["at_chance"] for t in "AB") for s in (0, 1))
    assert info["convergence_gain"]["replicates"] == 2 - dead
    assert info["converged"] in (("yes", "no") if dead < 2 else ("unchecked",))
    section = recipe.section()
    assert "`P-tiny`" in section and "curves_P-tiny.png" in section
    assert "| dip | signature |" in section and f"| {info['dip']} | {info['signature']} |" in section
    assert recipe.value("dip", "P-tiny") == info["dip"] and "[" in recipe.value("drop", "P-tiny", "5")
    assert float(recipe.value("base", "P-tiny", "val_loss")) > 0
    # the verdicts, on hand-made rows: a clear dip with an underfit selffer, and an arm whose bases still improve
    made = [{"n": n, "drop_mean": d, "drop_low": d - 0.01, "bnb_mean": 0.7 - d, "loss_diff_low": 0.1,
             "loss_diff_high": 0.3} for n, d in ((3, 0.0), (5, 0.03), (7, 0.0))]
    assert dip(made, "yes") == "yes" and signature(made, "yes") == "yes"
    assert dip(made, "no") == "not converged"
    made[1]["drop_low"] = -0.01
    assert dip(made, "yes") == "no"
    assert dip(made, "yes", ["baseB of split random is at or near chance"]) == "voided"
    assert signature(made, "yes", ["baseB of split random is at or near chance"]) == "voided"


def test_a_recipe_arm_names_its_networks_at_chance_and_voids_its_verdicts(arm_run, tmp_path):
    """A network that never trained is named, cut networks and longer bases too, and a base at chance voids the
    arm's verdicts with the report's own warning: here baseB of seed 1 is made to score chance."""
    import shutil

    from probe.studies.recipe import Recipe, collect

    run = tmp_path / "P-dead"
    shutil.copytree(arm_run, run)
    metrics = run / "networks" / "random-s1" / "init1" / "baseB" / "metrics.json"
    record = json.loads(metrics.read_text())
    record["test_acc"] = record["test_balanced_acc"] = 0.2
    metrics.write_text(json.dumps(record))
    info = Recipe(collect([run], tmp_path / "docs")).info["arms"][0]
    assert "random-s1/init1/baseB" in info["at_chance"]
    assert any("baseB" in w and "chance" in w for w in info["voided"])
    # decided by neither: the tiny arm's longer bases gain, which takes precedence, else the warning voids
    assert info["dip"] == info["signature"] == ("not converged" if info["converged"] == "no" else "voided")
    section = Recipe(tmp_path / "docs" / "reproduction" / "recipe").section()
    assert "networks at chance: " in section and "random-s1/init1/baseB" in section
    assert Recipe(tmp_path / "docs" / "reproduction" / "recipe").value("chance", "P-dead") == \
        f"{len(info['at_chance'])} of {info['networks_planned']}"
    # and it is left out of the base's training-loss curve, which is all that changed: a curve no network followed
    from probe.analysis.render import read_table

    healthy = read_table(collect([arm_run], tmp_path / "healthy") / "curves.csv")
    dead = read_table(tmp_path / "docs" / "reproduction" / "recipe" / "curves.csv")
    curve = {True: {}, False: {}}
    for is_dead, rows in ((False, healthy), (True, dead)):
        for r in rows:
            curve[is_dead].setdefault(r["network"], []).append(float(r["train_loss"]))
    assert curve[True]["B3B"] == curve[False]["B3B"] and curve[True]["base"] != curve[False]["base"]


def _seeds(run, seeds: list[int]):
    """The part of ``run`` (a RunMetrics) that trained ``seeds``, as a run of those seeds alone would hold it."""
    from probe.analysis.accuracies import RunMetrics

    keep = [s for s in run.specs if s.split_seed in seeds]
    longer = tuple(s for s in run.longer if s.split_seed in seeds)
    return RunMetrics({**run.study, "seeds": seeds}, keep, run.layers,
                      {s.id: run.metrics[s.id] for s in (*keep, *longer)}, longer, run.split_labels)


def test_records_hold_what_the_analysis_reads_of_a_run_and_name_a_damaged_file(arm_run, tmp_path):
    import dataclasses
    import gzip

    from probe.analysis.accuracies import read_run_metrics
    from probe.analysis.records import read_records, write_records

    run = read_run_metrics(arm_run)
    write_records(run, tmp_path / "a.json.gz")
    write_records(read_records(tmp_path / "a.json.gz"), tmp_path / "b.json.gz")
    back = read_records(tmp_path / "a.json.gz")
    assert back == dataclasses.replace(run, study=json.loads(json.dumps(run.study)))  # tuples stored as lists
    assert (tmp_path / "a.json.gz").read_bytes() == (tmp_path / "b.json.gz").read_bytes()  # no time in the file
    (tmp_path / "c.json.gz").write_bytes((tmp_path / "a.json.gz").read_bytes()[:100])
    with pytest.raises(ProbeError, match=r"cannot read the records .*c\.json\.gz.*restore it") as e:
        read_records(tmp_path / "c.json.gz")
    assert "\n" not in str(e.value)
    # whole JSON that is not what records hold: metrics not one object per network, a newer format
    stored = json.loads(gzip.decompress((tmp_path / "a.json.gz").read_bytes()))
    for name, change, message in (("d", {"metrics": []}, r"d\.json\.gz is damaged .*metrics"),
                                  ("e", {"version": 99, "probe": "9.0"}, r"version 99.*upgrade probe")):
        (tmp_path / f"{name}.json.gz").write_bytes(gzip.compress(json.dumps({**stored, **change}).encode()))
        with pytest.raises(ProbeError, match=message):
            read_records(tmp_path / f"{name}.json.gz")
    # a file of the same content, written by another probe (or Python, or zlib), is left as it is
    other = gzip.compress(json.dumps({**stored, "probe": "0.0-other"}).encode(), compresslevel=1)
    (tmp_path / "f.json.gz").write_bytes(other)
    write_records(run, tmp_path / "f.json.gz")
    assert (tmp_path / "f.json.gz").read_bytes() == other


def test_seeds_merged_from_two_runs_give_the_arm_of_one_run_that_trained_them_all(arm_run, tmp_path):
    """What ``recipe --merge`` rests on: the committed records of seed 0 and a later run of seed 1 give the rows of
    the run that trained both; runs of other studies are refused, naming what differs."""
    import dataclasses

    from probe.analysis.accuracies import read_run_metrics
    from probe.analysis.records import merge, write_records
    from probe.analysis.render import read_table
    from probe.studies.recipe import RECORDS, arm, collect

    run = read_run_metrics(arm_run)
    _, rows, curves = arm(run, "P-tiny", "whole")
    _, merged_rows, merged_curves = arm(merge([_seeds(run, [0]), _seeds(run, [1])], ["s0", "s1"]), "P-tiny", "m")
    assert merged_rows == rows and merged_curves == curves
    other = _seeds(run, [1])
    other = dataclasses.replace(other, study={**other.study, "cuts": [3]})
    with pytest.raises(ProbeError, match="cannot merge s1 into s0: their studies differ in cuts, not only"):
        merge([_seeds(run, [0]), other], ["s0", "s1"])
    explicit = [dataclasses.replace(r, study={**r.study, "init_seeds": [r.study["seeds"][0] + 10]})
                for r in (_seeds(run, [0]), _seeds(run, [1]))]
    with pytest.raises(ProbeError, match="differ in init_seeds"):  # the pairs of seeds and init seeds: refused
        merge(explicit, ["s0", "s1"])
    with pytest.raises(ProbeError, match="other layers"):
        merge([_seeds(run, [0]), dataclasses.replace(_seeds(run, [1]), layers=("x",))], ["s0", "s1"])
    # a network finished in both: the later run's is kept; one the later run left unfinished keeps the earlier's
    some = next(s.id for s in run.specs if s.split_seed == 0)
    later = dataclasses.replace(_seeds(run, [0]), metrics={**_seeds(run, [0]).metrics,
                                                           some: {**run.metrics[some], "test_acc": 0.5}})
    assert merge([_seeds(run, [0]), later], ["a", "b"]).metrics[some]["test_acc"] == 0.5
    unfinished = dataclasses.replace(later, metrics={**later.metrics, some: {}})
    assert merge([_seeds(run, [0]), unfinished], ["a", "b"]).metrics[some] == run.metrics[some]
    # seeds merged in either order give the networks in one run's order
    assert merge([_seeds(run, [1]), _seeds(run, [0])], ["s1", "s0"]).specs == \
        merge([_seeds(run, [0]), _seeds(run, [1])], ["s0", "s1"]).specs
    # through the collector: the whole run, then its seed 0 alone committed and seed 1 merged into it
    whole = collect([arm_run], tmp_path / "whole")
    assert (whole / RECORDS / "P-tiny.json.gz").exists()
    folder = tmp_path / "part" / "reproduction" / "recipe" / RECORDS
    write_records(_seeds(run, [0]), folder / "P-tiny.json.gz")
    collect([folder / "P-tiny.json.gz"], tmp_path / "part")
    write_records(_seeds(run, [1]), tmp_path / "later" / "P-tiny.json.gz")
    part = collect([tmp_path / "later" / "P-tiny.json.gz"], tmp_path / "part", merge_into=True, add=True)
    for table in ("recipe.csv", "curves.csv"):
        assert (part / table).read_bytes() == (whole / table).read_bytes()
    with pytest.raises(ProbeError, match="arm P-tiny has no committed records to merge"):
        collect([arm_run], tmp_path / "nothing", merge_into=True)
    with pytest.raises(ProbeError, match="both name arm P-tiny: collect one source an arm"):
        collect([arm_run, folder / "P-tiny.json.gz"], tmp_path / "twice")
    # an arm collected again with --add keeps its place in the tables; an arm new to them goes last
    for name in ("P-one", "P-two", "P-three"):
        write_records(_seeds(run, [0]), tmp_path / "arms" / f"{name}.json.gz")
    order = tmp_path / "order"
    collect([tmp_path / "arms" / "P-one.json.gz", tmp_path / "arms" / "P-two.json.gz"], order)
    write_records(run, tmp_path / "again" / "P-one.json.gz")
    dest = collect([tmp_path / "again" / "P-one.json.gz", tmp_path / "arms" / "P-three.json.gz"], order, add=True)
    assert [info["name"] for info in json.loads((dest / "recipe.json").read_text())["arms"]] == \
        ["P-one", "P-two", "P-three"]
    assert list(dict.fromkeys(r["arm"] for r in read_table(dest / "recipe.csv"))) == ["P-one", "P-two", "P-three"]
    assert {r["drop_seeds"] for r in read_table(dest / "recipe.csv") if r["arm"] == "P-one"} == {"2"}


def test_recollect_gives_the_committed_tables_again_from_the_records_alone(arm_run, tmp_path, monkeypatch):
    """``recipe --recollect``: the run directory gone, every arm is collected again from its records, byte for
    byte; and an arm collected whole without the others takes only its own records."""
    import shutil

    from click.testing import CliRunner

    from probe.studies import recipe as recipe_module
    from probe.studies import reproduction

    run = tmp_path / "runs" / "P-tiny"
    shutil.copytree(arm_run, run)
    monkeypatch.setattr(reproduction, "committed_recipe_records",
                        lambda: recipe_module.committed_records(tmp_path / "docs"))
    monkeypatch.setattr(reproduction, "collect_recipe",
                        lambda *a, **k: recipe_module.collect(*a, docs=tmp_path / "docs", **k))
    runner = CliRunner()
    result = runner.invoke(reproduction.main, ["recipe", str(run)])
    assert result.exit_code == 0, result.output
    dest = tmp_path / "docs" / "reproduction" / "recipe"
    before = {p.relative_to(dest): p.read_bytes() for p in dest.rglob("*") if p.is_file()}
    shutil.rmtree(run)
    result = runner.invoke(reproduction.main, ["recipe", "--recollect"])
    assert result.exit_code == 0, result.output
    # recipe.json too: the arm still says which run directory it came from
    assert {p.relative_to(dest): p.read_bytes() for p in dest.rglob("*") if p.is_file()} == before
    result = runner.invoke(reproduction.main, ["recipe", "--recollect", str(dest)])
    assert result.exit_code != 0 and "name no source" in result.output


def test_an_arm_where_nothing_trained_draws_no_curve_and_shows_no_estimate(arm_run, tmp_path):
    """An arm's pilot base alone, at chance: no curve of a network that never trained, '-' where nothing was
    measured, and its verdict voided by the report's chance warning."""
    import shutil

    from probe.studies.recipe import Recipe, collect

    run = tmp_path / "P-dead-pilot"
    shutil.copytree(arm_run, run)
    for metrics in sorted((run / "networks").rglob("metrics.json")):
        if metrics.parent.name != "baseB" or "random-s0" not in str(metrics):
            shutil.rmtree(metrics.parent)  # not trained: the pilot trained seed 0's baseB alone
        else:
            record = json.loads(metrics.read_text())
            record["test_acc"] = record["test_balanced_acc"] = 0.2
            metrics.write_text(json.dumps(record))
    dest = collect([run], tmp_path / "docs")
    recipe = Recipe(dest)
    assert not list((dest / "figures").iterdir()) and "curves_P-dead-pilot" not in recipe.section()
    info = recipe.info["arms"][0]
    assert info["at_chance"] == ["random-s0/init0/baseB"] and info["dip"] == "voided"
    assert recipe.value("drop", "P-dead-pilot", "5") == "-" and recipe.value("chance", "P-dead-pilot") == "1 of 1"


@pytest.fixture(scope="module")
def classes_rungs(tmp_path_factory, cache_dir):
    """Two tiny rungs of the classes ladder: the selffer alone at cuts 3 and 5, two seeds, with the convergence check,
    at 2 and 4 classes a task (a nested draw: the smaller rung's classes inside the larger one's)."""
    from conftest import TINY_STUDY, invoke

    root = tmp_path_factory.mktemp("classes")
    for k in (2, 4):
        result = invoke(cache_dir, "train", root / f"k{k}", *TINY_STUDY, "--variants", "BnB", "--cuts", "3,5",
                        "--seeds", "0,1", "--epochs", "2", "--check-convergence", "--classes-per-task", str(k))
        assert result.exit_code == 0, result.output
    return [root / "k2", root / "k4"]


def test_the_classes_ladder_collects_its_rungs_a_trend_and_a_section(classes_rungs, tmp_path):
    import json

    import numpy as np

    from probe.analysis.render import read_table
    from probe.studies.classes import Classes, collect

    dest = collect(list(reversed(classes_rungs)), tmp_path)  # the rungs come out by their classes, whatever order
    rows = read_table(dest / "classes.csv")
    assert [(r["arm"], r["classes"], r["n"]) for r in rows] == [("k2", "2", "3"), ("k2", "2", "5"),
                                                               ("k4", "4", "3"), ("k4", "4", "5")]
    for r in rows:
        assert np.isfinite(float(r["drop_mean"])) and np.isfinite(float(r["limit_5"]))
    seeds = read_table(dest / "classes_seeds.csv")
    assert len(seeds) == 2 * 2 * 2  # rungs x seeds x cuts
    # the trend is each seed's line through its rungs: two rungs, so the line through the two drops exactly
    trend = {(r["n"], r["rungs"]): r for r in read_table(dest / "trend.csv")}
    for n in ("3", "5"):
        per = {(r["replicate"], r["rung"]): float(r["drop"]) for r in seeds if r["n"] == n}
        reps = sorted({r for r, _ in per})
        slopes = [(per[(s, "k4")] - per[(s, "k2")]) / np.log(2) for s in reps]
        assert float(trend[(n, "all")]["slope_mean"]) == pytest.approx(np.mean(slopes))
        at_paper = [per[(s, "k2")] + b * np.log(500 / 2) for s, b in zip(reps, slopes)]
        assert float(trend[(n, "all")]["at_paper_mean"]) == pytest.approx(np.mean(at_paper))
        assert trend[(n, "all")]["names"] == "k2 k4"
    assert float(trend[("5", "all")]["paper_mean"]) > 0  # the paper's own drop at n = 5 beside it
    info = json.loads((dest / "classes.json").read_text())
    assert [i["classes"] for i in info["rungs"]] == [2, 4]
    section = Classes(dest).section()
    assert "`k2`" in section and "`k4`" in section and "classes.png" in section and "extrapolation" in section
    assert (dest / "figures" / "classes.png").exists()
    # a rung added later beside the committed ones, collected from their records alike
    first = collect(classes_rungs[:1], tmp_path / "again")
    again = collect(classes_rungs[1:], tmp_path / "again", add=True)
    assert (again / "classes.csv").read_bytes() == (dest / "classes.csv").read_bytes()
    assert (again / "trend.csv").read_bytes() == (dest / "trend.csv").read_bytes()
    assert first == again


def test_the_classes_pilot_records_each_bases_fit_and_stays_when_the_rungs_are_collected_again(classes_rungs,
                                                                                             tmp_path):
    from probe.analysis.render import read_table
    from probe.studies.classes import FIT_RATIO, PILOT, Classes, collect, collect_pilot

    dest = collect_pilot(classes_rungs[:1], tmp_path)
    rows = read_table(dest / PILOT)
    assert sorted(r["network"] for r in rows) == sorted(f"random-s{s}/init{s}/base{t}" for s in (0, 1) for t in "AB")
    for r in rows:
        ratio = float(r["train_loss"]) / float(r["val_loss"])
        assert float(r["ratio"]) == pytest.approx(ratio) and r["fits"] == ("yes" if ratio <= FIT_RATIO else "no")
        assert r["classes"] == "2" and r["epochs"] == "2"
    pilots = Classes(dest)
    assert pilots.value("fit", "k2") == ("fits" if all(r["fits"] == "yes" for r in rows) else "does not fit")
    assert "| `k2` | random-s0/init0/baseA |" in pilots.value("pilots")
    assert "No rung" in pilots.section()
    collect(classes_rungs, tmp_path)
    assert read_table(dest / PILOT) == rows and Classes(dest).value("pilot", "k2", "s1/init1/baseB", "fits") in \
        ("yes", "no")

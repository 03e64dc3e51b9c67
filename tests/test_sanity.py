"""Sanity checks before the decomposition: bases at chance, not converged or beaten by their cut networks, failed
networks, unequal classes and the class-balanced accuracy beside top-1; the base learning rate in metrics.json; file
names of figures made safe.

The pure checks run on accuracy Datasets built by hand (analysis.accuracies.build_dataset) and on metrics dicts; one
tiny run on an imbalanced dataset (a function of this module, --dataset test_sanity:imbalanced_arrays) is trained
once for what needs real files."""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import re
import shutil
import warnings

import numpy as np
import pytest
import torch
from conftest import TINY_STUDY
from sklearn.metrics import accuracy_score, balanced_accuracy_score

import probe.execution.train as train
from probe.analysis import sanity
from probe.analysis.accuracies import accuracy_dataset, build_dataset, format_table
from probe.analysis.figures import draw_figure2, draw_figure3, figure2, safe_stem
from probe.analysis.render import Paragraph, markdown
from probe.data.synthetic import synthetic_arrays
from probe.execution.batches import Normalize
from probe.execution.train import lr_factor
from probe.planning.plan import Study, make_plan, read_plan
from probe.specs.spec import ArchSpec, DataSpec
from probe.storage.atomic import read_json
from probe.storage.run import Run


def _specs(n_classes=10, seeds=(0, 1, 2), cuts=(1, 3)):
    study = Study(DataSpec("synthetic"), ArchSpec("caffenet-small", options={"width": 0.125}), seeds=seeds, cuts=cuts)
    return [p.spec for p in make_plan(study, [f"class{i}" for i in range(n_classes)], 3, 16)]


def _dataset(specs, fn, metric="top1"):
    return build_dataset(specs, {s.id: fn(s) for s in specs}, metric=metric)


def healthy(spec):
    """A converged base and cut networks slightly below it (the paper's shape, roughly)."""
    return 0.80 if spec.variant == "base" else 0.79 - 0.01 * spec.cut + 0.001 * spec.init_seed


def _checks(found):
    return [f.check for f in found]


# --- evaluate: top-1, balanced and per-class accuracy in one pass -----------------------------------------------------


class Oracle(torch.nn.Module):
    """A 'network' whose prediction for an image is the value of its first pixel (normalization is the identity)."""

    def forward(self, x):
        return torch.nn.functional.one_hot(x[:, 0, 0, 0].round().long(), 4).float()


def test_balanced_accuracy_equals_sklearns_on_an_imbalanced_case(monkeypatch):
    rng = np.random.default_rng(0)
    y = np.repeat([0, 1, 2], [50, 5, 11])  # class 3 is never a label, yet predicted: it is left out of the mean
    pred = np.where(rng.random(len(y)) < 0.6, y, rng.integers(0, 4, len(y)))
    x = torch.zeros((len(y), 1, 2, 2), dtype=torch.uint8)
    x[:, 0, 0, 0] = torch.as_tensor(pred)
    monkeypatch.setattr(train, "EVAL_BATCH", {"cpu": 7})  # counts added up over several batches
    ev = train.evaluate_classes(Oracle(), x, torch.as_tensor(y), Normalize([0.0], [1 / 255], "cpu"), 2)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns of the predicted class that is no label
        expected = balanced_accuracy_score(y, pred)
    assert ev.balanced == pytest.approx(expected, abs=1e-12)
    assert ev.top1 == pytest.approx(accuracy_score(y, pred), abs=1e-12) and abs(ev.top1 - ev.balanced) > 0.01
    assert ev.count == [50, 5, 11, 0]
    assert ev.correct == [int(((pred == y) & (y == k)).sum()) for k in range(4)]
    empty = train.evaluate_classes(Oracle(), x[:0], torch.as_tensor(y[:0]), Normalize([0.0], [1 / 255], "cpu"), 2)
    assert math.isnan(empty.top1) and math.isnan(empty.balanced)


# --- a tiny trained run on an imbalanced dataset ----------------------------------------------------------------------

TRAIN_COUNTS = [200, 40, 40, 40, 40, 40]
TEST_COUNTS = [60, 6, 6, 6, 6, 6]


def imbalanced_arrays():
    """Six synthetic classes; class0 has five times the training images of the others and ten times their test
    images."""
    train_x, train_y, test_x, test_y, classes = synthetic_arrays(n_classes=6, train_per_class=200, test_per_class=60)

    def keep(y, counts):
        return np.sort(np.concatenate([np.flatnonzero(y == k)[:c] for k, c in enumerate(counts)]))

    tr, te = keep(train_y, TRAIN_COUNTS), keep(test_y, TEST_COUNTS)
    return train_x[tr], train_y[tr], test_x[te], test_y[te], classes


RUN_OPTIONS = [*TINY_STUDY, "--dataset", "test_sanity:imbalanced_arrays", "--train-per-class", "1000",
               "--epochs", "3", "--batch-size", "16", "--cuts", "1", "--variants", "BnB,AnB"]


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, cache_dir):
    from conftest import invoke

    run = tmp_path_factory.mktemp("sanity") / "run"
    result = invoke(cache_dir, "train", run, *RUN_OPTIONS)
    assert result.exit_code == 0, result.output
    return run, result.output


def _metrics(run):
    _, plan = read_plan(run)
    return {p.spec.id: (p.spec, read_json(Run(run).network(p.spec.id).metrics)) for p in plan}


def test_metrics_json_has_balanced_and_per_class_accuracy(tiny_run):
    run, _ = tiny_run
    for nid, (spec, m) in _metrics(run).items():
        per_class = m["test_per_class"]
        assert per_class["classes"] == list(spec.target_classes), nid
        assert sum(per_class["count"]) == m["n_test"]
        assert sum(per_class["correct"]) / m["n_test"] == pytest.approx(m["test_acc"], abs=1e-12)
        recalls = [c / n for c, n in zip(per_class["correct"], per_class["count"])]
        assert m["test_balanced_acc"] == pytest.approx(np.mean(recalls), abs=1e-12)
        assert m["val_balanced_acc"] == m["epochs"][-1]["val_balanced_acc"]
        assert all(0 <= e["val_balanced_acc"] <= 1 for e in m["epochs"])
        counts = m["train_class_counts"]
        assert list(counts) == list(spec.target_classes) and sum(counts.values()) == m["n_train"]
        if "class0" in counts:  # 200 and 40 images, 10% of them held out for validation
            assert counts["class0"] == 180 and min(counts.values()) == 36


def test_the_learning_rate_recorded_is_the_base_one(tiny_run):
    """Not the bias group's (bias_lr_scale x the base rate): the recipe's rate times the schedule's factor."""
    run, _ = tiny_run
    spec, m = _metrics(run)["random-s0/init0/baseB"]
    r = spec.recipe
    assert r.bias_lr_scale == 2.0 and r.schedule == "step"
    steps = math.ceil(m["n_train"] / r.batch_size)
    expected = [r.lr * lr_factor(r, (e + 1) * steps - 1, r.epochs * steps) for e in range(r.epochs)]
    assert [e["lr"] for e in m["epochs"]] == pytest.approx(expected, rel=1e-12)
    assert expected[0] != expected[1]  # the step schedule decayed between the epochs


def test_train_prints_the_chance_line_and_warnings_after_its_table(tiny_run):
    _, output = tiny_run
    table_end = output.index("chance: 0.333 (3 classes)")
    assert output.index("split random: mean test accuracy (top-1)") < table_end
    warned = [line for line in output.splitlines() if line.startswith("warning: ")]
    assert warned and all(output.index(line) > table_end for line in warned)
    assert any("class 'class1' has 36 training images, the largest 'class0' 180" in line for line in warned)
    assert any("class 'class1' has 6 test images, the largest 'class0' 60" in line for line in warned)


def test_analyze_reports_both_metrics_and_per_class_accuracy(tiny_run, cli, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run[0], run)
    result = cli("analyze", run)
    assert result.exit_code == 0, result.output
    out = run / "analysis"
    metrics = _metrics(run)
    with (out / "accuracies.csv").open() as f:
        table = list(csv.DictReader(f))
    assert len(table) == len(metrics) and {"test_acc", "test_balanced_acc"} <= set(table[0])
    name = {spec.id: spec for spec, _ in metrics.values()}
    base = next(r for r in table if r["variant"] == "base" and r["target"] == "B")
    _, m = metrics["random-s0/init0/baseB"]
    assert float(base["test_acc"]) == pytest.approx(m["test_acc"]) and \
        float(base["test_balanced_acc"]) == pytest.approx(m["test_balanced_acc"])
    with (out / "per_class.csv").open() as f:
        per_class = list(csv.DictReader(f))
    assert len(per_class) == 3 * len(metrics) and set(per_class[0]) == {
        "network", "split", "replicate", "target", "variant", "n", "class", "correct", "count", "accuracy"}
    assert {r["network"] for r in per_class} == set(name)
    row = next(r for r in per_class if r["network"] == "random-s0/init0/baseB")
    assert float(row["accuracy"]) == pytest.approx(int(row["correct"]) / int(row["count"]))
    md = (out / "report.md").read_text()
    lines = md.splitlines()
    assert lines[0] == "# Transferability report" and lines[2] == "## Warnings"  # first, right after the title
    assert "training images" in md and "| top-1 | balanced |" in md and f"{m['test_balanced_acc']:.3f}" in md
    assert "**top-1**" in md


def test_metric_balanced_changes_the_decomposition(tiny_run, cli, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run[0], run)
    metrics = {spec.name: m for spec, m in _metrics(run).values()}

    def coadaptation(field):  # the seed's value: the mean of its two directions' base - BnB
        return np.mean([metrics[f"base{t}"][field] - metrics[f"{t}1{t}"][field] for t in "AB"])

    found = {}
    for metric, field in (("top1", "test_acc"), ("balanced", "test_balanced_acc")):
        result = cli("analyze", run, "--metric", metric)
        assert result.exit_code == 0, result.output
        # each metric's report in a folder of its own: both kept side by side
        with (Run(run).analysis_for(metric) / "decomposition.csv").open() as f:
            found[metric] = {(r["quantity"], r["n"]): float(r["mean"]) for r in csv.DictReader(f)}
        assert found[metric][("coadaptation", "1")] == pytest.approx(coadaptation(field), abs=1e-9)
        assert accuracy_dataset(run, metric)[0].attrs["metric"] == metric
    assert (run / "analysis" / "report.md").exists() and (run / "analysis-balanced" / "report.md").exists()
    assert "class-balanced" in (run / "analysis-balanced" / "report.md").read_text().split("Accuracy in this")[1][:80]
    out = tmp_path / "elsewhere"
    assert cli("analyze", run, "--out", out).exit_code == 0 and (out / "report.md").exists()
    assert found["top1"].keys() == found["balanced"].keys()
    assert any(abs(found["top1"][k] - found["balanced"][k]) > 1e-6 for k in found["top1"])
    assert "balanced" in cli("analyze", "--help").output and "top1 (the paper's)" in " ".join(
        cli("analyze", "--help").output.split())


def test_a_metric_that_is_not_one_is_refused(tiny_run, cli):
    from conftest import assert_one_line_error

    assert_one_line_error(cli("analyze", tiny_run[0], "--metric", "top5"), "top5")
    with pytest.raises(Exception, match="'top5' is not one of top1, balanced"):
        accuracy_dataset(tiny_run[0], "top5")


NEW_FIELDS = ("test_balanced_acc", "val_balanced_acc", "test_per_class", "train_class_counts")


def test_metrics_from_before_balanced_accuracy_still_analyze(tiny_run, cli, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(tiny_run[0], run)
    for path in run.rglob("metrics.json"):
        m = json.loads(path.read_text())
        for field in NEW_FIELDS:
            del m[field]
        for e in m["epochs"]:
            del e["val_balanced_acc"]
        path.write_text(json.dumps(m))
    for metric in ("top1", "balanced"):
        result = cli("analyze", run, "--metric", metric)
        assert result.exit_code == 0, result.output
        md = (Run(run).analysis_for(metric) / "report.md").read_text()
        assert "before probe recorded balanced" in md and "is NaN" in md
    with (run / "analysis" / "accuracies.csv").open() as f:
        table = list(csv.DictReader(f))
    assert table and all(math.isnan(float(r["test_balanced_acc"])) for r in table)
    assert all(math.isfinite(float(r["test_acc"])) for r in table)
    assert (run / "analysis" / "per_class.csv").read_text() == ""


# --- the checks, on hand-made accuracies and metrics ------------------------------------------------------------------


def test_bases_at_chance_are_warned_of_and_the_chance_level_is_drawn():
    specs = _specs(n_classes=100)  # random halves: 50 classes a task, chance 0.02
    ds = _dataset(specs, lambda s: 0.018 if s.variant == "base" else 0.02)
    found = sanity.chance_findings(ds)
    assert len(found) == 2  # baseA and baseB
    text = found[1].text
    assert text.startswith("baseB of split random is, in 3 of 3 replicates, at or near chance")
    assert "s0/init0 0.018" in text and "chance 0.020 with 50 classes" in text and "--epochs" in text
    assert "chance: 0.020 (50 classes)" in format_table(ds)

    fig = draw_figure2(ds, "random")
    top, bottom, rel = fig.axes[:3]
    for ax in (top, bottom):
        chance = [line for line in ax.get_lines() if str(line.get_label()).startswith("chance")]
        assert len(chance) == 1 and chance[0].get_ydata()[0] == pytest.approx(0.02)
    (relative,) = [line for line in rel.get_lines() if line.get_label() == "chance / base"]
    assert relative.get_ydata()[0] == pytest.approx(0.02 / 0.018)
    (line,) = [ln for ln in draw_figure3(ds).axes[0].get_lines() if str(ln.get_label()).startswith("chance")]
    assert line.get_ydata()[0] == pytest.approx(0.02 / 0.018)

    assert sanity.chance_findings(_dataset(specs, healthy)) == []


def test_unequal_tasks_get_a_chance_level_each():
    specs = [dataclasses.replace(s, classes_a=s.classes_a[:4] if s.target == "A" else s.classes_a)
             for s in _specs()]
    ds = _dataset(specs, healthy)
    assert "chance: 0.250 (4 classes, target A), 0.200 (5 classes, target B)" in format_table(ds)
    labels = [str(line.get_label()) for line in draw_figure2(ds, "random").axes[0].get_lines()]
    assert "chance (1/4, target A)" in labels and "chance (1/5, target B)" in labels


def test_cut_networks_beating_an_under_trained_base_are_warned_of():
    def under_trained(s):  # BnB at n = 3 well above its base, every seed alike; the rest below it
        frozen_selffer = s.variant == "selffer" and s.cut == 3 and not s.fine_tune
        value = 0.253 if s.variant == "base" else 0.327 if frozen_selffer else 0.25
        return value + 0.001 * (s.init_seed - 1)

    ds = _dataset(_specs(cuts=(1, 3)), under_trained)
    found = sanity.beats_base_findings(ds)
    assert len(found) == 1 and found[0].check == "beats-base"
    assert found[0].text.startswith("BnB beats its base network on split random at n = 3 by more than 0.03")
    assert "0.327 against the base's 0.253 (+0.074, 3 seeds)" in found[0].text
    assert sanity.beats_base_findings(_dataset(_specs(), healthy)) == []
    # one gain of 0.04 among seeds that differ wildly is noise, not a finding
    noisy = _dataset(_specs(cuts=(1,)), lambda s: 0.5 if s.variant == "base" else
                     {0: 0.74, 1: 0.30, 2: 0.58}[s.init_seed] if s.variant == "selffer" else 0.4)
    assert sanity.beats_base_findings(noisy) == []


def test_top1_far_from_balanced_is_warned_of():
    specs = _specs()
    top1 = _dataset(specs, lambda s: 0.338 if s.variant == "base" else 0.3)
    balanced = _dataset(specs, lambda s: 0.197 if s.variant == "base" else 0.2, metric="balanced")
    found = sanity.metric_gap_findings(top1, balanced)
    assert len(found) == 2 and "top-1 accuracy 0.338 but class-balanced accuracy 0.197" in found[0].text
    assert "--metric balanced" in found[0].text
    assert sanity.metric_gap_findings(top1, _dataset(specs, lambda s: 0.33, metric="balanced")) == []


def _base_metrics(curves, split="random"):
    specs = {f"{split}/b{i}": {"split": split, "variant": "base"} for i in range(len(curves))}
    metrics = [{"id": i, "status": "done", "epochs": [{"val_acc": v} for v in c]} for i, c in zip(specs, curves)]
    return metrics, specs


def test_bases_still_improving_are_warned_of():
    found = sanity.convergence_findings(*_base_metrics([[0.2, 0.40, 0.431], [0.2, 0.40, 0.431]]))
    assert len(found) == 1
    assert "the base networks of split random still gained 0.031 validation accuracy in their last epoch" in \
        found[0].text and "--epochs" in found[0].text
    assert sanity.convergence_findings(*_base_metrics([[0.2, 0.40, 0.402]])) == []
    assert "one epoch" in sanity.convergence_findings(*_base_metrics([[0.4]]))[0].text
    assert sanity.convergence(*_base_metrics([[0.2, 0.40, 0.402]]))["random"]["plateau"] == 2


def test_the_reproduction_report_uses_the_same_convergence():
    from probe.studies import reproduction

    assert reproduction.convergence is sanity.convergence and reproduction.PLATEAU == sanity.PLATEAU


def test_failed_and_diverged_networks_are_named():
    metrics = [{"id": "random-s0/init0/A3B", "status": "failed",
                "error": "random-s0/init0/A3B diverged at epoch 2, step 4: loss nan (lr 0.1; ...)"},
               {"id": "random-s0/init0/B3B", "status": "failed", "error": "ProbeError: needs the trained weights"},
               {"id": "random-s0/init0/baseB", "status": "done"}]
    (found,) = sanity.failure_findings(metrics)
    assert found.text.startswith("2 networks failed, 1 diverged (random-s0/init0/A3B) and 1 other "
                                 "(random-s0/init0/B3B)")
    assert "--lr" in found.text and "probe train" in found.text
    assert sanity.failure_findings(metrics[2:]) == []


def test_classes_with_far_fewer_images_are_warned_of():
    specs = {s.id: s for s in _specs()}
    nid = "random-s0/init0/baseB"
    metrics = [{"id": nid, "status": "done", "train_class_counts": {"x": 12, "y": 480, "z": 300},
                "test_per_class": {"classes": ["x", "y", "z"], "correct": [1, 2, 3], "count": [30, 30, 30]}}]
    (found,) = sanity.imbalance_findings(metrics, specs)
    assert found.text.startswith("class 'x' has 12 training images, the largest 'y' 480")
    assert "--metric balanced" in found.text and "--test-per-class" in found.text
    metrics[0]["train_class_counts"]["x"] = 121  # just over a quarter of 480
    assert sanity.imbalance_findings(metrics, specs) == []


def test_a_clean_run_says_what_was_checked():
    specs = _specs(cuts=(1,))
    top1, balanced = _dataset(specs, healthy), _dataset(specs, healthy, metric="balanced")
    metrics = {s.id: {"status": "done", "test_balanced_acc": 0.8, "epochs": [{"val_acc": 0.7}, {"val_acc": 0.701}],
                      "train_class_counts": {"a": 10, "b": 12}} for s in specs}
    found = sanity.findings(top1, balanced, metrics, {s.id: s for s in specs})
    assert found == []
    md = markdown(sanity.report_blocks(found, top1, balanced, "top1"))
    assert md.startswith("No warnings: every base network is above chance") and "## Warnings" not in md
    assert sanity.warning_lines(found) == [sanity.no_warnings_text()]
    metrics[specs[0].id] = {"status": "failed", "error": "diverged"}
    assert _checks(sanity.findings(top1, balanced, metrics, {s.id: s for s in specs})) == ["failed"]
    blocks = sanity.report_blocks(sanity.findings(top1, balanced, metrics, {s.id: s for s in specs}), top1,
                                  balanced, "balanced")
    assert not any(isinstance(b, Paragraph) and b.text.startswith("No warnings") for b in blocks)


def test_one_directional_and_partial_runs_are_checked():
    from probe.analysis.accuracies import one_directional
    from probe.specs.spec import SourceSpec

    source = SourceSpec(path="/x.pth", sha256="0" * 64)
    specs = [s for s in _specs() if s.target == "B" and s.variant in ("base", "selffer", "random")]
    one_way = [*specs, *[dataclasses.replace(s, variant="source", source=None, source_network=source)
                         for s in specs if s.variant == "selffer"]]
    # a source network trained elsewhere may beat a base trained from scratch: that is no finding
    ds = build_dataset(one_way, {s.id: 0.9 if s.variant == "source" else healthy(s) for s in one_way
                                 if s.init_seed != 2})
    assert one_directional(ds) and list(ds["target"].values) == ["B"]
    assert sanity.beats_base_findings(ds) == [] and sanity.chance_findings(ds) == []


# --- figure file names ------------------------------------------------------------------------------------------------


def test_figure_files_of_a_split_file_have_safe_names(tmp_path):
    assert safe_stem("figure2_random") == "figure2_random"
    assert re.fullmatch(r"figure2_file-split\.json-[0-9a-f]{6}", safe_stem("figure2_file:split.json"))
    assert safe_stem("figure_cka_file:/data/my splits/a.json").startswith("figure_cka_file-data-my-splits-a.json-")
    assert safe_stem("figure2_file:a/b.json") != safe_stem("figure2_file:a-b.json")  # no two splits share a file
    split = "file:/data/my splits/a.json"
    specs = [dataclasses.replace(s, split=split) for s in _specs(cuts=(1,))]
    paths = figure2(_dataset(specs, healthy), tmp_path, split)
    stem = safe_stem(f"figure2_{split}")
    assert [p.name for p in paths] == [f"{stem}.png", f"{stem}.svg"]
    assert all(p.parent == tmp_path and p.is_file() for p in paths)


def test_the_dataset_says_which_metric():
    specs = _specs(cuts=(1,))
    ds = _dataset(specs, healthy, metric="balanced")
    assert ds.attrs["metric"] == "balanced" and "class-balanced" in ds["acc"].attrs["description"]
    assert "(class-balanced)" in format_table(ds)
    assert "top-1" in _dataset(specs, healthy)["base"].attrs["description"]

"""A source network trained elsewhere (``--source``): one-directional plans, SnB and SnB+, the checks of the file,
and the analysis of such a run.

The source is a tiny CaffeNet trained on task A of a random split and saved the way torchvision ships its weights
(``torch.save`` of a ``state_dict``); the run that uses it trains task B of the same split, so its SnB networks are
the AnB networks of a two-directional run, bit for bit.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import torch
from conftest import TINY_STUDY, assert_one_line_error, invoke
from safetensors.torch import save_file

from probe.errors import ProbeError
from probe.execution.train import prepare_model
from probe.planning.plan import read_plan
from probe.planning.source import NORMALIZATIONS, file_key
from probe.specs.spec import DataSpec, NetworkSpec, SourceSpec
from probe.specs.variants import SOURCE_CUT_NAMES, Variant
from probe.storage.checkpoint import load_weights, read_metadata
from probe.storage.run import Run

CUTS = ["--cuts", "1,2"]


@pytest.fixture(scope="module")
def source_run(tmp_path_factory, cache_dir):
    """A two-directional run with A2B, and baseA's weights saved as a torchvision-style .pth file."""
    root = tmp_path_factory.mktemp("source")
    run = root / "run"
    result = invoke(cache_dir, "train", run, *TINY_STUDY, "--cuts", "2", "--variants", "AnB")
    assert result.exit_code == 0, result.output
    state, _, _ = load_weights(Run(run).network("random-s0/init0/baseA").weights)
    torch.save(state, root / "source.pth")
    return run, root / "source.pth", state


@pytest.fixture(scope="module")
def target_run(tmp_path_factory, cache_dir, source_run):
    """Task B of the same split, its layers donated by the source file."""
    run = tmp_path_factory.mktemp("target") / "run"
    result = invoke(cache_dir, "train", run, *TINY_STUDY, *CUTS, "--split", "random", "--source", source_run[1])
    assert result.exit_code == 0, result.output
    return run


def _weights(run: Path, network_id: str) -> dict[str, torch.Tensor]:
    return load_weights(Run(run).network(network_id).weights)[0]


def _spec(run: Path, name: str) -> NetworkSpec:
    return next(p.spec for p in read_plan(run)[1] if p.spec.name == name)


def _copied(state: dict[str, torch.Tensor], cut: int) -> list[str]:
    layers = ("conv1", "conv2", "conv3")[:cut]
    return [k for k in state if k.split(".")[1] in layers]


def test_the_source_variants():
    snb, snb_plus = Variant.named("SnB"), Variant.named("SnB+")
    assert (snb.family, snb.fine_tune, snb.source) == ("source", False, "external") and snb_plus.fine_tune
    assert snb.network_name("B", 3) == "S3B" and snb_plus.network_name("B", 1) == "S1B+"
    assert snb.source_task("B") is None


def test_the_plan_is_one_directional_and_records_the_source(target_run, source_run):
    study, plan = read_plan(target_run)
    names = {p.spec.name for p in plan}
    assert names == {"baseB", *(f"{d}{n}B{plus}" for n in (1, 2) for d in "BS" for plus in ("", "+")),
                     "R1B", "R2B"}
    digest = hashlib.sha256(source_run[1].read_bytes()).hexdigest()
    assert study.source.path == str(source_run[1]) and study.source.sha256 == digest
    assert study.variants == SOURCE_CUT_NAMES
    stored = json.loads(Run(target_run).plan.read_text())
    for p, n in zip(plan, stored["networks"]):
        if p.spec.variant == "source":  # the file's path and hash are in every SnB spec; it waits for no network
            assert n["spec"]["source_network"]["sha256"] == digest and p.depends_on == ()
        else:
            assert "source_network" not in n["spec"]
    assert _spec(target_run, "baseB") == _spec(source_run[0], "baseB")  # the same network as in the paper's plan


def test_frozen_copied_layers_are_the_files_tensors(target_run, source_run):
    _, _, source = source_run
    s2b = _weights(target_run, "random-s0/init0/S2B")
    copied = _copied(s2b, 2)
    assert copied and all(torch.equal(s2b[k], source[k]) for k in copied)
    upper = [k for k in s2b if k not in copied and k.endswith("weight") and s2b[k].shape == source[k].shape]
    assert upper and not any(torch.equal(s2b[k], source[k]) for k in upper)
    # SnB is AnB with an outside donor: the bottom the paper's plan copies from baseA in-run, bit for bit; its top is
    # drawn from a seed of its own (independent initial weights), so it trains to other weights
    a2b = _weights(source_run[0], "random-s0/init0/A2B")
    assert all(torch.equal(s2b[k], a2b[k]) for k in copied)
    assert not any(torch.equal(s2b[k], a2b[k]) for k in upper)


def test_fine_tuned_copied_layers_start_equal_and_change(target_run, source_run):
    _, _, source = source_run
    start = prepare_model(_spec(target_run, "S2B+"), target_run).state_dict()
    copied = _copied(start, 2)
    assert all(torch.equal(start[k], source[k]) for k in copied)
    trained = _weights(target_run, "random-s0/init0/S2B+")
    assert any(not torch.equal(trained[k], source[k]) for k in copied if k.endswith("weight"))


def test_status_and_analyze(target_run, cli):
    status = cli("status", target_run)
    assert status.exit_code == 0 and "11 done, 0 running" in status.output, status.output
    result = cli("analyze", target_run)
    assert result.exit_code == 0, result.output
    assert "claim 7: left out" in result.output and "over seeds (networks)" in result.output
    out = Run(target_run).analysis
    md = (out / "report.md").read_text()
    for text in ("specialization** = BnB - SnB", "lingering** = SnB+ - baseB", "on target task B only",
                 "| base | BnB | BnB+ | SnB | SnB+ | RnB |", "Claim 7 (a dissimilar split", "SHA-256"):
        assert text in md, text
    assert "AnB" not in md and "both directions" not in md and "Dissimilar minus similar" not in md
    claims = json.loads((out / "claims.json").read_text())["claims"]
    assert [c["verdict"] for c in claims if c["number"] == 7] == ["left out"]
    assert "SnB - baseB at n=1" in claims[0]["evidence"][0] + claims[0]["evidence"][1]
    assert (out / "figures" / "figure2_random.png").exists() and (out / "figures" / "figure3.png").exists()


def test_analysis_with_an_activation_store(target_run, cli, cache_dir):
    """CKA of SnB and BnB+ against baseB; no empty columns for the baseA this run does not train."""
    result = cli("extract", target_run, "--per-class", "10", "--device", "cpu", "--quiet", "--cache-dir", cache_dir)
    assert result.exit_code == 0, result.output
    result = cli("analyze", target_run)
    assert result.exit_code == 0, result.output
    out = Run(target_run).analysis
    md = (out / "report.md").read_text()
    assert "CKA(SnB_k, baseB_k)" in md and "SnB accuracy" in md and "logme" not in md and "AnB" not in md
    assert (out / "figures" / "figure_cka_random.png").exists()
    assert (out / "correlations.csv").read_text() == ""


def test_renamed_keys_and_a_key_map(cli, tmp_path, source_run):
    """A file whose keys are named otherwise loads through --source-key-map (pairs, or a JSON file)."""
    _, _, source = source_run
    renamed = tmp_path / "renamed.pth"
    torch.save({k.replace("stages.", "backbone.", 1): v for k, v in source.items()}, renamed)
    result = cli("plan", *TINY_STUDY, *CUTS, "--source", renamed)
    assert_one_line_error(result, renamed, "stages.conv1.0", "--source-key-map")
    (tmp_path / "map.json").write_text(json.dumps({"stages.": "backbone."}))
    for key_map in ("stages.=backbone.", tmp_path / "map.json"):
        result = cli("plan", *TINY_STUDY, *CUTS, "--source", renamed, "--source-key-map", key_map)
        assert result.exit_code == 0, result.output
    run = tmp_path / "run"
    result = cli("train", run, *TINY_STUDY, *CUTS, "--source", renamed, "--source-key-map", "stages.=backbone.",
                 "--networks", "S1B")
    assert result.exit_code == 0, result.output
    s1b = _weights(run, "target/init0/S1B")
    assert all(torch.equal(s1b[k], source[k]) for k in _copied(s1b, 1))


def test_key_map_picks_the_longest_prefix():
    model = type("Net", (), {"source_keys": {"stages.conv1.0.weight": "features.0.weight"}})()
    pairs = (("", "module."), ("features.", "backbone.features."))
    assert file_key(model, "stages.conv1.0.weight", pairs) == "backbone.features.0.weight"
    assert file_key(model, "stages.fc6.1.weight", pairs) == "module.stages.fc6.1.weight"
    assert file_key(model, "stages.fc6.1.weight", ()) == "stages.fc6.1.weight"


def test_a_safetensors_source(cli, tmp_path, source_run):
    _, _, source = source_run
    path = tmp_path / "source.safetensors"
    save_file(source, str(path))
    assert cli("plan", *TINY_STUDY, *CUTS, "--source", path).exit_code == 0
    spec = next(p.spec for p in _plan_json(cli, path) if p.spec.name == "S2B")
    start = prepare_model(spec, tmp_path).state_dict()
    assert all(torch.equal(start[k], source[k]) for k in _copied(start, 2))


def _plan_json(cli, path: Path):
    from probe.planning.plan import PlannedNetwork

    result = cli("plan", *TINY_STUDY, *CUTS, "--source", path, "--json")
    return [PlannedNetwork(NetworkSpec.from_dict(n["spec"]), tuple(n["depends_on"]), tuple(n["layers"]))
            for n in json.loads(result.output)["networks"]]


class Payload:
    """Unpickled, it would leave a file: a weights-only load must refuse it before that."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (Path.touch, (self.marker,))


def _bad_files(tmp_path: Path, source: dict[str, torch.Tensor]) -> dict[str, tuple[Path, str]]:
    """name -> (a bad source file, what its one-line error names)."""
    files = {}

    def save(name: str, obj, culprit: str) -> None:
        path = tmp_path / f"{name}.pth"
        torch.save(obj, path)
        files[name] = (path, culprit)

    (tmp_path / "garbage.pth").write_bytes(b"not a checkpoint\n" * 20)
    files["garbage"] = (tmp_path / "garbage.pth", "cannot be loaded as weights")
    (tmp_path / "garbage.safetensors").write_bytes(b"not safetensors either" * 4)
    files["garbage safetensors"] = (tmp_path / "garbage.safetensors", "not a safetensors file")
    save("pickled code", {"w": Payload(tmp_path / "executed")}, "weights_only=True, which runs no pickled code")
    save("a list", list(source.values()), "holds a list, not a state_dict")
    save("empty", {}, "holds an empty mapping, not a state_dict")
    save("not only tensors", {**source, "epoch": 3}, "'epoch' is of type int")
    save("lacks a key", {k: v for k, v in source.items() if k != "stages.conv2.0.weight"},
         "has no 'stages.conv2.0.weight' for layer conv2")
    save("wrong shape", {**source, "stages.conv2.0.bias": torch.zeros(3)}, "stages.conv2.0.bias of shape [3]")
    files["missing"] = (tmp_path / "missing.pth", "does not exist")
    files["a directory"] = (tmp_path, "is a directory")
    return files


@pytest.mark.parametrize("bad", ["garbage", "garbage safetensors", "pickled code", "a list", "empty",
                                 "not only tensors", "lacks a key", "wrong shape", "missing", "a directory"])
def test_bad_source_files_are_one_line_errors(cli, tmp_path, source_run, bad):
    path, culprit = _bad_files(tmp_path, source_run[2])[bad]
    assert_one_line_error(cli("plan", *TINY_STUDY, *CUTS, "--source", path), path, culprit)
    assert not (tmp_path / "executed").exists()


def test_a_head_of_another_shape_is_never_read(cli, tmp_path, source_run):
    """Layers 1..n never include the classifier head, so a source trained for other classes fits."""
    path = tmp_path / "other-head.pth"
    torch.save({**source_run[2], "stages.fc8.1.weight": torch.zeros(1000, 3)}, path)
    assert cli("plan", *TINY_STUDY, "--cuts", "7", "--source", path).exit_code == 0


def test_a_changed_source_file_is_refused(cli, tmp_path, source_run):
    path, run = tmp_path / "source.pth", tmp_path / "run"
    torch.save(source_run[2], path)
    result = cli("train", run, *TINY_STUDY, *CUTS, "--source", path, "--networks", "baseB")
    assert result.exit_code == 0, result.output
    torch.save({**source_run[2], "stages.conv1.0.bias": source_run[2]["stages.conv1.0.bias"] + 1}, path)
    assert_one_line_error(cli("train", run), path, "changed since the run was planned")
    assert_one_line_error(cli("train", run, *TINY_STUDY, *CUTS, "--source", path), "source.sha256")
    with pytest.raises(ProbeError, match="changed since"):
        prepare_model(_spec(run, "S1B"), run)


def test_the_sources_normalization_is_the_runs(cli, tmp_path, source_run):
    run = tmp_path / "run"
    result = cli("train", run, *TINY_STUDY, "--cuts", "1", "--source", source_run[1], "--source-normalization",
                 "imagenet", "--networks", "baseB")
    assert result.exit_code == 0, result.output
    mean, std = NORMALIZATIONS["imagenet"]
    data = json.loads(Run(run).data.read_text())
    assert (data["mean"], data["std"]) == (list(mean), list(std))
    weights = read_metadata(Run(run).network("target/init0/baseB").weights)["normalization"]
    assert (weights["mean"], weights["std"]) == (list(mean), list(std))
    assert read_plan(run)[0].source.mean == mean
    result = cli("plan", *TINY_STUDY, "--source", source_run[1], "--source-normalization", "0.5:0.25")
    assert_one_line_error(result, "1 values per statistic", "3 channels")


def test_target_classes(cli, source_run):
    result = cli("plan", *TINY_STUDY, *CUTS, "--source", source_run[1], "--target-classes", "class5,class1,class3",
                 "--json")
    assert result.exit_code == 0, result.output
    specs = [n["spec"] for n in json.loads(result.output)["networks"]]
    assert {(tuple(s["classes_a"]), tuple(s["classes_b"]), s["target"]) for s in specs} == {
        ((), ("class1", "class3", "class5"), "B")}
    assert {n["id"].split("/")[0] for n in json.loads(result.output)["networks"]} == {"target"}
    result = cli("plan", *TINY_STUDY, "--source", source_run[1], "--target-classes", "class1,nope")
    assert_one_line_error(result, "'nope'")


@pytest.mark.parametrize("args, culprit", [
    (["--variants", "SnB"], "--source"),
    (["--split", "target"], "--source"),
    (["--target-classes", "class1,class2"], "source network"),
    (["--source-key-map", "a=b"], "--source"),
    (["--source-normalization", "imagenet"], "--source"),
])
def test_options_that_need_a_source(cli, args, culprit):
    assert_one_line_error(cli("plan", *TINY_STUDY, *args), culprit)


@pytest.mark.parametrize("args, culprit", [
    (["--source-normalization", "bright"], "'bright'"),
    (["--source-key-map", "nonsense"], "'nonsense'"),
    (["--source-key-map", "missing.json"], "'missing.json'"),
])
def test_source_options_are_checked(cli, source_run, args, culprit):
    assert_one_line_error(cli("plan", *TINY_STUDY, "--source", source_run[1], *args), culprit)


def test_a_source_study_has_no_anb(cli, source_run):
    result = cli("plan", *TINY_STUDY, "--source", source_run[1], "--variants", "AnB")
    assert_one_line_error(result, "no AnB", "SnB")
    result = cli("plan", *TINY_STUDY, "--source", source_run[1], "--split", "random", "--target-classes", "class1")
    assert_one_line_error(result, "'target' alone")


def test_specs_without_a_source_read_as_before():
    """Every other network's spec and a paper study's plan.json keep the JSON they had before SourceSpec."""
    spec = NetworkSpec(DataSpec("synthetic"), "random", 0, "B")
    assert "source_network" not in spec.to_dict()
    source = SourceSpec("/weights.pth", "0" * 64, (("a.", "b."),), (0.5,), (0.25,))
    snb = NetworkSpec(DataSpec("synthetic"), "target", None, "B", variant="source", cut=2, source_network=source)
    assert NetworkSpec.from_dict(json.loads(snb.to_json())) == snb and snb.name == "S2B"
    with pytest.raises(ProbeError, match="only one"):
        NetworkSpec(DataSpec("synthetic"), "target", None, "B", variant="selffer", source="B", cut=2,
                    source_network=source)
    with pytest.raises(ProbeError, match="SHA-256"):
        SourceSpec("/weights.pth", "abc")

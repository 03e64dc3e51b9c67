"""What a reliability report found (items 3 to 9): a network taken for done with another network's weights, a
damaged dataset cache, a failed plan that refuses its corrected command, temporary files that no rerun removes,
weights of identical training that differ in their bytes, a plan version of the wrong type, and torch's warning
before probe's refusal of a pickle.

One tiny finished run (both bases and the selffers at cut 1: four networks) is trained once per module; every test
that damages it damages a copy.
"""

from __future__ import annotations

import hashlib
import json
import pickle
import shutil
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from conftest import REPO_ROOT, TINY_STUDY, assert_one_line_error, invoke
from PIL import Image
from safetensors.torch import save_file

from probe.data.datasets import load_dataset
from probe.errors import ProbeError
from probe.planning.plan import read_plan, read_plan_file
from probe.specs.spec import DataSpec, NetworkSpec
from probe.storage.checkpoint import load_tensors, save_tensors
from probe.storage.run import METRICS, WEIGHTS, Run

SMALL = [*TINY_STUDY, "--cuts", "1", "--variants", "BnB", "--seeds", "0"]


@pytest.fixture(scope="module")
def done_run(tmp_path_factory, cache_dir):
    run = tmp_path_factory.mktemp("done") / "run"
    result = invoke(cache_dir, "train", run, *SMALL)
    assert result.exit_code == 0, result.output
    _, plan = read_plan(run)
    return SimpleNamespace(run=run, specs={p.spec.name: p.spec for p in plan})


@pytest.fixture
def specs(done_run) -> dict[str, NetworkSpec]:
    return done_run.specs


@pytest.fixture
def run(done_run, tmp_path) -> Path:
    """A copy of the finished run, to damage."""
    copy = tmp_path / "run"
    shutil.copytree(done_run.run, copy)
    return copy


def _weights(run: Path, spec: NetworkSpec) -> Path:
    return Run(run).network(spec.id).weights


def _states(result) -> dict[str, tuple[str, str]]:
    """``probe status`` output as {network id: (state, detail)}."""
    assert result.exit_code == 0, result.output
    rows = {}
    for line in result.output.splitlines():
        parts = line.split(maxsplit=2)
        if len(parts) >= 2 and "/" in parts[0]:
            rows[parts[0]] = (parts[1], parts[2] if len(parts) > 2 else "")
    return rows


def _other_settings(spec: NetworkSpec) -> NetworkSpec:
    d = spec.to_dict()
    return NetworkSpec.from_dict({**d, "recipe": {**d["recipe"], "lr": 0.02}})


def _damage(run: Path, specs: dict[str, NetworkSpec], damage: str) -> tuple[Path, str]:
    """Replace baseA's weights by a whole safetensors file that is not baseA's: the file and what status names."""
    weights = _weights(run, specs["baseA"])
    state, spec, meta = load_tensors(weights)
    if damage == "other-network":  # baseB's weights, whose metadata name baseB
        shutil.copyfile(_weights(run, specs["baseB"]), weights)
        return weights, f"holds network {specs['baseB'].id}, not {specs['baseA'].id}"
    if damage == "other-settings":  # baseA trained at another learning rate
        save_tensors(weights, state, _other_settings(spec), **meta)
        return weights, "recipe.lr: 0.02 in the file, 0.01 planned"
    if damage == "other-shapes":  # the planned spec in its metadata, but tensors no baseA has
        save_tensors(weights, {k: torch.zeros(1) for k in state}, spec, **meta)
        return weights, "of shape [1]"
    save_file(state, str(weights))  # the right tensors, without metadata
    return weights, "carries no network spec"


# --- 3: done only with the network's own weights --------------------------------------------------------------------

@pytest.mark.parametrize("damage", ["other-network", "other-settings", "other-shapes", "no-metadata"])
def test_a_network_is_done_only_with_its_own_weights(run, specs, cli, damage):
    """baseA's weights replaced by a whole file that is not baseA's: status says corrupt, naming the file and
    what is wrong, and train trains baseA again (before, both said done, and only extract noticed)."""
    weights, fact = _damage(run, specs, damage)
    state, detail = _states(cli("status", run))[specs["baseA"].id]
    assert state == "corrupt" and str(weights) in detail and fact in detail and "probe train" in detail, detail
    result = cli("train", run)
    assert result.exit_code == 0, result.output
    assert "trained 1, already done 3, failed 0, blocked 0" in result.output
    assert _states(cli("status", run))[specs["baseA"].id][0] == "done"
    state, found, _ = load_tensors(weights)
    assert found == specs["baseA"] and state["stages.conv1.0.weight"].shape[0] > 1


def test_status_without_torch_checks_the_spec_the_weights_name(run, specs):
    """'probe status' loads no torch, so it checks the spec in a weights file's metadata, not its shapes (which
    only building the network tells): another network's file, another setting's, and none are corrupt there too."""
    shutil.copyfile(_weights(run, specs["baseA"]), _weights(run, specs["B1B"]))
    state, _, meta = load_tensors(_weights(run, specs["baseB"]))
    save_tensors(_weights(run, specs["baseB"]), state, _other_settings(specs["baseB"]), **meta)
    save_file(load_tensors(_weights(run, specs["A1A"]))[0], str(_weights(run, specs["A1A"])))
    code = ("import sys; import probe.cli.main as cli\n"
            "try:\n    cli.main(sys.argv[1:], prog_name='probe')\nexcept SystemExit:\n    pass\n"
            "print('torch' in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code, "status", str(run)], cwd=REPO_ROOT, capture_output=True,
                         text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "False"
    assert "1 done, 0 running, 0 interrupted, 0 failed, 0 missing, 3 corrupt" in out.stdout, out.stdout


# --- 4: a damaged dataset cache --------------------------------------------------------------------------------------

def _tree(root: Path) -> Path:
    """An image-folder tree (the datasets that are cached): two classes of two 8-pixel PNGs, in train/ and test/."""
    for part in ("train", "test"):
        for c, cls in enumerate(("cats", "dogs")):
            (root / part / cls).mkdir(parents=True)
            for i in range(2):
                Image.fromarray(np.full((8, 8, 3), 60 * c + 20 * i, np.uint8)).save(root / part / cls / f"{i}.png")
    return root


def test_a_cache_entry_holding_a_pickled_array_is_one_line(tmp_path, cli):
    tree, cache = _tree(tmp_path / "tree"), tmp_path / "cache"
    spec = DataSpec("imagefolder", root=str(tree))
    load_dataset(spec, cache, progress=False)
    (entry,) = cache.iterdir()
    labels = entry / "train_y.npy"
    np.save(labels, np.array([0, 0, 1, 1], dtype=object), allow_pickle=True)  # before: "can't be memory-mapped"
    with pytest.raises(ProbeError) as e:
        load_dataset(spec, cache, progress=False)
    assert str(labels) in str(e.value) and f"delete the folder {str(entry)!r}" in str(e.value)
    assert "\n" not in str(e.value)
    result = cli("plan", "--dataset", f"imagefolder:{tree}", "--cache-dir", cache, "--cuts", "1", "--variants", "")
    assert_one_line_error(result, labels, "delete")
    shutil.rmtree(entry)  # what the message says to do: decoded again
    assert load_dataset(spec, cache, progress=False).train_y.tolist() == [0, 0, 1, 1]


@pytest.mark.parametrize("field", ["train_x", "test_y"])
def test_a_cache_entry_changed_in_place_into_valid_arrays_is_refused_by_name(tmp_path, field):
    """Images or labels rewritten in place (still arrays of the right kind) would train every network on the wrong
    data without a word: the checksum recorded when the entry was written tells them apart."""
    tree, cache = _tree(tmp_path / "tree"), tmp_path / "cache"
    spec = DataSpec("imagefolder", root=str(tree))
    load_dataset(spec, cache, progress=False)
    (entry,) = cache.iterdir()
    path = entry / f"{field}.npy" if field.endswith("_y") else entry / "classes" / "0000" / f"{field}.npy"
    array = np.load(path)
    np.save(path, array[::-1].copy() if field == "test_y" else 255 - array)
    with pytest.raises(ProbeError) as e:
        load_dataset(spec, cache, progress=False)
    assert str(path) in str(e.value) and "changed since it was written" in str(e.value)
    assert "delete the folder" in str(e.value) and "\n" not in str(e.value)


# --- 5: a failed plan does not refuse its corrected command --------------------------------------------------------

def test_a_plan_whose_command_failed_gives_way_to_the_corrected_command(tmp_path, cli):
    run = tmp_path / "run"
    failed = cli("train", run, *SMALL, "--train-per-class", "1")  # too few images to hold out validation
    assert_one_line_error(failed, "validation")
    assert_one_line_error(cli("train", run, *SMALL, "--seeds", "1", "--networks", "nosuch"), "nosuch")
    result = cli("train", run, *SMALL, "--networks", "baseB")
    assert result.exit_code == 0, result.output
    assert "trained 1, already done 0, failed 0" in result.output
    study, _ = read_plan(run)
    assert study.seeds == (0,) and study.data.train_per_class == 30
    # once a network began, a different plan is refused as before
    refused = cli("train", run, *SMALL, "--seeds", "1")
    assert_one_line_error(refused, "already holds a different plan", "seeds")


# --- 6: temporary files of a killed write ----------------------------------------------------------------------------

def _leftover(folder: Path, name: str) -> Path:
    """A temporary file as write_atomic names it, left by a process killed before its rename."""
    folder.mkdir(parents=True, exist_ok=True)
    fd, path = tempfile.mkstemp(prefix=f".{name}.", suffix=".tmp", dir=folder)
    with open(fd, "wb") as f:
        f.write(b"half a file")
    return Path(path)


def test_a_rerun_removes_the_temporary_files_a_killed_write_left(run, specs, cli):
    done = Run(run).network(specs["A1A"].id).folder
    shutil.rmtree(Run(run).network(specs["B1B"].id).folder)
    again = Run(run).network(specs["B1B"].id).folder  # killed while renaming its weights: trained again
    left = [_leftover(done, WEIGHTS), _leftover(done, METRICS), _leftover(again, WEIGHTS),
            _leftover(again, "resume.safetensors")]
    other = _leftover(done, "robustness.json")  # 'probe robustness' writes it, without the training lock
    result = cli("train", run)
    assert result.exit_code == 0, result.output
    assert "trained 1, already done 3" in result.output
    assert not any(p.exists() for p in left), [p for p in left if p.exists()]
    assert other.exists()


# --- 7: the same network gives the same bytes ------------------------------------------------------------------------

def test_saving_the_same_network_twice_gives_the_same_bytes(tmp_path, specs):
    """safetensors writes its metadata from a hash map, in a new order at every save; probe sorts it."""
    tensors = {"b": torch.arange(6.0).reshape(2, 3), "a": torch.ones(3, dtype=torch.bfloat16)}
    norm, history = {"mean": [0.5, 0.4, 0.3], "std": [0.2, 0.2, 0.2]}, [{"epoch": 1, "train_loss": 2.3}]
    digests = set()
    for i in range(8):
        path = tmp_path / f"{i}.safetensors"
        if i % 2:
            save_tensors(path, tensors, specs["baseA"], normalization=norm, epoch=1, history=history, seconds=2.5)
        else:
            save_tensors(path, tensors, specs["baseA"], seconds=2.5, history=history, epoch=1, normalization=norm)
        digests.add(hashlib.sha256(path.read_bytes()).hexdigest())
    assert len(digests) == 1
    state, spec, meta = load_tensors(path)
    assert spec == specs["baseA"] and meta == {"epoch": 1, "history": history, "normalization": norm, "seconds": 2.5}
    assert all(torch.equal(state[k], v) for k, v in tensors.items())
    weights = [tmp_path / "w1.safetensors", tmp_path / "w2.safetensors"]
    for path in weights:  # as training saves weights: the spec and the normalization
        save_tensors(path, tensors, specs["baseA"], normalization=norm)
    assert weights[0].read_bytes() == weights[1].read_bytes()


# --- 8: a plan version of another type -------------------------------------------------------------------------------

@pytest.mark.parametrize("version, shown", [("1", 'the string "1"'), (True, "the boolean true"),
                                            (1.0, "the number 1.0")])
def test_a_plan_version_that_is_no_integer_says_what_it_found(run, cli, version, shown):
    path = Run(run).plan
    d = json.loads(path.read_text())
    d["version"] = version
    path.write_text(json.dumps(d))
    with pytest.raises(ProbeError) as e:
        read_plan_file(path)
    assert f"has plan version {shown}, not an integer; this probe reads version 1" in str(e.value), str(e.value)
    assert_one_line_error(cli("status", run), path, shown)


# --- 9: no torch warning before probe's refusal of a pickle ---------------------------------------------------------

def test_a_pickled_source_is_refused_without_torchs_warning(tmp_path, cli):
    path = tmp_path / "weights.pkl"
    path.write_bytes(pickle.dumps({"stages.conv1.0.weight": [[0.0]]}, protocol=4))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = cli("plan", *TINY_STUDY, "--cuts", "1", "--source", path)
    assert_one_line_error(result, path, "weights_only=True")
    assert not [str(w.message) for w in caught if "pickle" in str(w.message)]

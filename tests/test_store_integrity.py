"""The activation store can be trusted: what is marked complete is whole, damage is found, and found damage is named
(by network, layer and the command that repairs it) before anything is computed from it."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import xarray as xr
import zarr
from conftest import assert_one_line_error, invoke

from probe.analysis.representations import representation_dataset
from probe.analysis.stores import list_networks, open_checked, open_store
from probe.architectures import build_model
from probe.errors import ProbeError
from probe.execution.extract import ExtractionImages, extract_run
from probe.planning.plan import read_plan
from probe.storage.activation_store import verify_group
from probe.storage.run import Run

pytestmark = pytest.mark.filterwarnings("ignore::zarr.errors.ZarrUserWarning", "ignore::RuntimeWarning")

BASE = "random-s0/init0/baseA"
BATCH = 16  # 150 probe images a network: three chunks of 64 samples, so a kill can land between two appends


@pytest.fixture(scope="module")
def run(anb_run):
    return anb_run


@pytest.fixture(scope="module")
def pristine(run, tmp_path_factory):
    """The run's activations, extracted once; tests damage copies of it."""
    store = tmp_path_factory.mktemp("pristine") / "acts.zarr"
    assert len(extract_run(run, store, batch_size=BATCH, progress=False)["written"]) == 4
    return store


@pytest.fixture
def store(pristine, tmp_path):
    copy = tmp_path / "acts.zarr"
    shutil.copytree(pristine, copy)
    return copy


def _specs(run_dir):
    return {p.spec.id: p.spec for p in read_plan(run_dir)[1]}


def _cut_points(run_dir):
    return build_model(_specs(run_dir)[BASE]).cut_points


def _refused(run_dir, store, *culprits):
    """The analysis refuses the store with one line naming every culprit and the command that repairs it."""
    with pytest.raises(ProbeError) as e:
        representation_dataset(run_dir, store)
    message = str(e.value)
    assert "\n" not in message
    for culprit in (*culprits, "probe extract"):
        assert str(culprit) in message, f"{culprit!r} not named in {message!r}"
    return message


def _repair(run_dir, store):
    return extract_run(run_dir, store, batch_size=BATCH, progress=False)


def _assert_same_group(store, pristine, network_id):
    """A rewritten group holds what the first extraction wrote: the same computation, repeated."""
    xr.testing.assert_identical(xr.open_zarr(store, group=network_id, consolidated=False).load(),
                                xr.open_zarr(pristine, group=network_id, consolidated=False).load())


def test_a_healthy_store_verifies_and_opens_with_plain_xarray(run, pristine):
    for nid in _specs(run):
        assert verify_group(pristine, nid, _cut_points(run)) is None
    tree = xr.open_datatree(pristine, engine="zarr")
    assert sorted(list_networks(tree)) == sorted(list_networks(open_store(pristine))) == sorted(_specs(run))
    assert verify_group(pristine, BASE, [*_cut_points(run), "conv9"]) is not None  # a layer the spec lacks


def test_a_lost_array_is_named_not_replaced_by_the_next_layer(run, store, pristine):
    (store / BASE / "conv1" / "zarr.json").unlink()
    _refused(run, store, BASE, "conv1", f"--networks {BASE}")
    # a tree opened without the checks still gets its layer list from the plan, never from what the store holds
    with pytest.raises(ProbeError, match="conv1"):
        representation_dataset(run, xr.open_datatree(store, engine="zarr", consolidated=False))
    result = _repair(run, store)
    assert result["written"] == [BASE] and "conv1" in result["damaged"][BASE]
    _assert_same_group(store, pristine, BASE)
    assert list(representation_dataset(run, store)["layer"].values) == _cut_points(run)


def test_a_killed_rewrite_leaves_no_stale_metadata_and_no_half_group(run, store, pristine, monkeypatch):
    monkeypatch.setattr("probe.execution.extract.weights_fingerprint", lambda path: "retrained")  # as if trained again
    original, calls = xr.Dataset.to_zarr, {"n": 0}

    def dying(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(xr.Dataset, "to_zarr", dying)
    with pytest.raises(KeyboardInterrupt):
        extract_run(run, store, networks=["baseA"], batch_size=BATCH, progress=False)
    monkeypatch.undo()
    consolidated = json.loads((store / "zarr.json").read_text()).get("consolidated_metadata") or {}
    assert not any(key.startswith(BASE) for key in consolidated.get("metadata", {}))
    assert not xr.open_datatree(store, engine="zarr")[BASE].data_vars  # no half-written arrays at the real path
    _refused(run, store, BASE, f"--networks {BASE}")
    assert _repair(run, store)["written"] == [BASE]
    _assert_same_group(store, pristine, BASE)
    assert np.isfinite(representation_dataset(run, store)["cka_target"].sel(variant="AnB")).all()


def test_one_half_appended_group_leaves_the_others_readable(run, store, pristine):
    conv1 = zarr.open_array(str(store / BASE / "conv1"), mode="r+")
    conv1.append(np.asarray(conv1[:BATCH]), axis=0)  # as a kill between two variables of one append leaves it
    with pytest.warns(UserWarning, match=f"{BASE}.*conv1"):
        tree = open_store(store)
    assert sorted(list_networks(tree)) == sorted(set(_specs(run)) - {BASE})
    _refused(run, store, BASE, "conv1")
    assert "conv1" in _repair(run, store)["damaged"][BASE]
    _assert_same_group(store, pristine, BASE)
    xr.open_datatree(store, engine="zarr")  # whole again


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_a_damaged_chunk_is_found_and_rewritten(run, store, pristine, cli, damage):
    chunk = store / BASE / "conv2" / "c" / "0" / "0"
    data = chunk.read_bytes()
    chunk.write_bytes(data[: len(data) // 2] if damage == "truncated" else np.random.default_rng(0).bytes(len(data)))
    _refused(run, store, BASE, "conv2", chunk.relative_to(store / BASE))
    result = cli("extract", run, "--out", store, "--batch-size", BATCH, "--quiet", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert "wrote 1, already complete 3" in result.output
    assert any(BASE in line and "conv2" in line for line in result.output.splitlines())  # says what it rewrote
    _assert_same_group(store, pristine, BASE)


@pytest.mark.parametrize("node, damage", [("", "garbage"), ("", "missing"), ("random-s0", "garbage"),
                                          (BASE, "garbage"), (BASE, "missing")])
def test_broken_metadata_is_named_and_repaired(run, store, pristine, cli, node, damage):
    meta = store / node / "zarr.json"
    if damage == "garbage":
        meta.write_text('{"zarr_format": 3, "node_')
    else:
        meta.unlink()
    assert_one_line_error(cli("analyze", run, "--store", store), meta, "probe extract")
    result = cli("extract", run, "--out", store, "--batch-size", BATCH, "--quiet", "--device", "cpu")
    assert result.exit_code == 0, result.output
    assert sorted(list_networks(xr.open_datatree(store, engine="zarr"))) == sorted(_specs(run))
    _assert_same_group(store, pristine, BASE)


@pytest.mark.parametrize("damage", ["missing", "garbage"])
def test_a_bad_weights_file_skips_only_its_network(run, tmp_path, cli, damage):
    copy = tmp_path / "run"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("analysis", "*.zarr"))  # copy2 keeps mtimes
    victim = _specs(run)["random-s0/init0/A1B"]
    weights = Run(copy).network(victim.id).weights
    if damage == "missing":
        weights.unlink()
    else:
        weights.write_bytes(b"not a safetensors file")
    result = cli("extract", copy, "--quiet", "--device", "cpu", "--batch-size", BATCH)
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit), result.output
    assert "wrote 3" in result.output
    named = [line for line in result.output.splitlines() if str(weights) in line]
    assert len(named) == 1 and victim.id in named[0] and "probe train" in named[0]
    assert sorted(list_networks(open_store(copy))) == sorted(set(_specs(run)) - {victim.id})


def test_a_deleted_weights_file_of_an_extracted_network_is_named(run, tmp_path, pristine):
    copy = tmp_path / "run"
    shutil.copytree(run, copy, ignore=shutil.ignore_patterns("analysis", "*.zarr"))
    store = tmp_path / "acts.zarr"
    shutil.copytree(pristine, store)
    weights = Run(copy).network(BASE).weights
    weights.unlink()
    result = extract_run(copy, store, batch_size=BATCH, progress=False)
    assert str(weights) in result["failed"][BASE] and len(result["skipped"]) == 3
    assert BASE in list_networks(open_store(store))  # its activations are still whole: kept


def test_a_store_path_that_is_a_file_is_refused(run, tmp_path, cli):
    path = tmp_path / "acts.zarr"
    path.write_text("")
    for call in (lambda: extract_run(run, path, progress=False), lambda: open_store(path)):
        with pytest.raises(ProbeError) as e:
            call()
        assert str(path) in str(e.value) and "\n" not in str(e.value)
    assert_one_line_error(cli("extract", run, "--out", path, "--quiet"), path)
    assert_one_line_error(cli("analyze", run, "--store", path), path)


def test_analyze_of_a_missing_run_creates_nothing(tmp_path, cli):
    typo = tmp_path / "a" / "typo"
    assert_one_line_error(cli("analyze", typo), typo)
    assert not (tmp_path / "a").exists()


def test_a_full_disk_during_extraction_is_one_line_and_a_rerun_resumes(run, store, pristine, cli, monkeypatch):
    """Writing a group that the disk cannot hold names the group and says that a rerun resumes; the group stays
    marked incomplete (the others untouched), and the rerun writes it whole."""
    import errno

    real = xr.Dataset.to_zarr

    def full(self, *args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    shutil.rmtree(store / BASE)
    monkeypatch.setattr(xr.Dataset, "to_zarr", full)
    result = cli("extract", run, "--out", store, "--batch-size", BATCH, "--quiet", "--device", "cpu")
    assert_one_line_error(result, BASE, "No space left on device", "rerun")
    with pytest.warns(UserWarning, match="incomplete"):
        assert BASE not in list_networks(open_store(store))
    monkeypatch.setattr(xr.Dataset, "to_zarr", real)
    assert _repair(run, store)["written"] == [BASE]
    assert verify_group(store, BASE, _cut_points(run)) is None


def test_an_unexpected_error_extracting_one_network_fails_that_network_only(run, tmp_path, monkeypatch):
    """An error of one network's own (out of memory, say) is reported for it, and the others are extracted and
    consolidated all the same."""
    import probe.execution.extract as extract

    real = extract.extract_network

    def out_of_memory(store, spec, *args, **kwargs):
        if spec.id == BASE:
            raise RuntimeError("CUDA out of memory")
        return real(store, spec, *args, **kwargs)

    monkeypatch.setattr(extract, "extract_network", out_of_memory)
    result = extract_run(run, tmp_path / "acts.zarr", batch_size=BATCH, progress=False)
    assert result["failed"] == {BASE: "RuntimeError: CUDA out of memory"}
    assert len(result["written"]) == 3
    assert sorted(list_networks(xr.open_datatree(tmp_path / "acts.zarr", engine="zarr"))) == sorted(result["written"])


# --- the store's settings: a repair writes what the store holds ---------------------------------------------------

FULL = ("--probe-set", "both", "--spatial", "full")


@pytest.fixture(scope="module")
def pristine_full(run, tmp_path_factory, cache_dir):
    """The run's activations with other settings than the defaults: both tasks' images, whole maps."""
    store = tmp_path_factory.mktemp("pristine-full") / "acts.zarr"
    result = invoke(cache_dir, "extract", run, "--out", store, *FULL, "--batch-size", BATCH, "--quiet", "--device",
                    "cpu")
    assert result.exit_code == 0 and "wrote 4" in result.output, result.output
    return store


def _flip_a_byte(path):
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))


def _first_chunk(store, layer):
    return sorted(p for p in (store / BASE / layer / "c").rglob("*") if p.is_file())[0]


@pytest.mark.parametrize("damage", ["conv1 chunk", "logits chunk", "group metadata"])
def test_the_repair_that_analyze_names_restores_the_numbers(run, pristine_full, tmp_path, cli, damage):
    """The command the refusal names rewrites the group with the store's settings (its probe set, reduction, seed,
    dtype, batch and chunk size), not the defaults: the numbers come back bit for bit."""
    store = tmp_path / "acts.zarr"
    shutil.copytree(pristine_full, store)
    if damage == "group metadata":
        (store / BASE / "zarr.json").unlink()
    else:
        _flip_a_byte(_first_chunk(store, damage.split()[0]))
    message = _refused(run, store, BASE, f"--networks {BASE}")
    command = message.split("'probe extract ")[1].split("'")[0].split()
    result = cli("extract", *command, "--quiet", "--device", "cpu")
    assert result.exit_code == 0 and "wrote 1" in result.output, result.output
    _assert_same_group(store, pristine_full, BASE)  # the very values, so every number computed from them
    open_checked(store, run, read_plan(run)[1])  # what analyze checks, passed


def test_other_settings_for_a_store_are_refused_naming_both(run, pristine_full, tmp_path, cli):
    store = tmp_path / "acts.zarr"
    shutil.copytree(pristine_full, store)
    before = (store / BASE / "zarr.json").read_bytes()
    result = cli("extract", run, "--out", store, "--spatial", "mean", "--quiet", "--device", "cpu")
    assert_one_line_error(result, "--probe-set both", "--spatial full", "--spatial mean", "--out")
    with pytest.raises(ProbeError, match="--probe-set target") as e:  # the API's objects are whole settings
        extract_run(run, store, images=ExtractionImages(), progress=False)
    assert "--probe-set both" in str(e.value) and "\n" not in str(e.value)
    assert (store / BASE / "zarr.json").read_bytes() == before
    # what is not given is the store's: a rerun with some of its own settings, or none, finds it complete
    for options in ((), ("--probe-set", "both"), ("--spatial", "full", "--seed", "0")):
        result = cli("extract", run, "--out", store, *options, "--quiet", "--device", "cpu")
        assert result.exit_code == 0 and "wrote 0, already complete 4" in result.output, result.output


def _set_attrs(store, network_id, **attrs):
    meta_path = store / network_id / "zarr.json"
    meta = json.loads(meta_path.read_text())
    meta["attributes"].update(attrs)
    meta_path.write_text(json.dumps(meta))


OTHER = "random-s0/init0/A1B"


def test_a_group_of_other_settings_is_refused_and_rewritten(run, store, pristine, cli):
    """A group whose settings differ from the store's (written by hand, or by an extraction before stores recorded
    their settings) whole as it may be, is refused by analyze with the command that rewrites it, and rewritten."""
    _set_attrs(store, OTHER, probe_set=json.dumps({"tasks": "both", "per_class": None, "seed": 0,
                                                   "per_class_mode": "exactly"}))
    _refused(run, store, OTHER, "--probe-set both", "--probe-set target", f"--networks {OTHER}")
    result = cli("extract", run, "--out", store, "--networks", OTHER, "--quiet", "--device", "cpu")
    assert result.exit_code == 0 and "wrote 1" in result.output, result.output
    assert any(OTHER in line and "--probe-set both" in line for line in result.output.splitlines())
    _assert_same_group(store, pristine, OTHER)
    representation_dataset(run, store)


def test_a_store_without_its_settings_whose_groups_disagree_is_refused(run, store, pristine, cli):
    (store / ".probe" / "settings.json").unlink(missing_ok=True)  # as written before stores recorded them
    assert extract_run(run, store, batch_size=BATCH, progress=False)["skipped"]  # its groups agree: kept
    (store / ".probe" / "settings.json").unlink(missing_ok=True)
    _set_attrs(store, OTHER, reduction=json.dumps({"spatial": "full", "seed": 0, "dtype": "float32"}))
    _refused(run, store, OTHER, "--spatial full", "--spatial mean")
    assert_one_line_error(cli("extract", run, "--out", store, "--quiet", "--device", "cpu"), OTHER, "--spatial full",
                          "--out")
    result = cli("extract", run, "--out", store, "--spatial", "mean", "--batch-size", BATCH, "--quiet", "--device",
                 "cpu")
    assert result.exit_code == 0 and "wrote 1, already complete 3" in result.output, result.output
    _assert_same_group(store, pristine, OTHER)
    representation_dataset(run, store)


def test_a_store_recorded_before_the_test_cap_and_the_token_policy_keeps_its_settings(run, store, cli):
    """A store (its record and its groups' attrs) written before extraction took the run's test cap and a token
    policy: it took every test image, and no layer had tokens; a rerun finds it complete, analyze reads it, and
    another token policy is refused naming what it holds."""
    path = store / ".probe" / "settings.json"
    record = json.loads(path.read_text())
    del record["test_per_class"], record["tokens"]
    path.write_text(json.dumps(record))
    for nid in _specs(run):
        attrs = json.loads((store / nid / "zarr.json").read_text())["attributes"]
        images, reduction = json.loads(attrs["probe_set"]), json.loads(attrs["reduction"])
        del images["test_per_class"], reduction["tokens"]
        _set_attrs(store, nid, probe_set=json.dumps(images), reduction=json.dumps(reduction))
    result = cli("extract", run, "--out", store, "--quiet", "--device", "cpu")
    assert result.exit_code == 0 and "wrote 0, already complete 4" in result.output, result.output
    representation_dataset(run, store)
    assert_one_line_error(cli("extract", run, "--out", store, "--tokens", "mean", "--quiet", "--device", "cpu"),
                          "--all-test-images", "--tokens auto", "--tokens mean", "--out")


# --- a group is complete only when every variable holds every sample ----------------------------------------------

@pytest.mark.parametrize("recorded", [True, False])
def test_a_group_whose_variables_hold_different_samples_is_never_accepted(run, store, pristine, recorded):
    """What two writers of one group left: its variables of different lengths, marked complete, with a manifest
    that matches them. Its own check finds it, analyze refuses it, and extract rewrites it."""
    from probe.storage.activation_store import _manifest, _manifest_path

    conv1 = zarr.open_array(str(store / BASE / "conv1"), mode="r+")
    conv1.append(np.asarray(conv1[:BATCH]), axis=0)
    if not recorded:  # a group written before groups recorded their number of samples
        meta_path = store / BASE / "zarr.json"
        meta = json.loads(meta_path.read_text())
        meta["attributes"].pop("n_samples", None)
        meta_path.write_text(json.dumps(meta))
    _manifest_path(store, BASE).write_text(json.dumps(_manifest(store / BASE)))
    problem = verify_group(store, BASE, _cut_points(run))
    assert problem is not None and "conv1" in problem and "samples" in problem
    _refused(run, store, BASE, "conv1")
    assert "conv1" in _repair(run, store)["damaged"][BASE]
    _assert_same_group(store, pristine, BASE)


def test_a_group_is_not_marked_complete_unless_every_variable_has_every_sample(run, store, pristine, monkeypatch):
    shutil.rmtree(store / BASE)
    original, calls = xr.Dataset.to_zarr, {"n": 0}

    def losing_logits(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # one chunk of logits lost between the writes of two processes
            self = self.drop_vars("logits")
        return original(self, *args, **kwargs)

    monkeypatch.setattr(xr.Dataset, "to_zarr", losing_logits)
    result = extract_run(run, store, networks=["baseA"], batch_size=BATCH, progress=False)
    monkeypatch.undo()
    assert "logits" in result["failed"][BASE] and "incomplete" in result["failed"][BASE]
    assert verify_group(store, BASE, _cut_points(run)).startswith("it is incomplete")
    assert _repair(run, store)["written"] == [BASE]
    _assert_same_group(store, pristine, BASE)


# --- a full disk -----------------------------------------------------------------------------------------------------

def test_a_full_disk_that_fails_the_consolidation_too_is_still_one_line(run, store, cli, monkeypatch):
    """The disk is full for every zarr write: the group's, then the root's consolidated metadata after it. The
    line says which group could not be written and what to do, not the consolidation's error."""
    import errno

    import zarr.storage._local as local

    def full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    shutil.rmtree(store / BASE)
    monkeypatch.setattr(local, "_put", full)
    result = cli("extract", run, "--out", store, "--quiet", "--device", "cpu")
    assert_one_line_error(result, str(store / BASE), "No space left on device", "free space", "rerun")
    monkeypatch.undo()
    monkeypatch.setattr(zarr, "consolidate_metadata", full)  # nothing else to write: the consolidation's own line
    result = cli("extract", run, "--out", store, "--networks", "baseB", "--quiet", "--device", "cpu")
    assert_one_line_error(result, str(store / "zarr.json"), "No space left on device", "free space")


def test_weights_rewritten_to_the_same_size_and_time_are_stale_to_analyze_and_extract(run, pristine, tmp_path):
    """A weights file rewritten with its tensors x 1.5 keeps its size, and here its time: analyze refuses the stale
    group by name with the command that refreshes it, and extract writes it again (the content is fingerprinted)."""
    import os

    from safetensors import safe_open
    from safetensors.torch import save_file

    from probe.storage.run import Run

    copy, store = tmp_path / "run", tmp_path / "acts.zarr"
    shutil.copytree(run, copy)
    shutil.copytree(pristine, store)
    weights = Run(copy).network(BASE).weights
    before = weights.stat()
    with safe_open(str(weights), "pt") as f:
        tensors, meta = {k: f.get_tensor(k) * 1.5 for k in f.keys()}, f.metadata()
    save_file(tensors, str(weights), metadata=meta)
    os.utime(weights, ns=(before.st_atime_ns, before.st_mtime_ns))
    assert weights.stat().st_size == before.st_size and weights.stat().st_mtime_ns == before.st_mtime_ns
    with pytest.raises(ProbeError, match="changed since") as e:
        representation_dataset(copy, store)
    assert BASE in str(e.value) and "probe extract" in str(e.value) and "\n" not in str(e.value)
    assert _repair(copy, store)["written"] == [BASE]
    representation_dataset(copy, store)  # current again


def test_a_lost_settings_record_is_rebuilt_with_the_groups_own_batch_and_chunk_sizes(run, store, pristine, cli):
    """Lost .probe/settings.json: the settings come back from the groups' attrs, batch and chunk sizes included
    (the defaults, 256 and 1024, would compute the next repair otherwise, different in the last bits)."""
    from probe.execution.extract import resolve_settings, run_defaults

    (store / ".probe" / "settings.json").unlink()
    settings = resolve_settings(store, {}, run_defaults(run))
    assert (settings["batch_size"], settings["chunk_size"]) == (BATCH, 4 * BATCH)
    shutil.rmtree(store / BASE / "conv1")
    result = cli("extract", run, "--out", store, "--quiet", "--device", "cpu")
    assert result.exit_code == 0 and "wrote 1" in result.output, result.output
    _assert_same_group(store, pristine, BASE)


def test_zarrs_loop_is_closed_when_a_command_ends(run, store):
    """zarr's exit handler waits 0.2 s for its loop thread and then closes the loop, which fails ('Cannot close a
    running event loop') when the thread is still busy: a command closes it itself, waiting, before exiting."""
    import zarr.core.sync as sync

    from probe.storage.activation_store import close_zarr_loop

    zarr.open_group(str(store), mode="r")  # starts zarr's loop thread
    assert sync.loop[0] is not None and sync.loop[0].is_running()
    close_zarr_loop()
    assert sync.loop[0] is None and sync.iothread[0] is None
    assert zarr.open_group(str(store), mode="r") is not None  # zarr starts a new loop when used again

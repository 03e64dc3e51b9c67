"""probe extract: the labelled zarr store of every network's per-layer activations."""

from __future__ import annotations

import json
import re
import tracemalloc
from collections import OrderedDict

import numpy as np
import pytest
import safetensors
import safetensors.torch
import torch
import xarray as xr
import zarr
from conftest import TINY_STUDY, assert_one_line_error, assert_same_up_to_rounding, invoke
from torch import nn

from probe.analysis.stores import layer_arrays, list_networks, open_store
from probe.architectures import build_model
from probe.data.datasets import load_dataset
from probe.data.tasks import task_indices
from probe.errors import ProbeError
from probe.execution.batches import Normalize, center_crop, to_device
from probe.execution.extract import ExtractionImages, Reduction, extract_network, extract_run
from probe.planning.plan import read_plan
from probe.specs.spec import NetworkSpec
from probe.storage.activation_store import group_is_complete
from probe.storage.atomic import read_json
from probe.storage.checkpoint import load_weights
from probe.storage.run import Run

pytestmark = pytest.mark.filterwarnings("ignore::zarr.errors.ZarrUserWarning")


@pytest.fixture(scope="module")
def run(tmp_path_factory, cache_dir):
    """A small trained run: bases and BnB/AnB at cuts 1 and 3, one seed."""
    run_dir = tmp_path_factory.mktemp("run")
    result = invoke(cache_dir, "train", run_dir, *TINY_STUDY, "--cuts", "1,3", "--variants", "BnB,AnB")
    assert result.exit_code == 0, result.output
    return run_dir


def _specs(run_dir):
    return {p.spec.id: p.spec for p in read_plan(run_dir)[1]}


def _direct(run_dir, spec, samples):
    """Activations of a plain forward pass over the given test images, spatially averaged."""
    state, _, _ = load_weights(Run(run_dir).network(spec.id).weights, spec)
    model = build_model(spec)
    model.load_state_dict(state)
    model.eval()
    arrays = load_dataset(spec.data)
    stats = read_json(Run(run_dir).data)
    x = Normalize(stats["mean"], stats["std"], torch.device("cpu"))(
        center_crop(to_device(np.asarray(arrays.test_x[samples]), torch.device("cpu")), spec.input_size))
    with torch.no_grad():
        logits, acts = model.forward_intermediates(x)
    return logits, acts


def test_store_matches_a_direct_forward_pass(run, tmp_path):
    store = tmp_path / "acts.zarr"
    result = extract_run(run, store, batch_size=32, progress=False)
    assert len(result["written"]) == len(_specs(run)) and not result["untrained"]
    tree = open_store(store)
    assert sorted(list_networks(tree)) == sorted(_specs(run))
    for nid, spec in list(_specs(run).items())[:3]:
        ds = tree[nid].to_dataset()
        samples = ds["sample"].values
        arrays = load_dataset(spec.data)
        labels = np.asarray(arrays.test_y)
        expected = np.flatnonzero(np.isin(labels, [arrays.classes.index(c) for c in spec.target_classes]))
        np.testing.assert_array_equal(np.sort(samples), expected)  # every target test image, in a seeded order
        np.testing.assert_array_equal(samples, np.random.default_rng(0).permutation(expected))
        np.testing.assert_array_equal(ds["label"].values, labels[samples])
        assert list(ds["class_name"].values) == [arrays.classes[k] for k in labels[samples]]
        assert set(ds["task"].values) == {spec.target}
        logits, acts = _direct(run, spec, samples)
        for name, a in acts.items():
            want = a.mean(dim=(2, 3)) if a.ndim == 4 else a
            np.testing.assert_allclose(ds[name].values, want.numpy(), rtol=1e-5, atol=1e-5)
            assert ds[name].dims == ("sample", f"{name}_unit")
        np.testing.assert_allclose(ds["logits"].values, logits.numpy(), rtol=1e-5, atol=1e-5)
        assert list(ds["logit_class"].values) == list(spec.target_classes)
        assert NetworkSpec.from_dict(json.loads(ds.attrs["spec"])) == spec
        assert ds.attrs["complete"] is True


def test_round_trip_is_identical(run, tmp_path):
    store = tmp_path / "acts.zarr"
    extract_run(run, store, networks=["baseA", "baseB"], progress=False)
    tree = open_store(store).load()
    copy = tmp_path / "copy.zarr"
    tree.to_zarr(copy)
    xr.testing.assert_identical(xr.open_datatree(copy, engine="zarr").load(), tree)
    nid = list_networks(tree)[0]
    xr.testing.assert_identical(xr.open_zarr(store, group=nid).load(), tree[nid].to_dataset())


def _peak_bytes(fn):
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_chunked_writes_equal_one_batch_and_memory_stays_bounded(run, tmp_path):
    spec = _specs(run)["random-s0/init0/A3B"]
    full = Reduction("full")

    def extract(store, **kw):
        return lambda: extract_run(run, tmp_path / store, networks=[spec.id], reduction=full, progress=False, **kw)

    extract("warm.zarr", batch_size=8)()  # imports, dataset and codec set-up out of the measurement
    few = _peak_bytes(extract("few.zarr", batch_size=8, images=ExtractionImages(per_class=2)))
    many = _peak_bytes(extract("small.zarr", batch_size=8))
    extract("big.zarr", batch_size=10_000)()
    a = xr.open_zarr(tmp_path / "small.zarr", group=spec.id).load()
    b = xr.open_zarr(tmp_path / "big.zarr", group=spec.id).load()
    assert a.sizes["sample"] > 3 * 32  # many more samples than one 32-sample chunk holds
    assert (a.attrs["batch_size"], b.attrs["batch_size"]) == (8, 10_000)  # what each group was written with
    for ds in (a, b):
        del ds.attrs["batch_size"], ds.attrs["chunk_size"]
    assert_same_up_to_rounding(a, b)  # batches of 8 and of 10,000 images may run different kernels
    assert zarr.open_array(str(tmp_path / "small.zarr"), path=f"{spec.id}/conv1", mode="r").chunks[0] == 32
    total = sum(v.nbytes for v in a.data_vars.values())
    # 15x more samples cost about the same peak: the writer holds a batch or two, never the whole group
    assert many - few < total / 4, f"peak grew by {many - few} bytes for a {total}-byte group"


def test_networks_see_the_same_samples(run, tmp_path):
    store = tmp_path / "acts.zarr"
    extract_run(run, store, images=ExtractionImages("both"), progress=False)
    tree = open_store(store)
    fc6 = layer_arrays(tree, "fc6", stack=True)
    assert fc6.sizes["network"] == len(_specs(run))
    assert set(fc6["task"].values) == {"A", "B"}
    target_store = tmp_path / "target.zarr"
    extract_run(run, target_store, progress=False)
    tree = open_store(target_store)
    on_b = [nid for nid, s in _specs(run).items() if s.target == "B"]
    arrays = layer_arrays(tree, "conv1", on_b)
    first = next(iter(arrays.values()))
    for a in arrays.values():
        np.testing.assert_array_equal(a["sample"].values, first["sample"].values)
    ids = "random-s0/init0/baseA, random-s0/init0/baseB"
    with pytest.raises(ProbeError, match=f"networks {ids} were probed on different images"):
        layer_arrays(tree, "conv1", ["random-s0/init0/baseA", "random-s0/init0/baseB"])


def test_killed_extraction_resumes(run, tmp_path, monkeypatch):
    store = tmp_path / "acts.zarr"
    specs = _specs(run)
    extract_run(run, store, networks=["baseA"], batch_size=16, progress=False)
    victim = specs["random-s0/init0/B1B"]
    calls = {"n": 0}
    original = xr.Dataset.to_zarr

    def dying(self, *args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise KeyboardInterrupt
        return original(self, *args, **kwargs)

    monkeypatch.setattr(xr.Dataset, "to_zarr", dying)
    with pytest.raises(KeyboardInterrupt):
        extract_run(run, store, networks=[victim.id], batch_size=16, progress=False)
    monkeypatch.setattr(xr.Dataset, "to_zarr", original)
    assert group_is_complete(store, victim.id) is False
    assert zarr.open_group(str(store), path=victim.id, mode="r").attrs["complete"] is False
    before = (store / "random-s0/init0/baseA/zarr.json").stat().st_mtime_ns
    result = extract_run(run, store, batch_size=16, progress=False)
    assert victim.id in result["written"] and "random-s0/init0/baseA" in result["skipped"]
    assert (store / "random-s0/init0/baseA/zarr.json").stat().st_mtime_ns == before
    done = xr.open_zarr(store, group=victim.id)
    fresh = tmp_path / "fresh.zarr"
    extract_run(run, fresh, networks=[victim.id], batch_size=16, progress=False)
    xr.testing.assert_identical(done.load(), xr.open_zarr(fresh, group=victim.id).load())
    assert extract_run(run, store, batch_size=16, progress=False)["written"] == []


def test_sampled_positions_line_up_across_networks(run, tmp_path):
    store = tmp_path / "acts.zarr"
    extract_run(run, store, networks=["baseB", "B3B"], reduction=Reduction("sample:3", dtype="float16"),
                progress=False)
    tree = open_store(store)
    a, b = (tree[f"random-s0/init0/{n}"].to_dataset() for n in ("baseB", "B3B"))
    assert a["conv2"].dims == ("sample", "conv2_position", "conv2_unit") and a.sizes["conv2_position"] == 3
    assert a["conv2"].dtype == np.float16 and a["fc6"].dims == ("sample", "fc6_unit")
    np.testing.assert_array_equal(a["conv2_pos_y"].values, b["conv2_pos_y"].values)
    np.testing.assert_array_equal(a["conv2_pos_x"].values, b["conv2_pos_x"].values)
    # the sampled values are the map's values at those positions
    spec = _specs(run)["random-s0/init0/baseB"]
    _, acts = _direct(run, spec, a["sample"].values)
    conv2 = acts["conv2"].numpy()
    ys, xs = a["conv2_pos_y"].values, a["conv2_pos_x"].values
    want = np.stack([conv2[i][:, ys[i], xs[i]].T for i in range(len(ys))])
    np.testing.assert_allclose(a["conv2"].values.astype(np.float32), want, rtol=1e-2, atol=1e-2)


def test_other_settings_need_another_store(run, tmp_path, cli):
    store = tmp_path / "acts.zarr"
    extract_run(run, store, networks=["baseA"], progress=False)
    result = cli("extract", run, "--out", store, "--networks", "baseA", "--spatial", "full", "--quiet")
    assert_one_line_error(result, "--out")
    result = cli("extract", run, "--spatial", "middle", "--quiet")
    assert_one_line_error(result, "middle")
    result = cli("extract", run, "--out", tmp_path / "ok.zarr", "--per-class", "5", "--quiet", "--networks",
                 "baseA,A1B")
    assert result.exit_code == 0, result.output
    ds = open_store(tmp_path / "ok.zarr")["random-s0/init0/baseA"].to_dataset()
    assert ds.sizes["sample"] == 5 * len(_specs(run)["random-s0/init0/baseA"].target_classes)
    assert np.unique(ds["label"].values, return_counts=True)[1].tolist() == [5] * 5


def test_extract_network_writes_only_its_group(run, tmp_path):
    spec = _specs(run)["random-s0/init0/baseA"]
    store = tmp_path / "acts.zarr"
    model = build_model(spec)
    arrays = load_dataset(spec.data)
    stats = read_json(Run(run).data)
    extract_network(store, spec, model, arrays, Normalize(stats["mean"], stats["std"], torch.device("cpu")),
                    ExtractionImages(), Reduction(), torch.device("cpu"), progress=False)
    assert [p.name for p in (store / "random-s0/init0").iterdir() if p.is_dir()] == ["baseA"]


def test_a_retrained_network_is_extracted_again(run, tmp_path):
    import os

    store = tmp_path / "acts.zarr"
    extract_run(run, store, networks=["baseA"], progress=False)
    weights = Run(run).network("random-s0/init0/baseA").weights
    assert extract_run(run, store, networks=["baseA"], progress=False)["skipped"] == ["random-s0/init0/baseA"]
    st, original = weights.stat(), weights.read_bytes()
    os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns + 10**9))  # touched, the same weights: nothing to redo
    assert extract_run(run, store, networks=["baseA"], progress=False)["skipped"] == ["random-s0/init0/baseA"]
    tensors, meta = safetensors.torch.load_file(str(weights)), safetensors.safe_open(str(weights), "pt").metadata()
    safetensors.torch.save_file({k: v * 1.5 for k, v in tensors.items()}, str(weights), metadata=meta)
    try:  # trained again (other weights): written anew
        assert extract_run(run, store, networks=["baseA"], progress=False)["written"] == ["random-s0/init0/baseA"]
    finally:
        weights.write_bytes(original)
        os.utime(weights, ns=(st.st_atime_ns, st.st_mtime_ns))


# --- the run's test cap, what extraction says it will do, and the layers' order --------------------------------------

ORDERED = ["features_3", "features_7", "features_11"]  # the network's order; alphabetically 11, 3, 7
CAP = 6  # the run's --test-per-class: 30 of a task's 5 classes, of the synthetic dataset's 150


def ordered_net(in_channels, num_classes, width=4):
    """Three conv blocks of four modules each, cut after each block: layers whose names sort out of their order."""
    blocks, channels = [], in_channels
    for i in range(3):
        blocks += [nn.Conv2d(channels, width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
                   nn.MaxPool2d(2) if i else nn.Identity()]
        channels = width
    return nn.Sequential(OrderedDict(features=nn.Sequential(*blocks), head=nn.Sequential(
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, num_classes))))


@pytest.fixture(scope="module")
def capped_run(tmp_path_factory, cache_dir):
    """A run of ordered_net (cut at features.3, .7, .11) tested on CAP images a class: the bases and AnB at cut 1."""
    run_dir = tmp_path_factory.mktemp("capped")
    result = invoke(cache_dir, "train", run_dir, "--dataset", "synthetic", "--arch", "test_extract:ordered_net",
                    "--cut-at", "features.3,features.7,features.11", "--epochs", "1", "--batch-size", "32",
                    "--train-per-class", "10", "--test-per-class", str(CAP), "--cuts", "1", "--variants", "AnB")
    assert result.exit_code == 0, result.output
    return run_dir


def test_extract_probes_the_images_the_run_tested_and_says_what_it_will_do(capped_run, tmp_path, cli):
    store = tmp_path / "acts.zarr"
    result = cli("extract", capped_run, "--out", store, "--quiet", "--device", "cpu")
    assert result.exit_code == 0 and "wrote 4" in result.output, result.output
    lines = result.output.splitlines()
    # before it starts: the networks and the images; then one short line per network, and the summary
    assert len(lines) == 6, result.output
    first = lines[0]
    assert "4 trained networks" in first and f"each on {5 * CAP} test images" in first, first
    assert f"at most {CAP} a class" in first and "--all-test-images" in first, first
    for line in lines[1:5]:
        assert re.fullmatch(rf"\[[1-4]/4\] random-s0/init0/\S+ written \({5 * CAP} images\), \d+ s", line), line
    tree = open_store(store)
    for nid, spec in _specs(capped_run).items():
        ds = tree[nid].to_dataset()
        arrays = load_dataset(spec.data)
        tested = task_indices(arrays, list(spec.target_classes), spec.data).test  # what its test accuracy counts
        np.testing.assert_array_equal(np.sort(ds["sample"].values), tested)
        assert json.loads(ds.attrs["probe_set"])["test_per_class"] == CAP
    assert json.loads((store / ".probe" / "settings.json").read_text())["test_per_class"] == CAP


def test_more_test_images_than_the_run_tested_are_asked_for(capped_run, tmp_path, cli):
    capped = tmp_path / "capped.zarr"
    extract_run(capped_run, capped, networks=["baseA"], progress=False)
    assert open_store(capped)["random-s0/init0/baseA"].sizes["sample"] == 5 * CAP
    every = tmp_path / "every.zarr"
    result = cli("extract", capped_run, "--out", every, "--networks", "baseA", "--all-test-images", "--quiet")
    assert result.exit_code == 0 and "every one" in result.output.splitlines()[0], result.output
    assert open_store(every)["random-s0/init0/baseA"].sizes["sample"] == 150
    assert json.loads((every / ".probe" / "settings.json").read_text())["test_per_class"] is None
    # a store holds the images it was extracted on
    assert_one_line_error(cli("extract", capped_run, "--out", capped, "--all-test-images", "--quiet"),
                          f"--test-per-class {CAP}", "--all-test-images", "--out")
    assert "wrote 0" in cli("extract", capped_run, "--out", every, "--networks", "baseA", "--quiet").output
    # more per class than the cap leaves: the refusal says how to take them
    assert_one_line_error(cli("extract", capped_run, "--out", tmp_path / "more.zarr", "--per-class", "10",
                              "--quiet"), f"at {CAP} a class", "--all-test-images")
    result = cli("extract", capped_run, "--out", tmp_path / "more.zarr", "--per-class", "10", "--all-test-images",
                 "--networks", "baseA", "--quiet")
    assert result.exit_code == 0, result.output
    assert open_store(tmp_path / "more.zarr")["random-s0/init0/baseA"].sizes["sample"] == 50
    # a smaller cap takes the first of the images the run tested, as training chose them
    result = cli("extract", capped_run, "--out", tmp_path / "fewer.zarr", "--test-per-class", "2", "--networks",
                 "baseA", "--quiet")
    assert result.exit_code == 0, result.output
    fewer = open_store(tmp_path / "fewer.zarr")["random-s0/init0/baseA"]["sample"].values
    assert len(fewer) == 10 and set(fewer) <= set(open_store(capped)["random-s0/init0/baseA"]["sample"].values)


def test_the_store_keeps_the_networks_layer_order(capped_run, tmp_path):
    store = tmp_path / "acts.zarr"
    extract_run(capped_run, store, networks=["baseA", "baseB"], progress=False)
    tree = xr.open_datatree(store, engine="zarr")  # as a user's script opens it
    for nid in ("random-s0/init0/baseA", "random-s0/init0/baseB"):
        ds = tree[nid].to_dataset()
        assert list(ds.data_vars) == [*ORDERED, "logits"]
        assert json.loads(ds.attrs["layers"]) == ORDERED  # the documented walk, whatever opened the store
        assert [ds[name].attrs["layer_index"] for name in json.loads(ds.attrs["layers"])] == [1, 2, 3]
    assert list(xr.open_zarr(store, group="random-s0/init0/baseA").data_vars) == [*ORDERED, "logits"]
    # and as probe's own analyses open it, group by group without the consolidated metadata
    assert list(open_store(store)["random-s0/init0/baseA"].to_dataset().data_vars) == [*ORDERED, "logits"]

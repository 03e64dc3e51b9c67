"""Data conventions: split files read once and labelled, per-class caps, the probe set's shuffled order, how images
are resized, and what 'probe plan' says about each task."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import warnings

import numpy as np
import pytest
import torch
from conftest import TINY_STUDY, assert_one_line_error, invoke
from PIL import Image

from probe.analysis.similarity import linear_cka, streaming_cka
from probe.analysis.stores import layer_arrays, open_store
from probe.data.arrays import ImageArrays, to_square
from probe.data.datasets import _fingerprint, _locate, load_dataset
from probe.data.splits import resolve_split
from probe.data.synthetic import synthetic_arrays
from probe.data.tasks import task_counts, task_data
from probe.errors import ProbeError
from probe.execution.extract import ExtractionImages, extract_run
from probe.execution.sweep import plan_study
from probe.planning.plan import Study, read_plan
from probe.planning.summary import task_summaries
from probe.specs.spec import ArchSpec, DataSpec, NetworkSpec
from probe.storage.run import Run

pytestmark = pytest.mark.filterwarnings("ignore::zarr.errors.ZarrUserWarning")

ARCH = ArchSpec("caffenet-small", options={"width": 0.125})
# a study's networks at one cut: the bases, then B1B and A1A
SMALL = [*TINY_STUDY, "--cuts", "1", "--variants", "BnB"]


def uneven():
    """The synthetic images with classes of unequal size (class k keeps 10 + 10 k training and 3 + k test images),
    importable as test_data_conventions:uneven."""
    train_x, train_y, test_x, test_y, classes = synthetic_arrays()

    def cut(x, y, base, step):
        keep = np.concatenate([np.flatnonzero(y == k)[: base + step * k] for k in range(len(classes))])
        keep.sort()
        return x[keep], y[keep]

    return (*cut(train_x, train_y, 10, 10), *cut(test_x, test_y, 3, 1), classes)


def _uneven_arrays() -> ImageArrays:
    return ImageArrays(*uneven())


# --- file: splits are read once, when a run is planned ------------------------------------------------------------

def test_a_file_split_run_resumes_from_another_directory(tmp_path, monkeypatch, cli, synthetic_classes):
    """A relative split file is read where the run starts; resuming it, with or without the study's options,
    and growing it by a seed, read the classes from plan.json, wherever they are run from."""
    start, elsewhere, run = tmp_path / "start", tmp_path / "elsewhere", tmp_path / "run"
    start.mkdir()
    elsewhere.mkdir()
    (start / "split.json").write_text(json.dumps({"A": synthetic_classes[:3], "B": synthetic_classes[3:6]}))
    args = [*SMALL, "--split", "file:split.json"]
    monkeypatch.chdir(start)
    result = cli("train", run, *args, "--networks", "baseB")
    assert result.exit_code == 0, result.output
    monkeypatch.chdir(elsewhere)
    assert_one_line_error(cli("plan", *args), "'split.json'", "does not exist")  # no run: the file is read
    result = cli("train", run)
    assert result.exit_code == 0, result.output
    assert "trained 3, already done 1" in result.output
    result = cli("train", run, *args)  # the same study, named in full
    assert result.exit_code == 0, result.output
    assert "trained 0, already done 4" in result.output
    result = cli("train", run, *args, "--seeds", "0,1", "--extend", "--networks", "file_split.json/init1/baseB")
    assert result.exit_code == 0, result.output
    _, plan = read_plan(run)
    assert {(p.spec.classes_a, p.spec.classes_b) for p in plan} == {
        (tuple(synthetic_classes[:3]), tuple(synthetic_classes[3:6]))}
    assert len(plan) == 8
    # a split new to the run is read from its file, and a missing one is the usual one-line error
    result = cli("train", run, *args, "--split", "file:other.json", "--extend")
    assert_one_line_error(result, "'other.json'", "does not exist")


def test_an_edited_split_file_does_not_change_a_planned_run(tmp_path, cache_dir, split_file, synthetic_classes):
    split = split_file({"A": synthetic_classes[:2], "B": synthetic_classes[2:4]})
    study = Study(DataSpec("synthetic", train_per_class=30), ARCH, cuts=(1,), variants=("BnB",), splits=(split,))
    first, _ = plan_study(tmp_path / "run", study, cache_dir)
    split_file({"A": synthetic_classes[5:7], "B": synthetic_classes[7:9]})  # the same path, other classes
    again, _ = plan_study(tmp_path / "run", study, cache_dir)
    assert again == first
    assert plan_study(None, study, cache_dir)[0][0].spec.classes_a == tuple(synthetic_classes[5:7])


def test_recorded_classes_are_checked_against_the_dataset(synthetic_classes):
    with pytest.raises(ProbeError, match="'gone'"):
        resolve_split("file:s.json", synthetic_classes, recorded={"A": ["gone"], "B": ["class1"]})


# --- split files may carry a name and a note ----------------------------------------------------------------------

def test_split_file_name_and_note(split_file, synthetic_classes):
    split = split_file({"A": [0, 1], "B": [2], "name": "my-split_1.0", "note": "cats vs dogs, by hand"})
    assert resolve_split(split, synthetic_classes) == {"A": ["class0", "class1"], "B": ["class2"],
                                                       "name": "my-split_1.0", "note": "cats vs dogs, by hand"}
    assert resolve_split(split_file({"A": [0], "B": [2], "note": "n"}), synthetic_classes)["note"] == "n"


@pytest.mark.parametrize("extra, culprits", [
    ({"name": "has space"}, ["'has space'", "letters, digits"]),
    ({"name": ""}, ["''", "letters, digits"]),
    ({"name": "a/b"}, ["'a/b'"]),
    ({"name": "x" * 65}, ["1 to 64"]),
    ({"name": 3}, ["3", "letters, digits"]),
    ({"name": "random"}, ["'random'", "probe's own"]),
    ({"note": ["a"]}, ["['a']", "note"]),
    ({"notes": "typo"}, ["'notes'", "'name'", "'note'"]),
])
def test_split_file_labels_are_checked(split_file, synthetic_classes, extra, culprits):
    split = split_file({"A": [0], "B": [1], **extra})
    with pytest.raises(ProbeError) as err:
        resolve_split(split, synthetic_classes)
    message = str(err.value)
    assert "\n" not in message and split[len("file:"):] in message
    for culprit in culprits:
        assert culprit in message, message


def test_split_names_and_notes_are_recorded_in_the_plan(tmp_path, cache_dir, split_file, synthetic_classes):
    named = split_file({"A": [0, 1], "B": [2, 3], "name": "halves", "note": "the first four classes"}, "named.json")
    plain = split_file({"A": [4, 5], "B": [6, 7]}, "plain.json")
    study = Study(DataSpec("synthetic", train_per_class=30), ARCH, cuts=(1,), variants=("BnB",),
                  splits=(named, plain))
    plan, _ = plan_study(tmp_path / "run", study, cache_dir)
    stored = json.loads(Run(tmp_path / "run").plan.read_text())
    assert stored["split_files"] == {named: {"name": "halves", "note": "the first four classes"}}
    # ids are as before: the split's path, never its name
    assert {n["id"].split("/")[0] for n in stored["networks"]} == {
        named.replace("/", "_").replace(":", "_"), plain.replace("/", "_").replace(":", "_")}
    assert read_plan(tmp_path / "run")[1] == plan
    assert {(p.spec.split, p.split_name, p.split_note) for p in plan} == {
        (named, "halves", "the first four classes"), (plain, None, None)}
    (tmp_path / "named.json").unlink()  # resumed from the plan, with its labels
    assert plan_study(tmp_path / "run", study, cache_dir)[0] == plan


def test_a_plan_without_split_labels_reads_as_before(tmp_path, cache_dir):
    study = Study(DataSpec("synthetic", train_per_class=30), ARCH, cuts=(1,), variants=("BnB",))
    plan_study(tmp_path, study, cache_dir)
    assert "split_files" not in json.loads(Run(tmp_path).plan.read_text())


def test_two_split_files_may_not_share_a_name(cli, split_file):
    a = split_file({"A": [0], "B": [1], "name": "same"}, "a.json")
    b = split_file({"A": [2], "B": [3], "name": "same"}, "b.json")
    assert_one_line_error(cli("plan", *SMALL, "--split", a, "--split", b), "'same'", "a.json", "b.json")


# --- at most K images per class, and errors that name the smallest class -------------------------------------------

def test_test_per_class_keeps_at_most_k_of_each_class(synthetic_arrays):
    classes = ["class0", "class3", "class5"]
    full = task_data(synthetic_arrays, classes, DataSpec("synthetic"))
    capped = task_data(synthetic_arrays, classes, DataSpec("synthetic", test_per_class=7))
    assert np.bincount(capped.test_y).tolist() == [7, 7, 7]
    assert capped.test_x.shape == (21, 16, 16, 3)
    again = task_data(synthetic_arrays, classes, DataSpec("synthetic", test_per_class=7))
    assert np.array_equal(again.test_x, capped.test_x)  # seeded: every network tests on the same images
    assert np.array_equal(capped.train_x, full.train_x)  # training is untouched
    more = task_data(synthetic_arrays, classes, DataSpec("synthetic", test_per_class=1000))
    assert np.array_equal(more.test_x, full.test_x)  # a class with fewer keeps all of its own


def test_per_class_caps_keep_small_classes_whole():
    arrays = _uneven_arrays()
    spec = DataSpec("uneven", train_per_class=40, test_per_class=5, val_fraction=0.0)
    task = task_data(arrays, ["class0", "class2", "class5"], spec)
    assert np.bincount(task.train_y).tolist() == [10, 30, 40]
    assert np.bincount(task.test_y).tolist() == [3, 5, 5]
    counts = task_counts(arrays, ["class0", "class2", "class5"], spec)
    assert counts == {"train": 80, "val": 0, "test": 13, "smallest": ("class0", 10), "largest": ("class5", 40)}


@pytest.mark.parametrize("value", [0, -3, 2.5, True])
def test_test_per_class_must_be_a_positive_integer(value):
    with pytest.raises(ProbeError, match=f"test_per_class {value!r}"):
        DataSpec("synthetic", test_per_class=value)


def test_specs_written_before_the_new_data_fields_read_the_same(cache_dir):
    """A spec dict without resize_mode and test_per_class (a checkpoint or plan of an earlier probe) is the same
    spec as one with their defaults."""
    study = Study(DataSpec("synthetic", train_per_class=30), ARCH, cuts=(1,), variants=("BnB",))
    spec = plan_study(None, study, cache_dir)[0][0].spec
    old = spec.to_dict()
    del old["data"]["resize_mode"], old["data"]["test_per_class"]
    assert NetworkSpec.from_dict(old) == spec


def test_the_cli_passes_test_per_class_and_resize_mode(cli):
    result = cli("plan", *SMALL, "--test-per-class", "4", "--json")
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)["networks"][0]["spec"]["data"]
    assert (data["test_per_class"], data["resize_mode"]) == (4, "crop")
    assert_one_line_error(cli("plan", *SMALL, "--test-per-class", "0"), "test_per_class 0")
    assert_one_line_error(cli("plan", *SMALL, "--resize-mode", "pad"), "'pad'", "--image-size")
    assert_one_line_error(cli("plan", *SMALL, "--resize-mode", "stretch"), "stretch")


def test_the_validation_error_names_the_smallest_class():
    arrays = _uneven_arrays()
    with pytest.raises(ProbeError) as err:
        task_data(arrays, ["class4", "class1", "class7"], DataSpec("uneven", train_per_class=1))
    message = str(err.value)
    assert "\n" not in message and "train_per_class 1" in message and "smallest class 'class4' has 1" in message
    arrays = ImageArrays(arrays.train_x, arrays.train_y.copy(), arrays.test_x, arrays.test_y, arrays.classes)
    arrays.train_y[np.flatnonzero(arrays.train_y == 1)[1:]] = 0  # class1 keeps one training image
    with pytest.raises(ProbeError) as err:
        task_data(arrays, ["class4", "class1", "class7"], DataSpec("uneven"))
    assert "smallest class 'class1' has 1" in str(err.value)


def test_the_per_class_probe_error_names_the_smallest_class():
    arrays = _uneven_arrays()  # class k has 3 + k test images
    images = ExtractionImages("target", per_class=6)
    with pytest.raises(ProbeError) as err:
        images.indices(arrays, ["class5", "class1", "class4", "class8"])
    message = str(err.value)
    assert "'class1'" in message and "4" in message and "at-most" in message and "\n" not in message
    at_most = ExtractionImages("target", per_class=6, per_class_mode="at-most")
    picked = at_most.indices(arrays, ["class5", "class1", "class4", "class8"])
    counts = dict(zip(*np.unique(np.asarray(arrays.test_y)[picked], return_counts=True)))
    assert counts == {1: 4, 4: 6, 5: 6, 8: 6}
    with pytest.raises(ProbeError, match="'mostly'"):
        ExtractionImages(per_class_mode="mostly")


def test_exactly_k_per_class_picks_the_images_it_picked_before():
    """The seeded subset of an exact --per-class is the one earlier probes chose (only its order is new), so a
    store keeps holding the same images."""
    arrays = _uneven_arrays()
    classes = ["class2", "class6"]
    rng = np.random.default_rng(3)
    labels = np.asarray(arrays.test_y)
    before = np.sort(np.concatenate([rng.choice(np.flatnonzero(labels == k), 4, replace=False) for k in (2, 6)]))
    now = ExtractionImages(per_class=4, seed=3).indices(arrays, classes)
    assert np.array_equal(np.sort(now), before) and not np.array_equal(now, before)


# --- the probe set's samples come in a seeded shuffled order --------------------------------------------------------

@pytest.fixture(scope="module")
def run(tmp_path_factory, cache_dir):
    """A small trained run: the bases and B1B/A1A of one random split."""
    run_dir = tmp_path_factory.mktemp("run")
    result = invoke(cache_dir, "train", run_dir, *SMALL)
    assert result.exit_code == 0, result.output
    return run_dir


def test_indices_are_a_seeded_permutation(synthetic_arrays):
    classes = ["class1", "class4", "class8"]
    a = ExtractionImages().indices(synthetic_arrays, classes)
    assert np.array_equal(a, ExtractionImages().indices(synthetic_arrays, classes))
    assert not np.array_equal(ExtractionImages(seed=1).indices(synthetic_arrays, classes), a)
    wanted = np.flatnonzero(np.isin(synthetic_arrays.test_y, [1, 4, 8]))
    assert np.array_equal(np.sort(a), wanted) and not np.array_equal(a, wanted)


def test_stored_samples_are_shuffled_alike_and_stream_cka_as_in_memory(run, tmp_path):
    store = tmp_path / "acts.zarr"
    extract_run(run, store, networks=["baseA", "baseB"], images=ExtractionImages("both"), progress=False)
    ids = ["random-s0/init0/baseA", "random-s0/init0/baseB"]
    a, b = layer_arrays(open_store(store), "fc6", ids).values()
    labels = a["label"].values
    assert np.array_equal(a["sample"].values, b["sample"].values)
    assert len(np.unique(labels)) == 10 and np.any(labels[1:] < labels[:-1])  # not sorted by class
    assert np.array_equal(np.sort(a["sample"].values), np.arange(300))
    exact = linear_cka(a.values, b.values, debiased=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning about samples sorted by label
        streamed = streaming_cka(a, b, batch_size=100)
    assert streamed == pytest.approx(exact, abs=0.01)
    # batches of one class each (the order stores had before) measure something else
    order = np.argsort(labels, kind="stable")
    with pytest.warns(UserWarning, match="sorted by label"):
        sorted_cka = streaming_cka(a.isel(sample=order), b.isel(sample=order), batch_size=30)
    assert abs(sorted_cka - exact) > abs(streamed - exact)


def _rewrite_attrs(store, network_id, change):
    meta_path = store / network_id / "zarr.json"
    meta = json.loads(meta_path.read_text())
    change(meta["attributes"])
    meta_path.write_text(json.dumps(meta))


def test_stores_written_before_are_kept_or_rewritten(run, tmp_path, cli):
    """A group written before per_class_mode existed is the same probe set at the default mode; one whose samples
    are sorted (written before they were shuffled) is written again, so that the store's groups line up."""
    store = tmp_path / "acts.zarr"
    nid = "random-s0/init0/baseA"
    extract_run(run, store, networks=["baseA"], images=ExtractionImages(per_class=5), progress=False)

    def drop_mode(attrs):
        probe_set = json.loads(attrs["probe_set"])
        del probe_set["per_class_mode"]
        attrs["probe_set"] = json.dumps(probe_set)

    _rewrite_attrs(store, nid, drop_mode)
    result = cli("extract", run, "--out", store, "--networks", "baseA", "--per-class", "5", "--quiet")
    assert result.exit_code == 0, result.output
    assert "already complete 1" in result.output
    assert_one_line_error(cli("extract", run, "--out", store, "--networks", "baseA", "--per-class", "5",
                              "--per-class-mode", "at-most", "--quiet"), "--out")
    _rewrite_attrs(store, nid, lambda attrs: attrs.pop("sample_order"))
    result = cli("extract", run, "--out", store, "--networks", "baseA", "--per-class", "5", "--quiet")
    assert result.exit_code == 0, result.output
    assert f"rewrote {nid}: its samples are sorted by class" in result.output and "wrote 1" in result.output
    assert json.loads((store / nid / "zarr.json").read_text())["attributes"]["sample_order"] == "shuffled"


# --- resize modes -------------------------------------------------------------------------------------------------

WIDE = (20, 52)  # height, width: an airplane-like 2.6:1 image


def _wide(value: int) -> Image.Image:
    """A grey wide image whose four leftmost columns are pure red (a marker a crop cuts off)."""
    a = np.full((*WIDE, 3), value, np.uint8)
    a[:, :4] = (255, 0, 0)
    return Image.fromarray(a)


def _wide_tree(root):
    for part in ("train", "test"):
        for c, cls in enumerate(("planes", "ships")):
            (root / part / cls).mkdir(parents=True)
            for i in range(2):
                _wide(60 + 20 * c + 5 * i).save(root / part / cls / f"{i}.png")
    return root


def _red_left(x: np.ndarray) -> float:
    """How red the leftmost column of an (H, W, 3) image is, where it is not padding."""
    column = x[:, 0].astype(int)
    rows = column.sum(axis=1) > 0
    return float((column[rows, 0] - column[rows, 1]).mean()) if rows.any() else 0.0


def test_resize_modes_on_a_tree_of_wide_images(tmp_path):
    tree = _wide_tree(tmp_path / "tree")
    out = {mode: load_dataset(DataSpec("imagefolder", root=str(tree), image_size=16, resize_mode=mode),
                              cache_dir=tmp_path / "cache", progress=False) for mode in ("crop", "pad", "squash")}
    for arrays in out.values():
        assert arrays.train_x.shape == (4, 16, 16, 3) and arrays.test_x.shape == (4, 16, 16, 3)
    crop, pad, squash = (out[m].train_x[0] for m in ("crop", "pad", "squash"))
    assert _red_left(crop) < 5  # the crop lost the left end
    assert _red_left(pad) > 150 and _red_left(squash) > 150  # the whole width is kept
    # pad: 20 x 52 scaled to 6 x 16, centered between zero rows; squash fills every row
    filled = pad.sum(axis=(1, 2)) > 0
    assert filled.tolist() == [False] * 5 + [True] * 6 + [False] * 5
    assert (squash.sum(axis=(1, 2)) > 0).all() and np.all(squash[:, 8] == squash[0, 8])
    # one cache entry per mode
    assert len([p for p in (tmp_path / "cache").iterdir() if not p.name.startswith(".")]) == 3


def test_crop_keeps_the_cache_key_of_earlier_probes(tmp_path):
    """The default resize mode adds nothing to the decoded-cache key, so caches decoded before stay valid."""
    tree = _wide_tree(tmp_path / "tree")
    reader, source, files = _locate("imagefolder", str(tree), False)
    h = hashlib.sha256(f"{reader}\0{source.resolve()}\0{16}".encode())  # the key as earlier probes made it
    for p in files:
        st = p.stat()
        h.update(f"\0{p.relative_to(source)}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    spec = DataSpec("imagefolder", root=str(tree), image_size=16)
    assert _fingerprint(reader, source, files, spec) == h.hexdigest()[:16]
    assert _fingerprint(reader, source, files, DataSpec("imagefolder", root=str(tree), image_size=16,
                                                        resize_mode="pad")) != h.hexdigest()[:16]


def test_to_square_on_batches_and_single_images():
    batch = torch.zeros((2, 3, 10, 30), dtype=torch.uint8)
    batch[..., :, :2] = 200
    assert to_square(batch, 12, "pad").shape == (2, 3, 12, 12)
    assert to_square(batch[0], 12, "squash").shape == (3, 12, 12)
    tall = torch.full((1, 40, 8), 100, dtype=torch.uint8)
    padded = to_square(tall, 20, "pad")
    assert padded.shape == (1, 20, 20) and padded[0, :, :8].sum() == 0 and padded[0, :, 8:12].min() > 0


def wide_arrays():
    """Wide images from a function of one's own, importable as test_data_conventions:wide_arrays."""
    train = np.stack([np.asarray(_wide(60 + 10 * i)) for i in range(4)])
    return train, np.array([0, 0, 1, 1]), train, np.array([0, 0, 1, 1]), ["planes", "ships"]


def test_a_dataset_function_is_resized_by_the_mode(tmp_path):
    arrays = load_dataset(DataSpec("test_data_conventions:wide_arrays", image_size=16, resize_mode="pad"))
    assert arrays.train_x.shape == (4, 16, 16, 3) and _red_left(arrays.train_x[0]) > 150


# --- probe plan: each task's classes and image counts --------------------------------------------------------------

def test_plan_shows_each_tasks_classes_and_counts(cli, split_file):
    result = cli("plan", *SMALL, "--test-per-class", "10", "--seeds", "0,1")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert "8 networks" in lines
    assert "split random seed 0, replicates random-s0/init0" in lines
    assert "split random seed 1, replicates random-s1/init1" in lines
    tasks = [line for line in lines if line.startswith("  task ")]
    assert len(tasks) == 4 and all(", 5 classes: class" in line for line in tasks)
    # 30 training images a class, 10% of them held out; 10 of the 30 test images a class
    counts = [line.strip() for line in lines if line.startswith("    train ")]
    assert len(counts) == 4 and all(line == "train 135 (every class 27), val 15, test 50" for line in counts)
    seed0 = resolve_split("random", [f"class{i}" for i in range(10)], 0)
    assert f"  task A, 5 classes: {', '.join(seed0['A'])}" in lines
    result = cli("plan", *SMALL, "--json")
    assert result.exit_code == 0, result.output
    assert set(json.loads(result.output)) == {"version", "probe", "study", "networks"}


def test_plan_names_a_split_file_and_its_smallest_and_largest_class(cli, split_file):
    split = split_file({"A": [0, 9], "B": [3, 1, 5], "name": "mine", "note": "by hand"})
    result = cli("plan", "--dataset", "test_data_conventions:uneven", "--arch-option", "width=0.125", "--cuts", "1",
                 "--variants", "BnB", "--split", split, "--val-fraction", "0", "--seeds", "0,1")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    rep = split.replace("/", "_").replace(":", "_")
    assert f"split mine ({split}), replicates {rep}/init0, {rep}/init1" in lines
    assert "  note: by hand" in lines
    assert "  task A, 2 classes: class0, class9" in lines
    assert "    train 110 (smallest class 'class0': 10, largest 'class9': 100), val 0, test 15" in lines
    assert "  task B, 3 classes: class1, class3, class5" in lines
    assert "    train 120 (smallest class 'class1': 20, largest 'class5': 60), val 0, test 18" in lines


def test_task_summaries_of_a_one_task_plan_have_only_task_b(cache_dir, synthetic_arrays):
    """A study with a source network (split target) has no task A to show."""
    study = Study(DataSpec("synthetic", train_per_class=30), ARCH, cuts=(1,), variants=("BnB",))
    base_b = plan_study(None, study, cache_dir)[0][1]
    one_task = dataclasses.replace(base_b, spec=dataclasses.replace(base_b.spec, classes_a=()))
    summary = task_summaries([one_task], synthetic_arrays)
    assert list(summary[0]["tasks"]) == ["B"] and summary[0]["tasks"]["B"]["train"] == 135


def test_the_report_names_a_split_file_by_its_name(tmp_path, cli, split_file, synthetic_classes):
    named = split_file({"A": [0, 1], "B": [2, 3], "name": "halves", "note": "the first four classes"}, "named.json")
    run = tmp_path / "run"
    assert cli("train", run, *TINY_STUDY, "--split", named, "--cuts", "1", "--variants", "BnB").exit_code == 0
    assert cli("analyze", run).exit_code == 0
    report = (run / "analysis" / "report.md").read_text()
    assert f"Split `{named}` is **halves**: the first four classes." in report

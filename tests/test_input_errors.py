"""Bad input gives one line naming the value and what was expected (issue 15): unreadable or missing images in
image-folder trees, non-finite numbers, out-of-range seeds, a split file that is a directory, an empty cut list."""

from __future__ import annotations

import dataclasses
import io
import json
import math

import numpy as np
import pytest
from conftest import assert_one_line_error
from PIL import Image

from probe.data.datasets import load_dataset
from probe.data.splits import resolve_split
from probe.errors import ProbeError
from probe.planning.plan import read_plan
from probe.specs.spec import ArchSpec, DataSpec, NetworkSpec, Recipe

CLASSES = ("cats", "dogs")
# the cheapest plan: the synthetic dataset, one cut, no variants besides the bases
PLAN = ["plan", "--dataset", "synthetic", "--arch-option", "width=0.125", "--cuts", "1", "--variants", ""]


# --- image-folder trees ------------------------------------------------------------------------------------------

def _save(path, value: int, mode: str = "RGB", size: int = 16) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((size, size, 3), value, np.uint8)).convert(mode).save(path)


def make_tree(root, mode: str = "RGB"):
    """train/ and test/ with classes cats and dogs, two 16-pixel PNGs each."""
    for part in ("train", "test"):
        for c, cls in enumerate(CLASSES):
            for i in range(2):
                _save(root / part / cls / f"{i}.png", 50 * c + 10 * i, mode)
    return root


def _truncated_jpeg(path) -> None:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(buf, "JPEG")
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])


BAD_FILES = {
    "truncated.jpg": _truncated_jpeg,
    "empty.png": lambda path: path.write_bytes(b""),
    "text.png": lambda path: path.write_text("not an image\n"),
}


def _error(spec: DataSpec, cache) -> str:
    with pytest.raises(ProbeError) as err:
        load_dataset(spec, cache_dir=cache, progress=False)
    message = str(err.value)
    assert "\n" not in message, f"not one line: {message!r}"
    return message


@pytest.mark.parametrize("where", ["train/dogs", "test/cats"])
@pytest.mark.parametrize("name", list(BAD_FILES))
def test_unreadable_file_is_refused_by_name(tmp_path, name, where):
    tree = make_tree(tmp_path / "tree")
    bad = tree / where / name
    BAD_FILES[name](bad)
    message = _error(DataSpec("imagefolder", root=str(tree)), tmp_path / "cache")
    assert str(bad) in message and "--unreadable skip" in message


def test_unreadable_files_are_skipped_and_counted(tmp_path, capfd):
    tree = make_tree(tmp_path / "tree")
    for name, write in BAD_FILES.items():
        write(tree / "train" / "cats" / name)
    cache = tmp_path / "cache"
    arrays = load_dataset(DataSpec("imagefolder", root=str(tree), unreadable="skip"), cache_dir=cache,
                          progress=False)
    assert arrays.train_x.shape == (4, 16, 16, 3) and arrays.test_x.shape == (4, 16, 16, 3)
    assert arrays.train_y.tolist() == [0, 0, 1, 1]
    assert arrays.train_x[:, 0, 0, 0].tolist() == [0, 10, 50, 60]
    err = capfd.readouterr().err
    assert "skipped 3 unreadable images" in err and str(tree / "train") in err
    # the skipping decode has its own cache entry: the default mode still refuses the same tree
    assert str(tree / "train" / "cats") in _error(DataSpec("imagefolder", root=str(tree)), cache)


@pytest.mark.parametrize("classes", [("dogs",), CLASSES])
def test_skipping_every_image_of_a_class_is_refused(tmp_path, classes):
    tree = make_tree(tmp_path / "tree")
    for cls in classes:
        for i in range(2):
            (tree / "test" / cls / f"{i}.png").write_bytes(b"")
    message = _error(DataSpec("imagefolder", root=str(tree), unreadable="skip"), tmp_path / "cache")
    assert f"class {classes[0]!r}" in message and str(tree / "test") in message


@pytest.mark.parametrize("unreadable", ["error", "skip"])
@pytest.mark.parametrize("part", ["train", "test"])
def test_empty_class_folder_is_refused_by_name(tmp_path, part, unreadable):
    tree = make_tree(tmp_path / "tree")
    (tree / part / "birds").mkdir()
    (tree / part / "birds" / "notes.txt").write_text("no images here")
    message = _error(DataSpec("imagefolder", root=str(tree), unreadable=unreadable), tmp_path / "cache")
    assert "'birds'" in message and str(tree / part) in message


def test_tree_without_class_folders(tmp_path):
    tree = make_tree(tmp_path / "tree")
    for cls in CLASSES:
        for f in (tree / "test" / cls).iterdir():
            f.unlink()
        (tree / "test" / cls).rmdir()
    assert "no class folders" in _error(DataSpec("imagefolder", root=str(tree)), tmp_path / "cache")


@pytest.mark.parametrize("tree_mode, odd_mode", [("RGB", "L"), ("L", "RGB"), ("RGB", "RGBA"), ("L", "L")])
def test_channels_are_always_rgb(tmp_path, tree_mode, odd_mode):
    """torchvision's ImageFolder converts every image to RGB: grayscale trees, and grayscale or RGBA images in any
    tree, decode to three channels (a grayscale image to three equal ones)."""
    tree = make_tree(tmp_path / "tree", tree_mode)
    _save(tree / "train" / "cats" / "2.png", 77, odd_mode)
    arrays = load_dataset(DataSpec("imagefolder", root=str(tree)), cache_dir=tmp_path / "cache", progress=False)
    assert arrays.train_x.shape == (5, 16, 16, 3)
    assert arrays.train_x[2, 0, 0].tolist() == [77, 77, 77]


def test_cli_refuses_or_skips_unreadable_files(cli, tmp_path):
    tree = make_tree(tmp_path / "tree")
    (tree / "train" / "cats" / "empty.png").write_bytes(b"")
    args = ["plan", "--dataset", f"imagefolder:{tree}", "--cache-dir", tmp_path / "cache", "--cuts", "1",
            "--variants", "", "--arch-option", "width=0.125"]
    # a plan counts images by their files, decoding none; training decodes them first, and refuses
    assert cli(*args).exit_code == 0
    train = ["train", tmp_path / "run", *args[1:], "--epochs", "1"]
    assert_one_line_error(cli(*train), tree / "train" / "cats" / "empty.png", "--unreadable skip")
    result = cli(*args, "--unreadable", "skip")
    assert result.exit_code == 0, result.output
    assert "skipped 1 unreadable image " in result.output and "2 networks" in result.output
    assert_one_line_error(cli(*args, "--unreadable", "ignore"), "ignore")


# --- the unreadable field of DataSpec ----------------------------------------------------------------------------

def test_unreadable_defaults_to_error_and_is_checked():
    assert DataSpec("synthetic").unreadable == "error"
    with pytest.raises(ProbeError, match="unreadable 'ignore' is not one of error, skip"):
        DataSpec("synthetic", unreadable="ignore")


def test_specs_and_plans_written_before_the_field_still_load(cli, tmp_path):
    result = cli(*PLAN, "--json")
    assert result.exit_code == 0, result.output
    plan = json.loads(result.output)
    for data in [plan["study"]["data"], *(n["spec"]["data"] for n in plan["networks"])]:
        del data["unreadable"]
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    study, networks = read_plan(tmp_path)
    assert study.data.unreadable == "error" and {n.spec.data.unreadable for n in networks} == {"error"}
    assert NetworkSpec.from_dict(plan["networks"][0]["spec"]) == networks[0].spec


# --- numbers, seeds, splits and cuts ------------------------------------------------------------------------------

@pytest.mark.parametrize("args, culprit", [
    (["--arch-option", "width=NaN"], "width=nan"),
    (["--arch-option", "width=Infinity"], "width=inf"),
    (["--arch-option", "width=-Infinity"], "width=-inf"),
    (["--arch-option", "width=1e999"], "width=inf"),
    (["--seeds", "-1"], "-1"),
    (["--seeds", "0,1180591620717411303424"], "1180591620717411303424"),
    (["--init-seeds", "18446744073709551616"], "18446744073709551616"),
    (["--seeds", "4294967296"], "4294967296"),
    (["--lr", "nan"], "lr nan"),
    (["--lr", "inf"], "lr inf"),
    (["--weight-decay", "nan"], "weight_decay nan"),
    (["--diverge-loss", "inf"], "diverge_loss inf"),
    (["--lr-gamma", "nan"], "lr_gamma nan"),
    (["--cuts", ""], "cuts ''"),
    (["--cuts", " , "], "cuts ' , '"),
])
def test_cli_refuses_in_one_line(cli, args, culprit):
    assert_one_line_error(cli(*PLAN, *args), culprit)


def test_cli_seed_bound_is_named(cli):
    assert_one_line_error(cli(*PLAN, "--seeds", "-1"), "[0, 2**32)")


def test_cli_refuses_seeds_a_fixed_split_leaves_unused(cli, split_file):
    split = split_file({"A": ["class0", "class1"], "B": ["class2"]})
    assert_one_line_error(cli(*PLAN, "--split", split, "--seeds", "-1", "--init-seeds", "0"), "-1")


def test_cli_refuses_a_split_file_that_is_a_directory(cli, tmp_path):
    assert_one_line_error(cli(*PLAN, "--split", f"file:{tmp_path}"), str(tmp_path), "directory")


def test_split_file_that_is_not_text(tmp_path):
    path = tmp_path / "split.json"
    path.write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(ProbeError) as err:
        resolve_split(f"file:{path}", ["a", "b"])
    assert str(path) in str(err.value) and "\n" not in str(err.value)


@pytest.mark.parametrize("field", [f.name for f in dataclasses.fields(Recipe)
                                   if isinstance(f.default, float)])
@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_recipe_refuses_non_finite_floats(field, value):
    with pytest.raises(ProbeError, match=f"{field} {value} must be a finite number"):
        Recipe(**{field: value})


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_arch_spec_refuses_non_finite_options(value):
    with pytest.raises(ProbeError, match=f"width={value}"):
        ArchSpec("caffenet-small", options={"width": value})


@pytest.mark.parametrize("kw, culprit", [
    (dict(init_seed=-1), "init seed -1"),
    (dict(init_seed=2**32), f"init seed {2**32}"),
    (dict(init_seed=2**70), f"init seed {2**70}"),
    (dict(split_seed=-3), "split seed -3"),
    (dict(split_seed=2**64), f"split seed {2**64}"),
    (dict(init_seed=1.5), "init seed 1.5"),
    (dict(init_seed=True), "init seed True"),
])
def test_network_spec_refuses_out_of_range_seeds(kw, culprit):
    base = dict(data=DataSpec("synthetic"), split="random", split_seed=0, target="B", classes_a=("class0",),
                classes_b=("class1",))
    with pytest.raises(ProbeError) as err:
        NetworkSpec(**{**base, **kw})
    assert culprit in str(err.value) and "[0, 2**32)" in str(err.value)
    assert NetworkSpec(**{**base, "init_seed": 2**32 - 1, "split_seed": np.int64(7)}).init_seed == 2**32 - 1


# --- what the file system refuses is one line too ---------------------------------------------------------------------

def test_extract_refuses_a_negative_seed_and_a_dangling_store_link_in_one_line(anb_run, cli, tmp_path):
    assert_one_line_error(cli("extract", anb_run, "--seed", "-1"), "-1")
    link = tmp_path / "store.zarr"
    link.symlink_to(tmp_path / "nowhere" / "x")
    assert_one_line_error(cli("extract", anb_run, "--out", link, "--per-class", "2"), "symbolic link", "nowhere")


@pytest.mark.parametrize("command", ["train", "analyze"])
@pytest.mark.parametrize("code, words", [("EROFS", "read-only"), ("EACCES", "permission denied"),
                                         ("ENOSPC", "no space"), ("ELOOP", "symbolic link")])
def test_a_file_system_refusal_is_one_line_with_what_to_do(anb_run, cli, monkeypatch, command, code, words):
    """A run directory on a read-only mount (or full, or unwritable) refuses the first file a command writes,
    wherever that is: the command says so in one line, naming the file, never with a traceback."""
    import errno
    import os

    import probe.storage.atomic as atomic

    number = getattr(errno, code)

    def refuse(path, *args, **kwargs):
        raise OSError(number, os.strerror(number), str(path))

    monkeypatch.setattr(atomic, "write_atomic", refuse)
    monkeypatch.setattr(atomic, "write_json", refuse)
    import probe.analysis.report as report
    import probe.execution.sweep as sweep
    import probe.planning.plan as plan

    for module in (plan, sweep, report):
        for name in ("write_json", "write_atomic"):
            if hasattr(module, name):
                monkeypatch.setattr(module, name, refuse)
    args = ["train", anb_run, "--extend", "--seeds", "0,1", "--dataset", "synthetic", "--arch", "caffenet-small",
            "--arch-option", "width=0.125", "--epochs", "1", "--batch-size", "32", "--train-per-class", "30",
            "--cuts", "1", "--variants", "AnB"] if command == "train" else ["analyze", anb_run]
    result = cli(*args)
    assert_one_line_error(result, "cannot write", words)


@pytest.mark.parametrize("code, fix", [("ELOOP", "symbolic link that points back on itself"),
                                       ("ENOSPC", "free space"), ("EROFS", "writable file system"),
                                       ("EIO", "free space or fix the permissions")])
def test_a_refused_write_says_what_is_true_of_it(code, fix):
    import errno
    import os

    from probe.storage.atomic import write_error

    number = getattr(errno, code)
    message = str(write_error("/run/x.json", OSError(number, os.strerror(number))))
    assert fix in message and "'/run/x.json'" in message
    if code == "ELOOP":
        assert "free space" not in message


def test_extract_names_networks_with_unusable_weights_apart_from_untrained_ones(tmp_path, cli):
    import shutil

    from conftest import TINY_STUDY

    run = tmp_path / "run"
    result = cli("train", run, *TINY_STUDY, "--cuts", "1", "--variants", "AnB", "--networks", "baseA,baseB,A1B")
    assert result.exit_code == 0, result.output
    weights = run / "networks" / "random-s0" / "init0" / "A1B" / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    result = cli("extract", run, "--per-class", "2", "--quiet", "--device", "cpu")
    first = result.output.splitlines()[0]
    assert "2 trained networks (1 with weights that cannot be used; 1 more planned, not trained yet)" in first, first
    assert result.exit_code != 0 and "failed 1" in result.output
    shutil.rmtree(run)

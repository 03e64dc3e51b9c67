"""Tiny ImageNet read where it lies (a folder, the official zip, a tarball), its layout checked before decoding, its
damage named in one line, and the paper's natural vs man-made split on its WordNet ids."""

from __future__ import annotations

import io
import os
import shutil
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from conftest import SHARED_DATA
from PIL import Image

from probe.data.datasets import load_dataset
from probe.data.splits import resolve_split
from probe.errors import ProbeError
from probe.specs.spec import DataSpec

# two natural classes (goldfish, tench) and one man-made (abacus), as ILSVRC-2012 has them
WNIDS = ["n01443537", "n01440764", "n02666196"]
TRAIN, VAL = 4, 2


def _jpeg(value: int, gray: bool = False) -> bytes:
    out = io.BytesIO()
    Image.new("L" if gray else "RGB", (64, 64), value if gray else (value, 255 - value, 7)).save(out, "JPEG")
    return out.getvalue()


def _members(drop: str | None = None, annotation: str | None = None, corrupt: str | None = None) -> dict[str, bytes]:
    top = "tiny-imagenet-200/"
    files = {f"{top}wnids.txt": "\n".join(WNIDS).encode(), f"{top}words.txt": b"n01443537\tgoldfish\n"}
    lines = []
    for c, w in enumerate(WNIDS):
        for k in range(TRAIN):
            files[f"{top}train/{w}/images/{w}_{k}.JPEG"] = _jpeg(40 * c + k, gray=(k == 0))
        files[f"{top}train/{w}/{w}_boxes.txt"] = b""
        for k in range(VAL):
            name = f"val_{c * VAL + k}.JPEG"
            files[f"{top}val/images/{name}"] = _jpeg(40 * c + 20 + k)
            lines.append(f"{name}\t{w}\t0\t0\t63\t63")
    if annotation:
        lines.append(annotation)
    files[f"{top}val/val_annotations.txt"] = "\n".join(lines).encode()
    if corrupt:
        files[corrupt] = b"not a jpeg"
    return {k: v for k, v in files.items() if not (drop and k.startswith(drop))}


def _write(members: dict[str, bytes], where: Path, kind: str) -> Path:
    if kind == "folder":
        for name, data in members.items():
            (where / name).parent.mkdir(parents=True, exist_ok=True)
            (where / name).write_bytes(data)
        return where / "tiny-imagenet-200"
    if kind == "zip":
        path = where / "tiny-imagenet-200.zip"
        with zipfile.ZipFile(path, "w") as z:
            for name, data in members.items():
                z.writestr(name, data)
        return path
    path = where / "tiny-imagenet-200.tar.gz"
    with tarfile.open(path, "w:gz") as t:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            t.addfile(info, io.BytesIO(data))
    return path


@pytest.mark.parametrize("kind", ["folder", "zip", "tar"])
def test_every_form_reads_alike_in_place(tmp_path, cache_dir, kind):
    path = _write(_members(), tmp_path, kind)
    arrays = load_dataset(DataSpec(f"tinyimagenet:{path}"), cache_dir=cache_dir, progress=False)
    assert arrays.classes == sorted(WNIDS)
    assert arrays.train_x.shape == (3 * TRAIN, 64, 64, 3) and arrays.test_x.shape == (3 * VAL, 64, 64, 3)
    assert np.bincount(arrays.train_y).tolist() == [TRAIN] * 3 and np.bincount(arrays.test_y).tolist() == [VAL] * 3
    # labels follow the class folders and the annotations: the red channel encodes the class (40 per class)
    for x, y in ((arrays.train_x, arrays.train_y), (arrays.test_x, arrays.test_y)):
        classes = [WNIDS.index(arrays.classes[i]) for i in y]
        assert np.all(np.abs(x[:, 32, 32, 0].astype(int) - 40 * np.array(classes)) < 30)
    if kind != "folder":
        assert [p.name for p in tmp_path.iterdir()] == [path.name]  # nothing unpacked beside it


def test_an_image_size_resizes_and_the_split_is_by_wordnet_id(tmp_path, cache_dir):
    path = _write(_members(), tmp_path, "zip")
    arrays = load_dataset(DataSpec(f"tinyimagenet:{path}", image_size=32), cache_dir=cache_dir, progress=False)
    assert arrays.train_x.shape[1:] == (32, 32, 3)
    tasks = resolve_split("natural-man-made", arrays.classes)
    assert tasks == {"A": ["n01440764", "n01443537"], "B": ["n02666196"]}


@pytest.mark.parametrize("damage, culprit", [
    (dict(drop="tiny-imagenet-200/train/n02666196/images"), "class n02666196 has no training images"),
    (dict(annotation="val_99.JPEG\tn09999999\t0\t0\t1\t1"), "'n09999999'"),
    (dict(annotation="val_99.JPEG\tn01443537\t0\t0\t1\t1"), "val/images/val_99.JPEG, which is missing"),
    (dict(drop="tiny-imagenet-200/val/val_annotations.txt"), "val_annotations.txt is missing"),
    (dict(drop="tiny-imagenet-200/wnids.txt"), "no wnids.txt"),
    (dict(corrupt="tiny-imagenet-200/train/n01443537/images/n01443537_3.JPEG"), "n01443537_3.JPEG does not decode"),
])
@pytest.mark.parametrize("kind", ["tar", "folder"])
def test_a_damaged_copy_is_one_line_naming_the_file(tmp_path, cache_dir, damage, culprit, kind):
    path = _write(_members(**damage), tmp_path, kind)
    with pytest.raises(ProbeError) as e:
        load_dataset(DataSpec(f"tinyimagenet:{path}"), cache_dir=cache_dir, progress=False)
    assert culprit in str(e.value) and "\n" not in str(e.value)


def test_a_truncated_archive_and_a_wrong_path_are_named(tmp_path, cache_dir):
    path = _write(_members(), tmp_path, "tar")
    path.write_bytes(path.read_bytes()[: os.path.getsize(path) // 2])
    with pytest.raises(ProbeError, match="cannot read Tiny ImageNet"):
        load_dataset(DataSpec(f"tinyimagenet:{path}"), cache_dir=cache_dir, progress=False)
    with pytest.raises(ProbeError, match="does not exist"):
        load_dataset(DataSpec(f"tinyimagenet:{tmp_path / 'nowhere.zip'}"), cache_dir=cache_dir, progress=False)


def test_plan_shows_classes_by_id_and_name(tmp_path, cli):
    path = _write(_members(), tmp_path, "zip")
    result = cli("plan", "--dataset", f"tinyimagenet:{path}", "--split", "natural-man-made", "--cuts", "5",
                 "--variants", "BnB", "--arch", "caffenet-small", "--val-fraction", "0.5")
    assert result.exit_code == 0, result.output
    assert "task A, 2 classes: n01440764 tench, n01443537 goldfish" in result.output
    assert "n02666196 abacus" in result.output


SHARED = SHARED_DATA / "tiny-imagenet-200.tar.gz"


@pytest.mark.slow
@pytest.mark.skipif(not SHARED.exists(), reason="the shared Tiny ImageNet tarball is absent")
def test_the_shared_tarball_plans_the_papers_split(tmp_path, cli):
    result = cli("plan", "--dataset", f"tinyimagenet:{SHARED}", "--split", "natural-man-made", "--cuts", "5",
                 "--variants", "BnB", "--train-per-class", "10", "--test-per-class", "5")
    assert result.exit_code == 0, result.output
    assert "task A, 72 classes" in result.output and "task B, 128 classes" in result.output


# --- image-folder trees laid out as ImageNet lays them out ------------------------------------------------------------

def test_an_unpacked_tiny_imagenet_reads_as_an_image_folder_preferring_its_labelled_val(tmp_path, cache_dir):
    """Tiny ImageNet unpacked: test/ holds unlabelled images (one 'images' folder), val/ a flat folder labelled by
    val_annotations.txt; the labelled val/ is the test split, and train/<wnid>/images/ count as their class."""
    root = _write(_members(), tmp_path, "folder")
    (root / "test" / "images").mkdir(parents=True)
    (root / "test" / "images" / "test_0.JPEG").write_bytes(_jpeg(9))
    arrays = load_dataset(DataSpec(f"imagefolder:{root}"), cache_dir=cache_dir, progress=False)
    assert arrays.classes == sorted(WNIDS) and arrays.test_x.shape[0] == 3 * VAL
    assert np.bincount(arrays.test_y).tolist() == [VAL] * 3


@pytest.mark.parametrize("damage, culprit", [
    ("unlabelled", "has no labelled test split"),
    ("unknown", "not a class of train/"),
    ("missing", "which is missing"),
    ("other classes", "has no folder in"),
])
def test_an_image_folder_layout_is_refused_before_decoding(tmp_path, cache_dir, monkeypatch, damage, culprit):
    import probe.data.datasets as datasets

    root = _write(_members(), tmp_path, "folder")
    annotations = root / "val" / "val_annotations.txt"
    if damage == "unlabelled":
        annotations.unlink()
    elif damage == "unknown":
        annotations.write_text(annotations.read_text() + "\nval_0.JPEG\tn09999999\t0\t0\t1\t1")
    elif damage == "missing":
        annotations.write_text(annotations.read_text() + "\nval_77.JPEG\tn01443537\t0\t0\t1\t1")
    else:
        shutil.rmtree(root / "val")
        (root / "test" / "n01443537").mkdir(parents=True)
        (root / "test" / "n01443537" / "a.JPEG").write_bytes(_jpeg(1))
    decoded = []
    monkeypatch.setattr(datasets, "_decode", lambda *a, **k: decoded.append(a) or [])
    with pytest.raises(ProbeError) as e:
        load_dataset(DataSpec(f"imagefolder:{root}"), cache_dir=cache_dir, progress=False)
    assert culprit in str(e.value) and "\n" not in str(e.value)
    assert decoded == []  # refused from the folder names and the labels alone, before a single image is decoded

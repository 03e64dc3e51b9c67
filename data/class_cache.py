"""Decoded images cached class by class, so that a study decodes only the classes it uses: a 20-class study of a
200-class dataset decodes 20, and a later study of other classes decodes only those it lacks.

A cache entry is a folder holding the dataset's index (``index.json``: its classes and image shape; ``train_y.npy``
and ``test_y.npy``: every image's label, in the dataset's own order) and one folder per decoded class
(``classes/NNNN/``: that class's training and test images, in the same order, with their checksums). The index is
made from the file names alone (and one decoded image, for the shape), so a plan sees every class's images counted
before any is decoded. The images come back as :class:`ClassImages`: indexed like the whole dataset's array, read
from the class files an index touches, so every image keeps the number it has in the whole dataset and a network's
images, and their order, are those of a whole decode.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import zlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from probe.errors import ProbeError

INDEX = "index.json"


@dataclass(frozen=True)
class Members:
    """What a dataset holds, found before decoding: its classes, and each split's images as ``(member, label)`` in
    the dataset's order (a member is whatever the decoder reads: a file path, or a name inside an archive)."""

    classes: list[str]
    train: list[tuple[str, int]]
    test: list[tuple[str, int]]


# Decodes members into images (N, H, W, C) uint8, in the order given (in one pass over an archive), or refuses the
# first that does not decode
Decoder = Callable[[Sequence[str]], np.ndarray]


class ClassImages:
    """One split's images as an ``(N, H, W, C)`` uint8 array-like, read from the per-class files of a cache entry:
    an integer, a slice or an array of indices gives a numpy array, as the whole dataset's array would. A class not
    yet decoded is refused by name."""

    ndim = 4
    dtype = np.dtype(np.uint8)

    def __init__(self, folder: Path, split: str, labels: np.ndarray, shape: tuple[int, int, int],
                 classes: list[str]) -> None:
        self.folder, self.split, self.labels, self.classes = folder, split, labels, classes
        self.shape = (len(labels), *shape)
        order = np.argsort(labels, kind="stable")
        starts = np.concatenate([[0], np.cumsum(np.bincount(labels, minlength=len(classes)))])
        # an image's row in its class's file: its rank among the images of its class
        self._row = np.empty(len(labels), dtype=np.int64)
        self._row[order] = np.arange(len(labels)) - starts[labels[order]]
        self._open: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, key) -> np.ndarray:
        if isinstance(key, tuple):  # images first, then within each image
            images = self[key[0]]
            return images[key[1:]] if isinstance(key[0], (int, np.integer)) else images[(slice(None), *key[1:])]
        if isinstance(key, (int, np.integer)):
            return self[np.array([key])][0]
        index = np.arange(len(self))[key] if isinstance(key, slice) else np.asarray(key)
        if index.dtype == bool:
            index = np.flatnonzero(index)
        out = np.empty((len(index), *self.shape[1:]), dtype=np.uint8)
        labels = self.labels[index]
        for k in np.unique(labels):
            chosen = labels == k
            out[chosen] = self.open(int(k))[self._row[index[chosen]]]
        return out

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        return self[:] if dtype is None else self[:].astype(dtype)

    def open(self, k: int) -> np.ndarray:
        """Class ``k``'s images of this split, memory-mapped (checked against their checksum when first opened)."""
        if k not in self._open:
            folder = class_folder(self.folder, k)
            if not (folder / "meta.json").exists():
                raise ProbeError(f"class {self.classes[k]!r} is not decoded in the cache {str(self.folder)!r}; load "
                                 "the dataset with the classes a study uses (load_dataset(spec, classes=[...]))")
            self._open[k] = read_class(folder, self.split)
        return self._open[k]


def class_folder(entry: Path, k: int) -> Path:
    return entry / "classes" / f"{k:04d}"


def load_by_class(entry: Path, members: Callable[[], Members], decode: Decoder, wanted: Sequence[str] | None,
                  meta: dict) -> tuple[ClassImages, np.ndarray, ClassImages, np.ndarray, list[str]]:
    """The dataset cached in ``entry``, with the classes ``wanted`` (None: every class) decoded first where they are
    not yet: ``members`` lists the dataset without decoding, ``decode`` decodes a list of members. ``meta`` (reader,
    source, sizes) is recorded beside the index."""
    if not (entry / INDEX).exists():
        listed = members()
        _write_index(entry, listed, decode, meta)
    else:
        listed = None
    index = _read_index(entry)
    classes = index["classes"]
    train_y, test_y = (_read_labels(entry, split, index) for split in ("train", "test"))
    names = classes if wanted is None else list(wanted)
    unknown = [c for c in names if c not in classes]
    if unknown:
        raise ProbeError(f"class {unknown[0]!r} is not in the dataset (its classes: {', '.join(classes[:5])}, ...)")
    missing = [classes.index(c) for c in dict.fromkeys(names) if not (class_folder(entry, classes.index(c))
                                                                     / "meta.json").exists()]
    shape = tuple(index["shape"])
    if missing:
        _decode_classes(entry, listed or members(), decode, missing, train_y, test_y, shape)
    train, test = (ClassImages(entry, split, y, shape, classes) for split, y in (("train", train_y), ("test", test_y)))
    for k in dict.fromkeys(classes.index(c) for c in names):  # read and checked now, not in the middle of training
        train.open(k), test.open(k)
    return train, train_y, test, test_y, classes


def _write_index(entry: Path, listed: Members, decode: Decoder, meta: dict) -> None:
    """The labels of every image and the image shape (from the first training image, decoded as all will be),
    written into ``entry`` with the index last: a folder without it is not yet an entry."""
    if not listed.train:
        raise ProbeError(f"{meta.get('source')!r} holds no training images")
    shape = decode([listed.train[0][0]])[0].shape
    entry.mkdir(parents=True, exist_ok=True)
    sums = {}
    for split, samples in (("train", listed.train), ("test", listed.test)):
        labels = np.array([y for _, y in samples], dtype=np.int64)
        _atomic(entry / f"{split}_y.npy", lambda f, y=labels: np.save(f, y))
        sums[f"{split}_y"] = checksum(labels)
    document = {**meta, "classes": listed.classes, "shape": list(shape), "checksums": sums}
    _atomic(entry / INDEX, lambda f: f.write(json.dumps(document, indent=2).encode()))


def _decode_classes(entry: Path, listed: Members, decode: Decoder, missing: list[int], train_y: np.ndarray,
                    test_y: np.ndarray, shape: tuple[int, int, int]) -> None:
    """Decode the classes ``missing`` (both splits in one pass) into images of the index's ``shape``, and write each
    into its own folder."""
    chosen = {}
    for split, samples, labels in (("train", listed.train, train_y), ("test", listed.test, test_y)):
        if [y for _, y in samples] != labels.tolist():
            raise ProbeError(f"the files of {str(entry)!r}'s dataset no longer match its index; delete the folder, "
                             "and the dataset is decoded again")
        chosen[split] = np.flatnonzero(np.isin(labels, missing))
    members = [listed.train[i][0] for i in chosen["train"]] + [listed.test[i][0] for i in chosen["test"]]
    images = decode(members)
    if images.shape[1:] != shape:
        raise ProbeError(f"image {members[0]!r} is {images.shape[2]}x{images.shape[1]}, unlike the "
                         f"{shape[1]}x{shape[0]} of the dataset's first training image; give an image size "
                         "(--image-size) to resize every image to")
    decoded = {}
    for split, labels, part in (("train", train_y, images[:len(chosen["train"])]),
                                ("test", test_y, images[len(chosen["train"]):])):
        decoded[split] = {k: part[labels[chosen[split]] == k] for k in missing}
    for k in missing:
        _write_class(class_folder(entry, k), decoded["train"][k], decoded["test"][k])


def _write_class(folder: Path, train: np.ndarray, test: np.ndarray) -> None:
    """One class's images, written into a scratch folder and renamed into place (another process may have written
    the same class first: its folder stands)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        sums = {}
        for split, x in (("train", train), ("test", test)):
            np.save(tmp / f"{split}_x.npy", x)
            sums[split] = checksum(np.load(tmp / f"{split}_x.npy", mmap_mode="r"))
        (tmp / "meta.json").write_text(json.dumps({"checksums": sums}))
        try:
            os.replace(tmp, folder)
        except OSError:
            if not (folder / "meta.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def read_class(folder: Path, split: str) -> np.ndarray:
    """One class's images of ``split``, memory-mapped and checked against the checksum written with them."""
    path = folder / f"{split}_x.npy"
    try:
        sums = json.loads((folder / "meta.json").read_text())["checksums"]
        x = np.load(path, mmap_mode="r")
        if x.ndim != 4 or x.dtype != np.uint8:
            raise ValueError(f"it holds a {x.dtype} array of {x.ndim} dimensions, not the uint8 images probe writes")
        if checksum(x) != sums[split]:
            raise ValueError("its content changed since it was written (its checksum differs from the one recorded "
                             "in meta.json)")
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise ProbeError(f"cannot read the decoded-dataset cache file {str(path)!r} ({reason(e)}); delete the folder "
                         f"{str(folder)!r}, and the class is decoded again") from None
    return x


def _read_index(entry: Path) -> dict:
    path = entry / INDEX
    try:
        index = json.loads(path.read_text())
        if not (isinstance(index.get("classes"), list) and len(index.get("shape", ())) == 3):
            raise ValueError("it names no classes and image shape")
    except (OSError, ValueError, AttributeError) as e:
        raise ProbeError(f"cannot read the decoded-dataset cache file {str(path)!r} ({reason(e)}); delete the folder "
                         f"{str(entry)!r}, and the dataset is indexed again") from None
    return index


def _read_labels(entry: Path, split: str, index: dict) -> np.ndarray:
    path = entry / f"{split}_y.npy"
    try:
        labels = np.load(path)
        if labels.ndim != 1 or labels.dtype.kind not in "iu":
            raise ValueError(f"it holds a {labels.dtype} array of {labels.ndim} dimensions, not integer labels")
        if checksum(labels) != index.get("checksums", {}).get(f"{split}_y"):
            raise ValueError(f"its content changed since it was written (its checksum differs from the one recorded "
                             f"in {INDEX})")
    except (OSError, ValueError) as e:
        raise ProbeError(f"cannot read the decoded-dataset cache file {str(path)!r} ({reason(e)}); delete the folder "
                         f"{str(entry)!r}, and the dataset is indexed again") from None
    return labels.astype(np.int64)


def _atomic(path: Path, write: Callable) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        write(f)
    os.replace(tmp, path)


def checksum(array: np.ndarray) -> str:
    """CRC-32 of an array's bytes, read in blocks (a memory-mapped array is not loaded whole): a cache entry changed
    in place, into still valid arrays, is told from the one written."""
    flat = array.reshape(-1).view(np.uint8) if array.flags.c_contiguous else np.ascontiguousarray(array).view(np.uint8)
    crc, block = 0, 1 << 24
    for start in range(0, flat.size, block):
        crc = zlib.crc32(flat[start:start + block], crc)
    return f"crc32:{crc:08x}"


def reason(error: Exception) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__

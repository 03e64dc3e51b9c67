"""Tiny ImageNet (Le & Yang 2015): 200 ILSVRC-2012 classes, 500 training and 50 validation images each, 64 x 64.

Read where it lies, in its official layout, as a folder, the official zip, or a tarball (``.tar``, ``.tar.gz``,
``.tgz``), never unpacked: ``wnids.txt`` (the classes' WordNet ids), ``train/<wnid>/images/*.JPEG`` and
``val/images/*.JPEG`` labelled by ``val/val_annotations.txt`` (file, wnid, box). The validation split, being labelled,
is probe's test split (the official ``test/`` is unlabelled, and left alone). Images are decoded to RGB (1,821 of the
training images are grayscale) at their own 64 pixels unless a study asks for another size: no resampling by default.

The layout is checked before any image is decoded, and a damaged or incomplete copy (a class without training images,
an annotation naming an unknown class or a missing file, an image that does not decode) is refused in one line naming
the file.
"""

from __future__ import annotations

import io
import os
import tarfile
import zipfile
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path, PurePosixPath

import numpy as np

from probe.data.arrays import ImageArrays, resized
from probe.data.class_cache import Decoder, Members
from probe.errors import ProbeError
from probe.specs.spec import DataSpec

SUFFIXES = (".tar", ".tar.gz", ".tgz", ".zip")
_FIX = "restore it from the official zip or the shared tarball"
_TEXTS = ("wnids.txt", "val_annotations.txt")


class _Source:
    """A Tiny ImageNet copy as its member names and their bytes: a folder, a zip or a tarball, read in place."""

    def __init__(self, path: Path):
        self.path = path
        self.kind = "folder" if path.is_dir() else "zip" if path.name.endswith(".zip") else "tar"
        self._names: list[str] | None = None
        self._texts: dict[str, bytes] = {}  # the small text files, read in the tarball's listing pass

    def names(self) -> list[str]:
        if self._names is None:
            self._names = self._list()
        return self._names

    def _list(self) -> list[str]:
        try:
            if self.kind == "folder":
                return sorted(str(p.relative_to(self.path).as_posix()) for p in self.path.rglob("*") if p.is_file())
            if self.kind == "zip":
                with zipfile.ZipFile(self.path) as z:
                    return [n for n in z.namelist() if not n.endswith("/")]
            names = []
            with tarfile.open(self.path) as t:  # a gzipped stream: each pass reads it whole, so this one keeps texts
                for member in t:
                    if member.isfile():
                        names.append(member.name)
                        if member.name.endswith(_TEXTS):
                            self._texts[member.name] = t.extractfile(member).read()
            return names
        except (OSError, tarfile.TarError, zipfile.BadZipFile, EOFError) as e:
            raise ProbeError(f"cannot read Tiny ImageNet {str(self.path)!r} ({type(e).__name__}: {e}); {_FIX}") \
                from None

    def read(self, wanted: set[str]) -> Iterator[tuple[str, bytes]]:
        """The bytes of the members ``wanted``, in the order the copy holds them (one pass through a tarball)."""
        try:
            if self.kind == "folder":
                for name in sorted(wanted):
                    yield name, (self.path / name).read_bytes()
            elif self.kind == "zip":
                with zipfile.ZipFile(self.path) as z:
                    for name in sorted(wanted):
                        yield name, z.read(name)
            else:
                left = set(wanted)
                with tarfile.open(self.path) as t:
                    for member in t:
                        if member.name in left:
                            yield member.name, t.extractfile(member).read()
                            left.discard(member.name)
                            if not left:  # the rest of the stream is not read
                                break
        except (OSError, tarfile.TarError, zipfile.BadZipFile, EOFError, KeyError) as e:
            raise ProbeError(f"cannot read Tiny ImageNet {str(self.path)!r} ({type(e).__name__}: {e}); {_FIX}") \
                from None

    def text(self, name: str) -> str:
        if name in self._texts:
            return self._texts[name].decode("utf-8", errors="replace")
        for _, data in self.read({name}):
            return data.decode("utf-8", errors="replace")
        raise ProbeError(f"Tiny ImageNet {str(self.path)!r} has no {name}; {_FIX}")


def is_archive(path: Path) -> bool:
    return path.is_file() and path.name.endswith(SUFFIXES)


def layout(source: _Source) -> tuple[list[str], list[tuple[str, str]], list[tuple[str, str]]]:
    """The classes (sorted WordNet ids), the training images and the validation images (member, wnid) of a copy,
    checked before anything is decoded."""
    names = source.names()
    where = str(source.path)
    top = next((n[: -len("wnids.txt")] for n in names if PurePosixPath(n).name == "wnids.txt"
                and n.count("/") <= 1), None)
    if top is None:
        raise ProbeError(f"{where!r} is not Tiny ImageNet in its official layout: no wnids.txt (expected "
                         "tiny-imagenet-200/wnids.txt, train/ and val/)")
    wnids = sorted(set(source.text(top + "wnids.txt").split()))
    if not wnids:
        raise ProbeError(f"{where}: {top}wnids.txt names no class; {_FIX}")
    known = set(wnids)
    train, counts = [], dict.fromkeys(wnids, 0)
    for n in names:
        parts = n[len(top):].split("/") if n.startswith(top) else []
        if len(parts) == 4 and parts[0] == "train" and parts[2] == "images" and n.upper().endswith(".JPEG"):
            if parts[1] not in known:
                raise ProbeError(f"{where}: {n} is in class folder {parts[1]!r}, which {top}wnids.txt does not name; "
                                 f"{_FIX}")
            train.append((n, parts[1]))
            counts[parts[1]] += 1
    empty = [w for w, k in counts.items() if k == 0]
    if empty:
        raise ProbeError(f"{where}: class {empty[0]} has no training images ({top}train/{empty[0]}/images/ is "
                         f"missing or empty; {len(empty)} such classes); {_FIX}")
    annotations = top + "val/val_annotations.txt"
    if annotations not in set(names):
        raise ProbeError(f"{where}: {annotations} is missing, so the validation images (probe's test split) have "
                         f"no labels; {_FIX}")
    present, val = set(names), []
    for i, line in enumerate(source.text(annotations).splitlines(), start=1):
        fields = line.split("\t")
        if not line.strip():
            continue
        if len(fields) < 2:
            raise ProbeError(f"{where}: line {i} of {annotations} is not 'file<TAB>wnid<TAB>box': {line[:60]!r}")
        member = f"{top}val/images/{fields[0]}"
        if fields[1] not in known:
            raise ProbeError(f"{where}: line {i} of {annotations} labels {fields[0]} with {fields[1]!r}, a class "
                             f"{top}wnids.txt does not name; {_FIX}")
        if member not in present:
            raise ProbeError(f"{where}: line {i} of {annotations} names {member}, which is missing; {_FIX}")
        val.append((member, fields[1]))
    return wnids, train, val


def by_class(path: Path, spec: DataSpec, progress: bool = True) -> tuple[Callable[[], Members], Decoder]:
    """A Tiny ImageNet copy as :mod:`probe.data.class_cache` reads it (train: its training images; test: its
    validation images), and a decoder of its members at the study's image size."""
    source = _Source(path)

    def members() -> Members:
        classes, train, val = layout(source)
        index = {w: i for i, w in enumerate(classes)}
        return Members(classes, [(m, index[w]) for m, w in train], [(m, index[w]) for m, w in val])

    def decode(names: Sequence[str]) -> np.ndarray:
        images = _decode(source, set(names), progress and len(names) > 1)
        x = np.stack([images[n] for n in names])
        return resized(ImageArrays(x, np.zeros(len(x)), x[:0], np.zeros(0), []), spec.image_size,
                       spec.resize_mode).train_x

    return members, decode


def _decode(source: _Source, members: set[str], progress: bool) -> dict[str, np.ndarray]:
    """Every member's image as an RGB ``(H, W, 3)`` uint8 array; the first that does not decode, or whose size
    differs from the rest, is refused by name."""
    from PIL import Image, UnidentifiedImageError
    from tqdm import tqdm

    out, shape = {}, None
    with tqdm(total=len(members), desc=f"decoding {source.path.name}", unit="image", leave=False,
              disable=not progress, mininterval=1) as bar:
        for name, data in source.read(members):
            try:
                with Image.open(io.BytesIO(data)) as image:
                    x = np.asarray(image.convert("RGB"))
            except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as e:
                raise ProbeError(f"{source.path}: image {name} does not decode ({type(e).__name__}: {e}); {_FIX}") \
                    from None
            shape = shape or x.shape
            if x.shape != shape:
                raise ProbeError(f"{source.path}: image {name} is {x.shape[1]}x{x.shape[0]}, unlike the "
                                 f"{shape[1]}x{shape[0]} before it; {_FIX}")
            out[name] = x
            bar.update()
    return out


def fingerprint_files(path: Path) -> list[Path]:
    """The files whose size and time key the decoded cache: the archive itself, or a folder's every file."""
    return [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file())


def check_root(root: str) -> Path:
    path = Path(root)
    if not (path.is_dir() or is_archive(path)):
        what = "does not exist" if not os.path.exists(root) else "is neither a folder nor a .zip, .tar or .tar.gz"
        raise ProbeError(f"Tiny ImageNet {root!r} {what}; give the official layout as a folder, the official zip or a "
                         "tarball: tinyimagenet:PATH")
    return path

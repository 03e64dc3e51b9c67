"""Datasets by name, decoded once into uint8 arrays and cached on disk.

Names: ``fashion-mnist`` (Debian's ``dataset-fashion-mnist`` files or a torchvision root), ``cifar10`` and
``cifar100`` (a torchvision root, or an image-folder tree with ``train/`` and ``test/``), ``imagefolder`` (any
ImageNet-style tree with ``train/`` and ``val/`` or ``test/``; give its path as the root), ``tinyimagenet`` (its
official layout as a folder, zip or tarball, read in place: :mod:`probe.data.tinyimagenet`) and ``synthetic``.
A name may carry its root after a colon: ``imagefolder:/data/imagenet``, ``cifar10:../shared/data/cifar10``.
Any other name is a dataset of one's own (:mod:`probe.data.custom`): registered, or a function's import path.

Reading goes through torchvision's own readers. The decoded arrays are cached under a key made of the reader, the
source path and a fingerprint of the source files (relative path, size and modification time of each), so a sweep
of dozens of networks decodes its JPEGs once and a changed dataset is decoded again. Image files (an image-folder
tree, Tiny ImageNet) are decoded class by class, only the classes a study uses (:mod:`probe.data.class_cache`);
with unreadable files skipped, a tree is decoded whole, since which images remain is known only once every one has
been tried.

Image-folder trees decode every image to RGB, as torchvision's ImageFolder does (grayscale and RGBA images, and whole
grayscale trees, give three channels); Fashion-MNIST keeps its one channel. A file that cannot be decoded stops the
decode with its name, or with ``DataSpec.unreadable == "skip"`` is left out and counted on stderr; a class folder
without images is refused. ``DataSpec.image_size`` makes every image a square of that side, by
``DataSpec.resize_mode`` (crop, pad or squash).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np

from probe.data import tinyimagenet
from probe.data.arrays import DATASETS, ImageArrays, resized, to_square
from probe.data.class_cache import Decoder, Members, checksum, load_by_class, reason
from probe.data.custom import load_own
from probe.errors import ProbeError
from probe.specs.spec import DataSpec

DEBIAN_FASHION_MNIST = "/usr/share/datasets/fashion-mnist"
_FASHION_FILES = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte",
                  "t10k-labels-idx1-ubyte")


def parse_dataset(text: str, root: str | None = None) -> tuple[str, str | None]:
    """Split ``name[:root]`` into the dataset name and its root, checking the name."""
    name, _, inline_root = text.partition(":")
    if name not in DATASETS:
        raise ProbeError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)} (a name may carry its "
                         "root after a colon, e.g. imagefolder:/data/imagenet), a registered dataset, or a "
                         "function's import path MODULE:FUNCTION")
    if inline_root and root and inline_root != root:
        raise ProbeError(f"dataset {text!r} names root {inline_root!r} but --data-root says {root!r}")
    root = inline_root or root
    if name in ("imagefolder", "tinyimagenet") and not root:
        raise ProbeError(f"dataset {name!r} needs its path: {name}:PATH")
    return name, root


def default_cache_dir() -> Path:
    return Path(os.environ.get("PROBE_CACHE", Path.home() / ".cache" / "probe"))


def load_dataset(spec: DataSpec, cache_dir: str | os.PathLike | None = None, download: bool = False,
                 progress: bool = True, classes: Sequence[str] | None = None) -> ImageArrays:
    """Load the dataset ``spec`` names, from the cache when the same source was decoded before (a first decode of an
    image-folder tree shows a progress bar unless ``progress`` is false). A dataset of one's own is loaded by its
    function, every time: nothing tells when what it reads has changed.

    An image-folder tree or Tiny ImageNet is decoded class by class (:mod:`probe.data.class_cache`): ``classes``
    names those to decode where they are not yet (None: every class; an empty list: none, for a plan, which counts
    images by their labels alone), and their images come back indexed as in the whole dataset. Other kinds are read
    whole, and ``classes`` changes nothing."""
    check_honoured(spec, download)
    if spec.name.partition(":")[0] not in DATASETS:
        return load_own(spec)
    name, root = parse_dataset(spec.name, spec.root)
    if name == "synthetic":
        from probe.data.synthetic import IMAGE_SIZE, synthetic_arrays

        return ImageArrays(*synthetic_arrays(size=spec.image_size or IMAGE_SIZE))  # drawn at the size asked
    reader, source, files = _locate(name, root, download)
    meta = {"reader": reader, "source": str(source), "image_size": spec.image_size, "resize_mode": spec.resize_mode,
            "unreadable": spec.unreadable}
    by_class = reader in BY_CLASS and spec.unreadable == "error"
    key = _fingerprint(reader, source, files, spec, by_class)
    folder = Path(cache_dir or default_cache_dir()) / f"{name}-{key}"
    if by_class:
        members, decode = BY_CLASS[reader](source, spec, progress)
        return ImageArrays(*load_by_class(folder, members, decode, classes, meta))
    if not (folder / "meta.json").exists():
        arrays = _READERS[reader](source, spec, download, progress)
        _write_cache(folder, arrays, meta)
    return _read_cache(folder)


# The kinds that read files through torchvision, which can fetch them (--download)
DOWNLOADABLE = ("fashion-mnist", "cifar10", "cifar100")
# The kinds whose images may be files that fail to decode (an image-folder tree: imagefolder, and CIFAR given as one)
TREES = ("imagefolder", "cifar10", "cifar100")


def check_honoured(spec: DataSpec, download: bool = False) -> None:
    """Refuse, in one line, a setting that ``spec``'s kind of dataset would silently ignore: a data root for the
    generated ``synthetic`` images, ``unreadable`` skipping for a kind that decodes no image files, a download for a
    kind that cannot fetch anything (a resize mode without an image size is the DataSpec's own refusal)."""
    name = spec.name.partition(":")[0]
    own = name not in DATASETS
    kind = "a dataset of one's own" if own else f"dataset {name!r}"
    if name == "synthetic" and (spec.root or spec.name != name):
        raise ProbeError(f"dataset 'synthetic' is generated in code and reads no files, but root "
                         f"{spec.root or spec.name.partition(':')[2]!r} was given; drop --data-root")
    if spec.unreadable != DataSpec.unreadable and (own or name not in TREES):
        raise ProbeError(f"unreadable {spec.unreadable!r} concerns image files that fail to decode, which "
                         f"{kind} has none of (image-folder trees do: imagefolder, cifar10, cifar100); drop "
                         "--unreadable")
    if download and (own or name not in DOWNLOADABLE):
        raise ProbeError(f"--download fetches {', '.join(DOWNLOADABLE)} through torchvision; {kind} cannot be "
                         "downloaded: drop --download")


def _locate(name: str, root: str | None, download: bool) -> tuple[str, Path, list[Path]]:
    """Pick the reader for ``name`` and find the files it will read."""
    if name == "fashion-mnist":
        if root is None:
            debian = Path(DEBIAN_FASHION_MNIST)
            if all((debian / f"{f}.gz").exists() for f in _FASHION_FILES):
                return "idx-gz", debian, [debian / f"{f}.gz" for f in _FASHION_FILES]
            if not download:
                raise ProbeError(
                    f"Fashion-MNIST not found in {DEBIAN_FASHION_MNIST}: install it with "
                    "'apt-get install dataset-fashion-mnist', or give a torchvision root with --data-root "
                    "(add --download to fetch it there when the network allows)")
            root = str(default_cache_dir() / "torchvision")
        return "torchvision-fashion-mnist", Path(root), _files_under(Path(root) / "FashionMNIST", required=False)
    if root is None:
        raise ProbeError(f"dataset {name!r} needs a root: {name}:PATH or --data-root PATH")
    if name == "tinyimagenet":
        path = tinyimagenet.check_root(root)
        return "tinyimagenet", path, tinyimagenet.fingerprint_files(path)
    path = Path(root)
    if not path.is_dir():
        raise ProbeError(f"data root {root!r} of dataset {name!r} is not a directory")
    if (path / "train").is_dir() and _test_folder(path, required=False):
        test_split(path)  # the layout, checked before anything is decoded
        return "imagefolder", path, _files_under(path)
    if name == "imagefolder":
        raise ProbeError(f"image-folder tree {root!r} needs a train/ folder and a val/ or test/ folder")
    if download:
        return f"torchvision-{name}", path, []
    sub = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python"}[name]
    if not (path / sub).is_dir():
        raise ProbeError(f"{root!r} holds neither torchvision's {sub}/ nor an image-folder tree (train/ and test/) "
                         f"for dataset {name!r}")
    return f"torchvision-{name}", path, _files_under(path / sub)


def _test_folder(path: Path, required: bool = True) -> Path | None:
    for sub in ("test", "val"):
        if (path / sub).is_dir():
            return path / sub
    if required:
        raise ProbeError(f"image-folder tree {str(path)!r} has no val/ or test/ folder")
    return None


# A flat folder of test images labelled by a file, as Tiny ImageNet lays out its val/: file<TAB>class per line
ANNOTATIONS = "val_annotations.txt"


def _class_folders(folder: Path) -> list[str]:
    return sorted(entry.name for entry in os.scandir(folder) if entry.is_dir())


def test_split(root: Path) -> tuple[Path, Path | None]:
    """The folder of an image-folder tree whose images are its test split, and the labels file of a flat one (None
    for one folder per class), chosen from the folder names alone, before anything is decoded: a labelled split over
    an unlabelled one (Tiny ImageNet's test/ has no labels, its val/ has them); test/ over val/ where both are
    labelled (a training run's own validation comes out of train/, so val/ is then unused). One line with the fix
    where no split is labelled."""
    train = _class_folders(root / "train")
    if not train:
        raise ProbeError(f"{str(root / 'train')!r} holds no class folders; expected one folder of images per class")
    seen = []
    for sub in ("test", "val"):
        folder = root / sub
        if not folder.is_dir():
            continue
        classes = _class_folders(folder)
        if classes == train:
            return folder, None
        if (folder / ANNOTATIONS).is_file():
            return folder, folder / ANNOTATIONS
        shown = ", ".join(classes[:3]) or "no folders"
        if set(classes) & set(train):
            only_train = [c for c in train if c not in classes]
            if only_train:
                raise ProbeError(f"class {only_train[0]!r} of {str(root / 'train')!r} has no folder in "
                                 f"{str(folder)!r} ({len(only_train)} such); a test split needs one folder for each "
                                 "class of train/ (remove an empty or stray class folder, or add its test images)")
            extra = [c for c in classes if c not in train]
            raise ProbeError(f"class {extra[0]!r} of {str(folder)!r} is no class of {str(root / 'train')!r} "
                             f"({len(extra)} such); remove the folder, or add its training images")
        seen.append(f"{sub}/ ({shown}: {'not classes of train/' if classes else 'no class folders'})")
    raise ProbeError(f"image-folder tree {str(root)!r} has no labelled test split: {' and '.join(seen)}; lay its test "
                     f"(or val) images out in one folder per class as train/ does, or give val/ a {ANNOTATIONS} "
                     "(file<TAB>class per line)")


def _annotated_samples(folder: Path, labels: Path, classes: list[str]) -> list[tuple[str, int]]:
    """``(path, label)`` of a flat test folder labelled by ``labels``: each line's file, found under the folder (or
    its images/), and its class, one of train/'s; a line naming an unknown class or a missing file is refused by
    name."""
    index = {c: i for i, c in enumerate(classes)}
    images = folder / "images" if (folder / "images").is_dir() else folder
    out = []
    for n, line in enumerate(labels.read_text(errors="replace").splitlines(), start=1):
        fields = line.split("\t")
        if not line.strip():
            continue
        if len(fields) < 2 or fields[1] not in index:
            raise ProbeError(f"line {n} of {str(labels)!r} labels {fields[0]!r} with "
                             f"{fields[1] if len(fields) > 1 else None!r}, not a class of train/ "
                             f"({', '.join(classes[:3])}, ...)")
        path = images / fields[0]
        if not path.is_file():
            raise ProbeError(f"line {n} of {str(labels)!r} names {str(path)!r}, which is missing")
        out.append((str(path), index[fields[1]]))
    return out


def _files_under(path: Path, required: bool = True) -> list[Path]:
    if not path.is_dir():
        if required:
            raise ProbeError(f"{str(path)!r} is not a directory")
        return []
    return sorted(p for p in path.rglob("*") if p.is_file())


def _fingerprint(reader: str, source: Path, files: list[Path], spec: DataSpec, by_class: bool = False) -> str:
    h = hashlib.sha256(f"{reader}\0{source.resolve()}\0{spec.image_size}".encode())
    if by_class:  # a class-by-class entry, told from a whole decode of the same files
        h.update(b"\0by-class")
    base = source if source.is_dir() else source.parent  # an archive is its own one file
    # a skipping decode differs from a refusing one, a padded image from a cropped one; the defaults add nothing, so
    # older caches stay valid
    if spec.unreadable != "error":
        h.update(f"\0unreadable={spec.unreadable}".encode())
    if spec.resize_mode != "crop":
        h.update(f"\0resize_mode={spec.resize_mode}".encode())
    for p in files:
        st = p.stat()
        h.update(f"\0{p.relative_to(base)}\0{st.st_size}\0{st.st_mtime_ns}".encode())
    return h.hexdigest()[:16]


def _read_idx_gz(source: Path, spec: DataSpec, download: bool, progress: bool) -> ImageArrays:
    """Debian's gzipped IDX files, read with torchvision's FashionMNIST after unpacking to a scratch root."""
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "FashionMNIST" / "raw"
        raw.mkdir(parents=True)
        for f in _FASHION_FILES:
            with gzip.open(source / f"{f}.gz") as src, open(raw / f, "wb") as dst:
                shutil.copyfileobj(src, dst)
        return _read_torchvision("fashion-mnist", Path(tmp), spec, False)


def _read_torchvision(name: str, root: Path, spec: DataSpec, download: bool) -> ImageArrays:
    import torchvision.datasets as tvd

    cls = {"fashion-mnist": tvd.FashionMNIST, "cifar10": tvd.CIFAR10, "cifar100": tvd.CIFAR100}[name]
    try:
        train, test = (cls(str(root), train=t, download=download) for t in (True, False))
    except RuntimeError as e:
        raise ProbeError(f"torchvision could not read {name} under {str(root)!r}: {e}") from None

    def arrays(ds):
        x = np.asarray(ds.data, dtype=np.uint8)
        return (x[..., None] if x.ndim == 3 else x), np.asarray(ds.targets, dtype=np.int64)

    return resized(ImageArrays(*arrays(train), *arrays(test), list(train.classes)), spec.image_size,
                   spec.resize_mode)


def _read_imagefolder(source: Path, spec: DataSpec, download: bool, progress: bool) -> ImageArrays:
    """Decode an image-folder tree, the way torchvision's ImageFolder reads it, in worker processes, into uint8
    arrays."""
    test, labels = test_split(source)
    classes, samples = _folder_samples(source / "train")
    # both splits' files and labels found, and checked, before a single image is decoded
    tests = _annotated_samples(test, labels, classes) if labels is not None else _folder_samples(test)[1]
    return ImageArrays(*_decode(source / "train", samples, classes, spec, progress),
                       *_decode(test, tests, classes, spec, progress), classes)


def _imagefolder_by_class(source: Path, spec: DataSpec, progress: bool) -> tuple[Callable[[], Members], Decoder]:
    """An image-folder tree as :mod:`probe.data.class_cache` reads it: its files found and checked before any image
    is decoded, and a decoder of file paths."""
    test, labels = test_split(source)

    def members() -> Members:
        classes, samples = _folder_samples(source / "train")
        tests = _annotated_samples(test, labels, classes) if labels is not None else _folder_samples(test)[1]
        return Members(classes, samples, tests)

    def decode(paths: Sequence[str]) -> np.ndarray:
        return _decode(source, [(p, 0) for p in paths], [], spec, progress and len(paths) > 1)[0]

    return members, decode


def _folder_samples(folder: Path) -> tuple[list[str], list[tuple[str, int]]]:
    """The class folders of ``folder`` and its ``(path, label)`` image files, in ImageFolder's order; a class
    without image files is refused by name (ImageFolder's own error names no folder)."""
    from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset

    classes = sorted(entry.name for entry in os.scandir(folder) if entry.is_dir())
    if not classes:
        raise ProbeError(f"{str(folder)!r} holds no class folders; expected one folder of images per class")
    samples = make_dataset(str(folder), {c: i for i, c in enumerate(classes)}, IMG_EXTENSIONS, allow_empty=True)
    found = {label for _, label in samples}
    empty = [c for i, c in enumerate(classes) if i not in found]
    if empty:
        raise ProbeError(f"class {empty[0]!r} of {str(folder)!r} holds no image files ({', '.join(IMG_EXTENSIONS)}); "
                         "add images or remove the folder")
    return classes, samples


def _decode(folder: Path, samples: list[tuple[str, int]], classes: list[str], spec: DataSpec, progress: bool
            ) -> list[np.ndarray]:
    """Decode ``samples`` into images ``(N, H, W, C)`` and labels, refusing or skipping unreadable files."""
    import torch
    from tqdm import tqdm

    loader = torch.utils.data.DataLoader(_Decoder(samples, spec.image_size, spec.resize_mode), batch_size=256,
                                         num_workers=min(4, os.cpu_count() or 1), collate_fn=_as_list)
    xs, ys, skipped, shape = [], [], [], None
    # closed on the way out, so an error below is printed after the bar is cleared, not appended to it
    with tqdm(loader, desc=f"decoding {folder.name}/", unit="batch", leave=False, disable=not progress) as batches:
        for batch in batches:
            kept = []
            for path, label, x in batch:
                if isinstance(x, str):
                    if spec.unreadable == "error":
                        raise ProbeError(f"unreadable image {path!r} ({x}); remove or replace it, or leave "
                                         "unreadable files out with --unreadable skip (DataSpec unreadable='skip')")
                    skipped.append((path, x))
                    continue
                shape = shape or x.shape
                if x.shape != shape:
                    raise ProbeError(f"image {path!r} is {tuple(x.shape)} (channels, height, width), unlike the "
                                     f"{tuple(shape)} before it; give an image size (--image-size) to resize every "
                                     "image to (center-cropped, or as --resize-mode says)")
                kept.append((x, label))
            if kept:
                xs.append(torch.stack([x for x, _ in kept]).permute(0, 2, 3, 1).numpy())
                ys.append(np.array([y for _, y in kept]))
    if skipped:
        _check_every_class_kept(folder, classes, ys)
        print(f"skipped {len(skipped)} unreadable image{'s' if len(skipped) > 1 else ''} in {folder} (first: "
              f"{skipped[0][0]!r}, {skipped[0][1]})", file=sys.stderr)
    return [np.concatenate(xs), np.concatenate(ys).astype(np.int64)]


def _check_every_class_kept(folder: Path, classes: list[str], labels: list[np.ndarray]) -> None:
    """Skipping may leave a class with no images, which no task could train or test on."""
    kept = {int(y) for part in labels for y in part}
    gone = [c for i, c in enumerate(classes) if i not in kept]
    if gone:
        raise ProbeError(f"class {gone[0]!r} of {str(folder)!r} has no readable images left after skipping the "
                         "unreadable ones")


class _Decoder:
    """``(path, label)`` samples as a map-style dataset of ``(path, label, image (C, H, W) uint8 tensor)``, or with
    the reason in place of the image when the file cannot be decoded: an exception raised in a worker would reach the
    main process without the file's name."""

    def __init__(self, samples: list[tuple[str, int]], image_size: int | None, mode: str = "crop") -> None:
        self.samples, self.image_size, self.mode = samples, image_size, mode

    def __len__(self) -> int:
        return len(self.samples)

    def __getitem__(self, index: int) -> tuple[str, int, object]:
        path, label = self.samples[index]
        image = _open_rgb(path)
        if isinstance(image, str):
            return path, label, image
        import torchvision.transforms.v2.functional as F

        tensor = F.pil_to_tensor(image)
        return path, label, tensor if self.image_size is None else to_square(tensor, self.image_size, self.mode)


def _open_rgb(path: str):
    """The image at ``path`` converted to RGB (as ImageFolder's loader does), or why it cannot be decoded."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return image.convert("RGB")  # decodes the whole file, so truncation shows here
    except UnidentifiedImageError:
        return "an empty file" if os.path.getsize(path) == 0 else "not an image format PIL knows"
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as e:
        return f"{type(e).__name__}: {e}"


def _as_list(batch: list) -> list:
    """Keep a batch as decoded, so image sizes can be checked one by one before stacking."""
    return batch


# The readers that decode image files, class by class: each gives the dataset's members and a decoder of them
BY_CLASS = {
    "imagefolder": _imagefolder_by_class,
    "tinyimagenet": tinyimagenet.by_class,
}

_READERS = {
    "idx-gz": _read_idx_gz,
    "imagefolder": _read_imagefolder,
    "torchvision-fashion-mnist": lambda s, spec, d, p: _read_torchvision("fashion-mnist", s, spec, d),
    "torchvision-cifar10": lambda s, spec, d, p: _read_torchvision("cifar10", s, spec, d),
    "torchvision-cifar100": lambda s, spec, d, p: _read_torchvision("cifar100", s, spec, d),
}


def _write_cache(folder: Path, arrays: ImageArrays, meta: dict) -> None:
    """Write the arrays into a scratch folder, then rename it into place (atomic for readers of ``folder``)."""
    folder.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{folder.name}.", dir=folder.parent))
    try:
        sums = {}
        for field in ("train_x", "train_y", "test_x", "test_y"):
            np.save(tmp / f"{field}.npy", getattr(arrays, field))
            sums[field] = checksum(np.load(tmp / f"{field}.npy", mmap_mode="r"))
        with open(tmp / "meta.json", "w") as f:
            json.dump({**meta, "classes": arrays.classes, "checksums": sums}, f, indent=2)
        try:
            os.replace(tmp, folder)
        except OSError:  # another process cached the same source first
            if not (folder / "meta.json").exists():
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _read_cache(folder: Path) -> ImageArrays:
    """A decoded dataset from its cache entry, memory-mapped. A file of it that cannot be read, or that holds no
    such array as probe writes (a pickled object array, say: np.load runs no pickled code), is a one-line
    ProbeError naming it: the entry is decoded again once deleted."""
    path = folder / "meta.json"
    try:
        with open(path) as f:
            meta = json.load(f)
        classes, sums = meta["classes"], meta.get("checksums") or {}  # an entry written before checksums has none
        arrays = {}
        for key, ndim, kind in (("train_x", 4, "u"), ("train_y", 1, "iu"), ("test_x", 4, "u"), ("test_y", 1, "iu")):
            path = folder / f"{key}.npy"
            arrays[key] = np.load(path, mmap_mode="r")
            if arrays[key].ndim != ndim or arrays[key].dtype.kind not in kind:
                raise ValueError(f"it holds a {arrays[key].dtype} array of {arrays[key].ndim} dimensions, not the "
                                 f"{'uint8 images' if ndim == 4 else 'integer labels'} probe writes")
            if key in sums and checksum(arrays[key]) != sums[key]:
                raise ValueError("its content changed since it was written (its checksum differs from the one "
                                 "recorded in meta.json), so its images or labels are not the dataset's")
    except (OSError, ValueError, KeyError, TypeError) as e:  # a JSONDecodeError is a ValueError
        raise ProbeError(f"cannot read the decoded-dataset cache file {str(path)!r} ({reason(e)}); delete the "
                         f"folder {str(folder)!r}, and the dataset is decoded again") from None
    return ImageArrays(*arrays.values(), classes)

"""The arrays every dataset kind decodes to, resized to squares where asked, and the names of probe's own kinds:
the ground both the built-in readers (:mod:`probe.data.datasets`) and datasets of one's own (:mod:`probe.data.custom`)
stand on. Imports nothing of probe's own."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

# The dataset kinds probe reads itself; any other name is a dataset of one's own
DATASETS = ("fashion-mnist", "cifar10", "cifar100", "imagefolder", "tinyimagenet", "synthetic")


@dataclass(frozen=True)
class ImageArrays:
    """A whole dataset as arrays: images ``(N, H, W, C)`` uint8, labels ``(N,)`` int64 indexing ``classes``."""

    train_x: np.ndarray
    train_y: np.ndarray
    test_x: np.ndarray
    test_y: np.ndarray
    classes: list[str]


def resized(arrays: ImageArrays, image_size: int | None, mode: str = "crop") -> ImageArrays:
    """Images made ``image_size`` squares as :func:`to_square` does; as they are without a size."""
    if image_size is None or arrays.train_x.shape[1:3] == (image_size, image_size):
        return arrays
    import torch

    def resize(x):
        t = to_square(torch.from_numpy(np.ascontiguousarray(x)).permute(0, 3, 1, 2), image_size, mode)
        return t.permute(0, 2, 3, 1).contiguous().numpy()

    return ImageArrays(resize(arrays.train_x), arrays.train_y, resize(arrays.test_x), arrays.test_y, arrays.classes)


def to_square(images, size: int, mode: str):
    """uint8 images ``(..., C, H, W)`` (a tensor) as ``size`` x ``size`` squares: ``crop`` resizes the shorter side to
    ``size`` and center-crops the longer, ``pad`` resizes the longer side to ``size`` and pads the shorter with zeros
    on both sides (centered), ``squash`` resizes each side to ``size``."""
    import torchvision.transforms.v2.functional as F

    height, width = images.shape[-2:]
    if mode == "squash":
        return F.resize(images, [size, size], antialias=True)
    if mode == "crop":
        return F.center_crop(F.resize(images, size, antialias=True), size)
    # pad: the longer side becomes size, the shorter keeps the aspect ratio (at least one pixel)
    scale = size / max(height, width)
    new = [max(1, round(height * scale)), max(1, round(width * scale))]
    images = F.resize(images, new, antialias=True)
    top, left = (size - new[0]) // 2, (size - new[1]) // 2
    return F.pad(images, [left, top, size - new[1] - left, size - new[0] - top], fill=0)

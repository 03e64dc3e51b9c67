"""Batches from uint8 image tensors held on the training device: normalization, random crops and mirroring done
for a whole batch at once, with no per-sample Python."""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F


def channel_stats(images: np.ndarray, indices: np.ndarray | None = None) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation of ``(N, H, W, C)`` uint8 images (those at ``indices``; None: every
    one), on the 0..1 scale (accumulated in float64 over chunks, so a large dataset is never copied whole as
    floats)."""
    total = np.zeros(images.shape[-1])
    squares = np.zeros(images.shape[-1])
    n = len(images) if indices is None else len(indices)
    for i in range(0, n, 4096):
        chunk = images[i: i + 4096] if indices is None else images[indices[i: i + 4096]]
        x = np.asarray(chunk, dtype=np.float64) / 255.0
        total += x.sum(axis=(0, 1, 2))
        squares += (x * x).sum(axis=(0, 1, 2))
    count = n * images.shape[1] * images.shape[2]
    mean = total / count
    std = np.sqrt(np.maximum(squares / count - mean * mean, 0.0))
    return mean.tolist(), np.maximum(std, 1e-3).tolist()


def to_device(images: np.ndarray, device: torch.device) -> torch.Tensor:
    """``(N, H, W, C)`` uint8 array -> ``(N, C, H, W)`` uint8 tensor on ``device``."""
    return torch.from_numpy(np.ascontiguousarray(images)).permute(0, 3, 1, 2).contiguous().to(device)


class Normalize:
    """uint8 ``(B, C, H, W)`` -> float, standardized with the dataset's per-channel statistics."""

    def __init__(self, mean: list[float], std: list[float], device: torch.device | str):
        self.stats = {"mean": list(mean), "std": list(std)}  # on the 0..1 scale, as data.json and checkpoints hold them
        self.mean = torch.tensor(mean, device=device).view(1, -1, 1, 1) * 255.0
        self.std = torch.tensor(std, device=device).view(1, -1, 1, 1) * 255.0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        return (x.float() - self.mean) / self.std


def random_crop_flip(x: torch.Tensor, size: int, padding: int, flip: bool, generator: torch.Generator) -> torch.Tensor:
    """A random ``size`` x ``size`` crop of each image padded by ``padding`` (zeros), mirrored with probability 1/2.

    Random numbers come from ``generator`` (on the CPU, so runs repeat across devices)."""
    b, _, h, w = x.shape
    if padding:
        x = F.pad(x, (padding, padding, padding, padding))
        h, w = h + 2 * padding, w + 2 * padding
    oy = torch.randint(0, h - size + 1, (b,), generator=generator).to(x.device)
    ox = torch.randint(0, w - size + 1, (b,), generator=generator).to(x.device)
    ar = torch.arange(size, device=x.device)
    rows = (oy[:, None] + ar)[:, None, :, None]
    cols = ox[:, None] + ar
    if flip:
        mirrored = torch.rand(b, generator=generator).to(x.device) < 0.5
        cols = torch.where(mirrored[:, None], cols.flip(1), cols)
    cols = cols[:, None, None, :]
    return x[torch.arange(b, device=x.device)[:, None, None, None], torch.arange(x.shape[1], device=x.device)[
        None, :, None, None], rows, cols]


def center_crop(x: torch.Tensor, size: int) -> torch.Tensor:
    """The central ``size`` x ``size`` window (evaluation's counterpart of the random crop)."""
    h, w = x.shape[-2:]
    top, left = (h - size) // 2, (w - size) // 2
    return x[..., top: top + size, left: left + size]

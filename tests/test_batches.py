"""Batch augmentation and preprocessing on uint8 tensors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from probe.execution.batches import Normalize, center_crop, channel_stats, random_crop_flip, to_device


def _images(b=16, c=3, h=8, w=8, seed=0) -> torch.Tensor:
    return torch.randint(0, 256, (b, c, h, w), generator=torch.Generator().manual_seed(seed), dtype=torch.uint8)


def _gen(seed=0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("size, padding", [(8, 0), (8, 4), (6, 0), (6, 2), (12, 2)])
@pytest.mark.parametrize("channels", [1, 3])
def test_random_crop_flip_shapes(size, padding, channels):
    x = _images(c=channels)
    out = random_crop_flip(x, size, padding, True, _gen())
    assert out.shape == (16, channels, size, size)
    assert out.dtype == torch.uint8


def test_no_padding_full_size_is_identity_or_mirror():
    x = _images(b=64)
    out = random_crop_flip(x, 8, 0, True, _gen())
    mirrored = []
    for i in range(len(x)):
        same, flipped = torch.equal(out[i], x[i]), torch.equal(out[i], x[i].flip(-1))
        assert same or flipped, i
        mirrored.append(flipped and not same)
    assert 10 < sum(mirrored) < 54  # about half are mirrored
    assert torch.equal(random_crop_flip(x, 8, 0, False, _gen()), x)


def _windows(img: torch.Tensor, size: int) -> list[torch.Tensor]:
    h, w = img.shape[-2:]
    return [img[:, y: y + size, x: x + size] for y in range(h - size + 1) for x in range(w - size + 1)]


@pytest.mark.parametrize("flip", [False, True])
def test_crops_are_windows_of_the_padded_image(flip):
    x = _images(b=32)
    out = random_crop_flip(x, 8, 2, flip, _gen(3))
    padded = F.pad(x, (2, 2, 2, 2))
    offsets = set()
    for i in range(len(x)):
        windows = _windows(padded[i], 8)
        candidates = windows + ([w.flip(-1) for w in windows] if flip else [])
        matches = [k for k, w in enumerate(candidates) if torch.equal(out[i], w)]
        assert matches, i
        offsets.add(matches[0] % len(windows))
    assert len(offsets) > 5  # the crops move around


def test_crop_from_a_larger_image():
    x = _images(b=8, h=10, w=10)
    out = random_crop_flip(x, 6, 0, False, _gen())
    for i in range(len(x)):
        assert any(torch.equal(out[i], w) for w in _windows(x[i], 6))


def test_random_crop_flip_is_deterministic_for_a_seeded_generator():
    x = _images(b=32)
    a = random_crop_flip(x, 8, 4, True, _gen(11))
    b = random_crop_flip(x, 8, 4, True, _gen(11))
    c = random_crop_flip(x, 8, 4, True, _gen(12))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)
    g = _gen(11)
    first, second = random_crop_flip(x, 8, 4, True, g), random_crop_flip(x, 8, 4, True, g)
    assert torch.equal(first, a) and not torch.equal(first, second)


def test_center_crop():
    x = _images(b=2, h=10, w=10)
    assert torch.equal(center_crop(x, 6), x[..., 2:8, 2:8])
    assert torch.equal(center_crop(x, 10), x)
    odd = _images(b=2, h=11, w=11)
    assert torch.equal(center_crop(odd, 6), odd[..., 2:8, 2:8])
    assert center_crop(x[0], 4).shape == (3, 4, 4)


def test_to_device_and_normalize():
    images = np.random.default_rng(0).integers(0, 256, size=(5, 4, 4, 3), dtype=np.uint8)
    t = to_device(images, torch.device("cpu"))
    assert t.shape == (5, 3, 4, 4) and t.dtype == torch.uint8
    assert torch.equal(t[2, 1], torch.from_numpy(images[2, :, :, 1]))
    mean, std = channel_stats(images)
    assert np.allclose(mean, images.reshape(-1, 3).mean(0) / 255)
    assert np.allclose(std, images.reshape(-1, 3).std(0) / 255)
    z = Normalize(mean, std, torch.device("cpu"))(t)
    assert z.dtype == torch.float32
    assert torch.allclose(z.mean(dim=(0, 2, 3)), torch.zeros(3), atol=1e-5)
    assert torch.allclose(z.std(dim=(0, 2, 3), unbiased=False), torch.ones(3), atol=1e-4)


def test_channel_stats_of_a_constant_channel():
    images = np.full((2, 3, 3, 1), 51, np.uint8)
    mean, std = channel_stats(images)
    assert mean == pytest.approx([0.2]) and std == pytest.approx([1e-3])  # floored, so normalizing cannot divide by 0


def test_channel_stats_of_chosen_images_equal_those_of_the_images_copied_out():
    images = np.random.default_rng(1).integers(0, 256, size=(9000, 2, 2, 3), dtype=np.uint8)
    chosen = np.flatnonzero(np.arange(9000) % 3 == 1)  # more than one chunk of them
    assert np.allclose(channel_stats(images, chosen), channel_stats(images[chosen]), rtol=1e-12)
    assert channel_stats(images, None) == channel_stats(images)

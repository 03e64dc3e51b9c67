"""CaffeNet, the network of Yosinski et al. (2014): five convolutional and three fully connected layers.

``caffenet`` is the paper's network for 227-pixel crops of ImageNet (Caffe's ``bvlc_reference_caffenet``: ReLU,
max-pooling, local response normalization after pooling in layers 1-2, two filter groups in conv2/4/5, dropout
0.5 in fc6/fc7). ``caffenet-small`` keeps the same eight layers and their order for 28-32 pixel inputs: 5x5 filters
at stride 1 in conv1-2, padded pooling, and narrower fully connected layers. Both take a width multiplier.
"""

from __future__ import annotations

import torch
from torch import nn

from probe.architectures.layered import LayeredNet
from probe.errors import ProbeError


def _channels(n: int, width: float, groups: int) -> int:
    """``n`` scaled by ``width``, rounded to a positive multiple of ``groups``."""
    return max(groups, int(round(n * width / groups)) * groups)


def _norm(lrn: bool) -> list[nn.Module]:
    # Caffe's LRN: local_size 5, alpha 1e-4 (divided by local_size, as torch's LocalResponseNorm also does), beta .75
    return [nn.LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.0)] if lrn else []


def _build(name: str, convs: list[dict], fc: int, in_channels: int, num_classes: int, input_size: int,
           width: float, groups: bool, lrn: bool, dropout: float) -> LayeredNet:
    if width <= 0:
        raise ProbeError(f"width {width} of {name} must be positive")
    if not 0 <= dropout < 1:
        raise ProbeError(f"dropout {dropout} of {name} must lie in [0, 1)")
    g = 2 if groups else 1
    stages, c_in = [], in_channels
    for i, conv in enumerate(convs, start=1):
        c_out = _channels(conv["out"], width, g)
        layers = [nn.Conv2d(c_in, c_out, conv["k"], stride=conv.get("stride", 1), padding=conv.get("pad", 0),
                            groups=g if conv.get("grouped") else 1), nn.ReLU(inplace=True)]
        if conv.get("pool"):
            layers.append(nn.MaxPool2d(3, stride=2, padding=conv.get("pool_pad", 0)))
        if conv.get("lrn"):
            layers += _norm(lrn)
        stages.append((f"conv{i}", nn.Sequential(*layers)))
        c_in = c_out
    with torch.no_grad():  # shape inference on the meta device: no memory, no compute
        x = torch.zeros(1, in_channels, input_size, input_size, device="meta")
        try:
            for _, stage in stages:
                x = stage.to("meta")(x)
        except RuntimeError:
            raise ProbeError(f"input size {input_size} is too small for {name}") from None
    flat, f = x.numel(), _channels(fc, width, 1)
    stages += [
        ("fc6", nn.Sequential(nn.Flatten(), nn.Linear(flat, f), nn.ReLU(inplace=True), nn.Dropout(dropout))),
        ("fc7", nn.Sequential(nn.Linear(f, f), nn.ReLU(inplace=True), nn.Dropout(dropout))),
        ("fc8", nn.Sequential(nn.Linear(f, num_classes))),
    ]
    net = LayeredNet(stages)
    return net.to_empty(device="cpu")  # real storage; the initialization scheme fills it


def caffenet(in_channels: int, num_classes: int, input_size: int = 227, width: float = 1.0, groups: bool = True,
             lrn: bool = True, dropout: float = 0.5) -> LayeredNet:
    convs = [dict(out=96, k=11, stride=4, pool=True, lrn=True), dict(out=256, k=5, pad=2, grouped=True, pool=True,
             lrn=True), dict(out=384, k=3, pad=1), dict(out=384, k=3, pad=1, grouped=True),
             dict(out=256, k=3, pad=1, grouped=True, pool=True)]
    return _build("caffenet", convs, 4096, in_channels, num_classes, input_size, width, groups, lrn, dropout)


def caffenet_small(in_channels: int, num_classes: int, input_size: int = 32, width: float = 1.0,
                   groups: bool = False, lrn: bool = True, dropout: float = 0.5) -> LayeredNet:
    convs = [dict(out=96, k=5, pad=2, pool=True, pool_pad=1, lrn=True),
             dict(out=256, k=5, pad=2, grouped=True, pool=True, pool_pad=1, lrn=True),
             dict(out=384, k=3, pad=1), dict(out=384, k=3, pad=1, grouped=True),
             dict(out=256, k=3, pad=1, grouped=True, pool=True, pool_pad=1)]
    return _build("caffenet-small", convs, 2048, in_channels, num_classes, input_size, width, groups, lrn, dropout)


# Caffe's bvlc_reference_caffenet fillers: Gaussian std per layer and constant bias (Krizhevsky et al. 2012).
CAFFENET_GAUSSIAN = {"conv1": (0.01, 0.0), "conv2": (0.01, 1.0), "conv3": (0.01, 0.0), "conv4": (0.01, 1.0),
                     "conv5": (0.01, 1.0), "fc6": (0.005, 1.0), "fc7": (0.005, 1.0), "fc8": (0.01, 0.0)}

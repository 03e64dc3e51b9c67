"""The stitching layer of model stitching (Lenc & Vedaldi 2015; Bansal, Nakkiran & Barak, NeurIPS 2021).

A stitched network runs layers 1..n of one trained network, a trainable linear map, and layers n+1..L of another,
both frozen: if a linear map lets the top of B read A's layer n as well as its own, A's features at n were as good
for B as B's, and what a transfer network (AnB) loses there comes from re-training the top, not from the features.
As Bansal et al. stitch convolutional networks, the map is a 1x1 convolution between two BatchNorms (for flat
features: a linear layer between two BatchNorms), so that it can rescale, rotate and mix the units but sees
nothing of their spatial neighbourhood.
"""

from __future__ import annotations

import torch
from torch import nn

from probe.architectures.layered import LayeredNet
from probe.errors import ProbeError


class Stitch(nn.Module):
    """A linear map from ``units`` channels (or features) to as many, between BatchNorms."""

    def __init__(self, units: int, spatial: bool):
        super().__init__()
        norm, linear = (nn.BatchNorm2d, nn.Conv2d) if spatial else (nn.BatchNorm1d, nn.Linear)
        self.before = norm(units)
        self.map = linear(units, units, 1) if spatial else linear(units, units)
        self.after = norm(units)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.after(self.map(self.before(x)))


def _layer_shapes(net: LayeredNet, layers: list[int], in_channels: int, input_size: int) -> dict[int, tuple]:
    """The output shape of each of ``layers`` on one blank image."""
    with torch.no_grad():
        was_training = net.training
        _, out = net.eval().forward_intermediates(torch.zeros(1, in_channels, input_size, input_size), layers,
                                                   stop_early=True)
        net.train(was_training)
    return {net.layer_index(name): tuple(x.shape) for name, x in out.items()}


def check_stitchable(net: LayeredNet, cuts: list[int], in_channels: int, input_size: int) -> dict[int, tuple]:
    """The output shape of each cut, refusing cuts whose outputs a stitch cannot map: it takes channel maps
    (N, C, H, W) or flat features (N, D), not token sequences (N, T, D) such as a vision transformer's."""
    shapes = _layer_shapes(net, cuts, in_channels, input_size)
    for n, shape in shapes.items():
        if len(shape) not in (2, 4):
            raise ProbeError(f"a stitch cannot follow layer {n} ({net.layer_names[n - 1]}) of this network: its "
                             f"output has shape {list(shape)}, and a stitch maps channel maps (N, C, H, W) or flat "
                             "features (N, D); leave the stitched variants out, or cut where the output is one of "
                             "those")
    return shapes


def add_stitch(net: LayeredNet, n: int, in_channels: int, input_size: int, seed: int) -> None:
    """Insert a stitch after layer ``n`` of ``net``, sized by the output of layer n on one blank image and
    initialized from ``seed`` (the network's init seed: a stitched network is built from its spec alone)."""
    shape = check_stitchable(net, [n], in_channels, input_size)[n]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed * 1_000_003 + 41)
        stitch = Stitch(shape[1], spatial=len(shape) == 4)
    net.add_stitch(n, stitch)

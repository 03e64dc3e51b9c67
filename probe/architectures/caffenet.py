"""CaffeNet, the network of Yosinski et al. (2014): five convolutional and three fully connected layers.

``caffenet`` is the paper's network for 227-pixel crops of ImageNet (Caffe's ``bvlc_reference_caffenet``: ReLU,
max-pooling, local response normalization after pooling in layers 1-2, two filter groups in conv2/4/5, dropout
0.5 in fc6/fc7). ``caffenet-small`` keeps the same eight layers and their order for 28-32 pixel inputs: 5x5 filters
at stride 1 in conv1-2, padded pooling, and narrower fully connected layers. Both take a width multiplier.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from probe.architectures.layered import LayeredNet
from probe.errors import ProbeError


def _channels(n: int, width: float, groups: int) -> int:
    """``n`` scaled by ``width``, rounded to a positive multiple of ``groups``."""
    return max(groups, int(round(n * width / groups)) * groups)


def _channel_window_mean(x: torch.Tensor, size: int, pad: tuple[int, int]) -> torch.Tensor:
    """The mean of ``x`` over a window of ``size`` neighbouring channels (zero padded by ``pad``): the sum of
    ``size`` shifted slices of a ``(pixels, channels)`` view, contiguous for channels-last activations: whole-tensor
    adds, where ``avg_pool1d`` over a ``(pixels, 1, channels)`` view pools one short row at a time."""
    b, c, h, w = x.shape
    pixels = F.pad(x.permute(0, 2, 3, 1).reshape(-1, c), pad)
    total = pixels[:, :c].clone()
    for shift in range(1, size):
        total += pixels[:, shift: shift + c]
    return total.div_(size).reshape(b, h, w, c).permute(0, 3, 1, 2)


class _LRNFunction(torch.autograd.Function):
    """``y = x * s^-beta`` with ``s = k + alpha * mean of x^2 over the channel window``, with its gradient written
    out: ``dx = g s^-beta - 2 alpha beta x * window_meanᵀ(g x s^-beta / s)``, so backward is one transposed window and
    a few products instead of autograd's trip back through the general power."""

    @staticmethod
    @torch.amp.custom_fwd(device_type="cuda", cast_inputs=torch.float32)  # log/exp of sums of squares: not in bf16
    def forward(ctx, x, size, alpha, beta, k):
        pad = (size // 2, (size - 1) // 2)
        s = _channel_window_mean(x * x, size, pad).mul_(alpha).add_(k)
        r = torch.exp(torch.log(s).mul_(-beta))  # s^-beta: exp and log vectorize, the general power does not
        ctx.save_for_backward(x, r, s)
        ctx.hyper = alpha, beta, size, pad
        return x * r

    @staticmethod
    @torch.amp.custom_bwd(device_type="cuda")
    @torch.autograd.function.once_differentiable  # the gradient above is not itself differentiable
    def backward(ctx, g):
        x, r, s = ctx.saved_tensors
        alpha, beta, size, pad = ctx.hyper
        back = _channel_window_mean(g * x * r / s, size, pad[::-1])  # the window's transpose: the padding mirrored
        return g * r - (2 * alpha * beta) * x * back, None, None, None, None


class LocalResponseNorm(nn.Module):
    """Caffe's across-channel LRN, ``x / (k + alpha/size * sum of x^2 over size neighbouring channels)^beta``.

    The same arithmetic as ``torch.nn.LocalResponseNorm`` (zero padding, the window's mean), but the channel window
    is summed over a ``(pixels, channels)`` view, contiguous for channels-last activations, and the gradient is
    written out, where torch's pools a 3-d window and lets autograd differentiate it (the whole-loop effect is in
    ``benchmarks/train_throughput.py``)."""

    def __init__(self, size: int = 5, alpha: float = 1e-4, beta: float = 0.75, k: float = 1.0):
        super().__init__()
        self.size, self.alpha, self.beta, self.k = size, alpha, beta, k

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _LRNFunction.apply(x, self.size, self.alpha, self.beta, self.k)

    def extra_repr(self) -> str:
        return f"{self.size}, alpha={self.alpha}, beta={self.beta}, k={self.k}"


def _norm(lrn: bool) -> list[nn.Module]:
    # Caffe's LRN: local_size 5, alpha 1e-4 (divided by local_size, as torch's LocalResponseNorm also does), beta .75
    return [LocalResponseNorm(5, alpha=1e-4, beta=0.75, k=1.0)] if lrn else []


def _check(name: str, convs: list[dict], input_size: int, width: float, dropout: float) -> int:
    """Refuse options or an input size the network cannot be built for; returns the side of the last
    convolutional map (Conv2d's and MaxPool2d's arithmetic), which sizes fc6."""
    if width <= 0:
        raise ProbeError(f"width {width} of {name} must be positive")
    if not 0 <= dropout < 1:
        raise ProbeError(f"dropout {dropout} of {name} must lie in [0, 1)")
    side = input_size
    for conv in convs:
        side = (side + 2 * conv.get("pad", 0) - conv["k"]) // conv.get("stride", 1) + 1
        if conv.get("pool") and side > 0:
            side = (side + 2 * conv.get("pool_pad", 0) - 3) // 2 + 1
        if side < 1:
            raise ProbeError(f"input size {input_size} is too small for {name}")
    return side


def _build(name: str, convs: list[dict], fc: int, in_channels: int, num_classes: int, input_size: int,
           width: float, groups: bool, lrn: bool, dropout: float) -> LayeredNet:
    side = _check(name, convs, input_size, width, dropout)
    g = 2 if groups else 1
    stages, c_in = [], in_channels
    for i, conv in enumerate(convs, start=1):
        c_out = _channels(conv["out"], width, g)
        layers = [nn.Conv2d(c_in, c_out, conv["k"], stride=conv.get("stride", 1), padding=conv.get("pad", 0),
                            groups=g if conv.get("grouped") else 1)]
        # Caffe rectifies, then pools. ReLU is monotone, so it commutes with max-pooling: rectifying the pooled map
        # gives the same values and gradients while touching a quarter of the elements.
        if conv.get("pool"):
            layers.append(nn.MaxPool2d(3, stride=2, padding=conv.get("pool_pad", 0)))
        layers.append(nn.ReLU(inplace=True))
        if conv.get("lrn"):
            layers += _norm(lrn)
        stages.append((f"conv{i}", nn.Sequential(*layers)))
        c_in = c_out
    flat, f = c_in * side * side, _channels(fc, width, 1)
    stages += [
        ("fc6", nn.Sequential(nn.Flatten(), nn.Linear(flat, f), nn.ReLU(inplace=True), nn.Dropout(dropout))),
        ("fc7", nn.Sequential(nn.Linear(f, f), nn.ReLU(inplace=True), nn.Dropout(dropout))),
        ("fc8", nn.Sequential(nn.Linear(f, num_classes))),
    ]
    return LayeredNet(stages)  # the initialization scheme fills every weight and bias


CAFFENET_CONVS = [dict(out=96, k=11, stride=4, pool=True, lrn=True),
                  dict(out=256, k=5, pad=2, grouped=True, pool=True, lrn=True),
                  dict(out=384, k=3, pad=1), dict(out=384, k=3, pad=1, grouped=True),
                  dict(out=256, k=3, pad=1, grouped=True, pool=True)]
SMALL_CONVS = [dict(out=96, k=5, pad=2, pool=True, pool_pad=1, lrn=True),
               dict(out=256, k=5, pad=2, grouped=True, pool=True, pool_pad=1, lrn=True),
               dict(out=384, k=3, pad=1), dict(out=384, k=3, pad=1, grouped=True),
               dict(out=256, k=3, pad=1, grouped=True, pool=True, pool_pad=1)]


def caffenet(in_channels: int, num_classes: int, input_size: int = 227, width: float = 1.0, groups: bool = True,
             lrn: bool = True, dropout: float = 0.5) -> LayeredNet:
    return _build("caffenet", CAFFENET_CONVS, 4096, in_channels, num_classes, input_size, width, groups, lrn,
                  dropout)


def caffenet_small(in_channels: int, num_classes: int, input_size: int = 32, width: float = 1.0,
                   groups: bool = False, lrn: bool = True, dropout: float = 0.5) -> LayeredNet:
    return _build("caffenet-small", SMALL_CONVS, 2048, in_channels, num_classes, input_size, width, groups, lrn,
                  dropout)


def check_caffenet(in_channels: int, input_size: int, width: float = 1.0, dropout: float = 0.5, **_) -> None:
    """What planning checks of a caffenet (groups and lrn build with any value)."""
    _check("caffenet", CAFFENET_CONVS, input_size, width, dropout)


def check_caffenet_small(in_channels: int, input_size: int, width: float = 1.0, dropout: float = 0.5, **_) -> None:
    _check("caffenet-small", SMALL_CONVS, input_size, width, dropout)


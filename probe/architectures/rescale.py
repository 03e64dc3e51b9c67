"""Rescaling layer n without changing what the network computes (the dose of :mod:`probe.specs.dose`).

Layer n's last weighted module (a convolution or a linear map) has its weights and bias multiplied per output channel;
layer n+1's first weighted module has its input weights divided by the same factors. Between the two, every module
must be positively homogeneous and act channel by channel (ReLU, max- and average-pooling, dropout, flattening), so
that the pair computes the function it did: ``relu(αx) = α relu(x)`` for α > 0. Local response normalization and
BatchNorm are not (they divide by a function of the scale, or re-centre it), nor is a residual connection (it adds the
unscaled input), so a cut there is refused, naming the module. Only layers that are plain sequences of modules can be
read this way: a stage with its own ``forward`` is refused as one whose data flow cannot be checked.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from probe.architectures.layered import LayeredNet
from probe.errors import ProbeError
from probe.specs.dose import Dose

WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)
# f(αx) = αf(x) for α > 0, channel by channel
HOMOGENEOUS = (nn.ReLU, nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
               nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveMaxPool2d, nn.Dropout, nn.Dropout2d,
               nn.Flatten, nn.Identity)


def _leaves(stage: nn.Module, where: str) -> list[tuple[str, nn.Module]]:
    """The modules a plain sequential stage runs, in order (nested sequences flattened)."""
    if not isinstance(stage, nn.Sequential):
        raise ProbeError(f"layer {where} is a {type(stage).__name__}, not a plain sequence of modules, so a dose "
                         "cannot be checked to preserve its function; dose another cut")
    out = []
    for name, m in stage.named_children():
        out += _leaves(m, f"{where}.{name}") if isinstance(m, nn.Sequential) else [(f"{where}.{name}", m)]
    return out


def _refuse(name: str, module: nn.Module, n: int) -> ProbeError:
    return ProbeError(f"cannot dose the cut after layer {n}: {name} ({type(module).__name__}) lies between layer "
                      f"{n}'s last weighted module and layer {n + 1}'s first, and is not positively homogeneous (a "
                      "rescale would change the function); dose a cut with only ReLU, pooling or dropout there")


def dose_sites(model: LayeredNet, n: int) -> tuple[nn.Module, nn.Module]:
    """Layer ``n``'s last weighted module and layer n+1's first, checked that a rescale between them preserves the
    network's function (module docstring); else one line naming what stands in the way."""
    names = model.layer_names
    if not 1 <= n < len(names):
        raise ProbeError(f"cannot dose the cut after layer {n} of a {len(names)}-layer network "
                         f"(cut points 1..{len(names) - 1})")
    below, above = _leaves(model.layer(n), names[n - 1]), _leaves(model.layer(n + 1), names[n])
    last = max((i for i, (_, m) in enumerate(below) if isinstance(m, WEIGHTED)), default=None)
    if last is None:
        raise ProbeError(f"cannot dose the cut after layer {n}: layer {names[n - 1]} has no convolution or linear "
                         "map to rescale")
    first = next((i for i, (_, m) in enumerate(above) if isinstance(m, WEIGHTED)), None)
    if first is None:
        raise ProbeError(f"cannot dose the cut after layer {n}: layer {names[n]} has no convolution or linear map "
                         "to take the rescaled features")
    for name, m in below[last + 1:] + above[:first]:
        if not isinstance(m, HOMOGENEOUS):
            raise _refuse(name, m, n)
    return below[last][1], above[first][1]


def channel_factors(dose: Dose, channels: int, seed: int) -> torch.Tensor:
    """One factor per output channel: α for each (uniform), or log-uniform in [1/α, α] drawn from ``seed``."""
    if not dose.per_channel:
        return torch.full((channels,), dose.factor)
    g = torch.Generator().manual_seed(seed)
    log = math.log(dose.factor)
    return torch.exp((torch.rand(channels, generator=g, dtype=torch.float64) * 2 - 1) * log).float()


@torch.no_grad()
def scale_layer(model: LayeredNet, n: int, factors: torch.Tensor) -> None:
    """Multiply layer ``n``'s output, channel by channel, by ``factors`` (its last weighted module's weights and
    bias)."""
    scaled, _ = dose_sites(model, n)
    shape = (-1,) + (1,) * (scaled.weight.dim() - 1)
    scaled.weight.mul_(factors.to(scaled.weight).reshape(shape))
    if scaled.bias is not None:
        scaled.bias.mul_(factors.to(scaled.bias))


@torch.no_grad()
def compensate_next(model: LayeredNet, n: int, factors: torch.Tensor) -> None:
    """Divide the inputs of layer n+1's first weighted module by ``factors`` (one per channel of layer n), so that
    after :func:`scale_layer` the network computes what it did. A linear map after a flattened feature map takes each
    channel's factor for all of that channel's positions (channels first, as ``nn.Flatten`` lays them out)."""
    _, taking = dose_sites(model, n)
    w = taking.weight
    inputs = w.shape[1] * getattr(taking, "groups", 1)
    if inputs % len(factors):
        raise ProbeError(f"layer {n + 1} takes {inputs} inputs, not a multiple of layer {n}'s {len(factors)} channels")
    per_input = factors.to(w).repeat_interleave(inputs // len(factors))
    groups = getattr(taking, "groups", 1)
    # weight (out, in / groups, ...): output group g reads inputs g * in/groups .. (g + 1) * in/groups - 1
    view = w.view(groups, w.shape[0] // groups, w.shape[1], *w.shape[2:])
    view.div_(per_input.view(groups, 1, w.shape[1], *([1] * (w.dim() - 2))))


def apply_dose(model: LayeredNet, n: int, dose: Dose, seed: int) -> torch.Tensor:
    """Rescale layer ``n`` of ``model`` by ``dose`` (its per-channel factors drawn from ``seed``); the factors."""
    scaled, _ = dose_sites(model, n)
    factors = channel_factors(dose, scaled.weight.shape[0], seed)
    scale_layer(model, n, factors)
    return factors


def _first_weighted(model: LayeredNet, k: int) -> nn.Module:
    """Layer ``k``'s first convolution or linear map."""
    where = model.layer_names[k - 1]
    module = next((m for _, m in _leaves(model.layer(k), where) if isinstance(m, WEIGHTED)), None)
    if module is None:
        raise ProbeError(f"layer {where} has no convolution or linear map whose initial scale could be matched")
    return module


@torch.no_grad()
def _pre_activation_rms(model: LayeredNet, k: int, batch: torch.Tensor) -> float:
    """The RMS of what layer ``k``'s first weighted module computes on ``batch`` before its bias, in eval mode."""
    module, seen = _first_weighted(model, k), []

    def keep(m: nn.Module, args: tuple, out: torch.Tensor) -> None:
        bias = 0 if m.bias is None else m.bias.reshape((1, -1) + (1,) * (out.dim() - 2))
        seen.append(float((out - bias).double().pow(2).mean().sqrt()))

    handle = module.register_forward_hook(keep)
    was_training = model.training
    try:
        model.eval()
        model(batch)
    finally:
        handle.remove()
        model.train(was_training)
    return seen[0]


@torch.no_grad()
def match_scale(model: LayeredNet, fresh: LayeredNet, batch: torch.Tensor, n: int) -> float:
    """Scale the initial weights of layer n+1's first weighted module of ``model`` (a cut network whose layers above
    n are fresh) so that on ``batch`` its pre-activations (bias left out) have the RMS that ``fresh``'s have (a
    network fresh throughout, as a base starts): the new top then starts where a base's did, whatever the scale of the
    copied features below it (the remedy the positive control tests). Returns the factor applied."""
    if not 1 <= n < len(model.layer_names):
        raise ProbeError(f"cannot match the scale above layer {n} of a {len(model.layer_names)}-layer network")
    now, target = _pre_activation_rms(model, n + 1, batch), _pre_activation_rms(fresh, n + 1, batch)
    if not (math.isfinite(now) and now > 0 and math.isfinite(target)):
        raise ProbeError(f"cannot match the scale above layer {n}: layer {model.layer_names[n]} computes "
                         f"{'nothing but zeros' if now == 0 else 'non-finite values'} on the training batch")
    factor = target / now
    _first_weighted(model, n + 1).weight.mul_(factor)
    return factor

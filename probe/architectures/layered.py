"""The layer contract every architecture follows.

A network is a sequence of named stages; stage i (1-based) is the paper's layer i, so layers 1..L-1 are the cut
points and stage L is the classifier. Cutting, freezing, re-initializing and activation extraction all address
layers through this class (after timm's ``feature_info`` / ``forward_intermediates``).

A stitched network (Lenc & Vedaldi 2015; Bansal, Nakkiran & Barak 2021) carries a trainable ``stitch`` module between
layer n and layer n+1 (:meth:`LayeredNet.add_stitch`): layers 1..n of one network, the stitch, layers n+1..L of
another. The stitch is no layer of its own: layer n's output is what comes out of layer n, before the stitch, and
its parameters are keyed ``stitch.*``, apart from every layer's.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
from torch import nn

from probe.errors import ProbeError


class LayeredNet(nn.Module):
    """A sequential network of named stages with ``forward_intermediates`` and per-layer freezing.

    ``source_keys`` maps each ``state_dict`` key to its key in the module the network was adapted from
    (:mod:`probe.architectures.adapter`), so that module's weights load into it; empty for a network built as stages.
    """

    def __init__(self, stages: Sequence[tuple[str, nn.Module]], source_keys: Mapping[str, str] | None = None):
        super().__init__()
        self.stages = nn.ModuleDict(stages)
        self.n_frozen = 0
        self.source_keys = dict(source_keys or {})
        self.stitch: nn.Module | None = None
        self.stitch_after = 0  # the layer n whose output the stitch maps (0: no stitch)

    def add_stitch(self, n: int, stitch: nn.Module) -> None:
        """Insert ``stitch`` between layer ``n`` and layer n+1."""
        if not 1 <= n < len(self.stages):
            raise ProbeError(f"cannot stitch after layer {n} of a {len(self.stages)}-layer network "
                             f"(cut points 1..{len(self.cut_points)})")
        self.stitch, self.stitch_after = stitch, n

    @property
    def layer_names(self) -> list[str]:
        """All layers 1..L, in order."""
        return list(self.stages.keys())

    @property
    def cut_points(self) -> list[str]:
        """Layers 1..L-1: the places where the network can be cut."""
        return self.layer_names[:-1]

    def layer(self, n: int) -> nn.Module:
        """The module of layer ``n`` (1-based)."""
        return self.stages[self.layer_names[self.layer_index(n) - 1]]

    def layer_index(self, layer: int | str) -> int:
        """The 1-based index of a layer given by index or name, checked."""
        names = self.layer_names
        if isinstance(layer, str):
            if layer not in names:
                raise ProbeError(f"unknown layer {layer!r}; this network's layers are {', '.join(names)}")
            return names.index(layer) + 1
        if not 1 <= layer <= len(names):
            raise ProbeError(f"layer {layer} is out of range 1..{len(names)} ({', '.join(names)})")
        return int(layer)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for i, stage in enumerate(self.stages.values(), start=1):
            x = stage(x)
            if i == self.stitch_after:
                x = self.stitch(x)
        return x

    def forward_intermediates(self, x: torch.Tensor, layers: Sequence[int | str] | None = None,
                              stop_early: bool = False) -> tuple[torch.Tensor | None, dict[str, torch.Tensor]]:
        """Run the network and return ``(logits, {layer name: output of that layer})``.

        ``layers`` are names or 1-based indices (default: every cut point). With ``stop_early`` the forward pass
        ends at the last requested layer and the logits are None.
        """
        wanted = {self.layer_index(layer) for layer in (self.cut_points if layers is None else layers)}
        last = max(wanted) if stop_early and wanted else len(self.stages)
        out = {}
        for i, (name, stage) in enumerate(self.stages.items(), start=1):
            if i > last:
                return None, out
            x = stage(x)
            if i in wanted:
                out[name] = x
            if i == self.stitch_after:
                x = self.stitch(x)
        return x, out

    def freeze(self, n: int) -> None:
        """Freeze layers 1..n: no gradients, and BatchNorm/dropout inside them kept in eval mode."""
        if not 0 <= n < len(self.stages):
            raise ProbeError(f"cannot freeze {n} layers of a {len(self.stages)}-layer network "
                             f"(cut points 1..{len(self.cut_points)})")
        self.n_frozen = n
        for i, stage in enumerate(self.stages.values(), start=1):
            for p in stage.parameters():
                p.requires_grad_(i > n)
        self.train(self.training)

    def freeze_all_layers(self) -> None:
        """Freeze every layer, so that only the stitch trains (a stitched network's training)."""
        for p in self.stages.parameters():
            p.requires_grad_(False)
        self.n_frozen = len(self.stages)
        self.train(self.training)

    def train(self, mode: bool = True) -> LayeredNet:
        super().train(mode)
        for stage in list(self.stages.values())[: self.n_frozen]:
            stage.eval()
        return self

    def prefix_state(self, n: int) -> dict[str, torch.Tensor]:
        """The state (parameters and buffers) of layers 1..n, keyed as in ``state_dict``."""
        keep = tuple(f"stages.{name}." for name in self.layer_names[:n])
        return {k: v for k, v in self.state_dict().items() if k.startswith(keep)}

    def parameter_groups(self, n: int) -> tuple[list[nn.Parameter], list[nn.Parameter]]:
        """Parameters of layers 1..n and of layers n+1..L (with the stitch's, which trains as a new layer does)."""
        stages = list(self.stages.values())
        stitch = list(self.stitch.parameters()) if self.stitch is not None else []
        return ([p for s in stages[:n] for p in s.parameters()],
                [*stitch, *(p for s in stages[n:] for p in s.parameters())])

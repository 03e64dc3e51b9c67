"""What is kept of a layer's outputs: a flat layer's (N, D) as they come, a convolutional map (N, C, H, W) reduced as
:class:`Reduction`'s ``spatial`` says, and a token sequence (N, T, D), a vision transformer's, as its ``tokens`` says:
the class token (where the network has one: token 0), the mean over tokens, every token, or K seeded tokens. How each
layer is stored is fixed by a network's first batch (:class:`Layout`).
"""

from __future__ import annotations

import functools
import json
import re
from dataclasses import dataclass

import numpy as np
import torch

from probe.architectures.build import build_model
from probe.errors import ProbeError
from probe.specs.spec import NetworkSpec

DTYPES = ("float32", "float16")
# The parameters that hold a network's class token (torchvision's VisionTransformer, timm's): its token 0
CLASS_TOKENS = ("class_token", "cls_token")
TOKEN_POLICIES = ("auto", "cls", "mean", "all")


@dataclass(frozen=True)
class Reduction:
    """What is kept of a convolutional map (N, C, H, W), ``spatial``: ``mean`` (per-channel spatial mean), ``full``
    (the whole map), or ``sample:K`` (K seeded random positions per image, positions treated as samples as in CKA
    studies, Kornblith et al. 2019). Fully connected layers (N, D) are kept whole in every mode.

    What is kept of a token sequence (N, T, D), a vision transformer's, ``tokens``: ``auto`` (the default: the class
    token where the network has one, else the mean), ``cls`` (the class token, token 0: torchvision's and timm's
    ViTs prepend it, from their embedding on; refused for a network without one), ``mean`` (the mean over the
    tokens), ``all`` (every token), or ``sample:K`` (K seeded tokens, the same K of every image and of every network
    for sequences of one length, in order; every token where there are at most K). Kept tokens are a dim of their
    own, ``<layer>_token``; an analysis flattens them into features (token x unit)."""

    spatial: str = "mean"
    seed: int = 0
    dtype: str = "float32"
    tokens: str = "auto"

    def __post_init__(self) -> None:
        if self.spatial not in ("mean", "full") and not re.fullmatch(r"sample:[1-9]\d*", self.spatial):
            raise ProbeError(f"spatial reduction {self.spatial!r} is not one of mean, full, sample:K (K >= 1)")
        if self.tokens not in TOKEN_POLICIES and not re.fullmatch(r"sample:[1-9]\d*", self.tokens):
            raise ProbeError(f"token policy {self.tokens!r} is not one of {', '.join(TOKEN_POLICIES)}, sample:K "
                             "(K >= 1)")
        if self.dtype not in DTYPES:
            raise ProbeError(f"dtype {self.dtype!r} is not one of {', '.join(DTYPES)}")

    @property
    def positions(self) -> int:
        return int(self.spatial.split(":")[1]) if self.spatial.startswith("sample:") else 0

    def token_policy(self, class_token: bool) -> str:
        """What is kept of a token sequence of a network with (or without) a class token: cls, mean, all or
        sample:K (``auto`` made one of the first two)."""
        if self.tokens == "auto":
            return "cls" if class_token else "mean"
        return self.tokens


def constant_features(x) -> bool:
    """Whether the rows of ``x`` (n_samples, n_features) are all alike up to float rounding: features that do not
    vary over the images carry nothing to score or keep (a ViT's class token before any attention, a silenced
    layer); two images at least are needed to tell."""
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2:
        raise ProbeError(f"expected features of shape (n_samples, n_features), got {x.shape}")
    if len(x) < 2:
        return False
    scale = max(1.0, float(np.abs(x).max()))
    return bool(np.abs(x - x[:1]).max() <= 1e-6 * scale)


def check_class_token(spec: NetworkSpec) -> None:
    """Refuse ``--tokens cls`` for networks without a class token (a CNN, a transformer without one) before anything
    is written: it would be recorded as the store's policy and keep nothing (one network of the run is built: they
    share their architecture)."""
    if not has_class_token(build_model(spec)):
        raise ProbeError(f"--tokens cls keeps the class token, and the networks of this run ({spec.arch.name}) have "
                         f"none (no parameter called {' or '.join(CLASS_TOKENS)}); extract with --tokens auto (the "
                         "mean where there is no class token), mean, all or sample:K")


def has_class_token(model: torch.nn.Module) -> bool:
    """Whether ``model`` holds a class token (a parameter called one of :data:`CLASS_TOKENS`): its token sequences
    then start with it."""
    return any(name.rsplit(".", 1)[-1] in CLASS_TOKENS for name, _ in model.named_parameters())


def _dims(name: str, ndim: int, reduction: Reduction, tokens: str | None = None) -> tuple[str, ...]:
    """The dims of one layer's stored outputs (``tokens``: the policy applied to a token sequence)."""
    if ndim == 3:
        kept = tokens == "all" or tokens.startswith("sample:")
        return ("sample", f"{name}_token", f"{name}_unit") if kept else ("sample", f"{name}_unit")
    if ndim == 2 or reduction.spatial == "mean":
        return ("sample", f"{name}_unit")
    if reduction.spatial == "full":
        return ("sample", f"{name}_unit", f"{name}_y", f"{name}_x")
    return ("sample", f"{name}_position", f"{name}_unit")


def _reduce(x: torch.Tensor, reduction: Reduction, positions: np.ndarray | None) -> torch.Tensor:
    """One layer's batch of outputs after the spatial reduction (``positions``: the flat ones to keep, for sample:K)."""
    if x.ndim == 2 or reduction.spatial == "full":
        return x
    if reduction.spatial == "mean":
        return x.mean(dim=(2, 3))
    flat = x.flatten(2)  # (B, C, H*W)
    idx = torch.tensor(positions, device=x.device)[:, None, :].expand(-1, flat.shape[1], -1)
    return flat.gather(2, idx).transpose(1, 2)


def _reduce_tokens(x: torch.Tensor, policy: str, kept: np.ndarray | None) -> torch.Tensor:
    """One layer's batch of token sequences (B, T, D) after the token policy: (B, D) for cls and mean, (B, T', D)
    for the tokens ``kept`` (all, sample:K)."""
    if policy == "cls":
        return x[:, 0]
    if policy == "mean":
        return x.mean(dim=1)
    if policy == "all":
        return x
    return x[:, torch.as_tensor(kept, device=x.device)]


def _kept_tokens(policy: str, seed: int, n_tokens: int) -> np.ndarray | None:
    """The indices of the tokens a policy keeps of a sequence of ``n_tokens``, in order (None: it keeps none as
    such): every one for all, K seeded by the sequence's length for sample:K (so the same ones in every image,
    every layer of that length and every network)."""
    if policy == "all":
        return np.arange(n_tokens)
    if not policy.startswith("sample:"):
        return None
    k = int(policy.split(":")[1])
    if k >= n_tokens:
        return np.arange(n_tokens)
    return np.sort(np.random.default_rng([seed, n_tokens]).choice(n_tokens, k, replace=False))


@functools.lru_cache(maxsize=32)
def _positions_cached(seed: int, k: int, height: int, width: int, samples: bytes) -> np.ndarray:
    samples = np.frombuffer(samples, dtype=np.int64)
    out = np.empty((len(samples), k), dtype=np.int64)
    for i, s in enumerate(samples):
        rng = np.random.default_rng([seed, height, width, int(s)])
        out[i] = rng.choice(height * width, k, replace=height * width < k)
    out.flags.writeable = False
    return out


def _positions(reduction: Reduction, height: int, width: int, samples: np.ndarray) -> np.ndarray:
    """K positions per image in a ``height`` x ``width`` map, seeded by the map's size and the sample's
    test-set index: every layer of that size, in every network, samples the same places of the same image (which
    is what lets CKA compare positions across networks). Cached, since a run's networks share them."""
    return _positions_cached(reduction.seed, reduction.positions, height, width,
                             np.ascontiguousarray(samples, dtype=np.int64).tobytes())


@dataclass(frozen=True)
class Layout:
    """How each layer is stored, fixed by the first batch: its dims; for spatial sample:K, the flat positions kept
    per image and the map's width (to give them as y and x); for a token sequence, the policy applied, the number of
    tokens and the tokens kept (all, sample:K)."""

    dims: dict[str, tuple[str, ...]]
    positions: dict[str, np.ndarray]
    widths: dict[str, int]
    tokens: dict[str, str]
    n_tokens: dict[str, int]
    kept: dict[str, np.ndarray]

    @classmethod
    def of(cls, acts: dict[str, torch.Tensor], reduction: Reduction, class_token: bool, network: str,
           samples: np.ndarray) -> Layout:
        """The layout of a network's layers (``class_token``: whether it has one) from its first batch of
        ``acts``, for the images ``samples``."""
        dims, positions, widths, tokens, n_tokens, kept = {}, {}, {}, {}, {}, {}
        for name, x in acts.items():
            if x.ndim not in (2, 3, 4):
                raise ProbeError(f"layer {name} of {network} outputs shape {list(x.shape)}; probe extract "
                                 "stores flat features (N, D), token sequences (N, T, D) and channel maps "
                                 "(N, C, H, W): cut the network where its outputs are one of those (--cut-at)")
            if x.ndim == 3:
                tokens[name], n_tokens[name] = reduction.token_policy(class_token), x.shape[1]
                if (reduction.tokens == "auto" and tokens[name] == "cls"
                        and constant_features(x[:, 0].float().cpu().numpy())):
                    # before any attention mixes it with the image (a ViT's embedding), the class token is the same
                    # for every image: it would measure nothing, so auto takes the mean of the tokens there
                    tokens[name] = "mean"
                if tokens[name] == "cls" and not class_token:
                    raise ProbeError(f"--tokens cls keeps the class token, and {network} has none (no "
                                     f"parameter called {' or '.join(CLASS_TOKENS)}) for layer {name}'s "
                                     f"{x.shape[1]} tokens; extract with --tokens auto (the mean where there is no "
                                     "class token), mean, all or sample:K")
                indices = _kept_tokens(tokens[name], reduction.seed, x.shape[1])
                if indices is not None:
                    kept[name] = indices
            dims[name] = _dims(name, x.ndim, reduction, tokens.get(name))
            if x.ndim == 4 and reduction.positions:
                h, w = x.shape[2:]
                positions[name], widths[name] = _positions(reduction, h, w, samples), w
        return cls(dims, positions, widths, tokens, n_tokens, kept)

    @property
    def attrs(self) -> dict:
        """The group's attrs that say what was kept of each token sequence (none for a network without them)."""
        return {"tokens": json.dumps(self.tokens)} if self.tokens else {}


def reduce_batch(acts: dict[str, torch.Tensor], logits: torch.Tensor, layout: Layout, reduction: Reduction,
                 start: int, dtype: np.dtype) -> dict[str, np.ndarray]:
    """One batch's stored values, by layer name and ``logits``; ``start``: the batch's first image."""
    out = {}
    for name, x in acts.items():
        if name in layout.tokens:
            reduced = _reduce_tokens(x, layout.tokens[name], layout.kept.get(name))
        else:
            pos = layout.positions[name][start: start + len(logits)] if name in layout.positions else None
            reduced = _reduce(x, reduction, pos)
        out[name] = reduced.float().cpu().numpy().astype(dtype)
    out["logits"] = logits.float().cpu().numpy().astype(dtype)
    return out


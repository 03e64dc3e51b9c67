"""timm's models as architectures: ``--arch timm:NAME`` builds ``timm.create_model(NAME, pretrained=False, ...)``.

timm is an optional extra (``pip install 'probe-transfer[timm]'``); without it, a study naming one says what to
install. The model gets the data's channels (``in_chans``) and classes, the input size where the model takes one
(``img_size``: its vision transformers), and ``--arch-option``s as further keywords (``depth=2``, ``embed_dim=64``).
Its default cut points are the modules its ``feature_info`` names (timm's own feature extraction points: a ResNet's
stem activation and four stages, a ViT's blocks), so no ``--cut-at`` is needed; ``--cut-at`` cuts elsewhere.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from probe.errors import ProbeError

if TYPE_CHECKING:  # the registry imports this module, and reading a run (probe status) must not import torch
    from torch import nn

SCHEME = "timm:"


def is_timm(name: str) -> bool:
    return str(name).startswith(SCHEME)


def _timm():
    try:
        import timm
    except ImportError:
        raise ProbeError("--arch timm:NAME builds a timm model, and timm is not installed here: pip install "
                         "'probe-transfer[timm]' (or pip install timm)") from None
    return timm


def check_name(name: str) -> None:
    """Refuse a name timm has no model of, in one line."""
    timm = _timm()
    model = name[len(SCHEME):]
    if not model or not timm.is_model(model):
        raise ProbeError(f"timm has no model {model!r} (--arch {name}); timm.list_models('*resnet*') lists them")


def create(name: str, in_channels: int, num_classes: int, input_size: int, **options) -> nn.Module:
    """timm's model ``name`` (``timm:`` and a timm model name), freshly initialized, never downloaded."""
    check_name(name)
    timm = _timm()
    kwargs = dict(pretrained=False, num_classes=num_classes, in_chans=in_channels, **options)
    try:
        return timm.create_model(name[len(SCHEME):], img_size=input_size, **kwargs)
    except TypeError as e:  # a model without an input size of its own (a CNN)
        if "img_size" not in str(e):
            raise
        return timm.create_model(name[len(SCHEME):], **kwargs)


def cut_points(model: nn.Module, label: str) -> tuple[str, ...]:
    """The modules a timm model's ``feature_info`` names, in order: its default cut points."""
    info = getattr(model, "feature_info", None) or []
    modules = tuple(f["module"] for f in info if isinstance(f, dict) and f.get("module"))
    if not modules:
        children = ", ".join(name for name, _ in model.named_children()) or "none"
        raise ProbeError(f"{label} names no feature modules (timm's feature_info) to cut after; give them as "
                         f"--cut-at a,b,c (its children: {children})")
    return modules

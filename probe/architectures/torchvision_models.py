"""torchvision's classification families as LayeredNets: default cut points by model type, and fitting a model to
the input.

Building one by name, or by import path, with cut points: :func:`probe.architectures.builders.torchvision_network`.

Default cut points, with the layer names the rest of the code sees (the last layer is always ``head``):

- ResNet: the stem (conv1 .. maxpool) ``stem``, then ``layer1`` .. ``layer4``; the head is avgpool, flatten, fc.
  With ``blocks``: the stem, then each residual block, ``block1`` .. ``blockN``.
- VGG and VGG-BN: after each max-pool of ``features``, ``pool1`` .. ``pool5``; the head is avgpool and the three fully
  connected layers.
- MobileNet-V3 and EfficientNet: after each ``features.i``, ``features_0`` .. ; the head is avgpool and classifier.
- ConvNeXt: the stem ``features.0`` as ``stem``, then each stage of blocks (``features.1``, 3, 5, 7) as ``stage1`` ..
  ``stage4``, a stage taking the downsampling before it; the head is avgpool and classifier.
- VisionTransformer: the embedding (conv_proj, class token, position embedding and its dropout) ``embedding``, then
  each encoder layer ``encoder1`` .. ``encoderN``; the head is the final LayerNorm, the class-token read-out and heads.

torchvision is imported on first use, not with this module.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from probe.architectures.adapter import HEAD, layer_name, layered_from_module
from probe.architectures.layered import LayeredNet
from probe.errors import ProbeError


def layered_torchvision(model: nn.Module, blocks: bool = False) -> LayeredNet:
    """A built torchvision classification model as a LayeredNet cut at its family's default cut points."""
    cuts = default_cut_points(model, blocks)
    return layered_from_module(model, [path for path, _ in cuts], [name for _, name in cuts] + [HEAD])


def has_default_cut_points(model: nn.Module) -> bool:
    """Whether ``model`` is of a torchvision family with default cut points."""
    from torchvision import models

    return isinstance(model, models.ResNet) or _family_cuts(model) is not None


def default_cut_points(model: nn.Module, blocks: bool = False) -> list[tuple[str, str]]:
    """(module path, layer name) of each default cut point of a torchvision classification model, by its type."""
    from torchvision import models

    if isinstance(model, models.ResNet):
        return _resnet_cuts(model, blocks)
    if blocks:
        raise ProbeError(f"per-block cut points are defined for ResNet, not {type(model).__name__}; "
                         f"give cut_after instead")
    cuts = _family_cuts(model)
    if cuts is not None:
        return cuts(model)
    raise ProbeError(f"no default cut points for {type(model).__name__} (known: ResNet, VGG, MobileNetV3, "
                     f"EfficientNet, ConvNeXt, VisionTransformer); give cut_after as dotted module paths, "
                     f"or write a builder that returns LayeredNet")


def _family_cuts(model: nn.Module) -> Callable[[nn.Module], list[tuple[str, str]]] | None:
    """The default cut points of ``model``'s family other than ResNet (whose take ``blocks``), or None."""
    from torchvision import models

    families = ((models.VGG, _vgg_cuts), ((models.MobileNetV3, models.EfficientNet), _features_cuts),
                (models.ConvNeXt, _convnext_cuts), (models.VisionTransformer, _vit_cuts))
    return next((cuts for family, cuts in families if isinstance(model, family)), None)


def _resnet_cuts(model: nn.Module, blocks: bool) -> list[tuple[str, str]]:
    stages = ["layer1", "layer2", "layer3", "layer4"]
    if not blocks:
        return [("maxpool", "stem"), *((s, s) for s in stages)]
    paths = [f"{s}.{i}" for s in stages for i in range(len(model.get_submodule(s)))]
    return [("maxpool", "stem"), *((p, f"block{i}") for i, p in enumerate(paths, start=1))]


def _vgg_cuts(model: nn.Module) -> list[tuple[str, str]]:
    pools = [i for i, m in enumerate(model.features) if isinstance(m, nn.MaxPool2d)]
    return [(f"features.{i}", f"pool{k}") for k, i in enumerate(pools, start=1)]


def _features_cuts(model: nn.Module) -> list[tuple[str, str]]:
    return [(f"features.{i}", layer_name(f"features.{i}")) for i in range(len(model.features))]


def _convnext_cuts(model: nn.Module) -> list[tuple[str, str]]:
    # features alternates stage, downsampling, stage, ...: the stages of blocks are the odd indices
    stages = range(1, len(model.features), 2)
    return [("features.0", "stem"), *((f"features.{i}", f"stage{k}") for k, i in enumerate(stages, start=1))]


def _vit_cuts(model: nn.Module) -> list[tuple[str, str]]:
    # the embedding ends with the dropout after the position embedding; encoder.ln goes with the head
    layers = [f"encoder.layers.{name}" for name, _ in model.encoder.layers.named_children()]
    return [("encoder.dropout", "embedding"), *((p, f"encoder{k}") for k, p in enumerate(layers, start=1))]


def fit_input(model: nn.Module, in_channels: int, input_size: int) -> None:
    """Give the model a first convolution for ``in_channels`` where its own takes other channels, and a ResNet
    under 64 pixels the small-image stem of :mod:`probe.architectures.resnet` (a 3x3 convolution at stride 1 and no
    max-pooling), so 32-pixel images keep enough resolution for its four stages."""
    from torchvision.models import ResNet

    from probe.architectures.resnet import SMALL_INPUT

    if isinstance(model, ResNet) and input_size < SMALL_INPUT:
        model.conv1 = nn.Conv2d(in_channels, model.conv1.out_channels, 3, padding=1, bias=False)
        model.maxpool = nn.Identity()
    else:
        _replace_first_conv(model, in_channels)


def _replace_first_conv(model: nn.Module, in_channels: int) -> None:
    """The first Conv2d (the families above register their input convolution first), rebuilt for ``in_channels``
    unless it takes them already (a model without convolutions is left to take what it takes)."""
    found = next(((path, m) for path, m in model.named_modules() if isinstance(m, nn.Conv2d)), None)
    if found is None or found[1].in_channels == in_channels:
        return
    path, conv = found
    parent, _, attr = path.rpartition(".")
    setattr(model.get_submodule(parent), attr,
            nn.Conv2d(in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding, conv.dilation,
                      bias=conv.bias is not None, padding_mode=conv.padding_mode))

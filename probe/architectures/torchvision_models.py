"""torchvision's classification families as LayeredNets: default cut points by model type.

Building one by name, or by import path, with cut points, fitted to the input:
:func:`probe.architectures.builders.torchvision_network`.

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

from torch import nn

from probe.architectures.adapter import layer_name, layered_at
from probe.architectures.layered import LayeredNet
from probe.errors import ProbeError


def layered_torchvision(model: nn.Module, blocks: bool = False) -> LayeredNet:
    """A built torchvision classification model as a LayeredNet cut at its family's default cut points."""
    return layered_at(model, default_cut_points(model, blocks))


def family_cut_points(model: nn.Module) -> list[tuple[str, str]] | None:
    """(module path, layer name) of each default cut point of ``model``'s torchvision family; None for a model of
    no family with default cut points."""
    from torchvision import models

    if isinstance(model, models.ResNet):
        return _resnet_cuts(model, False)
    families = ((models.VGG, _vgg_cuts), ((models.MobileNetV3, models.EfficientNet), _features_cuts),
                (models.ConvNeXt, _convnext_cuts), (models.VisionTransformer, _vit_cuts))
    cuts = next((cuts for family, cuts in families if isinstance(model, family)), None)
    return None if cuts is None else cuts(model)


def default_cut_points(model: nn.Module, blocks: bool = False) -> list[tuple[str, str]]:
    """(module path, layer name) of each default cut point of a torchvision classification model, by its type."""
    from torchvision import models

    if isinstance(model, models.ResNet):
        return _resnet_cuts(model, blocks)
    if blocks:
        raise ProbeError(f"per-block cut points are defined for ResNet, not {type(model).__name__}; "
                         f"give cut_after instead")
    cuts = family_cut_points(model)
    if cuts is not None:
        return cuts
    raise ProbeError(f"no default cut points for {type(model).__name__} (known: ResNet, VGG, MobileNetV3, "
                     f"EfficientNet, ConvNeXt, VisionTransformer); give cut_after as dotted module paths, "
                     f"or write a builder that returns LayeredNet")


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

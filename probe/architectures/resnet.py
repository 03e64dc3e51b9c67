"""ResNet-18 (He et al. 2016) from torchvision's blocks, cut at the stem and after each of its eight residual blocks
(``block1``..``block8``: two per stage of torchvision's ``layer1``..``layer4``).

For inputs under 64 pixels the stem is the usual small-image one (a 3x3 convolution at stride 1, no max-pooling),
so 32-pixel images keep enough resolution for the four stages.
"""

from __future__ import annotations

from torch import nn
from torchvision.models import resnet18 as tv_resnet18

from probe.architectures.layered import LayeredNet

SMALL_INPUT = 64


def resnet18(in_channels: int, num_classes: int, input_size: int = 224) -> LayeredNet:
    tv = tv_resnet18(num_classes=num_classes)
    if input_size < SMALL_INPUT:
        stem = nn.Sequential(nn.Conv2d(in_channels, 64, 3, padding=1, bias=False), tv.bn1, tv.relu)
    else:
        conv1 = tv.conv1 if in_channels == 3 else nn.Conv2d(in_channels, 64, 7, stride=2, padding=3, bias=False)
        stem = nn.Sequential(conv1, tv.bn1, tv.relu, tv.maxpool)
    stages = [("stem", stem)]
    blocks = [block for group in (tv.layer1, tv.layer2, tv.layer3, tv.layer4) for block in group]
    stages += [(f"block{i}", block) for i, block in enumerate(blocks, start=1)]
    stages.append(("head", nn.Sequential(tv.avgpool, nn.Flatten(), tv.fc)))
    return LayeredNet(stages)

"""VGG-11 and VGG-19 with BatchNorm.

`width` scales every conv (64 in the original networks). Max-pools are kept only while
the feature map is at least 2 px, so the same network runs on 8 px digits and 32 px
CIFAR images; a global average pool feeds a single linear classifier.
"""

from __future__ import annotations

import torch
from torch import nn

_LAYOUTS = {
    "vgg11": [1, "M", 2, "M", 4, 4, "M", 8, 8, "M", 8, 8, "M"],
    "vgg19": [1, 1, "M", 2, 2, "M", 4, 4, 4, 4, "M", 8, 8, 8, 8, "M", 8, 8, 8, 8, "M"],
}


class VGG(nn.Module):
    def __init__(self, layout: list, num_classes: int, in_channels: int, width: int, image_size: int) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels, size = in_channels, image_size
        for item in layout:
            if item == "M":
                if size >= 2:
                    layers.append(nn.MaxPool2d(2))
                    size //= 2
                continue
            out = width * item
            layers += [nn.Conv2d(channels, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU()]
            channels = out
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def vgg(name: str, num_classes: int, in_channels: int, width: int, image_size: int) -> VGG:
    return VGG(_LAYOUTS[name], num_classes, in_channels, width, image_size)

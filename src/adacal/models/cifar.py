"""Reference ANN architectures used by the model zoo and the tests.

All models are plain ``nn.Module`` trees built from Conv/BN/ReLU/Pool/Linear so that the
ANN-to-SNN converter can trace them with ``torch.fx`` without special cases.  Shortcuts use
option B (1x1 conv + BN) when the shape changes, because option A (zero-padding) introduces
ops with no spiking equivalent.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from adacal.errors import ConfigError

__all__ = ["BasicBlock", "CifarResNet", "resnet20", "resnet20_wide", "VGGCifar", "vgg16_cifar", "DigitsCNN",
           "digits_cnn"]


class BasicBlock(nn.Module):
    """He et al. basic residual block: conv3x3-BN-ReLU-conv3x3-BN, + shortcut, ReLU."""

    expansion = 1

    def __init__(self, in_planes: int, planes: int, stride: int = 1) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_planes, planes, 3, stride=stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu1 = nn.ReLU(inplace=False)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.shortcut: nn.Module
        if stride != 1 or in_planes != planes:
            self.shortcut = nn.Sequential(nn.Conv2d(in_planes, planes, 1, stride=stride, bias=False),
                                          nn.BatchNorm2d(planes))
        else:
            self.shortcut = nn.Identity()
        self.relu2 = nn.ReLU(inplace=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu1(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu2(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """3-stage CIFAR ResNet (depth = 6n+2) with stage widths ``(w, 2w, 4w)``."""

    def __init__(self, num_blocks: Sequence[int] = (3, 3, 3), num_classes: int = 10, width: int = 16,
                 in_channels: int = 3) -> None:
        super().__init__()
        if num_classes < 1 or width < 1:
            raise ConfigError(f"num_classes and width must be >= 1, got num_classes={num_classes}, width={width}")
        self.conv1 = nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=False)
        in_planes = width
        stages = []
        for i, n in enumerate(num_blocks):
            planes = width * (2**i)
            blocks = []
            for j in range(n):
                stride = 2 if (i > 0 and j == 0) else 1
                blocks.append(BasicBlock(in_planes, planes, stride))
                in_planes = planes
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.flatten = nn.Flatten(1)
        self.fc = nn.Linear(in_planes, num_classes)
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(self.flatten(self.avgpool(x)))


def resnet20(num_classes: int = 10, width: int = 16, in_channels: int = 3) -> CifarResNet:
    """ResNet-20 for 32x32 inputs; ``width=16`` gives the standard 16-32-64 model (0.27 M params)."""
    return CifarResNet((3, 3, 3), num_classes=num_classes, width=width, in_channels=in_channels)


def resnet20_wide(num_classes: int = 10, in_channels: int = 3) -> CifarResNet:
    """Wide ResNet-20 (64-128-256), the variant common in ANN-to-SNN conversion papers."""
    return resnet20(num_classes=num_classes, width=64, in_channels=in_channels)


_VGG16_CFG: tuple[int | str, ...] = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M", 512, 512, 512,
                                     "M",)


class VGGCifar(nn.Module):
    """VGG with BN for 32x32 inputs; the five max-pools leave 1x1 so the classifier is one Linear."""

    def __init__(self, cfg: Sequence[int | str] = _VGG16_CFG, num_classes: int = 10, in_channels: int = 3,
                 hidden: int = 512, dropout: float = 0.0) -> None:
        super().__init__()
        if num_classes < 1:
            raise ConfigError(f"num_classes must be >= 1, got {num_classes}")
        layers: list[nn.Module] = []
        c = in_channels
        for v in cfg:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                out = int(v)
                layers += [nn.Conv2d(c, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU(inplace=False)]
                c = out
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)  # makes the head independent of the input size
        self.classifier = nn.Sequential(nn.Flatten(1), nn.Linear(c, hidden), nn.ReLU(inplace=False),
                                        nn.Dropout(dropout), nn.Linear(hidden, num_classes))
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.avgpool(self.features(x)))


def vgg16_cifar(num_classes: int = 10, in_channels: int = 3, dropout: float = 0.0) -> VGGCifar:
    """VGG-16 (13 conv + 2 FC layers) for CIFAR."""
    return VGGCifar(_VGG16_CFG, num_classes=num_classes, in_channels=in_channels, dropout=dropout)


class DigitsCNN(nn.Module):
    """Small CNN for the 8x8 scikit-learn digits: four spiking layers (three conv, one hidden
    linear) so the per-layer searches have something to choose; trains in seconds on one core."""

    def __init__(self, num_classes: int = 10, in_channels: int = 1, width: int = 16) -> None:
        super().__init__()
        if num_classes < 1 or width < 1:
            raise ConfigError(f"num_classes and width must be >= 1, got num_classes={num_classes}, width={width}")
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(inplace=False),
            nn.Conv2d(width, 2 * width, 3, padding=1, bias=False),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(inplace=False),
            nn.AvgPool2d(2),  # 8x8 -> 4x4
            nn.Conv2d(2 * width, 2 * width, 3, padding=1, bias=False),
            nn.BatchNorm2d(2 * width),
            nn.ReLU(inplace=False),
            nn.AvgPool2d(2),  # 4x4 -> 2x2
        )
        self.classifier = nn.Sequential(nn.Flatten(1), nn.Linear(2 * width * 4, 4 * width), nn.ReLU(inplace=False),
                                        nn.Linear(4 * width, num_classes))
        _init_weights(self)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def digits_cnn(num_classes: int = 10, in_channels: int = 1, width: int = 16) -> DigitsCNN:
    """Small CNN for ``(N, 1, 8, 8)`` inputs."""
    return DigitsCNN(num_classes=num_classes, in_channels=in_channels, width=width)


def _init_weights(model: nn.Module) -> None:
    """Kaiming init for convs (ReLU nets), unit/zero BN, default-ish Linear: the standard CIFAR recipe."""
    for m in model.modules():
        if isinstance(m, nn.Conv2d):
            nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            if m.bias is not None:
                nn.init.zeros_(m.bias)
        elif isinstance(m, nn.BatchNorm2d):
            nn.init.ones_(m.weight)
            nn.init.zeros_(m.bias)

"""Segmentation networks: a small FCN for CPU-sized data, and torchvision's segmentation models by name.

``fcn_small``: a ResNet-style encoder (stride 16) with an FCN/FPN-style decoder (lateral 1x1
convs, bilinear upsampling, additive fusion) and a 1x1 classifier at stride 4, bilinearly
upsampled to the input size. Built from Conv/BN/ReLU and interpolation only, so every conv is fed
by a neuron after conversion (each fusion sum goes through a ReLU). It trains on CamVid at
180x240 on one CPU thread in about an hour (zoo/fcn_small_camvid.json).

torchvision's ``fcn_resnet50``, ``deeplabv3_resnet50`` (and the ResNet-101 / MobileNet variants)
are registered with ``weights=None, weights_backbone=None`` (nothing is downloaded) and the
auxiliary head off; they return ``{"out": [B, C, H, W]}``, which the segmentation task reads.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence

import torch.nn.functional as F
from torch import Tensor, nn

from adacal.errors import ConfigError
from adacal.models.cifar import BasicBlock
from adacal.models.registry import register_model

__all__ = ["FCNSmall", "fcn_small", "torchvision_segmentation"]


def _conv_bn_relu(cin: int, cout: int, k: int = 3, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, k, stride=stride, padding=k // 2, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU())


def _up(x: Tensor, like: Tensor) -> Tensor:
    return F.interpolate(x, size=like.shape[-2:], mode="bilinear", align_corners=False)


class FCNSmall(nn.Module):
    """ResNet-style encoder at strides 2/4/8/16 and a lateral-fusion decoder back to stride 4.

    ``widths``: channels of the stem and the three stages; ``decoder``: channels of the fusion
    layers; ``blocks``: basic residual blocks per stage.
    """

    def __init__(self, num_classes: int = 11, widths: Sequence[int] = (32, 32, 64, 128), decoder: int = 64,
                 blocks: int = 2, in_channels: int = 3) -> None:
        super().__init__()
        if num_classes < 1 or len(widths) != 4 or min(widths) < 1 or decoder < 1 or blocks < 1:
            raise ConfigError(f"fcn_small needs num_classes >= 1, four positive widths, decoder >= 1 and blocks >= 1; "
                              f"got num_classes={num_classes}, widths={list(widths)}, decoder={decoder}, "
                              f"blocks={blocks}")
        w0, w1, w2, w3 = widths
        self.stem = _conv_bn_relu(in_channels, w0, stride=2)
        self.layer1 = self._stage(w0, w1, blocks)
        self.layer2 = self._stage(w1, w2, blocks)
        self.layer3 = self._stage(w2, w3, blocks)
        self.lat3 = _conv_bn_relu(w3, decoder, k=1)
        self.lat2 = nn.Sequential(nn.Conv2d(w2, decoder, 1, bias=False), nn.BatchNorm2d(decoder))
        self.fuse2 = nn.ReLU()
        self.smooth2 = _conv_bn_relu(decoder, decoder)
        self.lat1 = nn.Sequential(nn.Conv2d(w1, decoder, 1, bias=False), nn.BatchNorm2d(decoder))
        self.fuse1 = nn.ReLU()
        self.smooth1 = _conv_bn_relu(decoder, decoder // 2)
        self.classifier = nn.Conv2d(decoder // 2, num_classes, 1)

    @staticmethod
    def _stage(cin: int, cout: int, blocks: int) -> nn.Sequential:
        return nn.Sequential(BasicBlock(cin, cout, stride=2), *(BasicBlock(cout, cout) for _ in range(blocks - 1)))

    def forward(self, x: Tensor) -> Tensor:
        c1 = self.layer1(self.stem(x))  # stride 4
        c2 = self.layer2(c1)  # stride 8
        c3 = self.layer3(c2)  # stride 16
        p3 = self.lat3(c3)
        p2 = self.smooth2(self.fuse2(self.lat2(c2) + _up(p3, c2)))
        p1 = self.smooth1(self.fuse1(self.lat1(c1) + _up(p2, c1)))
        return _up(self.classifier(p1), x)


def fcn_small(num_classes: int = 11, **options: object) -> FCNSmall:
    """The CamVid zoo network (``zoo/fcn_small_camvid.pt``): ~1 M parameters, ~0.4 GMAC at 180x240."""
    return FCNSmall(num_classes=num_classes, **options)  # type: ignore[arg-type]


def torchvision_segmentation(name: str) -> Callable[..., nn.Module]:
    """A factory for torchvision segmentation model ``name``: random weights, no backbone download,
    auxiliary head off unless ``aux_loss=True`` is passed."""

    def factory(num_classes: int = 21, **options: object) -> nn.Module:
        import torchvision

        kw: dict[str, object] = {"weights": None, "weights_backbone": None, "aux_loss": False, **options}
        return torchvision.models.get_model(name, num_classes=num_classes, **kw)

    factory.__name__ = name
    return factory


register_model("fcn_small", fcn_small)
for _name in ("fcn_resnet50", "fcn_resnet101", "deeplabv3_resnet50", "deeplabv3_resnet101",
              "deeplabv3_mobilenet_v3_large", "lraspp_mobilenet_v3_large"):
    register_model(_name, torchvision_segmentation(_name))


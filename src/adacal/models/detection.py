"""A small anchor-free ReLU detector that trains on a CPU: ResNet-style backbone, FPN, FCOS head.

The module is the *spiking part* of the detector: image tensor in, per-level head maps out
(``{"cls", "box", "ctr"}``, see :mod:`adacal.detection.fcos`); its ``decoder`` attribute (a plain
object, not a submodule: no weights, never traced) does the floating-point post-processing.
Every activation is a ReLU and every norm a BatchNorm, so the whole module converts.
"""
from __future__ import annotations

from typing import Any

import torch.nn.functional as F
from torch import Tensor, nn

from adacal.detection.fcos import FCOSDecoder
from adacal.models.registry import register_model

__all__ = ["FCOSLite", "fcos_lite"]


def _conv_bn(cin: int, cout: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True))


class _Block(nn.Module):
    """ResNet basic block (option-B shortcut when the shape changes)."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.short = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                      if stride != 1 or cin != cout else nn.Identity())
        self.relu2 = nn.ReLU(inplace=True)

    def forward(self, x: Tensor) -> Tensor:
        y = self.bn2(self.conv2(self.relu1(self.bn1(self.conv1(x)))))
        return self.relu2(y + self.short(x))


class FCOSLite(nn.Module):
    """Backbone (stride 2 stem, stages at strides 4/8/16/32) → FPN (P3-P5) → shared FCOS head.

    SNN-friendly: a ReLU sits between any two weighted layers (the FPN's top-down sums pass a
    ReLU before the head tower), so every conv but the stem is fed with spikes (accumulates only).

    ``width``: channels of the first stage (doubling-ish per stage); ``fpn``: pyramid channels;
    ``tower``: convs in the shared head tower. The head is shared across levels (each call of a
    shared ReLU becomes its own neuron after conversion).
    """

    def __init__(self, num_classes: int, *, width: int = 16, fpn: int = 48, tower: int = 2) -> None:
        super().__init__()
        c = [width, 2 * width, 3 * width, 6 * width, 8 * width]
        self.stem = nn.Sequential(_conv_bn(3, c[0], 2), _conv_bn(c[0], c[1], 2))
        self.layer2 = _Block(c[1], c[2], 2)
        self.layer3 = _Block(c[2], c[3], 2)
        self.layer4 = _Block(c[3], c[4], 2)
        self.lateral = nn.ModuleList([nn.Conv2d(ch, fpn, 1) for ch in c[2:]])
        self.level_relu = nn.ModuleList([nn.ReLU(inplace=False) for _ in c[2:]])
        self.tower = nn.Sequential(*[_conv_bn(fpn, fpn) for _ in range(tower)])
        self.cls = nn.Conv2d(fpn, num_classes, 3, padding=1)
        self.box = nn.Conv2d(fpn, 4, 3, padding=1)
        self.ctr = nn.Conv2d(fpn, 1, 3, padding=1)
        nn.init.constant_(self.cls.bias, -4.6)  # prior 0.01 (RetinaNet/FCOS initialisation)
        nn.init.normal_(self.cls.weight, std=0.01)
        nn.init.normal_(self.box.weight, std=0.01)
        nn.init.zeros_(self.box.bias)
        self.decoder = FCOSDecoder(num_classes)

    def forward(self, x: Tensor) -> dict[str, Any]:
        c3 = self.layer2(self.stem(x))
        c4 = self.layer3(c3)
        c5 = self.layer4(c4)
        l5 = self.lateral[2](c5)
        l4 = self.lateral[1](c4) + F.interpolate(l5, scale_factor=2.0, mode="nearest")
        l3 = self.lateral[0](c3) + F.interpolate(l4, scale_factor=2.0, mode="nearest")
        cls, box, ctr = [], [], []
        for level, relu in zip((l3, l4, l5), self.level_relu):
            t = self.tower(relu(level))
            cls.append(self.cls(t))
            box.append(self.box(t))
            ctr.append(self.ctr(t))
        return {"cls": tuple(cls), "box": tuple(box), "ctr": tuple(ctr)}


def fcos_lite(num_classes: int, **options: Any) -> FCOSLite:
    """The registry factory (``--model fcos_lite``); options: ``width``, ``fpn``, ``tower``."""
    return FCOSLite(num_classes, **options)


register_model("fcos_lite", fcos_lite)


def _torchvision_detector(name: str) -> Any:
    def factory(num_classes: int, *, label_offset: int = 0, input_size: Any = None, frozen_bn: bool = True,
                **options: Any) -> nn.Module:
        """The spiking part of torchvision's ``name`` (random weights, no download; load a trained
        detector's state_dict into it), with its decoder attached. ``label_offset``: 1 if the detector
        was trained with label 0 as background; ``frozen_bn``: FrozenBatchNorm2d backbone, as trained
        torchvision detectors have (their checkpoints carry no ``num_batches_tracked``)."""
        import torchvision

        from adacal.detection.parts import detector_parts
        from adacal.detection.torchvision_models import freeze_batchnorm

        extra = 1 if name.startswith("ssd") else label_offset  # SSD's background class
        det = getattr(torchvision.models.detection, name)(weights=None, weights_backbone=None,
                                                          num_classes=num_classes + extra, **options)
        if frozen_bn:
            freeze_batchnorm(det.backbone)
        return detector_parts(det.eval(), num_classes=num_classes, label_offset=extra, input_size=input_size).spiking

    return factory


for _name in ("retinanet_resnet50_fpn", "fcos_resnet50_fpn", "ssd300_vgg16"):
    register_model(_name, _torchvision_detector(_name))

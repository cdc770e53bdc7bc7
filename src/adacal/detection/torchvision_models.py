"""torchvision detectors split into a spiking part and a floating-point decoder.

Tracing a whole torchvision detector is impossible: its transform resizes each image to a
data-dependent size, its heads reshape with Python ints read off tensor shapes, and its
post-processing (anchors, box decoding, score filtering, NMS) is data-dependent. So each adapter
builds a module holding the detector's own ``backbone`` and ``head`` (same attribute names, so
the detector's state_dict loads into it unchanged) whose ``forward`` returns the heads' raw
per-level conv maps; the :class:`TorchvisionDecoder` reshapes their time average exactly as
torchvision does and calls the detector's own ``anchor_generator`` and ``postprocess_detections``.

* RetinaNet (v1 heads: conv + ReLU): backbone, FPN and both heads spike.
* FCOS: backbone and FPN spike; its heads normalise with GroupNorm (per-sample statistics, not
  linear in spikes), so they run in floating point on the time-averaged pyramid features.
* SSD300-VGG16: VGG features, extra layers and the heads of levels 1-5 spike; level 0 passes an
  L2 normalisation (``F.normalize``, per-position norm), so its rescaling and its two head convs run
  in floating point on the time-averaged conv4_3 features.
* Faster R-CNN: two SNNs (:mod:`adacal.detection.two_stage`).

The image transform (resize, normalise) is the data loader's job; boxes stay in input pixels.
"""
from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from adacal.errors import ConfigError, ShapeError

__all__ = ["RetinaNetSpiking", "FCOSSpiking", "SSDSpiking", "TorchvisionDecoder", "freeze_batchnorm",
           "has_group_norm", "head_classes", "relative_mse"]

log = logging.getLogger(__name__)


def freeze_batchnorm(module: nn.Module) -> nn.Module:
    """Replace every ``BatchNorm2d`` by torchvision's ``FrozenBatchNorm2d`` with the same statistics
    (what torchvision detectors use once their backbone is trained); in place, returns ``module``."""
    from torchvision.ops.misc import FrozenBatchNorm2d

    for name, child in list(module.named_children()):
        if isinstance(child, nn.BatchNorm2d):
            frozen = FrozenBatchNorm2d(child.num_features, eps=child.eps)
            for k in ("weight", "bias", "running_mean", "running_var"):
                getattr(frozen, k).copy_(getattr(child, k).detach())
            setattr(module, name, frozen)
        else:
            freeze_batchnorm(child)
    return module


def has_group_norm(module: nn.Module) -> bool:
    return any(isinstance(m, (nn.GroupNorm, nn.LayerNorm)) for m in module.modules())


def relative_mse(ann: Any, snn: Any) -> Tensor:
    """Σ over output tensors of mean squared difference / mean square of the ANN's (profiling score)."""
    from adacal.inputs import leaves

    total: Tensor | None = None
    for a, s in zip(leaves(ann), leaves(snn)):
        v = (a.double() - s.double()).pow(2).mean() / a.double().pow(2).mean().clamp(min=1e-12)
        total = v if total is None else total + v
    return total if total is not None else torch.zeros((), dtype=torch.float64)


def head_classes(detector: nn.Module) -> int:
    """Class channels per anchor of a torchvision detector's classification head."""
    head = detector.head.classification_head
    return int(getattr(head, "num_classes", None) or head.num_columns)


def _flatten(t: Tensor, k: int) -> Tensor:
    """``[N, A·K, H, W]`` → ``[N, H·W·A, K]``: torchvision's head layout."""
    n, _, h, w = t.shape
    return t.view(n, -1, k, h, w).permute(0, 3, 4, 1, 2).reshape(n, -1, k)


class RetinaNetSpiking(nn.Module):
    """Backbone + FPN + both RetinaNet heads; per-level ``{"cls": [N, A·K, H, W], "box": [N, A·4, H, W]}``."""

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        self.backbone, self.head = detector.backbone, detector.head

    def forward(self, x: Tensor) -> dict[str, Any]:
        feats = list(self.backbone(x).values())
        ch, rh = self.head.classification_head, self.head.regression_head
        return {"cls": tuple(ch.cls_logits(ch.conv(f)) for f in feats),
                "box": tuple(rh.bbox_reg(rh.conv(f)) for f in feats)}


class FCOSSpiking(nn.Module):
    """Backbone + FPN (the GroupNorm heads stay analog): the pyramid features, one tensor per level."""

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        self.backbone, self.head = detector.backbone, detector.head

    def forward(self, x: Tensor) -> tuple[Tensor, ...]:
        return tuple(self.backbone(x).values())


class SSDSpiking(nn.Module):
    """VGG features + extra layers + the heads of levels 1-5; level 0's L2-normalised branch stays analog.

    Returns ``{"conv4_3": [N, 512, H, W], "cls": (levels 1-5), "box": (levels 1-5)}``.
    """

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        self.backbone, self.head = detector.backbone, detector.head

    def forward(self, x: Tensor) -> dict[str, Any]:
        f0 = self.backbone.features(x)
        feats, y = [], f0
        for block in self.backbone.extra:
            y = block(y)
            feats.append(y)
        cls_list = self.head.classification_head.module_list
        box_list = self.head.regression_head.module_list
        return {"conv4_3": f0, "cls": tuple(cls_list[i + 1](f) for i, f in enumerate(feats)),
                "box": tuple(box_list[i + 1](f) for i, f in enumerate(feats))}


_KINDS = ("retinanet", "fcos", "ssd")


class TorchvisionDecoder:
    """Floating-point part of a torchvision single-stage detector, on time-averaged spiking outputs.

    ``num_classes``: the dataset's classes; the detector has ``num_classes + label_offset`` (1 for
    detectors trained with label 0 as background, torchvision's convention). ``input_size``:
    ``(H, W)`` of the network input (default: level 0's stride times its map, or 300x300 for SSD300).
    """

    def __init__(self, detector: nn.Module, kind: str, *, num_classes: int, label_offset: int = 0,
                 input_size: Sequence[int] | None = None) -> None:
        if kind not in _KINDS:
            raise ConfigError(f"unknown torchvision detector kind {kind!r}; valid: {list(_KINDS)}")
        self.detector, self.kind = detector, kind
        self.num_classes, self.label_offset = int(num_classes), int(label_offset)
        self.input_size = tuple(int(s) for s in input_size) if input_size is not None else (
            (300, 300) if kind == "ssd" else None)
        self.name = f"torchvision.{kind}"

    # ------------------------------------------------------------------ layout
    @property
    def _k(self) -> int:
        """Class channels per anchor of the detector's classification head."""
        return head_classes(self.detector)

    def levels(self, outputs: Any) -> list[tuple[int, int]]:
        maps = outputs if self.kind == "fcos" else [outputs["conv4_3"], *outputs["cls"]] if self.kind == "ssd" \
            else outputs["cls"]
        return [(int(m.shape[-2]), int(m.shape[-1])) for m in maps]

    def image_size(self, outputs: Any) -> tuple[int, int]:
        if self.input_size is not None:
            return self.input_size  # type: ignore[return-value]
        h, w = self.levels(outputs)[0]
        return 8 * h, 8 * w  # P3 of a ResNet-FPN has stride 8

    def check(self, outputs: Any, what: str = "model") -> None:
        from adacal.inputs import describe

        ok = (isinstance(outputs, (tuple, list)) if self.kind == "fcos" else isinstance(outputs, dict)
              and {"cls", "box"} <= set(outputs))
        if not ok:
            raise ShapeError(f"{what} outputs {describe(outputs)}, not the spiking part of a torchvision {self.kind} "
                             "(build it with adacal.detection.detector_parts)")

    def head_outputs(self, outputs: Any) -> dict[str, Tensor]:
        """The detector's head output dict (``[N, H·W·A, K]`` per key, levels concatenated)."""
        det, k = self.detector, self._k
        if self.kind == "fcos":
            return det.head(list(outputs))
        if self.kind == "retinanet":
            return {"cls_logits": torch.cat([_flatten(c, k) for c in outputs["cls"]], 1),
                    "bbox_regression": torch.cat([_flatten(b, 4) for b in outputs["box"]], 1)}
        f0 = det.backbone.scale_weight.view(1, -1, 1, 1) * F.normalize(outputs["conv4_3"])
        cls0 = det.head.classification_head.module_list[0](f0)
        box0 = det.head.regression_head.module_list[0](f0)
        return {"bbox_regression": torch.cat([_flatten(b, 4) for b in (box0, *outputs["box"])], 1),
                "cls_logits": torch.cat([_flatten(c, k) for c in (cls0, *outputs["cls"])], 1)}

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def detections(self, outputs: Any) -> list[dict[str, Tensor]]:
        from torchvision.models.detection.image_list import ImageList

        det = self.detector
        head = self.head_outputs(outputs)
        first = next(iter(head.values()))
        n, dev = first.shape[0], first.device
        h, w = self.image_size(outputs)
        images = ImageList(torch.zeros(n, 3, h, w, device=dev, dtype=first.dtype), [(h, w)] * n)
        feats = [torch.zeros(n, 1, a, b, device=dev, dtype=first.dtype) for a, b in self.levels(outputs)]
        anchors = det.anchor_generator(images, feats)
        if self.kind == "ssd":
            dets = det.postprocess_detections(head, anchors, images.image_sizes)
        else:
            per_level = [a * b for a, b in self.levels(outputs)]
            hw = sum(per_level)
            a_per = first.shape[1] // hw
            sizes = [p * a_per for p in per_level]
            split = {key: list(v.split(sizes, dim=1)) for key, v in head.items()}
            dets = det.postprocess_detections(split, [list(a.split(sizes)) for a in anchors], images.image_sizes)
        out = []
        for d in dets:
            lab = d["labels"] - self.label_offset
            keep = (lab >= 0) & (lab < self.num_classes)
            out.append({"boxes": d["boxes"][keep], "scores": d["scores"][keep], "labels": lab[keep]})
        return out

    def divergence(self, ann: Any, snn: Any) -> Tensor:
        return relative_mse(ann, snn)

    def analog_ops(self, outputs: Any) -> list[dict[str, Any]]:
        """MAC-equivalent floating-point work per image outside the SNN: analog head convolutions
        (FCOS: both GroupNorm heads, ≈ 8 ops per normalised value; SSD: level 0's L2 norm and head convs),
        scoring of every anchor and class (≈ 4 ops), box decoding of the kept candidates (≈ 16 ops) and an
        upper bound of NMS (≈ 12 ops per candidate pair)."""
        det, levels = self.detector, self.levels(outputs)
        rows = []
        if self.kind == "fcos":
            macs = 0
            for h, w in levels:
                for m in det.head.modules():
                    if isinstance(m, nn.Conv2d):
                        macs += m.out_channels * m.in_channels // m.groups * m.kernel_size[0] * m.kernel_size[1] * h * w
                    elif isinstance(m, nn.GroupNorm):
                        macs += 8 * m.num_channels * h * w
            rows.append({"name": "head", "macs": macs})
        elif self.kind == "ssd":
            h, w = levels[0]
            c = det.head.classification_head.module_list[0]
            b = det.head.regression_head.module_list[0]
            convs = sum(m.out_channels * m.in_channels * m.kernel_size[0] * m.kernel_size[1] for m in (c, b))
            rows.append({"name": "level0_l2norm_head", "macs": h * w * (3 * c.in_channels + convs)})
        head = self.head_outputs(outputs) if self.kind != "fcos" else None
        anchors = (head["cls_logits"].shape[1] if head is not None
                   else sum(a * b for a, b in levels) * det.anchor_generator.num_anchors_per_location()[0])
        k = self._k
        cand = min(anchors * k, int(getattr(det, "topk_candidates", 1000)) * len(levels))
        rows += [{"name": "scores", "macs": 4 * anchors * k}, {"name": "box_decode", "macs": 16 * cand},
                 {"name": "nms_upper_bound", "macs": 12 * cand * (cand - 1) // 2}]
        return rows

    def describe(self) -> dict[str, Any]:
        head = {"retinanet": "spiking", "fcos": "analog (GroupNorm)", "ssd": "spiking except level 0 (L2 norm)"}
        det = self.detector
        return {"decoder": self.name, "head": head[self.kind], "label_offset": self.label_offset,
                "score_thresh": float(getattr(det, "score_thresh", 0.0)),
                "nms_thresh": float(getattr(det, "nms_thresh", 0.0)),
                "detections_per_img": int(getattr(det, "detections_per_img", 0))}

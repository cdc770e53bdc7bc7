"""Faster R-CNN as two SNNs: backbone + FPN + RPN head, then the box head on RoI-pooled features.

A two-stage detector cannot be one spiking graph: the second stage runs on regions chosen by the
first (proposal decoding, NMS, RoIAlign: data-dependent, floating point). So adacal converts its
two parts separately and chains them on time averages:

1. ``rpn`` SNN (:class:`RPNSpiking`): image → FPN features, RPN objectness and box deltas, T steps;
2. floating point: anchors, proposal decoding and NMS (``detector.rpn``), RoIAlign of the
   time-averaged FPN features (``detector.roi_heads.box_roi_pool``);
3. ``box_head`` SNN (:class:`BoxHeadSpiking`): pooled features → class logits and box regressions, T steps;
4. floating point: ``detector.roi_heads.postprocess_detections`` (decoding, score filter, NMS).

Both SNNs come from :func:`adacal.convert`; the second is calibrated on the pooled features the
ANN produces for the calibration images. This path has its own runner (:meth:`SpikingFasterRCNN.detect`);
``adacal sweep``/``evaluate`` handle single-stage detectors only.
"""
from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor, nn

from adacal.detection.torchvision_models import relative_mse

__all__ = ["BoxHeadSpiking", "RPNSpiking", "SpikingFasterRCNN", "convert_faster_rcnn"]


class RPNSpiking(nn.Module):
    """Backbone + FPN + the RPN head's convs: ``{"features", "objectness", "deltas"}``, one tensor per level."""

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        self.backbone, self.rpn = detector.backbone, detector.rpn

    def forward(self, x: Tensor) -> dict[str, tuple[Tensor, ...]]:
        feats = list(self.backbone(x).values())
        head = self.rpn.head
        hidden = [head.conv(f) for f in feats]
        return {"features": tuple(feats), "objectness": tuple(head.cls_logits(h) for h in hidden),
                "deltas": tuple(head.bbox_pred(h) for h in hidden)}


class BoxHeadSpiking(nn.Module):
    """TwoMLPHead + the predictor's two linear layers: pooled RoI features → (class logits, box regressions)."""

    def __init__(self, detector: nn.Module) -> None:
        super().__init__()
        self.box_head, self.box_predictor = detector.roi_heads.box_head, detector.roi_heads.box_predictor

    def forward(self, pooled: Tensor) -> tuple[Tensor, Tensor]:
        y = self.box_head(pooled)
        return self.box_predictor.cls_score(y), self.box_predictor.bbox_pred(y)


class SpikingFasterRCNN:
    """The chained two-stage SNN (see the module docstring); ``rpn``/``box_head`` are SpikingModels."""

    def __init__(self, detector: nn.Module, rpn: Any, box_head: Any, records: dict[str, Any]) -> None:
        self.detector, self.rpn, self.box_head, self.records = detector, rpn, box_head, records

    def _images(self, x: Tensor) -> Any:
        from torchvision.models.detection.image_list import ImageList

        return ImageList(x, [(int(x.shape[-2]), int(x.shape[-1]))] * int(x.shape[0]))

    def proposals(self, x: Tensor, first: dict[str, Sequence[Tensor]]) -> list[Tensor]:
        """RPN proposals (floating point) from first-stage outputs."""
        from torchvision.models.detection.rpn import concat_box_prediction_layers

        rpn = self.detector.rpn
        images, feats = self._images(x), list(first["features"])
        anchors = rpn.anchor_generator(images, feats)
        per_level = [o[0].numel() for o in first["objectness"]]
        obj, deltas = concat_box_prediction_layers(list(first["objectness"]), list(first["deltas"]))
        props = rpn.box_coder.decode(deltas.detach(), anchors).view(len(anchors), -1, 4)
        boxes, _ = rpn.filter_proposals(props, obj, images.image_sizes, per_level)
        return boxes

    def pooled(self, x: Tensor, features: Sequence[Tensor], proposals: list[Tensor]) -> Tensor:
        """RoIAlign of (time-averaged) FPN features at the proposals (floating point)."""
        names = list(self.detector.roi_heads.box_roi_pool.featmap_names)
        fmap = OrderedDict((n, f) for n, f in zip(names, features))
        return self.detector.roi_heads.box_roi_pool(fmap, proposals, self._images(x).image_sizes)

    def finish(self, x: Tensor, second: tuple[Tensor, Tensor], proposals: list[Tensor]) -> list[dict[str, Tensor]]:
        boxes, scores, labels = self.detector.roi_heads.postprocess_detections(
            second[0], second[1], proposals, self._images(x).image_sizes)
        return [{"boxes": b, "scores": s, "labels": c} for b, s, c in zip(boxes, scores, labels)]

    @torch.no_grad()
    def detect(self, x: Tensor, timesteps: int) -> list[dict[str, Tensor]]:
        """Detections of the chained SNNs, each run ``timesteps`` steps (time averages in between)."""
        first = {k: tuple(t.mean(0) for t in v) for k, v in self.rpn.run(x, timesteps).items()}
        props = self.proposals(x, first)
        pooled = self.pooled(x, first["features"], props)
        second = tuple(t.mean(0) for t in self.box_head.run(pooled, timesteps))
        return self.finish(x, second, props)  # type: ignore[arg-type]

    @torch.no_grad()
    def ann_detect(self, x: Tensor) -> list[dict[str, Tensor]]:
        """The same chain with both parts in ANN mode (equals the detector on a pre-transformed batch)."""
        first = self.rpn.ann_forward(x)
        props = self.proposals(x, first)
        pooled = self.pooled(x, first["features"], props)
        return self.finish(x, self.box_head.ann_forward(pooled), props)


@torch.no_grad()
def convert_faster_rcnn(detector: nn.Module, calib_images: Tensor, *, config: Any = None) -> SpikingFasterRCNN:
    """Convert both parts of a torchvision Faster R-CNN (eval mode, pre-transformed images ``[B, 3, H, W]``).

    The box head is calibrated on the pooled features of the ANN's own proposals for ``calib_images``.
    """
    from adacal.pipeline import convert

    detector.eval()
    rpn_part, box_part = RPNSpiking(detector), BoxHeadSpiking(detector)
    rpn, rec1 = convert(rpn_part, calib_images, config=config, divergence=relative_mse)
    chain = SpikingFasterRCNN(detector, rpn, None, {})
    first = rpn_part(calib_images)
    pooled = chain.pooled(calib_images, first["features"], chain.proposals(calib_images, first))
    box_head, rec2 = convert(box_part, pooled, config=config, divergence=relative_mse)
    chain.box_head = box_head
    chain.records = {"rpn": rec1, "box_head": rec2, "analog": [
        "pre-processing: resize and normalise (data loader)",
        "between the stages: anchors, proposal decoding and NMS, RoIAlign of the time-averaged FPN features",
        "after the box head: box decoding, score filter, NMS (roi_heads.postprocess_detections)"]}
    return chain

"""Object detection: head outputs of a spiking detector, boxes after floating-point post-processing.

The network (the spiking part) returns head maps; the task's *decoder* (anchors or locations,
box decoding, NMS; :mod:`adacal.detection`) turns their time average into boxes, scored with
torchmetrics ``MeanAveragePrecision`` (COCO protocol) over the whole test set. The decoder comes
from the task's ``decoder`` fact or from the model (:meth:`DetectionTask.bind_model`: a detector
module carries it as its ``decoder`` attribute).

Early exit (IAT) decodes the running average at every step; an image's score is the mean binary
confidence ``1 − H(p)/log 2`` of its kept detections (none kept: 0, keep running).
"""
from __future__ import annotations

import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from adacal.detection.boxes import unpad_target
from adacal.errors import ConfigError, DataError
from adacal.tasks.base import MetricSet, Task

__all__ = ["DetectionMetrics", "DetectionTask", "image_confidence", "match_f1"]

#: A running output counts as "correct" (IAT statistics) when its detections reach this F1 at IoU 0.5 ...
CORRECT_F1 = 0.5
#: ... counting detections scored at least this.
CORRECT_SCORE = 0.3


def image_confidence(scores: Tensor, topk: int = 20) -> float:
    """Mean of ``1 − H_b(p)/log 2`` over an image's ``topk`` best kept detection scores; 0 if none."""
    if scores.numel() == 0:
        return 0.0
    p = scores.double().topk(min(topk, scores.numel())).values.clamp(1e-9, 1 - 1e-9)
    h = -(p * p.log() + (1 - p) * (1 - p).log()) / math.log(2.0)
    return float((1.0 - h).mean())


def match_f1(det: Mapping[str, Tensor], gt: Mapping[str, Tensor], *, iou: float = 0.5,
             min_score: float = CORRECT_SCORE) -> float:
    """F1 of an image's detections (score ≥ ``min_score``) greedily matched to same-class GT at ``iou``."""
    from torchvision.ops import box_iou

    keep = det["scores"] >= min_score
    boxes, labels = det["boxes"][keep], det["labels"][keep]
    n_gt, n_det = int(gt["labels"].numel()), int(labels.numel())
    if n_gt == 0 or n_det == 0:
        return 1.0 if n_gt == n_det else 0.0
    ious = box_iou(boxes.float(), gt["boxes"].float().to(boxes.device))
    ious[labels[:, None] != gt["labels"].to(labels.device)[None, :]] = 0.0
    used = torch.zeros(n_gt, dtype=torch.bool, device=ious.device)
    tp = 0
    for i in range(n_det):  # detections come sorted by score
        row = ious[i].masked_fill(used, 0.0)
        j = int(row.argmax())
        if row[j] >= iou:
            used[j] = True
            tp += 1
    return 2.0 * tp / (n_gt + n_det)


class DetectionMetrics(MetricSet):
    """Decodes head outputs and feeds torchmetrics ``MeanAveragePrecision`` (COCO protocol)."""

    def __init__(self, task: DetectionTask) -> None:
        from torchmetrics.detection import MeanAveragePrecision

        self.task = task
        reset = getattr(task.decoder, "reset_counts", None)
        if reset is not None:
            reset()  # the decoder's work counts (energy of the post-processing) start with this evaluation
        coco = MeanAveragePrecision(box_format="xyxy", iou_type="bbox", class_metrics=True)
        at50 = MeanAveragePrecision(box_format="xyxy", iou_type="bbox", class_metrics=True, iou_thresholds=[0.5])
        super().__init__({"coco": coco, "at50": at50})
        self.images = 0

    def update(self, outputs: Any, target: Any) -> None:
        preds = self.task.detections(outputs)
        gts = unpad_target(target)
        if len(preds) != len(gts):
            raise DataError(f"{len(preds)} images of outputs but {len(gts)} targets in the batch")
        self.images += len(gts)
        for m in self.metrics.values():
            m.update(preds, gts)

    def compute(self) -> dict[str, Any]:
        if self.images == 0:
            raise DataError("no images were evaluated")
        coco, at50 = self.metrics["coco"].compute(), self.metrics["at50"].compute()
        n = self.task.num_classes

        def per_class(r: Mapping[str, Tensor]) -> list[float | None]:
            vals: list[float | None] = [None] * n
            for c, v in zip(r["classes"].flatten().tolist(), r["map_per_class"].flatten().tolist()):
                if 0 <= int(c) < n and v >= 0:
                    vals[int(c)] = 100.0 * float(v)
            return vals

        out = {k: 100.0 * float(coco[k]) for k in ("map_50", "map", "map_75")}
        out.update({"map_small": _pct(coco["map_small"]), "map_medium": _pct(coco["map_medium"]),
                    "map_large": _pct(coco["map_large"]), "ap_per_class": per_class(coco),
                    "ap50_per_class": per_class(at50)})
        return out


def _pct(v: Tensor) -> float | None:
    return 100.0 * float(v) if float(v) >= 0 else None


class DetectionTask(Task):
    """Boxes from head outputs; headline mAP@.5, also mAP@[.5:.95] and per-class AP (percent)."""

    name = "detection"
    headline = "map_50"
    labels = {"map_50": "mAP@.5 (%)", "map": "mAP@[.5:.95] (%)", "map_75": "mAP@.75 (%)"}
    per_step = False
    supports_exit = True
    exit_accumulate = "mean"
    report_examples = 4

    def __init__(self, **info: Any) -> None:
        self.decoder = info.pop("decoder", None)
        super().__init__(**info)

    # ------------------------------------------------------------------ the analog part
    def bind_model(self, model: nn.Module) -> None:
        """Take the decoder from a detector module's ``decoder`` attribute (unless one was given)."""
        if self.decoder is None:
            self.decoder = getattr(model, "decoder", None)

    def _decoder(self) -> Any:
        if self.decoder is None:
            raise ConfigError("the detection task has no box decoder: use a detector whose module carries a "
                              "'decoder' (adacal.detection.detector_parts, --model fcos_lite or a torchvision "
                              "detector name), or pass decoder=... to the task")
        return self.decoder

    def detections(self, outputs: Any) -> list[dict[str, Tensor]]:
        """Kept detections per image (boxes in input pixels, scores, labels) of head outputs."""
        return list(self._decoder().detections(outputs))

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        if self.decoder is not None:
            d["info"]["analog"] = self.analog_description()
        return d

    def analog_description(self) -> dict[str, Any]:
        """What runs in floating point outside the SNN (stored with the results)."""
        return {"preprocess": "resize to the input size and normalise (in the data loader)",
                "postprocess": self._decoder().describe(),
                "priced_as": "MAC-equivalent operations x E_MAC, added to the SNN's and the ANN's energy "
                             "(layers of kind 'analog'); under early exit the post-processing runs every step"}

    def analog_ops(self, output: Any) -> list[dict[str, Any]]:
        """Per-image floating-point work outside the network: pre-processing (bilinear resize, 4 MACs, and
        normalisation, 2 ops, per input value) and the decoder's post-processing."""
        dec = self._decoder()
        h, w = dec.image_size(output)
        rows = [{"name": "preprocess", "macs": 6 * 3 * h * w, "per_step": False}]
        return rows + [{**r, "per_step": True} for r in dec.analog_ops(output)]

    # ------------------------------------------------------------------ protocol
    def check_outputs(self, outputs: Any, what: str = "model") -> None:
        if self.decoder is not None:
            self.decoder.check(outputs, what)

    def metrics(self) -> MetricSet:
        return DetectionMetrics(self)

    def loss(self, outputs: Any, target: Any, *, label_smoothing: float = 0.0) -> Tensor:
        dec = self._decoder()
        if not hasattr(dec, "loss"):
            raise ConfigError(f"decoder {type(dec).__name__} defines no training loss; train the detector with "
                              "its own library and convert the trained weights")
        return dec.loss(outputs, target)

    def divergence(self, ann: Any, snn: Any) -> Tensor:
        return self._decoder().divergence(ann, snn)

    def exit_score(self, output: Any, kind: str = "entropy") -> Tensor:
        dets = self.detections(output)
        dev = dets[0]["scores"].device if dets else torch.device("cpu")
        return torch.tensor([image_confidence(d["scores"]) for d in dets], dtype=torch.float64, device=dev)

    def correct(self, output: Any, target: Any) -> Tensor:
        dets, gts = self.detections(output), unpad_target(target)
        return torch.tensor([match_f1(d, g) >= CORRECT_F1 for d, g in zip(dets, gts)], dtype=torch.bool)

    # ------------------------------------------------------------------ pictures
    def examples(self, x: Any, output: Any, target: Any) -> dict[str, Any] | None:
        """Images (uint8, de-normalised per image), kept detections and GT, padded to fixed sizes."""
        from adacal.detection.pictures import pack_examples

        mean, std = self.info.get("mean"), self.info.get("std")
        return pack_examples(x, self.detections(output), unpad_target(target), mean=mean, std=std)

    def figures(self, results: Mapping[str, Any], folder: Path) -> dict[str, tuple[Path, str]]:
        from adacal.detection.pictures import task_figures

        return task_figures(results, Path(folder), classes=list(self.info.get("classes") or []))


from adacal.tasks import register_task  # noqa: E402 (the registry imports this module last)

register_task(DetectionTask)

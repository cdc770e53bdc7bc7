"""Semantic segmentation: per-pixel logits ``[B, C, H, W]`` against label maps ``[B, H, W]``.

Metrics are torchmetrics' over the whole test set (one confusion matrix, not an average of
per-image scores): mIoU over the classes present (void ignored), IoU per class, pixel accuracy.
Early exit scores each image by the per-pixel normalised entropy of its running output, reduced
by the mean over pixels (or the minimum: the least confident pixel decides); an image counts as
correct for the exit statistics (seed eq. 15) when its pixel accuracy reaches
``correct_pixel_accuracy``. A model may return the map itself or torchvision's ``{"out": map}``.

Dataset facts the task reads from ``info``: ``num_classes``, ``ignore_index`` (void label, may be
None), ``classes`` and ``palette`` (names and colours for the pictures), ``mean``/``std`` (to show
the input images), ``example_indices`` (the fixed test images of the pictures), and optionally
``class_weights`` (of the training loss) and ``exit_reduction`` (``"mean"`` or ``"min"``).
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from adacal.errors import DataError
from adacal.iat.policy import DENSE_CORRECT_PIXEL_ACCURACY, REDUCTIONS, scores
from adacal.metrics import symmetric_kl
from adacal.tasks import register_task
from adacal.tasks.base import MetricSet, Task

__all__ = ["Segmentation", "dense_output"]

#: How many fixed test images the pictures show when the dataset names none (the first ones).
DEFAULT_EXAMPLES = 4


def dense_output(outputs: Any) -> Any:
    """The ``[B, C, H, W]`` map of a model's outputs: the tensor itself or torchvision's ``"out"``."""
    if isinstance(outputs, Mapping) and "out" in outputs:
        return outputs["out"]
    return outputs


class _Metric:
    """A torchmetrics multiclass metric on dense logits, after a label check that names the bad label."""

    def __init__(self, metric: Any, num_classes: int, ignore_index: int | None) -> None:
        self.metric, self.num_classes, self.ignore_index = metric, num_classes, ignore_index
        self.pixels = 0

    def to(self, device: torch.device) -> _Metric:
        self.metric = self.metric.to(device)
        return self

    def update(self, outputs: Any, target: Tensor) -> None:
        logits = dense_output(outputs)
        y = torch.as_tensor(target, device=logits.device)
        if y.dtype.is_floating_point or tuple(y.shape) != (logits.shape[0], *logits.shape[2:]):
            raise DataError(f"segmentation targets must be integer label maps of shape "
                            f"{(logits.shape[0], *logits.shape[2:])}, got {y.dtype} {tuple(y.shape)}")
        valid = y != self.ignore_index if self.ignore_index is not None else torch.ones_like(y, dtype=torch.bool)
        bad = y[valid & ((y < 0) | (y >= self.num_classes))]
        if bad.numel():
            hint = f" (void label: {self.ignore_index})" if self.ignore_index is not None else ""
            raise DataError(f"label {int(bad[0])} is outside [0, {self.num_classes}){hint}; check the dataset, "
                            "--num-classes and the ignore_index")
        self.pixels += int(valid.sum())
        self.metric.update(logits, y)

    def compute(self) -> Tensor:
        if self.pixels == 0:
            raise DataError("no labelled pixels were evaluated")
        return self.metric.compute()


@register_task
class Segmentation(Task):
    name = "segmentation"
    headline = "miou"
    labels = {"miou": "mIoU (%)", "pixel_accuracy": "pixel accuracy (%)", "iou_per_class": "IoU per class (%)"}
    per_step = False
    supports_exit = True
    #: Pixel accuracy at which an image counts as correct in the exit statistics (seed eq. 15).
    correct_pixel_accuracy: float = DENSE_CORRECT_PIXEL_ACCURACY

    @property
    def ignore_index(self) -> int | None:
        v = self.info.get("ignore_index")
        return None if v is None else int(v)

    @property
    def report_examples(self) -> tuple[int, ...]:  # type: ignore[override]
        """The test images the report draws: the dataset's ``example_indices``, else the first few."""
        return tuple(int(i) for i in self.info.get("example_indices") or range(DEFAULT_EXAMPLES))

    @property
    def exit_reduction(self) -> str:
        r = str(self.info.get("exit_reduction", "mean"))
        if r not in REDUCTIONS:
            raise DataError(f"exit_reduction must be one of {list(REDUCTIONS)}, got {r!r}")
        return r

    def check_outputs(self, outputs: Any, what: str = "model") -> None:
        self._check_logits(dense_output(outputs), what, 4)

    # ------------------------------------------------------------------ metrics and training
    def metrics(self) -> MetricSet:
        from torchmetrics.classification import MulticlassAccuracy, MulticlassJaccardIndex

        c, ig = self.num_classes, self.ignore_index
        kw = {"ignore_index": ig, "validate_args": False}
        return MetricSet({
            "miou": _Metric(MulticlassJaccardIndex(c, average="macro", **kw), c, ig),
            "pixel_accuracy": _Metric(MulticlassAccuracy(c, average="micro", **kw), c, ig),
            "iou_per_class": _Metric(MulticlassJaccardIndex(c, average="none", **kw), c, ig),
        }, scale={"miou": 100.0, "pixel_accuracy": 100.0, "iou_per_class": 100.0})

    def loss(self, outputs: Any, target: Tensor, *, label_smoothing: float = 0.0) -> Tensor:
        logits = dense_output(outputs).float()
        weights = self.info.get("class_weights")
        w = None if weights is None else torch.as_tensor(weights, dtype=logits.dtype, device=logits.device)
        return F.cross_entropy(logits, target, weight=w, label_smoothing=label_smoothing,
                               ignore_index=-100 if self.ignore_index is None else self.ignore_index)

    # ------------------------------------------------------------------ conversion and early exit
    def divergence(self, ann: Any, snn: Any) -> Tensor:
        """Symmetric KL of the per-pixel class distributions, averaged over images and pixels."""
        return symmetric_kl(dense_output(ann), dense_output(snn))

    def exit_score(self, output: Any, kind: str = "entropy") -> Tensor:
        return scores(dense_output(output), kind, self.exit_reduction)

    def correct(self, output: Any, target: Tensor) -> Tensor:
        """Per image: pixel accuracy over the labelled pixels >= ``correct_pixel_accuracy``."""
        pred = dense_output(output).argmax(dim=1)
        y = target.to(pred.device)
        valid = y != self.ignore_index if self.ignore_index is not None else torch.ones_like(y, dtype=torch.bool)
        hits = ((pred == y) & valid).flatten(1).sum(1)
        total = valid.flatten(1).sum(1)
        return (total > 0) & (hits >= self.correct_pixel_accuracy * total)

    # ------------------------------------------------------------------ report
    def examples(self, x: Any, output: Any, target: Any) -> dict[str, Any] | None:
        """Input images (uint8 RGB, de-normalised), label maps and predicted maps of these samples."""
        if not isinstance(x, Tensor) or x.dim() != 4 or x.shape[1] != 3:
            return None
        mean = torch.as_tensor(self.info.get("mean", (0.0, 0.0, 0.0)), dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        std = torch.as_tensor(self.info.get("std", (1.0, 1.0, 1.0)), dtype=x.dtype, device=x.device).view(1, 3, 1, 1)
        image = ((x * std + mean).clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1)
        pred = dense_output(output).argmax(dim=1)
        return {"image": image.cpu().numpy(), "target": target.to(torch.int16).cpu().numpy(),
                "prediction": pred.to(torch.int16).cpu().numpy()}

    def figures(self, results: Mapping[str, Any], folder: Path) -> dict[str, tuple[Path, str]]:
        from adacal.report.segmentation import segmentation_figures

        return segmentation_figures(results, Path(folder), num_classes=self.num_classes,
                                    classes=list(self.info.get("classes") or []),
                                    palette=self.info.get("palette"), ignore_index=self.ignore_index)

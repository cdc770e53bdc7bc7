"""Image (or any) classification: ``[B, C]`` logits against integer labels, top-1 accuracy."""
from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from adacal.errors import DataError
from adacal.iat.policy import scores
from adacal.tasks.base import MetricSet, Task

__all__ = ["Classification"]


class _Top1:
    """torchmetrics' micro-averaged top-1 accuracy, after a label check that names the bad label."""

    def __init__(self, num_classes: int) -> None:
        from torchmetrics.classification import MulticlassAccuracy

        self.num_classes = num_classes
        self.metric = MulticlassAccuracy(num_classes, average="micro", validate_args=False)

    def to(self, device: torch.device) -> _Top1:
        self.metric = self.metric.to(device)
        return self

    def update(self, logits: Tensor, target: Tensor) -> None:
        y = torch.as_tensor(target, device=logits.device)
        if y.dtype.is_floating_point or y.dim() != 1 or y.shape[0] != logits.shape[0]:
            raise DataError(f"labels must be integer class ids of shape [{logits.shape[0]}], got {y.dtype} "
                            f"{tuple(y.shape)}")
        bad = y[(y < 0) | (y >= self.num_classes)]
        if bad.numel():
            raise DataError(f"label {int(bad[0])} is outside [0, {self.num_classes}); check the dataset and "
                            "--num-classes")
        self.metric.update(logits, y)

    def compute(self) -> Tensor:
        if int(self.metric.tp.sum() + self.metric.fn.sum()) == 0:
            raise DataError("no samples were evaluated")
        return self.metric.compute()


class Classification(Task):
    risk_exit = True
    name = "classification"
    headline = "accuracy"
    labels = {"accuracy": "top-1 accuracy (%)"}
    per_step = True

    def check_outputs(self, outputs: Any, what: str = "model") -> None:
        self._check_logits(outputs, what, 2)

    def metrics(self) -> MetricSet:
        return MetricSet({"accuracy": _Top1(self.num_classes)}, scale={"accuracy": 100.0})

    def loss(self, outputs: Tensor, target: Tensor, *, label_smoothing: float = 0.0) -> Tensor:
        return F.cross_entropy(outputs.float(), target, label_smoothing=label_smoothing)

    def exit_score(self, output: Tensor, kind: str = "entropy") -> Tensor:
        return scores(output, kind)

    def correct(self, output: Tensor, target: Tensor) -> Tensor:
        return output.argmax(dim=1) == target

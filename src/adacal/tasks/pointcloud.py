"""Point-cloud tasks: shape classification and part segmentation (the seed's Tables 5-6).

* ``pointcloud_classification``: one label per shape; overall accuracy and class-mean accuracy
  (the mean over classes of each class's accuracy). Early exit per shape, as classification.
* ``part_segmentation``: one part id per point (ShapeNetPart numbering: global ids, each category
  owning a consecutive block). Scored exactly as the seed's code (PointNet++'s
  ``test_partseg.py``): a shape's category is known (from its labels), its prediction is the
  argmax over that category's parts only; per shape, every part of the category gets
  IoU = |pred ∩ gt| / |pred ∪ gt|, or 1 when the part is absent from both; the shape's mIoU is
  the mean over its category's parts; **instance mIoU** is the mean over shapes and **class mIoU**
  the mean over categories of their shapes' mean. Early exit scores each point's entropy over the
  parts of the category its output favours, averaged over the shape's points.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from torchmetrics import Metric

from adacal import inputs
from adacal.datasets.pointcloud import SHAPENET_PART_COUNTS
from adacal.errors import DataError, ShapeError
from adacal.iat.policy import DENSE_CORRECT_PIXEL_ACCURACY
from adacal.tasks.base import MetricSet, Task
from adacal.tasks.classification import Classification, _Top1

__all__ = ["PartSegmentation", "PointCloudClassification", "part_ious", "part_masks", "restricted_prediction",
           "shape_mious"]

#: ShapeNetPart's parts per category (categories in alphabetical order, part ids consecutive).
DEFAULT_PART_COUNTS = SHAPENET_PART_COUNTS


# ------------------------------------------------------------------------------------------- maths
def part_masks(part_counts: Sequence[int], device: torch.device | None = None) -> Tensor:
    """``[categories, parts]`` bool: which global part ids belong to each category."""
    total = int(sum(part_counts))
    mask = torch.zeros(len(part_counts), total, dtype=torch.bool, device=device)
    start = 0
    for k, c in enumerate(part_counts):
        mask[k, start:start + c] = True
        start += c
    return mask


def shape_categories(target: Tensor, masks: Tensor) -> Tensor:
    """The category of each shape ``[B]`` from its part labels ``[B, N]`` (all of one category)."""
    if target.dtype.is_floating_point or target.dim() != 2:
        raise DataError(f"part labels must be integer ids of shape [B, N], got {target.dtype} {tuple(target.shape)}")
    parts = masks.shape[1]
    if int(target.min()) < 0 or int(target.max()) >= parts:
        raise DataError(f"part label {int(target.max()) if int(target.max()) >= parts else int(target.min())} is "
                        f"outside [0, {parts}); check the dataset's part numbering")
    of_part = masks.to(torch.long).argmax(0)  # [parts] -> category
    cats = of_part[target]  # [B, N]
    mixed = (cats != cats[:, :1]).any(1)
    if bool(mixed.any()):
        i = int(mixed.nonzero()[0])
        raise DataError(f"shape {i} of the batch has part labels of several categories "
                        f"{sorted(set(cats[i].tolist()))}; each shape must belong to one category")
    return cats[:, 0]


def restricted_prediction(logits: Tensor, allowed: Tensor) -> Tensor:
    """Argmax over dim 1 of ``logits [B, parts, N]`` among the ``allowed [B, parts]`` parts only."""
    masked = logits.masked_fill(~allowed[:, :, None], float("-inf"))
    return masked.argmax(dim=1)


def part_ious(pred: Tensor, target: Tensor, allowed: Tensor) -> Tensor:
    """``[B, parts]`` IoU of every part per shape; 1 where a part is in neither prediction nor
    ground truth (the seed's rule); parts outside ``allowed`` are 0 (ignored by the averages)."""
    parts = allowed.shape[1]
    p = F.one_hot(pred, parts).bool()  # [B, N, parts]
    g = F.one_hot(target, parts).bool()
    inter = (p & g).sum(1).double()
    union = (p | g).sum(1).double()
    iou = torch.where(union > 0, inter / union.clamp(min=1), torch.ones_like(union))
    return iou * allowed.double()


def shape_mious(logits: Tensor, target: Tensor, masks: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(shape mIoU [B], category [B], restricted prediction [B, N])`` for ``logits [B, parts, N]``."""
    cats = shape_categories(target, masks)
    allowed = masks[cats]
    pred = restricted_prediction(logits, allowed)
    iou = part_ious(pred, target, allowed)
    return iou.sum(1) / allowed.sum(1).double(), cats, pred


# ------------------------------------------------------------------------------------------- metrics
class PartSegMetric(Metric):
    """torchmetrics metric: per-category sums of shape mIoUs and point hits (sums, so batches and
    processes combine exactly, never averages of averages).

    ``kind``: ``instance_miou`` | ``class_miou`` | ``accuracy`` (points whose restricted prediction
    is right). Values are fractions; :class:`~adacal.tasks.base.MetricSet` scales them to percent.
    """

    KINDS = ("instance_miou", "class_miou", "accuracy")
    full_state_update = False
    is_differentiable = False
    higher_is_better = True

    def __init__(self, part_counts: Sequence[int], kind: str) -> None:
        super().__init__()
        if kind not in self.KINDS:
            raise DataError(f"unknown part-segmentation metric {kind!r}; valid: {list(self.KINDS)}")
        self.kind = kind
        self.register_buffer("masks", part_masks(part_counts), persistent=False)
        n = len(part_counts)
        self.add_state("iou_sum", default=torch.zeros(n, dtype=torch.float64), dist_reduce_fx="sum")
        self.add_state("shapes", default=torch.zeros(n, dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("hits", default=torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")
        self.add_state("points", default=torch.zeros((), dtype=torch.long), dist_reduce_fx="sum")

    def update(self, logits: Tensor, target: Tensor) -> None:
        target = torch.as_tensor(target, device=logits.device)
        if logits.dim() != 3 or target.shape != (logits.shape[0], logits.shape[2]):
            raise ShapeError(f"part segmentation needs outputs [B, parts, N] and labels [B, N], got "
                             f"{tuple(logits.shape)} and {tuple(target.shape)}")
        miou, cats, pred = shape_mious(logits, target, self.masks.to(logits.device))
        self.iou_sum.index_add_(0, cats, miou)
        self.shapes.index_add_(0, cats, torch.ones_like(cats))
        self.hits += (pred == target).sum()
        self.points += target.numel()

    def compute(self) -> Tensor:
        if int(self.shapes.sum()) == 0:
            raise DataError("no shapes were evaluated")
        if self.kind == "accuracy":
            return self.hits.double() / self.points.double()
        if self.kind == "instance_miou":
            return self.iou_sum.sum() / self.shapes.sum().double()
        seen = self.shapes > 0
        return (self.iou_sum[seen] / self.shapes[seen].double()).mean()


class _ClassMean(_Top1):
    """Class-mean accuracy: torchmetrics' macro-averaged accuracy (mean of per-class recall)."""

    def __init__(self, num_classes: int) -> None:
        super().__init__(num_classes)
        from torchmetrics.classification import MulticlassAccuracy

        self.metric = MulticlassAccuracy(num_classes, average="macro", validate_args=False)


# ------------------------------------------------------------------------------------------- tasks
class PointCloudClassification(Classification):
    """Shape classification: ``[B, classes]`` logits; overall and class-mean accuracy (seed Table 5)."""

    name = "pointcloud_classification"
    labels = {"accuracy": "overall accuracy (%)", "class_accuracy": "class-mean accuracy (%)"}

    def metrics(self) -> MetricSet:
        return MetricSet({"accuracy": _Top1(self.num_classes), "class_accuracy": _ClassMean(self.num_classes)},
                         scale={"accuracy": 100.0, "class_accuracy": 100.0})

    def loss(self, outputs: Any, target: Tensor, *, label_smoothing: float = 0.0) -> Tensor:
        return _with_penalty(outputs, lambda o: super(PointCloudClassification, self).loss(
            o, target, label_smoothing=label_smoothing))


def _with_penalty(outputs: Any, loss: Any) -> Tensor:
    """A network with a feature T-Net returns ``(logits, penalty)`` in training: add the penalty."""
    if isinstance(outputs, tuple) and len(outputs) == 2 and outputs[1].dim() == 0:
        from adacal.models.pointnet import FEATURE_TRANSFORM_WEIGHT

        return loss(outputs[0]) + FEATURE_TRANSFORM_WEIGHT * outputs[1]
    return loss(outputs)


class PartSegmentation(Task):
    """Per-point part labels of shapes with a known category (seed Table 6, ShapeNetPart).

    Inputs ``(points [B, C, N], category one-hot [B, categories])``; outputs ``[B, parts, N]``;
    targets ``[B, N]`` global part ids. ``part_counts`` (from the dataset, default ShapeNetPart's):
    how many consecutive part ids each category owns.
    """

    name = "part_segmentation"
    headline = "instance_miou"
    labels = {"instance_miou": "instance mIoU (%)", "class_miou": "class mIoU (%)",
              "accuracy": "point accuracy (%)"}
    per_step = True
    report_examples = 4

    @property
    def part_counts(self) -> tuple[int, ...]:
        counts = tuple(int(c) for c in self.info.get("part_counts") or DEFAULT_PART_COUNTS)
        if "num_classes" in self.info and sum(counts) != self.num_classes:
            raise DataError(f"part_counts {counts} cover {sum(counts)} parts but the task has "
                            f"{self.num_classes} classes")
        return counts

    def check_outputs(self, outputs: Any, what: str = "model") -> None:
        self._check_logits(outputs, what, 3)

    def metrics(self) -> MetricSet:
        counts = self.part_counts
        return MetricSet({k: PartSegMetric(counts, k) for k in PartSegMetric.KINDS},
                         scale={k: 100.0 for k in PartSegMetric.KINDS})

    def loss(self, outputs: Any, target: Tensor, *, label_smoothing: float = 0.0) -> Tensor:
        return _with_penalty(outputs, lambda o: F.cross_entropy(o.float(), target, label_smoothing=label_smoothing))

    # ------------------------------------------------------------------ early exit
    def _favoured(self, output: Tensor) -> Tensor:
        """``[B, parts]`` parts of the category each shape's output puts most probability on."""
        masks = part_masks(self.part_counts, output.device)
        mass = torch.softmax(output.double(), dim=1).mean(2) @ masks.double().T  # [B, categories]
        return masks[mass.argmax(1)]

    def exit_score(self, output: Tensor, kind: str = "entropy") -> Tensor:
        """Per point: 1 − H/log k over the k parts of the favoured category (``confidence``: the
        largest of those probabilities); then the mean over the shape's points."""
        allowed = self._favoured(output)
        logp = torch.log_softmax(output.double().masked_fill(~allowed[:, :, None], float("-inf")), dim=1)
        if kind == "confidence":
            per_point = logp.max(1).values.exp()
        else:
            k = allowed.sum(1).double().clamp(min=2)
            p = logp.exp()
            h = -(p * logp.masked_fill(~allowed[:, :, None], 0.0)).sum(1)
            per_point = 1.0 - h / torch.log(k)[:, None]
        return per_point.mean(1).to(torch.promote_types(output.dtype, torch.float32))

    def correct(self, output: Tensor, target: Tensor) -> Tensor:
        """A shape counts as right when at least half its points are (restricted prediction)."""
        masks = part_masks(self.part_counts, output.device)
        pred = restricted_prediction(output, masks[shape_categories(target, masks)])
        return (pred == target).double().mean(1) >= DENSE_CORRECT_PIXEL_ACCURACY

    # ------------------------------------------------------------------ report
    def examples(self, x: Any, output: Any, target: Any) -> dict[str, Any] | None:
        points = inputs.leaves(x)[0][:, :3]
        masks = part_masks(self.part_counts, output.device)
        pred = restricted_prediction(output, masks[shape_categories(target, masks)])
        return {"points": points.cpu().numpy().astype(np.float32), "pred": pred.cpu().numpy().astype(np.int16),
                "target": target.cpu().numpy().astype(np.int16)}

    def figures(self, results: Mapping[str, Any], folder: Path) -> dict[str, tuple[Path, str]]:
        from adacal.report import featured_run
        from adacal.report.plots import save_figure

        run = featured_run([r for r in results.get("runs", []) if r.get("examples") and not r.get("iat")])
        path = Path(folder) / str(run["examples"]) if run is not None else None
        if path is None or not path.is_file():
            return {}

        with np.load(path) as d:
            fig = draw_parts(d["points"], d["target"], d["pred"], title=str(run["name"]))
        out = save_figure(fig, Path(folder) / "part_segmentation_examples.png")
        return {"part_examples": (out, f"Part labels of test shapes: ground truth (left) and {run['name']} "
                                       "(right); colours are part ids")}


def draw_parts(points: np.ndarray, target: np.ndarray, pred: np.ndarray, *, title: str = "", max_shapes: int = 4,
               ) -> Any:
    """Side-by-side 3-D scatter plots of ground-truth and predicted parts (one row per shape)."""
    from matplotlib.figure import Figure

    n = min(max_shapes, len(points))
    fig = Figure(figsize=(7, 3.2 * n), layout="constrained")
    for i in range(n):
        for j, (labels, name) in enumerate(((target[i], "ground truth"), (pred[i], title or "prediction"))):
            ax = fig.add_subplot(n, 2, 2 * i + j + 1, projection="3d")
            xyz = points[i]
            ax.scatter(xyz[0], xyz[2], xyz[1], c=labels, cmap="tab10", vmin=0, vmax=max(9, int(labels.max())),
                       s=2, linewidths=0)
            acc = float((pred[i] == target[i]).mean()) if j else None
            ax.set_title(f"shape {i}: {name}" + (f" ({100 * acc:.1f}% points right)" if acc is not None else ""),
                         fontsize=8)
            ax.set_axis_off()
            ax.view_init(elev=20, azim=-60)
    return fig


def _register() -> None:
    from adacal.tasks import register_task

    register_task(PointCloudClassification)
    register_task(PartSegmentation)


_register()

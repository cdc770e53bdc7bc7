"""Point-cloud metrics, hand-checked: part-segmentation mIoU exactly as the seed defines it, and
class-mean accuracy of shape classification."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from adacal.errors import DataError
from adacal.tasks import get_task
from adacal.tasks.pointcloud import part_ious, part_masks, restricted_prediction, shape_mious

CAP = (6, 7)  # ShapeNetPart: Airplane 0-3, Bag 4-5, Cap 6-7, ...


def _logits_for(pred: list[int], parts: int = 50) -> torch.Tensor:
    """Logits ``[1, parts, N]`` whose argmax over *all* parts is ``pred``."""
    x = torch.zeros(1, parts, len(pred))
    for i, p in enumerate(pred):
        x[0, p, i] = 5.0
    return x


def _miou(pred: list[int], target: list[int]) -> float:
    masks = part_masks((4, 2, 2, 4, 4, 3, 3, 2, 4, 2, 6, 2, 3, 3, 3, 3))
    miou, _, _ = shape_mious(_logits_for(pred), torch.tensor([target]), masks)
    return float(miou[0])


def test_shape_miou_by_hand() -> None:
    # part 6: |{0}| / |{0, 1}| = 1/2; part 7: |{2, 3}| / |{1, 2, 3}| = 2/3; mean 7/12
    assert _miou([6, 7, 7, 7], [6, 6, 7, 7]) == pytest.approx(7 / 12)
    # Airplane: parts 0, 1 right (1, 1), part 2: 1/2, part 3 missed (0): mean 2.5/4
    assert _miou([0, 1, 2, 2], [0, 1, 2, 3]) == pytest.approx(0.625)


def test_a_part_absent_from_prediction_and_ground_truth_counts_as_iou_one() -> None:
    assert _miou([6, 6, 6, 6], [6, 6, 6, 6]) == 1.0  # the peak (7) is in neither: IoU 1, not 0/0
    # predicted but absent from the ground truth: IoU 0 for part 7, 3/4 for part 6
    assert _miou([6, 6, 6, 7], [6, 6, 6, 6]) == pytest.approx((0.75 + 0.0) / 2)


def test_predictions_are_restricted_to_the_category_parts() -> None:
    logits = torch.zeros(1, 50, 3)
    logits[0, 0] = 10.0  # Airplane's part 0 wins over all 50 parts everywhere ...
    logits[0, 7, 1] = 1.0  # ... but among the Cap's parts, point 1 is a peak
    allowed = part_masks((4, 2, 2, 4, 4, 3, 3, 2, 4, 2, 6, 2, 3, 3, 3, 3))[torch.tensor([2])]
    assert restricted_prediction(logits, allowed).tolist() == [[6, 7, 6]]
    iou = part_ious(torch.tensor([[6, 7, 6]]), torch.tensor([[6, 7, 7]]), allowed)
    assert iou[0, 6] == pytest.approx(1 / 2) and iou[0, 7] == pytest.approx(1 / 2)
    assert float(iou[0, :6].sum() + iou[0, 8:].sum()) == 0.0  # other categories' parts do not count


def _seed_reference(logits: np.ndarray, target: np.ndarray, seg_classes: dict[str, list[int]]) -> tuple[float, float]:
    """The seed's evaluation loop (PointNet++ ``test_partseg.py``), transcribed: (instance, class) mIoU."""
    seg_label_to_cat = {label: cat for cat, labels in seg_classes.items() for label in labels}
    shape_ious: dict[str, list[float]] = {cat: [] for cat in seg_classes}
    for i in range(len(target)):
        cat = seg_label_to_cat[target[i, 0]]
        logits_i = logits[i].T  # [N, parts]
        segp = np.argmax(logits_i[:, seg_classes[cat]], 1) + seg_classes[cat][0]
        segl = target[i]
        part_ious_ = [0.0 for _ in range(len(seg_classes[cat]))]
        for label in seg_classes[cat]:
            if (np.sum(segl == label) == 0) and (np.sum(segp == label) == 0):
                part_ious_[label - seg_classes[cat][0]] = 1.0
            else:
                part_ious_[label - seg_classes[cat][0]] = np.sum((segl == label) & (segp == label)) / float(
                    np.sum((segl == label) | (segp == label)))
        shape_ious[cat].append(float(np.mean(part_ious_)))
    all_ious = [v for vs in shape_ious.values() for v in vs]
    class_ious = [np.mean(v) for v in shape_ious.values() if v]
    return float(np.mean(all_ious)), float(np.mean(class_ious))


def test_task_metrics_match_the_seed_loop_and_hand_values() -> None:
    task = get_task("part_segmentation", num_classes=50)
    metrics = task.metrics()
    # batch 1: the Airplane and first Cap shape above; batch 2: the second Cap shape
    batch1 = torch.cat([_logits_for([0, 1, 2, 2]), _logits_for([6, 7, 7, 7])])
    metrics.update(batch1, torch.tensor([[0, 1, 2, 3], [6, 6, 7, 7]]))
    metrics.update(_logits_for([6, 6, 6, 6]), torch.tensor([[6, 6, 6, 6]]))
    got = metrics.compute()
    instance = (0.625 + 7 / 12 + 1.0) / 3
    klass = (0.625 + (7 / 12 + 1.0) / 2) / 2
    assert got["instance_miou"] == pytest.approx(100 * instance)
    assert got["class_miou"] == pytest.approx(100 * klass)
    assert got["accuracy"] == pytest.approx(100 * 10 / 12)

    g = torch.Generator().manual_seed(0)
    counts = (4, 2, 2, 4, 4, 3, 3, 2, 4, 2, 6, 2, 3, 3, 3, 3)
    starts = np.cumsum((0, *counts))
    seg_classes = {f"c{k}": list(range(starts[k], starts[k + 1])) for k in range(16)}
    cats = torch.randint(0, 16, (12,), generator=g)
    target = torch.stack([starts[int(c)] + torch.randint(0, counts[int(c)], (40,), generator=g) for c in cats])
    logits = torch.randn(12, 50, 40, generator=g) * 3
    logits[:3] += 5 * torch.nn.functional.one_hot(target[:3], 50).permute(0, 2, 1)  # some shapes near right
    metrics = task.metrics()
    metrics.update(logits, target)
    got = metrics.compute()
    inst, cls = _seed_reference(logits.numpy(), target.numpy(), seg_classes)
    assert got["instance_miou"] == pytest.approx(100 * inst)
    assert got["class_miou"] == pytest.approx(100 * cls)


def test_shapes_must_belong_to_one_category() -> None:
    task = get_task("part_segmentation", num_classes=50)
    metrics = task.metrics()
    with pytest.raises(DataError, match="several categories"):
        metrics.update(_logits_for([6, 0]), torch.tensor([[6, 0]]))
    with pytest.raises(DataError, match="outside"):
        metrics.update(_logits_for([6, 6]), torch.tensor([[6, 50]]))


def test_class_mean_accuracy_by_hand() -> None:
    task = get_task("pointcloud_classification", num_classes=3)
    metrics = task.metrics()
    logits = torch.nn.functional.one_hot(torch.tensor([0, 0, 1, 1, 2]), 3).float()
    metrics.update(logits, torch.tensor([0, 0, 0, 1, 2]))
    got = metrics.compute()
    assert got["accuracy"] == pytest.approx(80.0)  # 4 of 5
    assert got["class_accuracy"] == pytest.approx(100 * (2 / 3 + 1 + 1) / 3)


def test_part_segmentation_exit_score_and_correctness() -> None:
    task = get_task("part_segmentation", num_classes=50)
    confident = torch.full((1, 50, 8), -10.0)
    confident[0, 6] = 6.0  # all points: panels, far above the peak
    unsure = torch.full((1, 50, 8), -10.0)
    unsure[0, 6:8] = 1.0  # panels and peak equally likely: entropy log 2 over the Cap's 2 parts
    scores = task.exit_score(torch.cat([confident, unsure]))
    assert scores[0] > 0.99 and abs(float(scores[1])) < 1e-6
    # the score ignores other categories' parts: the same output plus mass elsewhere scores the same
    shifted = unsure.clone()
    shifted[0, 20:22] = -2.0
    assert abs(float(task.exit_score(shifted)[0])) < 1e-6
    target = torch.tensor([[6] * 8, [7] * 8])
    assert task.correct(torch.cat([confident, confident]), target).tolist() == [True, False]

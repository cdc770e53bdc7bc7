"""Box conventions and fixed-size targets: pure functions, tested on their own.

adacal keeps every box as **0-based continuous** ``[x1, y1, x2, y2]`` pixels (COCO / torchvision
convention: a box covering the first pixel column is ``x1 = 0, x2 = 1``). Sources differ:

* PASCAL VOC XML (and the shared BCCD / raccoon ``.npz``): 1-based *inclusive* integer indices,
  so ``(x1 − 1, y1 − 1, x2, y2)`` (:func:`voc_to_continuous`);
* COCO json: ``[x, y, w, h]`` (:func:`xywh_to_xyxy`); the shared coco128 ``.npz`` is already
  ``[x1, y1, x2, y2]`` continuous.

A batch target is a dict of fixed-size tensors (``boxes [M, 4]``, ``labels [M]`` with ``-1`` for
padding), so default collation, subsets and the engine's tensor helpers work unchanged.
"""
from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from adacal.errors import DataError

__all__ = ["BOX_CONVENTIONS", "PAD_LABEL", "pad_target", "scale_boxes", "to_continuous", "unpad_target",
           "voc_to_continuous", "xywh_to_xyxy"]

#: Label of padding rows in a fixed-size target.
PAD_LABEL = -1
#: Coordinate conventions a source may use (see the module docstring).
BOX_CONVENTIONS = ("voc", "continuous", "xywh")


def voc_to_continuous(boxes: np.ndarray) -> np.ndarray:
    """VOC 1-based inclusive ``[x1, y1, x2, y2]`` → 0-based continuous (``x1 − 1, y1 − 1, x2, y2``)."""
    b = np.asarray(boxes, dtype=np.float32).reshape(-1, 4).copy()
    b[:, :2] -= 1.0
    return b


def xywh_to_xyxy(boxes: np.ndarray) -> np.ndarray:
    """COCO json ``[x, y, w, h]`` → ``[x1, y1, x2, y2]`` (both 0-based continuous)."""
    b = np.asarray(boxes, dtype=np.float32).reshape(-1, 4).copy()
    b[:, 2:] += b[:, :2]
    return b


def to_continuous(boxes: np.ndarray, convention: str) -> np.ndarray:
    """Boxes of a named ``convention`` (:data:`BOX_CONVENTIONS`) as 0-based continuous xyxy."""
    if convention == "voc":
        return voc_to_continuous(boxes)
    if convention == "xywh":
        return xywh_to_xyxy(boxes)
    if convention == "continuous":
        return np.asarray(boxes, dtype=np.float32).reshape(-1, 4).copy()
    raise DataError(f"unknown box convention {convention!r}; valid: {list(BOX_CONVENTIONS)}")


def scale_boxes(boxes: np.ndarray, sx: float, sy: float, width: float, height: float) -> np.ndarray:
    """Continuous boxes scaled by ``(sx, sy)`` and clipped to a ``width x height`` image."""
    b = np.asarray(boxes, dtype=np.float32).reshape(-1, 4) * np.array([sx, sy, sx, sy], dtype=np.float32)
    b[:, 0::2] = b[:, 0::2].clip(0, width)
    b[:, 1::2] = b[:, 1::2].clip(0, height)
    return b


def pad_target(boxes: np.ndarray, labels: np.ndarray, max_boxes: int, what: str = "image") -> dict[str, Tensor]:
    """``{"boxes": [max_boxes, 4], "labels": [max_boxes]}`` with :data:`PAD_LABEL` rows after the real ones."""
    n = len(labels)
    if n > max_boxes:
        raise DataError(f"{what} has {n} boxes, more than max_boxes={max_boxes}; raise the dataset option "
                        "max_boxes (--data-option max_boxes=N)")
    b = torch.zeros(max_boxes, 4, dtype=torch.float32)
    y = torch.full((max_boxes,), PAD_LABEL, dtype=torch.int64)
    if n:
        b[:n] = torch.as_tensor(np.asarray(boxes, dtype=np.float32).reshape(-1, 4))
        y[:n] = torch.as_tensor(np.asarray(labels, dtype=np.int64))
    return {"boxes": b, "labels": y}


def unpad_target(target: dict[str, Tensor]) -> list[dict[str, Tensor]]:
    """A batched padded target → one ``{"boxes", "labels"}`` dict per image, padding removed."""
    boxes, labels = target["boxes"], target["labels"]
    if boxes.dim() != 3 or labels.dim() != 2:
        raise DataError(f"detection targets must be batched boxes [B, M, 4] and labels [B, M], got "
                        f"{tuple(boxes.shape)} and {tuple(labels.shape)}")
    out = []
    for b, y in zip(boxes, labels):
        keep = y != PAD_LABEL
        out.append({"boxes": b[keep], "labels": y[keep]})
    return out

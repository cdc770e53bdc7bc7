"""Anchor-free (FCOS-style) head outputs: decoding, training loss and the SNN-vs-ANN divergence.

The spiking part of such a detector returns, per pyramid level, class logits ``[B, C, H, W]``,
raw box regressions ``[B, 4, H, W]`` and centerness logits ``[B, 1, H, W]`` as
``{"cls": (...), "box": (...), "ctr": (...)}``. Everything here runs in floating point on the
time-averaged outputs: location grid, ``ltrb = exp(raw)·stride`` (Tian et al. 2019), scores
``sqrt(sigmoid(cls)·sigmoid(ctr))``, top-k, clipping and class-wise NMS (torchvision ``batched_nms``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torchvision.ops import batched_nms, generalized_box_iou_loss, sigmoid_focal_loss

from adacal.detection.boxes import PAD_LABEL
from adacal.errors import ShapeError

__all__ = ["FCOSDecoder", "bernoulli_symmetric_kl", "centerness_target", "level_points"]

_MAX_LOG = math.log(1000.0)  # exp(raw) is clamped here: a wild early SNN step cannot overflow


def level_points(h: int, w: int, stride: int, device: torch.device | None = None) -> Tensor:
    """Centres ``[(x, y)]`` of an ``h x w`` feature map's cells in image pixels, row-major ``[h·w, 2]``."""
    ys = (torch.arange(h, device=device, dtype=torch.float32) + 0.5) * stride
    xs = (torch.arange(w, device=device, dtype=torch.float32) + 0.5) * stride
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    return torch.stack([xx.reshape(-1), yy.reshape(-1)], dim=1)


def centerness_target(ltrb: Tensor) -> Tensor:
    """FCOS centerness ``sqrt(min(l,r)/max(l,r) · min(t,b)/max(t,b))`` of positive distances ``[..., 4]``."""
    lr, tb = ltrb[..., [0, 2]], ltrb[..., [1, 3]]
    ratio = (lr.min(-1).values / lr.max(-1).values.clamp(min=1e-6)) * (tb.min(-1).values /
                                                                     tb.max(-1).values.clamp(min=1e-6))
    return ratio.clamp(min=0).sqrt()


def bernoulli_symmetric_kl(p_logits: Tensor, q_logits: Tensor) -> Tensor:
    """½[KL(P‖Q) + KL(Q‖P)] of independent Bernoulli(sigmoid) outputs, averaged over every element."""
    p, q = p_logits.double(), q_logits.double()
    return 0.5 * ((torch.sigmoid(p) - torch.sigmoid(q)) * (p - q)).mean()


@dataclass(frozen=True)
class FCOSDecoder:
    """Geometry and post-processing of an FCOS-style head (see the module docstring).

    ``ranges``: the largest box side distance each level is trained for (level k takes objects with
    ``ranges[k] <= max(l, t, r, b) < ranges[k + 1]``); ``center_radius``: positive locations lie
    within this many strides of a box centre.
    """

    num_classes: int
    strides: tuple[int, ...] = (8, 16, 32)
    ranges: tuple[float, ...] = (0.0, 48.0, 96.0, math.inf)
    center_radius: float = 1.5
    score_thresh: float = 0.05
    nms_thresh: float = 0.6
    topk: int = 1000
    max_detections: int = 100
    name: str = "fcos"
    #: Work actually done by :meth:`detections` since the last :meth:`reset_counts` (for the energy model).
    counts: dict[str, int] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        if len(self.ranges) != len(self.strides) + 1:
            raise ShapeError(f"FCOSDecoder needs len(ranges) == len(strides) + 1, got {self.ranges} for "
                             f"strides {self.strides}")

    # ------------------------------------------------------------------ structure
    def check(self, outputs: Any, what: str = "model") -> None:
        """Raise :class:`ShapeError` unless ``outputs`` are this head's per-level maps."""
        ok = isinstance(outputs, dict) and set(outputs) == {"cls", "box", "ctr"} and all(
            isinstance(outputs[k], (tuple, list)) and len(outputs[k]) == len(self.strides) for k in outputs)
        if ok:
            ok = all(c.dim() == 4 and c.shape[1] == self.num_classes and b.shape[1] == 4 and t.shape[1] == 1
                     for c, b, t in zip(outputs["cls"], outputs["box"], outputs["ctr"]))
        if not ok:
            from adacal.inputs import describe

            raise ShapeError(f"{what} outputs {describe(outputs)}; an FCOS head with {len(self.strides)} levels "
                             f"returns {{'cls': [B, {self.num_classes}, H, W] x{len(self.strides)}, 'box': [B, 4, H, W]"
                             f" x{len(self.strides)}, 'ctr': [B, 1, H, W] x{len(self.strides)}}}")

    def image_size(self, outputs: dict[str, Any]) -> tuple[int, int]:
        """Input ``(H, W)`` implied by the first level's map and stride."""
        h, w = outputs["cls"][0].shape[-2:]
        return int(h) * self.strides[0], int(w) * self.strides[0]

    def _flat(self, outputs: dict[str, Any]) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
        """Per-location ``cls [B, P, C]``, ``box [B, P, 4]``, ``ctr [B, P]``, points ``[P, 2]``, strides ``[P]``."""
        cls, box, ctr, pts, st = [], [], [], [], []
        for c, b, t, s in zip(outputs["cls"], outputs["box"], outputs["ctr"], self.strides):
            B, C, H, W = c.shape
            cls.append(c.permute(0, 2, 3, 1).reshape(B, H * W, C))
            box.append(b.permute(0, 2, 3, 1).reshape(B, H * W, 4))
            ctr.append(t.reshape(B, H * W))
            pts.append(level_points(H, W, s, c.device))
            st.append(torch.full((H * W,), float(s), device=c.device))
        return torch.cat(cls, 1), torch.cat(box, 1), torch.cat(ctr, 1), torch.cat(pts), torch.cat(st)

    def boxes(self, raw: Tensor, points: Tensor, strides: Tensor) -> Tensor:
        """Boxes ``[..., 4]`` from raw regressions: ``ltrb = exp(raw)·stride`` around each point."""
        ltrb = raw.float().clamp(max=_MAX_LOG).exp() * strides[:, None]
        return torch.cat([points - ltrb[..., :2], points + ltrb[..., 2:]], dim=-1)

    # ------------------------------------------------------------------ inference
    @torch.no_grad()
    def detections(self, outputs: dict[str, Any]) -> list[dict[str, Tensor]]:
        """Kept detections per image: ``{"boxes" [K, 4], "scores" [K], "labels" [K]}`` (after NMS)."""
        cls, box, ctr, pts, st = self._flat(outputs)
        H, W = self.image_size(outputs)
        scores = (torch.sigmoid(cls.float()) * torch.sigmoid(ctr.float())[..., None]).sqrt()
        out = []
        for b in range(cls.shape[0]):
            s = scores[b].flatten()
            keep = (s > self.score_thresh).nonzero().squeeze(1)
            if keep.numel() > self.topk:
                keep = keep[s[keep].topk(self.topk).indices]
            loc, lab = keep // self.num_classes, keep % self.num_classes
            bx = self.boxes(box[b, loc], pts[loc], st[loc])
            bx[:, 0::2] = bx[:, 0::2].clamp(0, W)
            bx[:, 1::2] = bx[:, 1::2].clamp(0, H)
            n = int(keep.numel())
            for key, v in (("decodes", 1), ("candidates", n), ("pairs", n * (n - 1) // 2)):
                self.counts[key] = self.counts.get(key, 0) + v
            k = batched_nms(bx, s[keep], lab, self.nms_thresh)[: self.max_detections]
            out.append({"boxes": bx[k], "scores": s[keep][k], "labels": lab[k]})
        return out

    def reset_counts(self) -> None:
        self.counts.clear()

    def analog_ops(self, outputs: dict[str, Any]) -> list[dict[str, Any]]:
        """Floating-point work outside the SNN per decoded image, as MAC-equivalent operation counts.

        Scores: sigmoid (counted as 4 ops) of every class and centerness logit, a product and a square
        root per class and location; box decoding of each candidate above the score threshold (exp,
        scale, 4 adds, clip: 16 ops); NMS: one IoU (≈ 12 ops) per candidate pair. Candidates and pairs
        are the mean measured since :meth:`reset_counts`; before any decoding, the ``topk`` bound.
        """
        P = sum(int(c.shape[-2]) * int(c.shape[-1]) for c in outputs["cls"])
        C = self.num_classes
        n = self.counts.get("decodes", 0)
        k = self.counts["candidates"] / n if n else min(self.topk, P * C)
        pairs = self.counts["pairs"] / n if n else k * (k - 1) / 2
        return [{"name": "scores", "macs": P * (4 * C + 4 + 2 * C)},
                {"name": "box_decode", "macs": 16 * k},
                {"name": "nms", "macs": 12 * pairs}]

    # ------------------------------------------------------------------ training
    def targets(self, outputs: dict[str, Any], target: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """FCOS assignment: per location the class (``-1``: background), its GT box ``[B, P, 4]`` and
        centerness target. A location is positive for the smallest box whose centre region (within
        ``center_radius`` strides) holds it and whose largest side distance fits the level's range."""
        _, _, _, pts, st = self._flat(outputs)
        lo = torch.cat([torch.full((int(c.shape[-2] * c.shape[-1]),), self.ranges[i], device=pts.device)
                        for i, c in enumerate(outputs["cls"])])
        hi = torch.cat([torch.full((int(c.shape[-2] * c.shape[-1]),), self.ranges[i + 1], device=pts.device)
                        for i, c in enumerate(outputs["cls"])])
        gt, lab = target["boxes"].float(), target["labels"]  # [B, M, 4], [B, M]
        x, y = pts[None, :, None, 0], pts[None, :, None, 1]  # [1, P, 1]
        ltrb = torch.stack([x - gt[:, None, :, 0], y - gt[:, None, :, 1], gt[:, None, :, 2] - x,
                            gt[:, None, :, 3] - y], dim=-1)  # [B, P, M, 4]
        cx, cy = (gt[..., 0] + gt[..., 2]) / 2, (gt[..., 1] + gt[..., 3]) / 2
        r = self.center_radius * st[None, :, None]
        near = ((x - cx[:, None]).abs() < r) & ((y - cy[:, None]).abs() < r)
        side = ltrb.max(-1).values
        ok = (ltrb.min(-1).values > 0) & near & (side >= lo[None, :, None]) & (side < hi[None, :, None])
        ok &= (lab != PAD_LABEL)[:, None, :]
        area = ((gt[..., 2] - gt[..., 0]) * (gt[..., 3] - gt[..., 1]))[:, None, :].expand_as(ok)
        area = torch.where(ok, area, torch.full_like(area, math.inf))
        best_area, best = area.min(-1)  # [B, P]
        pos = torch.isfinite(best_area)
        cls_t = torch.where(pos, lab.gather(1, best), torch.full_like(best, -1))
        box_t = gt.gather(1, best[..., None].expand(-1, -1, 4))
        ctr_t = centerness_target(ltrb.gather(2, best[..., None, None].expand(-1, -1, 1, 4)).squeeze(2).clamp(min=0))
        return cls_t, box_t, ctr_t

    def loss(self, outputs: dict[str, Any], target: dict[str, Tensor]) -> Tensor:
        """Focal loss (classes) + centerness-weighted GIoU (boxes) + BCE (centerness), per positive."""
        cls, box, ctr, pts, st = self._flat(outputs)
        cls_t, box_t, ctr_t = self.targets(outputs, target)
        pos = cls_t >= 0
        n_pos = max(float(pos.sum()), 1.0)
        onehot = torch.zeros_like(cls)
        onehot[pos] = F.one_hot(cls_t[pos], self.num_classes).to(cls.dtype)
        l_cls = sigmoid_focal_loss(cls.float(), onehot.float(), reduction="sum") / n_pos
        if not bool(pos.any()):
            return l_cls + 0.0 * (box.sum() + ctr.sum())
        pred = self.boxes(box[pos], pts.expand(cls.shape[0], -1, -1)[pos], st.expand(cls.shape[0], -1)[pos])
        w = ctr_t[pos]
        l_box = (generalized_box_iou_loss(pred, box_t[pos], reduction="none") * w).sum() / w.sum().clamp(min=1e-6)
        l_ctr = F.binary_cross_entropy_with_logits(ctr[pos].float(), w, reduction="sum") / n_pos
        return l_cls + l_box + l_ctr

    # ------------------------------------------------------------------ profiling
    def divergence(self, ann: dict[str, Any], snn: dict[str, Any]) -> Tensor:
        """Symmetric Bernoulli KL of class and centerness probabilities plus the squared error of the
        raw box regressions, summed over levels (the sensitivity score of a layer setting)."""
        total = torch.zeros((), dtype=torch.float64)
        for a, s in zip(ann["cls"], snn["cls"]):
            total = total + bernoulli_symmetric_kl(a, s)
        for a, s in zip(ann["ctr"], snn["ctr"]):
            total = total + bernoulli_symmetric_kl(a, s)
        for a, s in zip(ann["box"], snn["box"]):
            total = total + (a.double() - s.double()).pow(2).mean()
        return total

    def describe(self) -> dict[str, Any]:
        return {"decoder": self.name, "strides": list(self.strides), "score_thresh": self.score_thresh,
                "nms_thresh": self.nms_thresh, "topk": self.topk, "max_detections": self.max_detections}

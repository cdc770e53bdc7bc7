"""Box pictures: ground truth and each model's kept detections (class and score) on the same images.

``pack_examples`` keeps what a picture needs as fixed-size numpy arrays (so a sweep can store them
in one ``.npz``); ``draw_panels`` draws rows of images x columns of sources; ``task_figures`` is
the report's entry point. matplotlib only (Agg), never ``plt.show()``.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

__all__ = ["draw_panels", "pack_examples", "task_figures"]

log = logging.getLogger(__name__)

#: Detections kept per image in stored examples (the decoder keeps at most 100).
MAX_KEPT = 100
#: Detections drawn below this score are left out of pictures (they would hide everything).
DRAW_SCORE = 0.5
_IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
_COLOURS = ("#e6194b", "#3cb44b", "#4363d8", "#f58231", "#911eb4", "#42d4f4", "#f032e6", "#bfef45", "#fabed4",
            "#469990")


def _pad(values: Sequence[Tensor], size: int, trailing: tuple[int, ...], fill: float) -> np.ndarray:
    out = np.full((len(values), size, *trailing), fill, dtype=np.float32)
    for i, v in enumerate(values):
        n = min(size, len(v))
        out[i, :n] = v[:n].detach().float().cpu().numpy().reshape(n, *trailing)
    return out


def pack_examples(x: Tensor, dets: Sequence[Mapping[str, Tensor]], gts: Sequence[Mapping[str, Tensor]], *,
                  mean: Sequence[float] | None = None, std: Sequence[float] | None = None) -> dict[str, np.ndarray]:
    """Images as uint8 HWC (normalisation undone) with detections and GT padded to fixed sizes."""
    m = torch.tensor(mean or _IMAGENET[0], dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    s = torch.tensor(std or _IMAGENET[1], dtype=x.dtype, device=x.device).view(1, -1, 1, 1)
    img = ((x * s + m).clamp(0, 1) * 255).round().byte().permute(0, 2, 3, 1).cpu().numpy()
    n_gt = max([len(g["labels"]) for g in gts] + [1])
    return {
        "image": img,
        "det_boxes": _pad([d["boxes"] for d in dets], MAX_KEPT, (4,), 0.0),
        "det_scores": _pad([d["scores"] for d in dets], MAX_KEPT, (), -1.0),
        "det_labels": _pad([d["labels"] for d in dets], MAX_KEPT, (), -1.0),
        "gt_boxes": _pad([g["boxes"] for g in gts], max(n_gt, 100), (4,), 0.0),
        "gt_labels": _pad([g["labels"] for g in gts], max(n_gt, 100), (), -1.0),
    }


def _draw(ax: Any, image: np.ndarray, boxes: np.ndarray, labels: np.ndarray, scores: np.ndarray | None,
          classes: Sequence[str], title: str) -> None:
    from matplotlib.patches import Rectangle

    ax.imshow(image)
    ax.set_xticks([])
    ax.set_yticks([])
    ax.set_title(title, fontsize=9)
    for i, (b, c) in enumerate(zip(boxes, labels)):
        if c < 0 or (scores is not None and scores[i] < DRAW_SCORE):
            continue
        colour = _COLOURS[int(c) % len(_COLOURS)]
        ax.add_patch(Rectangle((b[0], b[1]), b[2] - b[0], b[3] - b[1], fill=False, lw=1.2, edgecolor=colour))
        name = classes[int(c)] if int(c) < len(classes) else str(int(c))
        text = name if scores is None else f"{name} {scores[i]:.2f}"
        ax.text(b[0], b[1], text, fontsize=5, color="white", va="bottom",
                bbox={"facecolor": colour, "alpha": 0.7, "pad": 0.5, "lw": 0})


def draw_panels(columns: Sequence[tuple[str, Mapping[str, np.ndarray]]], path: str | Path, *,
                classes: Sequence[str] = (), rows: int | None = None, counts: bool = True) -> Path:
    """One row per image, one column per source ``(title, examples)``; the first column's images.

    A source with ``det_*`` arrays draws detections (score ≥ :data:`DRAW_SCORE`); one with only
    ``gt_*`` draws ground truth. ``counts``: titles say how many boxes are drawn and their mean score.
    """
    from matplotlib.figure import Figure

    from adacal.report.plots import save_figure

    n = min(len(c[1]["image"]) for c in columns)
    n = n if rows is None else min(n, rows)
    h, w = columns[0][1]["image"].shape[1:3]
    fig = Figure(figsize=(2.6 * len(columns), 2.6 * n * h / w + 0.3))
    axes = fig.subplots(n, len(columns), squeeze=False)
    for r in range(n):
        for k, (title, ex) in enumerate(columns):
            img = columns[0][1]["image"][r]
            if "det_boxes" in ex:
                sc = ex["det_scores"][r]
                shown = sc >= DRAW_SCORE
                label = f"{title}\n{int(shown.sum())} boxes, mean score {sc[shown].mean():.2f}" if counts and \
                    shown.any() else f"{title}\n0 boxes ≥ {DRAW_SCORE}"
                _draw(axes[r][k], img, ex["det_boxes"][r], ex["det_labels"][r], sc, classes, label)
            else:
                lab = ex["gt_labels"][r]
                _draw(axes[r][k], img, ex["gt_boxes"][r], lab, None, classes,
                      f"{title}\n{int((lab >= 0).sum())} boxes" if counts else title)
    fig.tight_layout()
    return save_figure(fig, Path(path))


def task_figures(results: Mapping[str, Any], folder: Path, *, classes: Sequence[str]) -> dict[str, tuple[Path, str]]:
    """Ground truth beside every run whose examples were kept (a sweep keeps them per run)."""
    runs = [r for r in results.get("runs", []) if r.get("examples") and not r.get("iat")]
    if not runs:
        return {}
    big = max(int(r["timesteps"]) for r in runs)
    runs = [r for r in runs if int(r["timesteps"]) == big][:3]  # a few columns: the runs at the largest T
    loaded = []
    for r in runs:
        p = folder / str(r["examples"])
        if not p.is_file():
            log.info("examples of %s not found at %s; no box pictures", r["name"], p)
            continue
        with np.load(p) as z:
            loaded.append((r["name"], {k: z[k] for k in z.files}))
    if not loaded:
        return {}
    pick = loaded
    gt = {"image": pick[0][1]["image"], "gt_boxes": pick[0][1]["gt_boxes"], "gt_labels": pick[0][1]["gt_labels"]}
    path = draw_panels([("ground truth", gt), *pick], folder / "detections.png", classes=classes)
    return {"detections": (path, "Ground truth and kept detections (score ≥ 0.5, class and score) on the first "
                                 "test images")}

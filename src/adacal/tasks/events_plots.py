"""The event task's report picture: each test recording as its accumulated frame and as slices in time."""
from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure

from adacal.errors import DataError

__all__ = ["event_rgb", "plot_event_examples"]


def event_rgb(counts: np.ndarray) -> np.ndarray:
    """``[P, H, W]`` event counts as an RGB image: ON (channel 1) red, OFF (channel 0) blue, on white.

    Stacked frames (``frames·2`` channels) and single-polarity data are summed per polarity first;
    each image is scaled to its own maximum so sparse slices stay visible.
    """
    c = np.asarray(counts, dtype=np.float64)
    if c.ndim != 3:
        raise DataError(f"event image must be [channels, H, W], got shape {c.shape}")
    if c.shape[0] % 2 == 0:
        off, on = c[0::2].sum(0), c[1::2].sum(0)
    else:
        off, on = np.zeros(c.shape[1:]), c.sum(0)
    top = max(float(on.max()), float(off.max()), 1e-12)
    on, off = on / top, off / top
    return np.clip(np.stack([1 - off, 1 - on - off, 1 - on], axis=-1), 0.0, 1.0)


def plot_event_examples(examples: Mapping[str, Any], path: str | os.PathLike[str], *, title: str = "") -> Path:
    """Rows of samples: the accumulated frame, then the time slices; labels and predictions on the left."""
    from adacal.report.plots import save_figure

    frame, slices = np.asarray(examples["frame"]), np.asarray(examples["slices"])
    if frame.ndim != 4 or slices.ndim != 5 or len(frame) == 0:
        raise DataError("event examples need 'frame' [N, C, H, W] and 'slices' [N, S, C, H, W]")
    n, s = frame.shape[0], slices.shape[1]
    pred, target = examples.get("prediction"), examples.get("target")
    fig = Figure(figsize=(1.3 * (s + 1) + 0.6, 1.45 * n + 0.5), layout="constrained")
    axes = fig.subplots(n, s + 1, squeeze=False)
    for i in range(n):
        images = [frame[i], *slices[i]]
        for j, img in enumerate(images):
            ax = axes[i][j]
            ax.imshow(event_rgb(img), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title("frame" if j == 0 else f"slice {j}", fontsize=8)
        if pred is not None and target is not None:
            ok = int(pred[i]) == int(target[i])
            axes[i][0].set_ylabel(f"label {int(target[i])}\npred {int(pred[i])}", fontsize=8,
                                  color="black" if ok else "tab:red")
    if title:
        fig.suptitle(title, fontsize=9)
    return save_figure(fig, path)

"""Segmentation pictures for the report: predicted maps side by side, and IoU per class.

The comparison follows the seed's Figures 7-8: for a few fixed test images, the input, the
ground truth, the ANN, Calibration at its largest T and AdaFire at a quarter of that T (the
seed's equal-energy pair: 64 and 16), coloured with the dataset's palette. Runs are recognised by
their conversion records, not by method names: "Calibration" is a run with one spike per step in
every layer and a bias correction, "AdaFire" one whose φ (and nothing else) was searched.
Everything is read from the results and the ``examples/*.npz`` files the sweep saved next to them.
"""
from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from adacal.knobs import PHI
from adacal.report.plots import energy_unit, save_figure

__all__ = ["colorize", "comparison_runs", "per_image_miou", "plot_class_iou", "plot_comparison",
           "segmentation_figures"]

log = logging.getLogger(__name__)

#: Colour of void / unlabelled pixels (any label outside the classes).
VOID = (0, 0, 0)


def colorize(labels: np.ndarray, palette: Sequence[Sequence[int]]) -> np.ndarray:
    """``[H, W]`` class ids → ``[H, W, 3]`` uint8 colours; ids outside the palette (void) are black."""
    table = np.zeros((256, 3), dtype=np.uint8)
    table[: len(palette)] = np.asarray(palette, dtype=np.uint8)
    table[len(palette):] = VOID
    return table[np.clip(np.asarray(labels).astype(np.int64), 0, 255)]


def per_image_miou(prediction: np.ndarray, target: np.ndarray, num_classes: int, ignore_index: int | None) -> float:
    """One image's mIoU (%) over the classes present in its prediction or labels (torchmetrics)."""
    import torch
    from torchmetrics.functional.classification import multiclass_jaccard_index

    p = torch.as_tensor(np.asarray(prediction, dtype=np.int64))
    t = torch.as_tensor(np.asarray(target, dtype=np.int64))
    return 100.0 * float(multiclass_jaccard_index(p, t, num_classes, average="macro", ignore_index=ignore_index,
                                                  validate_args=False))


def _one_spike_calibrated(run: Mapping[str, Any]) -> bool:
    """SNN Calibration's kind of run: φ = 1 in every layer, bias (or potential) corrected."""
    conv = run.get("conversion") or {}
    phi = (conv.get("knobs") or {}).get(PHI.name) or {}
    return bool(phi) and all(v == 1 for v in phi.values()) and "correction" in (conv.get("stage_times") or {})


def _phi_searched(run: Mapping[str, Any]) -> bool:
    """AdaFire's kind of run: φ per layer from the Pareto search, no other knob searched."""
    return set((run.get("conversion") or {}).get("frontiers") or {}) == {PHI.name}


def comparison_runs(runs: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The runs the pictures compare: Calibration at its largest T, AdaFire at a quarter of that T
    (else the AdaFire run closest in energy). Fixed-T runs only; either may be missing."""
    fixed = [r for r in runs if not r.get("iat")]
    calib = [r for r in fixed if _one_spike_calibrated(r)]
    ada = [r for r in fixed if _phi_searched(r)]
    out: list[Mapping[str, Any]] = []
    if calib:
        c = max(calib, key=lambda r: int(r["timesteps"]))
        out.append(c)
        quarter = [r for r in ada if int(r["timesteps"]) == int(c["timesteps"]) // 4]
        if quarter:
            out.append(quarter[0])
        elif ada and c.get("energy_mj"):
            out.append(min(ada, key=lambda r: abs(float(r.get("energy_mj") or 0) - float(c["energy_mj"]))))
    elif ada:
        out.append(max(ada, key=lambda r: int(r["timesteps"])))
    return out


def _load(folder: Path, rel: Any) -> dict[str, np.ndarray] | None:
    if not isinstance(rel, str):
        return None
    path = folder / rel
    if not path.is_file():
        log.info("segmentation pictures: %s not found (report written to another folder?)", path)
        return None
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def plot_comparison(rows: Sequence[Mapping[str, Any]], columns: Sequence[tuple[str, str]], *, palette: Sequence[Any],
                    classes: Sequence[str], path: Path) -> Path:
    """One row per image: its input, then one coloured label map per column.

    ``rows[i]``: ``{"title": str, "image": [H, W, 3] uint8, key: [H, W] labels, key + "_note": str}``
    for every ``(key, heading)`` in ``columns``; a legend of the classes' colours goes below.
    """
    n, m = len(rows), 1 + len(columns)
    h, w = rows[0]["image"].shape[:2]
    cell = 2.4
    fig = Figure(figsize=(cell * m, cell * n * h / w + 0.9), layout="constrained")
    axes = fig.subplots(n, m, squeeze=False)
    for i, row in enumerate(rows):
        axes[i, 0].imshow(row["image"])
        axes[i, 0].set_ylabel(row["title"], fontsize=8)
        for j, (key, _) in enumerate(columns, 1):
            axes[i, j].imshow(colorize(row[key], palette), interpolation="nearest")
            note = row.get(f"{key}_note")
            if note:
                axes[i, j].set_xlabel(note, fontsize=7, labelpad=2)
        for j, heading in enumerate(["input", *(c[1] for c in columns)]):
            if i == 0:
                axes[i, j].set_title(heading, fontsize=8)
            axes[i, j].set_xticks([])
            axes[i, j].set_yticks([])
    handles = [Patch(facecolor=np.asarray(c) / 255.0, edgecolor="0.5", label=name) for name, c in zip(classes, palette)]
    handles.append(Patch(facecolor=np.asarray(VOID) / 255.0, edgecolor="0.5", label="void (ignored)"))
    fig.legend(handles=handles, loc="outside lower center", ncol=min(6, len(handles)), fontsize=7, frameon=False)
    fig.get_layout_engine().set(w_pad=0.02, h_pad=0.02, wspace=0.01, hspace=0.01)
    return save_figure(fig, path)


def plot_class_iou(series: Sequence[tuple[str, Sequence[float]]], classes: Sequence[str], path: Path) -> Path:
    """Grouped bars: IoU (%) per class for each ``(label, values)`` series."""
    fig = Figure(figsize=(max(6.0, 0.75 * len(classes) + 1.5), 3.6))
    ax = fig.subplots()
    k = len(series)
    x = np.arange(len(classes))
    width = 0.8 / max(1, k)
    for i, (label, values) in enumerate(series):
        ax.bar(x + (i - (k - 1) / 2) * width, values, width, label=label)
    ax.set_xticks(x)
    ax.set_xticklabels(classes, rotation=30, ha="right", fontsize=8)
    ax.set_ylabel("IoU (%)")
    ax.set_ylim(0, 100)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, ncol=min(4, k))
    fig.tight_layout()
    return save_figure(fig, path)


def _heading(run: Mapping[str, Any], unit: tuple[float, str]) -> str:
    name = str(run["method"])
    e = run.get("energy_mj")
    energy = "" if e is None else f", {float(e) / unit[0]:.3g} {unit[1]}"
    miou = (run.get("metrics") or {}).get("miou")
    head = f"{name} T={run['timesteps']}"
    return f"{head}\ntest mIoU {miou:.1f}{energy}" if miou is not None else head


def segmentation_figures(results: Mapping[str, Any], folder: Path, *, num_classes: int, classes: Sequence[str],
                         palette: Sequence[Any] | None, ignore_index: int | None) -> dict[str, tuple[Path, str]]:
    """The report's segmentation pictures: ``{key: (png, caption)}`` for what the results support."""
    out: dict[str, tuple[Path, str]] = {}
    classes = list(classes) or [str(i) for i in range(num_classes)]
    if palette is None or len(palette) < num_classes:
        from matplotlib import colormaps

        cmap = colormaps["tab20"]
        palette = [tuple(int(255 * c) for c in cmap(i % 20)[:3]) for i in range(num_classes)]
    runs = list(results.get("runs") or [])
    chosen = comparison_runs(runs)
    ann = results.get("ann") or {}
    energies = [float(r["energy_mj"]) for r in chosen if r.get("energy_mj")]
    if ann.get("energy_mj"):
        energies.append(float(ann["energy_mj"]))
    unit = energy_unit(energies) if energies else (1.0, "mJ")

    series = []
    if isinstance((ann.get("metrics") or {}).get("iou_per_class"), list):
        series.append(("ANN", ann["metrics"]["iou_per_class"]))
    for r in chosen:
        if isinstance((r.get("metrics") or {}).get("iou_per_class"), list):
            series.append((_heading(r, unit).split("\n")[0], r["metrics"]["iou_per_class"]))
    if series:
        path = plot_class_iou(series, classes, folder / "segmentation_class_iou.png")
        out["segmentation_class_iou"] = (path, "IoU of every class on the whole test set (one confusion matrix "
                                               "per run), for the ANN and the runs pictured below.")

    ann_note = f"\ntest mIoU {ann['metrics']['miou']:.1f}" if "miou" in (ann.get("metrics") or {}) else ""
    if ann_note and ann.get("energy_mj"):
        ann_note += f", {float(ann['energy_mj']) / unit[0]:.3g} {unit[1]}"
    columns_data = [("ann", "ANN" + ann_note, _load(folder, ann.get("examples")))]
    columns_data += [(str(r["name"]), _heading(r, unit), _load(folder, r.get("examples"))) for r in chosen]
    columns_data = [c for c in columns_data if c[2] is not None]
    if not columns_data:
        return out
    base = columns_data[0][2]
    assert base is not None
    order = [int(i) for i in base.get("index", np.arange(len(base["image"])))]
    rows = []
    for pos, idx in enumerate(order):
        row: dict[str, Any] = {"title": f"test image {idx}", "image": base["image"][pos], "target": base["target"][pos]}
        for key, _, data in columns_data:
            assert data is not None
            where = np.flatnonzero(np.asarray(data.get("index", np.arange(len(data["image"])))) == idx)
            if where.size == 0:
                break
            pred = data["prediction"][where[0]]
            row[key] = pred
            row[f"{key}_note"] = f"image mIoU {per_image_miou(pred, row['target'], num_classes, ignore_index):.1f}"
        else:
            rows.append(row)
    if not rows:
        return out
    columns = [("target", "ground truth"), *((k, h) for k, h, _ in columns_data)]
    path = plot_comparison(rows, columns, palette=palette, classes=classes, path=folder / "segmentation_examples.png")
    pair = " against ".join(h.split("\n")[0] for _, h, _ in columns_data[1:])
    out["segmentation_examples"] = (path, "Fixed test images: input, ground truth and the predicted maps"
                                          + (f" ({pair}; the seed's Figures 7-8 compare such an equal-energy pair)"
                                             if pair else "") + ". Under each map: that image's own mIoU.")
    return out

"""Plots of the diagnostics: conversion-error decomposition per layer, sensitivity vs accuracy.

Same conventions as :mod:`adacal.report.plots`: plain functions taking the JSON-safe results of
:mod:`adacal.diagnostics`, drawing on an Agg figure, saved atomically; never shown.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from matplotlib.axes import Axes

from adacal.report.plots import PathLike, _finish, _layer_ticks, _new_axes, _require

__all__ = ["plot_error_decomposition", "plot_sensitivity_correlation", "ERROR_PARTS"]

#: The parts of :func:`adacal.diagnostics.error_decomposition`, in stacking order.
ERROR_PARTS = ("clipping", "quantisation", "propagated", "unevenness")


def plot_error_decomposition(rows: Sequence[Mapping[str, Any]], *, path: PathLike | None = None, ax: Axes | None = None,
                             title: str = "Conversion error per layer") -> Axes:
    """Grouped bars of each error part (mean squared error, log scale) per layer, plus the total."""
    _require(len(rows) > 0, "error decomposition rows")
    fig = None
    if ax is None:
        fig, ax = _new_axes((max(6.5, 0.55 * len(rows) + 2.5), 4.2))
    names = [str(r["layer"]) for r in rows]
    parts = (*ERROR_PARTS, "total")
    width = 0.8 / len(parts)
    positive = [float(r[p]) for r in rows for p in parts if float(r[p]) > 0]
    # exact zeros (e.g. no propagated error in the first layer) would vanish on a log axis:
    # they are drawn as stubs at the floor, a decade below the smallest real value
    floor = min(positive) / 10 if positive else 1e-12
    for k, part in enumerate(parts):
        xs = [i + (k - (len(parts) - 1) / 2) * width for i in range(len(rows))]
        ys = [max(float(r[part]), floor) for r in rows]
        style = {"color": "0.2", "hatch": "//", "fill": False} if part == "total" else {}
        ax.bar(xs, ys, width=width, label=part, **style)
    ax.set_yscale("log")
    ax.set_ylim(bottom=floor / 2)
    _layer_ticks(ax, names)
    ax.set_ylabel("mean squared error (log; floor = zero)")
    ax.set_title(title)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.grid(axis="y", alpha=0.3)
    _finish(fig, path)
    return ax


def plot_sensitivity_correlation(
    result: Mapping[str, Any], *, path: PathLike | None = None, ax: Axes | None = None,
) -> Axes:
    """Scatter of total sensitivity vs accuracy for random settings, with the three correlations."""
    points = result.get("points") or []
    _require(len(points) > 0, "sensitivity-correlation points")
    fig = None
    if ax is None:
        fig, ax = _new_axes((6.0, 4.2))
    xs = [float(p["sensitivity"]) for p in points]
    ys = [float(p["accuracy"]) for p in points]
    ax.scatter(xs, ys, s=28, alpha=0.8)
    if min(xs) > 0 and max(xs) / min(xs) > 50:
        ax.set_xscale("log")
    ax.set_xlabel(f"total sensitivity Σ S_i ({result.get('knob', 'knob')} settings, sym. KL)")
    ax.set_ylabel("accuracy (%)")
    ax.set_title(f"Pearson {result['pearson']:.3f}  Spearman {result['spearman']:.3f}  "
                 f"Kendall {result['kendall']:.3f}", fontsize=10)
    ax.grid(alpha=0.3)
    _finish(fig, path)
    return ax

"""Plots of conversion results: plain functions that take data and an output path or an Axes.

Every function accepts the JSON-safe structures adacal writes (see ``docs/results_schema.md``), so
a report can be redrawn from a saved ``summary.json`` without torch. Figures are built with
:class:`matplotlib.figure.Figure` directly and rendered by the Agg canvas: no ``pyplot``, no
global figure registry, no backend switch, nothing is ever shown on screen.

Each ``plot_*`` function draws into ``ax`` (or ``axes``) when given and returns it; otherwise it
creates a figure, and if ``path`` is given saves it there atomically (temp file + ``os.replace``)
as PNG. Missing or empty data raises :class:`~adacal.errors.DataError` naming what is missing.

Example:
    >>> from adacal.report.plots import plot_exit_histogram
    >>> plot_exit_histogram([120, 40, 10, 2], path="runs/demo/iat_exits.png")  # doctest: +SKIP
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import FixedLocator, NullFormatter, NullLocator, PercentFormatter

from adacal.atomic import atomic_write
from adacal.errors import DataError

__all__ = ["energy_unit", "plot_exit_histogram", "plot_iat_curve", "plot_layer_energy", "plot_layer_settings",
           "plot_metric_vs_energy", "plot_metric_vs_timesteps", "plot_pareto", "save_figure"]

PathLike = str | os.PathLike[str]

#: Resolution of saved PNGs (dots per inch).
DPI = 110
#: Long layer names are shortened to this many characters on tick labels (the full name stays in JSON).
MAX_TICK_CHARS = 22
#: A positive series whose max/min ratio exceeds this is drawn on a log axis.
LOG_SCALE_RATIO = 50.0

_ANN_STYLE: dict[str, Any] = {"color": "0.25", "linestyle": "--", "linewidth": 1.2}
_MARKERS = ("o", "s", "^", "v", "P", "X", "h")
_ENERGY_UNITS = ((1.0, "mJ"), (1e-3, "µJ"), (1e-6, "nJ"), (1e-9, "pJ"))


# --------------------------------------------------------------------------------------- helpers
def save_figure(fig: Figure, path: PathLike) -> Path:
    """Save ``fig`` as PNG to ``path`` atomically (temp file in the same folder, then ``os.replace``)."""
    return atomic_write(path, lambda f: fig.savefig(f, format="png", dpi=DPI, bbox_inches="tight"))


def _new_axes(figsize: tuple[float, float]) -> tuple[Figure, Axes]:
    fig = Figure(figsize=figsize, layout="constrained")
    return fig, fig.add_subplot()


def _finish(fig: Figure | None, path: PathLike | None) -> None:
    if fig is not None and path is not None:
        save_figure(fig, path)


def _done(ax: Axes, fig: Figure | None, path: PathLike | None, title: str, *, grid: str = "both",
          legend: str | None = "best") -> Axes:
    """The common ending: title, grid, legend (unless None), then save when the figure is ours."""
    ax.set_title(title)
    ax.grid(True, axis=grid, alpha=0.3)
    if legend is not None:
        ax.legend(fontsize=8, loc=legend)
    _finish(fig, path)
    return ax


def energy_unit(values_mj: Sequence[float]) -> tuple[float, str]:
    """The unit in which the largest of ``values_mj`` (millijoules) reads as a number >= 1.

    Returns ``(scale, name)``: multiply a value in mJ by ``1/scale`` to express it in ``name``.
    """
    top = max((abs(v) for v in values_mj if math.isfinite(v)), default=0.0)
    for scale, name in _ENERGY_UNITS:
        if top >= scale:
            return scale, name
    return _ENERGY_UNITS[-1]


def _annotate_sparse(
    ax: Axes, points: Sequence[tuple[float, float, str, Any]], *, min_dx: float = 0.07, min_dy: float = 0.045
) -> None:
    """Label points, skipping any label that would sit within (min_dx, min_dy) axes-fractions of one
    already placed (positions are measured with the axes' final limits and scales)."""
    x0, x1 = ax.get_xlim()
    y0, y1 = ax.get_ylim()
    logx = ax.get_xscale() == "log"

    def frac(v: float, lo: float, hi: float, log: bool) -> float:
        if log:
            return (math.log(v) - math.log(lo)) / ((math.log(hi) - math.log(lo)) or 1.0) if v > 0 else 0.0
        return (v - lo) / ((hi - lo) or 1.0)

    placed: list[tuple[float, float]] = []
    for x, y, text, color in points:
        u, v = frac(x, x0, x1, logx), frac(y, y0, y1, False)
        if any(abs(u - pu) < min_dx and abs(v - pv) < min_dy for pu, pv in placed):
            continue
        placed.append((u, v))
        ax.annotate(text, (x, y), textcoords="offset points", xytext=(4, -10), fontsize=6, color=color)


def _metric_axis(ax: Axes, label: str) -> None:
    """Keep a percentage axis inside [0, 100] (plus a sliver of margin) and at least 1 point tall."""
    ax.set_ylabel(label)
    if "%" not in label:
        return
    lo, hi = ax.get_ylim()
    lo, hi = max(lo, -0.5), min(hi, 100.5)
    if hi - lo < 1.0:
        mid = (hi + lo) / 2
        lo, hi = max(-0.5, mid - 0.5), min(100.5, mid + 0.5)
    ax.set_ylim(lo, hi)


def _short(name: str) -> str:
    if len(name) <= MAX_TICK_CHARS:
        return name
    return "…" + name[-(MAX_TICK_CHARS - 1):]


def _wants_log(values: Sequence[float]) -> bool:
    pos = [v for v in values if v > 0 and math.isfinite(v)]
    return len(pos) == len(values) and len(pos) > 1 and max(pos) / min(pos) > LOG_SCALE_RATIO


def _layer_ticks(ax: Axes, names: Sequence[str]) -> None:
    ax.set_xticks(range(len(names)))
    rotate = len(names) > 4 or max((len(n) for n in names), default=0) > 10
    ax.set_xticklabels([_short(n) for n in names], rotation=60 if rotate else 0, ha="right" if rotate else "center",
                       fontsize=8)
    ax.set_xlim(-0.6, len(names) - 0.4)


def _require(cond: bool, what: str) -> None:
    if not cond:
        raise DataError(f"cannot plot: {what}")


def _run_label(run: Mapping[str, Any]) -> str:
    return f"{run['method']} + IAT" if run.get("iat") else str(run["method"])


# --------------------------------------------------------------------------------------- the task metric
def plot_metric_vs_timesteps(runs: Sequence[Mapping[str, Any]], *, ann_value: float | None = None,
                             label: str = "top-1 accuracy (%)", path: PathLike | None = None,
                             ax: Axes | None = None) -> Axes:
    """The task metric versus timesteps T, one line per method, the ANN as a dashed horizontal line.

    ``runs``: dicts with ``method``, ``timesteps``, ``value`` (the metric) and optionally ``iat`` and
    ``mean_timesteps``; IAT runs are placed at their *mean* timesteps (hollow markers), since
    that is the latency they really pay.
    """
    _require(len(runs) > 0, "no runs to plot the metric for")
    fig = None
    if ax is None:
        fig, ax = _new_axes((6.4, 4.2))
    series: dict[str, list[tuple[float, float]]] = {}
    iat_labels: set[str] = set()
    for r in runs:
        name = _run_label(r)
        iat_t = r.get("mean_timesteps") if r.get("iat") else None
        x = float(r["timesteps"] if iat_t is None else iat_t)
        series.setdefault(name, []).append((x, float(r["value"])))
        if r.get("iat"):
            iat_labels.add(name)
    ts = sorted({float(r["timesteps"]) for r in runs})
    for k, (name, pts) in enumerate(series.items()):
        pts.sort()
        xs, ys = zip(*pts)
        iat = name in iat_labels
        # distinct markers, shrinking, so methods with identical results stay visible on top of each other
        ax.plot(xs, ys, marker="D" if iat else _MARKERS[k % len(_MARKERS)], linestyle=":" if iat else "-", label=name,
                markerfacecolor="none" if iat else None, markersize=max(3.0, 8.5 - 1.2 * k), linewidth=1.4)
    if ann_value is not None:
        ax.axhline(float(ann_value), label=f"ANN ({ann_value:.2f})", **_ANN_STYLE)
    if ts and min(ts) > 0:
        lo = min([min(ts)] + [p[0] for lbl in iat_labels for p in series[lbl]])
        ax.set_xscale("log", base=2)
        ax.set_xlim(lo / 1.25, max(ts) * 1.25)
        if lo < min(ts):  # IAT points left of the smallest T: give them a tick too
            ts = [float(2 ** math.floor(math.log2(lo)))] + ts
    ax.xaxis.set_major_locator(FixedLocator(ts))
    ax.xaxis.set_minor_locator(NullLocator())
    ax.set_xticklabels([f"{t:g}" for t in ts])
    _metric_axis(ax, label)
    ax.set_xlabel("timesteps T (IAT runs: mean timesteps used)")
    return _done(ax, fig, path, f"{label} versus timesteps", legend="lower right")


def plot_metric_vs_energy(runs: Sequence[Mapping[str, Any]], *, ann_value: float | None = None,
                          label: str = "top-1 accuracy (%)", path: PathLike | None = None,
                          ax: Axes | None = None) -> Axes:
    """The task metric versus energy per sample relative to the ANN (%), one line per method across T.

    ``runs``: dicts with ``method``, ``timesteps``, ``value`` and ``energy_ratio`` (SNN / ANN
    energy, a fraction); points are labelled with their T.
    """
    pts = [r for r in runs if r.get("energy_ratio") is not None]
    _require(len(pts) > 0, "no run has an energy_ratio")
    fig = None
    if ax is None:
        fig, ax = _new_axes((6.4, 4.2))
    series: dict[str, list[Mapping[str, Any]]] = {}
    for r in pts:
        series.setdefault(_run_label(r), []).append(r)
    labels: list[tuple[float, float, str, Any]] = []
    for k, (name, rs) in enumerate(series.items()):
        rs = sorted(rs, key=lambda r: float(r["energy_ratio"]))
        xs = [100.0 * float(r["energy_ratio"]) for r in rs]
        ys = [float(r["value"]) for r in rs]
        (line,) = ax.plot(xs, ys, marker=_MARKERS[k % len(_MARKERS)], markersize=max(3.0, 8.5 - 1.2 * k),
                          linewidth=1.2, label=name)
        labels += [(x, y, f"T={int(r['timesteps'])}", line.get_color()) for r, x, y in zip(rs, xs, ys)]
    if ann_value is not None:
        ax.scatter([100.0], [float(ann_value)], marker="*", s=160, color="0.25", zorder=3,
                   label=f"ANN ({ann_value:.2f}, 100% energy)")
        ax.axhline(float(ann_value), color="0.25", linestyle="--", linewidth=0.8)
    xs_all = [p[0] for p in labels] + ([100.0] if ann_value is not None else [])
    if min(xs_all) > 0 and max(xs_all) / min(xs_all) > 4:
        ax.set_xscale("log")
        lo, hi = min(xs_all), max(xs_all)
        nice = [m * 10.0**e for e in range(-3, 4) for m in (1, 2, 5)]
        ax.xaxis.set_major_locator(FixedLocator([v for v in nice if lo / 1.5 <= v <= hi * 1.5]))
        ax.xaxis.set_minor_formatter(NullFormatter())
    ax.xaxis.set_major_formatter(PercentFormatter(decimals=None))
    _metric_axis(ax, label)
    _annotate_sparse(ax, labels)
    ax.set_xlabel("energy per sample relative to the ANN")
    return _done(ax, fig, path, f"{label} versus energy", legend="lower right")


# --------------------------------------------------------------------------------------- per layer
def plot_layer_settings(knobs: Mapping[str, Mapping[str, float] | None], *, path: PathLike | None = None,
                        axes: Sequence[Axes] | None = None, title: str | None = None) -> list[Axes]:
    """Per-layer bars of every searched knob, one panel each (``{knob name: {layer: value}}``).

    Knobs registered in :mod:`adacal.knobs` are labelled with their symbol and meaning; others
    with their name. ``axes`` must hold one Axes per knob with values.
    """
    from adacal.knobs import KNOBS

    panels = [(k, v) for k, v in knobs.items() if v]
    _require(len(panels) > 0, "no per-layer knob values are available")
    fig = None
    if axes is None:
        names = list(panels[0][1])
        width = max(6.0, min(16.0, 0.35 * len(names) + 3.0))
        fig = Figure(figsize=(width, 2.4 + 2.0 * len(panels)), layout="constrained")
        axes = list(fig.subplots(len(panels), 1, squeeze=False)[:, 0])
    if len(axes) != len(panels):
        raise DataError(f"plot_layer_settings needs {len(panels)} axes, got {len(axes)}")
    colors = ("tab:blue", "tab:orange", "tab:green", "tab:red", "tab:purple")
    for k, (ax, (key, values)) in enumerate(zip(axes, panels)):
        knob = KNOBS.get(key)
        names = list(values)
        ys = [float(values[n]) for n in names]
        ax.bar(range(len(names)), ys, color=colors[k % len(colors)], width=0.7)
        _layer_ticks(ax, names)
        ax.set_ylabel(f"{knob.symbol} ({knob.label})" if knob else key)
        ax.set_ylim(0, max(ys) * 1.15 if max(ys) > 0 else 1)
        if knob is not None and knob.integer:
            ax.yaxis.get_major_locator().set_params(integer=True)
        if len(names) <= 24:
            for i, y in enumerate(ys):
                ax.annotate(f"{y:g}", (i, y), textcoords="offset points", xytext=(0, 2), ha="center", fontsize=7)
        ax.grid(True, axis="y", alpha=0.3)
    axes[-1].set_xlabel("layer (neuron)")
    axes[0].set_title(title or "Per-layer settings chosen by the search")
    _finish(fig, path)
    return list(axes)


def plot_layer_energy(layers: Sequence[Mapping[str, Any]], *, path: PathLike | None = None, ax: Axes | None = None,
                      title: str | None = None) -> Axes:
    """Energy per image per layer: ANN (MACs) next to SNN (spike-driven ACs), grouped bars.

    ``layers``: dicts with ``name``, ``energy_mj`` (SNN) and ``ann_energy_mj``. A log axis is used
    when the values span more than :data:`LOG_SCALE_RATIO`.
    """
    _require(len(layers) > 0, "no per-layer energy")
    fig = None
    if ax is None:
        width = max(6.0, min(16.0, 0.45 * len(layers) + 3.0))
        fig, ax = _new_axes((width, 4.2))
    names = [str(layer["name"]) for layer in layers]
    snn = [float(layer.get("energy_mj") or 0.0) for layer in layers]
    ann = [float(layer.get("ann_energy_mj") or 0.0) for layer in layers]
    scale, unit = energy_unit(snn + ann)
    snn_u, ann_u = [v / scale for v in snn], [v / scale for v in ann]
    ax.bar([x - 0.2 for x in range(len(names))], ann_u, width=0.4, label="ANN", color="0.6")
    ax.bar([x + 0.2 for x in range(len(names))], snn_u, width=0.4, label="SNN", color="tab:green")
    _layer_ticks(ax, names)
    if _wants_log([v for v in snn_u + ann_u if v > 0]) and all(v > 0 for v in snn_u + ann_u):
        ax.set_yscale("log")
    ax.set_ylabel(f"energy per image ({unit})")
    ax.set_xlabel("layer")
    return _done(ax, fig, path, title or "Energy per layer, ANN versus SNN", grid="y")


# --------------------------------------------------------------------------------------- search
def plot_pareto(frontier: Mapping[str, Any], *, knob: str, cost_label: str | None = None,
                path: PathLike | None = None, ax: Axes | None = None) -> Axes:
    """The Pareto frontier (total cost versus total sensitivity) with the chosen point and budget.

    ``frontier``: ``{"cost": [...], "score": [...], "chosen": [cost, score], "budget": b}``. A knob
    whose search minimises sensitivity (φ) has a cost budget (a vertical line); one that minimises
    cost (ρ) a sensitivity budget (a horizontal line). ``cost_label`` names the cost's unit.
    """
    from adacal.knobs import KNOBS

    spec = KNOBS.get(knob)
    symbol, by_cost = (spec.symbol, spec.objective == "score") if spec else (knob, True)
    cost = [float(c) for c in frontier.get("cost", [])]
    score = [float(s) for s in frontier.get("score", [])]
    _require(len(cost) > 0 and len(cost) == len(score), f"{knob} frontier has no (cost, score) points")
    fig = None
    if ax is None:
        fig, ax = _new_axes((6.0, 4.2))
    order = sorted(range(len(cost)), key=lambda i: cost[i])
    xs = [cost[i] for i in order]
    ys = [score[i] for i in order]
    ax.step(xs, ys, where="post", color="tab:blue", linewidth=1.0, alpha=0.7)
    ax.scatter(xs, ys, s=12 if len(xs) < 200 else 3, color="tab:blue", label=f"Pareto frontier ({len(xs)} points)",
               zorder=2)
    budget = frontier.get("budget")
    if budget is not None and math.isfinite(float(budget)):
        line = ax.axvline if by_cost else ax.axhline
        line(float(budget), color="tab:red", linestyle="--", linewidth=1.0,
             label=f"{'cost' if by_cost else 'sensitivity'} budget {float(budget):.3g}")
    chosen = frontier.get("chosen")
    if chosen is not None and len(chosen) == 2:
        ax.scatter([float(chosen[0])], [float(chosen[1])], marker="*", s=180, color="tab:red", edgecolor="k",
                   linewidth=0.6, zorder=3, label="chosen")
    if _wants_log(ys + ([float(chosen[1])] if chosen else [])):
        ax.set_yscale("log")
    ax.set_xlabel(cost_label or "energy cost (Σ over layers)")
    ax.set_ylabel("sensitivity (Σ divergence)")
    goal = "sensitivity within the cost" if by_cost else "energy within the sensitivity"
    ax.set_title(f"{symbol} search: least {goal} budget", fontsize=10)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    _finish(fig, path)
    return ax


# --------------------------------------------------------------------------------------- IAT
def plot_exit_histogram(histogram: Sequence[int], *, path: PathLike | None = None, ax: Axes | None = None,
                        title: str | None = None) -> Axes:
    """How many inputs exited at each timestep t = 1..T under the IAT policy (share in %)."""
    counts = [int(c) for c in histogram]
    total = sum(counts)
    _require(len(counts) > 0 and total > 0, "the exit histogram is empty")
    fig = None
    if ax is None:
        fig, ax = _new_axes((5.6, 3.8))
    ts = list(range(1, len(counts) + 1))
    shares = [100.0 * c / total for c in counts]
    ax.bar(ts, shares, color="tab:purple", width=0.7)
    mean_t = sum(t * c for t, c in zip(ts, counts)) / total
    ax.axvline(mean_t, color="k", linestyle=":", linewidth=1.0, label=f"mean {mean_t:.2f} steps")
    for t, s in zip(ts, shares):
        if s > 0:
            ax.annotate(f"{s:.0f}%", (t, s), textcoords="offset points", xytext=(0, 2), ha="center", fontsize=7)
    ax.set_xticks(ts)
    ax.set_xlabel("exit timestep")
    ax.set_ylabel("share of inputs (%)")
    ax.set_ylim(0, max(shares) * 1.15)
    return _done(ax, fig, path, title or f"IAT exit histogram ({total} inputs)", grid="y")


def plot_iat_curve(curve: Sequence[Mapping[str, Any]], *, fixed: Sequence[float] | None = None,
                   ann_value: float | None = None, label: str = "top-1 accuracy (%)", path: PathLike | None = None,
                   ax: Axes | None = None) -> Axes:
    """The metric versus mean timesteps: IAT for several α_base (or ε) against running every input t steps.

    ``curve``: dicts with ``alpha_base`` (eq. 15) or ``epsilon`` (the risk rule, in points),
    ``mean_timesteps`` and ``value`` (the metric).
    ``fixed[t-1]``: the metric when every input runs exactly t steps (the baseline).
    """
    _require(len(curve) > 0 or bool(fixed), "no IAT curve and no fixed-T values")
    fig = None
    if ax is None:
        fig, ax = _new_axes((6.0, 4.2))
    if fixed:
        ax.plot(range(1, len(fixed) + 1), [float(a) for a in fixed], marker="s", color="0.4", linewidth=1.2,
                label="fixed timesteps (every input runs t steps)")
    if curve:
        pts = sorted(curve, key=lambda c: float(c["mean_timesteps"]))
        xs = [float(c["mean_timesteps"]) for c in pts]
        ys = [float(c["value"]) for c in pts]
        what = "ε" if "epsilon" in pts[0] else "α_base"
        ax.plot(xs, ys, marker="o", color="tab:purple", linewidth=1.4, label=f"IAT (one point per {what})")
    if ann_value is not None:
        ax.axhline(float(ann_value), label=f"ANN ({ann_value:.2f})", **_ANN_STYLE)
    _metric_axis(ax, label)
    if curve:
        names = [f"ε={float(c['epsilon']):g}" if "epsilon" in c else f"α={float(c['alpha_base']):g}" for c in pts]
        _annotate_sparse(ax, [(x, y, name, "tab:purple") for name, x, y in zip(names, xs, ys)])
    ax.set_xlabel("mean timesteps per input")
    return _done(ax, fig, path, "Input-aware adaptive timesteps", legend="lower right")

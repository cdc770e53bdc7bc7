"""Reports: a results table, PNG plots and a Markdown + HTML page, drawn from a results dict alone.

The report reads results through :mod:`adacal.results` (never the reverse) and leads with the
task's headline metric; plots of per-layer settings draw whatever knobs the record holds, and a
task's own pictures come from :meth:`adacal.tasks.Task.figures`.

Example:
    >>> from adacal.results import load_results
    >>> from adacal.report import write_report
    >>> write_report(load_results("runs/demo"), "runs/demo")      # doctest: +SKIP
"""
from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from adacal.errors import DataError
from adacal.results import check_results, headline, run_value, summary_rows

__all__ = ["featured_run", "format_table", "write_report"]

log = logging.getLogger(__name__)

#: x-axis label of Pareto plots by the pipeline's ``search_cost``.
_COST_LABELS = {
    "sops": "cost: synaptic operations per sample (Σ over layers)",
    "spikes": "cost: spikes per sample (Σ over layers)",
}


# --------------------------------------------------------------------------------------- tables
def _energy_scale(rows: Sequence[Mapping[str, Any]]) -> tuple[float, str]:
    from adacal.report.plots import energy_unit  # matplotlib is imported lazily

    return energy_unit([r["energy_mj"] for r in rows if r["energy_mj"] is not None])


def format_table(results: Mapping[str, Any], *, markdown: bool = False) -> str:
    """The results as an aligned text table (or a Markdown table): one line per run plus the ANN."""
    rows = summary_rows(results)
    scale, unit = _energy_scale(rows)
    _, label = headline(results)
    head = ["method", "T", label, f"energy/sample ({unit})", "mean T", "energy vs ANN %"]

    def f(v: float | None, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    body = [[r["method"], "-" if r["timesteps"] is None else str(r["timesteps"]), f(r["value"], ".2f"),
             f(None if r["energy_mj"] is None else r["energy_mj"] / scale, ".4g"), f(r["mean_timesteps"], ".2f"),
             f(None if r["energy_ratio"] is None else 100.0 * r["energy_ratio"], ".1f")] for r in rows]
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
        return "\n".join(lines + ["| " + " | ".join(c) + " |" for c in body])
    widths = [max(len(head[i]), *(len(c[i]) for c in body)) if body else len(head[i]) for i in range(len(head))]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    return "\n".join([line(head), "  ".join("-" * w for w in widths), *(line(c) for c in body)])


# --------------------------------------------------------------------------------------- report
def featured_run(runs: Sequence[Mapping[str, Any]], *, iat: bool = False) -> Mapping[str, Any] | None:
    """The run a report details: the one with the most searched knobs at the largest T."""
    pool = [r for r in runs if bool(r.get("iat")) == iat]
    if not pool:
        return None

    def searched(r: Mapping[str, Any]) -> int:
        return len((r.get("conversion") or {}).get("frontiers") or {})

    return max(pool, key=lambda r: (searched(r), int(r["timesteps"]), -pool.index(r)))


def plot_rows(runs: Sequence[Mapping[str, Any]], key: str) -> list[dict[str, Any]]:
    """Runs as the plots want them: ``value`` is the headline metric."""
    return [{**r, "value": run_value(r, key)} for r in runs if run_value(r, key) is not None]


def write_report(results: Mapping[str, Any], folder: str | os.PathLike[str]) -> dict[str, Path]:
    """Draw every plot the results support and write ``report.md`` and ``report.html`` in ``folder``.

    Returns ``{key: path}`` of the files written (plots that lack data are skipped with a log line).
    """
    from adacal.report import plots
    from adacal.report.page import write_pages

    results = check_results(dict(results))
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    runs = list(results["runs"])
    key, label = headline(results)
    ann_value = run_value(results.get("ann") or {}, key)
    written: dict[str, Path] = {}
    captions: dict[str, str] = {}

    def attempt(name: str, fn: Any, *args: Any, **kw: Any) -> None:
        path = out / f"{name}.png"
        try:
            fn(*args, path=path, **kw)
        except DataError as exc:
            log.info("skipping plot %s: %s", name, exc)
            return
        written[name] = path
        log.info("wrote %s", path)

    rows = plot_rows(runs, key)
    if rows:
        attempt("metric_vs_timesteps", plots.plot_metric_vs_timesteps, rows, ann_value=ann_value, label=label)
        attempt("metric_vs_energy", plots.plot_metric_vs_energy, rows, ann_value=ann_value, label=label)
    feat = featured_run(runs) or featured_run(runs, iat=True)
    if feat is not None:
        conv = feat.get("conversion") or {}
        title = f"{feat['method']} at T={feat['timesteps']}"
        knobs = {k: v for k, v in (conv.get("knobs") or {}).items() if v}
        if knobs:
            attempt("layer_settings", plots.plot_layer_settings, knobs, title=f"Per-layer settings ({title})")
        cost = _COST_LABELS.get(str((conv.get("config") or {}).get("search_cost")))
        for knob, front in (conv.get("frontiers") or {}).items():
            attempt(f"pareto_{knob}", plots.plot_pareto, front, knob=knob, cost_label=cost)
        if feat.get("layers"):
            attempt("layer_energy", plots.plot_layer_energy, feat["layers"], title=f"Energy per layer ({title})")
    iat = featured_run(runs, iat=True)
    if iat is not None:
        if iat.get("exit_histogram"):
            attempt("iat_exit_histogram", plots.plot_exit_histogram, iat["exit_histogram"],
                    title=f"IAT exit histogram ({iat['method']}, T={iat['timesteps']})")
        base = next((r for r in runs if not r.get("iat") and r["method"] == iat["method"]
                     and r["timesteps"] == iat["timesteps"]), None)
        fixed = ((base or {}).get("metrics_per_step") or {}).get(key)
        if iat.get("iat_curve") or fixed:
            attempt("iat_curve", plots.plot_iat_curve, iat.get("iat_curve") or [], fixed=fixed, ann_value=ann_value,
                    label=label)
    written.update(_task_figures(results, out, captions))
    written.update(write_pages(results, written, out, captions))
    return written


def _task_figures(results: Mapping[str, Any], out: Path, captions: dict[str, str]) -> dict[str, Path]:
    """The task's own pictures (e.g. segmentation maps side by side), if the task is registered here."""
    name = (results.get("task") or {}).get("name")
    from adacal.tasks import TASKS

    if name not in TASKS:
        return {}
    info = (results.get("task") or {}).get("info") or {}
    figures = TASKS[name](**info).figures(results, out)
    captions.update({k: caption for k, (_, caption) in figures.items()})
    return {k: path for k, (path, _) in figures.items()}

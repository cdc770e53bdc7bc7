"""Results files and reports: the ``summary.json`` schema, atomic writes, plots and a page.

Every job (``adacal demo``, ``sweep``, ``evaluate``) writes one ``summary.json`` in the schema
documented in ``docs/results_schema.md``; :func:`write_report` turns such a file into PNG plots and
a Markdown + HTML page next to it. The report code uses no torch: it works from the JSON alone.

Example:
    >>> from adacal.report import load_results, write_report
    >>> results = load_results("runs/demo")            # doctest: +SKIP
    >>> write_report(results, "runs/demo")             # doctest: +SKIP
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from adacal.atomic import atomic_write_text
from adacal.errors import DataError

__all__ = [
    "RESULTS_SCHEMA",
    "RESULTS_VERSION",
    "PARTIAL_FILE",
    "SUMMARY_FILE",
    "check_results",
    "featured_run",
    "format_table",
    "load_results",
    "publish_results",
    "save_partial",
    "summary_rows",
    "write_json_atomic",
    "write_report",
    "write_text_atomic",
]

log = logging.getLogger(__name__)

#: Value of the ``schema`` key of every results file.
RESULTS_SCHEMA = "adacal-results"
#: Version of the results schema this adacal writes and reads.
RESULTS_VERSION = 1
#: File name of the results file inside an output folder.
SUMMARY_FILE = "summary.json"
#: Results of a job still running (or interrupted); replaced by :data:`SUMMARY_FILE` when it ends.
PARTIAL_FILE = "summary.partial.json"

_REQUIRED_TOP = ("schema", "version", "kind", "model", "ann", "runs")
_REQUIRED_RUN = ("name", "method", "timesteps", "iat", "accuracy", "energy_mj", "mean_timesteps")
#: x-axis label of Pareto plots by the pipeline's ``search_cost``.
_COST_LABELS = {
    "sops": "cost: synaptic operations per image (Σ over layers)",
    "spikes": "cost: spikes per image (Σ over layers)",
}
#: Preference order when picking the run whose per-layer details a report shows.
_FEATURE_ORDER = ("adafire+ssc", "adafire", "burstfire", "calibration", "plain")


# --------------------------------------------------------------------------------------- files
def write_text_atomic(text: str, path: str | os.PathLike[str]) -> Path:
    """Write ``text`` to ``path`` via a temp file in the same folder and ``os.replace``.

    Readers see either the old file or the new one, never a half-written file; concurrent
    writers never share a temp file.
    """
    return atomic_write_text(path, text)


def _json_safe(obj: Any) -> Any:
    """Non-finite floats become the strings ``"inf"``, ``"-inf"``, ``"nan"`` (strict JSON)."""
    if isinstance(obj, float) and not math.isfinite(obj):
        return "nan" if math.isnan(obj) else ("inf" if obj > 0 else "-inf")
    if isinstance(obj, Mapping):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def write_json_atomic(obj: Any, path: str | os.PathLike[str]) -> Path:
    """Strict JSON (no NaN literals), indented, written atomically (see :func:`write_text_atomic`)."""
    text = json.dumps(_json_safe(obj), indent=2, allow_nan=False) + "\n"
    return write_text_atomic(text, path)


def check_results(results: Any, source: str = "results") -> dict[str, Any]:
    """Validate the top-level shape of a results dict; :class:`DataError` names what is wrong."""
    if not isinstance(results, dict):
        raise DataError(f"{source} is not a JSON object (got {type(results).__name__})")
    if results.get("schema") != RESULTS_SCHEMA:
        raise DataError(
            f"{source} is not an adacal results file (schema={results.get('schema')!r}, expected "
            f"{RESULTS_SCHEMA!r}); pass the summary.json written by 'adacal sweep', 'evaluate' or 'demo'"
        )
    if results.get("version") != RESULTS_VERSION:
        raise DataError(
            f"{source} has results schema version {results.get('version')!r}; this adacal reads version "
            f"{RESULTS_VERSION}"
        )
    missing = [k for k in _REQUIRED_TOP if k not in results]
    if missing:
        raise DataError(f"{source} lacks the key(s) {missing}; see docs/results_schema.md")
    if not isinstance(results["runs"], list):
        raise DataError(f"{source}: 'runs' must be a list")
    for i, run in enumerate(results["runs"]):
        if not isinstance(run, dict):
            raise DataError(f"{source}: runs[{i}] is not an object")
        gone = [k for k in _REQUIRED_RUN if k not in run]
        if gone:
            raise DataError(f"{source}: runs[{i}] lacks the key(s) {gone}; see docs/results_schema.md")
    return results


def load_results(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Read and validate a results file, or the ``summary.json`` inside a folder."""
    p = Path(path)
    if p.is_dir():
        p = p / SUMMARY_FILE
    if not p.is_file():
        partial = p.parent / PARTIAL_FILE
        if p.name == SUMMARY_FILE and partial.is_file():
            raise DataError(
                f"{str(p)!r} does not exist: the job writing there has not finished (or was interrupted); "
                f"pass {str(partial)!r} to report the runs finished so far"
            )
        raise DataError(
            f"results file {str(p)!r} does not exist; run 'adacal sweep', 'adacal evaluate' or "
            f"'adacal demo' first and pass its output folder or summary.json"
        )
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(
            f"results file {str(p)!r} is not valid JSON ({exc}); rerun the job that wrote it"
        ) from exc
    return check_results(data, source=repr(str(p)))


# --------------------------------------------------------------------------------------- tables
def _num(v: Any) -> float | None:
    if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v)):
        return float(v)
    return None


def summary_rows(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per run, plus the ANN first: name, method, T, accuracy, energy, mean T, ratio."""
    ann = results.get("ann") or {}
    rows: list[dict[str, Any]] = []
    if _num(ann.get("accuracy")) is not None or _num(ann.get("energy_mj")) is not None:
        rows.append(
            {
                "name": "ANN",
                "method": "ann",
                "timesteps": None,
                "accuracy": _num(ann.get("accuracy")),
                "energy_mj": _num(ann.get("energy_mj")),
                "mean_timesteps": None,
                "energy_ratio": 1.0 if _num(ann.get("energy_mj")) else None,
            }
        )
    for run in results.get("runs", []):
        rows.append(
            {
                "name": run["name"],
                "method": run["method"] + (" + IAT" if run.get("iat") else ""),
                "timesteps": run.get("timesteps"),
                "accuracy": _num(run.get("accuracy")),
                "energy_mj": _num(run.get("energy_mj")),
                "mean_timesteps": _num(run.get("mean_timesteps")),
                "energy_ratio": _num(run.get("energy_ratio")),
            }
        )
    return rows


def _energy_scale(rows: Sequence[Mapping[str, Any]]) -> tuple[float, str]:
    from adacal.report.plots import energy_unit  # matplotlib is imported lazily

    return energy_unit([r["energy_mj"] for r in rows if r["energy_mj"] is not None])


def _cells(row: Mapping[str, Any], scale: float) -> list[str]:
    def f(v: float | None, fmt: str) -> str:
        return "-" if v is None else format(v, fmt)

    return [
        row["method"],
        "-" if row["timesteps"] is None else str(row["timesteps"]),
        f(row["accuracy"], ".2f"),
        f(None if row["energy_mj"] is None else row["energy_mj"] / scale, ".4g"),
        f(row["mean_timesteps"], ".2f"),
        f(None if row["energy_ratio"] is None else 100.0 * row["energy_ratio"], ".1f"),
    ]


def _headers(unit: str) -> list[str]:
    return ["method", "T", "accuracy %", f"energy/img ({unit})", "mean T", "energy vs ANN %"]


def format_table(results: Mapping[str, Any], *, markdown: bool = False) -> str:
    """The results as an aligned text table (or a Markdown table): one line per run plus the ANN."""
    rows = summary_rows(results)
    scale, unit = _energy_scale(rows)
    head = _headers(unit)
    body = [_cells(r, scale) for r in rows]
    if markdown:
        lines = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] + ["---:"] * (len(head) - 1)) + "|"]
        lines += ["| " + " | ".join(c) + " |" for c in body]
        return "\n".join(lines)
    widths = [
        max(len(head[i]), *(len(c[i]) for c in body)) if body else len(head[i]) for i in range(len(head))
    ]
    fmt_row = lambda cells: "  ".join(  # noqa: E731
        c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths))
    )
    lines = [fmt_row(head), "  ".join("-" * w for w in widths)]
    lines += [fmt_row(c) for c in body]
    return "\n".join(lines)


# --------------------------------------------------------------------------------------- report
def featured_run(runs: Sequence[Mapping[str, Any]], *, iat: bool = False) -> Mapping[str, Any] | None:
    """The run a report details: the most searched method at the largest T (or the largest-T IAT run)."""
    pool = [r for r in runs if bool(r.get("iat")) == iat]
    if not pool:
        return None
    rank = {m: i for i, m in enumerate(_FEATURE_ORDER)}
    return min(pool, key=lambda r: (rank.get(str(r["method"]), len(rank)), -int(r["timesteps"])))


def write_report(results: Mapping[str, Any], folder: str | os.PathLike[str]) -> dict[str, Path]:
    """Draw every plot the results support and write ``report.md`` and ``report.html`` in ``folder``.

    Returns ``{key: path}`` of the files written (plots that lack data are skipped with a log line).
    """
    from adacal.report import plots
    from adacal.report.page import write_pages

    check_results(dict(results))
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    runs = list(results["runs"])
    ann_acc = _num((results.get("ann") or {}).get("accuracy"))
    written: dict[str, Path] = {}

    def attempt(key: str, fn: Any, *args: Any, **kw: Any) -> None:
        path = out / f"{key}.png"
        try:
            fn(*args, path=path, **kw)
        except DataError as exc:
            log.info("skipping plot %s: %s", key, exc)
            return
        written[key] = path
        log.info("wrote %s", path)

    fixed = [r for r in runs if _num(r.get("accuracy")) is not None]
    if fixed:
        attempt("accuracy_vs_timesteps", plots.plot_accuracy_vs_timesteps, fixed, ann_accuracy=ann_acc)
        attempt("accuracy_vs_energy", plots.plot_accuracy_vs_energy, fixed, ann_accuracy=ann_acc)
    feat = featured_run(runs) or featured_run(runs, iat=True)
    if feat is not None:
        conv = feat.get("conversion") or {}
        title = f"{feat['method']} at T={feat['timesteps']}"
        if conv.get("phi") or conv.get("rho"):
            attempt(
                "layer_settings",
                plots.plot_layer_settings,
                conv.get("phi"),
                conv.get("rho"),
                title=f"Per-layer φ and ρ ({title})",
            )
        cost = _COST_LABELS.get(str((conv.get("config") or {}).get("search_cost")))
        for kind in ("phi", "rho"):
            front = (conv.get("frontiers") or {}).get(kind)
            if front:
                attempt(f"pareto_{kind}", plots.plot_pareto, front, kind=kind, cost_label=cost)
        if feat.get("layers"):
            attempt(
                "layer_energy", plots.plot_layer_energy, feat["layers"], title=f"Energy per layer ({title})"
            )
    iat = featured_run(runs, iat=True)
    if iat is not None:
        if iat.get("exit_histogram"):
            attempt(
                "iat_exit_histogram",
                plots.plot_exit_histogram,
                iat["exit_histogram"],
                title=f"IAT exit histogram ({iat['method']}, T={iat['timesteps']})",
            )
        base = next(
            (
                r
                for r in runs
                if not r.get("iat") and r["method"] == iat["method"] and r["timesteps"] == iat["timesteps"]
            ),
            None,
        )
        fixed_acc = (base or {}).get("accuracy_per_step")
        if iat.get("iat_curve") or fixed_acc:
            attempt(
                "iat_curve",
                plots.plot_iat_curve,
                iat.get("iat_curve") or [],
                fixed_accuracy=fixed_acc,
                ann_accuracy=ann_acc,
            )
    written.update(write_pages(results, written, out))
    return written


def save_partial(results: Mapping[str, Any], folder: str | os.PathLike[str]) -> Path:
    """Write the results of an unfinished job to ``summary.partial.json`` (atomically).

    The previous complete ``summary.json`` and its plots stay untouched until
    :func:`publish_results`, so an interrupted rerun into the same folder never mixes two runs.
    """
    return write_json_atomic(results, Path(folder) / PARTIAL_FILE)


def publish_results(
    results: Mapping[str, Any], folder: str | os.PathLike[str], *, report: bool = True
) -> dict[str, Path]:
    """Finish a job: plots and pages (if ``report``), then ``summary.json``, then drop the partial file.

    ``summary.json`` is written last, so it always describes a finished job. Returns the files written.
    """
    out = Path(folder)
    written = write_report(results, out) if report else {}
    written["summary"] = write_json_atomic(results, out / SUMMARY_FILE)
    (out / PARTIAL_FILE).unlink(missing_ok=True)
    return written

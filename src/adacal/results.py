"""The results contract: the versioned ``summary.json`` schema, its builders and its reader.

Every job (``adacal demo``, ``sweep``, ``evaluate``) and every benchmark that runs the library's
sweep writes this structure (documented in ``docs/results_schema.md``); the report reads it back
through :func:`load_results`, which also upgrades files of older versions. Torch-free.

A run's quality is a dict of task metrics (``{"accuracy": 91.2}``, ``{"miou": 63.0, ...}``);
``results["task"]["headline"]`` names the one tables and plots lead with.
"""
from __future__ import annotations

import copy
import hashlib
import json
import math
import os
import platform
import sys
from collections.abc import Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from adacal.atomic import atomic_write_json
from adacal.errors import DataError
from adacal.knobs import PHI, RHO

__all__ = ["PARTIAL_FILE", "SCHEMA", "SUMMARY_FILE", "VERSION", "check_results", "fingerprint", "headline",
           "load_results", "make_run", "new_results", "run_name", "run_value", "save_partial", "summary_rows"]

SCHEMA = "adacal-results"
VERSION = 2
SUMMARY_FILE = "summary.json"
#: Results of a job still running (or interrupted); replaced by :data:`SUMMARY_FILE` when it ends.
PARTIAL_FILE = "summary.partial.json"
#: Picojoules to millijoules (the energy model counts pJ; results report mJ per sample).
PJ_TO_MJ = 1e-9

_REQUIRED_TOP = ("schema", "version", "kind", "task", "model", "ann", "runs")
_REQUIRED_RUN = ("name", "method", "timesteps", "iat", "metrics", "energy_mj", "mean_timesteps")


# ------------------------------------------------------------------------------------------ building
def _version(pkg: str) -> str | None:
    import importlib.metadata

    try:
        return importlib.metadata.version(pkg)
    except importlib.metadata.PackageNotFoundError:
        return None


def new_results(kind: str, *, task: Mapping[str, Any], model: Mapping[str, Any], settings: Mapping[str, Any],
                environment: Mapping[str, Any] | None = None, command: str | None = None) -> dict[str, Any]:
    """An empty results dict for a ``kind`` of job. ``task``: :meth:`adacal.tasks.Task.describe`."""
    return {
        "schema": SCHEMA,
        "version": VERSION,
        "kind": kind,
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "adacal_version": _version("adacal"),
        "command": command,
        "environment": {"python": sys.version.split()[0], "platform": platform.platform(), **(environment or {})},
        "task": dict(task),
        "model": dict(model),
        "ann": {"metrics": {}, "energy_mj": None},
        "settings": dict(settings),
        "training": None,
        "runs": [],
        "timing": {},
    }


def run_name(method: str, timesteps: int, iat: bool = False) -> str:
    """``"<method>@T8"``, ``"<method>+iat@T8"``: the run's key in results and on the page."""
    return f"{method}{'+iat' if iat else ''}@T{timesteps}"


def make_run(method: str, timesteps: int, evaluation: Mapping[str, Any], *, iat: bool,
             record: Mapping[str, Any] | None, policy: Any = None, curve: list[dict[str, Any]] | None = None,
             times: Mapping[str, float] | None = None) -> dict[str, Any]:
    """One run entry from the dict :func:`adacal.evaluate` returns and the conversion record."""
    energy = evaluation.get("energy_mj")
    ann_energy = evaluation.get("ann_energy_mj")
    report = evaluation.get("energy") or {}
    layers = [{"name": r["name"], "kind": r.get("kind"), "macs": r.get("macs_per_image"),
               "sops": r.get("sops_per_image"), "energy_mj": r["energy_pj"] * PJ_TO_MJ,
               "ann_energy_mj": r["ann_energy_pj"] * PJ_TO_MJ} for r in report.get("layers") or []]
    neurons = [{"name": r["name"], "firing_rate": r.get("firing_rate"), "spikes": r.get("spikes_per_image"),
                "sops": r.get("sops_per_image"), "energy_mj": r["energy_pj"] * PJ_TO_MJ}
               for r in report.get("neurons") or []]
    return {
        "name": run_name(method, timesteps, iat),
        "method": method,
        "timesteps": int(timesteps),
        "iat": bool(iat),
        "num_samples": evaluation.get("num_samples"),
        "metrics": dict(evaluation.get("metrics") or {}),
        "metrics_per_step": evaluation.get("metrics_per_step"),
        "energy_mj": energy,
        "ann_energy_mj": ann_energy,
        "energy_ratio": float(energy) / float(ann_energy) if energy is not None and ann_energy else None,
        "mean_timesteps": evaluation.get("mean_timesteps", float(timesteps)),
        "exit_histogram": evaluation.get("exit_histogram"),
        "layers": layers,
        "neurons": neurons,
        "energy_costs": report.get("costs"),
        "iat_policy": policy.to_dict() if policy is not None else None,
        "iat_curve": curve,
        "conversion": dict(record) if record is not None else None,
        "time_s": dict(times or {}),
    }


def fingerprint(*parts: Any) -> str:
    """A short hash of JSON-able settings: a resumed job checks it did not change."""
    text = json.dumps(parts, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def save_partial(results: Mapping[str, Any], folder: str | os.PathLike[str]) -> Path:
    """Write an unfinished job's results to ``summary.partial.json`` (atomically); the previous
    ``summary.json`` stays untouched until the job finishes."""
    return atomic_write_json(Path(folder) / PARTIAL_FILE, results)


# ------------------------------------------------------------------------------------------ reading
def headline(results: Mapping[str, Any]) -> tuple[str, str]:
    """``(metric key, axis label)`` the table and plots lead with."""
    task = results.get("task") or {}
    key = str(task.get("headline") or "accuracy")
    label = str(((task.get("metrics") or {}).get(key) or {}).get("label") or key)
    return key, label


def _num(v: Any) -> float | None:
    if isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(float(v)):
        return float(v)
    return None


def run_value(run: Mapping[str, Any], key: str) -> float | None:
    """A run's (or the ANN entry's) metric ``key``, or None."""
    return _num((run.get("metrics") or {}).get(key))


def summary_rows(results: Mapping[str, Any]) -> list[dict[str, Any]]:
    """One row per run, the ANN first: name, method, T, value (headline metric), energy, mean T, ratio."""
    key, _ = headline(results)
    ann = results.get("ann") or {}
    rows: list[dict[str, Any]] = []
    if run_value(ann, key) is not None or _num(ann.get("energy_mj")) is not None:
        rows.append({"name": "ANN", "method": "ann", "timesteps": None, "value": run_value(ann, key),
                     "energy_mj": _num(ann.get("energy_mj")), "mean_timesteps": None,
                     "energy_ratio": 1.0 if _num(ann.get("energy_mj")) else None})
    for run in results.get("runs", []):
        rows.append({"name": run["name"], "method": run["method"] + (" + IAT" if run.get("iat") else ""),
                     "timesteps": run.get("timesteps"), "value": run_value(run, key),
                     "energy_mj": _num(run.get("energy_mj")), "mean_timesteps": _num(run.get("mean_timesteps")),
                     "energy_ratio": _num(run.get("energy_ratio"))})
    return rows


def _upgrade_v1(results: dict[str, Any]) -> dict[str, Any]:
    """Version 1 (classification only: ``accuracy`` keys, ``phi``/``rho`` in records) → version 2."""
    out = copy.deepcopy(results)
    out["version"] = VERSION
    out["task"] = {"name": "classification", "headline": "accuracy",
                   "metrics": {"accuracy": {"label": "top-1 accuracy (%)", "higher_is_better": True}}}
    ann = out.get("ann") or {}
    out["ann"] = {"metrics": {"accuracy": ann.get("accuracy")}, "energy_mj": ann.get("energy_mj")}
    for run in out.get("runs") or []:
        if not isinstance(run, dict):
            continue
        run["metrics"] = {"accuracy": run.pop("accuracy", None)}
        per_step = run.pop("accuracy_per_step", None)
        run["metrics_per_step"] = {"accuracy": per_step} if per_step is not None else None
        for point in run.get("iat_curve") or []:
            point["value"] = point.pop("accuracy", None)
        conv = run.get("conversion")
        if isinstance(conv, dict) and "knobs" not in conv:
            conv["knobs"] = {k: conv.pop(k) for k in (PHI.name, RHO.name) if k in conv}
    return out


def check_results(results: Any, source: str = "results") -> dict[str, Any]:
    """Validate (and upgrade) a results dict; :class:`DataError` names what is wrong."""
    if not isinstance(results, dict):
        raise DataError(f"{source} is not a JSON object (got {type(results).__name__})")
    if results.get("schema") != SCHEMA:
        raise DataError(f"{source} is not an adacal results file (schema={results.get('schema')!r}, expected "
                        f"{SCHEMA!r}); pass the summary.json written by 'adacal sweep', 'evaluate' or 'demo'")
    if results.get("version") == 1:
        results = _upgrade_v1(results)
    if results.get("version") != VERSION:
        raise DataError(f"{source} has results schema version {results.get('version')!r}; this adacal reads "
                        f"versions 1 and {VERSION}")
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
            raise DataError(f"{str(p)!r} does not exist: the job writing there has not finished (or was "
                            f"interrupted); pass {str(partial)!r} to report the runs finished so far")
        raise DataError(f"results file {str(p)!r} does not exist; run 'adacal sweep', 'adacal evaluate' or "
                        "'adacal demo' first and pass its output folder or summary.json")
    try:
        data = json.loads(p.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise DataError(f"results file {str(p)!r} is not valid JSON ({exc}); rerun the job that wrote it") from exc
    return check_results(data, source=repr(str(p)))

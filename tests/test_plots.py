"""Plots and report pages from synthetic results: files exist, are PNGs, pages link them (no pixel tests)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from matplotlib.figure import Figure

from adacal.atomic import atomic_write_json
from adacal.errors import DataError
from adacal.report import featured_run, format_table, plots, write_report
from adacal.results import SCHEMA, VERSION, load_results

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
LAYERS = ["features.2", "features.5", "layer1.0.relu", "layer1.0.relu_1"]


def _is_png(path: Path) -> bool:
    return path.is_file() and path.stat().st_size > 1000 and path.read_bytes()[:8] == PNG_MAGIC


def _conversion(method: str, T: int) -> dict:
    rec: dict = {
        "method": method,
        "timesteps": T,
        "config": {"method": method, "timesteps": T},
        "thresholds": {n: {"mean": 1.0 + i, "min": 0.5, "max": 2.0 + i} for i, n in enumerate(LAYERS)},
        "knobs": {"phi": {n: [1, 3, 2, 4][i] for i, n in enumerate(LAYERS)},
                  "rho": {n: [1.0, 1.5, 2.0, 1.0][i] for i, n in enumerate(LAYERS)}},
        "stage_times": {"thresholds": 0.1},
    }
    if method.startswith("adafire"):
        rec["frontiers"] = {
            "phi": {
                "cost": [1.0, 2.0, 3.0, 5.0, 8.0],
                "score": [0.5, 0.1, 0.03, 0.01, 0.002],
                "chosen": [3.0, 0.03],
                "budget": 4.0,
            },
            "rho": {
                "cost": [2.0, 3.0, 4.0],
                "score": [0.2, 0.05, 0.01],
                "chosen": [3.0, 0.05],
                "budget": 0.06,
            },
        }
    return rec


def _run(method: str, T: int, acc: float, iat: bool = False) -> dict:
    layers = [
        {
            "name": n,
            "firing_rate": 0.1 * (i + 1),
            "sops": 1e5 * (i + 1),
            "energy_mj": 1e-4 * (i + 1),
            "ann_energy_mj": 4e-4 * (i + 1),
        }
        for i, n in enumerate(LAYERS)
    ]
    neurons = [
        {
            "name": n,
            "firing_rate": 0.1 * (i + 1),
            "spikes": 100.0 * (i + 1),
            "sops": 1e4 * (i + 1),
            "energy_mj": 1e-5,
        }
        for i, n in enumerate(LAYERS)
    ]
    return {
        "name": f"{method}{'+iat' if iat else ''}@T{T}",
        "neurons": neurons,
        "energy_costs": {"name": "fp32_45nm", "e_mac_pj": 4.6, "e_ac_pj": 0.9},
        "method": method,
        "timesteps": T,
        "iat": iat,
        "metrics": {"accuracy": acc},
        "metrics_per_step": {"accuracy": [acc - 10 + 10 * t / T for t in range(1, T + 1)]},
        "energy_mj": 1e-3 * T / 8,
        "ann_energy_mj": 4e-3,
        "energy_ratio": 0.25 * T / 8,
        "mean_timesteps": T * 0.6 if iat else float(T),
        "exit_histogram": [5 * (T - t) + 1 for t in range(T)] if iat else None,
        "layers": layers,
        "conversion": _conversion(method, T),
        "iat_policy": {"thresholds": [0.9] * T, "alpha_base": 0.6} if iat else None,
        "iat_curve": [
            {"alpha_base": a, "mean_timesteps": 1 + a * (T - 1), "value": 80 + 15 * a}
            for a in (0.3, 0.6, 0.9)
        ]
        if iat
        else None,
    }


@pytest.fixture
def results() -> dict:
    runs = [
        _run(m, T, 60 + 4 * T + i)
        for i, m in enumerate(["plain", "calibration", "adafire+ssc"])
        for T in (2, 4, 8)
    ]
    runs += [_run("adafire+ssc", T, 70 + 3 * T, iat=True) for T in (2, 4, 8)]
    return {
        "schema": SCHEMA,
        "version": VERSION,
        "kind": "sweep",
        "created": "2025-01-01T00:00:00Z",
        "task": {"name": "classification", "headline": "accuracy",
                 "metrics": {"accuracy": {"label": "top-1 accuracy (%)"}}},
        "model": {"name": "digits_cnn", "dataset": "digits", "num_classes": 10},
        "ann": {"metrics": {"accuracy": 97.5}, "energy_mj": 4e-3},
        "runs": runs,
        "settings": {"timesteps": [2, 4, 8]},
        "timing": {"total_s": 12.0},
    }


def test_every_plot_function_writes_a_png(tmp_path: Path, results: dict) -> None:
    runs = [{**r, "value": r["metrics"]["accuracy"]} for r in results["runs"]]
    feat = runs[-4]
    conv = feat["conversion"]
    calls = {
        "acc_T": lambda p: plots.plot_metric_vs_timesteps(runs, ann_value=97.5, path=p),
        "acc_E": lambda p: plots.plot_metric_vs_energy(runs, ann_value=97.5, path=p),
        "settings": lambda p: plots.plot_layer_settings(conv["knobs"], path=p),
        "phi_only": lambda p: plots.plot_layer_settings({"phi": conv["knobs"]["phi"]}, path=p),
        "pareto_phi": lambda p: plots.plot_pareto(conv["frontiers"]["phi"], knob="phi", path=p),
        "pareto_rho": lambda p: plots.plot_pareto(conv["frontiers"]["rho"], knob="rho", path=p),
        "energy": lambda p: plots.plot_layer_energy(feat["layers"], path=p),
        "hist": lambda p: plots.plot_exit_histogram([10, 5, 0, 1], path=p),
        "curve": lambda p: plots.plot_iat_curve(runs[-1]["iat_curve"], fixed=[50, 70, 80, 85], path=p),
        "loss": lambda p: plots.plot_metric_vs_timesteps(runs, label="mean squared error", path=p),
    }
    for key, call in calls.items():
        path = tmp_path / "sub" / f"{key}.png"
        call(path)
        assert _is_png(path), key
    assert not list((tmp_path / "sub").glob(".*.tmp")), "temp files left behind"


def test_plots_draw_into_given_axes(results: dict) -> None:
    fig = Figure()
    ax1, ax2 = fig.subplots(1, 2)
    assert plots.plot_exit_histogram([3, 2, 1], ax=ax1) is ax1
    runs = [{**r, "value": r["metrics"]["accuracy"]} for r in results["runs"]]
    assert plots.plot_metric_vs_timesteps(runs, ax=ax2) is ax2


def test_empty_data_raises_data_error(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="no runs"):
        plots.plot_metric_vs_timesteps([], path=tmp_path / "x.png")
    with pytest.raises(DataError, match="histogram is empty"):
        plots.plot_exit_histogram([0, 0], path=tmp_path / "x.png")
    with pytest.raises(DataError, match="no per-layer knob"):
        plots.plot_layer_settings({"phi": None, "rho": {}}, path=tmp_path / "x.png")
    with pytest.raises(DataError, match="frontier"):
        plots.plot_pareto({"cost": [], "score": []}, knob="phi", path=tmp_path / "x.png")
    assert not (tmp_path / "x.png").exists()


def test_energy_unit_picks_readable_unit() -> None:
    assert plots.energy_unit([2.0, 0.1]) == (1.0, "mJ")
    assert plots.energy_unit([3e-3]) == (1e-3, "µJ")
    assert plots.energy_unit([5e-6])[1] == "nJ"


def test_write_report_writes_plots_and_pages(tmp_path: Path, results: dict) -> None:
    written = write_report(results, tmp_path)
    for key in (
        "metric_vs_timesteps",
        "metric_vs_energy",
        "layer_settings",
        "pareto_phi",
        "pareto_rho",
        "layer_energy",
        "iat_exit_histogram",
        "iat_curve",
    ):
        assert _is_png(written[key]), key
    md = written["report_md"].read_text()
    html = written["report_html"].read_text()
    for key in ("metric_vs_timesteps", "pareto_phi", "iat_curve"):
        assert f"{key}.png" in md and f"{key}.png" in html
    assert "| method |" in md and "<table>" in html
    assert "fp32_45nm costs (MAC 4.6 pJ, AC 0.9 pJ)" in md
    assert "| features.5 | 3 | 1.5 |" in md  # per spiking layer: φ, ρ


def test_report_without_search_or_iat_skips_those_plots(tmp_path: Path, results: dict) -> None:
    results["runs"] = [r for r in results["runs"] if r["method"] == "plain"]
    for r in results["runs"]:
        r["conversion"] = {"method": "plain", "timesteps": r["timesteps"], "thresholds": {}}
    written = write_report(results, tmp_path)
    assert "metric_vs_timesteps" in written and "layer_energy" in written
    assert not {"pareto_phi", "layer_settings", "iat_curve"} & set(written)


def test_featured_run_prefers_most_searched_method_at_largest_T(results: dict) -> None:
    assert featured_run(results["runs"])["name"] == "adafire+ssc@T8"
    assert featured_run(results["runs"], iat=True)["name"] == "adafire+ssc+iat@T8"
    assert featured_run([], iat=True) is None


def test_results_round_trip_and_validation(tmp_path: Path, results: dict) -> None:
    results["ann"]["note"] = float("nan")  # non-finite floats must not produce invalid JSON
    atomic_write_json(tmp_path / "summary.json", results)
    json.loads((tmp_path / "summary.json").read_text())  # strict JSON
    assert load_results(tmp_path)["runs"][0]["name"] == "plain@T2"
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(DataError, match="not valid JSON"):
        load_results(tmp_path / "bad.json")
    (tmp_path / "other.json").write_text(json.dumps({"schema": "something"}))
    with pytest.raises(DataError, match="not an adacal results file"):
        load_results(tmp_path / "other.json")
    with pytest.raises(DataError, match="does not exist"):
        load_results(tmp_path / "missing")


def test_format_table_has_ann_row_and_every_run(results: dict) -> None:
    text = format_table(results)
    lines = text.splitlines()
    assert lines[0].split()[0] == "method" and "energy/sample (µJ)" in lines[0]
    assert lines[2].startswith("ann")
    assert len(lines) == 2 + 1 + len(results["runs"])
    assert format_table(results, markdown=True).startswith("| method |")


def test_version_1_results_are_upgraded(tmp_path: Path, results: dict) -> None:
    """Files written before tasks existed (accuracy keys, phi/rho in records) still load and report."""
    v1 = json.loads(json.dumps(results))
    v1["version"] = 1
    del v1["task"]
    v1["ann"] = {"accuracy": 97.5, "energy_mj": 4e-3}
    for r in v1["runs"]:
        r["accuracy"] = r.pop("metrics")["accuracy"]
        r["accuracy_per_step"] = r.pop("metrics_per_step")["accuracy"]
        r["conversion"].update(r["conversion"].pop("knobs"))
        for point in r.get("iat_curve") or []:
            point["accuracy"] = point.pop("value")
    atomic_write_json(tmp_path / "summary.json", v1)
    up = load_results(tmp_path)
    assert up["version"] == VERSION and up["task"]["headline"] == "accuracy"
    assert up["ann"]["metrics"]["accuracy"] == 97.5
    assert [r["metrics"]["accuracy"] for r in up["runs"]] == [r["metrics"]["accuracy"] for r in results["runs"]]
    assert up["runs"][-1]["conversion"]["knobs"]["phi"] == results["runs"][-1]["conversion"]["knobs"]["phi"]
    assert "metric_vs_timesteps" in write_report(up, tmp_path / "report")

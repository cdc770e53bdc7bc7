"""Diagnostics: sensitivity/accuracy correlation and the per-layer error decomposition."""
from __future__ import annotations

import pytest
from test_pipeline import calibrated

from adacal.diagnostics import error_decomposition, sensitivity_correlation
from adacal.errors import ConfigError
from adacal.sensitivity import profile


def test_first_layer_has_no_unevenness_or_propagated_error() -> None:
    # The first neurons see the constant image current: their SNN rate is the surrogate exactly.
    snn, x = calibrated(T=4)
    rows = error_decomposition(snn, x, timesteps=4)
    assert [r["layer"] for r in rows] == list(snn.neurons())
    first = rows[0]
    assert first["propagated"] == 0.0
    assert first["unevenness"] < 1e-12
    assert first["total"] == pytest.approx(
        first["clipping"] + first["quantisation"], rel=0.5)  # same order; parts are not orthogonal
    assert any(r["unevenness"] > 0 for r in rows[1:])  # deeper layers see time-varying spikes


def test_clipping_error_vanishes_when_the_clip_covers_everything() -> None:
    snn, x = calibrated(T=4)
    for n in snn.neurons().values():
        n.set_theta(n.theta * 100)  # clip level far above every activation
    rows = error_decomposition(snn, x, timesteps=4)
    assert all(r["clipping"] == 0.0 for r in rows)


def test_sensitivity_correlation_reports_three_coefficients() -> None:
    snn, x = calibrated(T=4)
    table = profile(snn, x, knob="phi", candidates=[1, 2], timesteps=4)
    y = snn.ann_forward(x).argmax(1)
    before = {k: int(n.phi) for k, n in snn.neurons().items()}
    res = sensitivity_correlation(snn, table, [(x, y)], timesteps=4, num_settings=5)
    assert len(res["points"]) == 5
    for key in ("pearson", "spearman", "kendall"):
        assert -1.0 <= res[key] <= 1.0 or res[key] != res[key]  # NaN only if accuracy is constant
    assert {k: int(n.phi) for k, n in snn.neurons().items()} == before  # settings restored
    with pytest.raises(ConfigError, match="num_settings"):
        sensitivity_correlation(snn, table, [(x, y)], timesteps=4, num_settings=2)


def test_diagnostics_plots_write_pngs(tmp_path) -> None:
    from adacal.report.diagnostics_plots import plot_error_decomposition, plot_sensitivity_correlation

    rows = [{"layer": "a", "clipping": 0.1, "quantisation": 0.2, "propagated": 0.0, "unevenness": 0.0, "total": 0.3},
            {"layer": "b", "clipping": 0.01, "quantisation": 0.02, "propagated": 0.05, "unevenness": 0.001,
             "total": 0.08}]
    plot_error_decomposition(rows, path=tmp_path / "e.png")
    corr = {"knob": "phi", "pearson": -0.5, "spearman": -0.4, "kendall": -0.3,
            "points": [{"sensitivity": s, "accuracy": 90 - s} for s in (0.1, 0.2, 0.3)]}
    plot_sensitivity_correlation(corr, path=tmp_path / "s.png")
    for name in ("e.png", "s.png"):
        assert (tmp_path / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    from adacal.errors import DataError
    with pytest.raises(DataError):
        plot_error_decomposition([], path=tmp_path / "x.png")

"""Nothing accepted silently: degraded-but-usable results warn, and the warnings reach users who
configured no logging (adacal.logs.FallbackHandler), once, and never twice when logging is configured."""
from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from torch import nn

import adacal
from adacal import cli
from adacal.calibrate import calibrate_thresholds
from adacal.convert import prepare
from adacal.logs import FallbackHandler
from adacal.pipeline import convert

pytestmark = pytest.mark.usefixtures("single_thread")

SCRIPT = """
import torch
from torch import nn
{setup}
import adacal
from adacal.calibrate import calibrate_thresholds
from adacal.convert import prepare
torch.manual_seed(0)
net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(256, 5)).eval()
snn = prepare(net, torch.randn(4, 3, 8, 8))
for _ in range(3):  # a search recalibrates many times: said once
    calibrate_thresholds(snn, torch.ones(8, 3, 8, 8), timesteps=4)
"""
WARNING = ("adacal.calibrate.thresholds: WARNING: calibration data: all 8 samples are identical (every value is 1); "
           "thresholds are fitted to that one input")


def _run(setup: str) -> str:
    env = {**os.environ, "PYTHONPATH": str(Path(adacal.__file__).parents[1])}
    proc = subprocess.run([sys.executable, "-c", SCRIPT.format(setup=setup)], capture_output=True, text=True,
                          env=env, timeout=120)
    assert proc.returncode == 0, proc.stderr
    return proc.stderr


def test_warnings_reach_a_user_who_configured_no_logging() -> None:
    err = _run("")
    assert err.count(WARNING) == 1, err


def test_configured_logging_gets_each_warning_once() -> None:
    err = _run("import logging; logging.basicConfig(format='%(name)s|%(levelname)s|%(message)s')")
    assert err.count("adacal.calibrate.thresholds|WARNING|calibration data: all 8 samples are identical") == 1, err
    assert "adacal.calibrate.thresholds: WARNING" not in err  # the fallback stepped aside


def test_fallback_steps_aside_for_any_other_handler(capsys: pytest.CaptureFixture[str]) -> None:
    logger = logging.getLogger("adacal_fallback_probe")
    logger.propagate = False
    fallback = FallbackHandler()
    logger.addHandler(fallback)
    try:
        logger.info("progress is not a warning")
        logger.warning("shown")
        assert capsys.readouterr().err == "adacal_fallback_probe: WARNING: shown\n"
        other = logging.StreamHandler(io.StringIO())
        logger.addHandler(other)
        logger.warning("not twice")
        assert capsys.readouterr().err == "" and "not twice" in other.stream.getvalue()
    finally:
        logger.handlers.clear()


def test_all_zero_data_with_biases_warns_instead_of_failing(caplog: pytest.LogCaptureFixture) -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(256, 5)).eval()
    snn = prepare(net, torch.randn(4, 3, 8, 8))
    with caplog.at_level(logging.WARNING, logger="adacal"):
        calibrate_thresholds(snn, torch.zeros(8, 3, 8, 8), timesteps=4)
    assert "all 8 samples are identical (it is all zeros)" in caplog.text


class GeluFirst(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(256, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(nn.functional.gelu(x))).flatten(1))


def test_nonlinear_op_before_the_first_neuron_is_noted(caplog: pytest.LogCaptureFixture) -> None:
    torch.manual_seed(0)
    x = torch.randn(8, 3, 8, 8)
    with caplog.at_level(logging.WARNING, logger="adacal"):
        snn, record = convert(GeluFirst().eval(), x, config=adacal.PipelineConfig(method="calibration", timesteps=2))
    assert snn.analog_prefix_ops == ("gelu (torch._C._nn.gelu)",)
    assert record["analog_prefix_ops"] == ["gelu (torch._C._nn.gelu)"]
    assert "1 op(s) before the first spiking neuron are not linear" in caplog.text
    assert "energy estimate does not count them" in caplog.text
    plain = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(256, 5)).eval()
    assert prepare(plain, x).analog_prefix_ops == ()


def test_cli_shows_warnings_even_when_quiet(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "gelu_models.py").write_text(textwrap.dedent("""
        import torch
        from torch import nn
        class Net(nn.Module):
            def __init__(self, num_classes):
                super().__init__()
                self.conv = nn.Conv2d(1, 4, 3, padding=1)
                self.fc = nn.Linear(256, num_classes)
            def forward(self, x):
                return self.fc(torch.relu(self.conv(nn.functional.gelu(x))).flatten(1))
        def net(num_classes=10):
            torch.manual_seed(0)
            return Net(num_classes)
    """))
    monkeypatch.syspath_prepend(str(tmp_path))
    assert cli.main(["convert", "--model", "gelu_models:net", "--dataset", "digits", "--method", "plain",
                     "--timesteps", "1", "--calib-size", "32", "--out", str(tmp_path / "snn"), "--quiet"]) == 0
    err = capsys.readouterr().err
    assert err.count("before the first spiking neuron are not linear") == 1, err
    assert '"analog_prefix_ops"' in (tmp_path / "snn" / "record.json").read_text()

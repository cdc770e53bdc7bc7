"""Bad input gives clear AdacalError subclasses, raised by explicit checks (never ``assert``)."""
from __future__ import annotations

import ast
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import adacal
from adacal.calibrate import calibrate_thresholds, correct_bias
from adacal.config import CalibrationConfig, NeuronConfig
from adacal.convert import prepare
from adacal.errors import (
    AdacalError,
    ConfigError,
    DataError,
    ModelError,
    ShapeError,
    TraceError,
    UnsupportedLayerError,
)
from adacal.neurons import IFNeuron

pytestmark = pytest.mark.usefixtures("single_thread")

CORE = ["neurons", "convert", "calibrate", "spiking_model.py", "config.py", "data.py", "errors.py"]


@pytest.fixture
def snn(small_cnn, images):
    return prepare(small_cnn, images(2))


def test_every_error_is_an_adacal_error():
    for cls in (ConfigError, DataError, ShapeError, TraceError, UnsupportedLayerError):
        assert issubclass(cls, AdacalError)
    assert issubclass(ShapeError, DataError) and issubclass(ConfigError, ValueError)


def test_empty_calibration_data(snn):
    with pytest.raises(DataError, match="calibration data is empty"):
        calibrate_thresholds(snn, [], timesteps=8)
    with pytest.raises(DataError, match="is empty"):
        calibrate_thresholds(snn, iter(()), timesteps=8)
    with pytest.raises(DataError, match="batch 0 is empty"):
        calibrate_thresholds(snn, [torch.empty(0, 3, 8, 8)], timesteps=8)
    with pytest.raises(DataError, match="is empty"):
        correct_bias(snn, [], timesteps=8)


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_data(snn, images, bad):
    x = images(2)
    x[1, 0, 3, 3] = bad
    with pytest.raises(DataError, match="batch 1 contains NaN or Inf"):
        calibrate_thresholds(snn, [images(2), x], timesteps=8, config=CalibrationConfig(num_batches=2))
    with pytest.raises(DataError, match="NaN or Inf"):
        snn.run(x, 4)
    with pytest.raises(DataError, match="NaN or Inf"):
        correct_bias(snn, x, timesteps=4)
    with pytest.raises(DataError, match="NaN or Inf"):
        prepare(nn.Sequential(nn.ReLU()), x)


@pytest.mark.parametrize("T", [0, -3, 2.5, True])
def test_timesteps_below_one_or_not_integer(snn, images, T):
    with pytest.raises(ConfigError, match=r"timesteps \(T\) must be an integer >= 1"):
        snn.run(images(2), T)
    with pytest.raises(ConfigError, match="timesteps"):
        calibrate_thresholds(snn, images(2), timesteps=T)
    with pytest.raises(ConfigError, match="timesteps"):
        correct_bias(snn, images(2), timesteps=T)


def test_bad_chunks(snn, images):
    with pytest.raises(ConfigError, match="timesteps"):
        snn.run(images(2), 4, time_chunk=0)
    with pytest.raises(ConfigError, match="timesteps"):
        snn.run(images(2), 4, batch_chunk=0)


@pytest.mark.parametrize("phi", [0, -1, 1.5])
def test_phi_below_one(snn, phi):
    with pytest.raises(ConfigError, match="phi"):
        IFNeuron(phi=phi)
    with pytest.raises(ConfigError, match="phi"):
        NeuronConfig(phi=phi)
    with pytest.raises(ConfigError, match="phi"):
        snn.neurons()["relu1"].set_phi(phi)


@pytest.mark.parametrize("rho", [0.0, 0.5, 0.999, float("nan"), float("inf")])
def test_rho_below_one(snn, rho):
    with pytest.raises(ConfigError, match="rho"):
        IFNeuron(rho=rho)
    with pytest.raises(ConfigError, match="rho"):
        NeuronConfig(rho=rho)
    with pytest.raises(ConfigError, match="rho"):
        snn.neurons()["relu1"].set_rho(rho)


def test_wrong_input_shape(snn, images):
    expected = r"input shape \(2, 4, 8, 8\) does not match the model: expected \[B, 3, 8, 8\]"
    with pytest.raises(ShapeError, match=expected):
        snn.run(torch.randn(2, 4, 8, 8), 4)
    with pytest.raises(ShapeError, match="does not match the model"):
        snn.run(torch.randn(3, 8, 8), 4)  # a single image without its batch axis
    with pytest.raises(ShapeError, match=r"expected \[T, B, 3, 8, 8\]"):
        snn.run(images(2), 4, sequence=True)  # a constant batch passed as a sequence
    with pytest.raises(ShapeError, match="3 frames but 4 timesteps"):
        snn.run(images(2).expand(3, -1, -1, -1, -1), 4, sequence=True)
    with pytest.raises(ModelError, match=r"model's own forward pass fails on the example input of shape \(2, 5"):
        prepare(nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU()), torch.randn(2, 5, 8, 8))
    with pytest.raises(DataError, match="expected a tensor"):
        snn.run([[1.0, 2.0]], 4)
    with pytest.raises(ShapeError, match="expected 1 tensor"):
        snn.run((images(2), images(2)), 4)  # two inputs for a one-input model


class DataDependent(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3)

    def forward(self, x):
        y = F.relu(self.conv(x))
        if y.sum() > 0:  # data-dependent control flow: fx cannot trace this
            y = y * 2
        return y


def test_untraceable_model_names_the_line(images):
    with pytest.raises(TraceError) as info:
        prepare(DataDependent().eval(), images(2))
    msg = str(info.value)
    assert "could not trace DataDependent" in msg
    assert "test_errors.py" in msg and "if y.sum() > 0:" in msg  # file, line and source
    assert "leaf_names=[...]" in msg  # and the way out


def test_unsupported_layer_is_an_adacal_error(images):
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3), nn.SiLU()).eval()
    with pytest.raises(AdacalError, match=r"3 \(SiLU\)"):
        prepare(model, images(2))


def test_bad_calibration_config():
    with pytest.raises(ConfigError, match="method must be one of"):
        CalibrationConfig(method="kl")
    with pytest.raises(ConfigError, match="granularity"):
        CalibrationConfig(granularity="neuron")
    with pytest.raises(ConfigError, match="percentile"):
        CalibrationConfig(percentile=0)
    with pytest.raises(ConfigError, match="num_batches"):
        CalibrationConfig(num_batches=0)


def test_core_validation_uses_no_assert():
    root = Path(adacal.__file__).parent
    files = [p for c in CORE for p in ((root / c).rglob("*.py") if (root / c).is_dir() else [root / c])]
    assert len(files) >= 15
    offenders = [
        f"{p.relative_to(root)}:{node.lineno}"
        for p in files
        for node in ast.walk(ast.parse(p.read_text()))
        if isinstance(node, ast.Assert)
    ]
    assert offenders == []


OPTIMISED_SCRIPT = textwrap.dedent(
    """
    import sys
    import torch
    from torch import nn
    from adacal.calibrate import calibrate_thresholds
    from adacal.convert import prepare
    from adacal.errors import ConfigError, DataError, ShapeError

    assert False, "asserts must be stripped under -O"
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4), nn.ReLU(),
                          nn.Flatten(), nn.Linear(4 * 16, 3)).eval()
    x = torch.randn(2, 3, 4, 4)
    snn = prepare(model, x)
    calibrate_thresholds(snn, x, timesteps=16)
    assert_ok = snn.run(x, 16).shape == (16, 2, 3)
    caught = []
    for call, exc in ((lambda: snn.run(x, 0), ConfigError),
                      (lambda: snn.run(torch.randn(2, 5, 4, 4), 4), ShapeError),
                      (lambda: calibrate_thresholds(snn, [], timesteps=4), DataError)):
        try:
            call()
        except exc as e:
            caught.append(type(e).__name__)
    print(sys.flags.optimize, assert_ok, ",".join(caught))
    """
)


def test_validation_survives_python_O():
    proc = subprocess.run([sys.executable, "-O", "-c", OPTIMISED_SCRIPT], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.split() == ["1", "True", "ConfigError,ShapeError,DataError"]

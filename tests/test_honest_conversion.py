"""Conversion stays honest outside the ReLU path: what cannot spike is named, measured or refused."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from adacal import convert
from adacal.calibrate import calibrate_thresholds
from adacal.config import CalibrationConfig, ConversionConfig, PipelineConfig
from adacal.convert import prepare
from adacal.energy import EnergyModel
from adacal.errors import ModelError, UnsupportedLayerError

pytestmark = pytest.mark.usefixtures("single_thread")


class NoReLU(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(8, 8)
        self.norm = nn.LayerNorm(8)
        self.act = nn.GELU()
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        t = self.act(self.norm(self.proj(x)))
        t, _ = self.attn(t, t, t)
        return self.head(t.mean(1))


def test_a_model_without_relu_names_every_op_that_cannot_spike():
    with pytest.raises(UnsupportedLayerError) as info:
        prepare(NoReLU().eval(), torch.randn(2, 5, 8))
    msg = str(info.value)
    assert "no ReLU-family activation" in msg
    for expected in ("norm (LayerNorm)", "act (GELU)", "attn (MultiheadAttention)"):
        assert f"  - {expected}" in msg, expected


class Square(nn.Module):
    """A nonlinear op between two ReLU layers, kept in floating point."""

    def __init__(self) -> None:
        super().__init__()
        self.c1 = nn.Conv2d(3, 8, 3, padding=1)
        self.c2 = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 4)

    def forward(self, x):
        h = F.relu(self.c1(x))
        h = F.relu(self.c2(h * h))
        return self.fc(h.mean((2, 3)))


def _square_snn(images):
    torch.manual_seed(0)
    x = images(8)
    snn = prepare(Square().eval(), x, config=ConversionConfig(analog=("mul",)))
    calibrate_thresholds(snn, x, timesteps=64, config=CalibrationConfig(method="max"))
    return snn, x


def test_analog_ops_converge_to_the_ann_as_t_grows(images):
    snn, x = _square_snn(images)
    ann = snn.ann_forward(x)
    err = {T: float((snn.run(x, T).mean(0) - ann).norm() / ann.norm()) for T in (16, 256, 1024)}
    assert err[1024] < err[256] < err[16] and err[1024] < 0.002, err
    # a per-step square of spike currents would stay biased however long it runs
    per_step = prepare(Square().eval(), x, config=ConversionConfig(analog=("mul",)))
    per_step.graph_module.load_state_dict(snn.graph_module.state_dict())
    for name in ("mul_analog_in0", "mul_analog_out0"):
        setattr(per_step.graph_module, name, nn.Identity())  # what analog=[...] did before
    biased = float((per_step.run(x, 1024).mean(0) - ann).norm() / ann.norm())
    assert biased > 10 * err[1024]


def test_analog_ops_give_the_same_outputs_however_a_run_is_cut(images):
    snn, x = _square_snn(images)
    full = snn.run(x, 12, time_chunk=None)
    for kw in ({"time_chunk": 1}, {"time_chunk": 5}, {"batch_chunk": 3}):
        torch.testing.assert_close(snn.run(x, 12, **kw), full, rtol=1e-5, atol=1e-6)


def test_convert_reports_the_measured_error_of_analog_ops(images):
    torch.manual_seed(0)
    _, rec = convert(Square().eval(), [images(16, seed=s) for s in range(2)],
                     config=PipelineConfig(method="calibration", timesteps=32,
                                           conversion=ConversionConfig(analog=("mul",))))
    assert set(rec["analog_ops"]) == {"mul_analog_out0"}
    assert 0 <= rec["analog_ops"]["mul_analog_out0"] < 0.5


class BatchMixing(nn.Module):
    """Attention over the first axis, which here holds the samples (batch_first=False on [B, L, E])."""

    def __init__(self) -> None:
        super().__init__()
        self.proj = nn.Linear(8, 8)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=False)
        self.head = nn.Linear(8, 3)

    def forward(self, x):
        t = F.relu(self.proj(x))
        t, _ = self.attn(t, t, t)
        return self.head(t.mean(1))


def test_an_analog_op_that_mixes_samples_is_rejected():
    torch.manual_seed(0)
    with pytest.raises(UnsupportedLayerError, match=r"attn \(MultiheadAttention\): mixes samples"):
        prepare(BatchMixing().eval(), torch.randn(4, 5, 8), config=ConversionConfig(analog=("attn",)))
    ok = BatchMixing()
    ok.attn.batch_first = True  # attention along the sequence: each sample on its own
    snn = prepare(ok.eval(), torch.randn(4, 5, 8), config=ConversionConfig(analog=("attn",)))
    kinds = {li.name: li.kind for li in EnergyModel.build(snn, torch.randn(1, 5, 8)).layers}
    assert kinds["attn"] == "analog"  # its MACs are priced every step


class Noisy(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(4, 4)

    def forward(self, x):
        return F.relu(self.fc(x)) + 0.01 * torch.rand_like(x)


def test_a_nondeterministic_model_gets_a_clear_error():
    with pytest.raises(ModelError, match="not deterministic"):
        prepare(Noisy().eval(), torch.randn(3, 4))


def test_non_finite_weights_are_named():
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    with torch.no_grad():
        model[2].weight[0, 0] = float("nan")
    with pytest.raises(ModelError, match=r"NaN or Inf values in \['2.weight'\]"):
        prepare(model.eval(), torch.randn(3, 4))

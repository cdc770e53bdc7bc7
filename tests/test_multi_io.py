"""Models with several inputs and several outputs go through every engine stage."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from adacal.calibrate import calibrate_thresholds, correct_bias
from adacal.config import CalibrationConfig
from adacal.convert import prepare
from adacal.energy import EnergyModel
from adacal.errors import ShapeError
from adacal.sensitivity import profile

pytestmark = pytest.mark.usefixtures("single_thread")


class TwoInTwoOut(nn.Module):
    """Per-point features + a category vector in; a per-point map and a global vector out."""

    def __init__(self) -> None:
        super().__init__()
        self.mlp1 = nn.Conv1d(3, 8, 1)
        self.mlp2 = nn.Conv1d(8, 8, 1)
        self.cat_fc = nn.Linear(4, 8)
        self.head = nn.Conv1d(16, 5, 1)
        self.cls = nn.Linear(8, 3)

    def forward(self, points, category):
        f = F.relu(self.mlp1(points))
        g = F.relu(self.mlp2(f)).mean(dim=2)  # global feature [B, 8]
        c = F.relu(self.cat_fc(category))  # [B, 8]
        per_point = torch.cat([f, (g + c)[:, :, None].expand_as(f)], dim=1)
        return self.head(per_point), self.cls(g)


def _batch(b: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, 3, 16, generator=g), F.one_hot(torch.arange(b) % 4, 4).float()


@pytest.fixture
def snn():
    torch.manual_seed(0)
    net = TwoInTwoOut().eval()
    s = prepare(net, _batch(4))
    calibrate_thresholds(s, [(_batch(8, 1), None)], timesteps=8, config=CalibrationConfig(method="max"))
    return s, net


def test_prepare_keeps_both_inputs_and_outputs(snn):
    s, net = snn
    x = _batch(3, 5)
    ann = s.ann_forward(x)
    ref = net(*x)
    assert isinstance(ann, tuple) and len(ann) == 2
    for a, b in zip(ann, ref):
        assert torch.allclose(a, b, atol=1e-6)
    assert s.input_shapes == ((3, 16), (4,))


def test_run_returns_per_step_outputs_for_each_output(snn):
    s, _ = snn
    x = _batch(3, 5)
    out = s.run(x, 8, time_chunk=None)
    assert out[0].shape == (8, 3, 5, 16) and out[1].shape == (8, 3, 3)
    streamed = s.run(x, 8, time_chunk=1)
    halves = s.run(x, 8, batch_chunk=2)
    for a, b in zip(out, streamed):
        assert torch.allclose(a, b, atol=1e-5)
    for a, b in zip(out, halves):
        assert torch.allclose(a, b, atol=1e-5)
    # the time average approaches the ANN as T grows
    long = s.run(x, 256)
    ann = s.ann_forward(x)
    err = max(float((o.mean(0) - a).abs().max() / a.abs().max()) for o, a in zip(long, ann))
    assert err < 0.1


def test_dict_inputs_by_keyword():
    torch.manual_seed(0)
    net = TwoInTwoOut().eval()
    pts, cat = _batch(4)
    s = prepare(net, {"points": pts, "category": cat})
    out = s.run({"points": pts, "category": cat}, 4)
    assert out[0].shape == (4, 4, 5, 16)


def test_calibration_correction_profile_and_energy_accept_tuples(snn):
    s, _ = snn
    data = [(_batch(8, 2), torch.zeros(8))]  # (inputs, target) batches, inputs a tuple
    errors = correct_bias(s, data, timesteps=8)
    assert set(errors) == set(s.neurons())
    table = profile(s, _batch(8, 3), knob="phi", candidates=[1, 2], timesteps=8)
    assert set(table.scores) == set(s.neurons())
    assert all(v >= 0 for row in table.scores.values() for v in row.values())
    model = EnergyModel.build(s, _batch(2))
    with s.record_activity():
        s.run(_batch(2), 8)
        counts = s.spike_counts()
    rep = model.estimate(counts, num_samples=2, timesteps=8)
    assert rep.snn_energy_pj > 0 and rep.ann_energy_pj > 0


def test_wrong_number_of_inputs_is_a_clear_error(snn):
    s, _ = snn
    with pytest.raises(ShapeError, match="expected 2 tensor"):
        s.run(torch.randn(2, 3, 16), 4)

"""A max over whole dimensions (PointNet's global max over points) converts to the rate-preserving max.

Every spelling — ``torch.max(x, 2)[0]``, ``x.max(dim=2).values``, ``amax``, ``adaptive_max_pool1d(x, 1)``,
``nn.AdaptiveMaxPool1d(1)`` — becomes one ``MaxOver`` module, moves in front of the ReLU's neuron
and pools accumulated currents, so the time-averaged output converges to the ANN as T grows.
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from adacal.calibrate import calibrate_thresholds
from adacal.config import CalibrationConfig
from adacal.convert import prepare
from adacal.errors import ConfigError, UnsupportedLayerError
from adacal.neurons import IFNeuron, MaxOver, SpikingMaxOver, spiking_max_pool

pytestmark = pytest.mark.usefixtures("single_thread")

SPELLINGS = ("torch.max", "method.values", "unpacked", "amax", "adaptive_max_pool1d", "AdaptiveMaxPool1d")


class GlobalMaxNet(nn.Module):
    """Per-point MLP, a global max over the points (dim 2) in one of several spellings, a classifier."""

    def __init__(self, spelling: str) -> None:
        super().__init__()
        self.spelling = spelling
        self.c1, self.c2 = nn.Conv1d(3, 16, 1), nn.Conv1d(16, 24, 1)
        self.pool = nn.AdaptiveMaxPool1d(1)
        self.fc = nn.Linear(24, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = F.relu(self.c2(F.relu(self.c1(x))))
        s = self.spelling
        if s == "torch.max":
            g = torch.max(h, 2)[0]
        elif s == "method.values":
            g = h.max(dim=-1, keepdim=True).values.flatten(1)
        elif s == "unpacked":
            g, _ = torch.max(h, dim=2)  # the indices are never used
        elif s == "amax":
            g = torch.amax(h, 2)
        elif s == "adaptive_max_pool1d":
            g = F.adaptive_max_pool1d(h, 1).squeeze(2)
        else:
            g = self.pool(h).flatten(1)
        return self.fc(g)


def _points(b: int = 8, n: int = 64, seed: int = 0) -> torch.Tensor:
    return torch.randn(b, 3, n, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("spelling", SPELLINGS)
def test_every_spelling_becomes_a_rate_preserving_max_in_front_of_the_neuron(spelling: str) -> None:
    torch.manual_seed(0)
    net = GlobalMaxNet(spelling).eval()
    x = _points()
    snn = prepare(net, x)
    gm = snn.graph_module
    maxes = [n for n in gm.graph.nodes if n.op == "call_module" and isinstance(gm.get_submodule(n.target), MaxOver)]
    assert len(maxes) == 1
    node = maxes[0]
    assert isinstance(gm.get_submodule(node.target), SpikingMaxOver)  # it pools spike-driven currents
    assert node.args[0].op == "call_module" and isinstance(gm.get_submodule(node.args[0].target), nn.Conv1d)
    assert all(isinstance(gm.get_submodule(u.target), IFNeuron) for u in node.users)  # then the neuron
    torch.testing.assert_close(snn.ann_forward(x), net(x))  # the rewrite is exact for the ANN


@pytest.mark.parametrize("spelling", ["torch.max", "AdaptiveMaxPool1d"])
def test_time_average_converges_to_the_ann(spelling: str) -> None:
    torch.manual_seed(1)
    net = GlobalMaxNet(spelling).eval()
    x = _points(8, 64, 2)
    snn = prepare(net, x)
    calibrate_thresholds(snn, [(x, None)], timesteps=32, config=CalibrationConfig(method="max"))
    with torch.no_grad():
        ann = net(x)
    errors = [float((snn.run(x, T).mean(0) - ann).abs().max() / ann.abs().max()) for T in (8, 64, 512)]
    assert errors[1] < errors[0] / 3 and errors[2] < errors[1] / 3  # ~1/T, observed 0.18 → 0.027 → 0.0026
    assert errors[2] < 0.01


def test_spiking_max_over_pools_accumulated_currents() -> None:
    pool = spiking_max_pool(MaxOver(2))
    assert isinstance(pool, SpikingMaxOver)
    z = torch.randn(6, 4, 3, 10, generator=torch.Generator().manual_seed(3))  # [T, B, C, N] currents
    pool.set_mode("snn")
    pool.timesteps = 6
    out = pool(z.flatten(0, 1)).view(6, 4, 3)
    # the running sum of the outputs is the max over points of the accumulated currents
    torch.testing.assert_close(out.cumsum(0), z.cumsum(0).amax(3))
    pool.set_mode("ann")
    torch.testing.assert_close(pool(z[0]), z[0].amax(2))


def test_a_per_step_max_would_be_biased() -> None:
    """Why accumulated currents: the per-step max of fluctuating currents overestimates the max of means."""
    g = torch.Generator().manual_seed(4)
    mean = torch.rand(2, 3, 16, generator=g)
    z = mean + torch.randn(64, 2, 3, 16, generator=g)  # noisy currents around the mean
    per_step = z.amax(3).mean(0)
    pool = SpikingMaxOver(2)
    pool.set_mode("snn")
    pool.timesteps = 64
    accumulated = pool(z.flatten(0, 1)).view(64, 2, 3).mean(0)
    target = z.mean(0).amax(2)
    assert float((accumulated - target).abs().max()) < 1e-5
    assert float((per_step - target).min()) > 0.5


def test_max_over_batch_or_with_indices_is_refused() -> None:
    with pytest.raises(ConfigError, match="non-batch"):
        MaxOver((0, 2))

    class WithIndices(GlobalMaxNet):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = F.relu(self.c2(F.relu(self.c1(x))))
            values, idx = torch.max(h, 2)
            return self.fc(values + idx.float())

    with pytest.raises(UnsupportedLayerError, match="returns indices"):
        prepare(WithIndices("torch.max").eval(), _points())


@pytest.mark.parametrize(("dim", "pieces"), [(2, 2), (1, 1)])
def test_max_of_a_channel_concatenation_splits_only_over_other_dims(dim: int, pieces: int) -> None:
    """``max(cat([a, b], 1), d) == cat([max(a, d), max(b, d)], 1)`` for a max over points (d = 2), so
    each part's max moves in front of its own neuron; a max over channels (d = 1) mixes the parts
    and stays one op."""

    class CatMax(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Conv1d(3, 4, 1), nn.Conv1d(3, 4, 1)
            self.fc = nn.Linear(8 if dim == 2 else 64, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            c = torch.cat([F.relu(self.a(x)), F.relu(self.b(x))], 1)
            return self.fc(F.relu(c.amax(dim)))

    torch.manual_seed(0)
    net = CatMax().eval()
    x = _points()
    snn = prepare(net, x)
    gm = snn.graph_module
    maxes = [n for n in gm.graph.nodes if n.op == "call_module" and isinstance(gm.get_submodule(n.target), MaxOver)]
    assert len(maxes) == pieces
    torch.testing.assert_close(snn.ann_forward(x), net(x))

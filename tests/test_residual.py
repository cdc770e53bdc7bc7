"""Residual adds moved into the neuron's step: the same bits as adding first, hooks still see the sum."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import adacal.spiking_model as spiking_model
from adacal.calibrate import calibrate_thresholds, correct_bias
from adacal.config import CalibrationConfig
from adacal.convert import prepare
from adacal.neurons import IFNeuron
from adacal.neurons.kernels import KERNEL
from adacal.neurons.residual import fuse_residual_adds, neuron_of_sum

pytestmark = pytest.mark.usefixtures("single_thread")


class Block(nn.Module):
    """stem → two convolutions with a skip connection → a neuron fed by their sum → head."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.a = nn.Conv2d(8, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 8, 3, padding=1)
        self.fc = nn.Linear(8, 3)

    def forward(self, x):
        s = F.relu(self.stem(x))
        r = F.relu(self.b(F.relu(self.a(s))) + s)
        return self.fc(r.mean((2, 3)))


@pytest.fixture(scope="module")
def residual_snn():
    from conftest import image_batch

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(3)
        snn = prepare(Block().eval(), image_batch(2, shape=(3, 16, 16)))
        cal = image_batch(8, seed=1, shape=(3, 16, 16))
        calibrate_thresholds(snn, [cal], timesteps=6, config=CalibrationConfig(num_batches=1, granularity="channel"))
        neurons = list(snn.neurons().values())
        neurons[-1].set_phi(3)
        correct_bias(snn, cal, timesteps=6)
        assert neurons[-1].bias_offset.dim() > 0  # the fused sum is followed by a per-channel bias
    finally:
        torch.set_num_threads(old)
    return snn


def _unfused(snn, monkeypatch):
    """Make ``snn``'s sessions run the graph as converted (the add separate)."""
    monkeypatch.setattr(spiking_model, "fuse_residual_adds", lambda gm: gm)
    for key in [k for k in snn._split_cache if isinstance(k, tuple) and k[0] == "session"]:
        del snn._split_cache[key]


def _clear_sessions(snn):
    for key in [k for k in snn._split_cache if isinstance(k, tuple) and k[0] == "session"]:
        del snn._split_cache[key]


def test_the_pass_rewrites_only_an_add_that_feeds_a_neuron(residual_snn):
    gm = fuse_residual_adds(residual_snn.simulation_graph())
    fused = [n for n in gm.graph.nodes if n.op == "call_function" and n.target is neuron_of_sum]
    assert len(fused) == 1
    assert isinstance(gm.get_submodule(fused[0].args[0].target), IFNeuron)
    # the graph calibration and profiling walk keeps the add and every neuron node
    plain = residual_snn.simulation_graph()
    assert not any(n.target is neuron_of_sum for n in plain.graph.nodes)
    assert fuse_residual_adds(gm) is gm  # nothing left to rewrite


@pytest.mark.parametrize("layout", ["contiguous", "channels_last"])
@pytest.mark.parametrize("fused", [True, False])
def test_fused_sum_gives_the_bits_of_adding_first(residual_snn, monkeypatch, layout, fused):
    x = torch.randn(5, 3, 16, 16, generator=torch.Generator().manual_seed(9))
    residual_snn.fused, residual_snn.layout = fused, layout
    steps_with_residual = []
    steps_ = KERNEL.steps_

    def spy(*args):
        steps_with_residual.append(args[-1] is not None)
        return steps_(*args)

    try:
        _clear_sessions(residual_snn)
        monkeypatch.setattr(KERNEL, "steps_", spy)
        with residual_snn.record_activity():
            got = [residual_snn.run(x, 7, time_chunk=None)]
        got += [residual_snn.run(x, 7, time_chunk=c) for c in (1, 3)]
        counts = residual_snn.spike_counts()
        # the compiled step took the residual term itself (channels-last: from the second run on, once
        # the plans keep the constant prefix's output channels-last like the convolution's)
        assert any(steps_with_residual) == fused
        if layout == "channels_last":
            sess = residual_snn.session(x)
            try:
                assert all(t.is_contiguous(memory_format=torch.channels_last) for t in sess._entry)
            finally:
                sess.close()
        _unfused(residual_snn, monkeypatch)
        with residual_snn.record_activity():
            expected = residual_snn.run(x, 7, time_chunk=None)
        assert all(torch.equal(g, expected) for g in got)
        for name, v in residual_snn.spike_counts().items():
            assert torch.equal(v, counts[name]), name
    finally:
        residual_snn.fused, residual_snn.layout = "auto", "auto"
        monkeypatch.undo()
        _clear_sessions(residual_snn)


def test_a_hooked_neuron_still_sees_the_sum(residual_snn, monkeypatch):
    x = torch.randn(3, 3, 16, 16, generator=torch.Generator().manual_seed(2))
    name, neuron = list(residual_snn.neurons().items())[-1]
    seen: list[torch.Tensor] = []
    handle = neuron.register_forward_pre_hook(lambda _m, args: seen.append(args[0].clone()))
    residual_snn.fused = True
    try:
        _clear_sessions(residual_snn)
        out = residual_snn.run(x, 4, time_chunk=None)
        _unfused(residual_snn, monkeypatch)
        expected = residual_snn.run(x, 4, time_chunk=None)
    finally:
        handle.remove()
        residual_snn.fused = "auto"
        monkeypatch.undo()
        _clear_sessions(residual_snn)
    assert len(seen) == 2 and torch.equal(seen[0], seen[1]), name
    assert torch.equal(out, expected)


def test_operands_the_step_cannot_take_are_added_first():
    torch.manual_seed(0)
    cases = {
        "memory orders differ": (torch.randn(4, 8, 16, 16).contiguous(memory_format=torch.channels_last),
                                 torch.randn(4, 8, 16, 16)),
        "broadcast": (torch.randn(4, 8, 16, 16), torch.randn(8, 1, 1)),
        "dtypes differ": (torch.randn(4, 8, 16, 16), torch.randn(4, 8, 16, 16, dtype=torch.float64)),
    }
    for why, (a, b) in cases.items():
        results = []
        for fused_sum in (True, False):
            n = IFNeuron()
            n.set_theta(torch.full((8,), 0.7))
            n.set_mode("snn")
            n.timesteps, n.fused = 2, True
            results.append(neuron_of_sum(n, a, b) if fused_sum else n(a + b))
        assert torch.equal(results[0], results[1]), why

"""A neuron type plugs in from one file: subclass, surrogate, register — conversion, calibration and
simulation then use it with no other change. The type is defined here, inside the test."""
from __future__ import annotations

import pytest
import torch
from torch import Tensor

from adacal import PipelineConfig, convert
from adacal.config import ConversionConfig, NeuronConfig
from adacal.errors import ConfigError
from adacal.neurons import NEURON_KINDS, IFNeuron, neuron_class, register_neuron, surrogate_rate

pytestmark = pytest.mark.usefixtures("single_thread")


def hard_reset_rate(a: Tensor, theta: Tensor, timesteps: int, phi: Tensor | float,
                    v_init: Tensor | float = 0.5) -> Tensor:
    """Average output of a hard-reset IF neuron (one spike at most per step, membrane back to 0 after
    it) for a constant input: first spike after ceil((1 − v_init)·θ/a) steps, then every ceil(θ/a)."""
    a, theta = torch.broadcast_tensors(torch.as_tensor(a), torch.as_tensor(theta, dtype=torch.as_tensor(a).dtype))
    pos = a > 0
    safe = torch.where(pos, a, torch.ones_like(a))
    first = torch.ceil((1 - torch.as_tensor(v_init, dtype=a.dtype)) * theta / safe).clamp(min=1)
    period = torch.ceil(theta / safe).clamp(min=1)
    count = torch.where(first <= timesteps, 1 + torch.floor((timesteps - first) / period), torch.zeros_like(a))
    return torch.where(pos, count, torch.zeros_like(a)) * theta / timesteps


class HardResetIF(IFNeuron):
    """IF neuron that resets to zero after a spike (loses the residue reset-by-subtraction keeps)."""

    surrogate = staticmethod(hard_reset_rate)

    def _spiking(self, x: Tensor) -> Tensor:
        steps = self.timesteps
        batch = x.shape[0] if self.constant_input else x.shape[0] // steps
        rest = x.shape[1:]
        th = self._bc(self.effective_threshold(), x)
        bias = self._bc(self.bias_offset, x)
        if self.v is None or self.v.shape[0] != batch:
            u0 = self._bc(self.v_init, x) * th + self._bc(self.v_offset, x)
            self.v = u0.expand(batch, *rest).clone()
        z = x if self.constant_input else x.view(steps, batch, *rest)
        out = torch.empty((steps, batch, *rest), dtype=x.dtype, device=x.device)
        for t in range(steps):
            self.v = self.v + (z if self.constant_input else z[t]) + bias
            fired = self.v >= th
            out[t] = fired.to(x.dtype) * th
            self.v = torch.where(fired, torch.zeros_like(self.v), self.v)
        if self.recording:
            total = torch.round(out / th).sum(dim=(0, 1))
            self.spike_count = total if self.spike_count.numel() == 0 else self.spike_count + total
        return out.view(steps * batch, *rest)


@pytest.fixture
def hard_reset(monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setitem(NEURON_KINDS, "hard_reset", HardResetIF)  # removed again after the test
    register_neuron("hard_reset", HardResetIF)
    return "hard_reset"


def test_the_surrogate_is_the_simulated_neuron() -> None:
    """The plug-in's contract: its closed form is what its simulation does on a constant input."""
    g = torch.Generator().manual_seed(0)
    n = HardResetIF()
    n.theta = torch.tensor(1.0)
    n.timesteps = 16
    n.set_mode("snn")
    n.constant_input = True
    x = torch.rand(2000, generator=g) * 1.2 - 0.1
    sim = n(x).view(16, -1).mean(0)
    closed = hard_reset_rate(x, torch.tensor(1.0), 16, 1, 0.5)
    assert (sim - closed).abs().gt(1e-5).float().mean() < 0.005  # float ties at exact period boundaries only
    # and it is a different neuron from the built-in one: reset by subtraction keeps the residue
    assert (closed - surrogate_rate(x, torch.tensor(1.0), 16, 1, 0.5)).abs().max() > 0.1


def test_a_registered_kind_is_converted_calibrated_and_run(hard_reset: str, small_cnn: torch.nn.Module,
                                                            images) -> None:
    x = images(32, seed=1)
    cfg = lambda kind: PipelineConfig(method="calibration", timesteps=16,  # noqa: E731
                                      conversion=ConversionConfig(neuron=NeuronConfig(kind=kind)))
    snn_hr, record = convert(small_cnn, [x[:16], x[16:]], config=cfg(hard_reset))
    snn_if, _ = convert(small_cnn, [x[:16], x[16:]], config=cfg("if"))
    assert snn_hr.neurons() and all(type(n) is HardResetIF for n in snn_hr.neurons().values())
    assert all(type(n) is IFNeuron for n in snn_if.neurons().values())
    # calibration fitted the thresholds to the plug-in's own surrogate, not the built-in one
    first = next(iter(snn_hr.neurons()))
    assert not torch.allclose(snn_hr.neurons()[first].theta, snn_if.neurons()[first].theta)
    # the analog mode follows the plug-in's closed form
    n = snn_hr.neurons()[first]
    channels = max(t.numel() for t in (n.theta, n.bias_offset, n.v_offset))
    a = torch.linspace(-0.5, 3.0, 50).view(1, 1, 5, 10).expand(1, channels, 5, 10).contiguous()
    n.set_mode("analog")
    n.timesteps = 16
    th = n._bc(n.effective_threshold(), a)
    frac = n._bc(n.v_init + n.v_offset / n.effective_threshold(), a)
    torch.testing.assert_close(n(a), hard_reset_rate(a + n._bc(n.bias_offset, a), th, 16, n.phi, frac))
    n.set_mode("ann")
    # the simulation runs the plug-in and tracks the ANN
    test = images(16, seed=7)
    out = snn_hr.run(test, 32).mean(0)
    ann = small_cnn(test)
    assert torch.isfinite(out).all()
    assert (out.argmax(1) == ann.argmax(1)).float().mean() >= 0.5


def test_unknown_kind_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="unknown neuron kind 'hard_rest'"):
        neuron_class("hard_rest")
    with pytest.raises(ConfigError, match="IFNeuron subclass"):
        register_neuron("bad", torch.nn.ReLU)  # type: ignore[arg-type]

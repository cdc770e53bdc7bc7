"""The IF neuron (method.md §1): reset by subtraction, burst firing, thresholds, state handling."""
from __future__ import annotations

from fractions import Fraction

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from adacal.config import ConversionConfig, NeuronConfig
from adacal.convert import prepare
from adacal.errors import ConfigError, ShapeError
from adacal.neurons import IFNeuron, if_step, surrogate_count

pytestmark = pytest.mark.usefixtures("single_thread")

# ρ candidates of the SSC search: {1, 1.5, ..., 10}.
RHOS = [1 + 0.5 * i for i in range(19)]


def _snn(neuron: IFNeuron, steps: int, *, constant: bool = False) -> IFNeuron:
    neuron.set_mode("snn")
    neuron.timesteps = steps
    neuron.constant_input = constant
    neuron.reset()
    return neuron


def _reference_rate(a: Fraction, theta: Fraction, T: int, phi: int, v_init: Fraction) -> Fraction:
    """Q(a) = θ'/T · clamp(floor(T·a/θ' + v_init), 0, φT), in exact rational arithmetic."""
    n = (T * a / theta + v_init).__floor__()
    return theta / T * min(max(n, 0), phi * T)


# Exactness argument for the property test below. Every value is dyadic: a = m·2^-8 with
# |m| ≤ 2^12, θ = 2^e with |e| ≤ 4, ρ = j/2 (j = 2..20) so θ' = ρθ = j·2^(e-1) has ≤ 5
# significant bits, u(0) = v_init·θ' with v_init ∈ {0, 1/4, 1/2}. The membrane is then always a
# multiple of 2^-8 below 2^16 in magnitude (T ≤ 64), i.e. ≤ 24 significant bits: every add and
# every subtraction of n·θ' is exact in float64 (53 bits). torch's floor division computes
# fmod (exact) and divides the exact multiple u − fmod(u, θ') by θ', so n is the exact floor.
# Hence the simulated neuron and the rational closed form must agree bit for bit.
@settings(max_examples=150, deadline=None)
@given(
    chans=st.lists(st.tuples(st.integers(-(2**12), 2**12), st.integers(-4, 4)), min_size=1, max_size=4),
    per_channel=st.booleans(),
    rho=st.sampled_from(RHOS),
    T=st.integers(1, 64),
    phi=st.integers(1, 5),
    v_init=st.sampled_from([0.0, 0.25, 0.5]),
    constant=st.booleans(),
)
def test_constant_input_rate_equals_closed_form_exactly(chans, per_channel, rho, T, phi, v_init, constant):
    m = [mc for mc, _ in chans]
    thetas = [2.0 ** e for _, e in chans] if per_channel else [2.0 ** chans[0][1]] * len(chans)
    a = torch.tensor(m, dtype=torch.float64).mul_(2.0**-8)[None, :]  # [B=1, C]
    n = IFNeuron(phi=phi, rho=rho, v_init=v_init).double()
    n.set_theta(torch.tensor(thetas if per_channel else thetas[0], dtype=torch.float64))
    _snn(n, T, constant=constant)
    x = a if constant else a.expand(T, -1).reshape(T, -1)
    out = n(x).view(T, 1, -1)
    for c, mc in enumerate(m):
        th_eff = Fraction(thetas[c]) * Fraction(rho)
        expected = _reference_rate(Fraction(mc, 2**8), th_eff, T, phi, Fraction(v_init))
        got = Fraction(float(out[:, 0, c].sum())) / T  # the sum of multiples of θ' is exact
        assert got == expected, (mc, thetas[c], rho, T, phi, v_init)
    # The surrogate calibration minimises is this very neuron, not an approximation of it: same
    # spike count N (θ'/T·N itself is not representable for every T, so compare N exactly).
    th = torch.tensor(thetas, dtype=torch.float64) * rho
    count = surrogate_count(a, th, T, phi, v_init)
    assert torch.equal(count[0], out.sum(0)[0] / th)


def test_if_step_matches_module_on_time_varying_input():
    torch.manual_seed(0)
    T, B, C = 12, 3, 4
    theta = torch.tensor([0.5, 1.0, 0.25, 2.0], dtype=torch.float64)
    neuron = IFNeuron(phi=3, rho=1.5).double()
    neuron.set_theta(theta)
    z = torch.randn(T, B, C, 5, dtype=torch.float64)
    out = _snn(neuron, T)(z.reshape(T * B, C, 5)).view(T, B, C, 5)

    th = (theta * 1.5).view(1, C, 1)
    u = 0.5 * th.expand(B, C, 5).clone()
    for t in range(T):
        n, u = if_step(u, z[t], th, 3)
        assert torch.equal(out[t], n * th)
        assert n.min() >= 0 and n.max() <= 3 and torch.equal(n, n.floor())
    assert torch.equal(neuron.v, u)  # the module's membrane is the functional one's
    assert (out / th > 1).any()  # bursts really happened (φ = 3 is exercised)


def test_if_step_resets_by_subtraction_and_keeps_negative_potential():
    theta = torch.tensor(1.0)
    n, u = if_step(torch.tensor([0.5]), torch.tensor([2.75]), theta, 5)
    assert n.item() == 3 and u.item() == pytest.approx(0.25)  # 3.25 − 3·1, not reset to zero
    n, u = if_step(torch.tensor([0.5]), torch.tensor([2.75]), theta, 2)
    assert n.item() == 2 and u.item() == pytest.approx(1.25)  # φ caps the burst, residue kept
    n, u = if_step(torch.tensor([0.5]), torch.tensor([-3.0]), theta, 2)
    assert n.item() == 0 and u.item() == pytest.approx(-2.5)  # u is not clamped below


def test_per_channel_thresholds_apply_to_their_channel():
    neuron = IFNeuron()
    neuron.set_theta(torch.tensor([1.0, 0.5]))
    x = torch.tensor([[0.5, 0.5]]).view(1, 2, 1, 1)  # same current, different θ per channel
    out = _snn(neuron, 8, constant=True)(x).view(8, 2)
    assert out.mean(0).tolist() == [0.5, 0.5]
    assert out[:, 0].unique().tolist() == [0.0, 1.0] and out[:, 1].unique().tolist() == [0.5]


def test_initial_potential_default_and_configurable():
    x = torch.full((1, 1), 0.3)
    default = _snn(IFNeuron(), 10, constant=True)(x)
    floor = _snn(IFNeuron(v_init=0.0), 10, constant=True)(x)
    assert default.sum().item() == 3.0  # round(10·0.3) with u(0) = θ/2
    assert floor.sum().item() == 3.0
    x = torch.full((1, 1), 0.26)
    assert _snn(IFNeuron(), 10, constant=True)(x).sum().item() == 3.0  # round(2.6)
    assert _snn(IFNeuron(v_init=0.0), 10, constant=True)(x).sum().item() == 2.0  # floor(2.6)
    assert IFNeuron().v_init.item() == 0.5


def test_v_init_from_conversion_config(small_cnn, images):
    cfg = ConversionConfig(neuron=NeuronConfig(phi=2, rho=1.5, v_init=0.25))
    snn = prepare(small_cnn, images(2), config=cfg)
    for n in snn.neurons().values():
        assert (int(n.phi), float(n.rho), float(n.v_init)) == (2, 1.5, 0.25)


def test_buffers_are_saved_and_moved_membrane_is_not():
    neuron = IFNeuron(phi=2, rho=1.5, v_init=0.25)
    neuron.set_theta(torch.tensor([1.0, 2.0, 3.0]))
    neuron.set_bias_offset(torch.tensor([0.1, 0.2, 0.3]))
    neuron.set_v_offset(torch.tensor([0.0, -0.5, 0.5]))
    _snn(neuron, 4)(torch.randn(4 * 2, 3))
    neuron.recording = True
    _snn(neuron, 4)(torch.randn(4 * 2, 3))
    assert neuron.v is not None and neuron.spike_count.numel() == 3
    sd = neuron.state_dict()
    assert set(sd) == {"theta", "phi", "rho", "v_init", "v_offset", "bias_offset"}  # no membrane, no counts

    fresh = IFNeuron()  # scalar buffers: per-channel shapes are adopted on load
    fresh.load_state_dict(sd)
    for k in sd:
        assert torch.equal(getattr(fresh, k), sd[k])
    assert fresh.v is None

    fresh.double()
    for k in ("theta", "rho", "v_init", "v_offset", "bias_offset"):
        assert getattr(fresh, k).dtype == torch.float64
    assert fresh.phi.dtype == torch.long  # an integer stays an integer


def test_membrane_persists_until_reset():
    neuron = _snn(IFNeuron(), 3, constant=True)
    x1, x2 = torch.full((2, 1), 0.4), torch.full((2, 1), 0.7)
    fresh = neuron(x2).clone()
    neuron.reset()
    neuron(x1)
    carried = neuron(x2)  # continues from x1's leftover potential
    neuron.reset()
    again = neuron(x2)
    assert torch.equal(again, fresh)
    assert not torch.equal(carried, fresh)


def test_spike_count_counts_every_spike_of_a_burst():
    neuron = IFNeuron(phi=4)
    neuron.set_theta(torch.tensor(0.5))
    neuron.recording = True
    x = torch.tensor([[1.6, 0.2, -1.0]])  # 3.2 θ, 0.4 θ, negative
    out = _snn(neuron, 10, constant=True)(x).view(10, 3)
    counts = neuron.spike_count
    assert torch.equal(counts, out.sum(0) / 0.5)
    assert counts[0].item() == 32  # round(10·3.2) spikes, 3 or 4 per step: bursts counted fully
    assert counts[1].item() == 4 and counts[2].item() == 0
    neuron.recording = False
    _snn(neuron, 10, constant=True)(x)
    assert counts[0].item() == 32  # not recording: unchanged


def test_ann_and_analog_modes():
    x = torch.linspace(-2, 9, 23).view(1, -1)
    relu = IFNeuron()
    assert torch.equal(relu(x), x.clamp(min=0))
    clipped = IFNeuron(clip=6.0)
    assert torch.equal(clipped(x), x.clamp(0, 6))
    relu.set_theta(torch.tensor(0.75))
    relu.set_mode("analog")
    relu.timesteps = 16
    analog = relu(x)
    spiking = _snn(relu, 16, constant=True)(x).view(16, 1, -1).mean(0)
    torch.testing.assert_close(analog, spiking, rtol=0, atol=1e-6)


def test_neuron_validation():
    with pytest.raises(ConfigError, match="phi"):
        IFNeuron(phi=0)
    with pytest.raises(ConfigError, match="phi"):
        IFNeuron(phi=1.5)
    with pytest.raises(ConfigError, match="rho"):
        IFNeuron(rho=0.99)
    with pytest.raises(ConfigError, match="v_init"):
        IFNeuron(v_init=1.0)
    n = IFNeuron()
    with pytest.raises(ConfigError, match="thresholds must be finite and > 0"):
        n.set_theta(torch.tensor([1.0, 0.0]))
    with pytest.raises(ConfigError, match="mode"):
        n.set_mode("spiking")
    n.set_theta(torch.ones(3))
    with pytest.raises(ShapeError, match="3 per-channel values"):
        _snn(n, 2)(torch.ones(2, 4))
    n.timesteps = 3
    with pytest.raises(ShapeError, match="multiple of the 3 timesteps"):
        n(torch.ones(4, 3))

"""Threshold calibration and bias/potential correction (method.md §2-3)."""
from __future__ import annotations

import logging

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from adacal.calibrate import calibrate_thresholds, correct_bias
from adacal.config import CalibrationConfig
from adacal.convert import prepare
from adacal.neurons import surrogate_rate

pytestmark = pytest.mark.usefixtures("single_thread")

BINS = 2048  # the histogram observers' resolution: a percentile is exact to one bin width


class Probe(nn.Module):
    """A neuron fed the raw input ``[B, C, L]``: its pre-activations are exactly the test data."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.relu = nn.ReLU()
        self.fc = nn.Linear(channels, 2)

    def forward(self, x):
        return self.fc(self.relu(x).mean(2))


def _heavy_tailed(batch: int, seed: int, scales=(1.0, 0.5, 2.0)) -> torch.Tensor:
    """Mostly small activations with rare large ones (what makes max thresholds wasteful)."""
    g = torch.Generator().manual_seed(seed)
    base = torch.randn(batch, len(scales), 64, generator=g)
    spikes = (torch.rand(batch, len(scales), 64, generator=g) < 0.01) * 8.0
    return (base + spikes) * torch.tensor(scales).view(1, -1, 1)


def _probe(phi: int = 1, rho: float = 1.0):
    snn = prepare(Probe(3).eval(), _heavy_tailed(2, 0))
    snn.neurons()["relu"].set_phi(phi)
    snn.neurons()["relu"].set_rho(rho)
    return snn, snn.neurons()["relu"]


def _exact_loss(data: torch.Tensor, clip_level: torch.Tensor, T: int, phi: int, rho: float,
                per_channel: bool) -> float:
    """‖Q(a) − ReLU(a)‖² of the neuron that will run (θ' = clip/φ), on the data itself, float64."""
    a = data.double()
    a = a.transpose(0, 1).reshape(data.shape[1], -1) if per_channel else a.reshape(1, -1)
    th = (clip_level.double() / phi).reshape(-1, 1)
    q = surrogate_rate(a, th, T, phi, 0.5)
    return float(((q - a.clamp(min=0)) ** 2).sum())


@pytest.mark.parametrize("granularity", ["layer", "channel"])
@pytest.mark.parametrize("phi,rho", [(1, 1.0), (4, 1.0), (2, 1.5)])
def test_max_threshold(granularity, phi, rho):
    snn, n = _probe(phi, rho)
    batches = [_heavy_tailed(8, 1), _heavy_tailed(8, 2) * 1.5]
    got = calibrate_thresholds(snn, batches, timesteps=8,
                               config=CalibrationConfig(method="max", granularity=granularity, num_batches=2))
    data = torch.cat(batches).clamp(min=0)
    peak = data.amax(dim=(0, 2)) if granularity == "channel" else data.max()
    # φ-aware: the clip level φ·ρ·θ (not θ) is what equals the observed maximum
    torch.testing.assert_close(n.theta * phi * rho, peak, rtol=1e-6, atol=0)
    assert n.theta.shape == ((3,) if granularity == "channel" else ())
    assert torch.equal(got["relu"], n.theta)


@pytest.mark.parametrize("granularity", ["layer", "channel"])
def test_percentile_threshold(granularity):
    snn, n = _probe(phi=2)
    data = torch.cat([_heavy_tailed(8, 3), _heavy_tailed(8, 4)])
    cfg = CalibrationConfig(method="percentile", percentile=99.0, granularity=granularity)
    calibrate_thresholds(snn, data, timesteps=8, config=cfg)
    vals = data.clamp(min=0)
    rows = vals.transpose(0, 1).reshape(3, -1) if granularity == "channel" else vals.reshape(1, -1)
    for level, row in zip((n.theta * 2).reshape(-1), rows):  # zeros count: a percentile of all values
        expected = np.quantile(row.numpy(), 0.99, method="inverted_cdf")
        assert expected <= level.item() <= expected + row.max().item() / BINS * 1.001
        assert level.item() < row.max().item()  # the outliers are cut


@pytest.mark.parametrize("method", ["max", "mse", "percentile"])
@pytest.mark.parametrize("granularity", ["layer", "channel"])
def test_two_batches_equal_their_concatenation(method, granularity):
    # differently scaled batches: an average of per-batch optima would not match
    b1, b2 = _heavy_tailed(8, 5), _heavy_tailed(8, 6) * 3.0
    cfg = dict(method=method, granularity=granularity)
    snn, n = _probe(phi=2)
    def theta(data, num_batches):
        config = CalibrationConfig(num_batches=num_batches, **cfg)
        return calibrate_thresholds(snn, data, timesteps=6, config=config)["relu"]

    split, joint, only_first = theta([b1, b2], 2), theta(torch.cat([b1, b2]), 1), theta([b1, b2], 1)
    # the histograms hold the same values in the same bins; only the float64 summation order differs
    torch.testing.assert_close(split, joint, rtol=1e-12, atol=0)
    assert not torch.allclose(split, only_first)  # the second batch really counted


@pytest.mark.parametrize("granularity", ["layer", "channel"])
@pytest.mark.parametrize("phi,rho,T", [(1, 1.0, 4), (4, 1.0, 4), (1, 2.0, 16), (2, 1.0, 32)])
def test_mse_threshold_minimises_the_surrogate_error(granularity, phi, rho, T):
    snn, n = _probe(phi, rho)
    data = torch.cat([_heavy_tailed(8, 7), _heavy_tailed(8, 8)])
    cfg = CalibrationConfig(granularity=granularity, num_batches=2)
    per_channel = granularity == "channel"
    calibrate_thresholds(snn, [data[:8], data[8:]], timesteps=T, config=cfg)
    clip = n.theta * rho * phi
    mse = _exact_loss(data, clip, T, phi, rho, per_channel)

    cfg_max = CalibrationConfig(method="max", granularity=granularity)
    calibrate_thresholds(snn, data, timesteps=T, config=cfg_max)
    peak = n.theta * rho * phi
    at_max = _exact_loss(data, peak, T, phi, rho, per_channel)
    assert mse <= at_max
    # brute force over the same candidate grid, with the exact loss: the moment-histogram search
    # finds the optimum up to its bin resolution (observed within 4e-6 of the best loss)
    grid = [peak * (1 - 0.01 * i) for i in range(95)]
    best = min(_exact_loss(data, g, T, phi, rho, per_channel) for g in grid) if not per_channel else sum(
        min(_exact_loss(data[:, c : c + 1], g[c : c + 1], T, phi, rho, True) for g in grid) for c in range(3)
    )
    assert mse <= best * (1 + 1e-4)
    if phi * T <= 4:  # few levels: rounding dominates and cutting the outliers pays off
        assert mse < 0.8 * at_max


def test_mse_search_uses_the_simulation_length():
    snn, n = _probe()
    data = _heavy_tailed(16, 9)
    short = calibrate_thresholds(snn, data, timesteps=2)["relu"]
    long = calibrate_thresholds(snn, data, timesteps=256)["relu"]
    assert short < long  # fewer steps: coarser rounding, a lower clip is optimal


def test_calibration_resets_corrections_and_flags_dead_channels(caplog):
    snn, n = _probe()
    n.set_bias_offset(torch.ones(3))
    n.set_v_offset(torch.ones(3))
    data = _heavy_tailed(8, 10)
    data[:, 1] = -1.0  # channel 1 never fires
    with caplog.at_level(logging.WARNING, logger="adacal"):
        calibrate_thresholds(snn, data, timesteps=8, config=CalibrationConfig(granularity="channel"))
    assert float(n.bias_offset.abs().sum()) == 0 and float(n.v_offset.abs().sum()) == 0
    assert n.theta[1].item() == 1.0 and (n.theta > 0).all()
    assert "1 channel(s) never activate" in caplog.text


class TwoConv(nn.Module):
    """conv-ReLU-conv-ReLU-pool-fc whose pre-activations are almost all positive.

    The bias correction removes a mean error through a ReLU: below zero a shift changes nothing,
    so how much of an injected bias one correction step removes depends on the fraction of
    active inputs. Biases at +3σ make that fraction ≈ 99.9%, so the test measures the correction
    mechanism itself (per channel, sign, scale, order) rather than the ReLU's dead zone.
    """

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 5, 3, padding=1)
        self.fc = nn.Linear(5, 2)

    def forward(self, x):
        y = F.relu(self.conv2(F.relu(self.conv1(x))))
        return self.fc(y.mean((2, 3)))

    @torch.no_grad()
    def centre(self, x: torch.Tensor) -> TwoConv:
        for conv, before in ((self.conv1, lambda v: v), (self.conv2, lambda v: F.relu(self.conv1(v)))):
            z = conv(before(x)) - conv.bias.view(1, -1, 1, 1)
            conv.bias.copy_(-z.mean((0, 2, 3)) + 3 * z.std((0, 2, 3)))
        return self.eval()


T_CORR = 64


def _layer_errors(snn, x, T=T_CORR) -> dict[str, torch.Tensor]:
    """Per-channel mean output error (SNN rate − ANN activation) of every neuron."""
    means: dict[str, dict[str, torch.Tensor]] = {"ann": {}, "snn": {}}
    neurons = snn.neurons()

    def hook(kind):
        return lambda m, _a, out: means[kind].__setitem__(names[id(m)], out.double().mean(dim=(0, 2, 3)))

    names = {id(n): k for k, n in neurons.items()}
    for kind in ("ann", "snn"):
        handles = [n.register_forward_hook(hook(kind)) for n in neurons.values()]
        try:
            snn.ann_forward(x) if kind == "ann" else snn.run(x, T, time_chunk=None)  # one call: all T
        finally:
            for h in handles:
                h.remove()
    return {k: (means["snn"][k] - means["ann"][k]).float() for k in neurons}  # float64 sums, as adacal


@pytest.fixture
def two_conv(images):
    torch.manual_seed(0)
    x = images(32, seed=20)
    model = TwoConv().centre(x)
    snn = prepare(model, x[:4])
    calibrate_thresholds(snn, x, timesteps=T_CORR, config=CalibrationConfig(granularity="channel"))
    return snn


# At least this fraction of an injected per-channel bias error must be gone after one correction.
REMOVED = 0.9


@pytest.mark.parametrize("target", ["bias", "potential"])
def test_correction_removes_an_injected_bias_error(two_conv, images, target):
    snn = two_conv
    n1 = snn.neurons()["relu"]
    delta = torch.tensor([0.3, -0.25, 0.2, -0.35]) * n1.theta  # a known per-channel error
    n1.set_bias_offset(delta)  # the SNN's layer-1 current is off by δ: like a bias error in conv1
    held_out = images(32, seed=21)
    before = _layer_errors(snn, held_out)
    torch.testing.assert_close(before["relu"], delta, rtol=0.1, atol=0)  # the injection took effect

    errors = correct_bias(snn, images(32, seed=22), timesteps=T_CORR, target=target)
    assert list(errors) == ["relu", "relu_1"]  # topological order
    after = _layer_errors(snn, held_out)
    assert (after["relu"].abs() <= (1 - REMOVED) * delta.abs()).all(), (after["relu"], delta)
    # the propagated error downstream is gone too (layer 2 was corrected after layer 1)
    assert after["relu_1"].abs().max() <= (1 - REMOVED) * before["relu_1"].abs().max()
    if target == "bias":
        residue = 0.1 * float(delta.abs().min())
        torch.testing.assert_close(n1.bias_offset, torch.zeros(4), rtol=0, atol=residue)
    else:
        assert float(n1.bias_offset.abs().max()) == pytest.approx(float(delta.abs().max()))  # untouched
        torch.testing.assert_close(n1.v_offset, -T_CORR * delta, rtol=0.1, atol=0)


def test_correction_is_sequential(two_conv, images):
    """Computing every layer's error from one uncorrected run would correct layer 2 for an error
    that layer 1's own correction removes: layer 2 would end up off by minus that error."""
    snn = two_conv
    n1, n2 = snn.neurons()["relu"], snn.neurons()["relu_1"]
    n1.set_bias_offset(torch.tensor([0.4, 0.4, -0.4, 0.4]) * n1.theta)
    x = images(32, seed=23)
    before = _layer_errors(snn, x)["relu_1"]
    assert before.abs().max() > 0.05 * n2.theta.max()  # layer 1's error really reaches layer 2
    correct_bias(snn, x, timesteps=T_CORR)
    after = _layer_errors(snn, x)["relu_1"]
    assert after.abs().max() <= (1 - REMOVED) * before.abs().max()


def test_correction_reduces_quantisation_error_of_a_clean_model(small_cnn, images):
    snn = prepare(small_cnn, images(4))
    x = images(32, seed=24)
    T = 8
    calibrate_thresholds(snn, x, timesteps=T)
    before = {k: float(v.abs().mean()) for k, v in _layer_errors(snn, x, T).items()}
    reported = correct_bias(snn, x, timesteps=T)
    after = {k: float(v.abs().mean()) for k, v in _layer_errors(snn, x, T).items()}
    assert reported["relu1"] == pytest.approx(before["relu1"], rel=1e-5)  # the same measurement
    for k in before:
        assert after[k] < 0.5 * before[k], (k, before[k], after[k])


def test_correction_target_validated(two_conv, images):
    from adacal.errors import ConfigError

    with pytest.raises(ConfigError, match="'bias' or 'potential'"):
        correct_bias(two_conv, images(2), timesteps=4, target="weights")


def test_correction_does_not_depend_on_how_runs_are_chunked(two_conv, images):
    snn = two_conv
    x = images(8, seed=25)
    start = {k: v.clone() for k, v in snn.state_dict().items()}
    correct_bias(snn, x, timesteps=16)
    whole = {k: n.bias_offset.clone() for k, n in snn.neurons().items()}
    snn.load_state_dict(start)
    snn.AUTO_CHUNK_BYTES = 1  # run()'s default chunking would now stream one step per call
    try:
        correct_bias(snn, x, timesteps=16)
    finally:
        del snn.AUTO_CHUNK_BYTES
    for k, n in snn.neurons().items():
        assert torch.equal(n.bias_offset, whole[k]), k


def test_correction_keeps_to_its_memory_budget(small_cnn, images, caplog):
    """All T steps of every correction sample are simulated in one pass; over the budget it uses the
    first samples only (SNN and ANN alike) and says so — the same as correcting on those samples."""
    from adacal.calibrate.correction import correction_capacity

    x, T = images(16, seed=5, shape=(3, 64, 64)), 8
    snn = prepare(small_cnn, x)
    calibrate_thresholds(snn, [x], timesteps=T)
    ref = prepare(small_cnn, x)
    ref.load_state_dict(snn.state_dict())
    row = snn.measured_row_bytes(x)  # the largest activation of one sample: 16 channels of 64x64 floats
    assert row == 16 * 64 * 64 * 4
    cap = correction_capacity(snn, x, T, False, 8)
    assert cap == (8 << 20) // (row * T) == 4
    with caplog.at_level(logging.WARNING, logger="adacal.calibrate.correction"):
        correct_bias(snn, None, timesteps=T, batches=[x], memory_mb=8)
    assert "uses 4 of its 16 samples" in caplog.text
    correct_bias(ref, None, timesteps=T, batches=[x[:4]])
    for (k, a), b in zip(snn.neurons().items(), ref.neurons().values()):
        torch.testing.assert_close(a.bias_offset, b.bias_offset, msg=k)

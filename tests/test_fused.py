"""The fused (torch.compile) neuron update: bit-identical to eager, bounded recompiles, fallbacks.

Compiling costs seconds once per process (inductor); the compiled kernel is process-wide, so
these tests share it.
"""
from __future__ import annotations

import logging

import pytest
import torch
import torch.nn.functional as F
from torch import nn

import adacal.neurons.module as neuron_module
from adacal.calibrate import calibrate_thresholds, correct_bias
from adacal.config import CalibrationConfig
from adacal.convert import prepare
from adacal.errors import ConfigError
from adacal.neurons.kernels import KERNEL, MAX_VARIANTS, FusedKernel, if_update_eager_

pytestmark = pytest.mark.usefixtures("single_thread")

#: The variant keys (no residual term, bias is None, rows == 1, positions == 1, rows == positions)
#: that can occur.
KEYS = {(r, b, *sizes) for r in (True, False) for b in (True, False)
        for sizes in ((True, True, True), (True, False, False), (False, True, False), (False, False, False),
                      (False, False, True))}


def _adversarial(u: torch.Tensor, th: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """Inputs that land the membrane on multiples k·θ of the threshold and on their neighbours."""
    dt = u.dtype
    z = (torch.randn(u.shape, generator=g, dtype=torch.float64) * 2).to(dt) * th
    target = torch.randint(-2, 7, u.shape, generator=g).to(dt) * th
    pick = torch.rand(u.shape, generator=g)
    # u + (target − u) rounds to target or next to it; the neighbours bracket it
    z = torch.where(pick < 0.3, target - u, z)
    z = torch.where((pick >= 0.3) & (pick < 0.5), torch.nextafter(target - u, torch.tensor(1e30, dtype=dt)), z)
    return torch.where((pick >= 0.5) & (pick < 0.7), torch.nextafter(target - u, torch.tensor(-1e30, dtype=dt)), z)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("rows", [1, 5])
@pytest.mark.parametrize("with_bias", [False, True])
def test_fused_step_is_bit_identical_to_eager(dtype, rows, with_bias):
    g = torch.Generator().manual_seed(rows + 10 * with_bias)
    P = 1031
    th = ((torch.rand(P, generator=g, dtype=torch.float64) + 0.3) * 1.5).to(dtype)  # not powers of 2
    th[:64] = 2.0 ** torch.randint(-4, 4, (64,), generator=g).to(dtype)
    bias = (torch.randn(P, generator=g, dtype=torch.float64) * 0.1).to(dtype) if with_bias else None
    phi = torch.tensor(3.0, dtype=dtype)
    u_e = (torch.rand(rows, P, generator=g, dtype=torch.float64).to(dtype) * th)
    u_f = u_e.clone()
    naive_differs = 0
    for _ in range(12):
        zb = _adversarial(u_e, th, g)  # the current after the bias is what must be adversarial
        z = (zb if bias is None else zb - bias).unsqueeze(0)
        zb = z[0] if bias is None else z[0] + bias
        naive = torch.floor((u_e + zb) / th)  # the cheap floor the fused kernel corrects
        exact = torch.div(u_e + zb, th, rounding_mode="floor")
        naive_differs += int((naive != exact).sum())
        out_e, out_f = torch.empty_like(u_e), torch.empty_like(z)
        if_update_eager_(u_e, zb, th, phi, out_e, torch.empty_like(u_e))
        assert KERNEL.steps_(u_f, z.contiguous(), bias, th, phi, out_f) == 1
        assert torch.equal(out_f[0], out_e) and torch.equal(u_f, u_e)
    assert naive_differs > 0  # the adversarial inputs do hit the cases a plain floor gets wrong


@pytest.mark.parametrize("rows, per, with_bias, with_residual",
                         [(1, 4099, False, False), (3, 4099, True, False), (3, 4099, True, True), (6, 6, False, False),
                          (1, 1, True, False)])
def test_direct_calls_match_guarded_calls(rows, per, with_bias, with_residual):
    """Compiled variants called without dynamo (every size specialisation in the key) give the
    bits of the guarded call, step after step; the common variants really run direct."""
    g = torch.Generator().manual_seed(rows * per)
    th = torch.rand(per, generator=g) + 0.2
    bias = torch.randn(per, generator=g) * 0.1 if with_bias else None
    phi = torch.tensor(2.0)
    u0 = torch.rand(rows, per, generator=g) * th
    z = torch.stack([_adversarial(u0, th, g) for _ in range(5)])
    r = torch.randn(z.shape, generator=g) if with_residual else None
    results = []
    for direct in (False, True):
        KERNEL.direct_calls = direct
        try:
            u, out = u0.clone(), torch.empty_like(z)
            assert KERNEL.steps_(u, z, bias, th, phi, out, r) == 5
            results.append((u, out))
        finally:
            KERNEL.direct_calls = True
    assert torch.equal(results[0][0], results[1][0]) and torch.equal(results[0][1], results[1][1])
    key = ("cpu", torch.float32, r is None, bias is None, rows == 1, per == 1, rows == per)
    if rows != per:
        assert KERNEL.direct[key].checked


def test_a_direct_call_that_differs_is_rejected(caplog):
    """The first direct step of a variant runs beside the guarded call: a mismatch (here a
    corrupted graph) keeps that variant on guarded calls, with a warning, and the result exact."""
    u0, z = torch.rand(2, 4099) + 0.1, torch.rand(3, 2, 4099)
    th, phi = torch.full((4099,), 0.3), torch.tensor(2.0)
    KERNEL.direct_calls = False
    expected_u, expected = u0.clone(), torch.empty_like(z)
    KERNEL.steps_(expected_u, z, None, th, phi, expected)
    KERNEL.direct_calls = True
    key = ("cpu", torch.float32, True, True, False, False, False)
    good = KERNEL.direct[key]
    KERNEL.direct[key] = type(good)(lambda *a: good.fn(*a) or a[good.bind.index(("arg", "out"))].add_(1.0), good.bind)
    try:
        u, out = u0.clone(), torch.empty_like(z)
        with caplog.at_level(logging.WARNING, logger="adacal"):
            KERNEL.steps_(u, z, None, th, phi, out)
        assert key in KERNEL.direct_rejected and key not in KERNEL.direct
        assert "differed from the guarded one" in caplog.text
        assert torch.equal(u, expected_u) and torch.equal(out, expected)
    finally:
        KERNEL.direct_rejected.discard(key)
        KERNEL.direct[key] = good


class Net(nn.Module):
    """Residual block, max-pool, per-channel BN: every stateful part, at sizes above 2 K per row."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 8, 3, padding=1)
        self.bn = nn.BatchNorm2d(8)
        self.a = nn.Conv2d(8, 8, 3, padding=1)
        self.b = nn.Conv2d(8, 8, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.fc1 = nn.Linear(8 * 64, 32)
        self.fc2 = nn.Linear(32, 4)

    def forward(self, x):
        s = F.relu(self.bn(self.stem(x)))
        r = F.relu(self.b(F.relu(self.a(s))) + s)
        return self.fc2(F.relu(self.fc1(self.pool(r).flatten(1))))


@pytest.fixture(scope="module")
def burst_snn():
    """Per-channel thresholds, bias correction, φ = 3 and ρ = 1.5 on some neurons."""
    from conftest import image_batch, warm_batchnorm

    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(5)
        shape = (3, 16, 16)
        model = warm_batchnorm(Net(), [image_batch(16, seed=60, shape=shape)])
        snn = prepare(model, image_batch(4, shape=shape))
        cal = [image_batch(8, seed=s, shape=shape) for s in range(2)]
        calibrate_thresholds(snn, cal, timesteps=12, config=CalibrationConfig(num_batches=2, granularity="channel"))
        neurons = list(snn.neurons().values())
        neurons[1].set_phi(3)
        neurons[2].set_rho(1.5)
        neurons[-1].set_phi(2)
        correct_bias(snn, cal[0], timesteps=12)
        assert any(n.bias_offset.dim() > 0 for n in neurons)
    finally:
        torch.set_num_threads(old)
    return snn


def test_fused_model_equals_eager_for_every_chunking(burst_snn):
    x = torch.randn(5, 3, 16, 16, generator=torch.Generator().manual_seed(7))
    T = 12
    burst_snn.fused = False
    try:
        with burst_snn.record_activity():
            expected = burst_snn.run(x, T, time_chunk=None)
        counts = burst_snn.spike_counts()
        burst_snn.fused = True
        with burst_snn.record_activity():
            assert torch.equal(burst_snn.run(x, T, time_chunk=None), expected)
        for k, v in burst_snn.spike_counts().items():
            assert torch.equal(v, counts[k]), k
        for kw in ({"time_chunk": 1}, {"time_chunk": 5}, {"batch_chunk": 2, "time_chunk": 3}):
            assert torch.equal(burst_snn.run(x, T, **kw), expected), kw
        with burst_snn.session(x) as sess:  # early exit changes the rows of every later step
            head = sess.advance(3)
            sess.keep(torch.tensor([0, 4]))
            tail = sess.advance(T - 3)
        assert torch.equal(head, expected[:3]) and torch.equal(tail, expected[3:, [0, 4]])
        assert torch.equal(burst_snn.run(x[:1], T), expected[:, :1])  # batch of one: other variant
        assert (expected != 0).any()
    finally:
        burst_snn.fused = "auto"


@pytest.mark.parametrize("fused", [True, False])
def test_channels_last_layout_changes_no_bit(burst_snn, fused):
    """Convolutions on channels-last input (and neurons keeping that memory order) give the
    contiguous run's outputs and spike counts exactly, for every chunking and early exit."""
    x = torch.randn(5, 3, 16, 16, generator=torch.Generator().manual_seed(8))
    T = 12
    burst_snn.fused = fused
    try:
        burst_snn.layout = "contiguous"
        with burst_snn.record_activity():
            expected = burst_snn.run(x, T, time_chunk=None)
        counts = burst_snn.spike_counts()
        burst_snn.layout = "channels_last"
        with burst_snn.record_activity():
            assert torch.equal(burst_snn.run(x, T, time_chunk=None), expected)
        for k, v in burst_snn.spike_counts().items():
            assert torch.equal(v, counts[k]), k
        plans = burst_snn._block_plans()
        chosen = [v for k, v in plans.items() if isinstance(k, tuple) and k[-1] == "channels_last"]
        assert torch.channels_last in chosen  # some convolution really ran channels-last
        for kw in ({"time_chunk": 1}, {"time_chunk": 5}, {"batch_chunk": 2, "time_chunk": 3}):
            assert torch.equal(burst_snn.run(x, T, **kw), expected), kw
        with burst_snn.session(x) as sess:  # early exit: the membranes are re-indexed mid-run
            head = sess.advance(3)
            sess.keep(torch.tensor([0, 4]))
            tail = sess.advance(T - 3)
        assert torch.equal(head, expected[:3]) and torch.equal(tail, expected[3:, [0, 4]])
    finally:
        burst_snn.fused, burst_snn.layout = "auto", "auto"


def test_unknown_layout_is_a_clear_error(burst_snn):
    burst_snn.layout = "nhwc"
    try:
        with pytest.raises(ConfigError, match="layout"):
            burst_snn.run(torch.zeros(1, 3, 16, 16), 2)
    finally:
        burst_snn.layout = "auto"


def test_recompilations_are_bounded(burst_snn):
    """One compiled function per (device, dtype) serves every layer shape, batch size and
    chunking: bias or not × one row or more = at most 4 graphs (kernels.MAX_VARIANTS with the rare
    size cases, whichever tests ran before)."""
    key = ("cpu", torch.float32)
    before = KERNEL.compiles_by_key.get(key, 0)
    burst_snn.fused = True
    try:
        for batch in (1, 2, 3, 7):
            for chunk in (1, 4, None):
                burst_snn.run(torch.randn(batch, 3, 16, 16), 8, time_chunk=chunk)
    finally:
        burst_snn.fused = "auto"
    assert len(KEYS) == MAX_VARIANTS
    after = KERNEL.compiles_by_key[key]
    assert after - before <= 4 and 1 <= after <= MAX_VARIANTS
    assert all(k[2:] in KEYS for k in KERNEL.direct)


def test_eager_when_torch_compile_is_disabled(burst_snn, monkeypatch, caplog):
    x = torch.randn(2, 3, 16, 16)
    burst_snn.fused = False
    expected = burst_snn.run(x, 6)
    monkeypatch.setenv("TORCHDYNAMO_DISABLE", "1")
    burst_snn.fused = True
    try:
        with caplog.at_level(logging.INFO, logger="adacal"):
            assert torch.equal(burst_snn.run(x, 6), expected)
    finally:
        burst_snn.fused = "auto"
    assert "neuron update eager (torch.compile disabled by TORCHDYNAMO_DISABLE)" in caplog.text


def test_eager_when_compilation_fails(burst_snn, monkeypatch, caplog):
    class Broken(FusedKernel):
        def _compiled(self, device_type, dtype):
            def fail(*_args):
                raise RuntimeError("no C++ compiler")
            return fail

    broken = Broken()
    monkeypatch.setattr(neuron_module, "KERNEL", broken)
    x = torch.randn(2, 3, 16, 16)
    burst_snn.fused = False
    expected = burst_snn.run(x, 6)
    burst_snn.fused = True
    try:
        with caplog.at_level(logging.WARNING, logger="adacal"):
            assert torch.equal(burst_snn.run(x, 6), expected)
    finally:
        burst_snn.fused = "auto"
    assert "falling back to eager" in caplog.text and "no C++ compiler" in broken.failed["cpu"]


def test_auto_leaves_small_steps_half_precision_and_gradients_to_eager(burst_snn):
    assert KERNEL.unavailable(torch.device("cpu"), torch.float16) is not None
    assert KERNEL.unavailable(torch.device("meta"), torch.float32) is not None
    before = dict(KERNEL.compiles_by_key)
    burst_snn.run(torch.randn(1, 3, 16, 16), 2, time_chunk=1)  # 512-element steps: eager in auto
    assert KERNEL.compiles_by_key == before
    with pytest.raises(ConfigError, match="fused must be"):
        burst_snn.fused = "always"
        try:
            burst_snn.run(torch.randn(1, 3, 16, 16), 2)
        finally:
            burst_snn.fused = "auto"


def test_auto_fuses_by_step_and_call_size(monkeypatch):
    """``fused="auto"`` compiles a step of ≥ FUSED_MIN_ELEMENTS only in a call of ≥ FUSED_MIN_CALL_ELEMENTS
    (one small streaming step does not repay preparing the compiled call); True always compiles."""
    from adacal.neurons import IFNeuron
    from adacal.neurons.kernels import FUSED_MIN_CALL_ELEMENTS, FUSED_MIN_ELEMENTS

    calls = []
    real = KERNEL.steps_
    monkeypatch.setattr(KERNEL, "steps_", lambda u, z, *a: calls.append(z.shape) or real(u, z, *a))
    n = IFNeuron(phi=2)
    n.set_mode("snn")
    per = FUSED_MIN_ELEMENTS  # one sample's step: just large enough
    steps_needed = FUSED_MIN_CALL_ELEMENTS // per
    for steps, fused, expect in ((1, "auto", 0), (steps_needed, "auto", 1), (1, True, 1)):
        calls.clear()
        n.fused, n.timesteps = fused, steps
        n.reset()
        n(torch.randn(steps, 4, per // 4))
        assert len(calls) == expect, (steps, fused)

"""The time loop: batched vs streaming, batch chunks, constant prefix, sessions, sequences, dtypes."""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from adacal.calibrate import calibrate_thresholds, correct_bias
from adacal.config import CalibrationConfig
from adacal.convert import prepare
from adacal.neurons import SpikingMaxPool

pytestmark = pytest.mark.usefixtures("single_thread")


class ResPoolNet(nn.Module):
    """Residual block, a max-pool of spike-driven currents and a per-channel BN: every stateful part."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 6, 3, padding=1)
        self.bn = nn.BatchNorm2d(6)
        self.a = nn.Conv2d(6, 6, 3, padding=1)
        self.b = nn.Conv2d(6, 6, 3, padding=1)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(6 * 16, 4)

    def forward(self, x):
        s = F.relu(self.bn(self.stem(x)))
        r = F.relu(self.b(F.relu(self.a(s))) + s)
        return self.fc(self.pool(r).flatten(1))


def _calibrated(model, images, T=16, granularity="channel", correction=True):
    snn = prepare(model.eval(), images(4))
    cal = [images(8, seed=s) for s in range(2)]
    cfg = CalibrationConfig(num_batches=2, granularity=granularity)
    calibrate_thresholds(snn, cal, timesteps=T, config=cfg)
    if correction:
        correct_bias(snn, cal[0], timesteps=T)
    return snn


@pytest.fixture
def res_snn(images, warm_bn):
    torch.manual_seed(3)
    model = warm_bn(ResPoolNet(), [images(16, seed=50)])
    snn = _calibrated(model, images)
    assert any(isinstance(m, SpikingMaxPool) for m in snn.modules())
    return snn


def test_time_chunks_give_identical_outputs(res_snn, images):
    x = images(3, seed=11)
    T = 10
    full = res_snn.run(x, T, time_chunk=None)
    assert full.shape == (T, 3, 4)
    for chunk in (1, 3, 4, 10, 25, "auto"):  # 3 and 4 leave a remainder; 25 > T
        assert torch.equal(res_snn.run(x, T, time_chunk=chunk), full), chunk
    # and the simulation is not trivially constant: the outputs change over time
    assert not torch.equal(full[0], full[-1])


def test_batch_chunks_give_the_same_result(res_snn, images):
    x = images(5, seed=12)
    full = res_snn.run(x, 12)
    for bc in (1, 2, 5, 8):
        torch.testing.assert_close(res_snn.run(x, 12, batch_chunk=bc), full, rtol=0, atol=0)
    torch.testing.assert_close(res_snn.run(x, 12, batch_chunk=2, time_chunk=5), full, rtol=0, atol=0)


def test_first_layer_computed_once_for_constant_input(res_snn, images):
    assert res_snn.has_constant_prefix
    stem = res_snn.graph_module.get_submodule("stem")
    rows: list[int] = []
    handle = stem.register_forward_hook(lambda _m, args, _o: rows.append(args[0].shape[0]))
    try:
        res_snn.run(images(3), 12, time_chunk=1)
        assert rows == [3]  # once, for the 3 samples, not once per step
        rows.clear()
        res_snn.run(images(3).expand(12, -1, -1, -1, -1), 12, sequence=True, time_chunk=None)
        assert rows == [36]  # event input varies over time: every frame goes through the stem
    finally:
        handle.remove()


def test_no_constant_prefix_when_the_input_skips_ahead(images):
    class Skip(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3, padding=1)
            self.fc = nn.Linear(3 * 64, 2)

        def forward(self, x):
            return self.fc((F.relu(self.conv(x)) + x).flatten(1))  # the raw input joins the spiking path

    torch.manual_seed(0)
    model = Skip().eval()
    snn = prepare(model, images(2))
    assert not snn.has_constant_prefix
    calibrate_thresholds(snn, images(8), timesteps=64)
    x = images(2, seed=4)
    assert torch.equal(snn.run(x, 64, time_chunk=1), snn.run(x, 64))
    with torch.no_grad():
        ref = model(x)
    assert (snn.run(x, 64).mean(0) - ref).abs().max() < 0.05 * ref.abs().max()


def test_per_step_outputs_and_sessions(res_snn, images):
    x = images(4, seed=13)
    full = res_snn.run(x, 9)
    with res_snn.session(x) as sess:
        parts = [sess.advance(k) for k in (2, 3, 4)]
    assert [p.shape[0] for p in parts] == [2, 3, 4]
    assert torch.equal(torch.cat(parts), full)


def test_session_keep_drops_samples_consistently(res_snn, images):
    x = images(5, seed=14)
    full = res_snn.run(x, 8)
    keep = torch.tensor([0, 3, 4])
    with res_snn.session(x) as sess:
        head = sess.advance(3)
        sess.keep(keep)
        tail = sess.advance(5)
    assert torch.equal(head, full[:3])
    assert torch.equal(tail, full[3:, keep])  # neurons and pool accumulators followed the samples


def test_run_twice_is_identical_and_state_does_not_leak(res_snn, images):
    x, other = images(3, seed=15), images(3, seed=16)
    first = res_snn.run(x, 10)
    res_snn.run(other, 7)
    for n in res_snn.neurons().values():
        n.reset()
    assert torch.equal(res_snn.run(x, 10), first)
    assert all(n.v is None for n in res_snn.neurons().values())  # the session left no membrane
    assert all(n.mode == "ann" for n in res_snn.neurons().values())  # and restored the mode


def test_sequence_input_of_constant_frames_equals_constant_input(res_snn, images):
    x = images(3, seed=17)
    const = res_snn.run(x, 12)
    seq = res_snn.run(x.expand(15, -1, -1, -1, -1), 12, sequence=True)  # more frames than steps: fine
    torch.testing.assert_close(seq, const, rtol=0, atol=1e-6)


def test_event_sequence_input(res_snn, images):
    T = 6
    frames = torch.stack([images(2, seed=100 + t) for t in range(T)])  # [T, B, C, H, W]
    out = res_snn.run(frames, T, sequence=True)
    assert out.shape == (T, 2, 4)
    assert torch.equal(res_snn.run(frames, T, sequence=True, time_chunk=1), out)
    # step t only depends on frames up to t
    changed = frames.clone()
    changed[4:] = 0
    assert torch.equal(res_snn.run(changed, T, sequence=True)[:4], out[:4])


def test_float64_model(images, warm_bn):
    torch.manual_seed(3)
    model = warm_bn(ResPoolNet(), [images(16, seed=50)]).double()
    snn = prepare(model, images(4).double())
    for n in snn.neurons().values():
        assert n.theta.dtype == torch.float64 and n.rho.dtype == torch.float64
    per_channel = CalibrationConfig(granularity="channel")
    calibrate_thresholds(snn, images(8).double(), timesteps=64, config=per_channel)
    assert all(n.theta.dtype == torch.float64 for n in snn.neurons().values())
    correct_bias(snn, images(8).double(), timesteps=64)
    assert all(n.bias_offset.dtype == torch.float64 for n in snn.neurons().values())
    out = snn.run(images(2, seed=3).double(), 64)
    assert out.dtype == torch.float64
    assert torch.equal(snn.run(images(2, seed=3).double(), 64, time_chunk=7), out)


def test_record_activity_counts_spikes(res_snn, images):
    x = images(2, seed=18)
    T = 8
    outs: dict[str, torch.Tensor] = {}
    neurons = res_snn.neurons()
    handles = [n.register_forward_hook(lambda _m, _a, o, k=k: outs.__setitem__(k, o))
               for k, n in neurons.items()]
    try:
        neurons["relu"].set_phi(3)
        with res_snn.record_activity():
            res_snn.run(x, T, time_chunk=None)  # one call per neuron: the hooks see all T steps
    finally:
        for h in handles:
            h.remove()
    counts = res_snn.spike_counts()
    for k, n in neurons.items():
        th = n.effective_threshold()
        shape = [1, -1] + [1] * (outs[k].dim() - 2) if th.dim() else []
        expected = (outs[k] / th.view(shape)).round().sum(0)
        torch.testing.assert_close(counts[k], expected, rtol=0, atol=0)
    assert counts["relu"].sum() > 0
    with res_snn.record_activity():  # a new recording starts from zero
        res_snn.run(x, 1)
    assert res_snn.spike_counts()["relu"].sum() < counts["relu"].sum()


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_follows_the_model(images, warm_bn):
    torch.manual_seed(3)
    model = warm_bn(ResPoolNet(), [images(16, seed=50)])
    cpu = _calibrated(model, images, T=32)
    x = images(3, seed=19)
    expected = cpu.run(x, 32)
    gpu_model = model.cuda()
    gpu = prepare(gpu_model, images(4).cuda())
    for n in gpu.neurons().values():
        assert n.theta.device.type == "cuda"
    cal = [images(8, seed=s).cuda() for s in range(2)]
    cfg = CalibrationConfig(num_batches=2, granularity="channel")
    calibrate_thresholds(gpu, cal, timesteps=32, config=cfg)
    correct_bias(gpu, cal[0], timesteps=32)
    out = gpu.run(x.cuda(), 32)
    assert out.device.type == "cuda"
    # GPU kernels depend on the batch size (steps stacked per call) and differ from the CPU's, so
    # a membrane sitting exactly at a threshold may fire one step apart: compare averages, loosely
    # (a 1e-5 relative threshold change moves these logits (~1) by ~1e-5 on the CPU)
    GPU_ATOL = 0.05
    streamed = gpu.run(x.cuda(), 32, time_chunk=1)
    torch.testing.assert_close(streamed.mean(0), out.mean(0), rtol=0, atol=GPU_ATOL)
    torch.testing.assert_close(out.mean(0).cpu(), expected.mean(0), rtol=0, atol=GPU_ATOL)
    gpu.cpu()
    assert gpu.neurons()["relu"].theta.device.type == "cpu"


def test_state_dict_round_trip_into_a_fresh_conversion(res_snn, images):
    """Per-channel thresholds and corrections change buffer shapes; a fresh conversion adopts them."""
    x = images(3, seed=20)
    expected = res_snn.run(x, 12)
    state = res_snn.state_dict()
    assert not any(k.endswith(".v") or "spike_count" in k for k in state)  # no membrane, no counts
    assert any(v.dim() == 1 for k, v in state.items() if k.endswith(".theta"))  # per channel
    torch.manual_seed(3)
    fresh = prepare(ResPoolNet().eval(), images(4))  # other weights, scalar thresholds
    fresh.load_state_dict(state)
    assert torch.equal(fresh.run(x, 12), expected)

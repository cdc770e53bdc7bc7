"""Chunking-independent simulation (issue 19 item 1): verified row blocks for every weighted op.

The deep-network test failed before canonical blocks on the Xeon/oneDNN 3.12/MKL machine
(resnet18, T=16: every step changed with ``time_chunk=1``; vgg11_bn: with ``batch_chunk=1``).
"""
from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from adacal.calibrate import calibrate_thresholds
from adacal.config import CalibrationConfig
from adacal.convert import prepare
from adacal.determinism import block_plan, blocked, layout_plan
from adacal.errors import ShapeError
from adacal.metrics import symmetric_kl
from adacal.sensitivity import profile

pytestmark = pytest.mark.usefixtures("single_thread")

T = 16


@pytest.fixture(scope="module")
def deep_snn():
    """torchvision resnet18, random weights with realistic BN statistics, thresholds by max."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        model = torchvision.models.resnet18(num_classes=10)
        model.train()
        with torch.no_grad():
            for s in range(2):
                model(torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(s)))
        model.eval()
        snn = prepare(model, torch.randn(4, 3, 32, 32, generator=torch.Generator().manual_seed(2)))
        calib = torch.randn(8, 3, 32, 32, generator=torch.Generator().manual_seed(3))
        calibrate_thresholds(snn, calib, timesteps=T, config=CalibrationConfig(method="max"))
    finally:
        torch.set_num_threads(old)
    return snn


def test_deep_network_outputs_do_not_depend_on_chunking_or_batch(deep_snn):
    x = torch.randn(3, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    full = deep_snn.run(x, T, time_chunk=None)
    assert not torch.equal(full[0], full[-1])  # really spiking: outputs change over time
    for kw in ({"time_chunk": 1}, {"time_chunk": 5}, {"batch_chunk": 1}, {"batch_chunk": 2, "time_chunk": 3}):
        assert torch.equal(deep_snn.run(x, T, **kw), full), kw
    # a sample's outputs do not depend on the batch it is simulated in
    assert torch.equal(deep_snn.run(x[1:2], T), full[:, 1:2])
    # nor on early exit: samples leaving change the rows of every later call
    with deep_snn.session(x) as sess:
        head = sess.advance(4)
        sess.keep(torch.tensor([2]))
        tail = sess.advance(T - 4)
    assert torch.equal(head, full[:4]) and torch.equal(tail, full[4:, 2:3])
    # and the running sum is the same whatever the chunking
    total = deep_snn.run(x, T, time_chunk=1, reduce="sum")
    assert torch.equal(deep_snn.run(x, T, time_chunk=None, reduce="sum"), total)


def test_profiling_agrees_with_evaluation(deep_snn):
    """Profiling re-runs the graph with all T steps stacked and no constant prefix; its baseline
    must be the very network that run() evaluates, to the bit."""
    x = torch.randn(1, 3, 32, 32, generator=torch.Generator().manual_seed(5))  # 1 row vs T rows
    name = next(iter(deep_snn.neurons()))
    table = profile(deep_snn, x, knob="phi", candidates=[1], timesteps=4, layers=[name])
    expected = float(symmetric_kl(deep_snn.ann_forward(x), deep_snn.run(x, 4, time_chunk=1).mean(0)))
    assert table.scores[name][1] == expected


def test_weighted_modules_are_restored_after_a_session(deep_snn):
    conv = deep_snn.graph_module.get_submodule("conv1")
    keys = list(deep_snn.state_dict())
    seen: list[int] = []
    handle = conv.register_forward_hook(lambda _m, args, _o: seen.append(args[0].shape[0]))
    try:
        with deep_snn.session(torch.randn(3, 3, 32, 32)) as sess:
            assert "forward" in conv.__dict__ and isinstance(conv, nn.Conv2d)
            sess.advance(2)
    finally:
        handle.remove()
    assert "forward" not in conv.__dict__  # the class's forward again
    assert list(deep_snn.state_dict()) == keys
    assert seen == [3]  # hooks see the whole call, not the blocks (constant prefix: once, 3 rows)


def test_functional_weighted_ops_are_blocked_too(images):
    class Functional(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.w1 = nn.Parameter(torch.randn(8, 3, 3, 3) * 0.3)
            self.w2 = nn.Parameter(torch.randn(5, 8 * 64) * 0.05)

        def forward(self, x):
            return F.linear(F.relu(F.conv2d(x, self.w1, padding=1)).flatten(1), self.w2)

    torch.manual_seed(0)
    snn = prepare(Functional().eval(), images(4))
    calibrate_thresholds(snn, images(8), timesteps=8, config=CalibrationConfig(method="max"))
    targets = [n.target for n in snn.simulation_graph().graph.nodes if n.op == "call_function"]
    assert any(getattr(t, "__name__", "") == "blocked_linear" for t in targets)
    x = images(5, seed=1)
    full = snn.run(x, 8, time_chunk=None)
    assert torch.equal(snn.run(x, 8, time_chunk=1, batch_chunk=2), full)


def test_block_plan_keeps_only_sizes_that_give_the_same_bits():
    def row_count_dependent(x):  # e.g. a kernel chosen by the number of rows
        return x * x.shape[0]

    assert block_plan(row_count_dependent, (3,), torch.float32, torch.device("cpu")) == (64,)

    def position_dependent(x):
        return x + torch.arange(x.shape[0], dtype=x.dtype).view(-1, 1)

    assert block_plan(position_dependent, (3,), torch.float32, torch.device("cpu")) == (1,)
    assert block_plan(lambda x: x * 2, (3,), torch.float32, torch.device("cpu")) == (64, 32, 16, 8, 4, 2, 1)


def test_layout_plan_admits_channels_last_only_where_it_gives_the_same_bits():
    cpu, f32, plan = torch.device("cpu"), torch.float32, (8, 4, 2, 1)
    assert layout_plan(lambda x: x * 2, (4, 5, 5), plan, f32, cpu, measure=False) == torch.channels_last

    def layout_dependent(x):  # e.g. a kernel that sums in memory order
        return x * (2 if x.is_contiguous() else 3)

    assert layout_plan(layout_dependent, (4, 5, 5), plan, f32, cpu, measure=False) == torch.contiguous_format
    assert layout_plan(lambda x: x * 2, (4, 25), plan, f32, cpu, measure=False) == torch.contiguous_format  # not 4-D
    same_order = layout_plan(lambda x: x * 2, (1, 5, 5), plan, f32, cpu, measure=False)  # one channel: one order
    assert same_order == torch.contiguous_format


def test_blocked_keeps_the_layout_it_is_given():
    seen: list[bool] = []

    def fn(x):
        seen.append(x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous())
        return x * 2

    x = torch.randn(7, 3, 4, 4)
    out = blocked(fn, x, (4, 2), layout=torch.channels_last)
    assert torch.equal(out, x * 2) and seen == [True] * 3  # 7 = 4 + 2 + 1 (padded to 2): every block channels-last


def test_blocked_splits_largest_first_and_pads_the_remainder():
    calls: list[int] = []

    def fn(x):
        calls.append(x.shape[0])
        return x * 2

    x = torch.arange(11.0).view(11, 1)
    out = blocked(fn, x, (8, 4, 2))
    assert calls == [8, 2, 2] and torch.equal(out, x * 2)  # 11 = 8 + 2 + 1 (padded to 2)
    calls.clear()
    assert torch.equal(blocked(fn, x[:4], (8, 4, 2)), x[:4] * 2) and calls == [4]


def test_deterministic_off_runs_each_call_whole(deep_snn):
    conv = deep_snn.graph_module.get_submodule("conv1")
    deep_snn.deterministic = False
    try:
        with deep_snn.session(torch.randn(2, 3, 32, 32)):
            assert "forward" not in conv.__dict__
    finally:
        deep_snn.deterministic = True


def test_patched_forwards_are_restored_when_a_run_fails(images):
    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 64, 3)).eval()
    snn = prepare(model, images(2))
    conv, fc = snn.graph_module.get_submodule("0"), snn.graph_module.get_submodule("3")
    with pytest.raises(ShapeError, match="per-sample shape"):
        snn.run(images(2, shape=(3, 10, 10)), 4)  # right rank and channels, wrong size for the Linear
    assert "forward" not in conv.__dict__ and "forward" not in fc.__dict__
    assert all(n.mode == "ann" for n in snn.neurons().values())

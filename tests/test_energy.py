"""Energy model: fan-out maps against brute-force synapse counts, MAC/AC accounting, reports."""
from __future__ import annotations

import dataclasses
import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.flop_counter import FlopCounterMode

from adacal.convert import prepare, trace
from adacal.energy import CostTable, EnergyModel, EnergyReport, analyze_graph, measure
from adacal.errors import ConfigError, DataError, ShapeError
from adacal.neurons.module import IFNeuron

E_MAC, E_AC = 4.6, 0.9


# ------------------------------------------------------------------------------ brute force
def brute_conv2d_fanout(
    weight: Tensor, in_shape: tuple[int, int, int], stride: int, padding: int, dilation: int, groups: int
) -> Tensor:
    """For each input position: the (output position, non-zero weight) pairs it feeds, counted one by one."""
    c_in, h, w = in_shape
    c_out, c_per_group, kh, kw = weight.shape
    out_per_group = c_out // groups
    h_out = (h + 2 * padding - dilation * (kh - 1) - 1) // stride + 1
    w_out = (w + 2 * padding - dilation * (kw - 1) - 1) // stride + 1
    nz = (weight != 0).tolist()
    f = torch.zeros(in_shape, dtype=torch.float64)
    for ic in range(c_in):
        g, icl = divmod(ic, c_per_group)
        for i in range(h):
            for j in range(w):
                n = 0
                for oc in range(g * out_per_group, (g + 1) * out_per_group):
                    for ki in range(kh):
                        for kj in range(kw):
                            if not nz[oc][icl][ki][kj]:
                                continue
                            oi, ri = divmod(i + padding - ki * dilation, stride)
                            oj, rj = divmod(j + padding - kj * dilation, stride)
                            if ri == 0 and rj == 0 and 0 <= oi < h_out and 0 <= oj < w_out:
                                n += 1
                f[ic, i, j] = n
    return f


def brute_pool_windows(length: int, k: int, s: int, p: int) -> list[range]:
    """Input index ranges of a (non-ceil) pooling's output cells, padding dropped."""
    n_out = (length + 2 * p - k) // s + 1
    return [range(max(0, q * s - p), min(length, q * s - p + k)) for q in range(n_out)]


def brute_jacobian_fanout(layer: nn.Module, in_shape: tuple[int, ...]) -> Tensor:
    """Non-zero Jacobian entries per input element (one weight per (input, output) pair): push every
    basis vector through the layer and count the outputs it changes."""
    numel = math.prod(in_shape)
    layer = layer.double()
    with torch.no_grad():
        basis = torch.eye(numel, dtype=torch.float64).reshape(numel, *in_shape)
        cols = layer(basis) - layer(torch.zeros_like(basis[:1]))
    return (cols.reshape(numel, -1) != 0).sum(1).reshape(in_shape).to(torch.float64)


def sparse_(w: Tensor, frac: float = 0.3, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        w.mul_((torch.rand(w.shape, generator=g) >= frac).to(w.dtype))


class StemThen(nn.Module):
    """A stem conv (analog, first layer) + ReLU, then the layer under test (spike-fed)."""

    def __init__(self, c: int, tail: nn.Module, *, dims: int = 2) -> None:
        super().__init__()
        conv = {1: nn.Conv1d, 2: nn.Conv2d, 3: nn.Conv3d}[dims]
        self.stem = conv(2, c, 3, padding=1)
        self.tail = tail

    def forward(self, x: Tensor) -> Tensor:
        return self.tail(torch.relu(self.stem(x)))


def _only_neuron(energy: EnergyModel) -> str:
    (name,) = energy.neuron_shapes
    return name


def _build(model: nn.Module, x: Tensor) -> tuple[EnergyModel, object]:
    snn = prepare(model.eval(), x)
    return EnergyModel.build(snn, x), snn


# ------------------------------------------------------------------------------ fan-out maps
CONV_CASES = [
    dict(k=3, s=1, p=1, d=1, g=1),
    dict(k=3, s=2, p=1, d=1, g=1),
    dict(k=3, s=2, p=2, d=2, g=2),
    dict(k=4, s=3, p=2, d=1, g=4),  # depthwise, output doesn't cover the far border
    dict(k=1, s=2, p=0, d=1, g=1),
]


@pytest.mark.parametrize("case", CONV_CASES, ids=lambda c: "k{k}s{s}p{p}d{d}g{g}".format(**c))
def test_conv_fanout_matches_brute_force(case: dict[str, int]) -> None:
    k, s, p, d, g = (case[c] for c in "kspdg")
    conv = nn.Conv2d(4, 8, k, stride=s, padding=p, dilation=d, groups=g)
    sparse_(conv.weight)
    model = StemThen(4, conv)
    x = torch.rand(1, 2, 7, 6)
    energy, _ = _build(model, x)
    layer = energy.layer("tail")
    assert layer.kind == "spike"
    neuron = _only_neuron(energy)
    expected = brute_conv2d_fanout(conv.weight.detach(), (4, 7, 6), s, p, d, g)
    torch.testing.assert_close(energy.fanout(neuron, "tail").cpu(), expected, rtol=0, atol=0)
    assert layer.synapses == int(expected.sum())
    # SOPs from arbitrary integer counts equal the brute-force dot product
    counts = torch.randint(0, 5, (4, 7, 6)).float()
    sops = energy.layer_sops({neuron: counts})["tail"]
    assert sops == pytest.approx(float((counts.double() * expected).sum()), abs=0)


def test_dense_conv_synapses_equal_flop_counter_macs() -> None:
    """Without padding or zero weights every MAC is a synapse: Σ fan-out == FLOPs/2."""
    conv = nn.Conv2d(4, 6, 3, stride=2, groups=2)
    energy, _ = _build(StemThen(4, conv), torch.rand(1, 2, 9, 9))
    layer = energy.layer("tail")
    assert layer.synapses == layer.macs == 6 * 2 * 9 * 4 * 4


@pytest.mark.parametrize(
    "layer,dims,in_shape",
    [
        (nn.Conv1d(4, 5, 3, stride=2, padding=2, dilation=2), 1, (4, 9)),
        (nn.ConvTranspose2d(4, 6, 3, stride=2, padding=1, output_padding=1, groups=2), 2, (4, 5, 4)),
        (nn.Conv3d(4, 3, 2, stride=1, padding=1), 3, (4, 3, 3, 2)),
    ],
    ids=["conv1d", "conv_transpose2d", "conv3d"],
)
def test_other_weighted_layers_match_jacobian_count(
    layer: nn.Module, dims: int, in_shape: tuple[int, ...]
) -> None:
    sparse_(layer.weight, seed=1)
    energy, _ = _build(StemThen(4, layer, dims=dims), torch.rand(1, 2, *in_shape[1:]))
    expected = brute_jacobian_fanout(layer, in_shape)
    torch.testing.assert_close(energy.fanout(_only_neuron(energy), "tail").cpu(), expected, rtol=0, atol=0)


def test_linear_hand_count() -> None:
    fc = nn.Linear(3, 2, bias=True)
    with torch.no_grad():
        fc.weight.copy_(torch.tensor([[1.0, 0.0, 2.0], [0.0, 0.0, -3.0]]))
    stem = nn.Linear(4, 3)
    model = nn.Sequential(stem, nn.ReLU(), fc)
    energy, _ = _build(model, torch.rand(2, 4))
    neuron = _only_neuron(energy)
    torch.testing.assert_close(energy.fanout(neuron, "2"), torch.tensor([1.0, 0.0, 2.0], dtype=torch.float64))
    assert energy.layer_sops({neuron: torch.tensor([2.0, 5.0, 1.0])})["2"] == 2 * 1 + 5 * 0 + 1 * 2


@pytest.mark.parametrize(
    "pool,windows",
    [
        (nn.AvgPool2d(2), (2, 2, 0)),
        (nn.AvgPool2d(3, stride=2, padding=1, count_include_pad=False), (3, 2, 1)),
    ],
    ids=["avg2", "avg3s2p1"],
)
def test_avgpool_then_conv_is_sum_pool_connectivity(pool: nn.Module, windows: tuple[int, int, int]) -> None:
    conv = nn.Conv2d(3, 4, 3, padding=1)
    sparse_(conv.weight, seed=2)
    model = StemThen(3, nn.Sequential(pool, conv))
    h, w = 8, 6
    energy, _ = _build(model, torch.rand(1, 2, h, w))
    rows, cols = brute_pool_windows(h, *windows), brute_pool_windows(w, *windows)
    f_conv = brute_conv2d_fanout(conv.weight.detach(), (3, len(rows), len(cols)), 1, 1, 1, 1)
    expected = torch.zeros(3, h, w, dtype=torch.float64)
    for qi, rr in enumerate(rows):  # a spike reaches every pooled cell whose window covers it
        for qj, cc in enumerate(cols):
            for i in rr:
                for j in cc:
                    expected[:, i, j] += f_conv[:, qi, qj]
    torch.testing.assert_close(energy.fanout(_only_neuron(energy), "tail.1").cpu(), expected, rtol=0, atol=0)


def test_adaptive_avgpool_to_linear_overlapping_windows() -> None:
    fc = nn.Linear(2 * 2 * 2, 3)
    sparse_(fc.weight, seed=3)
    model = StemThen(2, nn.Sequential(nn.AdaptiveAvgPool2d(2), nn.Flatten(), fc))
    h, w = 5, 3  # odd sizes: adaptive windows overlap
    energy, _ = _build(model, torch.rand(1, 2, h, w))
    nnz = (fc.weight.detach() != 0).sum(0).reshape(2, 2, 2).double()  # per pooled cell (c, qi, qj)
    expected = torch.zeros(2, h, w, dtype=torch.float64)
    for qi in range(2):
        for qj in range(2):
            r0, r1 = (qi * h) // 2, -(-((qi + 1) * h) // 2)
            c0, c1 = (qj * w) // 2, -(-((qj + 1) * w) // 2)
            expected[:, r0:r1, c0:c1] += nnz[:, qi, qj].view(2, 1, 1)
    torch.testing.assert_close(energy.fanout(_only_neuron(energy), "tail.2").cpu(), expected, rtol=0, atol=0)


class Functional(nn.Module):
    """F.conv2d with a parameter weight, fed by a difference and a scaled mean of spikes."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(2, 6, 3, padding=1)
        self.w = nn.Parameter(torch.randn(4, 3, 3, 3))
        sparse_(self.w, seed=4)

    def forward(self, x: Tensor) -> Tensor:
        a, b = torch.relu(self.stem(x)).chunk(2, dim=1)
        y = F.conv2d(a - 0.5 * b, self.w, None, 1, 1)
        return torch.relu(y).mean((2, 3))


def test_functional_conv_and_signs() -> None:
    model = Functional()
    energy, _ = _build(model, torch.rand(1, 2, 5, 5))
    (layer,) = [li for li in energy.layers if li.kind == "spike"]
    assert layer.op == "conv2d"
    (neuron,) = layer.sources
    per_half = brute_conv2d_fanout(model.w.detach(), (3, 5, 5), 1, 1, 1, 1)
    expected = torch.cat([per_half, per_half])  # the subtracted, scaled half drives the same synapses
    torch.testing.assert_close(energy.fanout(neuron, layer.name).cpu(), expected, rtol=0, atol=0)


class DenseLike(nn.Module):
    """DenseNet-style: BN after a concatenation of spikes stays a ChannelAffine on the spiking path."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.grow = nn.Conv2d(2, 4, 3, padding=1), nn.Conv2d(4, 2, 3, padding=1)
        self.bn, self.conv = nn.BatchNorm2d(6), nn.Conv2d(6, 3, 3, padding=1)
        with torch.no_grad():
            self.bn.weight[1] = 0.0  # scale 0: channel 1's spikes reach nothing
        sparse_(self.conv.weight, seed=7)

    def forward(self, x: Tensor) -> Tensor:
        a = torch.relu(self.stem(x))
        b = torch.relu(self.grow(a))
        return self.conv(self.bn(torch.cat([a, b], 1)))


def test_channel_affine_after_cat_and_a_neuron_with_two_consumers() -> None:
    model = DenseLike()
    energy, snn = _build(model, torch.rand(1, 2, 5, 4))
    assert any(type(m).__name__ == "ChannelAffine" for m in snn.graph_module.modules())
    assert {li.name: li.kind for li in energy.layers} == {"stem": "analog", "grow": "spike", "conv": "spike"}
    (a,) = energy.layer("grow").sources
    (b,) = [n for n in energy.neuron_shapes if n != a]
    assert energy.layer("conv").sources == (a, b)
    full = brute_conv2d_fanout(model.conv.weight.detach(), (6, 5, 4), 1, 1, 1, 1)
    full[1] = 0
    torch.testing.assert_close(energy.fanout(a, "conv").cpu(), full[:4], rtol=0, atol=0)
    torch.testing.assert_close(energy.fanout(b, "conv").cpu(), full[4:], rtol=0, atol=0)
    into_grow = brute_conv2d_fanout(model.grow.weight.detach(), (4, 5, 4), 1, 1, 1, 1)
    torch.testing.assert_close(energy.fanout(a).cpu(), full[:4] + into_grow, rtol=0, atol=0)


class InputSkip(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1, self.c2 = nn.Conv2d(3, 3, 3, padding=1), nn.Conv2d(3, 3, 3, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        return self.c2(torch.relu(self.c1(x))) + x


def test_prefix_runs_every_step_when_the_input_is_reused_downstream() -> None:
    energy, snn = _build(InputSkip(), torch.rand(2, 3, 4, 4))
    assert not snn.has_constant_prefix
    zero = {k: torch.zeros(v) for k, v in energy.neuron_shapes.items()}
    rep = energy.estimate(zero, 1, 3)
    assert rep.layers[0].runs_per_image == 3
    assert rep.snn_energy_pj == pytest.approx(E_MAC * 3 * energy.layer("c1").macs)


class Square(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.c1, self.act = nn.Conv2d(1, 2, 1), IFNeuron()
        self.c2, self.c3 = nn.Conv2d(2, 2, 1), nn.Conv2d(2, 2, 1)

    def forward(self, x: Tensor) -> Tensor:
        s = self.act(self.c1(x))
        return self.c2(s * s) + self.c3(s * 2.0)


def test_products_of_spikes_are_analog() -> None:
    gm = trace(Square(), leaf_types=(IFNeuron,))
    analysis = analyze_graph(gm, torch.rand(1, 1, 3, 3))
    assert {li.name: li.kind for li in analysis.layers} == {"c1": "analog", "c2": "analog", "c3": "spike"}
    expected = torch.full((2, 3, 3), 2.0, dtype=torch.float64)  # 2 output channels, 1x1 kernels
    torch.testing.assert_close(analysis.fanouts[("c3", "act")], expected)


# ------------------------------------------------------------------------------ counting
def test_burst_of_k_spikes_counts_k() -> None:
    fc1, fc2 = nn.Linear(2, 2, bias=False), nn.Linear(2, 3, bias=False)
    with torch.no_grad():
        fc1.weight.copy_(torch.eye(2))
        fc2.weight.copy_(torch.tensor([[1.0, 1.0], [1.0, 0.0], [2.0, -1.0]]))  # column nnz: 3, 2
    model = nn.Sequential(fc1, nn.ReLU(), fc2).eval()
    x = torch.tensor([[2.6, 0.3], [2.6, 0.3]])
    snn = prepare(model, x)
    assert snn.has_constant_prefix
    (neuron,) = snn.neurons().values()
    neuron.set_theta(torch.tensor(1.0))
    neuron.set_phi(3)
    T = 4
    _, report = measure(snn, x, T)
    # u0 = θ/2: counts are clamp(floor(T·a/θ + 1/2), 0, φT) = 10 (bursts of 3,2,3,2) and 1
    assert report.spikes_per_image == 11
    assert report.neurons[0].firing_rate == pytest.approx(11 / (2 * T))
    sops = 10 * 3 + 1 * 2
    assert report.sops_per_image == sops
    layer = {r.name: r for r in report.layers}
    assert layer["0"].kind == "analog" and layer["0"].runs_per_image == 1  # constant prefix: once
    assert report.snn_energy_pj == pytest.approx(E_MAC * 4 + E_AC * sops)
    assert report.ann_energy_pj == pytest.approx(E_MAC * (4 + 6))


class Bottleneck(nn.Module):
    """First conv (analog, prefix), spike-fed conv, linear bottleneck conv (analog), Linear→Linear."""

    def __init__(self) -> None:
        super().__init__()
        self.c1, self.b1 = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.c2, self.c3 = nn.Conv2d(4, 6, 3, padding=1, stride=2), nn.Conv2d(6, 6, 1)
        self.pool = nn.AvgPool2d(2)
        self.fc1, self.fc2 = nn.Linear(24, 5), nn.Linear(5, 3)

    def forward(self, x: Tensor) -> Tensor:
        x = torch.relu(self.b1(self.c1(x)))
        x = torch.relu(self.c3(self.c2(x)))  # no ReLU between c2 and c3
        return self.fc2(self.fc1(self.pool(x).flatten(1)))


def test_analog_vs_spike_classification_and_mac_runs() -> None:
    x = torch.rand(2, 3, 8, 8)
    energy, snn = _build(Bottleneck(), x)
    kinds = {li.name: li.kind for li in energy.layers}
    assert kinds == {"c1": "analog", "c2": "spike", "c3": "analog", "fc1": "spike", "fc2": "analog"}
    assert [li.name for li in energy.layers if li.in_prefix] == ["c1"]
    macs = {li.name: li.macs for li in energy.layers}
    zero = {k: torch.zeros(v) for k, v in energy.neuron_shapes.items()}
    T = 5
    rep = energy.estimate(zero, num_samples=2, timesteps=T)
    assert rep.snn_energy_pj == pytest.approx(E_MAC * (macs["c1"] + T * (macs["c3"] + macs["fc2"])))
    assert rep.ac_energy_pj == 0
    # events: the first layer runs every step
    seq = energy.estimate(zero, num_samples=2, timesteps=T, sequence=True)
    assert seq.snn_energy_pj == pytest.approx(E_MAC * T * (macs["c1"] + macs["c3"] + macs["fc2"]))
    # a real run through measure agrees with the static numbers on the analog part
    _, run = measure(snn, x, T, energy=energy)
    assert run.mac_energy_pj == pytest.approx(rep.mac_energy_pj)
    frames = x.unsqueeze(0).expand(T, *x.shape)
    _, ev = measure(snn, frames, T, sequence=True, energy=energy)
    assert ev.mac_energy_pj == pytest.approx(seq.mac_energy_pj)


def test_ann_energy_equals_flop_counter() -> None:
    model = Bottleneck().eval()
    x = torch.rand(3, 3, 8, 8)
    energy, _ = _build(model, x)
    with FlopCounterMode(display=False) as fc:
        model(x[:1])
    assert energy.ann_macs == fc.get_total_flops() // 2
    assert energy.ann_energy_pj == pytest.approx(E_MAC * fc.get_total_flops() / 2)


class Block(nn.Module):
    def __init__(self, c_in: int, c_out: int, stride: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False), nn.BatchNorm2d(c_out)
        self.conv2, self.bn2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False), nn.BatchNorm2d(c_out)
        self.down = None
        if stride != 1 or c_in != c_out:
            self.down = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: Tensor) -> Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + (x if self.down is None else self.down(x)))


class TinyResNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem, self.bn = nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4)
        self.layer1, self.layer2 = Block(4, 4, 1), Block(4, 6, 2)
        self.pool, self.fc = nn.AdaptiveAvgPool2d(1), nn.Linear(6, 5)

    def forward(self, x: Tensor) -> Tensor:
        x = torch.relu(self.bn(self.stem(x)))
        return self.fc(self.pool(self.layer2(self.layer1(x))).flatten(1))


def _randomise_bn(model: nn.Module, seed: int) -> None:
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 0.1)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) + 0.5)


def test_tiny_resnet_sops_match_brute_force_from_a_real_run() -> None:
    torch.manual_seed(0)
    model = TinyResNet().eval()
    _randomise_bn(model, 0)
    sparse_(model.layer2.conv1.weight, seed=5)
    sparse_(model.fc.weight, seed=6)
    x = torch.rand(4, 3, 6, 6)
    energy, snn = _build(model, x)
    for n in snn.neurons().values():
        n.set_theta(torch.tensor(0.2))
        n.set_phi(2)
    T = 6
    _, rep = measure(snn, x, T, energy=energy)
    counts = snn.spike_counts()
    assert rep.spikes_per_image > 0

    gm = snn.graph_module
    kinds = {li.name: li.kind for li in energy.layers}
    assert kinds["stem"] == "analog" and kinds["fc"] == "spike"
    assert kinds["layer1.conv2"] == "spike" and kinds["layer2.down.0"] == "spike"
    # brute force: every spike-fed conv reads one neuron directly; fc reads it through a global pool
    expected: dict[str, float] = {}
    for layer in energy.layers:
        if layer.kind != "spike":
            continue
        (src,) = layer.sources
        c = counts[src].double()
        if layer.name == "fc":
            nnz = (gm.get_submodule("fc").weight != 0).sum(0).double()
            expected[layer.name] = float((c.sum((1, 2)) * nnz).sum())
        else:
            conv = gm.get_submodule(layer.name)
            f = brute_conv2d_fanout(conv.weight.detach(), tuple(c.shape), conv.stride[0], conv.padding[0],
                                    conv.dilation[0], conv.groups)
            expected[layer.name] = float((c * f).sum())
    got = {r.name: r.sops_per_image * len(x) for r in rep.layers if r.kind == "spike"}
    assert got == pytest.approx(expected, rel=1e-12)
    # per-neuron attribution adds up to the per-layer total; energy splits into MAC + AC
    assert sum(r.sops_per_image for r in rep.neurons) == pytest.approx(rep.sops_per_image)
    assert rep.ac_energy_pj == pytest.approx(E_AC * rep.sops_per_image)
    assert rep.snn_energy_pj == pytest.approx(rep.mac_energy_pj + rep.ac_energy_pj)
    with FlopCounterMode(display=False) as fc:
        model(x[:1])
    assert rep.ann_energy_pj == pytest.approx(E_MAC * fc.get_total_flops() / 2)
    costs = energy.neuron_costs(counts, len(x), metric="energy")
    assert costs == pytest.approx({r.name: r.energy_pj for r in rep.neurons})
    spikes = energy.neuron_costs(counts, len(x), metric="spikes")
    assert spikes == pytest.approx({r.name: r.spikes_per_image for r in rep.neurons})
    # the searches profile one layer at a time: a subset of the counts is enough
    one = "layer1.relu"
    assert one in counts
    sops = energy.neuron_costs({one: counts[one]}, len(x), metric="sops")
    assert sops == pytest.approx({one: rep.sops_by_neuron()[one]})


# ------------------------------------------------------------------------------ reports & errors
def test_report_json_round_trip() -> None:
    x = torch.rand(2, 3, 8, 8)
    energy, snn = _build(Bottleneck(), x)
    for n in snn.neurons().values():
        n.set_theta(torch.tensor(0.1))
    _, rep = measure(snn, x, 3, energy=energy, costs=CostTable.int8_45nm())
    assert rep.costs.name == "int8_45nm"
    data = json.loads(json.dumps(rep.to_dict()))
    assert data["energy_ratio"] == pytest.approx(rep.energy_ratio)
    back = EnergyReport.from_dict(data)
    assert back == rep
    assert math.isclose(back.saving, 1 - rep.snn_energy_pj / rep.ann_energy_pj)
    assert "c2" in rep.summary()
    json.dumps(energy.to_dict())


def test_cost_table_presets_and_validation() -> None:
    t = CostTable.fp32_45nm()
    assert (t.e_mac_pj, t.e_ac_pj) == (4.6, 0.9) and "Horowitz" in t.source
    assert CostTable.custom(1.0, 0.1, name="mine").name == "mine"
    assert t.replace(e_ac_pj=0.5).e_ac_pj == 0.5
    assert CostTable.preset("fp16_45nm") == CostTable.fp16_45nm()
    assert CostTable.from_dict(t.to_dict()) == t
    with pytest.raises(ConfigError, match="e_mac_pj must be finite and > 0"):
        CostTable(-1.0, 0.9)
    with pytest.raises(ConfigError, match="e_ac_pj must be finite and > 0"):
        CostTable(4.6, float("nan"))
    with pytest.raises(ConfigError, match="e_ac_pj must be finite and > 0"):
        dataclasses.replace(t, e_ac_pj=float("inf"))
    with pytest.raises(ConfigError, match="real number"):
        CostTable(True, 0.9)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="unknown cost preset"):
        CostTable.preset("tpu")
    with pytest.raises(ConfigError, match="unknown CostTable"):
        t.replace(e_foo=1.0)


def test_estimate_rejects_bad_counts_and_arguments() -> None:
    x = torch.rand(2, 3, 8, 8)
    energy, _ = _build(Bottleneck(), x)
    good = {k: torch.zeros(v) for k, v in energy.neuron_shapes.items()}
    name = next(iter(good))
    with pytest.raises(DataError, match="missing"):
        energy.estimate({}, 1, 4)  # whole-model energy needs every neuron
    with pytest.raises(DataError, match="unknown"):
        energy.neuron_costs({"nope": torch.zeros(1)}, 1)
    with pytest.raises(ShapeError, match="expected"):
        energy.estimate({**good, name: torch.zeros(3)}, 1, 4)
    with pytest.raises(ConfigError, match="timesteps"):
        energy.estimate(good, 1, 0)
    with pytest.raises(ConfigError, match="num_samples"):
        energy.estimate(good, 0, 4)
    with pytest.raises(ConfigError, match="metric"):
        energy.neuron_costs(good, 1, metric="flops")
    # never-run neurons (empty counts) mean no spikes
    empty = {k: torch.zeros(0) for k in good}
    assert energy.estimate(empty, 1, 2.5).ac_energy_pj == 0

"""NIR export/import: exact round trips through nirtorch, and loud refusal of everything lossy.

The round trip executes the written file with ``nirtorch.nir_to_torch``; nirtorch wires the graph
(summing a node's inputs, feeding recurrent edges from the previous step) but ships no modules for
NIR's neuron primitives, so the node map below implements ``I``, ``Threshold`` and ``Scale`` from
their NIR definitions (dt = 1), and corrects two nirtorch 2.6 defaults: ``Affine`` (its bias is
never loaded) and ``Flatten`` (NIR counts dims without the batch; nirtorch passes them unchanged).

Exactness bar: identical spike counts and identical per-step outputs. nirtorch sums in another order
than adacal (``v + (z + reset)`` vs ``(u + z) − reset``), so the exact tests use dyadic weights,
inputs, thresholds and corrections: every partial sum is then representable and the comparison is
bit for bit, no tolerance. A float64 test with unrounded random values checks counts and outputs
(to 1e-12) too.
"""
from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path

import nir
import nirtorch
import numpy as np
import pytest
import torch
from conftest import PoolCNN, image_batch, warm_batchnorm
from torch import Tensor, nn

import adacal
from adacal.convert.fold_bn import ChannelAffine
from adacal.energy import EnergyModel, measure
from adacal.export import NIRExportError, NIRImportError, export_nir, import_nir
from adacal.export.nir import below

T = 8


# --------------------------------------------------------------------------------------- executor
class _Integrator(nn.Module):
    """NIR ``I``: v(t) = v(t−1) + r·x(t), v(0) = 0 (stateful through nirtorch's ``state``)."""

    def __init__(self, r: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("r", torch.from_numpy(np.asarray(r)))

    def forward(self, x: Tensor, state: Tensor | None = None) -> tuple[Tensor, Tensor]:
        v = (torch.zeros_like(x) if state is None else state) + self.r * x
        return v, v


class _Threshold(nn.Module):
    """NIR ``Threshold``: z = 1 if v > threshold else 0. Records its spikes for the count check."""

    def __init__(self, threshold: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("threshold", torch.from_numpy(np.asarray(threshold)))
        self.count: Tensor | None = None

    def forward(self, x: Tensor) -> Tensor:
        z = (x > self.threshold).to(x.dtype)
        total = z.sum(0)
        self.count = total if self.count is None else self.count + total
        return z


class _Scale(nn.Module):
    def __init__(self, scale: np.ndarray) -> None:
        super().__init__()
        self.register_buffer("scale", torch.from_numpy(np.asarray(scale)))

    def forward(self, x: Tensor) -> Tensor:
        return x * self.scale


def _affine(node: nir.Affine) -> nn.Linear:
    lin = nn.Linear(node.weight.shape[1], node.weight.shape[0], dtype=torch.from_numpy(node.weight).dtype)
    lin.weight.data = torch.from_numpy(node.weight)
    lin.bias.data = torch.from_numpy(node.bias)
    return lin


NODE_MAP: dict[type, Callable[[nir.NIRNode], nn.Module]] = {
    nir.I: lambda n: _Integrator(n.r),
    nir.Threshold: lambda n: _Threshold(n.threshold),
    nir.Scale: lambda n: _Scale(n.scale),
    nir.Affine: _affine,
    nir.Flatten: lambda n: nn.Flatten(n.start_dim + 1, n.end_dim + 1 if n.end_dim >= 0 else n.end_dim),
}


def run_nirtorch(path: Path, x: Tensor, steps: int) -> tuple[Tensor, nn.Module]:
    """Read ``path`` with ``nir.read``, build it with nirtorch, feed ``x`` every step: [T, B, ...]."""
    graph = nir.read(path)
    model = nirtorch.nir_to_torch(graph, NODE_MAP, dtype=x.dtype)
    state = None
    outs = []
    with torch.no_grad():
        for _ in range(steps):
            out, state = model(x, state)
            outs.append(out)
    return torch.stack(outs), model


def nir_counts(model: nn.Module, neuron: str) -> Tensor:
    """Spikes of one exported neuron (summed over its fire nodes, time and batch)."""
    base = neuron.replace(".", "_")
    fires = [m for name, m in model.named_children()
             if isinstance(m, _Threshold) and (name == f"{base}_fire" or name.startswith(f"{base}_fire"))]
    assert fires, f"no fire node for {neuron}"
    return sum(f.count for f in fires)


# --------------------------------------------------------------------------------------- models
class ResidualNet(nn.Module):
    """Every exportable construct: constant-input prefix, residual sum (identity shortcut from a
    neuron), an unfoldable BatchNorm (ChannelAffine), average pooling, flatten, Linear, and a scaled
    output. ``[B, 2, 4, 4]`` inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(2, 4, 3, padding=1)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(4)
        self.relu2 = nn.ReLU()
        self.bn3 = nn.BatchNorm2d(4)
        self.pool = nn.AvgPool2d(2)
        self.relu3 = nn.ReLU()
        self.fc1 = nn.Linear(16, 6)
        self.relu4 = nn.ReLU()
        self.fc2 = nn.Linear(6, 3)

    def forward(self, x: Tensor) -> Tensor:
        h = self.relu1(self.conv1(x))
        y = self.relu2(self.bn2(self.conv2(h)) + h)
        p = self.relu3(self.pool(self.bn3(y)))
        q = self.relu4(self.fc1(torch.flatten(p, 1)))
        return self.fc2(q) * 0.5


def dyadic(t: Tensor, q: int = 8) -> Tensor:
    return torch.round(t * q) / q


def _inputs(seed: int = 0, dtype: torch.dtype = torch.float32) -> Tensor:
    return dyadic(image_batch(5, seed=seed, shape=(2, 4, 4)) * 2).to(dtype)


class Conv1dNet(nn.Module):
    """Conv1d (prefix), a grouped Conv1d on spikes, flatten, Linear: ``[B, 2, 6]`` inputs."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv1d(2, 4, 3, padding=1)
        self.conv2 = nn.Conv1d(4, 4, 3, stride=2, padding=1, groups=2)
        self.fc = nn.Linear(12, 3)

    def forward(self, x: Tensor) -> Tensor:
        h = torch.relu(self.conv2(torch.relu(self.conv1(x))))
        return self.fc(h.flatten(1))


def _neuron_channels(snn: adacal.SpikingModel, x: Tensor) -> dict[str, int]:
    """Channels (dim 1) of each neuron's input, from one ANN-mode pass."""
    found: dict[str, int] = {}
    hooks = [n.register_forward_hook(lambda m, a, o, k=k: found.__setitem__(k, a[0].shape[1]))
             for k, n in snn.neurons().items()]
    snn.ann_forward(x)
    for h in hooks:
        h.remove()
    return found


@torch.no_grad()
def calibrated_like(snn: adacal.SpikingModel, x: Tensor, *, phi: int = 1, round_values: bool = True,
                    seed: int = 7) -> adacal.SpikingModel:
    """Per-channel thresholds, a ρ ≠ 1, potential and bias corrections set (dyadic if ``round_values``)."""
    q = dyadic if round_values else (lambda t: t)
    dtype = x.dtype
    for p in snn.graph_module.parameters():
        p.copy_(q(p))
    for m in snn.graph_module.modules():
        if isinstance(m, ChannelAffine):
            m.scale.copy_(q(m.scale))
            m.shift.copy_(q(m.shift))
    g = torch.Generator().manual_seed(seed)
    for i, (name, c) in enumerate(_neuron_channels(snn, x).items()):
        n = snn.neurons()[name]
        theta = torch.tensor([0.5, 0.75, 1.0, 1.25, 0.625, 1.5] * c, dtype=dtype)[:c]
        n.set_theta(theta if round_values else theta + 0.01 * torch.rand(c, generator=g, dtype=dtype))
        n.set_rho(1.5 if i == 1 else 1.0)
        n.set_phi(phi)
        n.set_v_offset(q(0.25 * torch.randn(c, generator=g, dtype=dtype)))
        n.set_bias_offset(q(0.25 * torch.randn(c, generator=g, dtype=dtype)))
    return snn


def dyadic_snn(dtype: torch.dtype = torch.float32, *, phi: int = 1, round_values: bool = True) -> adacal.SpikingModel:
    """ResidualNet converted, with per-channel thresholds, ρ, potential and bias corrections set."""
    torch.manual_seed(3)
    ann = warm_batchnorm(ResidualNet(), [image_batch(16, seed=50 + i, shape=(2, 4, 4)) for i in range(2)])
    x = _inputs(dtype=dtype)
    return calibrated_like(adacal.prepare(ann.to(dtype), x), x, phi=phi, round_values=round_values)


def adacal_run(snn: adacal.SpikingModel, x: Tensor, steps: int = T) -> tuple[Tensor, dict[str, Tensor]]:
    with snn.record_activity():
        out = snn.run(x, steps)
        counts = {k: v.clone() for k, v in snn.spike_counts().items()}
    return out, counts


# --------------------------------------------------------------------------------------- round trips
@pytest.mark.parametrize("phi", [1, 3])
def test_round_trip_through_nirtorch_is_exact(tmp_path: Path, single_thread: None, phi: int) -> None:
    """Export, nir.read, nirtorch, T steps: the same spike counts and outputs as adacal (φ = 1 and a burst φ = 3)."""
    snn = dyadic_snn(phi=phi)
    x = _inputs(seed=1)
    want, counts = adacal_run(snn, x)
    assert all(c.sum() > 0 for c in counts.values())  # every neuron spikes: the comparison means something
    path = tmp_path / "net.nir"
    export_nir(snn, x, path)
    got, model = run_nirtorch(path, x, T)
    assert torch.equal(got, want)
    for name in snn.neurons():
        assert torch.equal(nir_counts(model, name), counts[name]), name


@pytest.mark.parametrize("model", ["small_cnn", "conv1d"])
def test_round_trip_other_layers(model: str, tmp_path: Path, single_thread: None, small_cnn: nn.Module) -> None:
    """Adaptive average pooling (SmallCNN), Conv1d and a grouped conv (written as a dense block-diagonal one)."""
    if model == "conv1d":
        torch.manual_seed(5)
        ann, x = Conv1dNet().eval(), dyadic(image_batch(5, seed=3, shape=(2, 6)) * 2)
    else:
        ann, x = small_cnn, dyadic(image_batch(5, seed=3) * 2)
    snn = calibrated_like(adacal.prepare(ann, x), x)
    want, counts = adacal_run(snn, x)
    export_nir(snn, x, tmp_path / "net.nir")
    got, model_ = run_nirtorch(tmp_path / "net.nir", x, T)
    assert torch.equal(got, want)
    for name in snn.neurons():
        assert counts[name].sum() > 0 and torch.equal(nir_counts(model_, name), counts[name]), name


def test_round_trip_float64_random_values(tmp_path: Path, single_thread: None) -> None:
    """Unrounded float64 weights/thresholds/corrections: identical counts, outputs to 1e-12."""
    snn = dyadic_snn(torch.float64, round_values=False)
    x = image_batch(5, seed=2, shape=(2, 4, 4)).double() * 2
    want, counts = adacal_run(snn, x)
    export_nir(snn, x, tmp_path / "net.nir")
    got, model = run_nirtorch(tmp_path / "net.nir", x, T)
    for name in snn.neurons():
        assert torch.equal(nir_counts(model, name), counts[name]), name
    torch.testing.assert_close(got, want, rtol=0, atol=1e-12)


def test_exported_graph_structure(tmp_path: Path) -> None:
    """θ', initial potential, bias corrections and sums are where the module docstring says."""
    snn = dyadic_snn()
    x = _inputs()
    g = export_nir(snn, x, tmp_path / "net.nir")
    nodes, edges = g.nodes, set(g.edges)
    n2 = snn.neurons()["relu2"]
    th = (n2.theta * n2.rho).numpy()
    u0 = (n2.v_init * n2.theta * n2.rho + n2.v_offset).numpy()
    assert isinstance(nodes["relu2.v"], nir.I) and isinstance(nodes["relu2.fire"], nir.Threshold)
    np.testing.assert_array_equal(nodes["relu2"].scale[:, 0, 0], th)  # a spike carries θ' = ρ·θ
    np.testing.assert_array_equal(nodes["relu2.reset"].scale[:, 0, 0], -th)  # reset by subtraction
    np.testing.assert_array_equal(  # fires at u0 + v >= θ', written with NIR's strict >
        nodes["relu2.fire"].threshold[:, 0, 0], np.nextafter((th - u0).astype(np.float32), -np.inf))
    assert {("relu2.fire", "relu2.reset"), ("relu2.reset", "relu2.v"), ("relu2.fire", "relu2")} <= edges
    # residual sum: the conv and the shortcut neuron both feed the membrane; the bias correction of
    # relu2 (after the add) is folded into conv2's bias, the summand that feeds only this sum
    assert {("conv2", "relu2.v"), ("relu1", "relu2.v")} <= edges
    conv2 = snn.graph_module.get_submodule("conv2")
    np.testing.assert_array_equal(nodes["conv2"].bias, (conv2.bias + n2.bias_offset).detach().numpy())
    # relu3 reads an average pool: no layer bias can take its correction, an identity conv does
    n3 = snn.neurons()["relu3"]
    assert ("relu3.bias", "relu3.v") in edges
    np.testing.assert_array_equal(nodes["relu3.bias"].bias, n3.bias_offset.numpy())
    w = nodes["bn3"].weight[:, :, 0, 0]  # unfolded BN: a 1x1 conv with a diagonal weight
    assert isinstance(nodes["bn3"], nir.Conv2d) and np.array_equal(w, np.diag(np.diag(w)))
    info = json.loads(nir.read(tmp_path / "net.nir").metadata["adacal"])
    assert info["exact"] is True and info["lossy"] == []


def test_import_round_trip_simulates_and_prices_the_same(tmp_path: Path, single_thread: None) -> None:
    snn = dyadic_snn(phi=2)
    x = _inputs(seed=4)
    export_nir(snn, x, tmp_path / "net.nir")
    back = import_nir(tmp_path / "net.nir")
    assert isinstance(back, adacal.SpikingModel)
    assert [int(n.phi) for n in back.neurons().values()] == [2, 2, 2, 2]
    for name, n in snn.neurons().items():  # metadata agrees with the structure: original buffers back
        m = back.neurons()[name]
        assert torch.equal(m.theta, n.theta) and torch.equal(m.rho, n.rho) and torch.equal(m.v_offset, n.v_offset)
    out_a, report_a = measure(snn, x, T)
    out_b, report_b = measure(back, x, T)
    assert torch.equal(out_a, out_b)
    assert report_b.spikes_per_image == report_a.spikes_per_image
    assert report_b.sops_per_image == pytest.approx(report_a.sops_per_image)
    assert EnergyModel.build(back, x).ann_macs == EnergyModel.build(snn, x).ann_macs
    assert back.has_constant_prefix


# --------------------------------------------------------------------------------------- refusals
def test_lossy_ops_are_refused_in_one_error_naming_each(tmp_path: Path) -> None:
    torch.manual_seed(1)
    ann = warm_batchnorm(PoolCNN(), [image_batch(16, seed=9)])
    x = image_batch(4)
    snn = adacal.prepare(ann, x)
    policy = {"thresholds": [0.9] * 4, "score": "entropy"}
    with pytest.raises(NIRExportError, match="allow_lossy=True") as exc:
        export_nir(snn, x, tmp_path / "a.nir", exit_policy=policy)
    assert [i.node for i in exc.value.issues] == ["pool", "pool_spiking", "exit_policy"]
    assert "max-pool" in str(exc.value) and "early exit" in str(exc.value)
    assert not (tmp_path / "a.nir").exists()


def test_allow_lossy_writes_metadata_and_warns(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    torch.manual_seed(1)
    ann = warm_batchnorm(PoolCNN(), [image_batch(16, seed=9)])
    x = image_batch(4)
    snn = adacal.prepare(ann, x)
    with caplog.at_level(logging.WARNING, logger="adacal"):
        export_nir(snn, x, tmp_path / "a.nir", allow_lossy=True, exit_policy={"thresholds": [0.5]}, timesteps=4)
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert "at pool " in warned and "at pool_spiking " in warned and "at exit_policy " in warned
    g = nir.read(tmp_path / "a.nir")
    info = json.loads(g.metadata["adacal"])
    assert info["exact"] is False and info["timesteps"] == 4 and info["exit_policy"] == {"thresholds": [0.5]}
    assert [i["node"] for i in info["lossy"]] == ["pool", "pool_spiking", "exit_policy"]
    assert isinstance(g.nodes["pool"], nir.AvgPool2d)
    assert json.loads(g.nodes["pool"].metadata["adacal"])["op"] == "max_pool2d"


def test_if_form_is_lossy_and_keeps_the_neuron_in_metadata(tmp_path: Path) -> None:
    snn = dyadic_snn(phi=3)
    x = _inputs()
    with pytest.raises(NIRExportError) as exc:
        export_nir(snn, x, tmp_path / "if.nir", neuron_form="if")
    assert [i.node for i in exc.value.issues] == ["relu1", "relu2", "relu3", "relu4"]
    assert "reset by subtraction" in str(exc.value) and "burst cap φ = 3" in str(exc.value)
    g = export_nir(snn, x, tmp_path / "if.nir", neuron_form="if", allow_lossy=True)
    node = g.nodes["relu1.if"]
    assert isinstance(node, nir.IF) and not node.v_reset.any()
    meta = json.loads(node.metadata["adacal"])
    assert meta["phi"] == 3 and meta["reset"] == "subtract"
    # adacal reads its own IF form back as the original neurons (from the metadata)
    back = import_nir(tmp_path / "if.nir")
    out_a, _ = adacal_run(snn, x)
    out_b, _ = adacal_run(back, x)
    assert torch.equal(out_a, out_b)


def test_ops_without_nir_node_fail_even_with_allow_lossy(tmp_path: Path) -> None:
    class Cat(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 2, 1), nn.Conv2d(3, 2, 1)
            self.fc = nn.Linear(4 * 64, 2)

        def forward(self, x: Tensor) -> Tensor:
            h = torch.cat([torch.relu(self.a(x)), torch.relu(self.b(x))], 1)
            return self.fc(h.flatten(1))

    x = image_batch(2)
    snn = adacal.prepare(Cat().eval(), x)
    with pytest.raises(NIRExportError, match="no NIR equivalent") as exc:
        export_nir(snn, x, allow_lossy=True)
    assert [i.node for i in exc.value.issues] == ["cat"]


def test_below_makes_strict_greater_mean_greater_or_equal() -> None:
    b = np.array([1.0, 0.1, -0.3, 3.0 + 2**-40])
    t = below(b, np.dtype(np.float32))
    for bi, ti in zip(b, t):
        v = np.float32(bi)
        assert (v > ti) == (float(v) >= bi)
        assert not (ti > np.float32(ti))  # representable
        assert np.nextafter(ti, np.float32(np.inf)) >= bi


# --------------------------------------------------------------------------------------- import
def _foreign_if_graph(v_reset: float = 0.0) -> nir.NIRGraph:
    w = np.array([[1.0, 0.5], [0.25, 1.0], [-1.0, 0.5]], dtype=np.float32)
    return nir.NIRGraph.from_list(
        nir.Affine(weight=w, bias=np.zeros(3, dtype=np.float32)),
        nir.IF(r=np.ones(3, dtype=np.float32), v_threshold=np.ones(3, dtype=np.float32),
               v_reset=np.full(3, v_reset, dtype=np.float32)),
        nir.Affine(weight=np.eye(3, dtype=np.float32)[:2], bias=np.zeros(2, dtype=np.float32)),
    )


def test_import_foreign_if_needs_allow_lossy() -> None:
    with pytest.raises(NIRImportError, match="allow_lossy=True"):
        import_nir(_foreign_if_graph())
    snn = import_nir(_foreign_if_graph(), allow_lossy=True)
    x = torch.tensor([[0.75, 0.5]])  # currents 1.0, 0.6875, -0.5
    out = snn.run(x, 4)[:, 0]  # spikes of value 1 (NIR's IF output), first two neurons
    # v > 1 fires and subtracts 1: 1.0 never exceeds 1 alone, then 2.0 does every step; 0.6875
    # accumulates to 1.375 (t = 2), 1.0625 (t = 3), 0.75 (t = 4)
    assert out.tolist() == [[0.0, 0.0], [1.0, 1.0], [1.0, 1.0], [1.0, 0.0]]


def test_import_refuses_unsupported_nodes_naming_each() -> None:
    lif = nir.LIF(tau=np.ones(3), r=np.ones(3), v_leak=np.zeros(3), v_threshold=np.ones(3))
    graph = nir.NIRGraph.from_list(
        nir.Affine(weight=np.ones((3, 2)), bias=np.zeros(3)), lif, nir.Delay(delay=np.ones(3)),
    )
    with pytest.raises(NIRImportError) as exc:
        import_nir(graph)
    assert "lif (LIF)" in str(exc.value) and "delay (Delay)" in str(exc.value)
    with pytest.raises(NIRImportError, match="v_reset"):
        import_nir(_foreign_if_graph(v_reset=-1.0), allow_lossy=True)


# --------------------------------------------------------------------------------------- CLI
def test_cli_export_help(capsys: pytest.CaptureFixture[str]) -> None:
    from adacal.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["export", "--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    assert "examples:" in out and "adacal export" in out and "--allow-lossy" in out and "--format" in out
    for flag in ("--config", "--device", "--seed", "--out", "--verbose", "--quiet"):
        assert flag in out, flag


def test_cli_export_run_folder(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from adacal.cli import main
    from adacal.config import DataSpec, JobConfig, ModelSpec
    from adacal.jobs import load_ann, load_data, save_converted

    job = JobConfig(data=DataSpec(dataset="digits", calib_size=32, batch_size=16), model=ModelSpec(name="digits_cnn"))
    data = load_data(job.data)
    ann = load_ann(job.model, data)
    snn = adacal.prepare(ann, data.example())
    folder = tmp_path / "run"
    save_converted(snn, {"method": "plain", "timesteps": 4}, folder, job=job)
    assert main(["export", str(folder), "--format", "nir", "--quiet"]) == 0
    assert "snn.nir" in capsys.readouterr().out
    g = nir.read(folder / "snn.nir")
    info = json.loads(g.metadata["adacal"])
    assert info["exact"] is True and info["timesteps"] == 4
    assert sum(isinstance(n, nir.Threshold) for n in g.nodes.values()) == 4

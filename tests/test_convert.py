"""Graph conversion (method.md §1): BN folding, activation discovery, allowed ops, max-pool rewrite."""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import fx, nn

from adacal.calibrate import calibrate_thresholds
from adacal.config import CalibrationConfig, ConversionConfig
from adacal.convert import ChannelAffine, fold_batchnorm, prepare, trace
from adacal.errors import UnsupportedLayerError
from adacal.neurons import IFNeuron, SpikingMaxPool

pytestmark = pytest.mark.usefixtures("single_thread")

# BN folding rewrites W·s and b·s + t in float32: a few ulps of the output scale (~1..10).
FOLD_ATOL = 1e-5
# Exact rewrites (moving a ReLU, renaming, no-ops) may only reorder float operations.
ANN_ATOL = 1e-6


def _randomise_bn(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial eval BN: running stats and affine parameters far from 0/1."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            c = m.num_features
            m.running_mean.copy_(torch.randn(c, generator=g))
            m.running_var.copy_(torch.rand(c, generator=g) * 3 + 0.2)
            if m.affine:
                m.weight.data.copy_(torch.randn(c, generator=g))
                m.bias.data.copy_(torch.randn(c, generator=g))
    return model.eval()


def _modules_of(snn, kind) -> list[nn.Module]:
    gm = snn.graph_module
    return [gm.get_submodule(str(n.target)) for n in gm.graph.nodes
            if n.op == "call_module" and isinstance(gm.get_submodule(str(n.target)), kind)]


class FoldNet(nn.Module):
    """Every foldable pair: Conv2d (no bias) + BN2d, Conv1d (bias) + BN1d, Linear + BN1d, ConvT + BN."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1, bias=False)
        self.bn = nn.BatchNorm2d(6)
        self.convt = nn.ConvTranspose2d(6, 4, 2, stride=2, groups=2)
        self.bnt = nn.BatchNorm2d(4)
        self.conv1d = nn.Conv1d(4, 5, 3, padding=1)
        self.bn1d = nn.BatchNorm1d(5)
        self.fc = nn.Linear(5 * 16, 7)
        self.bnfc = nn.BatchNorm1d(7, affine=False)
        self.out = nn.Linear(7, 3)

    def forward(self, x):
        x = F.relu(self.bn(self.conv(x)))  # [B, 6, 4, 4]
        x = F.relu(self.bnt(self.convt(x)))  # [B, 4, 8, 8]
        x = F.avg_pool2d(x, 2).flatten(2)  # [B, 4, 16]
        x = F.relu(self.bn1d(self.conv1d(x)))  # [B, 5, 16]
        x = F.relu(self.bnfc(self.fc(x.flatten(1))))
        return self.out(x)


def test_batchnorm_folds_exactly(images):
    torch.manual_seed(0)
    model = _randomise_bn(FoldNet())
    x = images(4, shape=(3, 4, 4))
    ref = model(x)

    gm = trace(copy.deepcopy(model))  # fold_batchnorm works in place on the traced modules
    folded, kept = fold_batchnorm(gm)
    assert (folded, kept) == (4, 0)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in gm.modules())
    torch.testing.assert_close(gm(x), ref, rtol=0, atol=FOLD_ATOL)
    assert gm.get_submodule("conv").bias is not None  # bias created for the bias-free conv

    snn = prepare(model, x)
    assert len(snn.neurons()) == 4
    torch.testing.assert_close(snn.ann_forward(images(4, seed=9, shape=(3, 4, 4))),
                               model(images(4, seed=9, shape=(3, 4, 4))), rtol=0, atol=FOLD_ATOL)
    # prepare works on a copy: the user's model still has its BatchNorms and bias-free conv
    assert isinstance(model.bn, nn.BatchNorm2d) and model.conv.bias is None
    torch.testing.assert_close(model(x), ref, rtol=0, atol=0)


def test_linear_on_a_sequence_does_not_fold_its_batchnorm(images):
    """On ``[B, C, L]`` a Linear maps L while BatchNorm1d(C) normalises C: not foldable, even when
    the sizes happen to agree (here both 4)."""

    class SeqNet(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(5, 4)
            self.bn = nn.BatchNorm1d(4)
            self.head = nn.Linear(16, 2)

        def forward(self, x):
            return self.head(torch.relu(self.bn(self.fc(x))).flatten(1))

    model = _randomise_bn(SeqNet())
    x = images(3, shape=(4, 5))
    snn = prepare(model, x)
    assert len(_modules_of(snn, ChannelAffine)) == 1
    torch.testing.assert_close(snn.ann_forward(x), model(x), rtol=0, atol=FOLD_ATOL)


class CatBN(nn.Module):
    """DenseNet pattern: BN of a concatenation of spiking tensors cannot be folded into one layer."""

    def __init__(self) -> None:
        super().__init__()
        self.a = nn.Conv2d(3, 4, 3, padding=1)
        self.b = nn.Conv2d(3, 4, 1)
        self.norm = nn.BatchNorm2d(8)
        self.c = nn.Conv2d(8, 5, 3, padding=1)
        self.head = nn.Linear(5, 3)

    def forward(self, x):
        y = torch.cat([F.relu(self.a(x)), F.relu(self.b(x))], 1)
        y = F.relu(self.c(F.relu(self.norm(y))))
        return self.head(F.adaptive_avg_pool2d(y, 1).flatten(1))


def test_unfoldable_batchnorm_becomes_channel_affine(images):
    torch.manual_seed(0)
    model = _randomise_bn(CatBN())
    x = images(3)
    snn = prepare(model, x)
    affines = _modules_of(snn, ChannelAffine)
    assert len(affines) == 1 and affines[0].scale.shape == (8,)
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in snn.modules())
    assert set(dict(affines[0].named_buffers())) == {"scale", "shift"}  # buffers, never trained
    torch.testing.assert_close(snn.ann_forward(x), model(x), rtol=0, atol=FOLD_ATOL)
    calibrate_thresholds(snn, x, timesteps=32)
    assert snn.run(x, 32).shape == (32, 3, 3)  # the affine sits on the spiking path and simulates


class AllActivations(nn.Module):
    """Every spelling of a (clipped) ReLU, and a ReLU module called twice."""

    def __init__(self) -> None:
        super().__init__()
        self.convs = nn.ModuleList(nn.Conv2d(4, 4, 3, padding=1) for _ in range(13))
        self.shared = nn.ReLU()
        self.relu6 = nn.ReLU6()
        self.hardtanh = nn.Hardtanh(0.0, 2.5)

    def forward(self, x):
        c = iter(self.convs)
        x = self.shared(next(c)(x))
        x = F.relu(next(c)(x))
        x = torch.relu(next(c)(x))
        x = next(c)(x).relu_()
        x = torch.relu_(next(c)(x))
        x = F.relu_(next(c)(x))
        x = self.relu6(next(c)(x))
        x = F.relu6(next(c)(x))
        x = F.hardtanh(next(c)(x), 0.0, 3.0)
        x = self.hardtanh(next(c)(x))
        x = next(c)(x).clamp(min=0, max=4.0)
        x = torch.clamp(next(c)(x), 0)
        x = self.shared(next(c)(x))  # second call of the same module
        return x


EXPECTED_CLIPS = [None, None, None, None, None, None, 6.0, 6.0, 3.0, 2.5, 4.0, None, None]


def test_every_relu_spelling_becomes_a_neuron(images):
    torch.manual_seed(0)
    model = AllActivations().eval()
    x = images(2, shape=(4, 6, 6)) * 3
    snn = prepare(model, x)
    neurons = snn.neurons()
    assert [n.clip for n in neurons.values()] == EXPECTED_CLIPS
    assert len(set(map(id, neurons.values()))) == 13  # the reused ReLU got two independent neurons
    assert "shared" in neurons and "shared_1" in neurons
    ops = {(n.op, str(n.target)) for n in snn.graph_module.graph.nodes if n.op != "call_module"}
    assert not any("relu" in t or "clamp" in t or "hardtanh" in t for _, t in ops)
    torch.testing.assert_close(snn.ann_forward(x), model(x), rtol=0, atol=ANN_ATOL)


def test_reused_module_neurons_are_independent(images):
    torch.manual_seed(0)
    model = AllActivations().eval()
    x = images(2, shape=(4, 6, 6)) * 3
    snn = prepare(model, x)
    calibrate_thresholds(snn, x, timesteps=16, config=CalibrationConfig(method="max"))
    first, second = snn.neurons()["shared"], snn.neurons()["shared_1"]
    assert first.theta.item() != second.theta.item()
    first.set_phi(3)
    assert int(second.phi) == 1


class Plumbing(nn.Module):
    """Residual add, cat, flatten/view/reshape, avg/adaptive pooling, dropout, identity."""

    def __init__(self) -> None:
        super().__init__()
        self.stem = nn.Conv2d(3, 4, 3, padding=1)
        self.a = nn.Conv2d(4, 4, 3, padding=1)
        self.b = nn.Conv2d(4, 4, 1)
        self.pool = nn.AvgPool2d(2)
        self.gap = nn.AdaptiveAvgPool2d((2, 2))
        self.drop = nn.Dropout(0.5)
        self.drop2d = nn.Dropout2d(0.3)
        self.ident = nn.Identity()
        self.flat = nn.Flatten()
        self.fc = nn.Linear(8 * 4 + 8 * 4, 3)

    def forward(self, x):
        s = F.relu(self.stem(x))
        r = F.relu(self.a(s) + s)  # residual add
        y = torch.cat([r, F.relu(self.b(s))], dim=1)  # concatenation
        y = self.drop2d(self.ident(self.pool(y)))  # [B, 8, 4, 4]
        g = self.flat(self.gap(y))  # [B, 32]
        h = F.adaptive_avg_pool2d(F.avg_pool2d(y, 2), 2).reshape(y.shape[0], -1)
        z = torch.flatten(torch.cat([g, h.view(-1, 32)], 1), 1)
        return self.fc(F.dropout(self.drop(z), 0.2, self.training))


def test_linear_plumbing_is_allowed_and_exact(images):
    torch.manual_seed(0)
    model = Plumbing().eval()
    x = images(3)
    snn = prepare(model, x)
    assert len(snn.neurons()) == 3
    torch.testing.assert_close(snn.ann_forward(images(3, seed=5)), model(images(3, seed=5)),
                               rtol=0, atol=ANN_ATOL)
    calibrate_thresholds(snn, [images(8, seed=s) for s in range(2)], timesteps=128,
                         config=CalibrationConfig(num_batches=2))
    out = snn.run(x, 128).mean(0)
    ref = model(x)
    # Linear ops commute with the time average: only the neurons' quantisation (θ/2T) separates them.
    assert F.cosine_similarity(out, ref, dim=1).min() > 0.995


class MaxPoolNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 3, padding=1)
        self.conv2 = nn.Conv2d(6, 6, 3, padding=1)
        self.conv3 = nn.Conv2d(6, 6, 3, padding=1)
        self.mp = nn.MaxPool2d(2)
        self.fc = nn.Linear(12 * 16 + 6 * 9 + 6 * 16, 4)

    def forward(self, x):
        p = self.mp(F.relu(self.conv1(x)))  # ReLU -> MaxPool: the pool moves in front of the neuron
        b = F.relu(self.conv2(p))
        q = F.max_pool2d(self.mp(b), 2, 1)  # the same pool module again, then a chained pool; b is
        # used elsewhere too (neuron duplicated)
        c = F.relu(self.conv3(b))
        r = F.max_pool2d(c, kernel_size=2, stride=2)  # functional spelling
        e = torch.max_pool2d(torch.cat([b, c], 1), 2)  # max-pool of a concatenation of neurons
        return self.fc(torch.cat([e.flatten(1), q.flatten(1), r.flatten(1)], 1))


def test_maxpool_moves_in_front_of_the_neuron(images):
    torch.manual_seed(0)
    model = MaxPoolNet().eval()
    x = images(2, shape=(3, 16, 16))
    snn = prepare(model, x)
    gm = snn.graph_module
    for node in gm.graph.nodes:
        module = gm.get_submodule(str(node.target)) if node.op == "call_module" else None
        is_pool = isinstance(module, nn.MaxPool2d) or (
            node.op == "call_function" and node.target in (F.max_pool2d, torch.max_pool2d))
        if is_pool:  # every max-pool now reads currents and feeds neurons (maybe via pools) only
            src = node.args[0]
            assert not (src.op == "call_module" and isinstance(gm.get_submodule(str(src.target)), IFNeuron))
            for u in node.users:
                assert u.op == "call_module"
                assert isinstance(gm.get_submodule(str(u.target)), (IFNeuron, nn.MaxPool2d))
    # every pool of spike-driven currents (all but the stem's) is the rate-preserving kind, each
    # with its own state — the chained one too
    pools = _modules_of(snn, nn.MaxPool2d)
    spiking = [p for p in pools if isinstance(p, SpikingMaxPool)]
    assert len(pools) == 6 and len(spiking) == 5 and len(set(map(id, spiking))) == 5
    assert not isinstance(gm.get_submodule("mp"), SpikingMaxPool)  # the stem pool: constant input
    torch.testing.assert_close(snn.ann_forward(x), model(x), rtol=0, atol=ANN_ATOL)


def test_spiking_maxpool_tracks_the_ann(pool_cnn, images):
    """Max of per-step currents is biased upward (E[max] ≥ max E) at any T; pooling the
    accumulated currents is not. A per-step max-pool gives a relative error > 1 on this net
    (cosine ≈ 0.92); the rate-preserving pool 0.004."""
    snn = prepare(pool_cnn, images(4))
    calibrate_thresholds(snn, [images(16, seed=s) for s in range(2)], timesteps=256,
                         config=CalibrationConfig(num_batches=2))
    x = images(8, seed=7)
    with torch.no_grad():
        ref = pool_cnn(x)
    err = (snn.run(x, 256).mean(0) - ref).norm() / ref.norm()
    assert err < 0.05  # 10x the observed 0.004, 20x below the per-step max-pool's error


def test_spiking_maxpool_semantics():
    from adacal.neurons import spiking_max_pool

    pool = spiking_max_pool(nn.MaxPool2d(2))
    pool.set_mode("snn")
    T, B = 6, 2
    z = torch.randn(T, B, 3, 4, 4, dtype=torch.float64)
    pool.timesteps = T
    out = pool(z.flatten(0, 1)).view(T, B, 3, 2, 2)
    # the neuron integrates exactly max_i of the accumulated currents
    torch.testing.assert_close(out.cumsum(0), F.max_pool2d(z.cumsum(0).flatten(0, 1), 2).view_as(out))
    # a constant current is pooled as by the plain max-pool, every step
    const = z[:1].expand(T, -1, -1, -1, -1)
    out = pool(const.flatten(0, 1)).view(T, B, 3, 2, 2)
    torch.testing.assert_close(out, F.max_pool2d(const.flatten(0, 1), 2).view_as(out))
    pool.set_mode("ann")
    torch.testing.assert_close(pool(z[0]), F.max_pool2d(z[0], 2))


class Transformerish(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 8, 3, padding=1)
        self.act = nn.GELU()
        self.norm = nn.LayerNorm(8)
        self.attn = nn.MultiheadAttention(8, 2, batch_first=True)
        self.head = nn.Linear(8, 4)

    def forward(self, x):
        x = F.relu(self.conv(x))
        x = self.act(x)
        x = F.silu(x) + torch.sigmoid(x)
        t = self.norm(x.flatten(2).transpose(1, 2))
        t, _ = self.attn(t, t, t)
        return torch.softmax(self.head(t.mean(1)), dim=-1)


def test_unsupported_ops_reported_together(images):
    with pytest.raises(UnsupportedLayerError) as info:
        prepare(Transformerish().eval(), images(2))
    msg = str(info.value)
    assert msg.startswith("6 op(s) on the spiking path cannot be converted")
    for expected in ("act (GELU)", "silu (torch.nn.functional.silu)", "sigmoid (torch.sigmoid)",
                     "norm (LayerNorm)", "attn (MultiheadAttention)", "softmax (torch.softmax)"):
        assert f"  - {expected}: no spiking equivalent" in msg, expected
    assert msg.count("\n  - ") == 6
    assert "activations=[...]" in msg and "analog=[...]" in msg  # each comes with a hint


def test_unsupported_ops_can_be_declared_analog_or_activations(images, caplog):
    analog = ("sigmoid", "norm", "attn", "softmax")
    model = Transformerish().eval()
    # a declared activation is measured against the neuron's ReLU response: GELU/SiLU are far from it
    with pytest.raises(UnsupportedLayerError, match=r"act: \d+\.\d%, silu: \d+\.\d%.*accept_activation_error"):
        prepare(model, images(2), config=ConversionConfig(activations=(nn.GELU, F.silu), analog=analog))
    cfg = ConversionConfig(activations=(nn.GELU, F.silu), analog=analog, accept_activation_error=True)
    with caplog.at_level("WARNING", logger="adacal"):
        snn = prepare(model, images(2), config=cfg)
    assert "measured relative error" in caplog.text and "act: " in caplog.text
    neurons = snn.neurons()
    assert list(neurons) == ["relu", "act", "silu"]  # GELU and SiLU declared ReLU-like: neurons
    assert isinstance(neurons["act"].ann_fn, nn.GELU) and neurons["relu"].ann_fn is None
    # ANN mode still is the original network (GELU and SiLU, not ReLU) ...
    x = images(2, seed=3)
    torch.testing.assert_close(snn.ann_forward(x), model(x), rtol=0, atol=ANN_ATOL)
    # ... while the spiking modes approximate a ReLU
    z = torch.linspace(-3, 3, 13).view(1, -1)
    neurons["silu"].set_theta(torch.tensor(4.0))
    with snn.mode("analog", timesteps=1000):
        torch.testing.assert_close(neurons["silu"](z), z.clamp(min=0), rtol=0, atol=2e-3)
    with pytest.raises(UnsupportedLayerError, match=r"1 op\(s\).*\n  - sigmoid \(torch.sigmoid\)"):
        prepare(model, images(2), config=ConversionConfig(activations=(nn.GELU, F.silu), analog=analog[1:],
                                                          accept_activation_error=True))


def test_max_pool_of_spikes_elsewhere_is_reported(images):
    class SpikeMax(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.fc = nn.Linear(4 * 16, 2)

        def forward(self, x):
            y = F.relu(self.conv(x))
            return self.fc(F.max_pool2d(y + 1.0, 2).flatten(1))  # not right after a ReLU

    with pytest.raises(UnsupportedLayerError, match="max-pooling spikes is not rate-preserving"):
        prepare(SpikeMax().eval(), images(2))


def test_nonlinear_ops_before_the_first_neuron_are_fine(images):
    class Prefix(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.fc = nn.Linear(4 * 64, 2)

        def forward(self, x):
            return self.fc(F.relu(self.conv(torch.tanh(x))).flatten(1))  # tanh: analog input stage

    model = Prefix().eval()
    snn = prepare(model, images(2))
    torch.testing.assert_close(snn.ann_forward(images(2)), model(images(2)), rtol=0, atol=ANN_ATOL)


def test_model_without_relu_is_rejected(images):
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.GELU(), nn.Flatten(), nn.LazyLinear(2))
    model(images(1))
    with pytest.raises(UnsupportedLayerError, match="no ReLU-family activation"):
        prepare(model.eval(), images(2))


def test_generated_neuron_names_do_not_clobber_modules(images):
    class Block(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3, padding=1)
            self.relu = nn.Identity()  # a module called "relu" that is not an activation

        def forward(self, x):
            return self.relu(F.relu(self.conv(x)) - 0.5)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.block = Block()
            self.fc = nn.Linear(3 * 64, 2)

        def forward(self, x):
            return self.fc(self.block(x).flatten(1))

    model = Net().eval()
    snn = prepare(model, images(2))
    (name,) = snn.neurons()
    assert name != "block.relu" and isinstance(snn.graph_module.get_submodule("block.relu"), nn.Identity)
    torch.testing.assert_close(snn.ann_forward(images(2)), model(images(2)), rtol=0, atol=ANN_ATOL)


def test_batchnorm_without_running_stats_is_reported(images):
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 4, 3),
                          nn.BatchNorm2d(4, track_running_stats=False), nn.ReLU()).eval()
    with pytest.raises(UnsupportedLayerError, match=r"3 \(BatchNorm2d\)"):
        prepare(model, images(2))


def test_conversion_is_fx_based_and_keeps_a_single_graph(small_cnn, images):
    snn = prepare(small_cnn, images(2))
    assert isinstance(snn.graph_module, fx.GraphModule)
    assert list(snn.neurons()) == ["relu1", "relu2"]  # topological order, original names


def test_square_of_spikes_is_rejected() -> None:
    """``x * x`` multiplies two spiking operands even though both are the same node."""

    class Square(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(4, 4)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            h = torch.relu(self.fc(x))
            return h * h

    with pytest.raises(UnsupportedLayerError, match="multiplies two spiking tensors"):
        prepare(Square().eval(), torch.randn(2, 4))


class ShuffleFlipRoll(nn.Module):
    """Spikes reordered by flip, roll and channel shuffle: linear, 0/1 connectivity."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
        self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
        self.fc = nn.Linear(4 * 8 * 8, 3)

    def forward(self, x):
        s = torch.relu(self.conv1(x))
        s = torch.roll(torch.flip(s, dims=[3]), shifts=1, dims=2)
        s = torch.relu(self.conv2(F.channel_shuffle(s, 2)))
        return self.fc(s.flatten(1))


def test_conversion_and_energy_share_one_op_table(images):
    """Every op the energy model can price, conversion accepts (and the other way round)."""
    from adacal.energy import EnergyModel

    torch.manual_seed(0)
    snn = prepare(ShuffleFlipRoll().eval(), images(2))
    model = EnergyModel.build(snn, images(1))
    kinds = {li.name: li.kind for li in model.layers}
    assert kinds == {"conv1": "analog", "conv2": "spike", "fc": "spike"}
    assert sum(li.synapses for li in model.layers if li.kind == "spike") > 0

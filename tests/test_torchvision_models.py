"""Whole-network conversion of standard architectures, with no model-specific code (method.md §1-2).

Each network (random weights) is converted, its thresholds calibrated on two random batches with
the MSE search at the simulated T, and a held-out batch simulated for T = 256 steps (φ = 1).

Metric. ``rel(T) = ‖SNN(T) − ANN‖ / ‖ANN‖`` on the logits, with the classifier's bias set to zero
so that only the input-dependent part is compared (with random weights the bias alone would give a
cosine > 0.99 whatever the features did). Two checks:

* convergence: ``rel(256) ≤ CONVERGENCE · rel(64)``, where rel(64) is the mean of the same run's
  first 64 steps. A correct conversion only has quantisation and spike-timing errors, which fall as
  1/T (ratio ≈ 0.25; observed 0.25-0.38 on these nets); a conversion fault — a wrongly folded BN, a
  biased max-pool, a lost op — leaves an error that does not shrink (ratio ≈ 1).
* closeness: ``rel(256) ≤ MAX_REL_ERROR`` (observed ≤ 0.17, MobileNetV2 and ResNet-50 being the
  deepest; most nets ≤ 0.05; the min per-sample cosine is then ≥ 0.98).

Realistic statistics. BatchNorm running stats come from train-mode passes over random data, but a
random-weight network whose BNs subtract the batch mean is chaotic (Yang et al. 2019, "A mean field
theory of batch normalization"): a 1e-3 input perturbation changes ResNet-50's logits by 10%, so
any quantisation at all would look like a failed conversion. Trained networks are not like that. The
fixture keeps BN's scaling (running_var := E[x²]) but not its centring (running_mean := 0): every
layer stays at unit scale, the networks are in the ordered regime (1e-3 → 0.3%), and the measured
error is the conversion's.
"""
from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn

from adacal import models as adacal_models
from adacal.calibrate import calibrate_thresholds
from adacal.config import CalibrationConfig
from adacal.convert import prepare

pytestmark = pytest.mark.usefixtures("single_thread")

T_LONG = 256  # the tracking horizon of the issue (φ = 1)
T_SHORT = 64  # the same run's first 64 steps, for the convergence check
CONVERGENCE = 0.5  # rel(256)/rel(64): 1/T behaviour gives 0.25, a T-independent error gives ~1
MAX_REL_ERROR = 0.25  # observed ≤ 0.17 (see the module docstring)
ANN_ATOL = 1e-4  # ANN mode vs the original: BN folding reorders float32 operations

SLOW = pytest.mark.slow
CASES = [
    pytest.param("resnet18", 32, id="resnet18"),
    pytest.param("resnet50", 32, id="resnet50", marks=SLOW),
    pytest.param("vgg11_bn", 32, id="vgg11_bn", marks=SLOW),  # 130 M parameters: as slow as vgg16
    pytest.param("vgg16", 32, id="vgg16", marks=SLOW),
    pytest.param("alexnet", 64, id="alexnet"),  # its stem needs ≥ 63 pixels
    pytest.param("mobilenet_v2", 32, id="mobilenet_v2"),
    pytest.param("squeezenet1_0", 64, id="squeezenet1_0"),
    pytest.param("densenet121", 32, id="densenet121", marks=SLOW),
    pytest.param("googlenet", 64, id="googlenet", marks=SLOW),
    pytest.param("adacal.resnet20", 32, id="adacal-resnet20"),
    pytest.param("adacal.resnet20_wide", 16, id="adacal-resnet20_wide"),  # 16 px: 4x cheaper, same graph
    pytest.param("adacal.vgg16_cifar", 32, id="adacal-vgg16_cifar"),  # five 2x2 max-pools need 32 px
]


def _build(name: str) -> nn.Module:
    if name.startswith("adacal."):
        return getattr(adacal_models, name.split(".", 1)[1])(num_classes=10)
    extra = {"aux_logits": False, "init_weights": True} if name == "googlenet" else {}
    return torchvision.models.get_model(name, weights=None, num_classes=10, **extra)


@torch.no_grad()
def _ordered_regime(model: nn.Module) -> nn.Module:
    """Running stats as scale only: running_var := E[x²] = var + mean², running_mean := 0."""
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.running_var.add_(m.running_mean**2)
            m.running_mean.zero_()
    linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
    if linears and linears[-1].bias is not None:
        linears[-1].bias.zero_()  # compare the input-dependent part of the logits only
    return model


@pytest.mark.parametrize("name,size", CASES)
def test_converted_network_tracks_the_ann(name, size, warm_bn, images):
    torch.manual_seed(0)
    shape = (3, size, size)
    model = _build(name)
    warm_bn(model, [images(4, seed=100 + i, shape=shape) for i in range(3)])
    model = _ordered_regime(model)
    x = images(2, seed=2, shape=shape)

    snn = prepare(model, images(2, seed=1, shape=shape))
    assert len(snn.neurons()) > 0
    assert not any(isinstance(m, (nn.ReLU, nn.ReLU6, nn.modules.batchnorm._BatchNorm)) for m in snn.modules())
    assert snn.has_constant_prefix  # the first layer is computed once per input, for every net
    with torch.no_grad():
        ref = model(x)
    torch.testing.assert_close(snn.ann_forward(x), ref, rtol=0, atol=ANN_ATOL)

    calibration = [images(2, seed=10 + i, shape=shape) for i in range(2)]
    calibrate_thresholds(snn, calibration, timesteps=T_LONG, config=CalibrationConfig(num_batches=2))
    steps = snn.run(x, T_LONG)
    assert steps.shape == (T_LONG, 2, 10)

    def rel(t: int) -> float:
        return float((steps[:t].mean(0) - ref).norm() / ref.norm())

    long, short = rel(T_LONG), rel(T_SHORT)
    assert long <= MAX_REL_ERROR, (name, long)
    assert long <= CONVERGENCE * short, (name, short, long)

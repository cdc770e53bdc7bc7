"""Shared tiny fixtures for the core-engine tests (CPU, a few hundred parameters to a few MB)."""
from __future__ import annotations

from collections.abc import Callable, Iterable

import pytest
import torch
from torch import Tensor, nn


@pytest.fixture
def single_thread():
    """The test machines are shared: one intra-op thread per test process."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


@torch.no_grad()
def warm_batchnorm(model: nn.Module, batches: Iterable[Tensor]) -> nn.Module:
    """Give a random-weight model realistic BatchNorm running statistics, then put it in eval mode.

    With ``momentum=None`` the running statistics are the exact average over ``batches`` of the
    train-mode batch statistics (the default momentum would leave them 0/1-biased after a few
    batches), so every BN really normalises its input and activations stay well scaled in depth.
    """
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    saved = [m.momentum for m in bns]
    for m in bns:
        m.reset_running_stats()
        m.momentum = None
    model.train()
    for x in batches:
        model(x)
    for m, mom in zip(bns, saved):
        m.momentum = mom
    return model.eval()


@pytest.fixture
def warm_bn() -> Callable[[nn.Module, Iterable[Tensor]], nn.Module]:
    return warm_batchnorm


class SmallCNN(nn.Module):
    """conv-BN-ReLU-conv-BN-ReLU-avgpool-linear on ``[B, 3, 8, 8]``: the workhorse of the core tests."""

    def __init__(self, width: int = 8, classes: int = 5) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.relu1 = nn.ReLU()
        self.conv2 = nn.Conv2d(width, 2 * width, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(2 * width)
        self.relu2 = nn.ReLU()
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(2 * width, classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.relu1(self.bn1(self.conv1(x)))
        x = self.relu2(self.bn2(self.conv2(x)))
        return self.fc(torch.flatten(self.pool(x), 1))


class PoolCNN(nn.Module):
    """Two conv-ReLU-MaxPool stages, a residual-free VGG in miniature (``[B, 3, 8, 8]``)."""

    def __init__(self, width: int = 8, classes: int = 5) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, 3, padding=1)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, padding=1)
        self.bn2 = nn.BatchNorm2d(width)
        self.pool = nn.MaxPool2d(2)
        self.fc = nn.Linear(width * 4, classes)

    def forward(self, x: Tensor) -> Tensor:
        x = self.pool(torch.relu(self.bn1(self.conv1(x))))
        x = self.pool(torch.relu(self.bn2(self.conv2(x))))
        return self.fc(x.flatten(1))


def image_batch(batch: int = 4, seed: int = 0, shape: tuple[int, ...] = (3, 8, 8)) -> Tensor:
    """A reproducible ``randn`` batch (the tests' stand-in for normalised images)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, *shape, generator=g)


@pytest.fixture
def images() -> Callable[..., Tensor]:
    return image_batch


def _warmed(model: nn.Module, shape: tuple[int, ...] = (3, 8, 8)) -> nn.Module:
    return warm_batchnorm(model, [image_batch(16, seed=100 + i, shape=shape) for i in range(3)])


@pytest.fixture
def small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return _warmed(SmallCNN())


@pytest.fixture
def pool_cnn() -> nn.Module:
    torch.manual_seed(1)
    return _warmed(PoolCNN())

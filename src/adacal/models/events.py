"""A small ReLU CNN for event frames (N-MNIST's 2×34×34 and other sensors), built to convert well.

Conv-BN-ReLU blocks with average pooling (rate-preserving in an SNN: no max-pool), an adaptive
average pool to a fixed grid so one definition fits any sensor size, and one linear classifier.
Trains in minutes on one CPU core for N-MNIST.
"""
from __future__ import annotations

import torch
from torch import nn

from adacal.errors import ConfigError
from adacal.models.registry import register_model

__all__ = ["EventCNN", "event_cnn", "nmnist_cnn"]


class EventCNN(nn.Module):
    """``blocks`` × (conv3x3-BN-ReLU-avgpool2), widths ``width·2^i``; adaptive pool to ``grid``²; dropout; linear."""

    def __init__(self, num_classes: int = 10, in_channels: int = 2, width: int = 16, blocks: int = 3,
                 grid: int = 4, dropout: float = 0.2) -> None:
        super().__init__()
        if min(num_classes, in_channels, width, blocks, grid) < 1 or not 0.0 <= dropout < 1.0:
            raise ConfigError(f"EventCNN needs positive num_classes/in_channels/width/blocks/grid and dropout in "
                              f"[0, 1); got {num_classes}, {in_channels}, {width}, {blocks}, {grid}, {dropout}")
        layers: list[nn.Module] = []
        c = in_channels
        for i in range(blocks):
            out = width * 2**i
            layers += [nn.Conv2d(c, out, 3, padding=1, bias=False), nn.BatchNorm2d(out), nn.ReLU(), nn.AvgPool2d(2)]
            c = out
        self.features = nn.Sequential(*layers)
        self.pool = nn.AdaptiveAvgPool2d(grid)
        self.classifier = nn.Sequential(nn.Flatten(1), nn.Dropout(dropout), nn.Linear(c * grid * grid, num_classes))
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.pool(self.features(x)))


def event_cnn(num_classes: int = 10, in_channels: int = 2, width: int = 16, blocks: int = 3, grid: int = 4,
              dropout: float = 0.2) -> EventCNN:
    """An :class:`EventCNN` (``model.options``: in_channels = frames·polarities, width, blocks, grid, dropout)."""
    return EventCNN(num_classes, in_channels, width, blocks, grid, dropout)


def nmnist_cnn(num_classes: int = 10, in_channels: int = 2, width: int = 16) -> EventCNN:
    """The zoo's N-MNIST network: 3 blocks of 16/32/64 channels on 2×34×34 frames, 4×4 grid, linear."""
    return EventCNN(num_classes, in_channels, width, blocks=3, grid=4, dropout=0.2)


register_model("event_cnn", event_cnn)
register_model("nmnist_cnn", nmnist_cnn)

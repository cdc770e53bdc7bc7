"""Minimal tensor transforms for uint8 image arrays.

Written by hand (rather than torchvision.transforms) because per-sample cost matters on slow CPUs
and the ops are few: scale to [0, 1], optional zero-pad + random crop, optional horizontal flip,
per-channel normalisation.  Padding happens *before* normalisation, matching
``RandomCrop(32, padding=4)`` + ``ToTensor`` + ``Normalize`` in torchvision.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["Normalization", "CIFAR10_NORM", "CIFAR100_NORM", "MNIST_NORM", "DIGITS_NORM", "IMAGENET_NORM",
           "ImageTransform"]


@dataclass(frozen=True)
class Normalization:
    """Per-channel mean/std applied after scaling pixels to [0, 1]."""

    mean: tuple[float, ...]
    std: tuple[float, ...]


CIFAR10_NORM = Normalization((0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616))
CIFAR100_NORM = Normalization((0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762))
MNIST_NORM = Normalization((0.1307,), (0.3081,))
DIGITS_NORM = Normalization((0.3,), (0.4,))  # approx. mean/std of load_digits()/16
IMAGENET_NORM = Normalization((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))


class ImageTransform:
    """uint8 HWC (or HW) array -> normalised float32 CHW tensor, with optional CIFAR-style augmentation.

    ``max_value`` is the value that maps to 1.0 (255 for images, 16 for sklearn digits).
    """

    def __init__(
        self, norm: Normalization, *, crop_padding: int = 0, hflip: bool = False, max_value: float = 255.0
    ) -> None:
        self.crop_padding = int(crop_padding)
        self.hflip = bool(hflip)
        self.max_value = float(max_value)
        self._mean = torch.tensor(norm.mean, dtype=torch.float32).view(-1, 1, 1)
        self._std = torch.tensor(norm.std, dtype=torch.float32).view(-1, 1, 1)

    @property
    def augments(self) -> bool:
        return self.crop_padding > 0 or self.hflip

    def __call__(self, img: np.ndarray | torch.Tensor) -> torch.Tensor:
        x = torch.tensor(np.asarray(img))  # copy: source arrays are read-only and shared
        if x.ndim == 2:
            x = x.unsqueeze(-1)
        x = x.permute(2, 0, 1).to(torch.float32).div_(self.max_value)
        if self.crop_padding > 0:
            p = self.crop_padding
            h, w = x.shape[1:]
            x = F.pad(x, (p, p, p, p))
            i, j = torch.randint(0, 2 * p + 1, (2,)).tolist()
            x = x[:, i : i + h, j : j + w]
        if self.hflip and bool(torch.rand(()) < 0.5):
            x = x.flip(-1)
        return ((x - self._mean) / self._std).contiguous()

    def __repr__(self) -> str:
        return (
            f"ImageTransform(mean={self._mean.flatten().tolist()}, std={self._std.flatten().tolist()}, "
            f"crop_padding={self.crop_padding}, hflip={self.hflip}, max_value={self.max_value})"
        )

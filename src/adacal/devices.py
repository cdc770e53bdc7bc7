"""Where a model lives: device and floating dtype follow its own parameters (never assumed CUDA)."""
from __future__ import annotations

import torch

__all__ = ["model_device", "model_float"]


def model_float(model: torch.nn.Module) -> tuple[torch.device, torch.dtype] | None:
    """Device and dtype of the first floating-point parameter or buffer (None if it has none)."""
    for t in (*model.parameters(), *model.buffers()):
        if t.is_floating_point():
            return t.device, t.dtype
    return None


def model_device(model: torch.nn.Module) -> torch.device:
    """Device of the first parameter or buffer (CPU for a model without any)."""
    for t in (*model.parameters(), *model.buffers()):
        return t.device
    return torch.device("cpu")

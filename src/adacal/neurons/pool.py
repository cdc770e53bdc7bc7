"""Rate-preserving max-pooling of spike-driven currents (the pooled input of a neuron).

``maxpool(relu(z)) == relu(maxpool(z))``, so conversion moves every max-pool in front of the
neuron it follows. When ``z`` comes from spikes it fluctuates from step to step, and the
time average of a per-step maximum over-estimates the maximum of the averages — a bias that
does not shrink with T (random VGG-11: output cosine ≈ 0.84 at any T). In ``snn`` mode these
pools therefore pool the *accumulated* currents ``U_i(t) = Σ_{k≤t} z_i(k)`` and pass on the
increment ``P(t) − P(t−1)`` of ``P(t) = max_i U_i(t)``: the neuron then integrates exactly
``max_i U_i(t)``, whose average tends to ``max_i mean(z_i)`` — the ANN's value. For a constant
current this equals the plain max-pool at every step.

The same holds for a max over whole dimensions (PointNet's global max over points,
``torch.max(x, 2)``, ``amax``, ``adaptive_max_pool1d(x, 1)``): conversion rewrites each into a
:class:`MaxOver` and, on spike-driven currents, its twin :class:`SpikingMaxOver`.

State (``U`` and ``P``) lives only within a :class:`~adacal.spiking_model.Session` (which sets
``streaming``): outside one, every call is a complete run of ``timesteps`` steps.
"""
from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from adacal.errors import ConfigError, ShapeError

__all__ = ["MaxOver", "SpikingMaxOver", "SpikingMaxPool1d", "SpikingMaxPool2d", "SpikingMaxPool3d", "SpikingMaxPool",
           "spiking_max_pool"]

_MODES = ("ann", "analog", "snn")


class SpikingMaxPool(nn.Module):
    """Mixin: max-pool of accumulated currents in ``snn`` mode, the plain max-pool otherwise."""

    def _init_state(self) -> None:
        self.mode = "ann"
        self.timesteps = 1  # steps stacked on the batch axis in one call (snn mode)
        self.streaming = False  # carry the accumulators across calls (inside a Session)
        self.acc: Tensor | None = None  # U: accumulated input currents [B, ...]
        self.prev: Tensor | None = None  # P(t-1): pooled accumulated currents [B, ...]

    def set_mode(self, mode: str) -> None:
        if mode not in _MODES:
            raise ConfigError(f"unknown mode {mode!r}; expected one of {_MODES}")
        self.mode = mode

    def reset(self) -> None:
        self.acc = self.prev = None

    def keep(self, index: Tensor) -> None:
        """Keep only the samples at ``index`` (early exit)."""
        if self.acc is not None and self.prev is not None:
            self.acc = self.acc.index_select(0, index)
            self.prev = self.prev.index_select(0, index)

    def forward(self, x: Tensor) -> Any:
        if self.mode != "snn":
            return super().forward(x)  # type: ignore[misc]
        steps = self.timesteps
        if x.shape[0] % steps:
            raise ShapeError(f"snn-mode input has {x.shape[0]} rows, not a multiple of the {steps} timesteps")
        batch = x.shape[0] // steps
        z = x.view(steps, batch, *x.shape[1:])
        if not self.streaming or self.acc is None or self.acc.shape != z.shape[1:]:
            self.acc = torch.zeros_like(z[0])
            self.prev = None
        cum = torch.empty_like(z)
        for t in range(steps):  # sequential sums: identical results however a run is chunked
            cum[t].copy_(self.acc.add_(z[t]))
        pooled = super().forward(cum.view_as(x))  # type: ignore[misc]
        pooled = pooled.view(steps, batch, *pooled.shape[1:])
        prev = self.prev if self.prev is not None else torch.zeros_like(pooled[0])  # max of U(0) = 0
        out = torch.empty_like(pooled)
        out[0] = pooled[0] - prev
        out[1:] = pooled[1:] - pooled[:-1]
        self.prev = pooled[-1].clone() if self.streaming else None
        if not self.streaming:
            self.acc = None
        return out.view(steps * batch, *out.shape[2:])


class SpikingMaxPool1d(SpikingMaxPool, nn.MaxPool1d):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        nn.MaxPool1d.__init__(self, *args, **kwargs)
        self._init_state()


class SpikingMaxPool2d(SpikingMaxPool, nn.MaxPool2d):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        nn.MaxPool2d.__init__(self, *args, **kwargs)
        self._init_state()


class SpikingMaxPool3d(SpikingMaxPool, nn.MaxPool3d):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        nn.MaxPool3d.__init__(self, *args, **kwargs)
        self._init_state()


class MaxOver(nn.Module):
    """``x.amax(dims, keepdim)``: a max over whole dimensions, as a module conversion can rewrite.

    The one spelling of ``torch.max(x, d)[0]``, ``x.max(d).values``, ``amax`` and global adaptive
    max-pools in a converted graph. ``dims`` never include the batch dimension 0 (timesteps are
    stacked on it in ``snn`` mode).
    """

    def __init__(self, dims: int | tuple[int, ...], keepdim: bool = False) -> None:
        super().__init__()
        dims = (dims,) if isinstance(dims, int) else tuple(int(d) for d in dims)
        if not dims or 0 in dims:
            raise ConfigError(f"MaxOver reduces non-batch dimensions only, got dims={dims}")
        self.dims = dims
        self.keepdim = bool(keepdim)

    def forward(self, x: Tensor) -> Tensor:
        if any(d < 0 and x.dim() + d == 0 for d in self.dims):
            raise ShapeError(f"MaxOver(dims={self.dims}) would reduce the batch dimension of a {x.dim()}-d input")
        return x.amax(dim=self.dims, keepdim=self.keepdim)

    def extra_repr(self) -> str:
        return f"dims={self.dims}, keepdim={self.keepdim}"


class SpikingMaxOver(SpikingMaxPool, MaxOver):
    """Rate-preserving :class:`MaxOver`: the max of accumulated currents, passed on as increments."""

    def __init__(self, dims: int | tuple[int, ...], keepdim: bool = False) -> None:
        MaxOver.__init__(self, dims, keepdim)
        self._init_state()


_BY_DIM: dict[type, type] = {
    nn.MaxPool1d: SpikingMaxPool1d,
    nn.MaxPool2d: SpikingMaxPool2d,
    nn.MaxPool3d: SpikingMaxPool3d,
}


def spiking_max_pool(pool: nn.Module) -> SpikingMaxPool:
    """The rate-preserving twin of an ``nn.MaxPool{1,2,3}d`` or a :class:`MaxOver` (same hyper-parameters)."""
    if isinstance(pool, MaxOver):
        return SpikingMaxOver(pool.dims, pool.keepdim)
    for base, cls in _BY_DIM.items():
        if isinstance(pool, base):
            return cls(pool.kernel_size, stride=pool.stride, padding=pool.padding, dilation=pool.dilation,
                       return_indices=pool.return_indices, ceil_mode=pool.ceil_mode)
    raise ConfigError(f"not a max-pool module: {type(pool).__name__}")

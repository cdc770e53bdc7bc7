"""Ops kept in floating point on the spiking path, made to converge to the ANN as T grows.

An op ``f`` listed in ``ConversionConfig(analog=[...])`` (a square, a LayerNorm, attention, the
matrix product of a PointNet T-Net) has no spiking equivalent. Applied to each step's spike
currents it is biased for any nonlinear ``f`` — ``mean_t f(x_t) ≠ f(mean_t x_t)`` — however large
T is. So conversion wraps it: :class:`RunningMean` in front of each time-varying input gives ``f``
the running average ``x̄_t`` of what it received so far, and :class:`RunningIncrement` behind it
passes on the increment ``t·f(x̄_t) − (t−1)·f(x̄_{t−1})``. Downstream then integrates
``t·f(x̄_t)``, whose time average ``f(x̄_t)`` tends to the ANN's value — the same construction as
the rate-preserving max-pool (:mod:`adacal.neurons.pool`), for any ``f``.

Both act along the batch dimension ``batch_dim`` of their tensor, where the simulator stacks
time steps (``[steps·B, ...]``); outside ``snn`` mode they are the identity.
"""
from __future__ import annotations

import torch
from torch import Tensor, nn

from adacal.errors import ConfigError, ShapeError

__all__ = ["RunningIncrement", "RunningMean", "TimeState"]

_MODES = ("ann", "analog", "snn")


class TimeState(nn.Module):
    """A module with a time state the simulator drives like a neuron's: ``mode``, ``timesteps``
    (steps stacked in one call), ``streaming`` (keep state across calls), ``reset`` and ``keep``."""

    def __init__(self, batch_dim: int = 0) -> None:
        super().__init__()
        self.batch_dim = int(batch_dim)
        self.mode = "ann"
        self.timesteps = 1
        self.streaming = False
        self.state: Tensor | None = None  # per-sample running quantity [B, ...] (batch on batch_dim)
        self.t = 0  # steps seen so far in this run

    def set_mode(self, mode: str) -> None:
        if mode not in _MODES:
            raise ConfigError(f"unknown mode {mode!r}; expected one of {_MODES}")
        self.mode = mode

    def reset(self) -> None:
        self.state, self.t = None, 0

    def keep(self, index: Tensor) -> None:
        """Keep only the samples at ``index`` (early exit)."""
        if self.state is not None:
            self.state = self.state.index_select(self.batch_dim, index)

    def _steps(self, x: Tensor) -> Tensor:
        """``[.., steps·B, ..]`` → ``[steps, .., B, ..]`` (time first)."""
        d, steps = self.batch_dim, self.timesteps
        if x.shape[d] % steps:
            raise ShapeError(f"snn-mode input has {x.shape[d]} rows on dim {d}, not a multiple of the {steps} "
                             "timesteps")
        return x.unflatten(d, (steps, x.shape[d] // steps)).movedim(d, 0)

    def _rows(self, y: Tensor) -> Tensor:
        """Inverse of :meth:`_steps`."""
        return y.movedim(0, self.batch_dim).flatten(self.batch_dim, self.batch_dim + 1)

    def forward(self, x: Tensor) -> Tensor:
        if self.mode != "snn":
            return x
        z = self._steps(x)
        state = self.state
        if not self.streaming or state is None or state.shape != z.shape[1:]:
            state, self.t = torch.zeros_like(z[0]), 0
        out = torch.empty_like(z)
        for k in range(z.shape[0]):  # sequential: identical results however a run is chunked
            self.t += 1
            out[k], state = self._step(z[k], state)
        self.state = state
        if not self.streaming:
            self.reset()
        return self._rows(out)

    def _step(self, x: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        """One step's output and the new state."""
        raise NotImplementedError


class RunningMean(TimeState):
    """The running average of the input over the steps so far (the input of an analog op)."""

    def _step(self, x: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        state = state + x  # running sum
        return state / self.t, state


class RunningIncrement(TimeState):
    """``t·y_t − (t−1)·y_{t−1}``: the output of an analog op as increments of ``t·f(x̄_t)``."""

    def _step(self, y: Tensor, state: Tensor) -> tuple[Tensor, Tensor]:
        total = y * self.t
        return total - state, total

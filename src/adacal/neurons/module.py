"""The spiking-neuron module that replaces every ReLU-family activation of a converted network."""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from adacal.checks import check_phi, check_rho
from adacal.determinism import is_channels_last
from adacal.errors import ConfigError, ShapeError
from adacal.neurons.functional import surrogate_rate
from adacal.neurons.kernels import FUSED_MIN_CALL_ELEMENTS, FUSED_MIN_ELEMENTS, KERNEL, if_update_eager_

__all__ = ["IFNeuron", "NEURON_MODES"]

NEURON_MODES = ("ann", "analog", "snn")
_RESIZABLE = ("theta", "v_offset", "bias_offset")


@dataclass
class _StepConstants:
    """What every step of an snn-mode call reads besides the currents, shaped for one input."""

    th: Tensor  # θ' = ρ·θ, broadcastable to the input
    bias: Tensor  # the bias correction, broadcastable to the input
    phi: Tensor  # φ in the input's dtype
    zero: Tensor
    rows: tuple[Tensor, Tensor | None] | None = None  # θ' and bias as rows of positions (fused step)


class IFNeuron(nn.Module):
    """Integrate-and-fire neuron, reset by subtraction, up to φ spikes per step (AdaFire).

    Modes:
      * ``ann``: the original activation (ReLU, ReLU clipped at ``clip``, or ``ann_fn`` for an
        activation declared ReLU-like) — conversion is exact.
      * ``analog``: the closed-form time-averaged output ``Q(a)`` for a constant input — a fast
        surrogate used by calibration and search.
      * ``snn``: the stateful neuron. A call receives ``steps`` timesteps stacked on the batch
        axis (``[steps·B, ...]``), or one constant current ``[B, ...]`` when ``constant_input``;
        it loops over time in place and returns ``[steps·B, ...]``. The membrane ``v`` persists
        across calls until :meth:`reset`, so a run may be split into time chunks (streaming is
        chunks of one step) with identical results.

    Buffers (saved, moved by ``.to()``): ``theta`` (per layer ``[]`` or per channel ``[C]``),
    ``phi``, ``rho``, ``v_init`` (initial potential as a fraction of ``ρ·θ``), ``v_offset``
    (potential correction, absolute) and ``bias_offset`` (bias correction, added to the input
    current every step). ``spike_count`` (per position, summed over time and samples) and the
    membrane are never saved. ``fused`` picks the update of a step: ``"auto"`` (compiled when a
    step is large), ``True`` or ``False`` (eager); all give bit-identical results
    (:mod:`adacal.neurons.kernels`); a simulation session sets it from ``SpikingModel.fused``.

    A new neuron type subclasses this, overrides :meth:`_spiking` (and :attr:`surrogate` if its
    average output for a constant input differs) and registers with
    :func:`adacal.neurons.register_neuron`; ``NeuronConfig.kind`` then selects it.
    """

    #: ``surrogate(a, θ', T, φ, v_init) -> rate``: this neuron's time-averaged output for a constant
    #: input ``a`` (method.md §2). ``analog`` mode, threshold calibration and the diagnostics use it,
    #: so they fit the dynamics that really run.
    surrogate = staticmethod(surrogate_rate)

    def __init__(self, *, clip: float | None = None, phi: int = 1, rho: float = 1.0, v_init: float = 0.5,
                 channel_dim: int = 1, ann_fn: Callable[[Tensor], Tensor] | None = None) -> None:
        super().__init__()
        if not 0.0 <= v_init < 1.0:
            raise ConfigError(f"v_init is a fraction of the threshold in [0, 1), got {v_init!r}")
        self.clip = None if clip is None else float(clip)
        # The original activation when it is not a ReLU (one declared in activations=[...]): ANN
        # mode then still reproduces the original network; the spiking modes approximate ReLU.
        self.ann_fn = ann_fn
        self.channel_dim = channel_dim
        self.register_buffer("theta", torch.ones(()))
        self.register_buffer("phi", torch.tensor(check_phi(phi), dtype=torch.long))
        self.register_buffer("rho", torch.tensor(check_rho(rho)))
        self.register_buffer("v_init", torch.tensor(float(v_init)))
        self.register_buffer("v_offset", torch.zeros(()))
        self.register_buffer("bias_offset", torch.zeros(()))
        self.register_buffer("spike_count", torch.zeros(0), persistent=False)
        self.mode = "ann"
        self.timesteps = 1  # total T (analog mode) / steps in one call (snn mode)
        self.constant_input = False
        self.recording = False
        # "auto": the compiled update where it pays (large steps, float32/64, cpu/cuda), True:
        # wherever it can compile, False: always eager. Both give identical outputs.
        self.fused: bool | str = "auto"
        self.v: Tensor | None = None
        self._consts: tuple[Any, ...] | None = None  # (input key, buffer versions, _StepConstants)

    # ----------------------------------------------------------------- configuration
    def set_phi(self, phi: int) -> None:
        self.phi.fill_(check_phi(phi))

    def set_rho(self, rho: float) -> None:
        self.rho.fill_(check_rho(rho))

    def set_theta(self, theta: Tensor) -> None:
        """Set the base threshold (scalar or per channel); non-positive values are an error."""
        theta = torch.as_tensor(theta, dtype=self.theta.dtype, device=self.theta.device).detach()
        if not torch.isfinite(theta).all() or (theta <= 0).any():
            raise ConfigError("thresholds must be finite and > 0")
        self.theta = theta.clone()

    def set_bias_offset(self, offset: Tensor) -> None:
        """Set the bias correction (a current added every step), stored with at least one dim."""
        offset = torch.as_tensor(offset, dtype=self.theta.dtype, device=self.theta.device).detach()
        self.bias_offset = offset.reshape(-1).clone()

    def set_v_offset(self, offset: Tensor) -> None:
        """Set the potential correction added to the initial membrane potential."""
        offset = torch.as_tensor(offset, dtype=self.theta.dtype, device=self.theta.device).detach()
        self.v_offset = offset.clone()

    def clear_corrections(self) -> None:
        """Drop bias and potential corrections (they belong to the thresholds they were made for)."""
        self.bias_offset = torch.zeros((), dtype=self.theta.dtype, device=self.theta.device)
        self.v_offset = torch.zeros((), dtype=self.theta.dtype, device=self.theta.device)

    def set_mode(self, mode: str) -> None:
        if mode not in NEURON_MODES:
            raise ConfigError(f"unknown neuron mode {mode!r}; expected one of {NEURON_MODES}")
        self.mode = mode

    def reset(self) -> None:
        """Forget the membrane state (between inputs); thresholds and corrections are kept."""
        self.v = None

    def reset_count(self) -> None:
        self.spike_count = torch.zeros(0, device=self.theta.device)

    def effective_threshold(self) -> Tensor:
        """θ' = ρ·θ: the value one spike carries."""
        return self.theta * self.rho

    def _bc(self, t: Tensor, x: Tensor) -> Tensor:
        """Broadcast a per-channel buffer along ``channel_dim`` of ``x``."""
        if t.dim() == 0 or t.numel() == 1:
            return t.to(x.dtype).reshape(())
        if x.dim() <= self.channel_dim or x.shape[self.channel_dim] != t.numel():
            raise ShapeError(
                f"neuron has {t.numel()} per-channel values but its input has shape {tuple(x.shape)} "
                f"(channel dim {self.channel_dim}); recalibrate for this architecture"
            )
        shape = [1] * x.dim()
        shape[self.channel_dim] = -1
        return t.to(x.dtype).view(shape)

    # ----------------------------------------------------------------- forward
    def forward(self, x: Tensor) -> Tensor:
        if self.mode == "ann":
            if self.ann_fn is not None:
                return self.ann_fn(x)
            return F.relu(x) if self.clip is None else x.clamp(0.0, self.clip)
        if self.mode == "analog":
            return self._analog(x)
        return self._spiking(x)

    def _analog(self, x: Tensor) -> Tensor:
        th = self._bc(self.effective_threshold(), x)
        frac = self._bc(self.v_init + self.v_offset / self.effective_threshold(), x)
        return self.surrogate(x + self._bc(self.bias_offset, x), th, self.timesteps, self.phi, frac)

    def _batch(self, x: Tensor) -> int:
        """Samples in an snn-mode input: its rows, or rows / T when every step is stacked along dim 0."""
        if self.constant_input:
            return x.shape[0]
        if x.shape[0] % self.timesteps:
            raise ShapeError(f"snn-mode input has {x.shape[0]} rows, not a multiple of the {self.timesteps} timesteps")
        return x.shape[0] // self.timesteps

    def _record(self, total: Tensor) -> None:
        self.spike_count = total if self.spike_count.numel() == 0 else self.spike_count + total

    def _spiking(self, x: Tensor, residual: Tensor | None = None) -> Tensor:
        """The snn-mode call. ``residual``: a second input current of ``x``'s shape, dtype and memory
        order, integrated as ``x + residual`` (:mod:`adacal.neurons.residual`): the fused step adds
        it itself, sparing the separate add's pass over memory; the eager loop adds first."""
        steps, batch, rest = self.timesteps, self._batch(x), x.shape[1:]
        nhwc = is_channels_last(x)  # keep the input's memory order: a convolution chose it (adacal.determinism)
        consts = self._constants(x, nhwc)
        th = consts.th
        layout = torch.channels_last if nhwc else torch.contiguous_format
        if self.v is None or self.v.shape[0] != batch:
            u0 = self._bc(self.v_init, x) * th + self._bc(self.v_offset, x)
            self.v = torch.empty((batch, *rest), dtype=x.dtype, device=x.device, memory_format=layout)
            self.v.copy_(u0.expand_as(self.v))
        elif nhwc != is_channels_last(self.v):  # the memory order changed between calls: carry the membrane over
            self.v = self.v.contiguous(memory_format=layout)
        if nhwc:  # [steps, batch, C, H, W] over [steps, batch, H, W, C] memory
            c, h, w = rest
            out = torch.empty((steps, batch, h, w, c), dtype=x.dtype, device=x.device).permute(0, 1, 4, 2, 3)
        else:
            out = torch.empty((steps, batch, *rest), dtype=x.dtype, device=x.device)
        done = self._fused_steps(x, self.v, consts, steps, batch, out, residual)
        if done < steps:
            if residual is not None:
                x, residual = x + residual, None
            self._eager_steps(x, self.v, consts, steps, batch, out, start=done)
        if self.recording:  # n = s/θ exactly (s = n·θ rounded, n ≤ φ small)
            self._record(torch.round(out / th).sum(dim=(0, 1)))
        return out.reshape(steps * batch, *rest)  # a view in both memory orders

    def _constants(self, x: Tensor, nhwc: bool) -> _StepConstants:
        """θ', the bias current and φ shaped for ``x``; kept until the shape, memory order, dtype or
        device of the input changes, or a buffer is replaced or modified in place (version counter):
        a streaming run calls the neuron once per step, and rebuilding these costs tens of µs."""
        bufs = (self.theta, self.rho, self.phi, self.bias_offset)
        key = (x.shape[1:], nhwc, x.dtype, x.device, self.constant_input, self.channel_dim)
        cached = self._consts
        if (cached is not None and cached[0] == key
                and all(a is b and v == b._version for (a, v), b in zip(cached[1], bufs))):
            return cached[2]
        consts = _StepConstants(self._bc(self.effective_threshold(), x), self._bc(self.bias_offset, x),
                                self.phi.to(x.dtype), torch.zeros((), dtype=x.dtype, device=x.device))
        self._consts = (key, tuple((b, b._version) for b in bufs), consts)
        return consts

    def _eager_steps(self, x: Tensor, u: Tensor, consts: _StepConstants, steps: int, batch: int,
                     out: Tensor, start: int = 0) -> None:
        """The reference loop: in-place element-wise ops, one step at a time, from step ``start``."""
        th, bias, phi = consts.th, consts.bias, consts.phi
        scratch = torch.empty_like(u)
        if self.constant_input:
            current = x + bias
            z_at = lambda t: current  # noqa: E731 - same current every step
        else:
            z = x.view(steps, batch, *x.shape[1:])
            if self.bias_offset.dim() > 0:  # corrections are stored per channel; default is scalar 0
                z = z + bias
            z_at = z.__getitem__
        for t in range(start, steps):
            if_update_eager_(u, z_at(t), th, phi, out[t], scratch, consts.zero)

    def _fused_steps(self, x: Tensor, u: Tensor, consts: _StepConstants, steps: int, batch: int,
                     out: Tensor, residual: Tensor | None = None) -> int:
        """The same loop with each step one compiled kernel; returns the steps it ran (0: none)."""
        if self.fused is False or (x.requires_grad and torch.is_grad_enabled()):
            return 0
        per = u[0].numel() if u.numel() else 0
        nhwc = is_channels_last(u)
        if per == 0 or not (nhwc or u.is_contiguous()):
            return 0
        if self.fused == "auto" and (batch * per < FUSED_MIN_ELEMENTS or steps * batch * per < FUSED_MIN_CALL_ELEMENTS):
            return 0  # a small step, or a call too small to repay preparing the compiled one
        if KERNEL.unavailable(x.device, x.dtype) is not None:
            return 0
        # Every operand as rows of P positions in one memory order (NCHW, or NHWC when the input
        # comes channels-last): the update is element-wise, so only the order has to agree.
        order = (lambda t: t.movedim(-3, -1)) if nhwc else (lambda t: t)
        if consts.rows is None:  # θ' and the bias as rows of P positions in this memory order
            sample = (1, *x.shape[1:])
            has_bias = self.constant_input or self.bias_offset.dim() > 0
            consts.rows = (order(consts.th.expand(sample)).reshape(per).contiguous(),
                           order(consts.bias.expand(sample)).reshape(per).contiguous() if has_bias else None)
        th_row, b_row = consts.rows
        u2 = order(u).view(batch, per)
        o = order(out).view(steps, batch, per)
        if self.constant_input:  # the same current every step
            z = order(x).reshape(1, batch, per).contiguous().expand(steps, batch, per)
        else:
            z = order(x).reshape(steps, batch, per).contiguous()
        r = None if residual is None else order(residual).reshape(steps, batch, per).contiguous()
        return KERNEL.steps_(u2, z, b_row, th_row, consts.phi, o, r)

    # ----------------------------------------------------------------- state dict
    def _load_from_state_dict(self, state_dict: dict[str, Any], prefix: str, *args: Any, **kw: Any) -> None:
        # Per-channel calibration changes buffer shapes; adopt the saved shape before loading.
        for name in _RESIZABLE:
            key = prefix + name
            if key in state_dict and state_dict[key].shape != getattr(self, name).shape:
                setattr(self, name, torch.empty_like(state_dict[key], device=self.theta.device))
        super()._load_from_state_dict(state_dict, prefix, *args, **kw)

    def extra_repr(self) -> str:
        th = self.theta
        desc = f"theta={th.item():.4g}" if th.dim() == 0 else f"theta=[{th.numel()} channels]"
        clip = "" if self.clip is None else f", clip={self.clip:g}"
        return f"{desc}, phi={int(self.phi)}, rho={float(self.rho):g}{clip}, mode={self.mode}"

"""MSE thresholds for the input the SNN really sees: simulated on the per-step currents, layer by layer.

The closed-form MSE search (:mod:`adacal.calibrate.thresholds`) assumes every neuron receives the
same current at every step. When the input changes from step to step (an event recording streamed
in time bins) a neuron receives bursts and pauses, and fires differently from the closed form: it
can only emit φ spikes per step, charge arriving late may never be emitted, and spikes sent while
the running sum was high are not taken back when it falls. Here each neuron's clip level is chosen
by simulating the neuron itself on the currents it really receives — in execution order, with the
layers before it already set — and comparing its time-averaged output with the ANN's activation.
For a constant input the simulation equals the closed form, so nothing changes where that holds.
"""
from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from adacal import inputs
from adacal.calibrate.capture import StopForward, capture_inputs
from adacal.calibrate.observers import MaxObserver, channels_first, target
from adacal.checks import check_int, check_timesteps
from adacal.config import CalibrationConfig
from adacal.errors import CalibrationError
from adacal.neurons.module import IFNeuron
from adacal.presentation import Presentation
from adacal.spiking_model import SpikingModel

__all__ = ["calibrate_thresholds_presented", "simulated_rate"]

log = logging.getLogger(__name__)


def simulated_rate(currents: Tensor, spike_value: Tensor, phi: float, v_init: float = 0.5, *,
                   signed: bool = False) -> Tensor:
    """Time-averaged output of IF neurons (reset by subtraction, ≤ φ spikes per step) on given currents.

    ``currents``: ``[T, M]`` input current of M neurons at each step; ``spike_value``: ``[K, M]`` or
    ``[K, 1]`` — the value θ' = ρ·θ one spike carries, for K candidate thresholds at once. The
    membrane starts at ``v_init·θ'``. Returns ``[K, M]``: (spikes · θ') / T, exactly what
    :class:`~adacal.neurons.IFNeuron` outputs on average in ``snn`` mode (``signed``: the
    :class:`~adacal.neurons.SignedIFNeuron`, whose negative spikes take back earlier ones).
    """
    steps = currents.shape[0]
    th = spike_value.to(currents.dtype)
    u = (v_init * th).expand(th.shape[0], currents.shape[1]).clone()
    count = torch.zeros_like(u)
    n = torch.empty_like(u)
    for t in range(steps):
        u.add_(currents[t])
        torch.div(u, th, rounding_mode="floor", out=n)
        if signed:
            n.clamp_(min=-phi, max=phi)
            torch.maximum(n, -count, out=n)
        else:
            n.clamp_(min=0.0, max=phi)
        u.addcmul_(n, th, value=-1.0)
        count.add_(n)
    return count.mul_(th).div_(steps)


def _channels_of(index: Tensor, shape: Sequence[int], channel_dim: int | None) -> Tensor:
    """Channel of each flat position of a tensor of ``shape`` (all 0 for per-layer statistics)."""
    if channel_dim is None:
        return torch.zeros_like(index)
    stride = math.prod(shape[channel_dim + 1:])
    return torch.div(index, stride, rounding_mode="floor") % shape[channel_dim]


def _neuron_input(snn: SpikingModel, neuron: IFNeuron, x: Any, *, mode: str, timesteps: int,
                  sequence: bool) -> Tensor:
    """What ``neuron`` receives for input ``x``: in ``ann`` mode its pre-activation ``[B, ...]``; in
    ``snn`` mode its current at every step ``[T, B, ...]`` (the run stops once it is reached)."""
    got: list[Tensor] = []
    constant: list[bool] = []

    def grab(_name: str, value: Tensor) -> None:
        got.append(value.detach())
        constant.append(bool(neuron.constant_input))  # the session restores the flag on exit
        raise StopForward

    with capture_inputs({"n": neuron}, grab):
        try:
            if mode == "ann":
                with snn.mode("ann"):
                    snn.call(x)
            else:
                snn.run(x, timesteps, sequence=sequence, time_chunk=None)
        except StopForward:
            pass
    if not got:
        raise CalibrationError("a neuron was never reached while calibrating; is it on the path to the output?")
    value = got[0]
    if mode == "ann":
        return value
    batch = inputs.batch_size(x, 1 if sequence else 0)
    if constant[0]:  # the same current every step (constant input, computed once)
        return value.unsqueeze(0).expand(timesteps, *value.shape)
    return value.view(timesteps, batch, *value.shape[1:])


@torch.no_grad()
def calibrate_thresholds_presented(
    snn: SpikingModel,
    shown: Sequence[Presentation],
    *,
    timesteps: int,
    config: CalibrationConfig | None = None,
    max_values: int = 1 << 16,
    chunk: int = 32,
    seed: int = 0,
) -> dict[str, Tensor]:
    """Set each neuron's threshold to minimise ``‖rate − ANN activation‖²`` on the presented inputs.

    ``shown``: calibration batches as the SNN will see them over ``timesteps`` steps (constant or
    sequences; the ANN sees their time average). Neurons are calibrated in execution order, each
    on the currents it receives with the earlier neurons already at their new thresholds (the
    error of the layers before is part of what it sees). Candidates are the clip levels of the
    closed-form search, ``max·(1 − grid_step·k)``, k < ``grid_size``, per layer or per channel
    (``config.granularity``), with each neuron's current φ and ρ. The squared error is measured on
    at most ``max_values`` positions per neuron, drawn with ``seed``; batches are simulated
    ``chunk`` samples at a time to bound memory. Corrections are cleared (they belong to old
    thresholds). Returns the thresholds by neuron name.
    """
    cfg = config or CalibrationConfig()
    T = check_timesteps(timesteps)
    check_int("max_values", max_values, minimum=1)
    check_int("chunk", chunk, minimum=1)
    if not shown:
        raise CalibrationError("no calibration batches to calibrate thresholds on")
    parts = [p.narrow(s, min(chunk, p.batch_size() - s)) for p in shown for s in range(0, p.batch_size(), chunk)]
    total = sum(p.batch_size() for p in parts)
    neurons = snn.neurons()
    per_channel = cfg.granularity == "channel"
    gen = torch.Generator().manual_seed(seed)
    for n in neurons.values():
        n.clear_corrections()
    out: dict[str, Tensor] = {}
    for name, neuron in neurons.items():
        cdim = neuron.channel_dim if per_channel else None
        upper_obs = MaxObserver(neuron.clip)
        zs, tgts, chans = [], [], []
        for p in parts:
            a = _neuron_input(snn, neuron, p.ann_inputs(), mode="ann", timesteps=T, sequence=False)
            upper_obs.update(channels_first(a, cdim))
            z = _neuron_input(snn, neuron, p.inputs, mode="snn", timesteps=T, sequence=p.sequence)
            flat = a[0].numel() * a.shape[0]
            m = min(flat, max(1, round(max_values * p.batch_size() / total)))
            idx = torch.randperm(flat, generator=gen)[:m].to(a.device)
            zs.append(z.reshape(T, -1).index_select(1, idx))
            tgts.append(target(a.reshape(-1).index_select(0, idx), neuron.clip))
            chans.append(_channels_of(idx, a.shape, cdim))
        z, tgt, ch = torch.cat(zs, 1), torch.cat(tgts), torch.cat(chans)
        upper = upper_obs.compute()  # [C] (or [1])
        ks = torch.arange(cfg.grid_size, dtype=upper.dtype, device=upper.device)
        clips = upper[None, :] * (1 - cfg.grid_step * ks)[:, None]  # [K, C]
        phi, rho = float(neuron.phi), float(neuron.rho)
        spike_value = (clips / phi).clamp(min=torch.finfo(clips.dtype).tiny)
        err = torch.zeros_like(clips, dtype=torch.float64)
        for k0 in range(0, cfg.grid_size, 16):  # candidates in blocks: memory stays ~16·M values
            sv = spike_value[k0:k0 + 16].index_select(1, ch)
            rate = simulated_rate(z, sv, phi, float(neuron.v_init), signed=bool(getattr(neuron, "signed", False)))
            sq = (rate - tgt).double().pow(2)
            err[k0:k0 + 16].index_add_(1, ch, sq)
        best = err.argmin(dim=0)  # ties -> the largest clip
        clip = clips.gather(0, best[None]).squeeze(0)
        dead = upper <= 0
        if bool(dead.any()):
            log.warning("%s: %d channel(s) never activate on the calibration data; threshold set to 1", name,
                        int(dead.sum()))
        theta = torch.where(dead, torch.ones_like(clip), clip / (phi * rho))
        neuron.set_theta(theta if per_channel else theta.reshape(()))
        neuron.clear_corrections()
        out[name] = neuron.theta.detach().clone()
    log.info("calibrated %d thresholds on the presented inputs (simulated MSE, %s, T=%d, %d samples)", len(out),
             cfg.granularity, T, total)
    return out

"""Threshold calibration (method.md §2): max, percentile, or the MSE search on the neuron's surrogate."""
from __future__ import annotations

import logging
from typing import Any

import torch
from torch import Tensor

from adacal.calibrate.capture import capture_inputs
from adacal.calibrate.observers import (
    HistogramObserver,
    MaxObserver,
    MSEObserver,
    SurrogateSpec,
    channels_first,
)
from adacal.calibrate.reduce import reduce_histograms, reduce_maxima
from adacal.checks import check_timesteps
from adacal.config import CalibrationConfig
from adacal.data import InputFn, take_batches
from adacal.devices import model_device
from adacal.distributed import deal
from adacal.spiking_model import SpikingModel

__all__ = ["calibrate_thresholds", "thresholds_per_phi"]

log = logging.getLogger(__name__)


@torch.no_grad()
def calibrate_thresholds(
    snn: SpikingModel,
    data: Any,
    *,
    timesteps: int,
    config: CalibrationConfig | None = None,
    input_fn: InputFn | None = None,
    batches: list[Tensor] | None = None,
) -> dict[str, Tensor]:
    """Set every neuron's threshold from ANN activations on ``config.num_batches`` batches.

    Uses each neuron's current φ and ρ (the clip level is ``φ·ρ·θ``) and resets its bias and
    potential corrections, which belong to the old thresholds. Returns thresholds by name.
    """
    cfg = config or CalibrationConfig()
    timesteps = check_timesteps(timesteps)
    dev = model_device(snn)
    xs = batches if batches is not None else take_batches(data, cfg.num_batches, input_fn=input_fn, device=dev)
    neurons = snn.neurons()
    per_channel = cfg.granularity == "channel"

    def cdim(name: str) -> int | None:
        return neurons[name].channel_dim if per_channel else None

    def sweep(observers: dict[str, Any]) -> None:
        def on_input(name: str, x: Tensor) -> None:
            observers[name].update(channels_first(x.detach(), cdim(name)))

        with snn.mode("ann"), capture_inputs(neurons, on_input):
            for x in deal(xs):  # this rank's batches (all of them in one process)
                snn.call(x)

    maxima = {k: MaxObserver(n.clip) for k, n in neurons.items()}
    sweep(maxima)
    reduce_maxima(maxima, dev)
    uppers = {k: o.compute() for k, o in maxima.items()}
    if cfg.method == "max":
        clips = uppers
    elif cfg.method == "percentile":
        hists = {k: HistogramObserver(uppers[k], neurons[k].clip) for k in neurons}
        sweep(hists)
        reduce_histograms(hists)
        clips = {k: torch.minimum(h.compute(cfg.percentile), uppers[k]) for k, h in hists.items()}
    else:
        mses = {
            k: MSEObserver(
                uppers[k],
                SurrogateSpec(timesteps, float(n.phi), float(n.rho), float(n.v_init)),
                n.clip,
                cfg.grid_size,
                cfg.grid_step,
            )
            for k, n in neurons.items()
        }
        sweep(mses)
        reduce_histograms(mses)
        clips = {k: o.compute() for k, o in mses.items()}
    out: dict[str, Tensor] = {}
    for name, n in neurons.items():
        clip = clips[name]
        dead = clip <= 0
        if bool(dead.any()):
            log.warning("%s: %d channel(s) never activate on the calibration data; threshold set to 1",
                        name, int(dead.sum()))
        theta = torch.where(dead, torch.ones_like(clip), clip / (n.phi.to(clip.dtype) * n.rho))
        n.set_theta(theta if per_channel else theta.reshape(()))
        n.clear_corrections()
        out[name] = n.theta.detach().clone()
    log.info("calibrated %d thresholds (%s, %s, T=%d) on %d batch(es)", len(out), cfg.method,
             cfg.granularity, timesteps, len(xs))
    return out


@torch.no_grad()
def thresholds_per_phi(
    snn: SpikingModel,
    phis: tuple[int, ...],
    *,
    timesteps: int,
    config: CalibrationConfig | None = None,
    batches: list[Tensor],
) -> dict[str, dict[int, Tensor]]:
    """Thresholds every neuron would get at each φ in ``phis`` (all layers at that φ).

    A neuron's fitted threshold depends only on its own ANN pre-activations and φ (not on other
    layers), so one calibration per φ gives the whole table. The φ search profiles each candidate
    with its own threshold, so the energies it budgets are the energies of the refit network.
    The model's φ, thresholds and corrections are restored afterwards.
    """
    neurons = snn.neurons()
    saved = {k: (int(n.phi), n.theta.detach().clone(), n.bias_offset.detach().clone(),
                 n.v_offset.detach().clone()) for k, n in neurons.items()}
    table: dict[str, dict[int, Tensor]] = {k: {} for k in neurons}
    try:
        for phi in phis:
            for n in neurons.values():
                n.set_phi(int(phi))
            for name, theta in calibrate_thresholds(snn, None, timesteps=timesteps, config=config,
                                                    batches=batches).items():
                table[name][int(phi)] = theta
    finally:
        for k, n in neurons.items():
            phi, theta, bias, v = saved[k]
            n.set_phi(phi)
            n.set_theta(theta)
            n.bias_offset, n.v_offset = bias, v  # as saved (shapes included)
    return table

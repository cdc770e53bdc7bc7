"""Threshold calibration (method.md §2): max, percentile, or the MSE search on the neuron's surrogate."""
from __future__ import annotations

import logging
from typing import Any

import torch
from torch import Tensor

from adacal import inputs, progress
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
from adacal.errors import CalibrationError
from adacal.logs import warn_once
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
            for x in progress.track(deal(xs), f"thresholds ({cfg.method})", unit="batch"):  # this rank's share
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
                SurrogateSpec(timesteps, float(n.phi), float(n.rho), float(n.v_init), type(n).surrogate),
                n.clip,
                cfg.grid_size,
                cfg.grid_step,
            )
            for k, n in neurons.items()
        }
        sweep(mses)
        reduce_histograms(mses)
        clips = {k: o.compute() for k, o in mses.items()}
    silent = [k for k, c in clips.items() if not bool((c > 0).any())]
    same, constant = identical_samples(xs), describe_data(xs)
    if silent and (same or constant):  # the data, not the network, leaves these layers without a threshold
        raise CalibrationError(
            f"no usable threshold for {len(silent)} of {len(clips)} spiking layer(s) {silent[:6]}"
            f"{' …' if len(silent) > 6 else ''}: their ReLU never outputs a positive value on the calibration data"
            f"{constant or f' (its {same} samples are all identical)'}; calibrate on real training samples (a few "
            "hundred, all classes)")
    if same:
        warn_once(log, snn, "calibration data: all %d samples are identical%s; thresholds are fitted to that one "
                  "input, so other inputs may saturate or never fire — calibrate on varied training samples", same,
                  constant)
    out: dict[str, Tensor] = {}
    for name, n in neurons.items():
        clip = clips[name]
        dead = clip <= 0
        if bool(dead.any()):
            warn_once(log, snn, "%s: %d channel(s) never activate on the calibration data (of %d); their threshold "
                      "is set to 1 (they stay silent unless other inputs drive them)", name, int(dead.sum()),
                      dead.numel())
        theta = torch.where(dead, torch.ones_like(clip), clip / (n.phi.to(clip.dtype) * n.rho))
        n.set_theta(theta if per_channel else theta.reshape(()))
        n.clear_corrections()
        out[name] = n.theta.detach().clone()
    log.info("calibrated %d thresholds (%s, %s, T=%d) on %d batch(es)", len(out), cfg.method,
             cfg.granularity, timesteps, len(xs))
    return out


def identical_samples(batches: list[Any]) -> int:
    """The number of samples if there are at least two and all are equal (constant data), else 0."""
    ref: list[Tensor] | None = None
    count = 0
    for x in batches:
        ts = inputs.leaves(x)
        if ref is None:
            ref = [t[:1] for t in ts]
        if not all(bool((t == r).all()) for t, r in zip(ts, ref)):
            return 0
        count += inputs.batch_size(x)
    return count if count > 1 else 0


def describe_data(batches: list[Any]) -> str:
    """`` (all zeros)`` / `` (constant value v)`` for degenerate data, else ``""``: what the user gave."""
    ts = [t for x in batches for t in inputs.leaves(x)]
    if not ts or not all(t.is_floating_point() for t in ts):
        return ""
    lo = min(float(t.min()) for t in ts)
    hi = max(float(t.max()) for t in ts)
    if lo == hi == 0.0:
        return " (it is all zeros)"
    if lo == hi:
        return f" (every value is {lo:g})"
    return ""


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

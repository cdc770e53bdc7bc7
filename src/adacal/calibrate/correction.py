"""Bias and potential correction (SNN Calibration, Li et al. 2021), layer by layer in graph order."""
from __future__ import annotations

import logging
from typing import Any

import torch
from torch import Tensor

from adacal import inputs, progress
from adacal.calibrate.capture import capture_outputs
from adacal.checks import check_timesteps
from adacal.data import InputFn, take_batches
from adacal.devices import model_device
from adacal.distributed import agree, all_reduce_sum, deal, gather_objects, shard_samples, world
from adacal.errors import CalibrationError, ConfigError, DataError
from adacal.neurons.module import IFNeuron
from adacal.spiking_model import SpikingModel

__all__ = ["correct_bias", "channel_means"]

log = logging.getLogger(__name__)


def channel_means(x: Tensor, channel_dim: int) -> tuple[Tensor, int]:
    """Per-channel sums (float64: the same to float32 rounding in any order, so shards add up to one
    process's) over every other axis, and how many values each sum holds."""
    dims = [d for d in range(x.dim()) if d != channel_dim]
    return x.sum(dim=dims, dtype=torch.float64), x.numel() // x.shape[channel_dim]


@torch.no_grad()
def _ann_means(snn: SpikingModel, xs: list[Tensor]) -> dict[str, Tensor]:
    neurons = snn.neurons()
    sums: dict[str, Tensor] = {}
    counts: dict[str, int] = {}

    def on_out(name: str, y: Tensor) -> None:
        s, c = channel_means(y, neurons[name].channel_dim)
        sums[name] = sums[name] + s if name in sums else s
        counts[name] = counts.get(name, 0) + c

    with snn.mode("ann"), capture_outputs(neurons, on_out):
        for x in deal(xs):  # this rank's batches (all of them in one process)
            snn.call(x)
    if world().active:  # per-rank sums, added in rank order on every rank
        parts = gather_objects({k: (s.cpu(), counts[k]) for k, s in sums.items()}, what="summing ANN means")
        dev = model_device(snn)
        sums, counts = {}, {}
        for part in parts:
            for k, (s, c) in part.items():
                sums[k] = sums[k] + s.to(dev) if k in sums else s.to(dev)
                counts[k] = counts.get(k, 0) + c
    return {k: sums[k] / counts[k] for k in sums}


@torch.no_grad()
def correct_bias(
    snn: SpikingModel,
    data: Any,
    *,
    timesteps: int,
    target: str = "bias",
    num_batches: int = 1,
    input_fn: InputFn | None = None,
    sequence: bool = False,
    batches: list[Tensor] | None = None,
    reference: list[Any] | None = None,
    memory_mb: int | None = None,
) -> dict[str, float]:
    """Remove each neuron's mean output error against the ANN, one layer at a time.

    For neuron l (in execution order), with every earlier correction in place, the per-channel
    error ``e = mean(SNN rate) − mean(ANN activation)`` is subtracted from the input current
    (``target="bias"``: equivalent to the preceding layer's bias, for any topology) or ``T·e``
    from the initial membrane potential (``"potential"``). The batches are simulated together,
    once, with each neuron corrected as execution reaches it — the same result as re-running
    the network per layer, at the cost of one simulation. Returns the mean |e| per layer.

    ``sequence``: the batches are ``[T, B, ...]`` inputs that change every step (e.g. streamed
    events); the ANN's activations are then taken on ``reference`` (what the ANN sees for each
    batch), by default the time average of each sequence (:mod:`adacal.presentation`).
    """
    if target not in ("bias", "potential"):
        raise ConfigError(f"correction target must be 'bias' or 'potential', got {target!r}")
    timesteps = check_timesteps(timesteps)
    dev = model_device(snn)
    xs = batches if batches is not None else take_batches(data, num_batches, input_fn=input_fn, device=dev)
    if reference is None:  # the ANN sees the time average of a sequence (the presentation contract)
        reference = [inputs.map_tensors(lambda t: t[:timesteps].mean(0), x) if sequence else x for x in xs]
    if len(reference) != len(xs):
        raise ConfigError(f"correct_bias got {len(reference)} reference batches for {len(xs)} batches")
    d = 1 if sequence else 0
    x, ref = inputs.cat(xs, dim=d), inputs.cat(list(reference), dim=0)
    n = inputs.batch_size(x, d)
    keep = n if memory_mb is None else correction_capacity(snn, x, timesteps, sequence, memory_mb)
    if keep < n:  # all T steps of every sample in one pass: keep the first ones, the same for the ANN
        log.warning("bias correction at T=%d uses %d of its %d samples (all T steps of them fit in %d MB; "
                    "raise calibration.correction_memory_mb to use more)", timesteps, keep, n, memory_mb)
        x, ref = inputs.narrow(x, 0, keep, d), inputs.narrow(ref, 0, keep, 0)
    ann = _ann_means(snn, [ref])
    neurons = snn.neurons()
    x = _my_samples(x, d)
    errors: dict[str, float] = {}

    def correct(neuron: IFNeuron, args: tuple[Tensor, ...]) -> None:
        # All upstream neurons have run with their final corrections: measure this one's error
        # on a scratch run, correct it, and let the real call proceed — one simulation in all.
        name = names[id(neuron)]
        if name in errors:
            raise CalibrationError(f"neuron {name} ran twice in one correction pass; it must be called once")
        saved_v, saved_rec = neuron.v, neuron.recording
        neuron.v = None if saved_v is None else saved_v.clone()  # the scratch run must not move it
        neuron.recording = False
        y = neuron.forward(args[0])
        neuron.v, neuron.recording = saved_v, saved_rec
        s, c = channel_means(y, neuron.channel_dim)
        if world().active:  # every rank reaches every neuron in the same order
            s, total = all_reduce_sum([s, torch.tensor([float(c)], dtype=torch.float64)],
                                      what=f"bias correction of {name}")
            c = int(total.item())
        err = (s / c - ann[name]).to(y.dtype)
        errors[name] = float(err.abs().mean())
        if target == "bias":
            neuron.set_bias_offset(neuron.bias_offset - err if neuron.bias_offset.dim() else -err)
        else:
            base = neuron.v_offset if neuron.v_offset.dim() else neuron.v_offset.expand_as(err)
            neuron.set_v_offset(base - timesteps * err)

    names = {id(n): k for k, n in neurons.items()}
    handles = [n.register_forward_pre_hook(correct) for n in neurons.values()]
    try:
        # all T steps in one call per neuron: the error is measured over the whole run, once
        with progress.task(f"{target} correction", len(neurons), "layer") as bar:
            handles += [n.register_forward_hook(lambda *_: bar.advance()) for n in neurons.values()]
            snn.run(x, timesteps, sequence=sequence, time_chunk=None)
    finally:
        for h in handles:
            h.remove()
    log.info("%s correction over %d layers (T=%d): mean |error| before %.4g", target, len(errors),
             timesteps, sum(errors.values()) / max(1, len(errors)))
    return errors


def correction_capacity(snn: SpikingModel, x: Any, timesteps: int, sequence: bool, memory_mb: int) -> int:
    """How many samples of ``x`` the one-pass correction can simulate with all ``timesteps`` stacked
    while ``T × samples × largest activation`` stays within ``memory_mb`` (at least one)."""
    row = snn.measured_row_bytes(x, sequence=sequence)
    return max(1, int((memory_mb << 20) // max(1, row * timesteps)))


def _my_samples(x: Any, dim: int) -> Any:
    """This rank's contiguous slice of the correction samples; a sample's simulated outputs do not
    depend on its batch-mates (``SpikingModel.deterministic``), so the shards add up exactly."""
    w = world()
    if not w.active:
        return x
    n = inputs.batch_size(x, dim)
    start, length = shard_samples(n, w)
    problem = None if length else DataError(
        f"bias correction has {n} sample(s) for {w.size} ranks, so rank {w.rank}'s shard is empty; use at "
        "least as many correction samples as ranks (pipeline.calibration.correction_batches or the batch size)")
    agree(problem, what="bias correction data")
    return inputs.map_tensors(lambda t: t.narrow(dim, start, length), x)

"""Weight calibration ("advanced" SNN Calibration): layer-wise weight tuning to match the ANN.

For each neuron in execution order, the weights of the layers that feed it directly (back to
the previous neurons) are tuned with Adam so that the neuron's time-averaged output — the
closed-form surrogate on the SNN path, upstream layers already calibrated — matches the ANN
activation. The floor of the surrogate passes gradients straight through inside the clip range.
Follow it with potential (or bias) correction, as Li et al. do.
"""
from __future__ import annotations

import itertools
import logging

import torch
from torch import Tensor, fx, nn

from adacal import progress
from adacal.calibrate.capture import StopForward, capture_outputs
from adacal.checks import check_timesteps
from adacal.errors import ConfigError
from adacal.neurons import IFNeuron, is_neuron
from adacal.spiking_model import SpikingModel

__all__ = ["calibrate_weights", "feeding_layers"]

log = logging.getLogger(__name__)
_WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, nn.ConvTranspose1d, nn.ConvTranspose2d,
             nn.ConvTranspose3d)


def feeding_layers(snn: SpikingModel, name: str) -> list[nn.Module]:
    """Weighted layers between neuron ``name`` and the neurons (or input) before it."""
    gm = snn.graph_module
    node = next(n for n in gm.graph.nodes if n.op == "call_module" and n.target == name)
    seen: set[fx.Node] = set()
    stack = list(node.all_input_nodes)
    found: list[nn.Module] = []
    while stack:
        n = stack.pop()
        if n in seen:
            continue
        seen.add(n)
        if n.op == "call_module":
            mod = gm.get_submodule(str(n.target))
            if is_neuron(mod):
                continue
            if isinstance(mod, _WEIGHTED) and all(mod is not f for f in found):
                found.append(mod)
        stack.extend(n.all_input_nodes)
    return found


def calibrate_weights(
    snn: SpikingModel,
    batches: list[Tensor],
    *,
    timesteps: int,
    iters: int = 200,
    lr: float = 1e-4,
) -> dict[str, tuple[float, float]]:
    """Tune the weights feeding each neuron; returns ``{name: (loss before, loss after)}``."""
    T = check_timesteps(timesteps)
    if iters < 1 or not lr > 0:
        raise ConfigError(f"weight calibration needs iters >= 1 and lr > 0, got {iters}, {lr}")
    neurons = snn.neurons()
    result: dict[str, tuple[float, float]] = {}
    for name, neuron in progress.track(neurons.items(), "weight calibration", len(neurons), "layer"):
        layers = feeding_layers(snn, name)
        params = [p for m in layers for p in m.parameters()]
        if not params:
            continue
        with torch.no_grad():
            targets = [_neuron_output(snn, name, neuron, x, "ann", T) for x in batches]
        opt = torch.optim.Adam(params, lr=lr)
        first = last = float("nan")
        for step, (x, tgt) in enumerate(zip(itertools.cycle(batches), itertools.cycle(targets))):
            if step >= iters:
                break
            with torch.enable_grad():
                out = _neuron_output(snn, name, neuron, x, "analog", T, ste=True)
                loss = (out - tgt).pow(2).mean()
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
            last = float(loss)
            if step == 0:
                first = last
        for p in params:
            p.grad = None
        result[name] = (first, last)
        log.debug("weight calibration %s: %.4g -> %.4g", name, first, last)
    log.info("weight calibration of %d layers done", len(result))
    return result


def _neuron_output(snn: SpikingModel, name: str, neuron: IFNeuron, x: Tensor, mode: str, T: int,
                   ste: bool = False) -> Tensor:
    """Neuron ``name``'s output for batch ``x`` with every neuron in ``mode`` (forward stops there)."""
    got: list[Tensor] = []

    def grab(_name: str, out: Tensor) -> None:
        got.append(out)
        raise StopForward

    handle = None
    if ste:
        def straight_through(m: IFNeuron, args: tuple[Tensor, ...], out: Tensor) -> Tensor:
            cap = (m.phi * m.effective_threshold()).to(out.dtype)
            lin = torch.minimum((args[0] + m._bc(m.bias_offset, args[0])).clamp(min=0), m._bc(cap, out))
            return lin + (out - lin).detach()

        handle = neuron.register_forward_hook(straight_through)
    try:
        with snn.mode(mode, timesteps=T), capture_outputs({name: neuron}, grab):
            try:
                snn.call(x)
            except StopForward:
                pass
    finally:
        if handle is not None:
            handle.remove()
    return got[0]

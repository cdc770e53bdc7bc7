"""Early-exit inference: each input stops as soon as its policy says so (seed Algorithm 2).

Runs the SNN step by step (streaming); after every step the samples whose score passes α_t leave
the running batch, their membranes and cached input currents are dropped, and later steps
compute only for the samples still running — wall time falls with the mean exit step.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import Tensor

from adacal import inputs
from adacal.errors import ConfigError
from adacal.iat.policy import ExitPolicy, Scorer, exit_mask
from adacal.spiking_model import SpikingModel

__all__ = ["EarlyExitOutput", "run_early_exit"]


@dataclass(frozen=True)
class EarlyExitOutput:
    """Per-sample results of an early-exit run (original batch order).

    ``outputs``: accumulated output O at the exit step (sum over steps run; a tuple/dict for a
    network with several outputs); ``predictions``: its argmax over classes (dim 1; a per-pixel map
    for dense outputs; None for several outputs); ``exit_steps``: 1-based
    step each sample stopped at; ``steps_run``: sample-steps actually simulated
    (= ``exit_steps.sum()``); ``energy``: the energy actually spent, when an energy model was given.
    """

    outputs: Any
    predictions: Tensor | None
    exit_steps: Tensor
    steps_run: int
    energy: Any = None

    @property
    def mean_exit_step(self) -> float:
        return float(self.exit_steps.double().mean())


@torch.no_grad()
def run_early_exit(snn: SpikingModel, x: Any, policy: ExitPolicy, *, sequence: bool = False, energy: Any = None,
                   scorer: Scorer | None = None) -> EarlyExitOutput:
    """Simulate up to ``policy.T`` steps, letting each sample exit per :func:`exit_mask`.

    Spikes recorded by ``snn.record_activity()`` around this call count only steps actually run.
    With ``energy`` (an :class:`adacal.energy.EnergyModel`) the result carries the per-image
    energy report of this batch, counting only the steps each sample actually ran. ``scorer``
    scores the running outputs of tasks other than classification (a task's ``exit_score``);
    outputs may then be a tuple or dict of tensors.
    """
    if energy is not None:
        with snn.record_activity():
            res = run_early_exit(snn, x, policy, sequence=sequence, scorer=scorer)
            counts = snn.spike_counts()
        n = int(res.exit_steps.numel())
        report = energy.estimate(counts, num_samples=n, timesteps=res.steps_run / n, sequence=sequence)
        return replace(res, energy=report)
    if not isinstance(policy, ExitPolicy):
        raise ConfigError(f"policy must be an ExitPolicy, got {type(policy).__name__}")
    T = policy.T
    sess = snn.session(x, sequence=sequence)
    batch = sess.batch
    device = inputs.leaves(x)[0].device
    running = torch.arange(batch, device=device)
    exit_steps = torch.zeros(batch, dtype=torch.long, device=device)
    final: Any = None
    cum: Any = None
    try:
        for t in range(1, T + 1):
            step = inputs.map_tensors(lambda o: o[0], sess.advance(1))
            if scorer is None and not isinstance(step, Tensor):
                raise ConfigError("early exit of a network with several outputs needs its task's scorer")
            cum = inputs.map_tensors(torch.clone, step) if cum is None else _add_(cum, step)
            if final is None:
                final = inputs.map_tensors(lambda c: torch.zeros((batch, *c.shape[1:]), dtype=c.dtype,
                                                                 device=c.device), cum)
            leave = exit_mask(policy, cum, t, scorer=scorer)
            gone = leave.nonzero().squeeze(1)
            if gone.numel():
                idx = running.index_select(0, gone)
                _index_copy_(final, idx, inputs.index_select(cum, gone))
                exit_steps.index_fill_(0, idx, t)
            stay = (~leave).nonzero().squeeze(1)
            if stay.numel() == 0:
                break
            if gone.numel():
                sess.keep(stay)
                cum = inputs.index_select(cum, stay)
                running = running.index_select(0, stay)
    finally:
        sess.close()
    if final is None:  # unreachable: T >= 1 always runs one step
        raise ConfigError("policy has no timesteps")
    predictions = final.argmax(dim=1) if isinstance(final, Tensor) else None
    return EarlyExitOutput(final, predictions, exit_steps, int(exit_steps.sum()))


def _add_(acc: Any, step: Any) -> Any:
    it = iter(inputs.leaves(step))
    return inputs.map_tensors(lambda a: a.add_(next(it)), acc)


def _index_copy_(dst: Any, index: Tensor, src: Any) -> None:
    it = iter(inputs.leaves(src))
    inputs.map_tensors(lambda d: d.index_copy_(0, index, next(it)), dst)

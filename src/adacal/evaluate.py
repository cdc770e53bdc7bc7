"""Evaluation of a converted SNN on labelled data: accuracy, timesteps and energy per image."""
from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor

from adacal.calibrate.capture import model_device
from adacal.errors import DataError
from adacal.iat.policy import ExitPolicy
from adacal.iat.runtime import run_early_exit
from adacal.neurons.module import check_timesteps
from adacal.spiking_model import SpikingModel

__all__ = ["evaluate", "fit_exit_policy", "labelled_batches"]

log = logging.getLogger(__name__)


def labelled_batches(data: Any, max_batches: int | None = None) -> Iterator[tuple[Tensor, Tensor]]:
    """``(inputs, labels)`` pairs from a DataLoader-like iterable; clear errors otherwise."""
    it = iter(data)
    if max_batches is not None:
        it = itertools.islice(it, max_batches)
    n = 0
    for batch in it:
        if not (isinstance(batch, (list, tuple)) and len(batch) >= 2 and isinstance(batch[0], Tensor)):
            raise DataError("evaluation data must yield (inputs, labels) batches")
        n += 1
        yield batch[0], batch[1]
    if n == 0:
        raise DataError("evaluation data is empty: it yielded no batch")


@torch.no_grad()
def fit_exit_policy(
    snn: SpikingModel,
    data: Any,
    *,
    timesteps: int,
    alpha_base: float = 0.6,
    delta: float = 1.0,
    score: str = "entropy",
    num_batches: int = 100,
    sequence: bool = False,
) -> ExitPolicy:
    """Fit IAT thresholds from the SNN's per-step outputs on (training) data (method.md §7)."""
    T = check_timesteps(timesteps)
    dev = model_device(snn)

    def outputs() -> Iterator[tuple[Tensor, Tensor]]:
        for x, y in labelled_batches(data, num_batches):
            yield snn.run(x.to(dev), T, sequence=sequence), y.to(dev)

    return ExitPolicy.fit_batches(outputs(), alpha_base=alpha_base, delta=delta, score=score)


@torch.no_grad()
def evaluate(
    snn: SpikingModel,
    data: Any,
    *,
    timesteps: int,
    exit_policy: ExitPolicy | None = None,
    energy: Any = "auto",
    max_batches: int | None = None,
    sequence: bool = False,
    progress: Callable[[int, int | None], None] | None = None,
) -> dict[str, Any]:
    """Accuracy (%), per-step accuracy, mean timesteps and energy per image on ``data``.

    With ``exit_policy`` each input stops early (IAT) and energy counts only the steps run.
    ``energy``: an :class:`adacal.energy.EnergyModel`, ``"auto"`` (built from the first batch)
    or None (skip energy).
    """
    T = check_timesteps(timesteps if exit_policy is None else exit_policy.T)
    dev = model_device(snn)
    correct = torch.zeros(T, dtype=torch.float64)
    hist = torch.zeros(T, dtype=torch.long)
    total = 0
    steps_run = 0
    t0 = time.perf_counter()
    model = None
    with snn.record_activity():
        for i, (x, y) in enumerate(labelled_batches(data, max_batches)):
            x, y = x.to(dev), y.to(dev)
            if model is None and energy == "auto":
                from adacal.energy import EnergyModel

                model = EnergyModel.build(snn, x[0, :1] if sequence else x[:1])
            if exit_policy is None:
                out = snn.run(x, T, sequence=sequence)
                pred = out.cumsum(0).argmax(dim=2)  # [T, B]
                correct += (pred == y[None]).sum(dim=1).double().cpu()
                steps_run += T * x.shape[0 if not sequence else 1]
                hist[T - 1] += y.shape[0]
            else:
                res = run_early_exit(snn, x, exit_policy, sequence=sequence)
                correct[T - 1] += float((res.predictions == y).sum())
                steps_run += res.steps_run
                hist += torch.bincount(res.exit_steps.cpu() - 1, minlength=T)
            total += y.shape[0]
            if progress is not None:
                progress(i + 1, max_batches)
        counts = snn.spike_counts()
    seconds = time.perf_counter() - t0
    mean_steps = steps_run / total
    result: dict[str, Any] = {
        "timesteps": T,
        "num_samples": total,
        "accuracy": float(correct[T - 1] / total * 100),
        "mean_timesteps": mean_steps,
        "seconds": seconds,
    }
    if exit_policy is None:
        result["accuracy_per_step"] = [float(c / total * 100) for c in correct]
    else:
        result["exit_histogram"] = [int(h) for h in hist]
    energy_model = model if energy == "auto" else energy
    if energy_model is not None:
        rep = energy_model.estimate(counts, num_samples=total, timesteps=mean_steps, sequence=sequence)
        d = rep.to_dict()
        result["energy_mj"] = d["snn_energy_pj"] * 1e-9
        result["ann_energy_mj"] = d["ann_energy_pj"] * 1e-9
        result["energy"] = d
    log.info("evaluated %d samples: accuracy %.2f%% at %.2f mean timesteps (%.1f s)", total,
             result["accuracy"], mean_steps, seconds)
    return result

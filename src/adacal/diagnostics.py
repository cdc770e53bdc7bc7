"""Diagnostics: does sensitivity predict accuracy (seed Fig. 1), and where does conversion error come from.

* :func:`sensitivity_correlation` — for random per-layer settings, the total profiled sensitivity
  against measured accuracy on held-out data, with Pearson, Spearman and Kendall correlations.
* :func:`error_decomposition` — per layer, the mean squared conversion error split into
  clipping (activations above the clip level φ·θ'), quantisation (the closed-form surrogate
  against the clipped activation), propagated error (the layer's mean input current differs from
  the ANN's) and unevenness (the simulated rate against the surrogate of its own mean input —
  what the time-varying spike input adds). The parts add up to the total error energy only
  approximately (they are not orthogonal); each is reported as mean squared error.
"""
from __future__ import annotations

import logging
import random
from collections.abc import Sequence
from typing import Any

import torch
from scipy import stats
from torch import Tensor

from adacal import inputs
from adacal.calibrate.capture import capture_inputs, capture_outputs
from adacal.checks import check_timesteps
from adacal.errors import ConfigError
from adacal.knobs import get_knob
from adacal.sensitivity import SensitivityTable
from adacal.spiking_model import SpikingModel

__all__ = ["correlations", "error_decomposition", "sensitivity_correlation"]

log = logging.getLogger(__name__)


def correlations(scores: Sequence[float], accuracies: Sequence[float]) -> dict[str, float]:
    """Pearson, Spearman and Kendall correlation of a score with accuracy (seed Fig. 1's three numbers)."""
    if len(scores) != len(accuracies) or len(scores) < 3:
        raise ConfigError(f"correlations need >= 3 (score, accuracy) pairs, got {len(scores)} and {len(accuracies)}")
    return {"pearson": float(stats.pearsonr(scores, accuracies)[0]),
            "spearman": float(stats.spearmanr(scores, accuracies)[0]),
            "kendall": float(stats.kendalltau(scores, accuracies)[0])}


@torch.no_grad()
def sensitivity_correlation(snn: SpikingModel, table: SensitivityTable, data: Sequence[tuple[Tensor, Tensor]], *,
                            timesteps: int, num_settings: int = 20, seed: int = 0) -> dict[str, Any]:
    """Total sensitivity vs accuracy for ``num_settings`` random assignments of ``table.knob``.

    ``data`` is held-out labelled batches (not the profiling batch). Knobs are restored after.
    """
    if num_settings < 3:
        raise ConfigError("num_settings must be >= 3 to compute correlations")
    T = check_timesteps(timesteps)
    rng = random.Random(seed)
    neurons = snn.neurons()
    knob = get_knob(table.knob)
    saved = {k: knob.get(n) for k, n in neurons.items()}
    points = []
    try:
        for _ in range(num_settings):
            choice = {k: rng.choice(table.candidates) for k in table.scores}
            for k, v in choice.items():
                knob.set(neurons[k], v)
            total = sum(table.scores[k][v] for k, v in choice.items())
            correct = n = 0
            for x, y in data:
                pred = snn.run(x, T).mean(0).argmax(1)
                correct += int((pred == y).sum())
                n += y.numel()
            points.append({"sensitivity": total, "accuracy": 100.0 * correct / n, "setting": choice})
    finally:
        for k, v in saved.items():
            knob.set(neurons[k], v)
    result = {"knob": table.knob, "points": points,
              **correlations([p["sensitivity"] for p in points], [p["accuracy"] for p in points])}
    log.info("sensitivity vs accuracy over %d settings: Pearson %.3f, Spearman %.3f, Kendall %.3f",
             num_settings, result["pearson"], result["spearman"], result["kendall"])
    return result


@torch.no_grad()
def error_decomposition(snn: SpikingModel, x: Any, *, timesteps: int) -> list[dict[str, float]]:
    """Per-layer mean squared error parts (see module docstring), in execution order."""
    T = check_timesteps(timesteps)
    neurons = snn.neurons()
    ann_in: dict[str, Tensor] = {}
    snn_in: dict[str, Tensor] = {}
    snn_out: dict[str, Tensor] = {}
    with snn.mode("ann"), capture_inputs(neurons, lambda k, v: ann_in.__setitem__(k, v.detach())):
        snn.call(x)
    batch = inputs.batch_size(x)

    def mean_over_time(v: Tensor) -> Tensor:
        if v.shape[0] == batch:  # constant current of an entry neuron
            return v
        return v.view(T, batch, *v.shape[1:]).mean(0)

    with capture_inputs(neurons, lambda k, v: snn_in.__setitem__(k, mean_over_time(v.detach()))), \
            capture_outputs(neurons, lambda k, v: snn_out.__setitem__(k, mean_over_time(v.detach()))):
        snn.run(x, T, time_chunk=None)  # hooks average each call over all T steps
    rows = []
    for name, n in neurons.items():
        a = ann_in[name]
        th = n._bc(n.effective_threshold(), a)
        cap = n._bc(n.phi.to(a.dtype) * n.effective_threshold(), a)
        frac = n._bc(n.v_init + n.v_offset / n.effective_threshold(), a)
        bias = n._bc(n.bias_offset, a)
        relu = a.clamp(min=0) if n.clip is None else a.clamp(0, n.clip)
        clipped = torch.minimum(relu, cap)
        q_ann = n.surrogate(a + bias, th, T, n.phi, frac)
        q_snn = n.surrogate(snn_in[name] + bias, th, T, n.phi, frac)
        rate = snn_out[name]
        rows.append({
            "layer": name,
            "clipping": float((clipped - relu).pow(2).mean()),
            "quantisation": float((q_ann - clipped).pow(2).mean()),
            "propagated": float((q_snn - q_ann).pow(2).mean()),
            "unevenness": float((rate - q_snn).pow(2).mean()),
            "total": float((rate - relu).pow(2).mean()),
            "firing_rate": float((rate / th).mean()),
        })
    return rows

"""Measure a configured SNN on held-out training inputs, the way it will run: energy, distance to the ANN.

The searches propose per-layer settings from a per-layer, additive model (profiled sensitivity and
cost); whether a proposal is really better — or cheaper — than a uniform setting is a property of
the whole network after its thresholds are refit and its biases corrected. :class:`HoldoutCheck`
answers that on inputs the thresholds were not fitted on (and never on test data): it runs the
network for T steps, counts every spike for the exact energy model, and compares the time-averaged
output with the ANN's (cached once) by the task's divergence and by top-1 agreement.
"""
from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor

from adacal import inputs
from adacal.checks import check_choice, check_timesteps
from adacal.errors import DataError
from adacal.spiking_model import SpikingModel

__all__ = ["CHECK_METRICS", "HoldoutCheck", "Measurement", "agreement"]

log = logging.getLogger(__name__)

#: ``kl``: the task's divergence to the ANN (symmetric KL of the softmax for classification);
#: ``agreement``: the fraction of inputs whose top-1 output differs from the ANN's (1 − agreement).
CHECK_METRICS = ("kl", "agreement")


@dataclass(frozen=True)
class Measurement:
    """One configuration measured on the held-out inputs (per input averages).

    ``energy_pj``: energy per input by the exact energy model (spikes counted as run);
    ``divergence``: the task's divergence between the SNN's and the ANN's outputs; ``agreement``:
    the fraction of inputs (pixels, for dense outputs) whose top-1 class equals the ANN's.
    """

    energy_pj: float
    divergence: float
    agreement: float
    images: int

    def score(self, metric: str) -> float:
        """The number a check minimises: the divergence, or the disagreement with the ANN."""
        return self.divergence if metric == "kl" else 1.0 - self.agreement

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def agreement(ann: Any, snn: Any) -> Tensor:
    """Top-1 agreement (class dim 1) of two outputs, summed over inputs (and pixels); and the count."""
    a, s = inputs.leaves(ann)[0], inputs.leaves(snn)[0]
    if a.dim() < 2:  # one value per input: no classes to agree on
        return torch.zeros(2, dtype=torch.float64)
    same = (a.argmax(1) == s.argmax(1)).double()
    return torch.stack([same.sum(), torch.tensor(float(same.numel()), dtype=torch.float64)])


class HoldoutCheck:
    """The ANN's outputs on ``batches`` (computed once) and :meth:`measure` for any configuration.

    ``batches``: held-out inputs (tensors, or tuples/dicts of them), never the calibration or test
    inputs. ``divergence(ann_out, snn_out)`` is the task's (default: symmetric KL of the softmax).
    """

    def __init__(self, snn: SpikingModel, batches: list[Any], *, timesteps: int,
                 divergence: Callable[[Any, Any], Any] | None = None) -> None:
        if not batches:
            raise DataError("the held-out check needs at least one batch of held-out inputs")
        from adacal.energy import EnergyModel
        from adacal.sensitivity import default_divergence

        self.batches = batches
        self.timesteps = check_timesteps(timesteps)
        self.divergence = divergence or default_divergence
        self.images = sum(inputs.batch_size(x) for x in batches)
        self.ann = [snn.ann_forward(x) for x in batches]
        self.energy = EnergyModel.build(snn, inputs.narrow(batches[0], 0, 1))

    @torch.no_grad()
    def measure(self, snn: SpikingModel) -> Measurement:
        """Run ``snn`` as configured for T steps on every held-out batch; energy, divergence, agreement."""
        T = self.timesteps
        div = 0.0
        agree = torch.zeros(2, dtype=torch.float64)
        with snn.record_activity():
            for x, ann in zip(self.batches, self.ann):
                out = inputs.map_tensors(lambda o: o.mean(0), snn.run(x, T))
                n = inputs.batch_size(x)
                div += float(self.divergence(ann, out)) * n
                agree += agreement(ann, out)
            counts = snn.spike_counts()
        report = self.energy.estimate(counts, self.images, T)
        return Measurement(energy_pj=float(report.snn_energy_pj), divergence=div / self.images,
                           agreement=float(agree[0] / agree[1]) if agree[1] > 0 else 1.0, images=self.images)


def check_metric(metric: str) -> str:
    return check_choice("PipelineConfig.check_metric", metric, CHECK_METRICS)


def summary(m: Measurement | Mapping[str, Any], metric: str) -> str:
    d = m.to_dict() if isinstance(m, Measurement) else dict(m)
    return (f"{d['energy_pj'] / 1e6:.4g} µJ, KL {d['divergence']:.4g}, agreement {100 * d['agreement']:.2f}%"
            if metric in CHECK_METRICS else str(d))

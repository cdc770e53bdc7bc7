"""Statistics of neuron inputs, collected batch by batch and combined exactly.

Each observer keeps sums, counts, maxima or histograms (mergeable across batches and shards with
``merge``) and picks the clip level (``φ·ρ·θ``) only in ``compute()`` — never an average of
per-batch optima.
"""
from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor

from adacal.neurons.functional import surrogate_rate

__all__ = ["channels_first", "MaxObserver", "HistogramObserver", "MSEObserver", "SurrogateSpec"]

def channels_first(x: Tensor, channel_dim: int | None) -> Tensor:
    """``[C, M]`` view of the values per channel (``[1, M]`` for per-layer statistics)."""
    if channel_dim is None:
        return x.reshape(1, -1)
    return x.movedim(channel_dim, 0).reshape(x.shape[channel_dim], -1)


def target(a: Tensor, clip: float | None) -> Tensor:
    """What the ANN outputs for pre-activation ``a``: ReLU, or ReLU clipped at ``clip``."""
    return a.clamp(min=0) if clip is None else a.clamp(0.0, clip)


class MaxObserver:
    """Running maximum of the ANN activation per channel (or per layer)."""

    def __init__(self, clip: float | None = None) -> None:
        self.clip = clip
        self.max: Tensor | None = None

    def update(self, a: Tensor) -> None:
        m = target(a, self.clip).amax(dim=1)
        self.max = m if self.max is None else torch.maximum(self.max, m)

    def merge(self, other: MaxObserver) -> None:
        if other.max is not None:
            self.update(other.max[:, None])

    def compute(self) -> Tensor:
        return self.max if self.max is not None else torch.zeros(1)


class HistogramObserver:
    """Per-channel histogram of positive ANN activations over ``[0, upper]`` with moments.

    Each bin keeps its count, sum and sum of squares, so a quantiser that is constant over a
    bin has its squared error computed exactly (``n·q² − 2q·Σa + Σa²``); only the few bins that
    straddle a rounding boundary are approximated (by their centre). Histograms add across
    batches and shards.
    """

    def __init__(self, upper: Tensor, clip: float | None = None, bins: int = 2048) -> None:
        self.upper = upper.clamp(min=torch.finfo(upper.dtype).tiny)
        self.clip = clip
        self.bins = bins
        c = upper.numel()
        self.count = torch.zeros(c * bins, dtype=torch.float64, device=upper.device)
        self.sum = torch.zeros_like(self.count)
        self.sumsq = torch.zeros_like(self.count)
        self.total = torch.zeros(c, dtype=torch.float64, device=upper.device)

    def update(self, a: Tensor) -> None:
        t = target(a, self.clip)
        self.total += t.shape[1]
        idx = (t / self.upper[:, None] * self.bins).floor().clamp(0, self.bins - 1).long()
        idx += torch.arange(idx.shape[0], device=idx.device)[:, None] * self.bins
        pos = t > 0
        flat, vals = idx[pos], t[pos].double()
        self.count.index_add_(0, flat, torch.ones_like(vals))
        self.sum.index_add_(0, flat, vals)
        self.sumsq.index_add_(0, flat, vals * vals)

    def merge(self, other: HistogramObserver) -> None:
        for name in ("count", "sum", "sumsq", "total"):
            getattr(self, name).add_(getattr(other, name))

    def compute(self, percentile: float) -> Tensor:
        """Smallest bin edge below which ``percentile`` % of all values (zeros included) lie."""
        hist = self.count.view(-1, self.bins)
        zeros = self.total - hist.sum(dim=1)
        cum = zeros[:, None] + hist.cumsum(dim=1)
        need = self.total[:, None] * (percentile / 100.0)
        k = (cum < need).sum(dim=1).clamp(max=self.bins - 1)
        edges = (k + 1).to(self.upper.dtype) / self.bins
        return (edges * self.upper).to(self.upper.dtype)


@dataclass(frozen=True)
class SurrogateSpec:
    """What the neuron will do: T timesteps, φ spikes per step, ρ, initial potential fraction."""

    timesteps: int
    phi: float
    rho: float
    v_init: float
    #: the neuron type's closed form (``IFNeuron.surrogate``): thresholds fit what really runs
    rate: Callable[..., Tensor] = surrogate_rate


class MSEObserver:
    """Squared error ``‖Q(a; θ_k) − ANN(a)‖²`` of each candidate clip level, over all batches.

    Candidates are ``upper·(1 − step·k)``, k = 0..K−1, per channel; ``θ_k = clip_k/(φ·ρ)`` so the
    burst neuron saturates exactly at the clip level. ``Q`` is the closed form of the simulated
    neuron (round-to-nearest with ``v_init = ½``), so the search optimises what actually runs.
    Statistics are a moment histogram (:class:`HistogramObserver`); the argmin is taken once,
    in :meth:`compute`, on the combined statistics.
    """

    def __init__(self, upper: Tensor, spec: SurrogateSpec, clip: float | None = None,
                 grid_size: int = 95, grid_step: float = 0.01, bins: int = 2048) -> None:
        ks = torch.arange(grid_size, dtype=torch.float64, device=upper.device)
        self.candidates = upper.double()[None, :] * (1 - grid_step * ks)[:, None]  # [K, C]
        self.spec = spec
        self.hist = HistogramObserver(upper, clip, bins)

    def update(self, a: Tensor) -> None:
        self.hist.update(a)

    def merge(self, other: MSEObserver) -> None:
        self.hist.merge(other.hist)

    def losses(self) -> Tensor:
        """``[K, C]`` squared error of every candidate (zeros contribute none: Q(0) = 0)."""
        s, h = self.spec, self.hist
        c = h.total.numel()
        n, s1, s2 = (v.view(c, h.bins) for v in (h.count, h.sum, h.sumsq))
        centres = (torch.arange(h.bins, dtype=torch.float64, device=n.device) + 0.5) / h.bins
        centres = centres[None, :] * h.upper.double()[:, None]  # [C, bins]
        theta = (self.candidates / (s.phi * s.rho)).clamp(min=1e-30)  # [K, C]
        q = s.rate(centres[None], (theta * s.rho)[:, :, None], s.timesteps, s.phi, s.v_init)
        return (n[None] * q * q - 2 * q * s1[None] + s2[None]).sum(dim=2)

    def compute(self) -> Tensor:
        best = self.losses().argmin(dim=0)  # ties -> the largest clip (smallest k)
        return self.candidates.gather(0, best[None]).squeeze(0).to(self.hist.upper.dtype)

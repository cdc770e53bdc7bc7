"""Putting calibration statistics of several ranks together (:mod:`adacal.distributed`).

Each rank feeds its share of the calibration batches to its observers; these functions turn the
per-rank observers into the observers one process would have built on all the batches: maxima by
an exact max, histogram counts/sums by an all-reduce (float64, so only the order of float64
additions differs from one process).
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch

from adacal import distributed as dist
from adacal.calibrate.observers import HistogramObserver, MaxObserver, MSEObserver

__all__ = ["reduce_histograms", "reduce_maxima"]


def reduce_maxima(observers: Mapping[str, MaxObserver], device: torch.device) -> None:
    """Every rank's maxima merged into ``observers`` in place (a rank with no batch sends none)."""
    if not dist.world().active:
        return
    mine = {k: None if o.max is None else o.max.detach().cpu() for k, o in observers.items()}
    gathered = dist.gather_objects(mine, what="merging calibration maxima")
    for name, o in observers.items():
        o.max = None
        for part in gathered:
            m = part[name]
            if m is not None:
                o.max = m if o.max is None else torch.maximum(o.max, m)
        if o.max is not None:
            o.max = o.max.to(device)


def reduce_histograms(observers: Mapping[str, Any]) -> None:
    """Sum the moment histograms of :class:`HistogramObserver` / :class:`MSEObserver` over ranks, in place."""
    if not dist.world().active:
        return
    hists: list[HistogramObserver] = [o.hist if isinstance(o, MSEObserver) else o for o in observers.values()]
    parts = [getattr(h, k) for h in hists for k in ("count", "sum", "sumsq", "total")]
    summed = dist.all_reduce_sum(parts, what="summing calibration histograms")
    it = iter(summed)
    for h in hists:
        for k in ("count", "sum", "sumsq", "total"):
            getattr(h, k).copy_(next(it))

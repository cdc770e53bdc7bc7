"""Event-camera classification: recordings cut into time bins, fed to the SNN accumulated or streamed.

A sample is ``[K, P, H, W]``: event counts in K time bins (:mod:`adacal.datasets.events`). The ANN
sees the accumulated frame — all K bins summed, or ``frames`` consecutive groups stacked as channels
``[frames·P, H, W]``. The SNN sees, over T steps (``feed``):

* ``accumulated``: that frame at every step (what the paper's pipeline does);
* ``streamed``: step t gets only the events of time bin t (the K bins regrouped into T, each scaled
  by T so that the steps average to the frame): the network consumes the events as they come.

Both keep the engine's contract (the time average of what the SNN sees is what the ANN sees), so
calibration, correction, profiling, early exit and energy run on either without knowing which.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from adacal.errors import ConfigError, ShapeError
from adacal.presentation import Presentation
from adacal.tasks.classification import Classification

__all__ = ["EventClassification", "bin_groups"]

FEEDS = ("accumulated", "streamed")


def bin_groups(bins: int, groups: int) -> Tensor:
    """``[groups, bins]`` 0/1 matrix: time bin k belongs to group ``floor(k·groups/bins)``.

    Every bin is in exactly one group, groups are consecutive and as even as possible (exactly
    ``bins/groups`` bins each when it divides), so regrouping never loses or repeats an event.
    """
    if groups > bins:
        raise ConfigError(f"{groups} steps (or frames) need at least as many time bins per recording, but the "
                          f"data has {bins}; raise data.options.bins to at least {groups}")
    owner = torch.div(torch.arange(bins) * groups, bins, rounding_mode="floor")
    return (owner[None, :] == torch.arange(groups)[:, None]).to(torch.get_default_dtype())


class EventClassification(Classification):
    """Classification of event recordings; ``feed`` and ``frames`` come from ``data.options``."""

    name = "event_classification"
    report_examples = 4

    def __init__(self, **info: Any) -> None:
        super().__init__(**info)
        opts: Mapping[str, Any] = dict(info.get("data_options") or {})
        self.feed = str(info.get("feed", opts.get("feed", "accumulated")))
        self.frames = info.get("frames", opts.get("frames", 1))
        if self.feed not in FEEDS:
            raise ConfigError(f"event feed must be one of {list(FEEDS)}, got {self.feed!r} (data.options.feed)")
        if isinstance(self.frames, bool) or not isinstance(self.frames, int) or self.frames < 1:
            raise ConfigError(f"data.options.frames must be an integer >= 1, got {self.frames!r}")
        self.info.update(feed=self.feed, frames=self.frames)
        self.info.pop("data_options", None)

    # ------------------------------------------------------------------ presentation
    def _bins(self, x: Any) -> Tensor:
        if not isinstance(x, Tensor) or x.dim() != 5:
            raise ShapeError(f"event inputs must be [B, bins, polarities, H, W] tensors of event counts, got "
                             f"{tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__}")
        return x if x.is_floating_point() else x.to(torch.get_default_dtype())

    def ann_input(self, x: Any) -> Tensor:
        """The accumulated frame ``[B, frames·P, H, W]``: the ``frames`` groups of bins, stacked."""
        b = self._bins(x)
        slots = bin_groups(b.shape[1], self.frames).to(b)
        frame = torch.einsum("fk,bkphw->bfphw", slots, b)
        return frame.reshape(b.shape[0], -1, *b.shape[3:])

    def present(self, x: Any, timesteps: int) -> Presentation:
        if self.feed == "accumulated":
            return Presentation(self.ann_input(x))
        return self.stream(x, timesteps)

    def stream(self, x: Any, timesteps: int) -> Presentation:
        """``[T, B, frames·P, H, W]``: step t holds the events of the t-th group of time bins (× T),
        each in the channel block of the frame its bins belong to; ``events``: the counts unscaled."""
        b = self._bins(x)
        k = b.shape[1]
        steps = bin_groups(k, timesteps).to(b)
        slots = bin_groups(k, self.frames).to(b)
        counts = torch.einsum("tk,fk,bkphw->tbfphw", steps, slots, b)
        counts = counts.reshape(timesteps, b.shape[0], -1, *b.shape[3:])
        return Presentation(counts * timesteps, True, counts)

    # ------------------------------------------------------------------ report
    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d["feed"] = self.feed
        return d

    def examples(self, x: Any, output: Any, target: Any) -> dict[str, Any] | None:
        """The accumulated frame and 8 time slices of the first samples, with predictions."""
        b = self._bins(x)[: self.report_examples]
        n = b.shape[0]
        slices = torch.einsum("tk,bkphw->btphw", bin_groups(b.shape[1], min(8, b.shape[1])).to(b), b)
        return {"frame": self.ann_input(b).cpu().numpy().astype(np.float32),
                "slices": slices.cpu().numpy().astype(np.float32),
                "prediction": output[:n].argmax(1).cpu().numpy(), "target": np.asarray(target[:n].cpu())}

    def figures(self, results: Mapping[str, Any], folder: Path) -> dict[str, tuple[Path, str]]:
        from adacal.tasks.events_plots import plot_event_examples

        runs = [r for r in results.get("runs") or [] if r.get("examples")]
        run = next((r for r in reversed(runs) if not r.get("iat")), runs[-1] if runs else None)
        if run is None or not (folder / run["examples"]).is_file():
            return {}
        path = folder / "event_examples.png"
        with np.load(folder / run["examples"]) as z:
            plot_event_examples({k: z[k][: self.report_examples] for k in z.files}, path,
                                title=f"{run['name']} ({self.feed} feed)")
        shown = ("the frame at every step" if self.feed == "accumulated"
                 else "the recording cut into T such slices, one per step")
        caption = ("Test recordings: the accumulated frame the ANN sees (ON events red, OFF blue) and the "
                   f"recording in 8 time slices; with the {self.feed} feed the SNN sees {shown}.")
        return {"event_examples": (path, caption)}


def _register() -> None:
    from adacal.tasks import register_task

    register_task(EventClassification)


_register()

"""What the SNN is shown over T steps, and what the ANN it approximates is shown.

A task turns its inputs into a :class:`Presentation` for T timesteps (``Task.present``): either one
constant input shown at every step (images; an event recording accumulated into a frame), or a
*sequence* ``[T, B, ...]`` whose step t is different (an event recording cut into T time bins).
The contract every engine stage relies on: **the time average of the presented input is the
ANN's input**. The SNN's output is a time average, so it approximates the ANN on that average;
calibration, bias correction and profiling therefore take the ANN's reference from
:meth:`Presentation.ann_inputs` and run the SNN on what it will really see.

The engine (pipeline, calibration, evaluation, energy) takes a ``present(inputs, timesteps)``
callable and never needs to know what kind of data it is.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

from torch import Tensor

from adacal import inputs
from adacal.errors import ShapeError

__all__ = ["Present", "Presentation", "constant", "present_all"]


class Presentation(NamedTuple):
    """``inputs``: ``[B, ...]`` shown at every step (``sequence=False``) or ``[T, B, ...]``, one
    slice per step (``sequence=True``). ``events``: for a sequence of input events, how many events
    arrive at each input position in each step, same shape as ``inputs`` (the energy model then
    counts the first layers' work per event instead of as dense MACs every step); None otherwise."""

    inputs: Any
    sequence: bool = False
    events: Tensor | None = None

    @property
    def batch_dim(self) -> int:
        return 1 if self.sequence else 0

    def batch_size(self) -> int:
        return inputs.batch_size(self.inputs, self.batch_dim)

    def ann_inputs(self) -> Any:
        """What the ANN sees: the input itself, or the time average of a sequence."""
        return inputs.map_tensors(lambda t: t.mean(0), self.inputs) if self.sequence else self.inputs

    def first_sample(self) -> Any:
        """One sample as the ANN sees it (``[1, ...]``): for tracing and energy-model building."""
        return inputs.narrow(self.ann_inputs(), 0, 1)

    def narrow(self, start: int, length: int) -> Presentation:
        """Samples ``start .. start+length`` (along the batch axis, events included)."""
        d = self.batch_dim
        ev = None if self.events is None else self.events.narrow(d, start, length)
        return Presentation(inputs.narrow(self.inputs, start, length, d), self.sequence, ev)


#: ``present(inputs, timesteps) -> Presentation``; a task's :meth:`~adacal.tasks.Task.present`.
Present = Callable[[Any, int], Presentation]


def constant(x: Any, timesteps: int = 1) -> Presentation:
    """The default presentation: the same input at every step."""
    return Presentation(x, False, None)


def present_all(batches: Sequence[Any], present: Present | None, timesteps: int) -> list[Presentation]:
    """Every batch presented for ``timesteps`` steps; all constant or all sequences, else ShapeError."""
    fn = present or constant
    out = [fn(b, timesteps) for b in batches]
    for i, p in enumerate(out):
        if not isinstance(p, Presentation):
            raise ShapeError(f"present() must return a Presentation, got {type(p).__name__} for batch {i}")
        if p.sequence != out[0].sequence:
            raise ShapeError("present() returned constant inputs for some batches and sequences for others")
        if p.sequence and inputs.batch_size(p.inputs, 0) != timesteps:
            raise ShapeError(f"present() returned a sequence of {inputs.batch_size(p.inputs, 0)} steps for "
                             f"T={timesteps}; a presentation has exactly one slice per step")
    return out


def concat(parts: Sequence[Presentation]) -> Presentation:
    """Presentations of the same kind joined along the batch axis."""
    first = parts[0]
    d = first.batch_dim
    ev = None if any(p.events is None for p in parts) else inputs.cat([p.events for p in parts], d)
    return Presentation(inputs.cat([p.inputs for p in parts], d), first.sequence, ev)

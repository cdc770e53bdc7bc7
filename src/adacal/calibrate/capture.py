"""Hooks on neurons, removed in ``finally`` — they feed observers, never write layer attributes."""
from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

from torch import Tensor

from adacal.neurons.module import IFNeuron

__all__ = ["capture_inputs", "capture_outputs", "StopForward"]


class StopForward(Exception):
    """Raised from a hook to end a forward pass early once the wanted layer has run."""


@contextlib.contextmanager
def capture_inputs(neurons: dict[str, IFNeuron], fn: Callable[[str, Tensor], None]) -> Iterator[None]:
    """Call ``fn(name, input)`` for every neuron call while inside."""
    handles = []
    try:
        for name, n in neurons.items():
            def hook(_m: Any, args: tuple[Any, ...], _name: str = name) -> None:
                fn(_name, args[0])
            handles.append(n.register_forward_pre_hook(hook))
        yield
    finally:
        for h in handles:
            h.remove()


@contextlib.contextmanager
def capture_outputs(neurons: dict[str, IFNeuron], fn: Callable[[str, Tensor], None]) -> Iterator[None]:
    """Call ``fn(name, output)`` for every neuron call while inside."""
    handles = []
    try:
        for name, n in neurons.items():
            def hook(_m: Any, _args: Any, out: Tensor, _name: str = name) -> None:
                fn(_name, out)
            handles.append(n.register_forward_hook(hook))
        yield
    finally:
        for h in handles:
            h.remove()

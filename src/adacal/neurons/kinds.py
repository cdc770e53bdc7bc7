"""Neuron kinds by name: what ``NeuronConfig.kind`` (``pipeline.conversion.neuron.kind``) selects."""
from __future__ import annotations

from adacal.checks import suggest
from adacal.errors import ConfigError
from adacal.neurons.module import IFNeuron

__all__ = ["NEURON_KINDS", "neuron_class", "register_neuron"]

#: ``kind -> class``; every class is an :class:`IFNeuron` (same buffers, modes and closed form).
NEURON_KINDS: dict[str, type[IFNeuron]] = {"if": IFNeuron}


def register_neuron(kind: str, cls: type[IFNeuron]) -> type[IFNeuron]:
    """Make ``cls`` (a subclass of :class:`IFNeuron`) the neuron of ``NeuronConfig(kind=kind)``."""
    if not (isinstance(cls, type) and issubclass(cls, IFNeuron)):
        raise ConfigError(f"neuron kind {kind!r} must be an IFNeuron subclass, got {cls!r}")
    NEURON_KINDS[kind] = cls
    return cls


def neuron_class(kind: str) -> type[IFNeuron]:
    if kind not in NEURON_KINDS:
        raise ConfigError(f"unknown neuron kind {kind!r}{suggest(str(kind), NEURON_KINDS)}; registered: "
                          f"{sorted(NEURON_KINDS)}")
    return NEURON_KINDS[kind]

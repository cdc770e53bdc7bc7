"""Spiking neurons: pure functions (functional), the stateful module (IFNeuron), spiking max-pools."""
from __future__ import annotations

from typing import Any

from torch import fx

from adacal.checks import check_phi, check_rho, check_timesteps
from adacal.neurons.functional import if_step, surrogate_count, surrogate_rate
from adacal.neurons.kinds import NEURON_KINDS, neuron_class, register_neuron
from adacal.neurons.module import NEURON_MODES, IFNeuron
from adacal.neurons.pool import MaxOver, SpikingMaxOver, SpikingMaxPool, spiking_max_pool
from adacal.neurons.signed import SignedIFNeuron

register_neuron("signed", SignedIFNeuron)

__all__ = ["IFNeuron", "MaxOver", "NEURON_KINDS", "SignedIFNeuron", "neuron_class", "register_neuron", "NEURON_MODES",
           "SpikingMaxOver", "SpikingMaxPool", "check_phi", "check_rho", "check_timesteps", "if_step", "is_neuron",
           "is_neuron_node", "spiking_max_pool", "surrogate_count", "surrogate_rate"]


def is_neuron(module: Any) -> bool:
    """The one test of "is this a spiking neuron" (every neuron type derives from IFNeuron)."""
    return isinstance(module, IFNeuron)


def is_neuron_node(gm: fx.GraphModule, node: fx.Node) -> bool:
    """Whether a graph node calls a neuron module."""
    return node.op == "call_module" and is_neuron(gm.get_submodule(str(node.target)))

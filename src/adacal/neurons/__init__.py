"""Spiking neurons: pure functions (functional) and the stateful module (IFNeuron)."""
from adacal.checks import check_phi, check_rho, check_timesteps
from adacal.neurons.functional import if_step, surrogate_count, surrogate_rate
from adacal.neurons.kinds import NEURON_KINDS, neuron_class, register_neuron
from adacal.neurons.module import NEURON_MODES, IFNeuron
from adacal.neurons.pool import SpikingMaxPool, spiking_max_pool
from adacal.neurons.signed import SignedIFNeuron

register_neuron("signed", SignedIFNeuron)

__all__ = [
    "IFNeuron",
    "NEURON_KINDS",
    "SignedIFNeuron",
    "neuron_class",
    "register_neuron",
    "NEURON_MODES",
    "SpikingMaxPool",
    "check_phi",
    "check_rho",
    "check_timesteps",
    "if_step",
    "spiking_max_pool",
    "surrogate_count",
    "surrogate_rate",
]

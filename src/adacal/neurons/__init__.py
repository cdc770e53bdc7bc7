"""Spiking neurons: pure functions (functional) and the stateful module (IFNeuron)."""
from adacal.neurons.functional import if_step, surrogate_count, surrogate_rate
from adacal.neurons.module import NEURON_MODES, IFNeuron, check_phi, check_rho, check_timesteps

__all__ = [
    "IFNeuron",
    "NEURON_MODES",
    "check_phi",
    "check_rho",
    "check_timesteps",
    "if_step",
    "surrogate_count",
    "surrogate_rate",
]

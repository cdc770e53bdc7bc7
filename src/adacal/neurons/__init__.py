"""Spiking neurons: pure functions (functional) and the stateful module (IFNeuron)."""
from adacal.checks import check_phi, check_rho, check_timesteps
from adacal.neurons.functional import if_step, surrogate_count, surrogate_rate
from adacal.neurons.module import NEURON_MODES, IFNeuron
from adacal.neurons.pool import MaxOver, SpikingMaxOver, SpikingMaxPool, spiking_max_pool

__all__ = [
    "IFNeuron",
    "MaxOver",
    "NEURON_MODES",
    "SpikingMaxOver",
    "SpikingMaxPool",
    "check_phi",
    "check_rho",
    "check_timesteps",
    "if_step",
    "spiking_max_pool",
    "surrogate_count",
    "surrogate_rate",
]

"""Pure maths of the integrate-and-fire neuron with reset by subtraction and burst firing.

Everything here is a pure function of tensors, so it can be tested on its own (method.md §1-2)
and shared by the stateful module, the threshold search and the analog surrogate: the surrogate
the calibration minimises is, by construction, the one the simulated neuron follows.
"""
from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["if_step", "surrogate_count", "surrogate_rate"]


def if_step(u: Tensor, z: Tensor, theta: Tensor, phi: Tensor | float) -> tuple[Tensor, Tensor]:
    """One timestep: integrate ``z``, emit ``n = clamp(floor(u/θ), 0, φ)`` spikes, subtract ``n·θ``.

    Returns ``(n, u_new)``; ``n`` is the integer spike count of this step (a burst of k counts k)
    and the value passed on is ``n·θ``. Not in-place: the module uses an in-place twin of this.
    """
    u = u + z
    n = torch.div(u, theta, rounding_mode="floor").clamp(min=0)
    n = torch.minimum(n, torch.as_tensor(phi, dtype=n.dtype, device=n.device))
    return n, u - n * theta


def surrogate_count(
    a: Tensor, theta: Tensor, timesteps: int, phi: Tensor | float, v_init: Tensor | float = 0.5
) -> Tensor:
    """Total spikes over ``timesteps`` for a constant input current ``a``.

    ``N = clamp(floor(T·a/θ + v_init), 0, φ·T)`` with the initial potential ``v_init·θ``
    (``v_init`` as a fraction of θ, in [0, 1)): exact for the neuron of :func:`if_step`.
    """
    n = torch.floor(a * timesteps / theta + v_init).clamp(min=0)
    cap = torch.as_tensor(phi, dtype=n.dtype, device=n.device) * timesteps
    return torch.minimum(n, cap)


def surrogate_rate(
    a: Tensor, theta: Tensor, timesteps: int, phi: Tensor | float, v_init: Tensor | float = 0.5
) -> Tensor:
    """Time-averaged output ``Q(a) = θ/T · N(a)`` of the neuron for a constant input ``a``."""
    return surrogate_count(a, theta, timesteps, phi, v_init) * (theta / timesteps)

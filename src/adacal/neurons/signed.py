"""A signed IF neuron: it may send negative spikes, but only to take back spikes it sent before.

With an input that changes from step to step (events streamed in time bins) an IF neuron that was
driven up early fires, and when later input drives it back down it cannot take those spikes back:
its output is the *running maximum* of its accumulated input, not the final sum the ANN's ReLU
sees — the "unevenness" error of conversion (Bu et al., ICLR 2022). Calibration cannot remove it
(it differs from input to input). This neuron can: when its membrane falls to −θ' or below and it
has sent positive spikes, it sends a negative spike (value −θ'), at most φ per step, never more
than it has sent in all (Wang et al., "Signed Neuron with Memory", IJCAI 2022). Its spike count
then follows ``clamp(floor(accumulated input/θ'), 0, φ·t)`` — the ReLU of the running sum.

For a constant input it never sends a negative spike, so its closed form (and every calibration
built on it) is the IF neuron's. A negative spike costs what a positive one does (it reaches the
same synapses): spike counts and energy count ``|n|``. Hardware needs signed (or graded)
spikes; NIR has no such neuron, so export refuses it. Select it with
``ConversionConfig(neuron=NeuronConfig(kind="signed"))`` (``pipeline.conversion.neuron.kind``).
"""
from __future__ import annotations

import torch
from torch import Tensor

from adacal.neurons.module import IFNeuron

__all__ = ["SignedIFNeuron", "signed_if_step"]


def signed_if_step(u: Tensor, sent: Tensor, z: Tensor, theta: Tensor, phi: float) -> tuple[Tensor, Tensor, Tensor]:
    """One step: integrate ``z``; emit ``n = clamp(floor(u/θ), max(−φ, −sent), φ)``; subtract ``n·θ``.

    ``sent``: spikes sent so far (net). Returns ``(n, u_new, sent_new)``; not in-place.
    """
    u = u + z
    n = torch.div(u, theta, rounding_mode="floor").clamp(min=-phi, max=phi)
    n = torch.maximum(n, -sent)
    return n, u - n * theta, sent + n


class SignedIFNeuron(IFNeuron):
    """:class:`IFNeuron` that takes back earlier spikes with negative ones (module docstring).

    Its state ``v`` holds, per sample, the membrane and the net spikes sent so far (``[B, 2, ...]``),
    so sessions, early exit and bias correction handle it like the IF neuron's membrane.
    """

    #: Sends negative spikes (read by calibration, profiling and export).
    signed = True

    def _spiking(self, x: Tensor) -> Tensor:
        steps, batch, rest = self.timesteps, self._batch(x), x.shape[1:]
        th = self._bc(self.effective_threshold(), x)
        phi = float(self.phi)
        bias = self._bc(self.bias_offset, x)
        if self.v is None or self.v.shape[0] != batch:
            self.v = torch.zeros((batch, 2, *rest), dtype=x.dtype, device=x.device)
            self.v[:, 0] = self._bc(self.v_init, x) * th + self._bc(self.v_offset, x)
        u, sent = self.v[:, 0], self.v[:, 1]
        z = x if self.constant_input else x.view(steps, batch, *rest)
        counts = torch.empty((steps, batch, *rest), dtype=x.dtype, device=x.device)
        for t in range(steps):
            n = counts[t]
            u.add_((z if self.constant_input else z[t]) + bias)
            torch.div(u, th, rounding_mode="floor", out=n)
            n.clamp_(min=-phi, max=phi)
            torch.maximum(n, -sent, out=n)
            u.addcmul_(n, th, value=-1.0)
            sent.add_(n)
        if self.recording:
            self._record(counts.abs().sum(dim=(0, 1)))
        return counts.mul_(th).view(steps * batch, *rest)

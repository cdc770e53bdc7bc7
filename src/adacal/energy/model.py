"""The exact energy model of a converted network (method.md §4).

``E_SNN = E_MAC · MACs(analog-fed layers, each time they run) + E_AC · Σ SOPs(spike-fed layers)``
with SOPs counted exactly from the recorded spikes: ``SOPs(L) = Σ_N Σ_p count_N(p) · f_{N→L}(p)``,
where ``count_N(p)`` is the number of spikes (a burst of k counts k) at position p of neuron layer
N, and ``f_{N→L}`` the static fan-out map from :mod:`adacal.energy.graph`. The released research
code counted non-zero positions (a burst once) and averaged per call, understating burst energy.
"""
from __future__ import annotations

import logging
import math
import numbers
from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from adacal import inputs
from adacal.devices import model_float
from adacal.energy.costs import CostTable
from adacal.energy.graph import SPIKE, GraphAnalysis, LayerInfo, analyze_graph
from adacal.energy.report import EnergyReport, LayerEnergy, NeuronActivity
from adacal.errors import ConfigError, DataError, ShapeError
from adacal.spiking_model import SpikingModel

__all__ = ["EnergyModel", "measure", "COST_METRICS", "EVENT"]

log = logging.getLogger(__name__)

COST_METRICS = ("spikes", "sops", "energy")
#: Kind of a layer fed by input events (an event-driven first layer): E_AC per synaptic event.
EVENT = "event"


def _check_samples(num_samples: Any) -> int:
    if isinstance(num_samples, bool) or not isinstance(num_samples, numbers.Integral) or num_samples < 1:
        raise ConfigError(
            f"num_samples must be an integer >= 1 (images whose spikes were counted), got {num_samples!r}"
        )
    return int(num_samples)


def _check_mean_timesteps(timesteps: Any) -> float:
    if isinstance(timesteps, bool) or not isinstance(timesteps, numbers.Real):
        raise ConfigError(f"timesteps must be a number > 0 (mean steps run per image), got {timesteps!r}")
    t = float(timesteps)
    if not math.isfinite(t) or t <= 0:
        raise ConfigError(f"timesteps must be finite and > 0 (mean steps run per image), got {timesteps!r}")
    return t


class EnergyModel:
    """Static energy structure of one converted network plus a cost table.

    Build it once per model with :meth:`build` (graph and the weights' zero pattern only:
    thresholds, φ, ρ and corrections may change freely afterwards; rebuild after changing weights
    or the graph). Then turn recorded spike counts into energy with :meth:`estimate`, or into
    per-layer costs for the φ/ρ searches with :meth:`neuron_costs`.

    Example:
        >>> energy = EnergyModel.build(snn, x[:1])                      # doctest: +SKIP
        >>> with snn.record_activity():                                 # doctest: +SKIP
        ...     out = snn.run(x, 8)
        >>> report = energy.estimate(snn.spike_counts(), len(x), 8)     # doctest: +SKIP
    """

    def __init__(self, analysis: GraphAnalysis, costs: CostTable, *, constant_prefix: bool) -> None:
        if not isinstance(costs, CostTable):
            raise ConfigError(f"costs must be a CostTable, got {type(costs).__name__}")
        self._analysis = analysis
        self.costs = costs
        self.constant_prefix = bool(constant_prefix)
        totals: dict[str, Tensor] = {}
        for (_, neuron), f in analysis.fanouts.items():
            totals[neuron] = f if neuron not in totals else totals[neuron] + f
        self._neuron_fanout = totals

    # ------------------------------------------------------------------ construction
    @classmethod
    def build(
        cls, snn: SpikingModel, example_input: Tensor | None = None, costs: CostTable | None = None,
    ) -> EnergyModel:
        """Analyse ``snn`` on one sample (``example_input[:1]``; zeros of ``snn.input_shape`` if None).

        For event data pass one frame batch ``[B, ...]`` (not the ``[T, B, ...]`` sequence).
        """
        if not isinstance(snn, SpikingModel):
            raise ConfigError(f"EnergyModel.build expects a SpikingModel (from adacal.convert.prepare), "
                              f"got {type(snn).__name__}")
        device, dtype = model_float(snn) or (torch.device("cpu"), torch.get_default_dtype())
        if example_input is None:
            zeros = [torch.zeros((1, *s), device=device, dtype=dtype) for s in snn.input_shapes]
            x: Any = zeros[0] if len(zeros) == 1 else tuple(zeros)
        else:
            snn.check_input(example_input)
            x = inputs.map_tensors(lambda t: t[:1].to(device), example_input)
        with torch.no_grad(), snn.mode("ann"):
            analysis = analyze_graph(snn.graph_module, x)
        model = cls(analysis, costs or CostTable.fp32_45nm(), constant_prefix=snn.has_constant_prefix)
        log.info("energy model: %d weighted layers (%d spike-fed), %d neuron layers, ANN %.4g MMACs/image",
                 len(analysis.layers), sum(1 for li in analysis.layers if li.kind == SPIKE),
                 len(analysis.neuron_shapes), model.ann_macs / 1e6)
        return model

    def with_costs(self, costs: CostTable) -> EnergyModel:
        """The same structure priced with another cost table (no re-analysis)."""
        return EnergyModel(self._analysis, costs, constant_prefix=self.constant_prefix)

    # ------------------------------------------------------------------ structure
    @property
    def layers(self) -> tuple[LayerInfo, ...]:
        """Weighted layer calls in execution order."""
        return self._analysis.layers

    @property
    def neuron_shapes(self) -> dict[str, tuple[int, ...]]:
        """Per-sample output shape of every neuron layer (the shape of its ``spike_count``)."""
        return dict(self._analysis.neuron_shapes)

    @property
    def ann_macs(self) -> int:
        """MACs of one ANN forward pass: every conv/linear of the converted graph once."""
        return sum(li.macs for li in self.layers)

    @property
    def ann_energy_pj(self) -> float:
        return self.costs.e_mac_pj * self.ann_macs

    @property
    def other_macs(self) -> int:
        """MACs of ops that are not conv/linear layers (matmul, ...), priced as analog layers."""
        return self._analysis.other_macs

    def layer(self, name: str) -> LayerInfo:
        for li in self.layers:
            if li.name == name:
                return li
        raise ConfigError(f"no weighted layer named {name!r}; known: {[li.name for li in self.layers]}")

    def fanout(self, neuron: str, layer: str | None = None) -> Tensor:
        """Synapses driven by one spike at each position of ``neuron`` (into ``layer``, or all layers)."""
        if neuron not in self._analysis.neuron_shapes:
            raise ConfigError(f"no neuron named {neuron!r}; known: {list(self._analysis.neuron_shapes)}")
        shape = self._analysis.neuron_shapes[neuron]
        if layer is None:
            f = self._neuron_fanout.get(neuron)
        else:
            self.layer(layer)
            f = self._analysis.fanouts.get((layer, neuron))
        return f.clone() if f is not None else torch.zeros(shape, dtype=torch.float64)

    def input_fanout(self, layer: str) -> Tensor:
        """Synapses of an input-fed ``layer`` that one input event at each input position drives."""
        info = self.layer(layer)
        if not info.input_fed:
            raise ConfigError(f"layer {layer!r} is not fed by the network input directly")
        return self._analysis.input_fanouts[layer].clone()

    def input_sops(self, input_events: Tensor) -> dict[str, float]:
        """Synaptic operations of each input-fed layer for ``input_events`` (events per input position,
        per-sample input shape, summed over whatever was recorded)."""
        ev = torch.as_tensor(input_events).detach().to(torch.float64)
        out: dict[str, float] = {}
        for li in self.layers:
            if not li.input_fed:
                continue
            f = self._analysis.input_fanouts[li.name]
            if tuple(ev.shape) != tuple(f.shape):
                raise ShapeError(f"input events have shape {tuple(ev.shape)}, expected {tuple(f.shape)} (one count "
                                 "per input position of one sample, summed over samples and steps)")
            if bool((ev < 0).any()) or not bool(torch.isfinite(ev).all()):
                raise DataError("input event counts must be finite and >= 0")
            out[li.name] = float(self._dot(ev, f))
        return out

    def runs_per_image(self, layer: LayerInfo, timesteps: float, *, sequence: bool = False) -> float:
        """How often an analog-fed layer runs per image: once for a constant-input prefix, else T."""
        if layer.kind == SPIKE:
            return 0.0
        once = layer.in_prefix and self.constant_prefix and not sequence
        return 1.0 if once else _check_mean_timesteps(timesteps)

    # ------------------------------------------------------------------ counting
    def _counts(self, spike_counts: Mapping[str, Tensor], *, complete: bool) -> dict[str, Tensor]:
        """Validated float64 counts; ``complete``: every neuron must be present (whole-model energy)."""
        if not isinstance(spike_counts, Mapping):
            raise DataError(
                "spike_counts must be a dict {neuron name: count tensor} (snn.spike_counts()), "
                f"got {type(spike_counts).__name__}"
            )
        shapes = self._analysis.neuron_shapes
        missing = [k for k in shapes if k not in spike_counts] if complete else []
        unknown = [k for k in spike_counts if k not in shapes]
        if missing or unknown:
            raise DataError(
                f"spike counts do not match this energy model (missing {missing}, unknown {unknown}); pass "
                "snn.spike_counts() of the model the EnergyModel was built from, or rebuild it"
            )
        out: dict[str, Tensor] = {}
        for name, shape in shapes.items():
            if name not in spike_counts:
                continue
            c = spike_counts[name]
            if not isinstance(c, Tensor):
                raise DataError(f"spike count of {name!r} must be a tensor, got {type(c).__name__}")
            if c.numel() == 0:  # never ran while recording: no spikes
                c = torch.zeros(shape, dtype=torch.float64, device=c.device)
            elif tuple(c.shape) != shape:
                raise ShapeError(
                    f"spike count of {name!r} has shape {tuple(c.shape)}, expected {shape} (per-sample "
                    "neuron output shape); was the model built for another input size?"
                )
            out[name] = c.detach().to(torch.float64)
        return out

    def _dot(self, count: Tensor, f: Tensor) -> Tensor:
        return torch.dot(count.reshape(-1), f.to(device=count.device, dtype=torch.float64).reshape(-1))

    def _tally(
        self, spike_counts: Mapping[str, Tensor], *, complete: bool = False
    ) -> tuple[dict[str, float], dict[str, float], dict[str, float]]:
        """(SOPs per layer, SOPs per neuron, spikes per neuron), totals over what was recorded.

        Neurons absent from ``spike_counts`` contribute nothing (allowed unless ``complete``).
        """
        counts = self._counts(spike_counts, complete=complete)
        keys: list[tuple[str, str]] = []
        vals: list[Tensor] = []
        for li in self.layers:
            for s in li.sources:
                if s not in counts:
                    continue
                keys.append((li.name, s))
                vals.append(self._dot(counts[s], self._analysis.fanouts[(li.name, s)]))
        spike_names = list(counts)
        vals.extend(counts[n].sum() for n in spike_names)
        flat = torch.stack(vals).tolist() if vals else []  # one device sync per call
        layer_sops = {li.name: 0.0 for li in self.layers}
        neuron_sops = {n: 0.0 for n in spike_names}
        for (lname, src), v in zip(keys, flat):
            layer_sops[lname] += v
            neuron_sops[src] += v
        spikes = dict(zip(spike_names, flat[len(keys):]))
        return layer_sops, neuron_sops, spikes

    def layer_sops(self, spike_counts: Mapping[str, Tensor]) -> dict[str, float]:
        """Synaptic operations per weighted layer (0 for analog-fed ones), summed over the recording.

        ``spike_counts`` may hold a subset of the neurons (e.g. one layer during a search).
        """
        return self._tally(spike_counts)[0]

    def neuron_sops(self, spike_counts: Mapping[str, Tensor]) -> dict[str, float]:
        """Synaptic operations triggered by each neuron layer's spikes, summed over the recording."""
        return self._tally(spike_counts)[1]

    def spike_totals(self, spike_counts: Mapping[str, Tensor]) -> dict[str, float]:
        """Spikes per neuron layer (a burst of k counts k), summed over the recording."""
        return self._tally(spike_counts)[2]

    def neuron_costs(
        self, spike_counts: Mapping[str, Tensor], num_samples: int, *, metric: str = "sops",
    ) -> dict[str, float]:
        """Per-image cost of each neuron layer, for the φ/ρ searches (additive over layers).

        ``metric``: ``spikes`` (the released code's unit), ``sops`` (synaptic operations its
        spikes trigger) or ``energy`` (E_AC × SOPs, pJ). Returns one entry per neuron present in
        ``spike_counts`` (a subset is fine: profile one layer at a time).
        """
        if metric not in COST_METRICS:
            raise ConfigError(f"metric must be one of {COST_METRICS}, got {metric!r}")
        n = _check_samples(num_samples)
        _, sops, spikes = self._tally(spike_counts)
        if metric == "spikes":
            return {k: v / n for k, v in spikes.items()}
        scale = self.costs.e_ac_pj if metric == "energy" else 1.0
        return {k: scale * v / n for k, v in sops.items()}

    # ------------------------------------------------------------------ the estimate
    def estimate(self, spike_counts: Mapping[str, Tensor], num_samples: int, timesteps: float, *,
                 sequence: bool = False, input_events: Tensor | None = None) -> EnergyReport:
        """Energy per image from spike counts recorded over ``num_samples`` images.

        ``timesteps``: mean steps run per image (T, or the mean exit step under early exit);
        analog-fed layers run that often, except a constant input's prefix, which runs once.
        ``sequence``: the input changed every step (event frames), so nothing ran only once.
        ``input_events``: for an input that is a stream of events, the events per input position
        (per-sample shape) summed over the samples and the steps they ran; the layers fed by the
        input directly then run event-driven — E_AC per synapse an event reaches, kind ``"event"``
        — instead of dense MACs every step.
        """
        n = _check_samples(num_samples)
        t = _check_mean_timesteps(timesteps)
        layer_sops, neuron_sops, spikes = self._tally(spike_counts, complete=True)
        if input_events is not None:
            layer_sops.update(self.input_sops(input_events))
        e_mac, e_ac = self.costs.e_mac_pj, self.costs.e_ac_pj
        rows: list[LayerEnergy] = []
        mac_pj = ac_pj = 0.0
        for li in self.layers:
            kind = li.kind
            if li.kind == SPIKE or (li.input_fed and input_events is not None):
                kind = li.kind if li.kind == SPIKE else EVENT
                sops = layer_sops[li.name] / n
                runs, macs_img, energy = 0.0, 0.0, e_ac * sops
                ac_pj += energy
            else:
                sops = 0.0
                runs = self.runs_per_image(li, t, sequence=sequence)
                macs_img = li.macs * runs
                energy = e_mac * macs_img
                mac_pj += energy
            rows.append(LayerEnergy(name=li.name, kind=kind, op=li.op, macs=li.macs, runs_per_image=runs,
                                    macs_per_image=macs_img, sops_per_image=sops, energy_pj=energy,
                                    ann_energy_pj=e_mac * li.macs))
        neurons: list[NeuronActivity] = []
        total_neurons = 0
        for name, shape in self._analysis.neuron_shapes.items():
            size = math.prod(shape)
            total_neurons += size
            spk = spikes[name] / n
            neurons.append(NeuronActivity(name=name, num_neurons=size, spikes_per_image=spk,
                                          firing_rate=spk / (size * t) if size else 0.0,
                                          sops_per_image=neuron_sops[name] / n, energy_pj=e_ac * neuron_sops[name] / n))
        total_spikes = sum(r.spikes_per_image for r in neurons)
        return EnergyReport(
            costs=self.costs, num_samples=n, timesteps=t, sequence=bool(sequence), ann_macs=self.ann_macs,
            ann_energy_pj=self.ann_energy_pj, snn_energy_pj=mac_pj + ac_pj, mac_energy_pj=mac_pj,
            ac_energy_pj=ac_pj, sops_per_image=sum(r.sops_per_image for r in rows),
            spikes_per_image=total_spikes,
            firing_rate=total_spikes / (total_neurons * t) if total_neurons else 0.0,
            layers=tuple(rows), neurons=tuple(neurons),
        )

    def to_dict(self) -> dict[str, Any]:
        """The static structure (no tensors): layers, neuron shapes, costs."""
        return {
            "costs": self.costs.to_dict(),
            "constant_prefix": self.constant_prefix,
            "ann_macs": self.ann_macs,
            "other_macs": self.other_macs,
            "layers": [vars(li) | {"sources": list(li.sources)} for li in self.layers],
            "neurons": {k: list(v) for k, v in self._analysis.neuron_shapes.items()},
        }


def measure(snn: SpikingModel, x: Tensor, timesteps: int, *, sequence: bool = False, energy: EnergyModel | None = None,
            costs: CostTable | None = None, **run_kwargs: Any) -> tuple[Any, EnergyReport]:
    """Run ``snn`` for ``timesteps`` steps on ``x`` while counting spikes; return (per-step outputs, report).

    ``energy``: a prebuilt :class:`EnergyModel` (built from ``x`` if None — pass one when measuring
    many batches); ``costs`` overrides its cost table. ``run_kwargs`` go to :meth:`SpikingModel.run`.
    Counts recorded before the call are discarded (``record_activity`` starts from zero).
    """
    if energy is None:
        example = inputs.map_tensors(lambda t: t[0], x) if sequence else x
        energy = EnergyModel.build(snn, example, costs)
    elif costs is not None:
        energy = energy.with_costs(costs)
    with snn.record_activity():
        out = snn.run(x, timesteps, sequence=sequence, **run_kwargs)
        counts = snn.spike_counts()
    batch = inputs.batch_size(x, 1 if sequence else 0)
    return out, energy.estimate(counts, batch, timesteps, sequence=sequence)

"""Energy reports: frozen, JSON-serialisable records of one measurement (all figures per image)."""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields
from typing import Any

from adacal.energy.costs import CostTable
from adacal.errors import ConfigError

__all__ = ["LayerEnergy", "NeuronActivity", "EnergyReport"]


def _from_dict(cls: type, data: dict[str, Any], drop: tuple[str, ...] = ()) -> dict[str, Any]:
    data = {k: v for k, v in data.items() if k not in drop}
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown {cls.__name__} field(s) {unknown}; valid: {sorted(known)}")
    return data


@dataclass(frozen=True)
class LayerEnergy:
    """One weighted layer, per image.

    ``kind``: ``spike`` (energy = E_AC × ``sops_per_image``), ``event`` (fed by input events:
    E_AC × the synaptic events they trigger, ``sops_per_image``) or ``analog`` (energy = E_MAC ×
    ``macs_per_image`` = ``macs`` × ``runs_per_image``: 1 for a constant-input prefix, else the
    timesteps run). ``macs`` is the dense count for one forward pass (FLOPs / 2), the ANN's cost.
    """

    name: str
    kind: str
    op: str
    macs: int
    runs_per_image: float
    macs_per_image: float
    sops_per_image: float
    energy_pj: float
    ann_energy_pj: float

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> LayerEnergy:
        return cls(**_from_dict(cls, data))


@dataclass(frozen=True)
class NeuronActivity:
    """One neuron layer, per image: spikes (a burst of k counts k), firing rate, and the synaptic
    operations its spikes trigger downstream (``energy_pj`` = E_AC × ``sops_per_image``) — the
    cost the φ/ρ searches attribute to this layer's setting.

    ``firing_rate`` is spikes per neuron per timestep (can exceed 1 with bursts, φ > 1).
    """

    name: str
    num_neurons: int
    spikes_per_image: float
    firing_rate: float
    sops_per_image: float
    energy_pj: float

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> NeuronActivity:
        return cls(**_from_dict(cls, data))


@dataclass(frozen=True)
class EnergyReport:
    """E_SNN = E_MAC·MACs(analog-fed layers, as often as they run) + E_AC·Σ SOPs, per image.

    ``ann_energy_pj`` = E_MAC × ``ann_macs`` (every conv/linear once) is the reference;
    ``mac_energy_pj`` and ``ac_energy_pj`` split ``snn_energy_pj``. ``timesteps`` is the mean
    number of steps run per image (fractional under early exit).
    """

    costs: CostTable
    num_samples: int
    timesteps: float
    sequence: bool
    ann_macs: int
    ann_energy_pj: float
    snn_energy_pj: float
    mac_energy_pj: float
    ac_energy_pj: float
    sops_per_image: float
    spikes_per_image: float
    firing_rate: float
    layers: tuple[LayerEnergy, ...]
    neurons: tuple[NeuronActivity, ...]
    version: int = 1

    @property
    def energy_ratio(self) -> float:
        """SNN / ANN energy (0 when the ANN has no MACs)."""
        return self.snn_energy_pj / self.ann_energy_pj if self.ann_energy_pj > 0 else 0.0

    @property
    def saving(self) -> float:
        """1 − SNN / ANN energy: the fraction of the ANN's energy saved."""
        return 1.0 - self.energy_ratio

    def sops_by_layer(self) -> dict[str, float]:
        return {r.name: r.sops_per_image for r in self.layers}

    def spikes_by_neuron(self) -> dict[str, float]:
        return {r.name: r.spikes_per_image for r in self.neurons}

    def sops_by_neuron(self) -> dict[str, float]:
        return {r.name: r.sops_per_image for r in self.neurons}

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-ready dict; also carries the derived ``energy_ratio`` and ``saving``."""
        out = asdict(self)
        out["layers"] = [asdict(r) for r in self.layers]
        out["neurons"] = [asdict(r) for r in self.neurons]
        out["energy_ratio"] = self.energy_ratio
        out["saving"] = self.saving
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EnergyReport:
        """Inverse of :meth:`to_dict` (derived fields are recomputed, not read)."""
        d = _from_dict(cls, data, drop=("energy_ratio", "saving"))
        if d.get("version", 1) != 1:
            raise ConfigError(f"EnergyReport version {d['version']!r} is not supported (expected 1)")
        d["costs"] = CostTable.from_dict(d["costs"])
        d["layers"] = tuple(LayerEnergy.from_dict(r) for r in d["layers"])
        d["neurons"] = tuple(NeuronActivity.from_dict(r) for r in d["neurons"])
        return cls(**d)

    def summary(self) -> str:
        """A short human-readable table (for logs; the library never prints)."""
        lines = [
            f"energy per image ({self.costs.name}): SNN {self.snn_energy_pj / 1e6:.4g} uJ "
            f"(MAC {self.mac_energy_pj / 1e6:.4g}, AC {self.ac_energy_pj / 1e6:.4g}) vs ANN "
            f"{self.ann_energy_pj / 1e6:.4g} uJ -> ratio {self.energy_ratio:.3f}; T={self.timesteps:g}, "
            f"firing rate {self.firing_rate:.4f}",
            f"{'layer':<32} {'kind':<6} {'MACs/img':>12} {'SOPs/img':>12} {'pJ/img':>12}",
        ]
        for r in self.layers:
            lines.append(f"{r.name:<32} {r.kind:<6} {r.macs_per_image:>12.4g} {r.sops_per_image:>12.4g} "
                         f"{r.energy_pj:>12.4g}")
        return "\n".join(lines)

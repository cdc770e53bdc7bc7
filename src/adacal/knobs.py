"""Per-layer settings the search tunes, as data: a :class:`Knob` knows how to read and set itself on
a neuron, its candidates, what its search optimises under which budget, and how plots label it.

``φ`` (max spikes per step, AdaFire) minimises the summed sensitivity under an energy budget; ``ρ``
(threshold ratio, SSC) minimises energy under a sensitivity budget (method.md §6). Profiling,
search, records and the report handle any registered knob alike — a new knob is one class here
(plus the neuron attribute it sets) and :func:`register_knob`. Torch-free: the config and the
report import it.
"""
from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from adacal.checks import check_phi, check_rho, suggest
from adacal.errors import ConfigError

__all__ = ["KNOBS", "PHI", "RHO", "Checked", "Knob", "Phi", "Rho", "Selection", "excess_over", "get_knob",
           "register_knob"]


@dataclass(frozen=True)
class Selection:
    """What a knob's search picked: per-layer values, the budget it met and the record of its frontier."""

    choices: dict[str, Any]
    budget: float
    frontier: dict[str, Any]


@dataclass(frozen=True)
class Checked:
    """A configuration measured by the held-out check: per-layer ``choices``, measured ``energy``
    (pJ per input), ``score`` (the check metric: lower is closer to the ANN) and the profiled
    ``predicted`` (cost, score) totals of the search's additive model (None if not profiled)."""

    label: str
    choices: dict[str, Any]
    energy: float
    score: float
    predicted: tuple[float, float] | None = None
    details: dict[str, Any] | None = None


def _rank(c: Checked) -> tuple[float, float, float]:
    """Order of preference among configurations within the bound: score, divergence, energy."""
    return c.score, float((c.details or {}).get("divergence", 0.0)), c.energy


class Knob:
    """Base class: override the attributes and methods that differ.

    ``objective``: ``"score"`` — minimise summed sensitivity under a cost budget — or ``"cost"`` —
    minimise summed cost under a sensitivity budget.
    """

    name: str = ""
    symbol: str = ""
    label: str = ""
    objective: str = "score"
    integer: bool = False

    def get(self, neuron: Any) -> Any:
        raise NotImplementedError

    def set(self, neuron: Any, value: Any) -> None:
        raise NotImplementedError

    def check(self, value: Any) -> Any:
        return value

    def candidates(self, config: Any) -> tuple[Any, ...]:
        """The values profiled for every layer under a :class:`~adacal.config.PipelineConfig`."""
        raise NotImplementedError

    def reference(self, config: Any) -> Any:
        """The uniform value the budget is measured against (and the value of non-searched methods)."""
        raise NotImplementedError

    def resolve(self, at: Any, config: Any) -> Any:
        """A uniform value named in a recipe: ``"reference"``, ``"largest"``, ``"smallest"`` or a number."""
        if at == "reference":
            return self.reference(config)
        if at in ("largest", "smallest"):
            cands = self.candidates(config)
            return max(cands) if at == "largest" else min(cands)
        return self.check(at)

    def profile_thresholds(self, snn: Any, config: Any, batches: list[Any]) -> Mapping[str, Any] | None:
        """Thresholds each candidate is profiled at (None: the neurons' current ones)."""
        return None

    def budget(self, table: Mapping[str, Mapping[Any, tuple[float, float]]], config: Any) -> float:
        """The bound of the search: a cost (objective ``"score"``) or a score (``"cost"``)."""
        raise NotImplementedError

    def search_table(self, table: Mapping[str, Mapping[Any, tuple[float, float]]],
                     config: Any) -> Mapping[str, Mapping[Any, tuple[float, float]]]:
        """The ``{layer: {value: (cost, score)}}`` table the solver sees (default: as profiled)."""
        return table

    def select(self, table: Mapping[str, Mapping[Any, tuple[float, float]]], config: Any) -> Selection:
        """Run the exact Pareto search (method.md §6) on a profiled table."""
        from adacal.search import SearchTable, minimise_cost, minimise_score, pareto_front

        st = SearchTable.from_mapping(self.search_table(table, config))
        budget = self.budget(table, config)
        sel = minimise_score(st, budget) if self.objective == "score" else minimise_cost(st, budget)
        front = pareto_front(st, max_points=4000)
        frontier = {"cost": [float(c) for c in front.cost], "score": [float(s) for s in front.score],
                    "chosen": [float(sel.cost), float(sel.score)], "budget": float(budget),
                    "exact": bool(front.exact)}
        return Selection({k: self.check(v) for k, v in sel.choices.items()}, float(budget), frontier)

    # ------------------------------------------------------------------ the held-out check
    def budget_ladder(self, table: Mapping[str, Mapping[Any, tuple[float, float]]], config: Any) -> list[float]:
        """The search budgets whose Pareto picks the held-out check measures (default: the budget alone)."""
        return [self.budget(table, config)]

    def check_bound(self, reference: Checked, config: Any) -> float:
        """What a checked configuration must meet, from the uniform ``reference`` as measured:
        objective ``"score"`` — a measured energy (``energy_ratio`` × the reference's); ``"cost"`` —
        a measured score (the reference's, plus ``check_tolerance`` × its score)."""
        if self.objective == "score":
            return float(getattr(config, "energy_ratio", 1.0)) * reference.energy
        return reference.score * (1.0 + float(getattr(config, "check_tolerance", 0.0)))

    def feasible(self, c: Checked, bound: float) -> bool:
        value = c.energy if self.objective == "score" else c.score
        return value <= bound * (1 + 1e-9)

    def choose(self, measured: list[Checked], reference: Checked, config: Any) -> tuple[Checked, str]:
        """The configuration the check keeps and why: objective ``"score"`` — the lowest measured
        score within the measured energy bound (equal scores, as top-1 disagreement often gives:
        the lower held-out divergence, then the lower energy); ``"cost"`` — the lowest measured
        energy whose measured score is within the bound. Remaining ties go to the earlier (simpler)
        candidate."""
        from adacal.errors import BudgetError

        bound = self.check_bound(reference, config)
        ok = [c for c in measured if self.feasible(c, bound)]
        if not ok:
            least = min(measured, key=lambda c: c.energy)
            raise BudgetError(f"no {self.name} configuration meets the measured bound {bound:.6g} on the held-out "
                              f"check; the cheapest measured one ({least.label}) spends {least.energy:.6g} pJ — raise "
                              "energy_ratio")
        if self.objective == "score":
            best = min(ok, key=_rank)
            uniform = [c for c in ok if c.label.startswith("uniform")]
            base = min(uniform, key=_rank) if uniform else reference
            why = (f"lowest held-out score {best.score:.6g} among {len(ok)} of {len(measured)} configurations within "
                   f"the measured energy {bound:.6g} pJ ({getattr(config, 'energy_ratio', 1.0):g} × {reference.label});"
                   f" best uniform: {base.label} at {base.score:.6g}")
        else:
            best = min(ok, key=lambda c: (c.energy, c.score))
            why = (f"lowest measured energy {best.energy:.6g} pJ among {len(ok)} of {len(measured)} configurations "
                   f"whose held-out score is within {bound:.6g} ({reference.label} scores {reference.score:.6g}, "
                   f"tolerance {getattr(config, 'check_tolerance', 0.0):g})")
        return best, why


class Phi(Knob):
    name, symbol, label, objective, integer = "phi", "φ", "max spikes per step", "score", True

    def get(self, neuron: Any) -> int:
        return int(neuron.phi)

    def set(self, neuron: Any, value: Any) -> None:
        neuron.set_phi(self.check(value))

    def check(self, value: Any) -> int:
        return check_phi(value)

    def candidates(self, config: Any) -> tuple[int, ...]:
        return tuple(range(config.phi_min, 2 * config.phi_target + 1))

    def reference(self, config: Any) -> int:
        return int(config.phi_target)

    def profile_thresholds(self, snn: Any, config: Any, batches: list[Any]) -> Mapping[str, Any] | None:
        if config.phi_profile_thresholds != "per_candidate":
            return None  # the paper: every φ at the thresholds fitted for the largest φ
        from adacal.calibrate import thresholds_per_phi

        return thresholds_per_phi(snn, self.candidates(config), timesteps=config.timesteps,
                                  config=config.calibration, batches=batches)

    def budget(self, table: Mapping[str, Mapping[Any, tuple[float, float]]], config: Any) -> float:
        ref = self.reference(config)
        return config.energy_ratio * sum(row[ref][0] for row in table.values())


class Rho(Knob):
    name, symbol, label, objective, integer = "rho", "ρ", "threshold ratio", "cost", False

    def get(self, neuron: Any) -> float:
        return float(neuron.rho)

    def set(self, neuron: Any, value: Any) -> None:
        neuron.set_rho(self.check(value))

    def check(self, value: Any) -> float:
        return check_rho(value)

    def candidates(self, config: Any) -> tuple[float, ...]:
        return tuple(config.rho_candidates)

    def reference(self, config: Any) -> float:
        cands = self.candidates(config)
        return 1.0 if 1.0 in cands else min(cands)

    def _base(self, table: Mapping[str, Mapping[Any, tuple[float, float]]]) -> Any:
        first = next(iter(table.values()))
        return 1.0 if 1.0 in first else min(first)

    def search_table(self, table: Mapping[str, Mapping[Any, tuple[float, float]]],
                     config: Any) -> Mapping[str, Mapping[Any, tuple[float, float]]]:
        if config.sensitivity_budget == "sum":
            return table
        return excess_over(table, self._base(table))

    def budget_ladder(self, table: Mapping[str, Mapping[Any, tuple[float, float]]], config: Any) -> list[float]:
        """Sensitivity budgets from r = 1 (only compression predicted free) up to ``check_ratio``."""
        import dataclasses

        top = max(float(config.sensitivity_ratio), float(getattr(config, "check_ratio", 1.0)))
        rs = sorted({r for r in RHO_LADDER if r < top} | {top, float(config.sensitivity_ratio)})
        return [self.budget(table, dataclasses.replace(config, sensitivity_ratio=r)) for r in rs]

    def budget(self, table: Mapping[str, Mapping[Any, tuple[float, float]]], config: Any) -> float:
        base = self._base(table)
        if config.sensitivity_budget == "sum":  # the paper: Σ S_i(ρ_i) ≤ r·Σ S_i(1)
            return config.sensitivity_ratio * sum(row[base][1] for row in table.values())
        # only increases count: Σ max(0, S_i(ρ_i) − S_i(1)) ≤ (r − 1)·S, S the network's KL at ρ = 1
        network = sum(row[base][1] for row in table.values()) / len(table)
        return (config.sensitivity_ratio - 1.0) * network


#: The sensitivity ratios r whose ρ picks the held-out check measures (up to ``check_ratio``).
RHO_LADDER = (1.0, 1.25, 1.5, 2.0, 3.0, 5.0)


def excess_over(table: Mapping[str, Mapping[Any, tuple[float, float]]],
                base: Any) -> dict[str, dict[Any, tuple[float, float]]]:
    """``{layer: {v: (cost, max(0, score − score at base))}}``: sensitivity increases only."""
    return {layer: {v: (c, max(0.0, s - row[base][1])) for v, (c, s) in row.items()} for layer, row in table.items()}


KNOBS: dict[str, Knob] = {}


def register_knob(knob: Knob) -> Knob:
    """Make ``knob`` available to recipes, profiling, records and plots by its name."""
    if not knob.name or knob.name in KNOBS and type(KNOBS[knob.name]) is not type(knob):
        raise ConfigError(f"cannot register knob {knob.name!r}: empty or already taken")
    KNOBS[knob.name] = knob
    return knob


def get_knob(name: str | Knob) -> Knob:
    """The registered knob called ``name`` (a :class:`Knob` passes through)."""
    if isinstance(name, Knob):
        return name
    if name not in KNOBS:
        raise ConfigError(f"unknown knob {name!r}; registered: {sorted(KNOBS)}{suggest(str(name), KNOBS)}")
    return KNOBS[name]


PHI = register_knob(Phi())
RHO = register_knob(Rho())

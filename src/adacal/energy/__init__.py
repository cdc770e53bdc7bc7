"""Exact energy model of converted SNNs (method.md §4): E_SNN = E_MAC·MACs(analog-fed) + E_AC·ΣSOPs.

:class:`CostTable` names the per-operation energies; :class:`EnergyModel` analyses a converted
graph once (which layers see spikes, dense MACs, per-position fan-out maps) and turns recorded
spike counts into an :class:`EnergyReport`; :func:`measure` runs a simulation and does both.
"""
from __future__ import annotations

from adacal.energy.costs import COST_PRESETS, CostTable
from adacal.energy.graph import ANALOG, SPIKE, GraphAnalysis, LayerInfo, analyze_graph
from adacal.energy.model import COST_METRICS, EnergyModel, measure
from adacal.energy.report import EnergyReport, LayerEnergy, NeuronActivity

__all__ = ["ANALOG", "COST_METRICS", "COST_PRESETS", "SPIKE", "CostTable", "EnergyModel", "EnergyReport",
           "GraphAnalysis", "LayerEnergy", "LayerInfo", "NeuronActivity", "analyze_graph", "measure"]

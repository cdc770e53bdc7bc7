"""Conversion methods as data: a method is a named :class:`Recipe`, a sequence of stages.

:func:`adacal.pipeline.convert` runs the stages in order (method.md §8); each stage type has one
runner there. A new method made of existing stages is one entry in :data:`RECIPES` (or a call to
:func:`register_recipe` in user code); a new kind of stage is a class here and a runner in
:mod:`adacal.pipeline`. Torch-free, so the config module can validate method names.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from adacal.checks import suggest
from adacal.errors import ConfigError
from adacal.knobs import PHI, RHO

__all__ = ["Correction", "DEFAULT_METHOD", "RECIPES", "Recipe", "Search", "Thresholds", "Uniform", "WeightCalibration",
           "get_recipe", "register_recipe"]


@dataclass(frozen=True)
class Uniform:
    """Set ``knob`` to one value on every neuron: ``"reference"``, ``"largest"``, ``"smallest"`` or a number."""

    knob: str
    at: Any


@dataclass(frozen=True)
class Thresholds:
    """Calibrate thresholds for the neurons' current settings (``method`` overrides the config's)."""

    method: str | None = None


@dataclass(frozen=True)
class Search:
    """Profile every layer at every candidate of ``knob``, then pick per-layer values under its budget.

    ``then``: the stages that turn a pick into the network as it runs (threshold refit, bias
    correction). They run once on the pick, or — with ``PipelineConfig.check="holdout"`` — on every
    configuration the held-out check measures (uniform values and Pareto picks), and the check keeps
    the best one within the knob's budget (:meth:`adacal.knobs.Knob.choose`).
    """

    knob: str
    then: tuple[Any, ...] = ()


@dataclass(frozen=True)
class WeightCalibration:
    """Layer-wise weight calibration, when ``calibration.weight_calibration`` is on."""


@dataclass(frozen=True)
class Correction:
    """Bias (or potential) correction per ``calibration.correction``; ``fresh`` drops older corrections
    first (they were made for other thresholds)."""

    fresh: bool = False


Stage = Uniform | Thresholds | Search | WeightCalibration | Correction


@dataclass(frozen=True)
class Recipe:
    name: str
    stages: tuple[Stage, ...]
    description: str = ""


_CALIBRATED = (Thresholds(), WeightCalibration(), Correction())
_ADAFIRE = (Uniform(PHI.name, "largest"), Thresholds(), Search(PHI.name, then=_CALIBRATED))

RECIPES: dict[str, Recipe] = {}


def register_recipe(recipe: Recipe) -> Recipe:
    """Make ``recipe`` available by name to :func:`adacal.convert`, sweeps and the CLI."""
    if not recipe.name or not recipe.stages:
        raise ConfigError("a recipe needs a name and at least one stage")
    RECIPES[recipe.name] = recipe
    return recipe


def get_recipe(name: str) -> Recipe:
    if name not in RECIPES:
        raise ConfigError(f"unknown method {name!r}; choose one of {', '.join(RECIPES)}{suggest(name, RECIPES)}")
    return RECIPES[name]


for _recipe in (
    Recipe("plain", (Uniform(PHI.name, 1), Thresholds(method="max")),
           "max thresholds, φ = 1, no correction"),
    Recipe("calibration", (Uniform(PHI.name, 1), *_CALIBRATED),
           "SNN Calibration: φ = 1, MSE thresholds, bias correction"),
    Recipe("burstfire", (Uniform(PHI.name, "reference"), *_CALIBRATED),
           "every layer at φ_target, MSE thresholds, bias correction"),
    Recipe("adafire", _ADAFIRE,
           "φ per layer by the Pareto search under an energy budget, thresholds refit, bias correction"),
    Recipe("adafire+ssc", (*_ADAFIRE, Search(RHO.name, then=(Correction(fresh=True),))),
           "then ρ per layer (SSC) under a sensitivity budget, bias correction again"),
):
    register_recipe(_recipe)

#: The method :class:`~adacal.config.PipelineConfig` uses unless told otherwise.
DEFAULT_METHOD = "adafire+ssc"

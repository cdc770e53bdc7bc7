"""Frozen, validated configuration dataclasses (one source of truth for API, CLI and records)."""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from adacal.errors import ConfigError

__all__ = ["NeuronConfig", "ConversionConfig", "CalibrationConfig", "config_from_dict"]


@dataclass(frozen=True)
class NeuronConfig:
    """Initial neuron settings: φ (max spikes per step), ρ (threshold ratio), v_init (fraction of θ)."""

    phi: int = 1
    rho: float = 1.0
    v_init: float = 0.5
    version: int = 1

    def __post_init__(self) -> None:
        if isinstance(self.phi, bool) or int(self.phi) != self.phi or self.phi < 1:
            raise ConfigError(f"NeuronConfig.phi must be an integer >= 1, got {self.phi!r}")
        if not math.isfinite(self.rho) or self.rho < 1:
            raise ConfigError(f"NeuronConfig.rho must be >= 1, got {self.rho!r}")
        if not 0 <= self.v_init < 1:
            raise ConfigError(f"NeuronConfig.v_init must be in [0, 1), got {self.v_init!r}")


@dataclass(frozen=True)
class ConversionConfig:
    """How the ANN becomes an SNN.

    ``activations``: extra activation types/functions to treat as ReLU; ``analog``: qualified names
    of ops allowed to stay in floating point on the spiking path; ``leaf_modules``: submodule names
    fx must not trace into; ``check_rtol``: tolerance of the ANN-mode output check.
    """

    neuron: NeuronConfig = field(default_factory=NeuronConfig)
    activations: tuple[Any, ...] = ()
    analog: tuple[str, ...] = ()
    leaf_modules: tuple[str, ...] = ()
    check_rtol: float = 1e-4
    version: int = 1

    def __post_init__(self) -> None:
        if not self.check_rtol > 0:
            raise ConfigError(f"ConversionConfig.check_rtol must be > 0, got {self.check_rtol!r}")


_THRESHOLD_METHODS = ("max", "percentile", "mse")
_CORRECTIONS = ("none", "bias", "potential")
_GRANULARITY = ("layer", "channel")


@dataclass(frozen=True)
class CalibrationConfig:
    """Threshold calibration and correction (method.md §2-3).

    ``method``: ``max`` | ``percentile`` | ``mse`` (surrogate search over ``grid_size`` clip levels
    ``max·(1 − grid_step·i)``); ``granularity``: per ``layer`` or per output ``channel``;
    ``correction``: ``none`` | ``bias`` | ``potential``; ``weight_calibration`` runs the
    layer-wise weight optimisation ("advanced") before potential correction.
    """

    method: str = "mse"
    granularity: str = "layer"
    percentile: float = 99.99
    grid_size: int = 95
    grid_step: float = 0.01
    num_batches: int = 1
    correction: str = "bias"
    correction_batches: int = 1
    weight_calibration: bool = False
    weight_iters: int = 200
    weight_lr: float = 1e-4
    version: int = 1

    def __post_init__(self) -> None:
        if self.method not in _THRESHOLD_METHODS:
            raise ConfigError(f"CalibrationConfig.method must be one of {_THRESHOLD_METHODS}, got {self.method!r}")
        if self.granularity not in _GRANULARITY:
            raise ConfigError(
                f"CalibrationConfig.granularity must be one of {_GRANULARITY}, got {self.granularity!r}"
            )
        if self.correction not in _CORRECTIONS:
            raise ConfigError(f"CalibrationConfig.correction must be one of {_CORRECTIONS}, got {self.correction!r}")
        if not 0 < self.percentile <= 100:
            raise ConfigError(f"CalibrationConfig.percentile must be in (0, 100], got {self.percentile!r}")
        if self.grid_size < 1 or not 0 < self.grid_step * (self.grid_size - 1) < 1:
            raise ConfigError("CalibrationConfig grid must satisfy grid_size >= 1 and grid_step*(grid_size-1) < 1")
        for name in ("num_batches", "correction_batches", "weight_iters"):
            if getattr(self, name) < 1:
                raise ConfigError(f"CalibrationConfig.{name} must be >= 1, got {getattr(self, name)!r}")
        if not self.weight_lr > 0:
            raise ConfigError(f"CalibrationConfig.weight_lr must be > 0, got {self.weight_lr!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def config_from_dict(cls: type, data: dict[str, Any]) -> Any:
    """Build a config dataclass from a dict, rejecting unknown keys by name."""
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"unknown {cls.__name__} option(s) {unknown}; valid: {sorted(known)}")
    return cls(**data)

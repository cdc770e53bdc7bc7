"""Energy per operation: named, cited cost tables instead of inline 4.6 / 0.9 constants.

An SNN spends one accumulate (AC) per synaptic operation triggered by a spike and a
multiply-accumulate (MAC) per weight use of a layer fed with analog (real-valued) inputs; an ANN
spends a MAC per weight use everywhere. The presets are Horowitz's 45 nm figures (ISSCC 2014,
"Computing's energy problem"), a MAC being one multiply plus one add at the given precision.
"""
from __future__ import annotations

import math
import numbers
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from adacal.errors import ConfigError

__all__ = ["CostTable", "COST_PRESETS"]

_HOROWITZ = "Horowitz, 'Computing's energy problem', ISSCC 2014 (45 nm)"


def _check_energy(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError(f"CostTable.{name} must be a real number of picojoules, got {value!r}")
    value = float(value)
    if not math.isfinite(value) or value <= 0:
        raise ConfigError(f"CostTable.{name} must be finite and > 0 pJ, got {value!r}")
    return value


@dataclass(frozen=True)
class CostTable:
    """Energy of one MAC and one AC, in picojoules.

    ``name`` and ``source`` travel into every report so a number can always be traced back to the
    technology it assumes. Derive variants with :meth:`custom` or ``dataclasses.replace`` (both
    validate: values must be finite and > 0).

    Example:
        >>> CostTable.fp32_45nm().e_mac_pj
        4.6
        >>> CostTable.fp32_45nm().replace(e_ac_pj=0.5).e_ac_pj
        0.5
    """

    e_mac_pj: float
    e_ac_pj: float
    name: str = "custom"
    source: str = "user-supplied"
    version: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "e_mac_pj", _check_energy("e_mac_pj", self.e_mac_pj))
        object.__setattr__(self, "e_ac_pj", _check_energy("e_ac_pj", self.e_ac_pj))
        for name in ("name", "source"):
            if not isinstance(getattr(self, name), str):
                raise ConfigError(f"CostTable.{name} must be a string, got {getattr(self, name)!r}")
        if not self.name:
            raise ConfigError("CostTable.name must not be empty (it labels every report)")
        if self.version != 1:
            raise ConfigError(f"CostTable.version {self.version!r} is not supported (expected 1)")

    # ------------------------------------------------------------------ presets
    @classmethod
    def fp32_45nm(cls) -> CostTable:
        """32-bit float, 45 nm: MAC 4.6 pJ (mult 3.7 + add 0.9), AC 0.9 pJ — the paper's numbers."""
        return cls(4.6, 0.9, "fp32_45nm", _HOROWITZ + ": fp32 mult 3.7 pJ + add 0.9 pJ; AC = fp32 add")

    @classmethod
    def fp16_45nm(cls) -> CostTable:
        """16-bit float, 45 nm: MAC 1.5 pJ (mult 1.1 + add 0.4), AC 0.4 pJ."""
        return cls(1.5, 0.4, "fp16_45nm", _HOROWITZ + ": fp16 mult 1.1 pJ + add 0.4 pJ; AC = fp16 add")

    @classmethod
    def int32_45nm(cls) -> CostTable:
        """32-bit integer, 45 nm: MAC 3.2 pJ (mult 3.1 + add 0.1), AC 0.1 pJ."""
        return cls(3.2, 0.1, "int32_45nm", _HOROWITZ + ": int32 mult 3.1 pJ + add 0.1 pJ; AC = int32 add")

    @classmethod
    def int8_45nm(cls) -> CostTable:
        """8-bit integer, 45 nm: MAC 0.23 pJ (mult 0.2 + add 0.03), AC 0.03 pJ."""
        return cls(0.23, 0.03, "int8_45nm", _HOROWITZ + ": int8 mult 0.2 pJ + add 0.03 pJ; AC = int8 add")

    @classmethod
    def preset(cls, name: str) -> CostTable:
        """A preset by name (``fp32_45nm``, ``fp16_45nm``, ``int32_45nm``, ``int8_45nm``)."""
        if name not in COST_PRESETS:
            raise ConfigError(f"unknown cost preset {name!r}; choose one of {list(COST_PRESETS)}")
        table: CostTable = getattr(cls, name)()
        return table

    @classmethod
    def custom(
        cls, e_mac_pj: float, e_ac_pj: float, *, name: str = "custom", source: str = "user-supplied"
    ) -> CostTable:
        """Your own technology numbers (say where they come from in ``source``)."""
        return cls(e_mac_pj, e_ac_pj, name, source)

    def replace(self, **changes: Any) -> CostTable:
        """A validated copy with some fields changed (same as ``dataclasses.replace``)."""
        unknown = sorted(set(changes) - {f.name for f in fields(self)})
        if unknown:
            raise ConfigError(f"unknown CostTable field(s) {unknown}")
        return replace(self, **changes)

    # ------------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> CostTable:
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown CostTable option(s) {unknown}; valid: {sorted(known)}")
        return cls(**data)


COST_PRESETS: tuple[str, ...] = ("fp32_45nm", "fp16_45nm", "int32_45nm", "int8_45nm")

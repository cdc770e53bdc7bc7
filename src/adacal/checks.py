"""One place that validates user-given values (torch-free), so every entry point fails the same way.

Each check returns the normalised value or raises :class:`~adacal.errors.ConfigError` naming the
argument, what was given and what is expected — whether the value came from Python, YAML or a
command-line flag (strings, ``None``, NaN and booleans are caught here, not deep inside).
"""
from __future__ import annotations

import difflib
import math
import numbers
from collections.abc import Iterable
from typing import Any

from adacal.errors import ConfigError

__all__ = ["check_choice", "check_int", "check_number", "check_phi", "check_rho", "check_timesteps", "suggest"]


def suggest(word: str, choices: Iterable[str]) -> str:
    """``"; did you mean 'x'?"`` for the closest choice, or ``""``."""
    close = difflib.get_close_matches(str(word), [str(c) for c in choices], n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def check_int(name: str, value: Any, *, minimum: int | None = None, allow_none: bool = False) -> Any:
    """An integer (``4`` or ``4.0``, never ``True`` or ``"4"``) at least ``minimum``."""
    if value is None and allow_none:
        return None
    ok = isinstance(value, numbers.Integral) or (isinstance(value, float) and value.is_integer())
    if isinstance(value, bool) or not ok:
        raise ConfigError(f"{name} must be an integer{'' if minimum is None else f' >= {minimum}'}, got {value!r}")
    value = int(value)
    if minimum is not None and value < minimum:
        raise ConfigError(f"{name} must be an integer >= {minimum}, got {value!r}")
    return value


def check_number(name: str, value: Any, *, minimum: float | None = None, above: float | None = None,
                 below: float | None = None, allow_none: bool = False) -> Any:
    """A finite real number within the bounds (``minimum`` inclusive, ``above``/``below`` exclusive)."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not math.isfinite(float(value)):
        raise ConfigError(f"{name} must be a finite number, got {value!r}")
    v = float(value)
    if (minimum is not None and v < minimum) or (above is not None and v <= above) or (
            below is not None and v >= below):
        bounds = [f">= {minimum}" if minimum is not None else "", f"> {above}" if above is not None else "",
                  f"< {below}" if below is not None else ""]
        raise ConfigError(f"{name} must be {' and '.join(b for b in bounds if b)}, got {value!r}")
    return v


def check_choice(name: str, value: Any, choices: Iterable[str]) -> str:
    """One of ``choices``; the error suggests the closest one."""
    options = list(choices)
    if not isinstance(value, str) or value not in options:
        raise ConfigError(f"{name} must be one of {options}, got {value!r}{suggest(str(value), options)}")
    return value


def check_timesteps(timesteps: Any) -> int:
    """T ≥ 1, an integer."""
    return check_int("timesteps (T)", timesteps, minimum=1)


def check_phi(phi: Any) -> int:
    """φ (max spikes per step) ≥ 1, an integer."""
    return check_int("phi (max spikes per timestep)", phi, minimum=1)


def check_rho(rho: Any) -> float:
    """ρ (threshold ratio) ≥ 1, finite."""
    return check_number("rho (threshold ratio)", rho, minimum=1.0)

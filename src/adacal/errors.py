"""Exception hierarchy: every error adacal raises on bad input derives from :class:`AdacalError`.

Messages name the offending thing (layer, argument, file) and say how to fix it, so users never
have to read a stack trace from deep inside torch.
"""
from __future__ import annotations

import re

__all__ = ["AdacalError", "ConfigError", "DataError", "ShapeError", "TraceError", "UnsupportedLayerError",
           "CalibrationError", "ModelError", "BudgetError", "CheckpointError", "DistributedError", "first_line",
           "plain_text"]

#: Terminal colour/style escape codes (torch puts some in its error texts).
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")


def plain_text(text: str) -> str:
    """``text`` without terminal escape codes, so messages read the same in a log file as on a terminal."""
    return _ANSI.sub("", text)


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of an exception's text (plain, at most ``limit`` characters), to quote in a message."""
    return (plain_text(str(exc)).strip().splitlines() or [""])[0][:limit]


class AdacalError(Exception):
    """Root of all adacal errors; catch this to handle any adacal failure."""


class ConfigError(AdacalError, ValueError):
    """An invalid configuration value (T < 1, φ < 1, ρ < 1, an unknown option, ...)."""


class DataError(AdacalError, ValueError):
    """Unusable data: an empty loader, NaN/Inf values, a missing or malformed data file."""


class ShapeError(DataError):
    """An input tensor whose shape does not match what the model expects."""


class TraceError(AdacalError):
    """torch.fx could not trace the model; the message names the failing op."""


class UnsupportedLayerError(AdacalError):
    """One or more ops on the spiking path have no spiking equivalent (all are listed at once)."""


class ModelError(AdacalError):
    """The model itself misbehaves: its forward fails, it is not deterministic, its weights are not finite."""


class CalibrationError(AdacalError):
    """Calibration could not proceed (e.g. the converted model no longer matches the ANN)."""


class BudgetError(AdacalError, ValueError):
    """A search budget that no assignment can meet; the message names the smallest feasible one."""


class CheckpointError(AdacalError):
    """A missing, corrupt or mismatched checkpoint / saved SNN."""


class DistributedError(AdacalError):
    """A multi-process run cannot go on: a rank died or timed out, ranks disagree (model, data), or one
    rank failed and every rank stops with its message."""

"""adacal: ANN-to-SNN conversion with Adaptive Calibration."""
from __future__ import annotations

import logging

from adacal.errors import (
    AdacalError,
    BudgetError,
    CalibrationError,
    CheckpointError,
    ConfigError,
    DataError,
    ShapeError,
    TraceError,
    UnsupportedLayerError,
)

logging.getLogger("adacal").addHandler(logging.NullHandler())

__version__ = "0.1.0"

__all__ = [
    "AdacalError",
    "BudgetError",
    "CalibrationError",
    "CheckpointError",
    "ConfigError",
    "DataError",
    "ShapeError",
    "TraceError",
    "UnsupportedLayerError",
    "__version__",
]

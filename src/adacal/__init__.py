"""adacal: ANN-to-SNN conversion with Adaptive Calibration.

Public API (everything else is internal):
  conversion   prepare, SpikingModel, IFNeuron, ConversionConfig, NeuronConfig
  calibration  calibrate_thresholds, correct_bias, calibrate_weights, CalibrationConfig
  search       profile, SensitivityTable, SearchTable, pareto_front, minimise_score, minimise_cost
  pipeline     convert, PipelineConfig, METHODS
  evaluation   evaluate, fit_exit_policy, ExitPolicy, run_early_exit
  energy       EnergyModel, CostTable
  persistence  save_snn, load_snn
  interchange  export_nir, import_nir (extra adacal[nir])
"""
from __future__ import annotations

import logging

from adacal.calibrate import calibrate_thresholds, correct_bias
from adacal.calibrate.weights import calibrate_weights
from adacal.config import CalibrationConfig, ConversionConfig, NeuronConfig
from adacal.convert import prepare
from adacal.energy import CostTable, EnergyModel
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
from adacal.evaluate import evaluate, fit_exit_policy
from adacal.export import NIRExportError, NIRImportError, export_nir, import_nir
from adacal.iat import ExitPolicy
from adacal.iat.runtime import run_early_exit
from adacal.neurons import IFNeuron
from adacal.persist import load_snn, save_snn
from adacal.pipeline import METHODS, PipelineConfig, convert
from adacal.search import SearchTable, minimise_cost, minimise_score, pareto_front
from adacal.sensitivity import SensitivityTable, profile
from adacal.spiking_model import SpikingModel

logging.getLogger("adacal").addHandler(logging.NullHandler())

__version__ = "0.1.0"

__all__ = [
    "AdacalError",
    "BudgetError",
    "CalibrationConfig",
    "CalibrationError",
    "CheckpointError",
    "ConfigError",
    "ConversionConfig",
    "CostTable",
    "DataError",
    "EnergyModel",
    "ExitPolicy",
    "IFNeuron",
    "METHODS",
    "NIRExportError",
    "NIRImportError",
    "NeuronConfig",
    "PipelineConfig",
    "SearchTable",
    "SensitivityTable",
    "ShapeError",
    "SpikingModel",
    "TraceError",
    "UnsupportedLayerError",
    "__version__",
    "calibrate_thresholds",
    "calibrate_weights",
    "convert",
    "correct_bias",
    "evaluate",
    "export_nir",
    "fit_exit_policy",
    "import_nir",
    "load_snn",
    "minimise_cost",
    "minimise_score",
    "pareto_front",
    "prepare",
    "profile",
    "run_early_exit",
    "save_snn",
]

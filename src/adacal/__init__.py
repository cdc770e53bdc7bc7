"""adacal: ANN-to-SNN conversion with Adaptive Calibration.

Public API (everything else is internal):
  conversion   prepare, SpikingModel, IFNeuron, ConversionConfig, NeuronConfig
  calibration  calibrate_thresholds, correct_bias, calibrate_weights, CalibrationConfig
  search       profile, SensitivityTable, SearchTable, pareto_front, minimise_score, minimise_cost
  pipeline     convert, PipelineConfig, RECIPES (methods), Recipe, register_recipe
  knobs        KNOBS, Knob, register_knob
  tasks        Task, get_task, register_task
  evaluation   evaluate, evaluate_ann, fit_exit_policy, fit_risk_exit, ExitPolicy, run_early_exit
  energy       EnergyModel, CostTable
  persistence  save_snn, load_snn
  interchange  export_nir, import_nir (extra adacal[nir])
"""
from __future__ import annotations

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
from adacal.evaluate import evaluate, evaluate_ann, fit_exit_policy, fit_risk_exit
from adacal.export import NIRExportError, NIRImportError, export_nir, import_nir
from adacal.iat import ExitPolicy
from adacal.iat.runtime import run_early_exit
from adacal.knobs import KNOBS, Knob, register_knob
from adacal.logs import install_fallback
from adacal.neurons import IFNeuron
from adacal.persist import load_snn, save_snn
from adacal.pipeline import PipelineConfig, convert
from adacal.recipes import RECIPES, Recipe, register_recipe
from adacal.search import SearchTable, minimise_cost, minimise_score, pareto_front
from adacal.sensitivity import SensitivityTable, profile
from adacal.spiking_model import SpikingModel
from adacal.tasks import Task, get_task, register_task

install_fallback()  # warnings reach users who configured no logging; steps aside once they do (adacal.logs)

__version__ = "0.1.0"

__all__ = ["AdacalError", "BudgetError", "CalibrationConfig", "CalibrationError", "CheckpointError", "ConfigError",
           "ConversionConfig", "CostTable", "DataError", "EnergyModel", "ExitPolicy", "IFNeuron", "KNOBS", "Knob",
           "NIRExportError", "NIRImportError", "RECIPES", "Recipe", "NeuronConfig", "PipelineConfig", "SearchTable",
           "SensitivityTable", "ShapeError", "SpikingModel", "Task", "TraceError", "UnsupportedLayerError",
           "__version__", "calibrate_thresholds", "calibrate_weights", "convert", "correct_bias", "evaluate",
           "evaluate_ann", "export_nir", "fit_exit_policy", "fit_risk_exit", "get_task", "import_nir", "load_snn",
           "minimise_cost", "minimise_score", "pareto_front", "prepare", "profile", "register_knob", "register_recipe",
           "register_task", "run_early_exit", "save_snn"]

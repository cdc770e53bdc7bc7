"""Input-aware Adaptive Timesteps (IAT): per-input early exit with per-step thresholds (seed eq. 15).

:class:`ExitPolicy` and :func:`exit_mask` define when an input stops; :mod:`adacal.iat.offline`
replays a policy on recorded per-step outputs to measure accuracy and mean timesteps.
"""
from __future__ import annotations

from adacal.iat.offline import ExitResult, evaluate_exits, fixed_T_accuracy, sweep_alpha_base
from adacal.iat.policy import (
    ACCUMULATE_MODES,
    DENSE_CORRECT_PIXEL_ACCURACY,
    ENTROPY_SAMPLES,
    REDUCTIONS,
    SCORE_KINDS,
    ExitPolicy,
    ExitStatistics,
    exit_mask,
    normalized_entropy,
    scores,
)
from adacal.iat.risk import RiskCalibration, calibrate_exit, oracle_exit_steps

__all__ = ["ACCUMULATE_MODES", "DENSE_CORRECT_PIXEL_ACCURACY", "ENTROPY_SAMPLES", "REDUCTIONS", "SCORE_KINDS",
           "ExitPolicy", "ExitResult", "ExitStatistics", "RiskCalibration", "calibrate_exit", "evaluate_exits",
           "exit_mask", "fixed_T_accuracy", "normalized_entropy", "oracle_exit_steps", "scores", "sweep_alpha_base"]

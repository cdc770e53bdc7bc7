"""Calibration: thresholds, bias/potential correction and layer-wise weight calibration."""
from adacal.calibrate.correction import correct_bias
from adacal.calibrate.presented import calibrate_thresholds_presented
from adacal.calibrate.thresholds import calibrate_thresholds, thresholds_per_phi

__all__ = ["calibrate_thresholds", "calibrate_thresholds_presented", "correct_bias", "thresholds_per_phi"]

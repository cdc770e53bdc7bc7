"""Held-out training data in jobs: disjoint from calibration, used by the checks and the certified exit rule."""
from __future__ import annotations

from pathlib import Path

import pytest
import torch

from adacal.config import DataSpec, JobConfig, ModelSpec, PipelineConfig, SweepConfig
from adacal.errors import ConfigError
from adacal.jobs import held_out_data, load_data, sweep_to_folder

pytestmark = pytest.mark.usefixtures("single_thread")


def _inputs(loader) -> torch.Tensor:
    return torch.cat([x for x, _ in loader])


def test_holdout_is_disjoint_and_leaves_the_calibration_images_unchanged() -> None:
    with_h = load_data(DataSpec("digits", calib_size=64, holdout_size=100, batch_size=50))
    without = load_data(DataSpec("digits", calib_size=64, batch_size=50))
    calib, held = _inputs(with_h.calib), _inputs(with_h.holdout)
    assert torch.equal(calib, _inputs(without.calib)) and without.holdout is None
    assert held.shape[0] == 100
    same = (held[:, None] == calib[None]).flatten(2).all(2)
    assert not same.any()  # no held-out image is a calibration image
    test = _inputs(with_h.test)
    assert not (held[:, None] == test[None]).flatten(2).all(2).any()  # nor a test image
    with pytest.raises(ConfigError, match="lower data.holdout_size"):
        load_data(DataSpec("digits", calib_size=64, holdout_size=100_000))


def test_held_out_data_falls_back_to_the_unused_calibration_batches() -> None:
    data = load_data(DataSpec("digits", calib_size=96, calib_batch_size=32))
    rest = _inputs(held_out_data(data, PipelineConfig()))  # calibration uses 1 batch
    assert torch.equal(rest, _inputs(data.calib)[32:])
    assert torch.equal(_inputs(held_out_data(data, PipelineConfig())), rest)  # a fresh pass each time


def test_sweep_with_the_certified_exit_rule(tmp_path: Path) -> None:
    job = JobConfig(model=ModelSpec("digits_cnn"), data=DataSpec("digits", calib_size=64, holdout_size=256,
                                                                 batch_size=64, test_size=64),
                    pipeline=PipelineConfig(timesteps=2, phi_target=2),
                    sweep=SweepConfig(methods=("burstfire",), timesteps=(2,), iat_method="burstfire",
                                      exit_rule="risk", exit_epsilon=5.0, exit_curve=(5.0, 50.0)),
                    report=False, threads=1)
    results = sweep_to_folder(job, tmp_path)
    iat = next(r for r in results["runs"] if r["iat"])
    cert = iat["iat_policy"]["certificate"]
    assert cert["n"] == 256 and cert["epsilon"] == pytest.approx(0.05) and cert["loss"] == "error"
    assert [p["epsilon"] for p in iat["iat_curve"]] == [5.0, 50.0]
    assert sum(iat["exit_histogram"]) == 64 and 1 <= iat["mean_timesteps"] <= 2
    # a larger tolerated drop never certifies a more cautious rule
    assert iat["iat_curve"][1]["mean_timesteps"] <= iat["iat_curve"][0]["mean_timesteps"]

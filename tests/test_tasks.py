"""A task defined here, inside the test, runs through evaluate → sweep → report with no library edit."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, TensorDataset
from torchmetrics import MeanSquaredError

from adacal import evaluate, get_task, register_task
from adacal.config import JobConfig, PipelineConfig, SweepConfig
from adacal.datasets import DatasetInfo
from adacal.errors import ConfigError, ShapeError
from adacal.jobs import Data, run_sweep
from adacal.report import format_table, write_report
from adacal.results import new_results
from adacal.tasks import TASKS, MetricSet, Task
from adacal.training import train_model

pytestmark = pytest.mark.usefixtures("single_thread")


class _Squeezed(MeanSquaredError):
    def update(self, preds: Tensor, target: Tensor) -> None:  # type: ignore[override]
        super().update(preds.squeeze(1), target)


class Regression(Task):
    """One continuous value per sample: mean squared error, no classes, no early exit."""

    name = "test_regression"
    headline = "mse"
    labels = {"mse": "mean squared error"}
    higher_is_better = False
    per_step = True
    supports_exit = False

    def check_outputs(self, outputs: Any, what: str = "model") -> None:
        if not isinstance(outputs, Tensor) or outputs.dim() != 2 or outputs.shape[1] != 1:
            raise ShapeError(f"{what} must output [B, 1] for regression")

    def metrics(self) -> MetricSet:
        return MetricSet({"mse": _Squeezed()})

    def loss(self, outputs: Tensor, target: Tensor, **_: Any) -> Tensor:
        return F.mse_loss(outputs.squeeze(1), target)

    def divergence(self, ann: Tensor, snn: Tensor) -> Tensor:
        return (ann - snn).pow(2).mean()


@pytest.fixture
def regression() -> Any:
    register_task(Regression)
    torch.manual_seed(0)
    x = torch.randn(512, 8)
    y = torch.relu(x @ torch.linspace(-1, 1, 8)) + 0.5 * torch.relu(x[:, 0])
    ds = TensorDataset(x, y)
    train, calib, test = ds, TensorDataset(x[:128], y[:128]), TensorDataset(x[384:], y[384:])
    task = get_task("test_regression")
    model = nn.Sequential(nn.Linear(8, 32), nn.ReLU(), nn.Linear(32, 32), nn.ReLU(), nn.Linear(32, 1))
    train_model(model, DataLoader(train, 64, shuffle=True), task=task, epochs=15, lr=0.05)
    data = Data(spec=JobConfig().data, info=DatasetInfo("synthetic", 1, (8,), task=task.name), task=task,
                train_set=train, calib=DataLoader(calib, 64), test=DataLoader(test, 64))
    yield model.eval(), data
    TASKS.pop(Regression.name)


def test_evaluate_uses_the_task_metric(regression: Any) -> None:
    from adacal import convert

    model, data = regression
    snn, _ = convert(model, data.calib, config=PipelineConfig(method="burstfire", timesteps=16, phi_target=4))
    res = evaluate(snn, data.test, timesteps=16, task=data.task)
    assert set(res["metrics"]) == {"mse"} and res["mse"] >= 0
    assert len(res["metrics_per_step"]["mse"]) == 16
    with torch.no_grad():
        x, y = data.test.dataset.tensors
        ann_mse = float(F.mse_loss(model(x).squeeze(1), y))
    assert res["mse"] < 4 * ann_mse + 0.05  # the SNN tracks the ANN at T=16
    assert res["metrics_per_step"]["mse"][-1] < res["metrics_per_step"]["mse"][0]


def test_sweep_and_report_lead_with_the_task_metric(regression: Any, tmp_path: Path) -> None:
    model, data = regression
    job = JobConfig(sweep=SweepConfig(methods=("calibration", "adafire"), timesteps=(2, 8)),
                    pipeline=PipelineConfig(phi_target=2, rho_candidates=(1.0, 2.0)))
    results = new_results("sweep", task=data.task.describe(), model={"name": "mlp"}, settings={})
    run_sweep(model, data, job, results=results)
    assert [r["name"] for r in results["runs"]] == ["calibration@T2", "adafire@T2", "calibration@T8", "adafire@T8"]
    assert all(set(r["metrics"]) == {"mse"} for r in results["runs"])
    assert set(results["ann"]["metrics"]) == {"mse"}
    assert results["runs"][1]["conversion"]["sensitivity"]["phi"]  # profiled with the task's divergence
    table = format_table(results)
    assert "mean squared error" in table.splitlines()[0]
    written = write_report(results, tmp_path)
    assert {"metric_vs_timesteps", "metric_vs_energy"} <= set(written)
    assert "mean squared error" in written["report_md"].read_text()


def test_unknown_task_suggests_the_closest() -> None:
    with pytest.raises(ConfigError, match="did you mean 'classification'"):
        get_task("clasification")

"""PointNet models, T-Nets through conversion and the energy model, and both point-cloud tasks end to
end (train → convert → evaluate with IAT → report) on tiny synthetic data in the official layouts."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from adacal.cli import main
from adacal.config import ConversionConfig, DataSpec, JobConfig, ModelSpec, PipelineConfig, SweepConfig, TrainSpec
from adacal.convert import prepare
from adacal.energy import EnergyModel
from adacal.errors import ConfigError, UnsupportedLayerError
from adacal.jobs import sweep_to_folder
from adacal.models import build_model
from adacal.models.pointnet import FEATURE_TRANSFORM_WEIGHT, feature_transform_ops
from adacal.neurons import SpikingMaxOver
from adacal.tasks import get_task

pytestmark = pytest.mark.usefixtures("single_thread")


def _warm(model: torch.nn.Module, *x: torch.Tensor) -> torch.nn.Module:
    """A few train-mode passes give the BatchNorms real statistics; then eval mode."""
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(*x)
    return model.eval()


def _points(b: int = 4, n: int = 32, seed: int = 0) -> torch.Tensor:
    return torch.randn(b, 3, n, generator=torch.Generator().manual_seed(seed))


def test_models_shapes_and_options() -> None:
    cls = build_model("pointnet_cls", 10, width=0.125)
    seg = build_model("pointnet_seg", 50, width=0.125, in_channels=6)
    x = _points()
    onehot = F.one_hot(torch.tensor([0, 2, 2, 15]), 16).float()
    assert _warm(cls, x)(x).shape == (4, 10)
    x6 = torch.randn(4, 6, 32)
    assert _warm(seg, x6, onehot)(x6, onehot).shape == (4, 50, 32)
    full = build_model("pointnet_cls", 40)
    assert full.encoder.second[-1][0].out_channels == 1024  # width 1: the paper's global feature
    with pytest.raises(ConfigError, match="width"):
        build_model("pointnet_cls", 10, width=0)
    with pytest.raises(ConfigError, match="in_channels"):
        build_model("pointnet_seg", 50, in_channels=2)


def test_segmentation_head_converts_spike_fed() -> None:
    """The global max moves in front of its neuron; the head's first layer sees spikes only (the
    category enters as a bias), so it costs accumulates, not MACs."""
    torch.manual_seed(0)
    seg = build_model("pointnet_seg", 50, width=0.125)
    x, onehot = _points(), F.one_hot(torch.tensor([2, 2, 0, 1]), 16).float()
    _warm(seg, x, onehot)
    snn = prepare(seg, (x, onehot))
    assert any(isinstance(m, SpikingMaxOver) for m in snn.modules())
    torch.testing.assert_close(snn.ann_forward((x, onehot)), seg(x, onehot))
    kinds = {li.name: li.kind for li in EnergyModel.build(snn, (x, onehot)).layers}
    assert kinds["head_in"] == "spike" and kinds["category_bias"] == "analog"


def test_input_transform_converts_and_feature_transform_needs_analog() -> None:
    torch.manual_seed(0)
    x = _points()
    only_input = _warm(build_model("pointnet_cls", 5, width=0.125, input_transform=True), x)
    assert feature_transform_ops(only_input) == ()
    snn = prepare(only_input, x)  # points (a constant input) times a spike-driven matrix: linear in spikes
    torch.testing.assert_close(snn.ann_forward(x), only_input(x))

    both = _warm(build_model("pointnet_cls", 5, width=0.125, input_transform=True, feature_transform=True), x)
    ops = feature_transform_ops(both)
    assert ops == ("bmm_1",)
    with pytest.raises(UnsupportedLayerError, match="bmm_1.*multiplies two spiking tensors"):
        prepare(both, x)
    snn = prepare(both, x, config=ConversionConfig(analog=ops))
    torch.testing.assert_close(snn.ann_forward(x), both(x))
    # the product stays in floating point and is priced as its MACs every step
    energy = EnergyModel.build(snn, x)
    layer = energy.layer("bmm_1")
    k = both.encoder.first[-1][0].out_channels
    assert layer.kind == "analog" and layer.op == "bmm" and layer.macs == 32 * k * k
    with snn.record_activity():
        snn.run(x, 4)
        report = energy.estimate(snn.spike_counts(), 4, 4)
    row = next(r for r in report.layers if r.name == "bmm_1")
    assert row.macs_per_image == 4 * layer.macs and row.energy_pj == pytest.approx(4.6 * 4 * layer.macs)


def test_feature_transform_penalty_is_added_to_the_loss_in_training() -> None:
    torch.manual_seed(0)
    model = build_model("pointnet_cls", 5, width=0.125, feature_transform=True).train()
    x, y = _points(), torch.tensor([0, 1, 2, 3])
    logits, penalty = model(x)
    assert penalty.dim() == 0 and float(penalty.detach()) >= 0
    task = get_task("pointcloud_classification", num_classes=5)
    expected = F.cross_entropy(logits, y) + FEATURE_TRANSFORM_WEIGHT * penalty
    torch.testing.assert_close(task.loss((logits, penalty), y), expected)
    assert model.eval()(x).shape == (4, 5)  # eval mode: the logits only


# ------------------------------------------------------------------------------------------ end to end
def _shapenet_npz(root: Path) -> None:
    """Tiny Cap-like shapes: the peak (part 7) is the points with z > 0.3."""
    g = np.random.default_rng(0)
    for split, shapes in (("val", 6), ("test", 4)):
        sizes = [int(v) for v in g.integers(40, 60, shapes)]
        pts = g.normal(size=(sum(sizes), 3)).astype(np.float32)
        parts = np.where(pts[:, 2] > 0.3, 7, 6)
        np.savez(root / f"{split}.npz", points=pts, normals=pts, part_labels=parts,
                 offsets=np.cumsum((0, *sizes)), category=np.array("Cap"))


def test_part_segmentation_end_to_end_with_iat_and_pictures(tmp_path: Path) -> None:
    _shapenet_npz(tmp_path)
    job = JobConfig(task=None, model=ModelSpec("pointnet_seg", options={"width": 0.125}),
                    data=DataSpec("shapenetpart", data_dir=str(tmp_path), calib_size=4, batch_size=4,
                                  options={"num_points": 32}),
                    train=TrainSpec(epochs=2, batch_size=3, lr=0.05),
                    pipeline=PipelineConfig(phi_target=2, profile_batch=4),
                    sweep=SweepConfig(methods=("calibration", "adafire"), timesteps=(4,), iat=True,
                                      iat_method="adafire", iat_curve=(0.6,)), report=False)
    results = sweep_to_folder(job, tmp_path / "out", train=True)
    assert results["task"]["name"] == "part_segmentation" and results["task"]["headline"] == "instance_miou"
    assert [r["name"] for r in results["runs"]] == ["calibration@T4", "adafire@T4", "adafire+iat@T4"]
    assert results["runs"][1]["conversion"]["sensitivity"]["phi"]  # profiled with the task's divergence
    for run in results["runs"]:
        assert set(run["metrics"]) == {"instance_miou", "class_miou", "accuracy"}
        assert 0 <= run["metrics"]["instance_miou"] <= 100
    assert results["runs"][0]["metrics"]["class_miou"] == pytest.approx(results["runs"][0]["metrics"]["instance_miou"])
    iat = results["runs"][2]
    assert sum(iat["exit_histogram"]) == 4 and 1 <= iat["mean_timesteps"] <= 4
    assert len(results["runs"][0]["metrics_per_step"]["instance_miou"]) == 4
    figures = get_task("part_segmentation", **results["task"]["info"]).figures(results, tmp_path / "out")
    path, caption = figures["part_examples"]  # what the report shows: ground truth beside the SNN's parts
    assert path.read_bytes()[:4] == b"\x89PNG" and "adafire@T4" in caption


def test_classification_cli_train_and_sweep(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    g = np.random.default_rng(0)
    data = tmp_path / "modelnet10"
    data.mkdir()
    for split, n in (("train", 20), ("test", 10)):
        labels = np.arange(n) % 2
        pts = g.normal(size=(n, 32, 3)).astype(np.float32) * np.where(labels, 1.0, 3.0)[:, None, None] * [1, 1, 0.2]
        np.savez(data / f"{split}.npz", points=pts, labels=labels)
    common = ["--config", "pointnet_modelnet10", "--data-dir", str(data), "--set", "model.options.width=0.125",
              "--set", "data.options.num_points=32", "--calib-size", "8", "--batch-size", "10"]
    assert main(["train", *common, "--epochs", "2", "--out", str(tmp_path / "train")]) == 0
    assert (tmp_path / "train" / "model.pt").is_file()
    assert main(["sweep", *common, "--weights", str(tmp_path / "train" / "model.pt"), "--timesteps", "2",
                 "--methods", "calibration", "--no-iat", "--no-report", "--out", str(tmp_path / "sweep")]) == 0
    summary = json.loads((tmp_path / "sweep" / "summary.json").read_text())
    assert summary["task"]["name"] == "pointcloud_classification"
    assert set(summary["runs"][0]["metrics"]) == {"accuracy", "class_accuracy"}
    assert "class-mean accuracy" not in capsys.readouterr().err


def test_saved_snn_with_two_inputs_and_an_analog_product_loads_back(tmp_path: Path) -> None:
    """load_snn re-converts with the recorded analog ops and accepts a tuple example input."""
    from adacal import convert
    from adacal.persist import load_snn, save_snn

    torch.manual_seed(0)
    x, onehot = _points(), F.one_hot(torch.tensor([2, 2, 0, 1]), 16).float()
    seg = _warm(build_model("pointnet_seg", 50, width=0.125, feature_transform=True), x, onehot)
    cfg = PipelineConfig(method="calibration", timesteps=4,
                         conversion=ConversionConfig(analog=feature_transform_ops(seg)))
    snn, record = convert(seg, [((x, onehot), None)], config=cfg)
    save_snn(snn, record, tmp_path)
    again, _ = load_snn(seg, tmp_path, (x, onehot))
    torch.testing.assert_close(again.run((x, onehot), 4), snn.run((x, onehot), 4))

"""Detectors become SNNs: the split into a spiking part and a floating-point decoder, conversion
with folded (Frozen)BatchNorm, IAT on decoded running averages, priced analog work, the one-command
sweep, and torchvision's RetinaNet, FCOS, SSD300 and Faster R-CNN (random weights, small images)."""
from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision
from PIL import Image
from torch import nn

from adacal.cli import main
from adacal.config import PipelineConfig
from adacal.convert import prepare
from adacal.detection.parts import convert_detector, detector_parts
from adacal.detection.torchvision_models import freeze_batchnorm
from adacal.errors import ConfigError
from adacal.evaluate import evaluate, fit_exit_policy
from adacal.models import build_model
from adacal.tasks import get_task

pytestmark = pytest.mark.usefixtures("single_thread")
TVD = torchvision.models.detection
ANN_ATOL = 1e-3  # ANN mode vs the original: BN folding reorders float32 sums over ResNet-50 depth


def _detection_batches(n: int, size: tuple[int, int], seed: int) -> list[tuple[torch.Tensor, dict]]:
    g = torch.Generator().manual_seed(seed)
    out = []
    for _ in range(n):
        x = torch.randn(2, 3, *size, generator=g)
        boxes = torch.tensor([[[4.0, 4.0, 20.0, 20.0], [0, 0, 0, 0]]] * 2)
        out.append((x, {"boxes": boxes, "labels": torch.tensor([[1, -1]] * 2)}))
    return out


def _frozen(model: nn.Module, warm_bn, shape: tuple[int, ...]) -> nn.Module:
    """Running statistics from train-mode passes, then FrozenBatchNorm2d (as trained torchvision detectors)."""
    warm_bn(model, [torch.randn(2, *shape, generator=torch.Generator().manual_seed(i)) for i in range(2)])
    return freeze_batchnorm(model)


def test_fcos_lite_converts_and_runs_iat_with_priced_postprocessing(warm_bn) -> None:
    torch.manual_seed(0)
    ann = warm_bn(build_model("fcos_lite", 3, width=8, fpn=16, tower=1),
                  [torch.randn(2, 3, 64, 64) for _ in range(2)]).eval()
    data = _detection_batches(2, (64, 64), 1)
    snn, record = convert_detector(ann, data, config=PipelineConfig(method="adafire+ssc", timesteps=4, phi_target=2,
                                                                   rho_candidates=(1.0, 2.0), profile_batch=2),
                                   input_fn=lambda b: b[0])
    assert record["detector"]["decoder"]["decoder"] == "fcos" and "pre-processing" in record["detector"]["analog"][0]
    assert record["sensitivity"]["phi"]  # profiled with the decoder's divergence
    task = get_task("detection", num_classes=3)
    task.bind_model(snn)  # the SNN carries the decoder
    fixed = evaluate(snn, data, timesteps=4, task=task)
    outside = {r["name"]: r for r in fixed["energy"]["layers"] if r["kind"] == "analog" and r["op"] == "outside"}
    assert set(outside) == {"outside.preprocess", "outside.scores", "outside.box_decode", "outside.nms"}
    assert all(r["runs_per_image"] == 1.0 for r in outside.values())
    priced = sum(r["energy_pj"] for r in outside.values())
    assert fixed["energy"]["snn_energy_pj"] > priced > 0
    assert 0 <= fixed["map_50"] <= 100 and "ap_per_class" in fixed["metrics"]
    policy = fit_exit_policy(snn, data, timesteps=4, task=task, alpha_base=0.0)
    assert policy.accumulate == "mean"  # the task decodes running averages
    early = evaluate(snn, data, timesteps=4, task=task, exit_policy=policy)
    assert sum(early["exit_histogram"]) == 4
    post = [r for r in early["energy"]["layers"] if r["name"] == "outside.nms"][0]
    assert post["runs_per_image"] == pytest.approx(early["mean_timesteps"])  # decoded at every step run


def test_detector_parts_errors_name_the_fix() -> None:
    with pytest.raises(ConfigError, match="cannot find the spiking part of Sequential"):
        detector_parts(nn.Sequential(nn.Conv2d(3, 3, 1)))
    with pytest.raises(ConfigError, match="has no decoder"):
        detector_parts(nn.Sequential(nn.Conv2d(3, 3, 1)), spiking="0")


def _jpeg(seed: int) -> bytes:
    arr = np.random.default_rng(seed).integers(0, 255, (48, 64, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG")
    return buf.getvalue()


def test_one_command_sweep_on_a_detection_folder(tmp_path: Path) -> None:
    """`adacal sweep` on a detection dataset: mAP, energy, IAT and box pictures, with no library edit."""
    for split, n in (("train", 4), ("test", 2)):
        blobs = [_jpeg(i) for i in range(n)]
        np.savez(tmp_path / f"{split}.npz", jpeg_bytes=np.frombuffer(b"".join(blobs), dtype=np.uint8),
                 offsets=np.cumsum([0] + [len(b) for b in blobs]), boxes=np.array([[5, 5, 30, 30]] * n, np.float32),
                 box_offsets=np.arange(n + 1), box_labels=np.zeros(n, np.int64))
    out = tmp_path / "run"
    rc = main(["sweep", "--dataset", "raccoon", "--data-dir", str(tmp_path), "--model", "fcos_lite",
               "--set", "model.options={width: 4, fpn: 8, tower: 1}", "--set", "data.options={image_size: 64}",
               "--calib-size", "2", "--batch-size", "2", "--set", "sweep.timesteps=[2]",
               "--set", "sweep.methods=[calibration, adafire+ssc]", "--set", "pipeline.rho_candidates=[1.0, 2.0]",
               "--set", "pipeline.profile_batch=2", "--set", "sweep.iat_curve=[]", "--out", str(out), "-q"])
    assert rc == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["task"]["name"] == "detection" and "analog" in summary["task"]["info"]
    assert [r["name"] for r in summary["runs"]] == ["calibration@T2", "adafire+ssc@T2", "adafire+ssc+iat@T2"]
    assert all({"map_50", "map"} <= set(r["metrics"]) for r in summary["runs"])
    assert any(layer["name"].startswith("outside.") for layer in summary["runs"][0]["layers"])
    assert (out / "detections.png").is_file()


# ------------------------------------------------------------------------------------- torchvision
def _check_single_stage(det: nn.Module, size: int, *, spiking_head: bool, images: int = 2) -> None:
    det.eval()
    det.score_thresh = 0.0  # random weights: keep candidates so the comparison has boxes
    det.transform.min_size, det.transform.max_size = (size,), size
    if hasattr(det.transform, "fixed_size") and det.transform.fixed_size:
        det.transform.fixed_size = (size, size)
    parts = detector_parts(det, input_size=(size, size))
    imgs = [torch.rand(3, size, size, generator=torch.Generator().manual_seed(i)) for i in range(images)]
    with torch.no_grad():
        ref = det(imgs)
        x = det.transform(imgs)[0].tensors  # normalised: the data loader's part
        ours = parts.decoder.detections(parts.spiking(x))
    for r, o in zip(ref, ours):  # the decoder reproduces torchvision's own post-processing
        assert len(r["boxes"]) == len(o["boxes"]) > 0
        torch.testing.assert_close(o["boxes"], r["boxes"])
        torch.testing.assert_close(o["labels"], r["labels"] - parts.decoder.label_offset)
    snn = prepare(parts.spiking, x)
    assert not any(type(m).__name__ in ("FrozenBatchNorm2d", "BatchNorm2d") for m in snn.modules())  # folded
    assert len(snn.neurons()) > 0
    with torch.no_grad():
        got, want = snn.ann_forward(x), parts.spiking(x)
    for g, w in zip(torch.utils._pytree.tree_leaves(got), torch.utils._pytree.tree_leaves(want)):
        torch.testing.assert_close(g, w, rtol=0, atol=ANN_ATOL * max(1.0, float(w.abs().max())))
    head_in_snn = any(n.startswith("head.") for n, _ in snn.graph_module.named_modules())
    assert head_in_snn == spiking_head  # the heads' convs are fed with spikes, or stay analog outside


def test_retinanet_resnet50_fpn_converts_whole(warm_bn) -> None:
    torch.manual_seed(0)
    det = TVD.retinanet_resnet50_fpn(weights=None, weights_backbone=None, num_classes=4)
    _frozen(det.backbone, warm_bn, (3, 64, 64))
    _check_single_stage(det, 64, spiking_head=True)


def test_fcos_resnet50_fpn_converts_backbone_and_fpn_heads_stay_analog(warm_bn) -> None:
    torch.manual_seed(0)
    det = TVD.fcos_resnet50_fpn(weights=None, weights_backbone=None, num_classes=4)
    _frozen(det.backbone, warm_bn, (3, 64, 64))
    parts = detector_parts(det)
    assert any("GroupNorm" in a for a in parts.analog)  # said, not skipped
    _check_single_stage(det, 64, spiking_head=False)


@pytest.mark.slow
def test_ssd300_vgg16_converts_except_the_l2_normalised_level() -> None:
    torch.manual_seed(0)
    det = TVD.ssd300_vgg16(weights=None, weights_backbone=None, num_classes=4)
    parts = detector_parts(det)
    assert parts.decoder.label_offset == 1 and parts.decoder.num_classes == 3  # class 0 is background
    assert any("L2 normalisation" in a for a in parts.analog)
    _check_single_stage(det, 300, spiking_head=True, images=1)  # SSD300 is built for 300 px


def test_faster_rcnn_converts_as_two_chained_snns() -> None:
    from adacal.detection.two_stage import convert_faster_rcnn

    torch.manual_seed(0)
    det = TVD.fasterrcnn_resnet50_fpn(weights=None, weights_backbone=None, num_classes=3, rpn_pre_nms_top_n_test=50,
                                      rpn_post_nms_top_n_test=10, box_score_thresh=0.0).eval()
    freeze_batchnorm(det.backbone)
    det.transform.min_size, det.transform.max_size = (64,), 64
    imgs = [torch.rand(3, 64, 64, generator=torch.Generator().manual_seed(i)) for i in range(2)]
    with torch.no_grad():
        ref = det(imgs)
        x = det.transform(imgs)[0].tensors
    chain = convert_faster_rcnn(det, x, config=PipelineConfig(method="calibration", timesteps=8))
    assert not any(type(m).__name__ == "FrozenBatchNorm2d" for m in chain.rpn.modules())
    assert chain.rpn.neurons() and chain.box_head.neurons()  # both stages spike
    assert any("RoIAlign" in a for a in chain.records["analog"])
    for r, a in zip(ref, chain.ann_detect(x)):  # the chain in ANN mode is the detector
        assert len(r["boxes"]) == len(a["boxes"]) > 0
        torch.testing.assert_close(a["boxes"], r["boxes"], rtol=0, atol=0.05)
    dets = chain.detect(x, 8)
    assert len(dets) == 2 and all(d["boxes"].shape[1] == 4 for d in dets)

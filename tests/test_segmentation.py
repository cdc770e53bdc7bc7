"""Semantic segmentation: datasets in their official layouts, the task's metrics and early exit,
memory-bounded evaluation, conversion of dense networks (ours and torchvision's), and a sweep that
ends in the comparison pictures. Everything runs on tiny synthetic stand-ins written to tmp_path."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from adacal import convert, evaluate
from adacal.calibrate import calibrate_thresholds
from adacal.cli import job_for
from adacal.config import CalibrationConfig, DataSpec, JobConfig, ModelSpec, PipelineConfig, SweepConfig
from adacal.convert import prepare
from adacal.datasets import DatasetInfo, get_splits
from adacal.datasets.segmentation import CAMVID_PALETTE, class_frequencies, voc_palette
from adacal.errors import ConfigError, DataError, ShapeError
from adacal.evaluate import collect_examples, fit_exit_policy
from adacal.jobs import Data, evaluate_snn, sweep_to_folder
from adacal.models import build_model
from adacal.tasks import get_task

pytestmark = pytest.mark.usefixtures("single_thread")

H, W = 24, 32


# ------------------------------------------------------------------------------------------ fixtures
def _scene(rng: np.random.Generator, classes: int = 11, void: int = 11) -> tuple[np.ndarray, np.ndarray]:
    """A label map of rectangles (some void) and an image whose colour is the label's palette colour."""
    mask = np.full((H, W), rng.integers(0, classes), dtype=np.uint8)
    for _ in range(4):
        y0, x0 = rng.integers(0, H - 4), rng.integers(0, W - 4)
        mask[y0:y0 + rng.integers(3, 10), x0:x0 + rng.integers(3, 12)] = rng.integers(0, classes)
    mask[rng.integers(0, H), :] = void
    table = np.array([*CAMVID_PALETTE, (0, 0, 0)], dtype=np.uint8)
    return table[np.minimum(mask, 11)], mask


def _camvid_npz(root: Path, sizes: dict[str, int] | None = None, seed: int = 0) -> Path:
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    for split, n in (sizes or {"train": 12, "val": 3, "test": 6}).items():
        pairs = [_scene(rng) for _ in range(n)]
        np.savez(root / f"{split}.npz", images=np.stack([p[0] for p in pairs]), masks=np.stack([p[1] for p in pairs]))
    return root


@pytest.fixture
def camvid_dir(tmp_path: Path) -> Path:
    return _camvid_npz(tmp_path / "camvid")


def _denorm(x: torch.Tensor) -> np.ndarray:
    mean = torch.tensor((0.485, 0.456, 0.406)).view(3, 1, 1)
    std = torch.tensor((0.229, 0.224, 0.225)).view(3, 1, 1)
    return ((x * std + mean) * 255).round().clamp(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()


# ------------------------------------------------------------------------------------------ data
def test_camvid_npz_splits_and_augmentation_keep_image_and_mask_aligned(camvid_dir: Path) -> None:
    sp = get_splits("camvid", camvid_dir, calib_size=4, seed=1)
    assert (len(sp.train), len(sp.calib), len(sp.test)) == (12, 4, 6)
    x, y = sp.test[0]
    assert x.shape == (3, H, W) and x.dtype == torch.float32 and y.shape == (H, W) and y.dtype == torch.int64
    raw = np.load(camvid_dir / "test.npz")
    np.testing.assert_array_equal(y.numpy(), raw["masks"][0])  # evaluation data is untouched
    table = np.array([*CAMVID_PALETTE, (0, 0, 0)], dtype=np.int64)
    torch.manual_seed(0)
    moved, hits, mirrored, labelled = 0, 0, 0, 0
    for i in range(12):
        x, y = sp.train[i]
        assert x.shape == (3, H, W)
        img = _denorm(x).astype(np.int64)
        lab = y.numpy()
        known = lab < 11
        hits += int((np.abs(img - table[np.minimum(lab, 11)]).sum(-1) < 30)[known].sum())
        mirrored += int((np.abs(img - table[np.minimum(lab[:, ::-1], 11)]).sum(-1) < 30)[known].sum())
        labelled += int(known.sum())
        moved += int(not np.array_equal(lab, np.load(camvid_dir / "train.npz")["masks"][sp.train.indices[i]]))
    # the image's colour is its label's colour except near region borders (resampling blends colours
    # there); a mask that did not move with its image (here: mirrored) would match far less often
    assert hits / labelled > 0.75 and mirrored / labelled < hits / labelled - 0.2
    assert moved >= 10  # random scale, crop and flip changed nearly every training sample


def _png(path: Path, arr: np.ndarray, palette: list[int] | None = None) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    img = Image.fromarray(arr)
    if palette is not None:
        img = img.convert("P") if arr.ndim == 3 else Image.fromarray(arr, mode="P")
        img.putpalette(palette)
    img.save(path)


def test_camvid_segnet_folders_match_the_npz(tmp_path: Path, camvid_dir: Path) -> None:
    base = tmp_path / "SegNet" / "CamVid"
    for split in ("train", "val", "test"):
        z = np.load(camvid_dir / f"{split}.npz")
        for i, (img, msk) in enumerate(zip(z["images"], z["masks"])):
            _png(base / split / f"f{i:03d}.png", img)
            _png(base / f"{split}annot" / f"f{i:03d}.png", msk)
    a = get_splits("camvid", tmp_path / "SegNet", calib_size=3, seed=0, augment=False)
    b = get_splits("camvid", camvid_dir, calib_size=3, seed=0, augment=False)
    for i in range(len(b.test)):
        torch.testing.assert_close(a.test[i][0], b.test[i][0])
        torch.testing.assert_close(a.test[i][1], b.test[i][1])
    assert len(a.train) == 12
    assert len(get_splits("camvid", tmp_path / "SegNet", calib_size=3, options={"trainval": True}).train) == 15
    half = get_splits("camvid", tmp_path / "SegNet", calib_size=3, options={"size": [12, 16]})
    assert half.test[0][0].shape == (3, 12, 16) and half.train[0][0].shape == (3, 12, 16)


def test_voc_folder_is_read_by_torchvision_letterboxed_with_void(tmp_path: Path) -> None:
    root = tmp_path / "voc"
    dev = root / "VOCdevkit" / "VOC2012"
    rng = np.random.default_rng(0)
    names = {"train": ["a", "b", "c"], "val": ["d", "e"]}
    flat = [v for c in voc_palette(256) for v in c]
    sizes = {"a": (30, 40), "b": (40, 30), "c": (20, 20), "d": (32, 48), "e": (50, 25)}
    for split, ids in names.items():
        (dev / "ImageSets" / "Segmentation").mkdir(parents=True, exist_ok=True)
        (dev / "ImageSets" / "Segmentation" / f"{split}.txt").write_text("\n".join(ids) + "\n")
        for n in ids:
            h, w = sizes[n]
            (dev / "JPEGImages").mkdir(parents=True, exist_ok=True)
            Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(dev / "JPEGImages" / f"{n}.jpg")
            mask = np.full((h, w), 15, dtype=np.uint8)  # person
            mask[:, : w // 2] = 0
            mask[0] = 255  # VOC's void border
            _png(dev / "SegmentationClass" / f"{n}.png", mask, flat)
    for given in (root, dev.parent, dev):  # any of the usual roots
        sp = get_splits("voc", given, calib_size=2, options={"size": [16, 16]})
        assert (len(sp.train), len(sp.test)) == (3, 2)
    x, y = sp.test[0]  # 32x48 → 11x16 inside 16x16, the rest padded with void
    assert x.shape == (3, 16, 16) and set(np.unique(y.numpy())) == {0, 15, 255}
    assert (y[11:] == 255).all() and (y[1:11, :8] == 0).all() and (y[1:11, 8:] == 15).all()
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="VOCdevkit/VOC2012"):
        get_splits("voc", tmp_path / "empty", calib_size=1)


def test_cityscapes_ids_become_train_ids(tmp_path: Path) -> None:
    root = tmp_path / "cs"
    for split in ("train", "val"):
        for k in range(2):
            stem = f"aachen_{k:06d}_000019"
            img_dir, gt_dir = root / "leftImg8bit" / split / "aachen", root / "gtFine" / split / "aachen"
            _png(img_dir / f"{stem}_leftImg8bit.png", np.full((16, 32, 3), 90, dtype=np.uint8))
            ids = np.zeros((16, 32), dtype=np.uint8)  # id 0: unlabeled → void
            ids[:, 8:16] = 7  # road → train id 0
            ids[:, 16:24] = 26  # car → 13
            ids[:, 24:] = 33  # bicycle → 18
            _png(gt_dir / f"{stem}_gtFine_labelIds.png", ids)
    sp = get_splits("cityscapes", root, calib_size=1, options={"size": [16, 32]})
    _, y = sp.test[0]
    assert y[0, :8].eq(255).all() and y[0, 8:16].eq(0).all() and y[0, 16:24].eq(13).all() and y[0, 24:].eq(18).all()


def test_dataset_errors_name_the_fix(tmp_path: Path, camvid_dir: Path) -> None:
    with pytest.raises(DataError, match="trainannot"):
        get_splits("camvid", tmp_path, calib_size=1)
    with pytest.raises(ConfigError, match="no option.*'crops'.*valid"):
        get_splits("camvid", camvid_dir, calib_size=1, options={"crops": [8, 8]})
    with pytest.raises(ConfigError, match="'size' must be two positive integers"):
        get_splits("camvid", camvid_dir, calib_size=1, options={"size": [8]})
    with pytest.raises(DataError, match="Cityscapes not found"):
        get_splits("cityscapes", tmp_path, calib_size=1)
    freq = class_frequencies(np.array([[0, 0, 1, 11]]), 3, 11)
    np.testing.assert_allclose(freq, [2 / 3, 1 / 3, 0])


# ------------------------------------------------------------------------------------------ task
def _onehot(labels: torch.Tensor, c: int) -> torch.Tensor:
    return torch.nn.functional.one_hot(labels.clamp(0, c - 1), c).permute(0, 3, 1, 2).float() * 5


def test_metrics_are_dataset_level_with_void_ignored() -> None:
    task = get_task("segmentation", num_classes=3, ignore_index=9)
    y1 = torch.tensor([[[0, 0, 1, 9]]])  # batch 1: one image, 1x4 pixels
    p1 = torch.tensor([[[0, 1, 1, 2]]])  # the void pixel's prediction must not count
    y2 = torch.tensor([[[2, 2, 2, 2]], [[0, 9, 9, 9]]])
    p2 = torch.tensor([[[2, 2, 0, 2]], [[0, 1, 1, 1]]])
    m = task.metrics()
    m.update(_onehot(p1, 3), y1)
    m.update({"out": _onehot(p2, 3)}, y2)  # torchvision's dict outputs are read too
    out = m.compute()
    pred = torch.cat([p1.flatten(), p2.flatten()])
    true = torch.cat([y1.flatten(), y2.flatten()])
    keep = true != 9
    conf = np.zeros((3, 3))
    for t, p in zip(true[keep].tolist(), pred[keep].tolist()):
        conf[t, p] += 1
    iou = np.diag(conf) / (conf.sum(0) + conf.sum(1) - np.diag(conf))
    np.testing.assert_allclose(out["iou_per_class"], 100 * iou, atol=1e-4)
    assert out["miou"] == pytest.approx(100 * iou.mean(), abs=1e-4)
    assert out["pixel_accuracy"] == pytest.approx(100 * np.trace(conf) / conf.sum(), abs=1e-4)
    per_image = []  # what the metric must NOT be: the mean of per-image mIoUs
    for p, t in ((p1[0], y1[0]), (p2[0], y2[0]), (p2[1], y2[1])):
        k = t != 9
        classes = set(p[k].tolist()) | set(t[k].tolist())
        per_image.append(np.mean([((p[k] == c) & (t[k] == c)).sum().item() / ((p[k] == c) | (t[k] == c)).sum().item()
                                  for c in classes]))
    assert abs(out["miou"] - 100 * np.mean(per_image)) > 1  # 58.3 here against 62.5
    with pytest.raises(DataError, match="label 5 is outside \\[0, 3\\).*void label: 9"):
        task.metrics().update(_onehot(p1, 3), torch.tensor([[[5, 0, 0, 0]]]))
    with pytest.raises(ShapeError, match="4-d outputs with 3 classes"):
        task.check_outputs(torch.zeros(2, 3), "model 'x'")


def test_exit_score_and_correctness_are_per_image() -> None:
    task = get_task("segmentation", num_classes=4, ignore_index=255)
    sure = torch.zeros(1, 4, 5, 5)
    sure[:, 1] = 20.0
    unsure = torch.zeros(1, 4, 5, 5)
    half = sure.clone()
    half[..., :2] = 0.0  # two columns of uniform pixels
    s = task.exit_score(torch.cat([sure, unsure, half]))
    assert s.shape == (3,) and s[0] > 0.99 and s[1] < 1e-6 and 0.5 < s[2] < 0.7
    low = get_task("segmentation", num_classes=4, ignore_index=255, exit_reduction="min")
    assert low.exit_score(half)[0] < 1e-6  # the least confident pixel decides
    y = torch.full((2, 5, 5), 1)
    y[1, :, :3] = 2  # image 1: 60 % wrong
    y[1, :, 3] = 255
    ok = task.correct(torch.cat([sure, sure]), y)
    assert ok.tolist() == [True, False]  # image 1: 1 of its 4 labelled columns right, below one half


def test_loss_ignores_void_and_uses_class_weights() -> None:
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 4, 4, requires_grad=True)
    y = torch.randint(0, 3, (2, 4, 4))
    y[0] = 7
    y[1, 0, 0] = 0
    plain = get_task("segmentation", num_classes=3, ignore_index=7).loss(logits, y)
    ref = torch.nn.functional.cross_entropy(logits[1:], y[1:])
    torch.testing.assert_close(plain, ref)
    weighted = get_task("segmentation", num_classes=3, ignore_index=7, class_weights=[1.0, 0.0, 0.0]).loss(logits, y)
    keep = y[1] == 0
    per_pixel = torch.nn.functional.cross_entropy(logits[1:], y[1:], reduction="none")[0]
    torch.testing.assert_close(weighted, per_pixel[keep].mean())


# ------------------------------------------------------------------------------------------ engine
def _tiny_fcn(classes: int = 11) -> nn.Module:
    torch.manual_seed(0)
    return build_model("fcn_small", classes, widths=(4, 4, 8, 8), decoder=8, blocks=1)


def _trained_like(model: nn.Module, x: torch.Tensor) -> nn.Module:
    from conftest import warm_batchnorm

    return warm_batchnorm(model, [x[i:i + 4] for i in range(0, len(x), 4)])


def test_fcn_small_converts_and_tracks_the_ann(images: Any) -> None:
    x = images(8, seed=3, shape=(3, H, W))
    ann = _trained_like(_tiny_fcn(), x)
    snn = prepare(ann, x[:2])
    with torch.no_grad():
        ref = ann(x[4:6])
    torch.testing.assert_close(snn.ann_forward(x[4:6]), ref, rtol=0, atol=1e-4)
    calibrate_thresholds(snn, [x[:4]], timesteps=64, config=CalibrationConfig())
    steps = snn.run(x[4:6], 64)
    assert steps.shape == (64, 2, 11, H, W)
    rel = lambda t: float((steps[:t].mean(0) - ref).norm() / ref.norm())  # noqa: E731
    assert rel(64) < 0.6 * rel(8) and rel(64) < 0.3


@pytest.mark.parametrize("name", ["fcn_resnet50", "deeplabv3_resnet50"])
def test_torchvision_segmentation_models_convert(name: str, warm_bn: Any, images: Any) -> None:
    """Random weights, 32x32 inputs: dense dict outputs, bilinear upsampling, DeepLab's ASPP global
    pooling branch; the auxiliary head is off. The SNN's error falls with T like a correct conversion."""
    from test_torchvision_models import _ordered_regime

    torch.manual_seed(0)
    model = build_model(name, 5)
    assert getattr(model, "aux_classifier", None) is None
    shape = (3, 32, 32)
    warm_bn(model, [images(2, seed=100 + i, shape=shape) for i in range(2)])
    model = _ordered_regime(model)
    x = images(1, seed=2, shape=shape)
    snn = prepare(model, images(1, seed=1, shape=shape))
    ops = {str(n.target) for n in snn.graph_module.graph.nodes if n.op == "call_function"}
    assert any("interpolate" in o for o in ops)  # bilinear upsampling to the input size
    if name.startswith("deeplab"):
        assert "classifier.0.convs.4.3" in snn.neurons()  # ASPP's global-pool branch became a neuron
    with torch.no_grad():
        ref = model(x)["out"]
    torch.testing.assert_close(snn.ann_forward(x)["out"], ref, rtol=0, atol=1e-4)
    calibrate_thresholds(snn, [images(1, seed=10, shape=shape)], timesteps=32, config=CalibrationConfig())
    out = snn.run(x, 32)["out"]
    assert out.shape == (32, 1, 5, 32, 32)
    rel = lambda t: float((out[:t].mean(0) - ref).norm() / ref.norm())  # noqa: E731
    assert rel(32) < 0.65 * rel(8) and rel(32) < 0.5, (rel(8), rel(32))


def _seg_loader(n: int = 8, batch: int = 4, seed: int = 0) -> DataLoader:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, 3, H, W, generator=g)
    y = torch.randint(0, 12, (n, H, W), generator=g)
    return DataLoader(TensorDataset(x, y), batch_size=batch)


def test_evaluation_streams_the_time_average_and_keeps_chosen_examples(images: Any) -> None:
    x = images(8, seed=3, shape=(3, H, W))
    ann = _trained_like(_tiny_fcn(), x)
    snn, _ = convert(ann, [x[:4]], config=PipelineConfig(method="calibration", timesteps=8))
    loader = _seg_loader()
    task = get_task("segmentation", num_classes=11, ignore_index=11)
    xb = next(iter(loader))[0]
    streamed = snn.run(xb, 8, reduce="mean")  # what evaluate uses for dense maps
    torch.testing.assert_close(streamed, snn.run(xb, 8).mean(0), rtol=1e-5, atol=1e-5)
    res = evaluate(snn, loader, timesteps=8, task=task, examples=(1, 6))
    ref = task.metrics()
    for xb, yb in loader:
        ref.update(snn.run(xb, 8).mean(0), yb)
    expect = ref.compute()
    assert res["miou"] == pytest.approx(expect["miou"], abs=1e-6)
    assert res["iou_per_class"] == pytest.approx(expect["iou_per_class"], abs=1e-6)
    kept = res["examples"]
    assert [int(i) for e in kept for i in e["index"]] == [1, 6]
    assert kept[0]["image"].shape == (1, H, W, 3) and kept[0]["image"].dtype == np.uint8
    assert np.array_equal(kept[1]["target"][0], loader.dataset.tensors[1][6].numpy())
    ann_kept = collect_examples(ann, loader, task=task, examples=(1, 6))
    assert [int(e["index"][0]) for e in ann_kept] == [1, 6]
    with torch.no_grad():
        want = ann(loader.dataset.tensors[0][6:7]).argmax(1).numpy()
    assert np.array_equal(ann_kept[1]["prediction"], want)


def test_iat_fits_and_exits_per_image(images: Any) -> None:
    x = images(8, seed=3, shape=(3, H, W))
    ann = _trained_like(_tiny_fcn(), x)
    snn, _ = convert(ann, [x[:4]], config=PipelineConfig(method="calibration", timesteps=4))
    task = get_task("segmentation", num_classes=11, ignore_index=11)
    with torch.no_grad():
        labels = ann(x).argmax(1)  # the ANN's own maps: most images count as correct
    calib = DataLoader(TensorDataset(x, labels), batch_size=4)
    policy = fit_exit_policy(snn, calib, timesteps=4, task=task, alpha_base=0.5)
    assert policy.T == 4 and policy.mean_entropy is not None
    res = evaluate(snn, _seg_loader(), timesteps=4, task=task, exit_policy=policy)
    assert sum(res["exit_histogram"]) == 8 and 1 <= res["mean_timesteps"] <= 4
    never = evaluate(snn, _seg_loader(), timesteps=4, task=task, exit_policy=policy.with_alpha_base(2.0))
    assert never["mean_timesteps"] == 4 and never["exit_histogram"][-1] == 8
    data = Data(spec=DataSpec(), info=DatasetInfo("synthetic", 11, (3, H, W), task="segmentation"), task=task,
                train_set=calib.dataset, calib=calib, test=_seg_loader())
    _, sharp, _ = evaluate_snn(snn, data, timesteps=4, iat=True, alpha_base=0.5, delta=0.01)
    assert sharp.delta == 0.01 and sharp.thresholds != policy.thresholds  # eq. 15's δ reaches the policy


def test_camvid_config_and_iat_delta_option() -> None:
    job = job_for(["sweep", "--config", "camvid_fcn", "--set", "sweep.delta=0.2"])
    assert job.task is None and job.data.dataset == "camvid" and job.model.name == "fcn_small"
    assert job.sweep.delta == 0.2 and job.sweep.timesteps == (4, 8, 16, 32, 64)
    with pytest.raises(ConfigError, match="sweep.delta"):
        job_for(["sweep", "--config", "camvid_fcn", "--set", "sweep.delta=0"])


# ------------------------------------------------------------------------------------------ sweep + report
def test_sweep_reports_miou_per_class_iou_and_pictures(tmp_path: Path) -> None:
    data_dir = _camvid_npz(tmp_path / "camvid", {"train": 8, "val": 1, "test": 5})
    weights = tmp_path / "fcn.pt"
    model = _tiny_fcn()
    x = torch.randn(8, 3, H, W, generator=torch.Generator().manual_seed(0))
    torch.save(_trained_like(model, x).state_dict(), weights)
    job = JobConfig(model=ModelSpec("fcn_small", weights=str(weights),
                                    options={"widths": [4, 4, 8, 8], "decoder": 8, "blocks": 1}),
                    data=DataSpec("camvid", data_dir=str(data_dir), calib_size=4, batch_size=2),
                    pipeline=PipelineConfig(phi_target=1, profile_batch=2),
                    sweep=SweepConfig(methods=("calibration", "adafire"), timesteps=(4,), iat=False))
    results = sweep_to_folder(job, tmp_path / "out")
    assert results["task"]["name"] == "segmentation" and results["task"]["headline"] == "miou"
    for entry in (results["ann"], *results["runs"]):
        m = entry["metrics"]
        assert set(m) == {"miou", "pixel_accuracy", "iou_per_class"} and len(m["iou_per_class"]) == 11
    assert results["ann"]["examples"] == "examples/ann.npz"
    saved = np.load(tmp_path / "out" / results["runs"][-1]["examples"])
    assert saved["index"].tolist() == [0, 1, 2, 3]  # CamVid's picture images are not among 5: the first four
    out = tmp_path / "out"
    assert (out / "segmentation_examples.png").is_file() and (out / "segmentation_class_iou.png").is_file()
    page = (out / "report.md").read_text()
    assert "segmentation_examples.png" in page and "mIoU (%)" in page
    summary = json.loads((out / "summary.json").read_text())
    assert summary["runs"][0]["metrics"]["miou"] == results["runs"][0]["metrics"]["miou"]
    (tmp_path / "elsewhere").mkdir()  # a report drawn away from the examples: no pictures of them, no crash
    elsewhere = get_task("segmentation", **summary["task"]["info"]).figures(summary, tmp_path / "elsewhere")
    assert set(elsewhere) == {"segmentation_class_iou"}

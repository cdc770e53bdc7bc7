"""Object detection: box conventions, loaders (shared .npz, VOC folders, COCO json), the FCOS decoder,
COCO mAP through torchmetrics, the detection task through conversion, IAT and energy."""
from __future__ import annotations

import io
import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from adacal.datasets import get_splits
from adacal.detection import FCOSDecoder, pad_target, unpad_target, voc_to_continuous, xywh_to_xyxy
from adacal.detection.boxes import scale_boxes, to_continuous
from adacal.errors import ConfigError, DataError, ShapeError
from adacal.tasks import get_task
from adacal.tasks.detection import DetectionTask, image_confidence, match_f1

pytestmark = pytest.mark.usefixtures("single_thread")


# ------------------------------------------------------------------------------------------- boxes
def test_box_conventions_become_continuous() -> None:
    voc = np.array([[1, 1, 10, 20]], dtype=np.float32)  # VOC: pixels 1..10 inclusive = 10 px wide
    assert voc_to_continuous(voc).tolist() == [[0, 0, 10, 20]]
    assert xywh_to_xyxy(np.array([[2, 3, 4, 5]])).tolist() == [[2, 3, 6, 8]]
    assert to_continuous(np.array([[0.5, 1, 2, 3]]), "continuous").tolist() == [[0.5, 1, 2, 3]]
    with pytest.raises(DataError, match="unknown box convention 'yolo'"):
        to_continuous(voc, "yolo")
    assert scale_boxes(np.array([[0, 0, 10, 20]]), 0.5, 2.0, 4, 100).tolist() == [[0, 0, 4, 40]]  # x clipped


def test_pad_and_unpad_targets_round_trip() -> None:
    t = pad_target(np.array([[0, 0, 1, 1], [1, 1, 2, 2]]), np.array([2, 0]), 4)
    assert t["boxes"].shape == (4, 4) and t["labels"].tolist() == [2, 0, -1, -1]
    back = unpad_target({k: v[None] for k, v in t.items()})
    assert back[0]["labels"].tolist() == [2, 0] and back[0]["boxes"].tolist() == [[0, 0, 1, 1], [1, 1, 2, 2]]
    with pytest.raises(DataError, match="raise the dataset option max_boxes"):
        pad_target(np.zeros((3, 4)), np.zeros(3), 2)


# ------------------------------------------------------------------------------------------- loaders
def _jpeg(w: int, h: int, seed: int) -> bytes:
    arr = np.random.default_rng(seed).integers(0, 255, (h, w, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(arr).save(buf, format="JPEG")
    return buf.getvalue()


def _npz(path: Path, sizes: list[tuple[int, int]], boxes: list[list[list[float]]], labels: list[list[int]],
         classes: list[str]) -> None:
    blobs = [_jpeg(w, h, i) for i, (w, h) in enumerate(sizes)]
    off = np.cumsum([0] + [len(b) for b in blobs])
    boff = np.cumsum([0] + [len(b) for b in boxes])
    np.savez(path, jpeg_bytes=np.frombuffer(b"".join(blobs), dtype=np.uint8), offsets=off,
             image_hw=np.array([[h, w] for w, h in sizes]),
             filenames=np.array([f"im{i}.jpg" for i in range(len(sizes))]),
             boxes=np.array([b for bb in boxes for b in bb], dtype=np.float32).reshape(-1, 4), box_offsets=boff,
             box_labels=np.array([c for cc in labels for c in cc], dtype=np.int64), classes=np.array(classes))


def test_shared_npz_layout_voc_boxes(tmp_path: Path) -> None:
    # BCCD's layout: VOC 1-based inclusive boxes; 40x30 images resized to 32x16 (W x H)
    for split in ("train", "test"):
        _npz(tmp_path / f"{split}.npz", [(40, 30), (40, 30)], [[[1, 1, 10, 15]], [[11, 1, 40, 30], [1, 1, 2, 2]]],
             [[0], [2, 1]], ["RBC", "WBC", "Platelets"])
    sp = get_splits("bccd", tmp_path, calib_size=1, augment=False, options={"image_size": [16, 32]})
    x, y = sp.test[0]
    assert x.shape == (3, 16, 32) and y["labels"][:1].tolist() == [0]
    torch.testing.assert_close(y["boxes"][0], torch.tensor([0.0, 0.0, 10 * 0.8, 15 * 16 / 30]))
    _, y1 = sp.test[1]
    torch.testing.assert_close(y1["boxes"][0], torch.tensor([10 * 0.8, 0.0, 32.0, 16.0]))
    assert len(sp.calib) == 1 and len(sp.train) == 2


def test_coco128_boxes_are_already_continuous(tmp_path: Path) -> None:
    for split in ("train", "val"):
        _npz(tmp_path / f"{split}.npz", [(20, 10)], [[[0, 0, 10, 5]]], [[7]], [f"c{i}" for i in range(80)])
    sp = get_splits("coco128", tmp_path, calib_size=1, augment=False, options={"image_size": 20})
    _, y = sp.test[0]
    torch.testing.assert_close(y["boxes"][0], torch.tensor([0.0, 0.0, 10.0, 10.0]))  # y scaled by 20/10
    assert y["labels"][0] == 7


def _voc_folder(root: Path, classes: list[str]) -> None:
    (root / "Annotations").mkdir(parents=True)
    (root / "JPEGImages").mkdir()
    (root / "ImageSets" / "Main").mkdir(parents=True)
    for i in range(3):
        (root / "JPEGImages" / f"im{i}.jpg").write_bytes(_jpeg(40, 20, i))
        (root / "Annotations" / f"im{i}.xml").write_text(
            f"<annotation><filename>im{i}.jpg</filename><size><width>40</width><height>20</height></size>"
            f"<object><name>{classes[i % len(classes)]}</name><bndbox><xmin>1</xmin><ymin>1</ymin><xmax>20</xmax>"
            "<ymax>10</ymax></bndbox></object></annotation>")
    (root / "ImageSets" / "Main" / "trainval.txt").write_text("im0\nim1\n")
    (root / "ImageSets" / "Main" / "test.txt").write_text("im2\n")


@pytest.mark.parametrize("devkit", [False, True], ids=["voc-folder", "VOCdevkit"])
def test_voc_folders(tmp_path: Path, devkit: bool) -> None:
    root = tmp_path / "VOCdevkit" / "VOC2007" if devkit else tmp_path
    _voc_folder(root, ["cat", "dog"])
    opts = {"image_size": [20, 40], "classes": ["cat", "dog"]}
    sp = get_splits("voc_detection", tmp_path, calib_size=1, augment=False, options=opts)
    _, y = sp.test[0]
    assert y["labels"][0] == 0  # im2 -> classes[2 % 2]
    torch.testing.assert_close(y["boxes"][0], torch.tensor([0.0, 0.0, 20.0, 10.0]))  # 1-based -> 0-based
    with pytest.raises(DataError, match="has class 'cat', not among"):
        get_splits("voc_detection", tmp_path, calib_size=1, options={"classes": ["bird"]}).test[0]


def test_coco_json(tmp_path: Path) -> None:
    pytest.importorskip("pycocotools")
    for split in ("train2017", "val2017"):
        (tmp_path / split).mkdir()
        (tmp_path / split / "a.jpg").write_bytes(_jpeg(40, 20, 0))
        (tmp_path / "annotations").mkdir(exist_ok=True)
        ann = {"images": [{"id": 1, "file_name": "a.jpg", "width": 40, "height": 20}],
               "categories": [{"id": 3, "name": "car"}, {"id": 18, "name": "dog"}],
               "annotations": [{"id": 1, "image_id": 1, "category_id": 18, "bbox": [2, 4, 10, 6], "iscrowd": 0,
                                "area": 60}]}
        (tmp_path / "annotations" / f"instances_{split}.json").write_text(json.dumps(ann))
    sp = get_splits("coco", tmp_path, calib_size=1, augment=False, options={"image_size": [20, 40]})
    _, y = sp.test[0]
    assert y["labels"][0] == 1  # category 18 is the second category id
    torch.testing.assert_close(y["boxes"][0], torch.tensor([2.0, 4.0, 12.0, 10.0]))


def test_loader_errors_name_the_fix(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="needs a data folder"):
        get_splits("bccd", tmp_path / "missing", calib_size=1)
    with pytest.raises(DataError, match="train.npz' not found"):
        get_splits("bccd", tmp_path, calib_size=1)
    with pytest.raises(ConfigError, match="no option"):
        get_splits("bccd", tmp_path, calib_size=1, options={"imagesize": 3})


# ------------------------------------------------------------------------------------------- decoder
def _outputs(dec: FCOSDecoder, hw: tuple[int, int] = (4, 4), fill: float = -10.0) -> dict:
    levels = [(hw[0] // (s // dec.strides[0]), hw[1] // (s // dec.strides[0])) for s in dec.strides]
    return {"cls": tuple(torch.full((1, dec.num_classes, h, w), fill) for h, w in levels),
            "box": tuple(torch.zeros(1, 4, h, w) for h, w in levels),
            "ctr": tuple(torch.full((1, 1, h, w), 10.0) for h, w in levels)}


def test_fcos_decoding_places_the_box_around_its_location() -> None:
    dec = FCOSDecoder(2, strides=(8, 16), ranges=(0, 64, math.inf))
    out = _outputs(dec, (4, 4))
    out["cls"][0][0, 1, 2, 1] = 10.0  # class 1 at row 2, column 1 of the stride-8 level: centre (12, 20)
    out["box"][0][0, :, 2, 1] = torch.log(torch.tensor([0.5, 1.0, 1.0, 0.25]))  # ltrb = (4, 8, 8, 2)
    (d,) = dec.detections(out)
    assert d["labels"].tolist() == [1]
    torch.testing.assert_close(d["boxes"][0], torch.tensor([8.0, 12.0, 20.0, 22.0]))
    assert d["scores"][0] > 0.99


def test_fcos_targets_assign_the_smallest_box_in_range() -> None:
    dec = FCOSDecoder(2, strides=(8, 16), ranges=(0, 20, math.inf))
    out = _outputs(dec, (4, 4))
    big = [0.0, 0.0, 32.0, 32.0]  # side distances >= 20 from every location: level 1 only
    target = {"boxes": torch.tensor([[big, [8.0, 8.0, 16.0, 16.0], [0, 0, 0, 0]]]),
              "labels": torch.tensor([[0, 1, -1]])}
    cls_t, box_t, ctr_t = dec.targets(out, target)
    assert cls_t[0, 5] == 1  # level 0, row 1 col 1 (centre 12, 12) lies in both boxes: the small one wins
    torch.testing.assert_close(box_t[0, 5], torch.tensor([8.0, 8.0, 16.0, 16.0]))
    assert ctr_t[0, 5] == pytest.approx(1.0)
    assert cls_t[0, 0] == -1  # level 0 corner: the big box is out of its range, the small one elsewhere
    assert (cls_t[0, 16:] == 0).all()  # level 1 (centres 8 and 24): the big box, within 1.5 strides of its centre
    loss = dec.loss({k: tuple(t.clone().requires_grad_() for t in v) for k, v in out.items()}, target)
    assert torch.isfinite(loss) and loss > 0
    with pytest.raises(ShapeError, match="an FCOS head with 2 levels"):
        dec.check({"cls": ()})


# ------------------------------------------------------------------------------------------- metrics
def _task_with_perfect_head() -> tuple[DetectionTask, dict, dict]:
    dec = FCOSDecoder(2, strides=(8, 16), ranges=(0, 64, math.inf))
    task = get_task("detection", num_classes=2, decoder=dec)
    out = _outputs(dec)
    out["cls"][0][0, 0, 1, 1] = 10.0  # class 0, centre (12, 12), ltrb 4 -> box (8, 8, 16, 16)
    out["box"][0][0, :, 1, 1] = math.log(0.5)
    target = {"boxes": torch.tensor([[[8.0, 8.0, 16.0, 16.0], [0, 0, 0, 0]]]), "labels": torch.tensor([[0, -1]])}
    return task, out, target


def test_map_is_100_for_exact_boxes_and_falls_for_a_wrong_class() -> None:
    task, out, target = _task_with_perfect_head()
    m = task.metrics()
    m.update(out, target)
    r = m.compute()
    assert r["map_50"] == pytest.approx(100.0) and r["map"] == pytest.approx(100.0)
    assert r["ap50_per_class"][0] == pytest.approx(100.0) and r["ap50_per_class"][1] is None
    wrong = {**target, "labels": torch.tensor([[1, -1]])}
    m2 = task.metrics()
    m2.update(out, wrong)
    assert m2.compute()["map_50"] == pytest.approx(0.0)
    assert bool(task.correct(out, target)[0]) and not bool(task.correct(out, wrong)[0])


def test_exit_score_from_kept_detections() -> None:
    task, out, _ = _task_with_perfect_head()
    s = task.exit_score(out)
    assert s.shape == (1,) and s[0] > 0.9  # one confident detection
    assert image_confidence(torch.tensor([])) == 0.0
    assert image_confidence(torch.tensor([0.5])) == pytest.approx(0.0)
    none = _outputs(FCOSDecoder(2, strides=(8, 16), ranges=(0, 64, math.inf)))
    assert task.exit_score(none)[0] == 0.0  # nothing kept: keep running
    assert match_f1({"boxes": torch.zeros(0, 4), "scores": torch.zeros(0), "labels": torch.zeros(0)},
                    {"boxes": torch.zeros(0, 4), "labels": torch.zeros(0)}) == 1.0


def test_detection_task_without_decoder_says_how_to_get_one() -> None:
    task = get_task("detection", num_classes=2)
    with pytest.raises(ConfigError, match="no box decoder"):
        task.metrics().update({}, {"boxes": torch.zeros(1, 1, 4), "labels": torch.zeros(1, 1)})

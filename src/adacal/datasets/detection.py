"""Object-detection datasets: the shared ``.npz`` layout, VOC-style folders and COCO json.

Every sample is ``(image, target)``: the image resized to a fixed ``image_size`` ``[H, W]`` and
normalised (ImageNet statistics unless ``mean``/``std`` options say otherwise: the detector's
analog pre-processing, done once by the loader), the target a dict of fixed-size tensors
(:func:`adacal.detection.boxes.pad_target`) with boxes in 0-based continuous pixels of the resized
image. Sources and their box conventions:

==============  =======================================================================  ==========
``bccd``        ``train.npz`` + ``test.npz`` (shared layout, JPEG bytes)                  VOC 1-based
``raccoon``     ``train.npz`` + ``test.npz``                                              VOC 1-based
``coco128``     ``train.npz`` + ``val.npz``                                               continuous
``voc_detection`` ``VOCdevkit/VOC2007`` (torchvision ``VOCDetection``) or a folder with     VOC 1-based
                ``Annotations/``, ``JPEGImages/``, ``ImageSets/Main/{trainval,test}.txt``
``coco``        ``annotations/instances_{train,val}2017.json`` + ``{train,val}2017/``     COCO xywh
                (torchvision ``CocoDetection``; needs ``pycocotools``)
==============  =======================================================================  ==========

Options (``--data-option key=value``): ``image_size`` (``[H, W]`` or one int), ``max_boxes``,
``hflip``/``vflip`` (training augmentation), ``mean``/``std``, ``boxes`` (override the convention),
``classes`` (class names of a custom VOC/COCO folder), ``year`` (VOC), ``train``/``test`` (split names).
"""
from __future__ import annotations

import functools
import io
import os
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from adacal.datasets.registry import DatasetInfo, DatasetSplits, calib_indices, register_dataset, train_indices
from adacal.detection.boxes import pad_target, scale_boxes, to_continuous
from adacal.errors import ConfigError, DataError

__all__ = ["DetectionDataset", "DetectionSource", "VOC_CLASSES", "load_detection_npz"]

VOC_CLASSES = ("aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
               "tvmonitor")
_IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
_OPTIONS = ("image_size", "max_boxes", "hflip", "vflip", "mean", "std", "boxes", "classes", "year", "train", "test")

#: ``read(i) -> (HWC uint8 RGB image, boxes [n, 4] in the source's convention, labels [n])``
Reader = Callable[[int], tuple[np.ndarray, np.ndarray, np.ndarray]]


def _decode(data: bytes) -> np.ndarray:
    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(data)).convert("RGB"))


def _resize(img: np.ndarray, hw: tuple[int, int]) -> np.ndarray:
    from PIL import Image

    if img.shape[:2] == hw:
        return img
    return np.asarray(Image.fromarray(img).resize((hw[1], hw[0]), Image.BILINEAR))


class DetectionSource:
    """The images of one split, decoded and resized once (memoised), with their boxes in the
    resized frame: shared by the train and calibration subsets of the same file."""

    def __init__(self, read: Reader, size: int, *, image_size: tuple[int, int], convention: str,
                 names: Sequence[str] | None = None) -> None:
        self.read, self.size, self.image_size, self.convention = read, int(size), image_size, convention
        self.names = list(names) if names is not None else [str(i) for i in range(self.size)]
        self._cache: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}

    def __len__(self) -> int:
        return self.size

    def get(self, i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(resized HWC uint8, continuous boxes in the resized frame, labels)`` of image ``i``."""
        if i not in self._cache:
            img, boxes, labels = self.read(i)
            if img.ndim != 3 or img.shape[2] != 3:
                raise DataError(f"image {self.names[i]!r} decoded to shape {img.shape}, expected H x W x 3")
            h, w = img.shape[:2]
            H, W = self.image_size
            b = scale_boxes(to_continuous(boxes, self.convention), W / w, H / h, W, H)
            labels = np.asarray(labels, dtype=np.int64).reshape(-1)
            ok = (b[:, 2] > b[:, 0]) & (b[:, 3] > b[:, 1])
            self._cache[i] = (_resize(img, self.image_size), b[ok], labels[ok])
        return self._cache[i]


class DetectionDataset(Dataset[tuple[Tensor, dict[str, Tensor]]]):
    """``(normalised image [3, H, W], padded target)`` for the images at ``indices`` of a source.

    ``hflip``/``vflip``: random flips (training only); the target also carries ``index`` (the
    position in the source), so pictures can name the image.
    """

    def __init__(self, source: DetectionSource, indices: Sequence[int] | np.ndarray | None = None, *,
                 mean: Sequence[float] = _IMAGENET[0], std: Sequence[float] = _IMAGENET[1], max_boxes: int = 100,
                 hflip: bool = False, vflip: bool = False, classes: Sequence[str] = ()) -> None:
        self.source = source
        self.indices = np.arange(len(source)) if indices is None else np.asarray(indices, dtype=np.int64)
        self.mean = torch.tensor(mean, dtype=torch.float32).view(3, 1, 1)
        self.std = torch.tensor(std, dtype=torch.float32).view(3, 1, 1)
        self.max_boxes, self.hflip, self.vflip = int(max_boxes), bool(hflip), bool(vflip)
        self.classes = list(classes)

    def __len__(self) -> int:
        return int(self.indices.shape[0])

    def __getitem__(self, i: int) -> tuple[Tensor, dict[str, Tensor]]:
        k = int(self.indices[i])
        img, boxes, labels = self.source.get(k)
        x = torch.from_numpy(np.array(img)).permute(2, 0, 1).float().div_(255.0)
        b = boxes.copy()
        H, W = self.source.image_size
        if self.hflip and torch.rand(()) < 0.5:
            x = x.flip(2)
            b[:, [0, 2]] = W - b[:, [2, 0]]
        if self.vflip and torch.rand(()) < 0.5:
            x = x.flip(1)
            b[:, [1, 3]] = H - b[:, [3, 1]]
        target = pad_target(b, labels, self.max_boxes, what=f"image {self.source.names[k]!r}")
        target["index"] = torch.tensor(k, dtype=torch.int64)
        return (x - self.mean) / self.std, target

    def view(self, indices: np.ndarray, *, augment: bool) -> DetectionDataset:
        """The images at positions ``indices`` of this dataset (flips only if ``augment``)."""
        return DetectionDataset(self.source, self.indices[np.asarray(indices, dtype=np.int64)],
                                mean=tuple(self.mean.flatten().tolist()), std=tuple(self.std.flatten().tolist()),
                                max_boxes=self.max_boxes, hflip=augment and self.hflip,
                                vflip=augment and self.vflip, classes=self.classes)


# ---------------------------------------------------------------------------------------- readers
@functools.lru_cache(maxsize=8)
def _npz(path: str, mtime_ns: int) -> dict[str, np.ndarray]:
    need = ("jpeg_bytes", "offsets", "boxes", "box_offsets", "box_labels")
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in need if k not in z.files]
            if missing:
                raise DataError(f"{path!r} lacks keys {missing}; a detection .npz needs {list(need)}")
            return {k: z[k] for k in z.files}
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"cannot read {path!r} as a detection .npz: {exc}") from exc


def load_detection_npz(path: str | os.PathLike[str]) -> tuple[Reader, int, list[str], list[str]]:
    """A reader over the shared detection ``.npz`` layout: ``(read, size, filenames, classes)``."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"detection file {str(p)!r} not found (expected the shared .npz layout: jpeg_bytes, "
                        "offsets, boxes, box_offsets, box_labels)")
    d = _npz(str(p.resolve()), p.stat().st_mtime_ns)
    o, bo, buf = d["offsets"], d["box_offsets"], d["jpeg_bytes"]

    def read(i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        img = _decode(buf[o[i]:o[i + 1]].tobytes())
        return img, d["boxes"][bo[i]:bo[i + 1]], d["box_labels"][bo[i]:bo[i + 1]]

    n = len(o) - 1
    names = [str(f) for f in d["filenames"]] if "filenames" in d else [str(i) for i in range(n)]
    classes = [str(c) for c in d["classes"]] if "classes" in d else []
    return read, n, names, classes


def _voc_reader(root: Path, split: str, year: str, classes: Sequence[str]) -> tuple[Reader, int, list[str]]:
    """torchvision ``VOCDetection`` for ``VOCdevkit/VOC<year>``; the same XML parser on a bare VOC folder."""
    import torchvision

    index = {c: i for i, c in enumerate(classes)}
    if (root / "VOCdevkit" / f"VOC{year}").is_dir():
        ds = torchvision.datasets.VOCDetection(str(root), year=year, image_set=split)
        files = [Path(f).name for f in ds.images]
        get = lambda i: (np.asarray(ds[i][0].convert("RGB")), ds[i][1])  # noqa: E731
    else:
        listing = root / "ImageSets" / "Main" / f"{split}.txt"
        if not listing.is_file():
            raise DataError(f"VOC split list {str(listing)!r} not found; expected VOCdevkit/VOC{year}/ or "
                            "Annotations/, JPEGImages/ and ImageSets/Main/<split>.txt under the data root")
        ids = [s.strip() for s in listing.read_text().split() if s.strip()]
        files = [f"{i}.jpg" for i in ids]
        parse = torchvision.datasets.VOCDetection.parse_voc_xml

        def get(i: int) -> tuple[np.ndarray, dict[str, Any]]:
            from PIL import Image

            ann = parse(ET.parse(root / "Annotations" / f"{ids[i]}.xml").getroot())
            img = np.asarray(Image.open(root / "JPEGImages" / ann["annotation"]["filename"]).convert("RGB"))
            return img, ann

    def read(i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        img, ann = get(i)
        objs = ann["annotation"].get("object", [])
        objs = objs if isinstance(objs, list) else [objs]
        boxes, labels = [], []
        for obj in objs:
            if obj["name"] not in index:
                raise DataError(f"VOC image {files[i]!r} has class {obj['name']!r}, not among {list(classes)}; "
                                "pass the dataset's class names (--data-option classes=a,b,c)")
            bb = obj["bndbox"]
            boxes.append([float(bb[k]) for k in ("xmin", "ymin", "xmax", "ymax")])
            labels.append(index[obj["name"]])
        return img, np.asarray(boxes, dtype=np.float32).reshape(-1, 4), np.asarray(labels, dtype=np.int64)

    return read, len(files), files


def _coco_reader(root: Path, split: str) -> tuple[Reader, int, list[str], list[str]]:
    """torchvision ``CocoDetection`` over ``annotations/instances_<split>.json`` and ``<split>/``."""
    import torchvision

    ann_file, img_dir = root / "annotations" / f"instances_{split}.json", root / split
    if not ann_file.is_file() or not img_dir.is_dir():
        raise DataError(f"COCO split {split!r} not found: expected {str(ann_file)!r} and {str(img_dir)!r}")
    try:
        ds = torchvision.datasets.CocoDetection(str(img_dir), str(ann_file))
    except ImportError as exc:
        raise DataError("reading COCO json needs pycocotools: pip install 'adacal[detection]'") from exc
    cats = sorted(ds.coco.cats)
    index = {c: i for i, c in enumerate(cats)}
    names = [ds.coco.cats[c]["name"] for c in cats]
    files = [ds.coco.imgs[i]["file_name"] for i in ds.ids]

    def read(i: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        img, anns = ds[i]
        anns = [a for a in anns if not a.get("iscrowd", 0)]
        boxes = np.asarray([a["bbox"] for a in anns], dtype=np.float32).reshape(-1, 4)
        return np.asarray(img.convert("RGB")), boxes, np.asarray([index[a["category_id"]] for a in anns])

    return read, len(files), files, names


# ---------------------------------------------------------------------------------------- registry
@dataclass(frozen=True)
class _Spec:
    """How a named detection dataset is laid out on disk."""

    kind: str  # "npz" | "voc" | "coco"
    files: tuple[str, str]  # train / test file (npz) or split names (voc, coco)
    convention: str
    image_size: tuple[int, int]
    vflip: bool = False


_SPECS = {
    "bccd": _Spec("npz", ("train.npz", "test.npz"), "voc", (192, 256), vflip=True),
    "raccoon": _Spec("npz", ("train.npz", "test.npz"), "voc", (256, 256)),
    "coco128": _Spec("npz", ("train.npz", "val.npz"), "continuous", (320, 320)),
    "voc_detection": _Spec("voc", ("trainval", "test"), "voc", (320, 320)),
    "coco": _Spec("coco", ("train2017", "val2017"), "xywh", (320, 320)),
}


def _size(v: Any) -> tuple[int, int]:
    vals = [v, v] if isinstance(v, int) else list(v) if isinstance(v, (list, tuple)) else None
    if vals is None or len(vals) != 2 or not all(isinstance(s, int) and s >= 8 for s in vals):
        raise ConfigError(f"detection option image_size must be an int or [H, W] of ints >= 8, got {v!r}")
    return int(vals[0]), int(vals[1])


def _load(name: str, root: str | os.PathLike[str] | None, *, calib_size: int, seed: int, holdout_calib: bool,
          augment: bool, source: str, download: bool, options: Mapping[str, Any]) -> DatasetSplits:
    spec = _SPECS[name]
    unknown = sorted(set(options) - set(_OPTIONS))
    if unknown:
        raise ConfigError(f"dataset {name!r} has no option(s) {unknown}; valid: {list(_OPTIONS)}")
    if download:
        raise ConfigError(f"dataset {name!r} is read from local files only; download=True is not supported")
    if root is None or not Path(root).is_dir():
        raise DataError(f"dataset {name!r} needs a data folder (--data-dir) holding {_files(name)}; got {root!r}")
    rootp = Path(root)
    size = _size(options.get("image_size", spec.image_size))
    convention = str(options.get("boxes", spec.convention))
    train_split, test_split = str(options.get("train", spec.files[0])), str(options.get("test", spec.files[1]))
    classes: list[str] = list(options.get("classes") or [])
    if spec.kind == "npz":
        (tr, n_tr, tr_names, cls), (te, n_te, te_names, _) = (load_detection_npz(rootp / train_split),
                                                               load_detection_npz(rootp / test_split))
        classes = classes or cls
    elif spec.kind == "voc":
        classes = classes or list(VOC_CLASSES)
        year = str(options.get("year", "2007"))
        (tr, n_tr, tr_names), (te, n_te, te_names) = (_voc_reader(rootp, train_split, year, classes),
                                                      _voc_reader(rootp, test_split, year, classes))
    else:
        tr, n_tr, tr_names, cls = _coco_reader(rootp, train_split)
        te, n_te, te_names, _ = _coco_reader(rootp, test_split)
        classes = classes or cls
    common = {"mean": tuple(options.get("mean", _IMAGENET[0])), "std": tuple(options.get("std", _IMAGENET[1])),
              "max_boxes": int(options.get("max_boxes", 100)), "classes": classes}
    flips = {"hflip": bool(options.get("hflip", True)), "vflip": bool(options.get("vflip", spec.vflip))}
    train_full = DetectionDataset(DetectionSource(tr, n_tr, image_size=size, convention=convention, names=tr_names),
                                  **common, **flips)
    test = DetectionDataset(DetectionSource(te, n_te, image_size=size, convention=convention, names=te_names),
                            **common)
    cidx = calib_indices(n_tr, calib_size, seed)
    return DatasetSplits(train=train_full.view(train_indices(n_tr, cidx, holdout_calib), augment=augment),
                         calib=train_full.view(cidx, augment=False), test=test)


def _files(name: str) -> str:
    spec = _SPECS[name]
    if spec.kind == "npz":
        return " + ".join(spec.files) + " (shared detection .npz layout)"
    if spec.kind == "voc":
        return ("VOCdevkit/VOC2007/ (torchvision VOCDetection) or Annotations/ + JPEGImages/ + "
                "ImageSets/Main/{trainval,test}.txt")
    return "annotations/instances_{train2017,val2017}.json + train2017/ + val2017/ (COCO json)"


_CLASSES = {"bccd": ("RBC", "WBC", "Platelets"), "raccoon": ("raccoon",), "voc_detection": VOC_CLASSES}
_NUM = {"bccd": 3, "raccoon": 1, "coco128": 80, "voc_detection": 20, "coco": 80}

for _name, _spec in _SPECS.items():
    register_dataset(DatasetInfo(_name, _NUM[_name], (3, *_spec.image_size), task="detection",
                                 classes=_CLASSES.get(_name, ())), functools.partial(_load, _name), _files(_name))

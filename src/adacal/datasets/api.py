"""Name-based dataset access with a calibration split carved from *training* data.

Usage::

    from adacal.datasets import get_splits, make_loader
    train, calib, test = get_splits("cifar10", "/path/to/cifar10", calib_size=1024)
    loader = make_loader(train, batch_size=128, shuffle=True, seed=0)

Names and sources (``source="auto"`` picks by the files present under ``root``):

============  ==========================================================================
``cifar10``   ``npz``: ``train_jpeg.npz`` (or decoded ``train.npz``) + ``test.npz`` (or
              ``test_jpeg.npz``); ``torchvision``: ``root/cifar-10-batches-py``
``cifar100``  ``torchvision`` only: ``root/cifar-100-python``
``mnist``     ``npz``: ``train.npz`` + ``test.npz``; ``torchvision``: ``root/MNIST/raw``
``imagenet``  ``torchvision`` ImageFolder: ``root/train/<class>/*``, ``root/val/<class>/*``
``digits``    scikit-learn ``load_digits`` (bundled, no download; ``root`` ignored unless it
              holds ``digits.npz``); no official test split, so a fixed stratified 20 % (seed 0)
              is the test set, independent of ``seed``
============  ==========================================================================

The calibration split is always a seeded random subset of the training split, evaluated without
augmentation.  With ``holdout_calib=True`` those samples are removed from ``train``; by default
they stay (conversion papers calibrate on images the ANN was trained on, never on test images).
Nothing is downloaded unless ``download=True`` (torchvision sources only).
"""

from __future__ import annotations

import functools
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from torch.utils.data import Dataset, Subset

from adacal.datasets.arrays import ArrayDataset, load_image_npz, load_sklearn_digits
from adacal.datasets.registry import (
    DatasetInfo,
    DatasetSplits,
    calib_indices,
    get_source,
    labels_of,
    register_dataset,
    train_indices,
)
from adacal.datasets.transforms import (
    CIFAR10_NORM,
    CIFAR100_NORM,
    DIGITS_NORM,
    IMAGENET_NORM,
    MNIST_NORM,
    ImageTransform,
    Normalization,
)
from adacal.errors import ConfigError, DataError

__all__ = ["get_dataset", "get_splits"]


_NORMS: dict[str, Normalization] = {
    "cifar10": CIFAR10_NORM, "cifar100": CIFAR100_NORM, "mnist": MNIST_NORM, "imagenet": IMAGENET_NORM,
    "digits": DIGITS_NORM,
}
_SOURCES = ("auto", "npz", "torchvision")
_SPLITS = ("train", "calib", "test")


def get_dataset(name: str, root: str | os.PathLike[str] | None = None, split: str = "train", *,
                augment: bool | None = None, calib_size: int = 1024, seed: int = 0, holdout_calib: bool = False,
                source: str = "auto", download: bool = False, options: Mapping[str, Any] | None = None) -> Dataset[Any]:
    """One split (``"train"``, ``"calib"`` or ``"test"``) of a named dataset; see :func:`get_splits`.

    ``augment`` defaults to True for ``"train"`` and is ignored for the other splits.
    """
    if split not in _SPLITS:
        raise ConfigError(f"unknown split {split!r}; valid: {list(_SPLITS)}")
    splits = get_splits(name, root, calib_size=calib_size, seed=seed, holdout_calib=holdout_calib,
                        augment=True if augment is None else augment, source=source, download=download,
                        options=options)
    return getattr(splits, split)


def get_splits(name: str, root: str | os.PathLike[str] | None = None, *, calib_size: int = 1024, seed: int = 0,
               holdout_calib: bool = False, augment: bool = True, source: str = "auto", download: bool = False,
               options: Mapping[str, Any] | None = None) -> DatasetSplits:
    """(train, calib, test) for a named dataset; ``calib`` always comes from the training data.

    ``source`` picks among a dataset's file layouts (``"auto"``: by the files present);
    ``options`` are dataset-specific settings (e.g. how events become frames).
    """
    src = get_source(name)
    if calib_size < 1:
        raise ConfigError(f"calib_size must be >= 1, got {calib_size}")
    return src.load(root, calib_size=calib_size, seed=seed, holdout_calib=holdout_calib, augment=augment,
                    source=source, download=download, options=dict(options or {}))


def _image_splits(name: str, root: str | os.PathLike[str] | None, *, calib_size: int, seed: int,
                  holdout_calib: bool, augment: bool, source: str, download: bool,
                  options: Mapping[str, Any]) -> DatasetSplits:
    if options:
        raise ConfigError(f"dataset {name!r} takes no options, got {sorted(options)}")
    if source not in _SOURCES:
        raise ConfigError(f"unknown source {source!r}; valid: {list(_SOURCES)}")
    if name == "digits":
        return _digits_splits(root, calib_size, seed, holdout_calib, augment)
    if root is None:
        raise DataError(f"dataset {name!r} needs a root directory (none given)")
    rootp = Path(root)
    if not rootp.is_dir():
        raise DataError(f"data root {str(rootp)!r} for {name!r} is not a directory; "
                        f"expected files: {_expected_files(name)}")
    src = _pick_source(name, rootp, source, download)
    if src == "npz":
        return _npz_splits(name, rootp, calib_size, seed, holdout_calib, augment)
    return _torchvision_splits(name, rootp, calib_size, seed, holdout_calib, augment, download)


# --------------------------------------------------------------------------- internals
def _expected_files(name: str) -> list[str]:
    return {
        "cifar10": ["train_jpeg.npz (or train.npz)", "test.npz (or test_jpeg.npz)", "or cifar-10-batches-py/"],
        "cifar100": ["cifar-100-python/"],
        "mnist": ["train.npz", "test.npz", "or MNIST/raw/"],
        "imagenet": ["train/<class>/*.JPEG", "val/<class>/*.JPEG"],
        "digits": ["digits.npz (optional)"],
    }[name]


def _pick_source(name: str, root: Path, source: str, download: bool) -> str:
    npz_ok = name in ("cifar10", "mnist")
    if source == "npz":
        if not npz_ok:
            raise ConfigError(f"dataset {name!r} has no npz source; use source='torchvision'")
        return "npz"
    if source == "torchvision":
        return "torchvision"
    if npz_ok and any((root / f).is_file() for f in ("train_jpeg.npz", "train.npz", "test.npz", "test_jpeg.npz")):
        return "npz"
    tv_marker = {"cifar10": "cifar-10-batches-py", "cifar100": "cifar-100-python", "mnist": "MNIST",
                 "imagenet": "train"}[name]
    if (root / tv_marker).exists() or download:
        return "torchvision"
    raise DataError(f"no {name!r} data found under {str(root)!r}; expected files: {_expected_files(name)}")


def _array_splits(images: np.ndarray, labels: np.ndarray, test_images: np.ndarray, test_labels: np.ndarray,
                  norm: Normalization, classes: list[str] | None, calib_size: int, seed: int, holdout: bool,
                  augment: bool, crop_padding: int, hflip: bool, max_value: float = 255.0) -> DatasetSplits:
    eval_tf = ImageTransform(norm, max_value=max_value)
    train_tf = ImageTransform(norm, crop_padding=crop_padding, hflip=hflip, max_value=max_value) if augment else eval_tf
    full = ArrayDataset(images, labels, eval_tf, classes=classes)
    cidx = calib_indices(len(full), calib_size, seed, np.asarray(labels))
    return DatasetSplits(train=full.subset(train_indices(len(full), cidx, holdout), transform=train_tf),
                         calib=full.subset(cidx, transform=eval_tf),
                         test=ArrayDataset(test_images, test_labels, eval_tf, classes=classes))


def _first_existing(root: Path, names: tuple[str, ...], what: str, name: str) -> Path:
    for n in names:
        if (root / n).is_file():
            return root / n
    raise DataError(f"{name} {what} split not found under {str(root)!r}; expected one of {list(names)}")


def _npz_splits(name: str, root: Path, calib_size: int, seed: int, holdout: bool, augment: bool) -> DatasetSplits:
    if name == "cifar10":
        train_p = _first_existing(root, ("train.npz", "train_jpeg.npz"), "train", name)
        test_p = _first_existing(root, ("test.npz", "test_jpeg.npz"), "test", name)
        crop, flip = 4, True
    else:  # mnist: no flips (digits are not mirror-symmetric), no crops by default
        train_p = _first_existing(root, ("train.npz",), "train", name)
        test_p = _first_existing(root, ("test.npz",), "test", name)
        crop, flip = 0, False
    x, y, classes = load_image_npz(train_p)
    xt, yt, _ = load_image_npz(test_p)
    return _array_splits(x, y, xt, yt, _NORMS[name], classes or None, calib_size, seed, holdout, augment, crop, flip)


def _digits_splits(root: str | os.PathLike[str] | None, calib_size: int, seed: int, holdout: bool,
                   augment: bool) -> DatasetSplits:
    if root is not None and (Path(root) / "digits.npz").is_file():
        images, labels, _ = load_image_npz(Path(root) / "digits.npz")
    elif root is not None and not Path(root).is_dir():
        raise DataError(f"digits root {str(root)!r} is not a directory (expected digits.npz, or pass root=None "
                        f"to use the copy bundled with scikit-learn)")
    else:
        images, labels = load_sklearn_digits()
    from sklearn.model_selection import train_test_split

    idx = np.arange(len(labels))
    tr, te = train_test_split(idx, test_size=0.2, random_state=0, stratify=labels)
    tr, te = np.sort(tr), np.sort(te)
    # 8x8 digits: a 1-pixel shift is the only sensible augmentation
    return _array_splits(images[tr], labels[tr], images[te], labels[te], DIGITS_NORM, None, calib_size, seed, holdout,
                         augment, crop_padding=1, hflip=False, max_value=16.0)


def _torchvision_splits(name: str, root: Path, calib_size: int, seed: int, holdout: bool, augment: bool,
                        download: bool) -> DatasetSplits:
    import torchvision
    from torchvision import transforms as T

    norm = _NORMS[name]
    normalize = T.Normalize(norm.mean, norm.std)
    if name == "imagenet":
        train_tf = T.Compose([T.RandomResizedCrop(224), T.RandomHorizontalFlip(), T.ToTensor(), normalize])
        eval_tf = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(), normalize])
        for sub in ("train", "val"):
            if not (root / sub).is_dir():
                raise DataError(f"ImageNet folder {str(root / sub)!r} not found; expected files: "
                                f"{_expected_files(name)}")

        def make(train: bool, tf: Any) -> Dataset[Any]:
            return torchvision.datasets.ImageFolder(str(root / ("train" if train else "val")), transform=tf)
    else:
        cls = {"cifar10": torchvision.datasets.CIFAR10, "cifar100": torchvision.datasets.CIFAR100,
               "mnist": torchvision.datasets.MNIST}[name]
        aug = [T.RandomCrop(32, padding=4), T.RandomHorizontalFlip()] if name != "mnist" else []
        train_tf = T.Compose([*aug, T.ToTensor(), normalize])
        eval_tf = T.Compose([T.ToTensor(), normalize])

        def make(train: bool, tf: Any) -> Dataset[Any]:
            try:
                return cls(str(root), train=train, transform=tf, download=download)
            except RuntimeError as exc:  # torchvision: "Dataset not found or corrupted"
                raise DataError(f"torchvision {name!r} not found under {str(root)!r} ({exc}); expected files: "
                                f"{_expected_files(name)}; pass download=True to fetch it") from exc

    train_full = make(True, train_tf if augment else eval_tf)
    calib_full = make(True, eval_tf)
    n = len(train_full)  # type: ignore[arg-type]
    cidx = calib_indices(n, calib_size, seed, labels_of(calib_full))
    return DatasetSplits(train=Subset(train_full, train_indices(n, cidx, holdout).tolist()) if holdout else train_full,
                         calib=Subset(calib_full, cidx.tolist()), test=make(False, eval_tf))


for _info, _files in (
    (DatasetInfo("cifar10", 10, (3, 32, 32)), "train_jpeg.npz (or train.npz) + test.npz (or test_jpeg.npz), "
     "or cifar-10-batches-py/"),
    (DatasetInfo("cifar100", 100, (3, 32, 32)), "cifar-100-python/"),
    (DatasetInfo("mnist", 10, (1, 28, 28)), "train.npz + test.npz, or MNIST/raw/"),
    (DatasetInfo("imagenet", 1000, (3, 224, 224)), "train/<class>/*.JPEG + val/<class>/*.JPEG"),
    (DatasetInfo("digits", 10, (1, 8, 8)), "nothing (bundled with scikit-learn), or digits.npz"),
):
    register_dataset(_info, functools.partial(_image_splits, _info.name), _files)

"""Dataset loading: shared ``.npz`` layouts, torchvision datasets and scikit-learn digits.

Every dataset offers ``(train, calib, test)`` via :func:`get_splits`; the calibration split is
always drawn from training data.  Paths are arguments; nothing here assumes a fixed location.
See :mod:`adacal.datasets.api` for names, sources and expected files.
"""

from __future__ import annotations

from adacal.datasets import pointcloud as _pointcloud  # noqa: F401  (registers modelnet10, modelnet40, shapenetpart)
from adacal.datasets import segmentation as _segmentation  # noqa: F401  (registers camvid, voc, cityscapes)
from adacal.datasets.api import get_dataset, get_splits
from adacal.datasets.arrays import (
    ArrayDataset,
    clear_decode_cache,
    decode_jpeg_arrays,
    load_image_npz,
    load_sklearn_digits,
)
from adacal.datasets.registry import (
    DATASETS,
    DatasetInfo,
    DatasetSplits,
    dataset_info,
    labels_of,
    make_loader,
    register_dataset,
    sample_indices,
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

__all__ = ["ArrayDataset", "CIFAR10_NORM", "CIFAR100_NORM", "DATASETS", "DIGITS_NORM", "DatasetInfo", "DatasetSplits",
           "IMAGENET_NORM", "ImageTransform", "MNIST_NORM", "Normalization", "clear_decode_cache", "dataset_info",
           "labels_of", "register_dataset", "sample_indices", "decode_jpeg_arrays", "get_dataset", "get_splits",
           "load_image_npz", "load_sklearn_digits", "make_loader"]
from adacal.datasets import detection as _detection  # noqa: E402,F401  (registers bccd, raccoon, coco128, voc, coco)
from adacal.datasets import events as _events  # noqa: F401,E402  (registers the event datasets)

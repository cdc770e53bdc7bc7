"""In-memory datasets backed by NumPy arrays: the shared ``.npz`` layouts and sklearn digits.

``.npz`` layouts understood (all ``allow_pickle=False``):

* decoded images: ``images`` (N,H,W[,C]) uint8 + ``labels`` (N,) int -- e.g. CIFAR-10 ``test.npz``,
  MNIST ``train.npz`` / ``test.npz``, digits ``digits.npz``;
* JPEG bytes: ``jpeg_bytes`` (uint8, concatenated files) + ``offsets`` (N+1,) + ``labels`` -- e.g.
  CIFAR-10 ``train_jpeg.npz``; decoded once with Pillow and memoised per (path, size, mtime) so that
  train and calibration splits share one decoded copy.
"""

from __future__ import annotations

import functools
import io
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from adacal.errors import DataError

__all__ = ["ArrayDataset", "load_image_npz", "decode_jpeg_arrays", "load_sklearn_digits", "clear_decode_cache"]


class ArrayDataset(Dataset[tuple[torch.Tensor, int]]):
    """``(images[i], labels[i])`` for ``i`` in ``indices``, transformed on access.

    Sharing the underlying arrays between splits (different ``indices`` / ``transform``) keeps one
    decoded copy in memory.
    """

    def __init__(self, images: np.ndarray, labels: np.ndarray,
                 transform: Callable[[np.ndarray], torch.Tensor] | None = None,
                 indices: Sequence[int] | np.ndarray | None = None, classes: Sequence[str] | None = None) -> None:
        if len(images) != len(labels):
            raise DataError(f"images ({len(images)}) and labels ({len(labels)}) differ in length")
        self.images = images
        self.labels = np.asarray(labels, dtype=np.int64)
        self.transform = transform
        self.indices = np.arange(len(images)) if indices is None else np.asarray(indices, dtype=np.int64)
        self.classes = list(classes) if classes is not None else None

    def __len__(self) -> int:
        return int(self.indices.shape[0])

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        k = int(self.indices[i])
        img = self.images[k]
        x = self.transform(img) if self.transform is not None else torch.as_tensor(img)
        return x, int(self.labels[k])

    @property
    def targets(self) -> np.ndarray:
        """Labels of the selected samples (used for stratified splits)."""
        return self.labels[self.indices]

    def subset(self, indices: Sequence[int] | np.ndarray,
               transform: Callable[[np.ndarray], torch.Tensor] | None = None) -> ArrayDataset:
        """A view on positions ``indices`` of this dataset, optionally with another transform."""
        idx = self.indices[np.asarray(indices, dtype=np.int64)]
        return ArrayDataset(self.images, self.labels, transform if transform is not None else self.transform, idx,
                            self.classes)


def _open_npz(path: Path, required: Sequence[str]) -> dict[str, np.ndarray]:
    if not path.is_file():
        raise DataError(f"data file {str(path)!r} not found (expected an .npz with keys {list(required)})")
    try:
        with np.load(path, allow_pickle=False) as z:
            missing = [k for k in required if k not in z.files]
            if missing:
                raise DataError(f"{str(path)!r} lacks keys {missing}; it has {z.files}, expected {list(required)}")
            return {k: z[k] for k in z.files if k in required or k == "classes"}
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"cannot read {str(path)!r} as .npz: {exc}") from exc


def decode_jpeg_arrays(jpeg_bytes: np.ndarray, offsets: np.ndarray, mode: str = "RGB") -> np.ndarray:
    """Decode concatenated JPEG files into one (N,H,W,C) uint8 array (all images must share a size)."""
    from PIL import Image

    buf = jpeg_bytes.tobytes()
    n = len(offsets) - 1
    first = np.asarray(Image.open(io.BytesIO(buf[offsets[0] : offsets[1]])).convert(mode))
    out = np.empty((n, *first.shape), dtype=np.uint8)
    for i in range(n):
        img = np.asarray(Image.open(io.BytesIO(buf[offsets[i] : offsets[i + 1]])).convert(mode))
        if img.shape != first.shape:
            raise DataError(f"JPEG {i} has shape {img.shape}, expected {first.shape} like image 0")
        out[i] = img
    return out


@functools.lru_cache(maxsize=4)
def _load_npz_cached(path: str, size: int, mtime_ns: int) -> tuple[np.ndarray, np.ndarray, tuple[str, ...]]:
    p = Path(path)
    with np.load(p, allow_pickle=False) as z:
        files = set(z.files)
    if {"jpeg_bytes", "offsets", "labels"} <= files:
        d = _open_npz(p, ["jpeg_bytes", "offsets", "labels"])
        images = decode_jpeg_arrays(d["jpeg_bytes"], d["offsets"])
    else:
        d = _open_npz(p, ["images", "labels"])
        images = d["images"]
    labels = d["labels"].astype(np.int64)
    if len(images) != len(labels):
        raise DataError(f"{path!r}: {len(images)} images but {len(labels)} labels")
    images.setflags(write=False)
    labels.setflags(write=False)
    classes = tuple(str(c) for c in d["classes"]) if "classes" in d else ()
    return images, labels, classes


def load_image_npz(path: str | os.PathLike[str]) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Read ``(images uint8, labels int64, class names)`` from a decoded or JPEG ``.npz`` (memoised)."""
    p = Path(path)
    if not p.is_file():
        raise DataError(
            f"data file {str(p)!r} not found (expected an .npz with 'images'+'labels' "
            f"or 'jpeg_bytes'+'offsets'+'labels')"
        )
    st = p.stat()
    try:
        images, labels, classes = _load_npz_cached(str(p.resolve()), st.st_size, st.st_mtime_ns)
    except DataError:
        raise
    except Exception as exc:
        raise DataError(f"cannot read {str(p)!r} as an image .npz: {exc}") from exc
    return images, labels, list(classes)


def clear_decode_cache() -> None:
    """Drop memoised decoded arrays (frees ~150 MB per decoded CIFAR-10 train set)."""
    _load_npz_cached.cache_clear()


def load_sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    """The 1797 8x8 digits bundled with scikit-learn, as uint8 (values 0..16) and int64 labels."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return d.images.astype(np.uint8), d.target.astype(np.int64)

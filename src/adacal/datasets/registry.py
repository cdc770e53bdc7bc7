"""Named datasets: what each is (its task, classes, input shape) and how its splits are loaded.

A dataset family (images, events, point clouds, ...) lives in its own module and calls
:func:`register_dataset` once per name; ``adacal.datasets`` imports every family. Loaders read
local files only (official layouts or the shared ``.npz`` layout) and never download unless asked.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset

from adacal.checks import suggest
from adacal.errors import ConfigError

__all__ = ["DATASETS", "DatasetInfo", "DatasetSplits", "DatasetSource", "calib_indices", "dataset_info",
           "get_source", "make_loader", "register_dataset", "sample_indices", "stratified_order", "train_indices"]


@dataclass(frozen=True)
class DatasetInfo:
    """Static facts about a named dataset: its default task, classes and per-sample input shape.

    ``extra``: anything else a task or the report needs (``ignore_index``, a colour palette, ...).
    """

    name: str
    num_classes: int
    input_shape: tuple[int, ...]
    task: str = "classification"
    classes: tuple[str, ...] = ()
    extra: Mapping[str, Any] = field(default_factory=dict)


class DatasetSplits(NamedTuple):
    """``train`` (augmented if requested), ``calib`` (subset of training data, no augmentation), ``test``."""

    train: Dataset[Any]
    calib: Dataset[Any]
    test: Dataset[Any]


#: ``load(root, *, calib_size, seed, holdout_calib, augment, source, download, options) -> DatasetSplits``
Loader = Callable[..., DatasetSplits]


@dataclass(frozen=True)
class DatasetSource:
    info: DatasetInfo
    load: Loader
    files: str  # the expected layout, for error messages


DATASETS: dict[str, DatasetSource] = {}


def register_dataset(info: DatasetInfo, load: Loader, files: str) -> DatasetSource:
    """Make a dataset loadable by ``info.name`` (``adacal.datasets.get_splits``, ``--dataset``)."""
    src = DatasetSource(info, load, files)
    old = DATASETS.get(info.name)
    if old is not None and old.load is not load:  # two families must not silently take each other's name
        raise ConfigError(f"dataset name {info.name!r} is already registered ({old.files}); pick another name")
    DATASETS[info.name] = src
    return src


def get_source(name: str) -> DatasetSource:
    if name not in DATASETS:
        raise ConfigError(f"unknown dataset {name!r}; valid: {sorted(DATASETS)}{suggest(str(name), DATASETS)}")
    return DATASETS[name]


def dataset_info(name: str) -> DatasetInfo:
    return get_source(name).info


def calib_indices(n_train: int, calib_size: int, seed: int, labels: np.ndarray | None = None) -> np.ndarray:
    """A seeded random subset of the training split (calibration never sees test data), stratified by
    class when the loader passes the training ``labels`` (every class in proportion, see :func:`sample_indices`),
    in an order whose every prefix is a stratified sample too (:func:`stratified_order`): calibration
    reads its first batch(es) and profiling its first ``profile_batch`` samples, and a training set
    stored sorted by class (the CIFAR-10 ``.npz``) must not make those the first classes only."""
    if calib_size > n_train:
        raise ConfigError(f"calib_size={calib_size} exceeds the {n_train} training samples")
    picked = sample_indices(n_train, calib_size, seed, labels)
    return stratified_order(picked, None if labels is None else np.asarray(labels)[picked], seed)


def stratified_order(indices: np.ndarray, labels: np.ndarray | None, seed: int) -> np.ndarray:
    """``indices`` reordered at random (seeded) so that every prefix holds each class in proportion
    (within one sample): the k-th of a class's n_c samples gets the key ``(k + u)/n_c``, u uniform, and
    keys are sorted. Without labels: a seeded random permutation."""
    rng = np.random.default_rng([seed, 1])
    indices = np.asarray(indices)
    if labels is None or len(labels) != len(indices):
        return indices[rng.permutation(len(indices))]
    keys = np.empty(len(indices))
    for c in np.unique(labels):
        where = np.flatnonzero(labels == c)
        where = where[rng.permutation(len(where))]
        keys[where] = (np.arange(len(where)) + rng.random(len(where))) / len(where)
    return indices[np.argsort(keys, kind="stable")]


def train_indices(n_train: int, calib_idx: np.ndarray, holdout: bool) -> np.ndarray:
    if not holdout:
        return np.arange(n_train)
    mask = np.ones(n_train, dtype=bool)
    mask[calib_idx] = False
    return np.flatnonzero(mask)


def sample_indices(n: int, size: int, seed: int, labels: np.ndarray | None = None) -> np.ndarray:
    """``size`` of ``n`` sample indices drawn at random with ``seed``, stratified by ``labels`` if given.

    Used for every subset (``--test-size``): datasets stored sorted by class (the CIFAR-10 ``.npz``
    test set) would otherwise be scored on a few classes only. Sorted, so loading stays sequential.
    """
    if size >= n:
        return np.arange(n)
    rng = np.random.default_rng(seed)
    if labels is None or len(labels) != n:
        return np.sort(rng.permutation(n)[:size])
    labels = np.asarray(labels)
    classes, counts = np.unique(labels, return_counts=True)
    quota = np.floor(counts / n * size).astype(int)  # proportional share, then the largest remainders
    rest = size - int(quota.sum())
    order = np.argsort(-(counts / n * size - quota), kind="stable")
    quota[order[:rest]] += 1
    pick = [rng.permutation(np.flatnonzero(labels == c))[:q] for c, q in zip(classes, quota)]
    return np.sort(np.concatenate(pick))


def make_loader(dataset: Dataset[Any], batch_size: int, *, shuffle: bool = False, num_workers: int = 0,
                seed: int | None = None, drop_last: bool = False,
                collate_fn: Callable[[list[Any]], Any] | None = None) -> DataLoader[Any]:
    """A DataLoader with a seeded shuffle order (reproducible epochs) when ``seed`` is given."""
    if batch_size < 1:
        raise ConfigError(f"batch_size must be >= 1, got {batch_size}")
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=num_workers, generator=gen,
                      drop_last=drop_last, persistent_workers=num_workers > 0, collate_fn=collate_fn)


def subset(dataset: Dataset[Any], indices: np.ndarray) -> Subset[Any]:
    return Subset(dataset, [int(i) for i in indices])


def labels_of(dataset: Dataset[Any]) -> np.ndarray | None:
    """Class labels of a classification dataset without loading its samples, if it exposes them."""
    if isinstance(dataset, Subset):
        inner = labels_of(dataset.dataset)
        return None if inner is None else inner[np.asarray(dataset.indices)]
    for attr in ("targets", "labels"):
        y = getattr(dataset, attr, None)
        if y is not None:
            arr = np.asarray(y)
            if arr.ndim == 1 and len(arr) == len(dataset):  # type: ignore[arg-type]
                return arr
    return None

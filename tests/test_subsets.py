"""Subsets that do not mislead: test, calibration and profiling samples are seeded random draws,
stratified by class where there are labels, and the results name them (size, seed, class counts)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from adacal import cli
from adacal.config import DataSpec
from adacal.datasets import get_splits
from adacal.datasets.registry import calib_indices
from adacal.jobs import load_data, subset_facts
from adacal.models import build_model

pytestmark = pytest.mark.usefixtures("single_thread")


@pytest.fixture
def sorted_cifar(tmp_path: Path) -> Path:
    """A CIFAR-10 ``.npz`` layout whose train and test sets are sorted by class, like the shared copy."""
    rng = np.random.default_rng(0)
    for name, n in (("train.npz", 200), ("test.npz", 100)):
        np.savez(tmp_path / name, images=rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8),
                 labels=np.repeat(np.arange(10), n // 10).astype(np.int64))
    return tmp_path


def test_calibration_indices_are_stratified_when_labels_are_given() -> None:
    labels = np.repeat(np.arange(10), 100)  # sorted by class
    idx = calib_indices(1000, 50, seed=3, labels=labels)
    assert np.bincount(labels[idx], minlength=10).tolist() == [5] * 10
    assert not np.array_equal(idx, calib_indices(1000, 50, seed=4, labels=labels))  # seeded
    assert np.array_equal(idx, calib_indices(1000, 50, seed=3, labels=labels))
    plain = calib_indices(1000, 50, seed=3)  # no labels (other data families): a seeded random draw
    assert len(set(plain.tolist())) == 50 and plain.max() > 100


def test_every_prefix_of_the_calibration_order_is_stratified() -> None:
    """Calibration reads the first batch(es), profiling the first profile_batch samples: each prefix must be
    a stratified sample, even when the training set is stored sorted by class."""
    labels = np.repeat(np.arange(10), 100)
    idx = calib_indices(1000, 200, seed=0, labels=labels)
    assert sorted(idx.tolist()) == sorted(set(idx.tolist())) and len(idx) == 200
    for m in range(1, 201):
        counts = np.bincount(labels[idx[:m]], minlength=10)
        assert np.abs(counts - m / 10).max() <= 2, (m, counts)
    assert not np.array_equal(idx, np.sort(idx))  # not index order (which is class order here)


def test_sorted_npz_subsets_cover_every_class(sorted_cifar: Path) -> None:
    _, calib, _ = get_splits("cifar10", sorted_cifar, calib_size=20, seed=0)
    assert np.bincount(calib.targets, minlength=10).tolist() == [2] * 10
    data = load_data(DataSpec("cifar10", data_dir=str(sorted_cifar), calib_size=30, test_size=20, batch_size=8))
    facts = subset_facts(data)
    assert facts["test_subset"]["class_counts"] == {str(c): 2 for c in range(10)}  # not the first 20 = 2 classes
    assert facts["test_subset"]["size"] == 20 and facts["test_subset"]["seed"] == 0
    assert facts["calib_subset"]["class_counts"] == {str(c): 3 for c in range(10)}
    assert "stratified by class" in facts["calib_subset"]["sampling"]
    first = load_data(DataSpec("cifar10", data_dir=str(sorted_cifar), calib_size=100, batch_size=20))
    _, y = next(iter(first.calib))  # the batch thresholds are calibrated on
    assert sorted(set(y.tolist())) == list(range(10))


def test_results_name_every_subset(tmp_path: Path) -> None:
    weights = tmp_path / "w.pt"
    torch.manual_seed(0)
    torch.save(build_model("digits_cnn", 10).state_dict(), weights)
    out = tmp_path / "sweep"
    assert cli.main(["sweep", "--model", "digits_cnn", "--dataset", "digits", "--weights", str(weights), "--methods",
                     "plain,adafire", "--timesteps", "1", "--calib-size", "40", "--test-size", "30", "--no-iat",
                     "--no-report", "--set", "pipeline.profile_batch=16", "--set", "data.batch_size=20", "--out",
                     str(out), "--quiet"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    model = summary["model"]
    assert model["test_subset"]["size"] == 30 and sum(model["test_subset"]["class_counts"].values()) == 30
    assert len(model["test_subset"]["class_counts"]) == 10
    assert model["calib_subset"]["size"] == 40 and len(model["calib_subset"]["class_counts"]) == 10
    runs = {r["method"]: r["conversion"]["samples"] for r in summary["runs"]}
    assert runs["plain"] == {"thresholds": 20, "correction": 20, "profile": 0}  # one batch, no search
    assert runs["adafire"]["profile"] == 16

"""Dataset loaders on tiny fake ``.npz`` files (never the shared data) and sklearn digits."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image

from adacal.datasets import (
    CIFAR10_NORM,
    ImageTransform,
    decode_jpeg_arrays,
    get_dataset,
    get_splits,
    load_image_npz,
    make_loader,
)
from adacal.errors import ConfigError, DataError


def _jpeg_npz(path, images, labels):
    blobs = []
    for img in images:
        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="JPEG", quality=90)
        blobs.append(np.frombuffer(buf.getvalue(), dtype=np.uint8))
    offsets = np.concatenate([[0], np.cumsum([len(b) for b in blobs])]).astype(np.int64)
    np.savez(
        path,
        jpeg_bytes=np.concatenate(blobs),
        offsets=offsets,
        labels=labels.astype(np.int64),
        classes=np.array([f"c{i}" for i in range(10)]),
    )


@pytest.fixture
def cifar_dir(tmp_path):
    rng = np.random.default_rng(0)
    train = rng.integers(0, 256, (40, 32, 32, 3), dtype=np.uint8)
    _jpeg_npz(tmp_path / "train_jpeg.npz", train, np.arange(40) % 10)
    np.savez(
        tmp_path / "test.npz",
        images=rng.integers(0, 256, (12, 32, 32, 3), dtype=np.uint8),
        labels=(np.arange(12) % 10).astype(np.int64),
    )
    return tmp_path


def test_cifar_npz_splits(cifar_dir):
    tr, ca, te = get_splits("cifar10", cifar_dir, calib_size=8, seed=1)
    assert (len(tr), len(ca), len(te)) == (40, 8, 12)
    x, y = te[0]
    assert x.shape == (3, 32, 32) and x.dtype == torch.float32 and isinstance(y, int)
    # calibration samples are training images (same pixels, same labels), evaluated without augmentation
    assert set(ca.indices.tolist()) <= set(tr.indices.tolist())
    assert ca.images is tr.images
    k = int(ca.indices[0])
    xc, yc = ca[0]
    assert yc == int(tr.labels[k])
    assert torch.equal(xc, ImageTransform(CIFAR10_NORM)(tr.images[k]))
    assert torch.equal(ca[0][0], ca[0][0])  # deterministic


def test_cifar_holdout_calib_is_disjoint(cifar_dir):
    tr, ca, _ = get_splits("cifar10", cifar_dir, calib_size=10, holdout_calib=True)
    assert len(tr) == 30 and not set(ca.indices.tolist()) & set(tr.indices.tolist())
    assert get_dataset("cifar10", cifar_dir, "calib", calib_size=10).indices.tolist() == ca.indices.tolist()


def test_jpeg_decoding_matches_pillow(cifar_dir):
    x, y, classes = load_image_npz(cifar_dir / "train_jpeg.npz")
    assert x.shape == (40, 32, 32, 3) and x.dtype == np.uint8 and y.tolist() == (np.arange(40) % 10).tolist()
    assert classes[:2] == ["c0", "c1"]
    d = np.load(cifar_dir / "train_jpeg.npz")
    b, o = d["jpeg_bytes"], d["offsets"]
    ref = np.asarray(Image.open(io.BytesIO(b[o[5] : o[6]].tobytes())).convert("RGB"))
    assert np.array_equal(x[5], ref)
    assert np.array_equal(decode_jpeg_arrays(b, o)[5], ref)
    x2, _, _ = load_image_npz(cifar_dir / "train_jpeg.npz")
    assert x2 is x  # decoded once, memoised


def test_train_augmentation_and_normalisation():
    img = np.full((32, 32, 3), 255, dtype=np.uint8)
    img[:, :16] = 0  # left half black: a flip is visible
    ev = ImageTransform(CIFAR10_NORM)
    out = ev(img)
    mean = torch.tensor(CIFAR10_NORM.mean).view(3, 1, 1)
    std = torch.tensor(CIFAR10_NORM.std).view(3, 1, 1)
    assert torch.allclose(out[:, 0, 20], ((1 - mean) / std).flatten())
    aug = ImageTransform(CIFAR10_NORM, crop_padding=4, hflip=True)
    torch.manual_seed(0)
    outs = [aug(img) for _ in range(20)]
    assert all(o.shape == (3, 32, 32) for o in outs)
    assert any(not torch.equal(o, out) for o in outs)
    # zero padding is applied before normalisation (as torchvision's RandomCrop + Normalize)
    pad_val = ((0 - mean) / std).flatten()
    assert any(torch.allclose(o[:, 0, 0], pad_val) for o in outs)


def test_mnist_npz(tmp_path):
    rng = np.random.default_rng(0)
    for split, n in (("train", 30), ("test", 5)):
        np.savez(
            tmp_path / f"{split}.npz",
            images=rng.integers(0, 256, (n, 28, 28), dtype=np.uint8),
            labels=(np.arange(n) % 10).astype(np.int64),
        )
    tr, ca, te = get_splits("mnist", tmp_path, calib_size=4)
    assert (len(tr), len(ca), len(te)) == (30, 4, 5)
    assert tr[0][0].shape == (1, 28, 28)


def test_digits_splits_deterministic():
    tr, ca, te = get_splits("digits", calib_size=100, seed=3)
    assert (len(tr), len(ca), len(te)) == (1437, 100, 360)
    assert tr[0][0].shape == (1, 8, 8)
    assert set(ca.indices.tolist()) <= set(tr.indices.tolist())
    assert set(te.labels.tolist()) == set(range(10))
    tr2, ca2, te2 = get_splits("digits", calib_size=100, seed=4)
    assert np.array_equal(te.images, te2.images)  # the test split does not depend on the calib seed
    assert ca.indices.tolist() != ca2.indices.tolist()
    assert get_splits("digits", calib_size=100, seed=3).calib.indices.tolist() == ca.indices.tolist()
    # no test image is also a training image
    train_rows = {r.tobytes() for r in tr.images}
    assert (
        sum(r.tobytes() in train_rows for r in te.images) < 5
    )  # (a few digits are exact duplicates in sklearn)


def test_bad_paths_and_names(tmp_path, cifar_dir):
    with pytest.raises(DataError, match=r"does_not_exist.*expected files.*train_jpeg\.npz"):
        get_splits("cifar10", tmp_path / "does_not_exist")
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataError, match=r"no 'cifar10' data found under .*empty.*test\.npz"):
        get_splits("cifar10", empty)
    with pytest.raises(DataError, match=r"not found under .*empty.*cifar-10-batches-py.*download=True"):
        get_splits("cifar10", empty, source="torchvision")
    with pytest.raises(DataError, match=r"no 'imagenet' data found under .*empty.*train/<class>"):
        get_splits("imagenet", empty)
    with pytest.raises(DataError, match=r"ImageNet folder .*empty/train"):
        get_splits("imagenet", empty, source="torchvision")
    (empty / "test.npz").write_bytes(b"junk")
    with pytest.raises(DataError, match=r"train split not found .*train_jpeg\.npz"):
        get_splits("cifar10", empty)
    np.savez(empty / "train.npz", pixels=np.zeros((2, 32, 32, 3), np.uint8))
    with pytest.raises(DataError, match=r"train\.npz.*lacks keys \['images', 'labels'\]"):
        get_splits("cifar10", empty)
    with pytest.raises(DataError, match="needs a root"):
        get_splits("cifar10", None)
    with pytest.raises(ConfigError, match=r"unknown dataset 'cifar11'.*cifar10"):
        get_splits("cifar11", cifar_dir)
    with pytest.raises(ConfigError, match="calib_size=100 exceeds the 40"):
        get_splits("cifar10", cifar_dir, calib_size=100)
    with pytest.raises(ConfigError, match="unknown split"):
        get_dataset("cifar10", cifar_dir, "val")


def test_make_loader_seeded_order(cifar_dir):
    _, _, te = get_splits("cifar10", cifar_dir, calib_size=4)
    ys = [[int(v) for _, y in make_loader(te, 4, shuffle=True, seed=7) for v in y] for _ in range(2)]
    assert ys[0] == ys[1] and sorted(ys[0]) == sorted(te.labels.tolist())
    xb, yb = next(iter(make_loader(te, 5)))
    assert xb.shape == (5, 3, 32, 32) and yb.dtype == torch.int64
    with pytest.raises(ConfigError, match="batch_size"):
        make_loader(te, 0)

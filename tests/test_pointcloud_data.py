"""Point-cloud datasets read the official layouts (tiny synthetic stand-ins written into tmp_path)."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from adacal.datasets import get_splits
from adacal.datasets.pointcloud import (
    SHAPENET_PART_CATEGORIES,
    choose_points,
    normalize_unit_sphere,
    read_off,
    sample_surface,
)
from adacal.errors import ConfigError, DataError

CUBE_OFF = """OFF
8 6 0
-1 -1 -1
1 -1 -1
1 1 -1
-1 1 -1
-1 -1 1
1 -1 1
1 1 1
-1 1 1
4 0 1 2 3
4 4 5 6 7
4 0 1 5 4
4 2 3 7 6
4 1 2 6 5
4 0 3 7 4
"""
# ModelNet's known defect: the counts run into the header line
TETRA_OFF = "OFF4 4 0\n0 0 0\n1 0 0\n0 1 0\n0 0 1\n3 0 1 2\n3 0 1 3\n3 0 2 3\n3 1 2 3\n"


# ------------------------------------------------------------------------------------------ pure maths
def test_normalize_unit_sphere_centres_and_scales_xyz_only() -> None:
    pts = np.array([[10, 0, 0, 0.0, 0.0, 1.0], [14, 0, 0, 0.0, 1.0, 0.0], [12, 2, 0, 1.0, 0.0, 0.0]])
    out = normalize_unit_sphere(pts)
    assert np.allclose(out[:, :3].mean(0), 0, atol=1e-6)
    assert np.isclose(np.linalg.norm(out[:, :3], axis=1).max(), 1.0)
    assert np.array_equal(out[:, 3:], pts[:, 3:])  # normals untouched


def test_choose_points_without_replacement_when_possible() -> None:
    rng = np.random.default_rng(0)
    assert sorted(choose_points(5, 5, rng).tolist()) == [0, 1, 2, 3, 4]
    small = choose_points(3, 7, rng)
    assert len(small) == 7 and set(small.tolist()) == {0, 1, 2}
    with pytest.raises(DataError, match="no points"):
        choose_points(0, 4, rng)


def test_read_off_and_sample_surface(tmp_path: Path) -> None:
    (tmp_path / "cube.off").write_text(CUBE_OFF)
    (tmp_path / "tetra.off").write_text(TETRA_OFF)
    verts, faces = read_off(tmp_path / "tetra.off")
    assert verts.shape == (4, 3) and len(faces) == 4
    verts, faces = read_off(tmp_path / "cube.off")
    pts = sample_surface(verts, faces, 4000, np.random.default_rng(0))
    assert pts.shape == (4000, 3)
    assert np.allclose(np.abs(pts).max(1), 1.0, atol=1e-5)  # every point on a face of the cube
    faces_hit = np.argmax(np.abs(pts), 1) * 2 + (pts[np.arange(4000), np.argmax(np.abs(pts), 1)] > 0)
    counts = np.bincount(faces_hit, minlength=6)
    assert counts.min() > 550 and counts.max() < 780  # equal areas, equal shares (≈ 667 each)
    # a triangle 100x larger in area gets ~100x the points
    v = np.array([[0, 0, 0], [1, 0, 0], [0, 1, 0], [0, 0, 5], [10, 0, 5], [0, 10, 5]], dtype=float)
    big = sample_surface(v, [[0, 1, 2], [3, 4, 5]], 10100, np.random.default_rng(1))
    assert 50 < int((big[:, 2] < 1).sum()) < 160
    (tmp_path / "bad.off").write_text("PLY\n")
    with pytest.raises(DataError, match="not an OFF mesh"):
        read_off(tmp_path / "bad.off")


# ------------------------------------------------------------------------------------------ ModelNet
def _modelnet_npz(root: Path, n_points: int = 40) -> None:
    g = np.random.default_rng(0)
    for split, n in (("train", 12), ("test", 6)):
        labels = np.arange(n) % 10
        pts = (g.normal(size=(n, n_points, 3)) * 30 + 100).astype(np.float32)  # raw mesh units
        np.savez(root / f"{split}.npz", points=pts, labels=labels, classes=np.array([f"c{i}" for i in range(10)]))


def test_modelnet_npz_layout(tmp_path: Path) -> None:
    _modelnet_npz(tmp_path)
    sp = get_splits("modelnet10", tmp_path, calib_size=4, options={"num_points": 32})
    assert (len(sp.train), len(sp.calib), len(sp.test)) == (12, 4, 6)
    x, y = sp.test[3]
    assert x.shape == (3, 32) and x.dtype == torch.float32 and y == 3
    assert float(x.norm(dim=0).max()) <= 1.0 + 1e-5  # normalised (a subset of the unit-sphere cloud)
    assert torch.equal(sp.test[3][0], x)  # evaluation points are a fixed subset
    torch.manual_seed(0)
    a = sp.train[0][0]
    b = sp.train[0][0]
    assert not torch.equal(a, b)  # training points: a new subset, scale and shift each draw
    assert not torch.equal(sp.calib[0][0], a)  # calibration: not augmented
    torch.testing.assert_close(sp.calib[0][0], sp.calib[0][0])


def test_modelnet_off_layout_samples_meshes(tmp_path: Path) -> None:
    for cls in ("cube", "tetra"):
        for split in ("train", "test"):
            folder = tmp_path / cls / split
            folder.mkdir(parents=True)
            for k in range(2):
                (folder / f"{cls}_{k:04d}.off").write_text(CUBE_OFF if cls == "cube" else TETRA_OFF)
    sp = get_splits("modelnet40", tmp_path, calib_size=2, options={"num_points": 64})
    assert sp.test.classes == ["cube", "tetra"] and sp.test.labels.tolist() == [0, 0, 1, 1]
    x, _ = sp.test[0]
    assert x.shape == (3, 64)
    cube = x.numpy()  # centred on the sample mean and scaled: each face is still a plane at an extreme
    lo, hi = cube.min(1, keepdims=True), cube.max(1, keepdims=True)
    on_face = ((np.abs(cube - lo) < 1e-5) | (np.abs(cube - hi) < 1e-5)).any(0)
    assert on_face.all()


def test_modelnet_resampled_and_hdf5_layouts(tmp_path: Path) -> None:
    g = np.random.default_rng(0)
    res = tmp_path / "resampled"
    (res / "bed").mkdir(parents=True)
    (res / "chair").mkdir()
    (res / "modelnet10_shape_names.txt").write_text("bed\nchair\n")
    (res / "modelnet10_train.txt").write_text("bed_0001\nchair_0001\nchair_0002\n")
    (res / "modelnet10_test.txt").write_text("bed_0002\n")
    for sid in ("bed_0001", "bed_0002", "chair_0001", "chair_0002"):
        rows = g.normal(size=(50, 6))
        text = "\n".join(",".join(f"{v:.6f}" for v in r) for r in rows)
        (res / sid.rsplit("_", 1)[0] / f"{sid}.txt").write_text(text)
    sp = get_splits("modelnet10", res, calib_size=2, options={"num_points": 20, "normals": True})
    assert sp.test[0][0].shape == (6, 20) and sp.test.labels.tolist() == [0]
    assert sorted(sp.train.labels.tolist()) == [0, 1, 1]

    h5py = pytest.importorskip("h5py")
    h5 = tmp_path / "hdf5"
    h5.mkdir()
    for split, n in (("train", 5), ("test", 3)):
        with h5py.File(h5 / f"ply_data_{split}0.h5", "w") as f:
            f["data"] = g.normal(size=(n, 30, 3)).astype(np.float32)
            f["label"] = (np.arange(n) % 2).reshape(-1, 1).astype(np.uint8)
        (h5 / f"{split}_files.txt").write_text(f"data/modelnet40_ply_hdf5_2048/ply_data_{split}0.h5\n")
    sp = get_splits("modelnet40", h5, calib_size=2, options={"num_points": 16})
    assert len(sp.test) == 3 and sp.test[2][0].shape == (3, 16) and sp.test[2][1] == 0


def test_modelnet_errors_name_the_problem(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="needs --data-dir"):
        get_splits("modelnet10", None)
    with pytest.raises(DataError, match="no modelnet10 data found"):
        get_splits("modelnet10", tmp_path)
    _modelnet_npz(tmp_path)
    with pytest.raises(ConfigError, match="unknown modelnet dataset option"):
        get_splits("modelnet10", tmp_path, calib_size=2, options={"points": 3})
    with pytest.raises(ConfigError, match="num_points"):
        get_splits("modelnet10", tmp_path, calib_size=2, options={"num_points": 0})
    np.savez(tmp_path / "test.npz", points=np.ones((2, 8, 3), np.float32), labels=np.array([0, 12]))
    with pytest.raises(DataError, match="outside"):
        get_splits("modelnet10", tmp_path, calib_size=2)


# ------------------------------------------------------------------------------------------ ShapeNetPart
def _shapenet_official(root: Path, normal: bool) -> None:
    g = np.random.default_rng(0)
    synsets = {"Airplane": "02691156", "Cap": "02954340"}
    (root / "synsetoffset2category.txt").write_text("".join(f"{c}\t{s}\n" for c, s in synsets.items()))
    (root / "train_test_split").mkdir(parents=True)
    lists: dict[str, list[str]] = {"train": [], "val": [], "test": []}
    for cat, syn in synsets.items():
        local = 4 if cat == "Airplane" else 2
        for k, split in enumerate(("train", "train", "val", "test")):
            sid = f"{cat.lower()}{k}"
            lists[split].append(f"shape_data/{syn}/{sid}")
            n = 30 + k
            xyz = g.normal(size=(n, 3)) * 5
            part = g.integers(0, local, n)
            if normal:
                (root / syn).mkdir(exist_ok=True)
                glob = part + (0 if cat == "Airplane" else 6)
                rows = np.concatenate([xyz, g.normal(size=(n, 3)), glob[:, None]], 1)
                (root / syn / f"{sid}.txt").write_text("\n".join(" ".join(f"{v:.5f}" for v in r) for r in rows))
            else:
                (root / syn / "points").mkdir(parents=True, exist_ok=True)
                (root / syn / "points_label").mkdir(exist_ok=True)
                (root / syn / "points" / f"{sid}.pts").write_text("\n".join(" ".join(map(str, r)) for r in xyz))
                (root / syn / "points_label" / f"{sid}.seg").write_text("\n".join(str(p + 1) for p in part))
    for split, items in lists.items():
        (root / "train_test_split" / f"shuffled_{split}_file_list.json").write_text(json.dumps(items))


@pytest.mark.parametrize("normal", [True, False], ids=["v0_normal", "v0"])
def test_shapenetpart_official_layouts(tmp_path: Path, normal: bool) -> None:
    _shapenet_official(tmp_path, normal)
    sp = get_splits("shapenetpart", tmp_path, calib_size=2, options={"num_points": 24})
    assert len(sp.train) == 6 and len(sp.test) == 2  # train + val by default (the seed's trainval)
    for (pts, onehot), parts in (sp.test[i] for i in range(len(sp.test))):
        assert pts.shape == (3, 24) and parts.shape == (24,) and parts.dtype == torch.int64
        cat = int(onehot.argmax())
        assert float(onehot.sum()) == 1.0 and SHAPENET_PART_CATEGORIES[cat] in ("Airplane", "Cap")
        allowed = range(0, 4) if cat == 0 else range(6, 8)  # global part ids of the category
        assert set(parts.tolist()) <= set(allowed)
    only_cap = get_splits("shapenetpart", tmp_path, calib_size=1,
                          options={"num_points": 24, "categories": ["Cap"], "train_split": "train"})
    assert len(only_cap.train) == 2 and {int(o.argmax()) for (_, o), _ in only_cap.test} == {2}
    with pytest.raises(ConfigError, match="unknown ShapeNetPart categories"):
        get_splits("shapenetpart", tmp_path, calib_size=1, options={"categories": ["Hat"]})


def test_shapenetpart_shared_npz_layout(tmp_path: Path) -> None:
    g = np.random.default_rng(0)
    for split, sizes in (("val", (30, 41)), ("test", (35, 28, 50))):
        n = sum(sizes)
        np.savez(tmp_path / f"{split}.npz", points=g.normal(size=(n, 3)).astype(np.float32),
                 normals=g.normal(size=(n, 3)).astype(np.float32), part_labels=g.integers(6, 8, n),
                 offsets=np.cumsum((0, *sizes)), category=np.array("Cap"), category_id=np.array(0),
                 id_scan=np.arange(len(sizes)))
    sp = get_splits("shapenetpart", tmp_path, calib_size=2, options={"num_points": 32, "normals": True})
    assert (len(sp.train), len(sp.test)) == (2, 3)  # val.npz is the training split of this layout
    (pts, onehot), parts = sp.test[1]  # 28 points: all of them, and 4 repeated to fill 32
    assert pts.shape == (6, 32) and int(onehot.argmax()) == 2 and set(parts.tolist()) <= {6, 7}
    assert float(pts[:3].norm(dim=0).max()) == pytest.approx(1.0, abs=1e-5)  # the farthest point is in

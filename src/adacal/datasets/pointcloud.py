"""3-D point clouds: ModelNet10/40 (shape classification) and ShapeNetPart (part segmentation).

Every cloud is centred and scaled to the unit sphere (the usual PointNet preprocessing) and fed
as ``[C, N]`` (xyz, then normals if asked). Classification samples are ``(points, label)``;
part-segmentation samples are ``((points, category one-hot), per-point part labels)``, part ids
global over ShapeNetPart's 16 categories (0..49, as in the seed's code).

Layouts read (``source="auto"`` picks by the files under ``root``; nothing is downloaded):

================  =================================================================================
``modelnet10/40``  ``npz``: ``train.npz`` + ``test.npz`` (``points`` (S, N, 3), ``labels``, ``classes``;
                   the layout of ``../shared/data/pointcloud/modelnet10``);
                   ``resampled``: PointNet++'s ``modelnet40_normal_resampled`` (``<name>_shape_names.txt``,
                   ``<name>_train.txt``, ``<name>_test.txt``, ``<class>/<shape>.txt`` rows x,y,z,nx,ny,nz;
                   the first ``num_points`` rows are used, as in the PointNet++ code);
                   ``hdf5``: PointNet's ``modelnet40_ply_hdf5_2048`` (``train_files.txt``,
                   ``test_files.txt``, ``ply_data_*.h5`` with ``data`` and ``label``; needs h5py);
                   ``off``: the official meshes ``<class>/{train,test}/<shape>.off``, sampled
                   uniformly on the surface (area-weighted, seeded per shape) once at load time
================  =================================================================================

``shapenetpart``: ``normal``: ``shapenetcore_partanno_segmentation_benchmark_v0_normal``
(``synsetoffset2category.txt``, ``<synset>/<id>.txt`` rows x y z nx ny nz part,
``train_test_split/shuffled_{train,val,test}_file_list.json``); ``v0``: the original
``shapenetcore_partanno_segmentation_benchmark_v0`` (``<synset>/points/<id>.pts``,
``<synset>/points_label/<id>.seg`` with per-category part ids from 1); ``npz``: the layout of
``../shared/data/pointcloud/shapenetpart_cap`` (``val.npz`` is the training split there — its
``train`` file is missing — and ``test.npz`` the test split).

Options (``--set data.options.KEY=VALUE``): ``num_points`` (1024 ModelNet, 2048 ShapeNetPart),
``normals`` (false; ``resampled``/``normal`` layouts only), ``categories`` (ShapeNetPart: a list of
category names to keep), ``train_split`` (ShapeNetPart: ``trainval`` — the seed code's choice —
or ``train``). Training samples are augmented (``augment``): a random point subset, random
anisotropic scaling in [2/3, 3/2] and a shift in [-0.2, 0.2] (as DGCNN's); calibration and test
samples use a fixed point subset per shape.
"""
from __future__ import annotations

import functools
import itertools
import json
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.utils.data import Dataset

from adacal.datasets.registry import DatasetInfo, DatasetSplits, calib_indices, register_dataset, train_indices
from adacal.errors import ConfigError, DataError

__all__ = [
    "MODELNET10_CLASSES", "MODELNET40_CLASSES", "PartSegDataset", "PointCloudDataset", "SHAPENET_PART_CATEGORIES",
    "SHAPENET_PART_COUNTS", "category_parts", "choose_points", "normalize_unit_sphere", "read_off",
    "sample_surface",
]

log = logging.getLogger(__name__)

MODELNET10_CLASSES = ("bathtub", "bed", "chair", "desk", "dresser", "monitor", "night_stand", "sofa", "table",
                      "toilet")
MODELNET40_CLASSES = (
    "airplane", "bathtub", "bed", "bench", "bookshelf", "bottle", "bowl", "car", "chair", "cone", "cup", "curtain",
    "desk", "door", "dresser", "flower_pot", "glass_box", "guitar", "keyboard", "lamp", "laptop", "mantel", "monitor",
    "night_stand", "person", "piano", "plant", "radio", "range_hood", "sink", "sofa", "stairs", "stool", "table",
    "tent", "toilet", "tv_stand", "vase", "wardrobe", "xbox")
#: ShapeNetPart's 16 categories in the order of the seed code (alphabetical); their parts are
#: numbered consecutively in this order (Airplane 0-3, Bag 4-5, Cap 6-7, ..., Table 47-49).
SHAPENET_PART_CATEGORIES = ("Airplane", "Bag", "Cap", "Car", "Chair", "Earphone", "Guitar", "Knife", "Lamp",
                            "Laptop", "Motorbike", "Mug", "Pistol", "Rocket", "Skateboard", "Table")
SHAPENET_PART_COUNTS = (4, 2, 2, 4, 4, 3, 3, 2, 4, 2, 6, 2, 3, 3, 3, 3)
_OPTIONS = {"modelnet": ("num_points", "normals"),
            "shapenetpart": ("num_points", "normals", "categories", "train_split")}


def category_parts(counts: Sequence[int] = SHAPENET_PART_COUNTS) -> list[list[int]]:
    """The global part ids of each category: consecutive blocks of ``counts``."""
    out, start = [], 0
    for c in counts:
        out.append(list(range(start, start + c)))
        start += c
    return out


# ---------------------------------------------------------------------------------------- pure maths
def normalize_unit_sphere(points: np.ndarray) -> np.ndarray:
    """Centre the xyz columns on their mean and scale them so the farthest point is at distance 1.

    Further columns (normals) are returned unchanged. A cloud of one repeated point is only centred.
    """
    pts = np.asarray(points, dtype=np.float32).copy()
    xyz = pts[:, :3] - pts[:, :3].mean(axis=0, keepdims=True)
    radius = float(np.sqrt((xyz ** 2).sum(axis=1)).max()) if len(xyz) else 0.0
    pts[:, :3] = xyz / radius if radius > 0 else xyz
    return pts


def choose_points(total: int, n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` indices of ``total`` points: without replacement when there are enough, else all
    points plus a random repeat of some (so small clouds still fill a batch)."""
    if total < 1:
        raise DataError("a point cloud has no points")
    if total >= n:
        return rng.permutation(total)[:n]
    return np.concatenate([rng.permutation(total), rng.integers(0, total, n - total)])


def read_off(path: str | os.PathLike[str]) -> tuple[np.ndarray, list[list[int]]]:
    """Vertices ``(V, 3)`` and polygon faces of an OFF mesh (also the ModelNet variant whose first
    line runs the counts into the header: ``OFF490 518 0``)."""
    text = Path(path).read_text(encoding="ascii", errors="replace")
    lines = [ln.split("#", 1)[0].strip() for ln in text.splitlines()]
    lines = [ln for ln in lines if ln]
    if not lines or not lines[0].startswith("OFF"):
        raise DataError(f"{str(path)!r} is not an OFF mesh (first line {lines[0][:20]!r} if any)")
    head = lines[0][3:].split()
    rest = lines[1:]
    if not head:
        head, rest = rest[0].split(), rest[1:]
    try:
        nv, nf = int(head[0]), int(head[1])
        verts = np.array([[float(v) for v in ln.split()[:3]] for ln in rest[:nv]], dtype=np.float64)
        faces = [[int(v) for v in ln.split()[1:1 + int(ln.split()[0])]] for ln in rest[nv:nv + nf]]
    except (ValueError, IndexError) as exc:
        raise DataError(f"OFF mesh {str(path)!r} is malformed: {exc}") from exc
    if verts.shape != (nv, 3) or len(faces) != nf:
        raise DataError(f"OFF mesh {str(path)!r} declares {nv} vertices / {nf} faces but holds {len(verts)} / "
                        f"{len(faces)}")
    return verts, faces


def sample_surface(vertices: np.ndarray, faces: Sequence[Sequence[int]], n: int,
                   rng: np.random.Generator) -> np.ndarray:
    """``n`` points uniform on the mesh surface: triangles (polygons fanned) picked by area, then a
    uniform point in each picked triangle (``(1 - √u) A + √u (1 - v) B + √u v C``)."""
    tris = np.array([(f[0], f[i], f[i + 1]) for f in faces for i in range(1, len(f) - 1)], dtype=np.int64)
    if len(tris) == 0:
        raise DataError("the mesh has no faces to sample points from")
    a, b, c = (vertices[tris[:, k]] for k in range(3))
    area = 0.5 * np.linalg.norm(np.cross(b - a, c - a), axis=1)
    if not area.sum() > 0:
        raise DataError("the mesh has zero surface area")
    pick = rng.choice(len(tris), size=n, p=area / area.sum())
    u, v = np.sqrt(rng.random((n, 1))), rng.random((n, 1))
    return ((1 - u) * a[pick] + u * (1 - v) * b[pick] + u * v * c[pick]).astype(np.float32)


# ---------------------------------------------------------------------------------------- datasets
class _Clouds:
    """Point clouds by index, read on first use, normalised to the unit sphere and kept
    (``load(i) -> (N_i, C) array``; columns after xyz are left as they are)."""

    def __init__(self, n: int, load: Callable[[int], np.ndarray]) -> None:
        self.n, self._load = n, load
        self._cache: dict[int, np.ndarray] = {}

    def __len__(self) -> int:
        return self.n

    def __getitem__(self, i: int) -> np.ndarray:
        if i not in self._cache:
            self._cache[i] = normalize_unit_sphere(self._load(i))
        return self._cache[i]


class _Columns:
    """Columns ``cols`` of every item of ``items`` (clouds and their part labels stored side by side)."""

    def __init__(self, items: Any, cols: slice | int) -> None:
        self.items, self.cols = items, cols

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> np.ndarray:
        return self.items[i][:, self.cols]


def _augment(pts: Tensor) -> Tensor:
    """Random anisotropic scale in [2/3, 3/2] and shift in [-0.2, 0.2] of xyz (torch RNG: seeded per
    epoch by training)."""
    scale = torch.empty(3).uniform_(2 / 3, 3 / 2)
    shift = torch.empty(3).uniform_(-0.2, 0.2)
    out = pts.clone()
    out[:3] = pts[:3] * scale[:, None] + shift[:, None]
    return out


class PointCloudDataset(Dataset[Any]):
    """Shape classification: item ``i`` is ``(points [C, num_points] float32, label)``.

    ``augment``: a random point subset and scale/shift per draw (torch RNG); otherwise the points
    of item i are a fixed subset (seeded by ``seed`` and i), so evaluation is deterministic.
    """

    def __init__(self, clouds: Sequence[np.ndarray] | _Clouds, labels: Sequence[int], *, num_points: int,
                 augment: bool = False, seed: int = 0, classes: Sequence[str] = ()) -> None:
        if len(clouds) != len(labels):
            raise DataError(f"{len(clouds)} point clouds but {len(labels)} labels")
        self.clouds = clouds
        self.labels = np.asarray(labels, dtype=np.int64)
        self.targets = self.labels
        self.num_points = int(num_points)
        self.augment = augment
        self.seed = seed
        self.classes = list(classes)

    def __len__(self) -> int:
        return len(self.labels)

    def _points(self, i: int) -> tuple[Tensor, np.ndarray]:
        cloud = self.clouds[i]
        if self.augment:
            idx = torch.randperm(len(cloud)).numpy()[: self.num_points]
            if len(idx) < self.num_points:
                idx = np.concatenate([idx, torch.randint(len(cloud), (self.num_points - len(idx),)).numpy()])
        else:
            idx = choose_points(len(cloud), self.num_points, np.random.default_rng([self.seed, i]))
        pts = torch.from_numpy(np.ascontiguousarray(cloud[idx].T))
        return (_augment(pts) if self.augment else pts), idx

    def __getitem__(self, i: int) -> tuple[Tensor, int]:
        return self._points(i)[0], int(self.labels[i])

    def view(self, indices: np.ndarray, *, augment: bool) -> PointCloudDataset:
        """The samples at ``indices`` (sharing loaded clouds), with or without augmentation."""
        sub = _Subset(self.clouds, indices)
        return PointCloudDataset(sub, self.labels[indices], num_points=self.num_points, augment=augment,
                                 seed=self.seed, classes=self.classes)


class PartSegDataset(PointCloudDataset):
    """Part segmentation: item ``i`` is ``((points [C, n], one-hot [categories]), parts [n] int64)``."""

    def __init__(self, clouds: Sequence[np.ndarray] | _Clouds, parts: Sequence[np.ndarray], categories: Sequence[int],
                 *, num_categories: int, num_points: int, augment: bool = False, seed: int = 0,
                 classes: Sequence[str] = ()) -> None:
        super().__init__(clouds, categories, num_points=num_points, augment=augment, seed=seed, classes=classes)
        if len(parts) != len(clouds):
            raise DataError(f"{len(clouds)} point clouds but {len(parts)} part-label arrays")
        self.parts = parts
        self.num_categories = num_categories
        self.targets = None  # the per-point labels are the targets; categories are not class labels
        self.labels = np.asarray(categories, dtype=np.int64)

    def __getitem__(self, i: int) -> tuple[tuple[Tensor, Tensor], Tensor]:  # type: ignore[override]
        pts, idx = self._points(i)
        onehot = torch.zeros(self.num_categories)
        onehot[int(self.labels[i])] = 1.0
        return (pts, onehot), torch.from_numpy(np.asarray(self.parts[i])[idx].astype(np.int64))

    def view(self, indices: np.ndarray, *, augment: bool) -> PartSegDataset:
        return PartSegDataset(_Subset(self.clouds, indices), _Subset(self.parts, indices), self.labels[indices],
                              num_categories=self.num_categories, num_points=self.num_points, augment=augment,
                              seed=self.seed, classes=self.classes)


class _Subset:
    def __init__(self, items: Any, indices: np.ndarray) -> None:
        self.items, self.indices = items, np.asarray(indices)

    def __len__(self) -> int:
        return len(self.indices)

    def __getitem__(self, i: int) -> Any:
        return self.items[int(self.indices[i])]


def _splits(train: PointCloudDataset, test: PointCloudDataset, calib_size: int, seed: int, holdout: bool,
            augment: bool) -> DatasetSplits:
    n = len(train)
    cidx = calib_indices(n, calib_size, seed)
    return DatasetSplits(train=train.view(train_indices(n, cidx, holdout), augment=augment),
                         calib=train.view(cidx, augment=False), test=test)


# ---------------------------------------------------------------------------------------- options
def _options(family: str, options: Mapping[str, Any], default_points: int) -> dict[str, Any]:
    allowed = _OPTIONS[family]
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        raise ConfigError(f"unknown {family} dataset option(s) {unknown}; valid: {list(allowed)}")
    out = dict(options)
    n = out.get("num_points", default_points)
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"data option num_points must be a positive integer, got {n!r}")
    out["num_points"] = n
    if not isinstance(out.get("normals", False), bool):
        raise ConfigError(f"data option normals must be true or false, got {out['normals']!r}")
    out.setdefault("normals", False)
    return out


def _root(name: str, root: str | os.PathLike[str] | None, files: str) -> Path:
    if root is None:
        raise DataError(f"dataset {name!r} needs --data-dir: a folder with {files}")
    p = Path(root)
    if not p.is_dir():
        raise DataError(f"data folder {str(p)!r} for {name!r} is not a directory; expected {files}")
    return p


def _pick(name: str, root: Path, source: str, markers: Mapping[str, Callable[[Path], bool]], files: str) -> str:
    if source != "auto":
        if source not in markers:
            raise ConfigError(f"dataset {name!r} has no source {source!r}; valid: {['auto', *markers]}")
        return source
    for src, found in markers.items():
        if found(root):
            return src
    raise DataError(f"no {name} data found under {str(root)!r}; expected {files}")


# ---------------------------------------------------------------------------------------- ModelNet
def _modelnet_npz(root: Path, normals: bool) -> tuple[Any, ...]:
    if normals:
        raise ConfigError("the npz ModelNet layout has no normals; drop data option normals")
    out: list[Any] = []
    for split in ("train", "test"):
        path = root / f"{split}.npz"
        if not path.is_file():
            raise DataError(f"ModelNet {split} split not found: {str(path)!r}")
        with np.load(path, allow_pickle=False) as d:
            missing = [k for k in ("points", "labels") if k not in d.files]
            if missing:
                raise DataError(f"{str(path)!r} lacks the array(s) {missing} (expected points (S, N, 3), labels)")
            pts, labels = d["points"], d["labels"]
            classes = [str(c) for c in d["classes"]] if "classes" in d.files else []
        if pts.ndim != 3 or pts.shape[2] < 3 or len(pts) != len(labels):
            raise DataError(f"{str(path)!r}: points must be (S, N, 3) with one label per shape, got {pts.shape} "
                            f"and {labels.shape}")
        clouds = _Clouds(len(pts), lambda i, pts=pts: pts[i])
        out += [clouds, labels, classes]
    return tuple(out)


def _read_rows(path: Path, rows: int | None, sep: str | None) -> np.ndarray:
    """The first ``rows`` lines (all if None) of a text file of numbers separated by ``sep``."""
    with open(path, encoding="ascii") as f:
        lines = list(itertools.islice(f, rows))
    try:
        arr = np.array([[float(v) for v in (ln.split(sep) if sep else ln.split())] for ln in lines if ln.strip()],
                       dtype=np.float32)
    except ValueError as exc:
        raise DataError(f"{str(path)!r} has a row that is not numbers: {exc}") from exc
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise DataError(f"{str(path)!r} holds no points")
    return arr


def _modelnet_resampled(root: Path, tag: str, num_points: int, normals: bool) -> tuple[Any, ...]:
    names = (root / f"{tag}_shape_names.txt").read_text().split()
    out: list[Any] = []
    for split in ("train", "test"):
        ids = (root / f"{tag}_{split}.txt").read_text().split()
        labels, paths = [], []
        for sid in ids:
            cls = sid.rsplit("_", 1)[0]
            if cls not in names:
                raise DataError(f"shape {sid!r} in {tag}_{split}.txt is of no class in {tag}_shape_names.txt")
            labels.append(names.index(cls))
            paths.append(root / cls / f"{sid}.txt")
        cols = 6 if normals else 3

        def load(i: int, paths: list[Path] = paths, cols: int = cols) -> np.ndarray:
            arr = _read_rows(paths[i], num_points, ",")
            if arr.shape[1] < cols:
                raise DataError(f"{str(paths[i])!r} has {arr.shape[1]} columns; normals need 6")
            return arr[:, :cols]

        out += [_Clouds(len(ids), load), np.asarray(labels), names]
    return tuple(out)


def _modelnet_hdf5(root: Path, normals: bool) -> tuple[Any, ...]:
    if normals:
        raise ConfigError("the hdf5 ModelNet layout has no normals; drop data option normals")
    try:
        import h5py
    except ImportError as exc:
        raise ConfigError("reading modelnet40_ply_hdf5_2048 needs h5py: pip install 'adacal[pointcloud]'") from exc
    names_file = root / "shape_names.txt"
    names = names_file.read_text().split() if names_file.is_file() else []
    out: list[Any] = []
    for split in ("train", "test"):
        listed = (root / f"{split}_files.txt").read_text().split()
        data, labels = [], []
        for entry in listed:
            path = root / Path(entry).name  # the list holds paths relative to the authors' checkout
            if not path.is_file():
                raise DataError(f"{str(path)!r} (listed in {split}_files.txt) not found")
            with h5py.File(path, "r") as f:
                data.append(np.asarray(f["data"], dtype=np.float32))
                labels.append(np.asarray(f["label"], dtype=np.int64).reshape(-1))
        pts, lab = np.concatenate(data), np.concatenate(labels)
        out += [_Clouds(len(pts), lambda i, pts=pts: pts[i]), lab, names]
    return tuple(out)


def _modelnet_off(root: Path, num_points: int, normals: bool, seed: int) -> tuple[Any, ...]:
    if normals:
        raise ConfigError("points sampled from .off meshes have no normals here; drop data option normals")
    classes = sorted(p.name for p in root.iterdir() if (p / "train").is_dir() and (p / "test").is_dir())
    out: list[Any] = []
    for split in ("train", "test"):
        paths, labels = [], []
        for k, cls in enumerate(classes):
            files = sorted((root / cls / split).glob("*.off"))
            paths += files
            labels += [k] * len(files)

        def load(i: int, paths: list[Path] = paths) -> np.ndarray:
            verts, faces = read_off(paths[i])
            return sample_surface(verts, faces, num_points, np.random.default_rng([seed, i]))

        out += [_Clouds(len(paths), load), np.asarray(labels), classes]
    return tuple(out)


_MODELNET_FILES = ("train.npz + test.npz (npz), <name>_shape_names.txt + <name>_{train,test}.txt + "
                   "<class>/<shape>.txt (modelnet40_normal_resampled), train_files.txt + test_files.txt + "
                   "ply_data_*.h5 (modelnet40_ply_hdf5_2048), or <class>/{train,test}/*.off (official meshes)")


def _modelnet_splits(name: str, num_classes: int, root: str | os.PathLike[str] | None, *, calib_size: int,
                     seed: int, holdout_calib: bool, augment: bool, source: str, download: bool,
                     options: Mapping[str, Any]) -> DatasetSplits:
    if download:
        raise ConfigError(f"{name} is never downloaded by adacal; put its files under --data-dir ({_MODELNET_FILES})")
    opts = _options("modelnet", options, 1024)
    rootp = _root(name, root, _MODELNET_FILES)
    markers: dict[str, Callable[[Path], bool]] = {
        "npz": lambda r: (r / "train.npz").is_file() and (r / "test.npz").is_file(),
        "resampled": lambda r: (r / f"{name}_shape_names.txt").is_file(),
        "hdf5": lambda r: (r / "train_files.txt").is_file() and (r / "test_files.txt").is_file(),
        "off": lambda r: any((p / "train").is_dir() for p in r.iterdir() if p.is_dir()),
    }
    src = _pick(name, rootp, source, markers, _MODELNET_FILES)
    n, normals = opts["num_points"], opts["normals"]
    if src == "npz":
        parts = _modelnet_npz(rootp, normals)
    elif src == "resampled":
        parts = _modelnet_resampled(rootp, name, n, normals)
    elif src == "hdf5":
        parts = _modelnet_hdf5(rootp, normals)
    else:
        parts = _modelnet_off(rootp, n, normals, seed)
    train_c, train_y, classes, test_c, test_y, _ = parts
    for split, y in (("train", train_y), ("test", test_y)):
        bad = [int(v) for v in np.unique(y) if not 0 <= v < num_classes]
        if bad:
            raise DataError(f"{name} {split} labels {bad[:5]} are outside [0, {num_classes}); is this {name}?")
    log.info("%s (%s layout): %d train, %d test shapes, %d points each", name, src, len(train_y), len(test_y), n)
    train = PointCloudDataset(train_c, train_y, num_points=n, seed=seed, classes=classes)
    test = PointCloudDataset(test_c, test_y, num_points=n, seed=seed, classes=classes)
    return _splits(train, test, calib_size, seed, holdout_calib, augment)


# ---------------------------------------------------------------------------------------- ShapeNetPart
_SHAPENET_FILES = ("synsetoffset2category.txt + <synset>/<id>.txt + train_test_split/ (…_v0_normal), "
                   "synsetoffset2category.txt + <synset>/points/*.pts + points_label/*.seg (…_v0), "
                   "or val.npz + test.npz (the shared shapenetpart_cap layout)")


def _synsets(root: Path) -> dict[str, str]:
    """synset id -> category name, from ``synsetoffset2category.txt``."""
    out = {}
    for ln in (root / "synsetoffset2category.txt").read_text().splitlines():
        if ln.strip():
            cat, syn = ln.split()
            out[syn] = cat
    return out


def _split_ids(root: Path, split: str) -> list[tuple[str, str]]:
    path = root / "train_test_split" / f"shuffled_{split}_file_list.json"
    if not path.is_file():
        raise DataError(f"ShapeNetPart split file {str(path)!r} not found")
    out = []
    for entry in json.loads(path.read_text()):
        parts = str(entry).split("/")
        out.append((parts[-2], parts[-1]))
    return out


def _shapenet_official(root: Path, src: str, splits: Sequence[str], keep: set[int], normals: bool,
                       ) -> tuple[list[Any], list[Any], list[int]]:
    synsets = _synsets(root)
    offsets = np.cumsum((0, *SHAPENET_PART_COUNTS))
    items: list[tuple[Path, Path | None, int]] = []
    for split in splits:
        for syn, sid in _split_ids(root, split):
            cat = synsets.get(syn)
            if cat not in SHAPENET_PART_CATEGORIES:
                raise DataError(f"synset {syn} of {split} list is not a ShapeNetPart category ({cat!r})")
            k = SHAPENET_PART_CATEGORIES.index(cat)
            if k not in keep:
                continue
            if src == "normal":
                items.append((root / syn / f"{sid}.txt", None, k))
            else:
                items.append((root / syn / "points" / f"{sid}.pts", root / syn / "points_label" / f"{sid}.seg", k))

    def load(i: int) -> np.ndarray:  # columns: xyz, (normals,) part id
        pts_path, seg_path, k = items[i]
        if seg_path is None:
            rows = _read_rows(pts_path, None, None)
            if rows.shape[1] != 7:
                raise DataError(f"{str(pts_path)!r} rows must be x y z nx ny nz part, got {rows.shape[1]} columns")
            return rows if normals else rows[:, [0, 1, 2, 6]]
        if normals:
            raise ConfigError("the ShapeNetPart v0 layout has no normals; drop data option normals")
        cloud = _read_rows(pts_path, None, None)[:, :3]
        seg = _read_rows(seg_path, None, None)[:, :1] - 1 + float(offsets[k])
        if len(seg) != len(cloud):
            raise DataError(f"{str(pts_path)!r}: {len(cloud)} points but {len(seg)} part labels")
        return np.concatenate([cloud, seg], 1)

    both = _Clouds(len(items), load)
    return _Columns(both, slice(0, -1)), _IntColumn(both), [k for _, _, k in items]  # type: ignore[return-value]


class _IntColumn(_Columns):
    """The last column as int64 part ids."""

    def __init__(self, items: Any) -> None:
        super().__init__(items, -1)

    def __getitem__(self, i: int) -> np.ndarray:
        return np.rint(self.items[i][:, -1]).astype(np.int64)


def _shapenet_npz(path: Path, keep: set[int], normals: bool) -> tuple[list[np.ndarray], list[np.ndarray], list[int]]:
    if not path.is_file():
        raise DataError(f"ShapeNetPart npz split {str(path)!r} not found")
    with np.load(path, allow_pickle=False) as d:
        missing = [k for k in ("points", "part_labels", "offsets", "category") if k not in d.files]
        if missing:
            raise DataError(f"{str(path)!r} lacks the array(s) {missing}")
        if normals and "normals" not in d.files:
            raise ConfigError(f"{str(path)!r} has no normals; drop data option normals")
        pts = np.concatenate([d["points"], d["normals"]], 1) if normals else d["points"]
        seg, off, cat = d["part_labels"], d["offsets"], str(d["category"])
    if cat not in SHAPENET_PART_CATEGORIES:
        raise DataError(f"{str(path)!r}: category {cat!r} is not a ShapeNetPart category")
    k = SHAPENET_PART_CATEGORIES.index(cat)
    if k not in keep:
        return [], [], []
    clouds = [normalize_unit_sphere(pts[off[i]:off[i + 1]]) for i in range(len(off) - 1)]
    parts = [seg[off[i]:off[i + 1]].astype(np.int64) for i in range(len(off) - 1)]
    return clouds, parts, [k] * len(clouds)


def _shapenet_splits(root: str | os.PathLike[str] | None, *, calib_size: int, seed: int, holdout_calib: bool,
                     augment: bool, source: str, download: bool, options: Mapping[str, Any]) -> DatasetSplits:
    if download:
        raise ConfigError(f"shapenetpart is never downloaded by adacal; put its files under --data-dir "
                          f"({_SHAPENET_FILES})")
    opts = _options("shapenetpart", options, 2048)
    rootp = _root("shapenetpart", root, _SHAPENET_FILES)
    cats = opts.get("categories") or list(SHAPENET_PART_CATEGORIES)
    cats = [cats] if isinstance(cats, str) else list(cats)
    unknown = [c for c in cats if c not in SHAPENET_PART_CATEGORIES]
    if unknown:
        raise ConfigError(f"unknown ShapeNetPart categories {unknown}; valid: {list(SHAPENET_PART_CATEGORIES)}")
    keep = {SHAPENET_PART_CATEGORIES.index(c) for c in cats}
    train_split = opts.get("train_split", "trainval")
    if train_split not in ("trainval", "train"):
        raise ConfigError(f"data option train_split must be 'trainval' or 'train', got {train_split!r}")
    markers: dict[str, Callable[[Path], bool]] = {
        "npz": lambda r: (r / "test.npz").is_file() and (r / "val.npz").is_file(),
        "normal": lambda r: (r / "synsetoffset2category.txt").is_file() and not any(r.glob("*/points")),
        "v0": lambda r: (r / "synsetoffset2category.txt").is_file(),
    }
    src = _pick("shapenetpart", rootp, source, markers, _SHAPENET_FILES)
    normals, n = opts["normals"], opts["num_points"]
    if src == "npz":
        train_parts = _shapenet_npz(rootp / "val.npz", keep, normals)
        test_parts = _shapenet_npz(rootp / "test.npz", keep, normals)
    else:
        splits = ("train", "val") if train_split == "trainval" else ("train",)
        train_parts = _shapenet_official(rootp, src, splits, keep, normals)
        test_parts = _shapenet_official(rootp, src, ("test",), keep, normals)
    if not len(train_parts[2]) or not len(test_parts[2]):
        raise DataError(f"no ShapeNetPart shapes of categories {cats} under {str(rootp)!r} ({src} layout)")
    log.info("shapenetpart (%s layout): %d train, %d test shapes of %s; %d points per shape", src,
             len(train_parts[2]), len(test_parts[2]), sorted({SHAPENET_PART_CATEGORIES[k] for k in test_parts[2]}),
             n)
    make = functools.partial(PartSegDataset, num_categories=len(SHAPENET_PART_CATEGORIES), num_points=n, seed=seed,
                             classes=SHAPENET_PART_CATEGORIES)
    train = make(train_parts[0], train_parts[1], train_parts[2])
    test = make(test_parts[0], test_parts[1], test_parts[2])
    return _splits(train, test, calib_size, seed, holdout_calib, augment)


for _name, _classes in (("modelnet10", MODELNET10_CLASSES), ("modelnet40", MODELNET40_CLASSES)):
    register_dataset(DatasetInfo(_name, int(_name[8:]), (3, 1024), task="pointcloud_classification",
                                 classes=tuple(_classes)),
                     functools.partial(_modelnet_splits, _name, int(_name[8:])), _MODELNET_FILES)
register_dataset(DatasetInfo("shapenetpart", sum(SHAPENET_PART_COUNTS), (3, 2048), task="part_segmentation",
                             classes=SHAPENET_PART_CATEGORIES,
                             extra={"part_counts": list(SHAPENET_PART_COUNTS)}),
                 _shapenet_splits, _SHAPENET_FILES)

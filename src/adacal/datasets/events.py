"""Event-camera datasets (N-MNIST, DVS128 Gesture, CIFAR10-DVS, N-Caltech101, N-Cars) from local files.

A sample is one recording cut into ``bins`` time bins of event counts, a float tensor
``[bins, polarities, H, W]`` made with tonic's transforms (``Denoise``, ``Downsample``,
``ToFrame`` by time or by event count). The event task (:mod:`adacal.tasks.events`) turns it
into what the ANN sees (the accumulated frame) and what the SNN sees over T steps (the same frame
at every step, or the bins regrouped into T steps).

Layouts (``source="auto"`` picks by the files present under ``root``; nothing is ever downloaded:
tonic's dataset classes are used with their download switched off):

================  ===================================================================================
``nmnist``        ``npz``: ``train.npz`` + ``test.npz`` (shared layout: ``events``, ``offsets``,
                  ``labels``, ``sensor_size``); ``tonic``: ``Train/<digit>/*.bin`` + ``Test/...`` (the
                  official archives), directly under ``root`` or under ``root/NMNIST``
``dvsgesture``    ``npz``: ``samples.npz`` (or ``train.npz`` + ``test.npz``); ``tonic``:
                  ``ibmGestureTrain/userNN_<light>/<label>.npy`` + ``ibmGestureTest/...`` (tonic's copy
                  of the IBM release), under ``root`` or ``root/DVSGesture``
``cifar10dvs``    ``tonic``: ``<class>/*.aedat4`` (tonic's copy), under ``root`` or ``root/CIFAR10DVS``
``ncaltech101``   ``tonic``: ``Caltech101/<class>/*.bin`` (the official archive), under ``root`` or
                  ``root/NCALTECH101``
``ncars``         ``dat``: ``n-cars_train/{background,cars}/*.dat`` + ``n-cars_test/...`` (Prophesee's
                  release; read with expelliarmus)
================  ===================================================================================

Datasets without an official test split (CIFAR10-DVS, N-Caltech101, a single ``samples.npz``) get
a fixed stratified ``test_fraction`` of the recordings (seed 0, independent of ``seed``).
``holdout``: that many training recordings (fixed, stratified, seed 0) are moved to the
evaluation split, never trained or calibrated on. Options (``data.options``):

``bins`` (time bins per recording; default ``frames`` with ``feed: accumulated``, else 64),
``slicing`` (``time``: equal durations, or ``events``: equal event counts), ``denoise_us``
(tonic ``Denoise`` filter time in µs; null: off), ``downsample`` (spatial factor, tonic
``Downsample``), ``sensor_size`` ([W, H, P], overrides the dataset's), ``holdout``,
``test_fraction``, ``augment_shift`` (random translation of training recordings, pixels), and
the task's ``feed`` (``accumulated`` | ``streamed``) and ``frames`` (channel stack of the frame).
"""
from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from adacal.checks import check_choice, check_int, check_number, suggest
from adacal.datasets.registry import DatasetInfo, DatasetSplits, calib_indices, register_dataset, sample_indices
from adacal.errors import ConfigError, DataError

__all__ = ["EVENT_DATASETS", "EventDataset", "EventOptions", "EventToBins", "Recordings", "check_events",
           "event_options"]

log = logging.getLogger(__name__)

FEEDS = ("accumulated", "streamed")
SLICINGS = ("time", "events")
#: The common event layout after validation (any integer x, y, t, p on input).
EVENTS = np.dtype([("x", np.int64), ("y", np.int64), ("t", np.int64), ("p", np.int64)])


# ------------------------------------------------------------------------------------------- options
@dataclass(frozen=True)
class EventOptions:
    """How recordings become tensors and splits; validated from ``data.options`` (see module doc)."""

    feed: str = "accumulated"
    frames: int = 1
    bins: int | None = None
    slicing: str = "time"
    denoise_us: float | None = None
    downsample: float = 1.0
    sensor_size: tuple[int, int, int] | None = None
    holdout: int = 0
    test_fraction: float = 0.2
    augment_shift: int = 0

    def __post_init__(self) -> None:
        check_choice("data.options.feed", self.feed, FEEDS)
        check_choice("data.options.slicing", self.slicing, SLICINGS)
        check_int("data.options.frames", self.frames, minimum=1)
        check_int("data.options.bins", self.bins, minimum=1, allow_none=True)
        if self.bins is None:
            object.__setattr__(self, "bins", self.frames if self.feed == "accumulated" else 64)
        if self.bins < self.frames:  # type: ignore[operator]
            raise ConfigError(f"data.options.bins ({self.bins}) must be >= frames ({self.frames}): each stacked "
                              "frame needs at least one time bin")
        if self.denoise_us is not None:
            check_number("data.options.denoise_us", self.denoise_us, above=0.0)
        check_number("data.options.downsample", self.downsample, above=0.0)
        if self.downsample > 1:
            raise ConfigError(f"data.options.downsample is a spatial factor in (0, 1], got {self.downsample!r}")
        if self.sensor_size is not None:
            size = tuple(self.sensor_size)
            if len(size) != 3 or any(isinstance(v, bool) or not isinstance(v, int) or v < 1 for v in size):
                raise ConfigError(f"data.options.sensor_size must be [width, height, polarities] of positive "
                                  f"integers, got {self.sensor_size!r}")
            object.__setattr__(self, "sensor_size", size)
        check_int("data.options.holdout", self.holdout, minimum=0)
        check_number("data.options.test_fraction", self.test_fraction, above=0.0, below=1.0)
        check_int("data.options.augment_shift", self.augment_shift, minimum=0)


def event_options(options: Mapping[str, Any] | None) -> EventOptions:
    """:class:`EventOptions` from a ``data.options`` mapping; unknown keys name the closest valid one."""
    names = [f.name for f in fields(EventOptions)]
    opts = dict(options or {})
    for key in opts:
        if key not in names:
            raise ConfigError(f"unknown event data option {key!r}{suggest(key, names)}; valid: {names}")
    if isinstance(opts.get("sensor_size"), list):
        opts["sensor_size"] = tuple(opts["sensor_size"])
    try:
        return EventOptions(**opts)
    except TypeError as exc:  # a wrong type deep in a comparison
        raise ConfigError(f"invalid event data options {opts}: {exc}") from exc


# ------------------------------------------------------------------------------------------- checks
def check_events(events: Any, sensor_size: Sequence[int], name: str) -> np.ndarray:
    """Recording ``name`` as an ``(x, y, t, p)`` int64 structured array, or DataError saying what is wrong.

    Rejects: not a structured array with integer fields x, y, t, p; no events; coordinates or
    polarities outside ``sensor_size`` ``[W, H, P]``; timestamps that go backwards.
    """
    if not isinstance(events, np.ndarray) or events.dtype.names is None:
        raise DataError(f"{name}: events must be a structured NumPy array with fields x, y, t, p; got "
                        f"{type(events).__name__}{' ' + str(events.dtype) if isinstance(events, np.ndarray) else ''}")
    missing = [f for f in ("x", "y", "t", "p") if f not in events.dtype.names]
    if missing:
        raise DataError(f"{name}: events lack field(s) {missing}; have {list(events.dtype.names)}, need x, y, t, p")
    bad = [f for f in ("x", "y", "t", "p") if not (np.issubdtype(events.dtype[f], np.integer)
                                                   or np.issubdtype(events.dtype[f], np.bool_))]
    if bad:
        raise DataError(f"{name}: event field(s) {bad} have dtype "
                        f"{[str(events.dtype[f]) for f in bad]}; expected integers (x, y pixels, t µs, p polarity)")
    if events.ndim != 1 or len(events) == 0:
        raise DataError(f"{name}: the recording is empty (no events); remove it or fix the file")
    out = np.empty(len(events), dtype=EVENTS)
    for f in ("x", "y", "t", "p"):
        out[f] = events[f]
    w, h, p = (int(v) for v in sensor_size)
    for field, limit in (("x", w), ("y", h), ("p", p)):
        v = out[field]
        wrong = np.flatnonzero((v < 0) | (v >= limit))
        if wrong.size:
            i = int(wrong[0])
            raise DataError(f"{name}: event {i} has {field}={int(v[i])} outside the sensor size [W, H, P] = "
                            f"{[w, h, p]} ({wrong.size} such events); set data.options.sensor_size or fix the data")
    back = np.flatnonzero(np.diff(out["t"]) < 0)
    if back.size:
        i = int(back[0]) + 1
        raise DataError(f"{name}: timestamps are not sorted: event {i} has t={int(out['t'][i])} after "
                        f"t={int(out['t'][i - 1])} ({back.size} such steps back); sort the events by time")
    return out


# ------------------------------------------------------------------------------------------- transform
@dataclass(frozen=True)
class EventToBins:
    """Validated events → tonic ``Denoise`` → ``Downsample`` → ``ToFrame`` → ``[bins, P, H, W]`` float.

    ``shift`` > 0: translate the recording by a random whole number of pixels in [-shift, shift]
    (training augmentation; events leaving the sensor are dropped; the draw follows torch's RNG).
    """

    sensor_size: tuple[int, int, int]
    bins: int
    slicing: str = "time"
    denoise_us: float | None = None
    downsample: float = 1.0
    shift: int = 0

    @property
    def frame_size(self) -> tuple[int, int, int]:
        """``(W, H, P)`` after downsampling."""
        w, h, p = self.sensor_size
        return int(np.ceil(w * self.downsample)), int(np.ceil(h * self.downsample)), p

    def __call__(self, events: np.ndarray, name: str = "recording") -> torch.Tensor:
        import tonic.transforms as tt

        ev = check_events(events, self.sensor_size, name)
        if self.denoise_us is not None:
            ev = tt.Denoise(filter_time=self.denoise_us)(ev)
        if self.downsample != 1.0:
            ev = tt.Downsample(spatial_factor=self.downsample)(ev)
        w, h, p = self.frame_size
        if self.shift:
            dx, dy = (int(v) for v in torch.randint(-self.shift, self.shift + 1, (2,)))
            ev = ev.copy()
            ev["x"] += dx
            ev["y"] += dy
            ev = ev[(ev["x"] >= 0) & (ev["x"] < w) & (ev["y"] >= 0) & (ev["y"] < h)]
        if len(ev) == 0:
            return torch.zeros((self.bins, p, h, w))
        if self.slicing == "events" and len(ev) < self.bins:
            raise DataError(f"{name}: {len(ev)} events cannot fill {self.bins} event-count bins; lower "
                            "data.options.bins or use slicing: time")
        key = "n_time_bins" if self.slicing == "time" else "n_event_bins"
        frames = tt.ToFrame(sensor_size=(w, h, p), **{key: self.bins})(ev)
        if frames.shape[0] != self.bins:  # tonic returns fewer bins for a recording of a single instant
            pad = np.zeros((self.bins - frames.shape[0], *frames.shape[1:]), dtype=frames.dtype)
            frames = np.concatenate([frames, pad])
        return torch.from_numpy(frames.astype(np.float32))


# ------------------------------------------------------------------------------------------- recordings
class Recordings:
    """Recordings of one split: ``events(i)`` (raw, any integer fields), ``labels``, ``names``."""

    def __init__(self, labels: Sequence[int], names: Sequence[str], read: Callable[[int], np.ndarray],
                 sensor_size: tuple[int, int, int]) -> None:
        self.labels = np.asarray(labels, dtype=np.int64)
        self.names = list(names)
        self._read = read
        self.sensor_size = sensor_size
        if len(self.labels) != len(self.names):
            raise DataError(f"{len(self.labels)} labels for {len(self.names)} recordings")

    def __len__(self) -> int:
        return len(self.labels)

    def events(self, i: int) -> np.ndarray:
        try:
            return self._read(i)
        except DataError:
            raise
        except Exception as exc:  # unreadable file: name it
            raise DataError(f"{self.names[i]}: cannot read the recording ({type(exc).__name__}: {exc})") from exc


class EventDataset(Dataset[tuple[torch.Tensor, int]]):
    """``(bins [K, P, H, W], label)`` for the recordings ``items`` (pairs of source and index)."""

    def __init__(self, items: Sequence[tuple[Recordings, int]], transform: EventToBins) -> None:
        self.items = list(items)
        self.transform = transform

    def __len__(self) -> int:
        return len(self.items)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        src, k = self.items[i]
        return self.transform(src.events(k), src.names[k]), int(src.labels[k])

    @property
    def targets(self) -> np.ndarray:
        return np.asarray([int(src.labels[k]) for src, k in self.items], dtype=np.int64)


# ------------------------------------------------------------------------------------------- npz layout
def _npz_recordings(path: Path, name: str, sensor: tuple[int, int, int] | None,
                    default: tuple[int, int, int]) -> Recordings:
    if not path.is_file():
        raise DataError(f"{name}: event file {str(path)!r} not found")
    try:
        with np.load(path, allow_pickle=False) as z:
            data = {k: z[k] for k in z.files}
    except Exception as exc:
        raise DataError(f"cannot read {str(path)!r} as an event .npz: {exc}") from exc
    for key in ("events", "offsets"):
        if key not in data:
            raise DataError(f"{str(path)!r} lacks {key!r}; an event .npz holds events, offsets, labels, sensor_size")
    label_key = next((k for k in ("labels", "inferred_labels") if k in data), None)
    if label_key is None:
        raise DataError(f"{str(path)!r} has no 'labels' (or 'inferred_labels') array")
    events, offsets, labels = data["events"], np.asarray(data["offsets"], dtype=np.int64), data[label_key]
    if offsets.ndim != 1 or len(offsets) != len(labels) + 1 or offsets[0] != 0 or offsets[-1] != len(events) \
            or np.any(np.diff(offsets) < 0):
        raise DataError(f"{str(path)!r}: offsets must be non-decreasing, start at 0, end at len(events) "
                        f"({len(events)}) and have len(labels)+1 = {len(labels) + 1} entries")
    size = sensor or (tuple(int(v) for v in data["sensor_size"]) if "sensor_size" in data else default)
    names = [f"{path.name} sample {i}" for i in range(len(labels))]
    return Recordings(labels, names, lambda i: events[offsets[i]:offsets[i + 1]], size)  # type: ignore[arg-type]


# ------------------------------------------------------------------------------------------- tonic layouts
def _local_tonic(cls: type, location: Path) -> type:
    """A subclass of tonic dataset ``cls`` that reads ``location`` and never downloads."""

    class Local(cls):  # type: ignore[misc, valid-type]
        @property  # tonic sets this to save_to/<class name>; ours is fixed
        def location_on_system(self) -> str:
            return str(location)

        @location_on_system.setter
        def location_on_system(self, _value: str) -> None:
            pass

        def _check_exists(self) -> bool:
            return True  # checked by the loader, which names the expected layout

        def download(self) -> None:
            raise DataError(f"{cls.__name__} files not found under {str(location)!r}; adacal never downloads")

    Local.__name__ = cls.__name__
    return Local


def _tonic_location(root: Path, tonic_name: str, marker: str) -> Path | None:
    """The folder tonic reads: ``root`` or ``root/<tonic_name>``, whichever holds ``marker``."""
    for base in (root, root / tonic_name):
        if (base / marker).exists():
            return base
    return None


def _tonic_recordings(ds: Any, sensor: tuple[int, int, int], classes: Sequence[str] | None,
                      what: str) -> Recordings:
    targets = list(ds.targets)
    if not targets:
        raise DataError(f"{what}: no recordings found under {ds.location_on_system!r}")
    if classes is not None:
        index = {c: i for i, c in enumerate(classes)}
        labels = [index[t] if isinstance(t, str) else int(t) for t in targets]
    else:
        labels = [int(t) for t in targets]
    reader = functools.partial(_tonic_item, ds)
    return Recordings(labels, [str(p) for p in ds.data], reader, sensor)


def _tonic_item(ds: Any, i: int) -> np.ndarray:
    return ds[i][0]


def _class_folders(base: Path, ext: str) -> list[str]:
    return sorted(p.name for p in base.iterdir() if p.is_dir() and any(p.glob(f"*{ext}")))


# ------------------------------------------------------------------------------------------- N-Cars
def _read_dat(path: str) -> np.ndarray:
    from expelliarmus import Wizard

    return Wizard(encoding="dat").read(path)


def _ncars_recordings(folder: Path, sensor: tuple[int, int, int]) -> Recordings:
    files: list[str] = []
    labels: list[int] = []
    for label, cls in enumerate(NCARS_CLASSES):
        sub = sorted((folder / cls).glob("*.dat"))
        files += [str(p) for p in sub]
        labels += [label] * len(sub)
    if not files:
        raise DataError(f"N-Cars: no .dat files under {str(folder)!r}/{{{','.join(NCARS_CLASSES)}}}")
    return Recordings(labels, files, lambda i: _read_dat(files[i]), sensor)


NCARS_CLASSES = ("background", "cars")


# ------------------------------------------------------------------------------------------- splits
@dataclass(frozen=True)
class _Spec:
    name: str
    info: DatasetInfo
    sensor: tuple[int, int, int]
    files: str


def _fixed_split(labels: np.ndarray, fraction_or_count: float | int, seed: int = 0) -> np.ndarray:
    """A fixed (seed 0) stratified subset: a fraction of the recordings, or a count."""
    n = len(labels)
    size = int(fraction_or_count) if isinstance(fraction_or_count, int) else max(1, round(n * fraction_or_count))
    if size >= n:
        raise DataError(f"cannot set {size} of {n} recordings aside for evaluation; lower holdout/test_fraction")
    _, counts = np.unique(labels, return_counts=True)
    return sample_indices(n, size, seed, labels if counts.min() >= 2 else None)


def _split(train: Recordings, test: Recordings | None, opts: EventOptions, *, calib_size: int, seed: int,
           holdout_calib: bool, augment: bool, name: str) -> DatasetSplits:
    if test is None:  # no official split: a fixed stratified part of the recordings is the test set
        te = _fixed_split(train.labels, opts.test_fraction)
        rest = np.setdiff1d(np.arange(len(train)), te)
        test_items, train_idx = [(train, int(i)) for i in te], rest
    else:
        test_items, train_idx = [(test, i) for i in range(len(test))], np.arange(len(train))
    if opts.holdout:
        held = train_idx[_fixed_split(train.labels[train_idx], opts.holdout)]
        test_items += [(train, int(i)) for i in held]
        train_idx = np.setdiff1d(train_idx, held)
    size = train.sensor_size if opts.sensor_size is None else opts.sensor_size
    tf = EventToBins(size, int(opts.bins), opts.slicing, opts.denoise_us,  # type: ignore[arg-type]
                     opts.downsample)
    train_tf = replace(tf, shift=opts.augment_shift) if augment else tf
    cidx = calib_indices(len(train_idx), calib_size, seed)
    keep = train_idx if not holdout_calib else np.delete(train_idx, cidx)
    log.info("%s: %d training recordings (%d for calibration), %d evaluation recordings (%d held out of "
             "training)", name, len(keep), len(cidx), len(test_items), opts.holdout)
    return DatasetSplits(train=EventDataset([(train, int(i)) for i in keep], train_tf),
                         calib=EventDataset([(train, int(train_idx[i])) for i in cidx], tf),
                         test=EventDataset(test_items, tf))


def _require_tonic() -> None:
    try:
        import tonic  # noqa: F401
    except ImportError as exc:
        raise ConfigError("event datasets need tonic (and aedat for CIFAR10-DVS): "
                          "pip install 'adacal[events]'") from exc


def _load(spec: _Spec, root: str | os.PathLike[str] | None, *, calib_size: int, seed: int, holdout_calib: bool,
          augment: bool, source: str, download: bool, options: Mapping[str, Any]) -> DatasetSplits:
    opts = event_options(options)
    _require_tonic()
    if download:
        raise ConfigError(f"dataset {spec.name!r} is read from local files only (download=True is not supported); "
                          f"expected: {spec.files}")
    if root is None:
        raise DataError(f"dataset {spec.name!r} needs a data folder (--data-dir); expected: {spec.files}")
    base = Path(root)
    if not base.is_dir():
        raise DataError(f"data folder {str(base)!r} for {spec.name!r} is not a directory; expected: {spec.files}")
    train, test = _READERS[spec.name](base, source, opts.sensor_size, spec)
    return _split(train, test, opts, calib_size=calib_size, seed=seed, holdout_calib=holdout_calib,
                  augment=augment, name=spec.name)


def _check_source(name: str, source: str, valid: Sequence[str]) -> None:
    if source not in ("auto", *valid):
        raise ConfigError(f"dataset {name!r} has sources {['auto', *valid]}, got {source!r}")


def _not_found(spec: _Spec, base: Path) -> DataError:
    return DataError(f"no {spec.name} recordings found under {str(base)!r}; expected {spec.files}")


def _read_nmnist(base: Path, source: str, given: tuple[int, int, int] | None,
                 spec: _Spec) -> tuple[Recordings, Any]:
    _check_source(spec.name, source, ("npz", "tonic"))
    sensor = given or spec.sensor
    if source in ("auto", "npz") and (base / "train.npz").is_file():
        return (_npz_recordings(base / "train.npz", spec.name, given, spec.sensor),
                _npz_recordings(base / "test.npz", spec.name, given, spec.sensor))
    loc = _tonic_location(base, "NMNIST", "Train")
    if source == "npz" or loc is None or not (loc / "Test").is_dir():
        raise _not_found(spec, base)
    from tonic.datasets import NMNIST

    cls = _local_tonic(NMNIST, loc)
    return (_tonic_recordings(cls(str(base), train=True), sensor, None, "N-MNIST Train"),
            _tonic_recordings(cls(str(base), train=False), sensor, None, "N-MNIST Test"))


def _read_dvsgesture(base: Path, source: str, given: tuple[int, int, int] | None,
                     spec: _Spec) -> tuple[Recordings, Any]:
    _check_source(spec.name, source, ("npz", "tonic"))
    sensor = given or spec.sensor
    if source in ("auto", "npz"):
        if (base / "train.npz").is_file():
            return (_npz_recordings(base / "train.npz", spec.name, given, spec.sensor),
                    _npz_recordings(base / "test.npz", spec.name, given, spec.sensor))
        if (base / "samples.npz").is_file():
            return _npz_recordings(base / "samples.npz", spec.name, given, spec.sensor), None
    loc = _tonic_location(base, "DVSGesture", "ibmGestureTrain")
    if source == "npz" or loc is None or not (loc / "ibmGestureTest").is_dir():
        raise _not_found(spec, base)
    from tonic.datasets import DVSGesture

    cls = _local_tonic(DVSGesture, loc)
    return (_tonic_recordings(cls(str(base), train=True), sensor, None, "DVS Gesture train"),
            _tonic_recordings(cls(str(base), train=False), sensor, None, "DVS Gesture test"))


def _read_cifar10dvs(base: Path, source: str, given: tuple[int, int, int] | None,
                     spec: _Spec) -> tuple[Recordings, Any]:
    _check_source(spec.name, source, ("tonic",))
    sensor = given or spec.sensor
    from tonic.datasets import CIFAR10DVS

    loc = _tonic_location(base, "CIFAR10DVS", "airplane")
    if loc is None:
        raise _not_found(spec, base)
    ds = _local_tonic(CIFAR10DVS, loc)(str(base))
    return _tonic_recordings(ds, sensor, None, "CIFAR10-DVS"), None


def _read_ncaltech101(base: Path, source: str, given: tuple[int, int, int] | None,
                      spec: _Spec) -> tuple[Recordings, Any]:
    _check_source(spec.name, source, ("tonic",))
    sensor = given or spec.sensor
    from tonic.datasets import NCALTECH101

    loc = _tonic_location(base, "NCALTECH101", "Caltech101")
    if loc is None:
        raise _not_found(spec, base)
    classes = _class_folders(loc / "Caltech101", ".bin")
    ds = _local_tonic(NCALTECH101, loc)(str(base))
    return _tonic_recordings(ds, sensor, classes, "N-Caltech101"), None


def _read_ncars(base: Path, source: str, given: tuple[int, int, int] | None,
                spec: _Spec) -> tuple[Recordings, Any]:
    _check_source(spec.name, source, ("dat",))
    sensor = given or spec.sensor
    if not (base / "n-cars_train").is_dir() or not (base / "n-cars_test").is_dir():
        raise _not_found(spec, base)
    return _ncars_recordings(base / "n-cars_train", sensor), _ncars_recordings(base / "n-cars_test", sensor)


_READERS: dict[str, Callable[..., tuple[Recordings, Any]]] = {
    "nmnist": _read_nmnist, "dvsgesture": _read_dvsgesture, "cifar10dvs": _read_cifar10dvs,
    "ncaltech101": _read_ncaltech101, "ncars": _read_ncars,
}

_TASK = "event_classification"
EVENT_DATASETS: tuple[_Spec, ...] = (
    _Spec("nmnist", DatasetInfo("nmnist", 10, (2, 34, 34), task=_TASK, classes=tuple(str(i) for i in range(10))),
          (34, 34, 2), "train.npz + test.npz (events/offsets/labels/sensor_size), or Train/<digit>/*.bin + "
          "Test/<digit>/*.bin (official N-MNIST, also under NMNIST/)"),
    _Spec("dvsgesture", DatasetInfo("dvsgesture", 11, (2, 128, 128), task=_TASK), (128, 128, 2),
          "samples.npz or train.npz + test.npz, or ibmGestureTrain/ + ibmGestureTest/ (tonic's layout, also "
          "under DVSGesture/)"),
    _Spec("cifar10dvs", DatasetInfo("cifar10dvs", 10, (2, 128, 128), task=_TASK), (128, 128, 2),
          "<class>/*.aedat4 for the 10 CIFAR-10 classes (tonic's layout, also under CIFAR10DVS/)"),
    _Spec("ncaltech101", DatasetInfo("ncaltech101", 101, (2, 180, 240), task=_TASK), (240, 180, 2),
          "Caltech101/<class>/*.bin (official N-Caltech101, also under NCALTECH101/)"),
    _Spec("ncars", DatasetInfo("ncars", 2, (2, 100, 120), task=_TASK, classes=NCARS_CLASSES), (120, 100, 2),
          "n-cars_train/{background,cars}/*.dat + n-cars_test/... (Prophesee N-Cars)"),
)

for _spec in EVENT_DATASETS:
    register_dataset(_spec.info, functools.partial(_load, _spec), _spec.files)

"""The jobs behind the command line: train, convert, evaluate and sweep, as library functions.

Each job takes frozen specs (what model, what data, which settings), logs its progress to the
``adacal.jobs`` logger and returns JSON-safe dicts in the results schema of
``docs/results_schema.md``. Nothing here prints, parses arguments or seeds global RNGs: that is
the CLI's part (:mod:`adacal.cli`).

Example:
    >>> from adacal.jobs import DataSpec, ModelSpec, SweepConfig, load_data, load_ann, run_sweep
    >>> data = load_data(DataSpec(dataset="cifar10", data_dir="/data/cifar10"))      # doctest: +SKIP
    >>> ann = load_ann(ModelSpec("resnet20", weights="zoo/resnet20.pt"), data)     # doctest: +SKIP
    >>> results = run_sweep(ann, data, SweepConfig(timesteps=(4, 8)))             # doctest: +SKIP
"""

from __future__ import annotations

import dataclasses
import errno
import importlib.metadata
import json
import logging
import os
import platform
import sys
import tempfile
import time
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset, Subset

from adacal.datasets import DATASETS, DatasetInfo, get_splits, make_loader
from adacal.errors import CheckpointError, ConfigError, DataError, ShapeError
from adacal.models import build_model, load_state_dict_file
from adacal.pipeline import METHODS
from adacal.report import RESULTS_SCHEMA, RESULTS_VERSION, write_json_atomic

__all__ = [
    "Data",
    "DataSpec",
    "ModelSpec",
    "SweepConfig",
    "TrainSpec",
    "check_model_fits",
    "convert_ann",
    "dataclass_from_dict",
    "SOURCE_FILE",
    "ensure_writable_dir",
    "evaluate_ann",
    "evaluate_saved",
    "evaluate_snn",
    "load_ann",
    "load_data",
    "make_run",
    "new_results",
    "read_source",
    "run_name",
    "run_sweep",
    "save_converted",
    "spec_from_dict",
    "sweep_to_folder",
    "train_to_folder",
    "train_ann",
]

log = logging.getLogger(__name__)

#: File written next to a saved SNN by :func:`save_converted`: how to rebuild its ANN and data.
SOURCE_FILE = "source.json"
#: Picojoules to millijoules (the energy model counts pJ; results report mJ per image).
PJ_TO_MJ = 1e-9
#: α_base values of the IAT accuracy-versus-latency curve (seed: 0.6 for CIFAR, 0.995 for ImageNet).
DEFAULT_IAT_CURVE = (0.2, 0.4, 0.6, 0.8, 0.9, 0.95, 0.99)


# --------------------------------------------------------------------------------------- specs
def _positive_int(owner: str, name: str, value: Any, *, allow_none: bool = False) -> None:
    if value is None and allow_none:
        return
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"{owner}.{name} must be an integer >= 1, got {value!r}")


@dataclass(frozen=True)
class DataSpec:
    """Which dataset, where it lives and how it is batched.

    ``calib_size`` samples of the *training* split calibrate the SNN; ``test_size`` keeps only the
    first N test samples (``None``: all) for quick looks; ``seed`` picks the calibration subset.
    """

    dataset: str = "digits"
    data_dir: str | None = None
    calib_size: int = 512
    batch_size: int = 128
    test_size: int | None = None
    num_workers: int = 0
    seed: int = 0
    version: int = 1

    def __post_init__(self) -> None:
        if self.dataset not in DATASETS:
            raise ConfigError(f"unknown dataset {self.dataset!r}; valid: {sorted(DATASETS)}")
        for name in ("calib_size", "batch_size"):
            _positive_int("DataSpec", name, getattr(self, name))
        _positive_int("DataSpec", "test_size", self.test_size, allow_none=True)
        if (
            isinstance(self.num_workers, bool)
            or not isinstance(self.num_workers, int)
            or self.num_workers < 0
        ):
            raise ConfigError(f"DataSpec.num_workers must be an integer >= 0, got {self.num_workers!r}")


@dataclass(frozen=True)
class ModelSpec:
    """A model by name (built-in, torchvision, or ``package.module:factory``) and optional weights.

    ``num_classes`` defaults to the dataset's number of classes.
    """

    name: str = "digits_cnn"
    weights: str | None = None
    num_classes: int | None = None
    version: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(f"ModelSpec.name must be a non-empty model name, got {self.name!r}")
        _positive_int("ModelSpec", "num_classes", self.num_classes, allow_none=True)


@dataclass(frozen=True)
class TrainSpec:
    """ANN training settings (SGD + one-cycle schedule, see :func:`adacal.training.train_classifier`)."""

    epochs: int = 30
    lr: float = 0.05
    weight_decay: float = 5e-4
    batch_size: int = 64
    label_smoothing: float = 0.0
    version: int = 1

    def __post_init__(self) -> None:
        _positive_int("TrainSpec", "epochs", self.epochs)
        _positive_int("TrainSpec", "batch_size", self.batch_size)
        if not (isinstance(self.lr, (int, float)) and self.lr > 0):
            raise ConfigError(f"TrainSpec.lr must be > 0, got {self.lr!r}")


@dataclass(frozen=True)
class SweepConfig:
    """Methods × timesteps to convert and evaluate, plus the IAT run.

    ``iat``: also run ``iat_method`` with input-aware adaptive timesteps at every T (policy fitted
    on the calibration data at ``alpha_base``); ``iat_curve``: α_base values for the
    accuracy-versus-mean-timesteps curve, computed at the largest T only (empty: none).
    ``pipeline``: extra :class:`adacal.pipeline.PipelineConfig` options (e.g. calibration settings).
    """

    methods: tuple[str, ...] = METHODS
    timesteps: tuple[int, ...] = (2, 4, 8)
    phi_target: int = 4
    iat: bool = True
    iat_method: str = "adafire+ssc"
    alpha_base: float = 0.6
    iat_curve: tuple[float, ...] = DEFAULT_IAT_CURVE
    pipeline: Mapping[str, Any] = field(default_factory=dict)
    version: int = 1

    def __post_init__(self) -> None:
        object.__setattr__(self, "methods", tuple(self.methods))
        object.__setattr__(self, "timesteps", tuple(self.timesteps))
        object.__setattr__(self, "iat_curve", tuple(float(a) for a in self.iat_curve))
        object.__setattr__(self, "pipeline", dict(self.pipeline))
        if not self.methods:
            raise ConfigError("SweepConfig.methods is empty; name at least one conversion method")
        bad = [m for m in self.methods if m not in METHODS]
        if bad:
            raise ConfigError(f"unknown method(s) {bad}; valid: {list(METHODS)}")
        if len(set(self.methods)) != len(self.methods):
            raise ConfigError(f"SweepConfig.methods has duplicates: {list(self.methods)}")
        if not self.timesteps:
            raise ConfigError("SweepConfig.timesteps is empty; give at least one T")
        for t in self.timesteps:
            _positive_int("SweepConfig", "timesteps", t)
        _positive_int("SweepConfig", "phi_target", self.phi_target)
        if self.iat and self.iat_method not in self.methods:
            raise ConfigError(
                f"SweepConfig.iat_method {self.iat_method!r} is not among the methods {list(self.methods)}; "
                "add it or turn IAT off"
            )


def spec_from_dict(cls: type, data: Mapping[str, Any]) -> Any:
    """Build one of the specs above from a mapping, rejecting unknown keys by name."""
    return dataclass_from_dict(cls, data)


def dataclass_from_dict(cls: type, data: Mapping[str, Any], where: str = "") -> Any:
    """Build a (nested) frozen config dataclass from plain YAML/JSON values.

    Mappings become nested dataclasses where the field is one, lists become tuples; unknown keys
    raise :class:`ConfigError` naming the valid ones (``where`` prefixes the key path).
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where or cls.__name__} must be a mapping of options, got {data!r}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(
            f"unknown option(s) {[f'{where}.{k}' if where else k for k in unknown]}; valid"
            f"{' under ' + where if where else ''}: {sorted(known - {'version'})}"
        )
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        sub = hints.get(key)
        path = f"{where}.{key}" if where else key
        if isinstance(sub, type) and dataclasses.is_dataclass(sub) and isinstance(value, Mapping):
            kwargs[key] = dataclass_from_dict(sub, value, path)
        elif isinstance(value, list):
            kwargs[key] = tuple(value)
        else:
            kwargs[key] = value
    try:
        return cls(**kwargs)
    except (TypeError, ValueError) as exc:
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"invalid {where or cls.__name__} options: {exc}") from exc


# --------------------------------------------------------------------------------------- files
def ensure_writable_dir(folder: str | os.PathLike[str]) -> Path:
    """Create ``folder`` if needed and prove it is writable now (before hours of work), else OSError."""
    p = Path(folder)
    if p.exists() and not p.is_dir():
        raise FileExistsError(errno.EEXIST, "exists and is not a folder", str(p))
    p.mkdir(parents=True, exist_ok=True)
    fd, probe = tempfile.mkstemp(prefix=".adacal-write-test-", dir=p)
    os.close(fd)
    os.unlink(probe)
    return p


# --------------------------------------------------------------------------------------- data
@dataclass(frozen=True)
class Data:
    """Loaders for one dataset: ``train`` (augmented, shuffled), ``calib`` and ``test`` (fixed order)."""

    spec: DataSpec
    info: DatasetInfo
    train_set: Dataset[Any]
    calib: DataLoader[Any]
    test: DataLoader[Any]

    def train_loader(self, batch_size: int, seed: int | None) -> DataLoader[Any]:
        return make_loader(
            self.train_set,
            batch_size,
            shuffle=True,
            seed=seed,
            num_workers=self.spec.num_workers,
            drop_last=False,
        )

    @property
    def num_classes(self) -> int:
        return self.info.num_classes

    def example(self) -> torch.Tensor:
        """The first calibration batch's inputs (for tracing and shape checks)."""
        batch = next(iter(self.calib))
        return batch[0] if isinstance(batch, (list, tuple)) else batch


def load_data(spec: DataSpec) -> Data:
    """Load the splits of ``spec.dataset`` (no download) and wrap them in loaders."""
    root = spec.data_dir
    if root is not None and not Path(root).exists():
        raise DataError(
            f"data folder {root!r} does not exist; pass --data-dir pointing at the {spec.dataset} files"
        )
    splits = get_splits(spec.dataset, root, calib_size=spec.calib_size, seed=spec.seed, download=False)
    test_set: Dataset[Any] = splits.test
    if spec.test_size is not None:
        n = len(test_set)  # type: ignore[arg-type]
        test_set = Subset(test_set, list(range(min(n, spec.test_size))))
    calib = make_loader(splits.calib, spec.batch_size, num_workers=spec.num_workers)
    test = make_loader(test_set, spec.batch_size, num_workers=spec.num_workers)
    log.info(
        "data %s: %d train, %d calibration, %d test samples",
        spec.dataset,
        len(splits.train),
        len(splits.calib),
        len(test_set),  # type: ignore[arg-type]
    )
    return Data(spec=spec, info=DATASETS[spec.dataset], train_set=splits.train, calib=calib, test=test)


# --------------------------------------------------------------------------------------- models
def check_model_fits(model: nn.Module, example: torch.Tensor, num_classes: int, what: str = "model") -> None:
    """Run one batch: the model must accept the data and emit ``[B, num_classes]`` logits."""
    dev = next((p.device for p in model.parameters()), torch.device("cpu"))
    was = model.training
    model.eval()
    try:
        with torch.no_grad():
            out = model(example[:2].to(dev))
    except Exception as exc:  # any failure here means the model does not fit the data
        raise ShapeError(
            f"{what} cannot process inputs of shape {tuple(example.shape[1:])}: {type(exc).__name__}: "
            f"{(str(exc).splitlines() or [''])[0][:200]}; pick a model built for this dataset"
        ) from exc
    finally:
        model.train(was)
    if not isinstance(out, torch.Tensor) or out.dim() != 2 or out.shape[1] != num_classes:
        shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
        raise ShapeError(
            f"{what} outputs {shape} but the dataset has {num_classes} classes; pass --num-classes "
            f"{num_classes} (and weights trained for it)"
        )


def load_ann(spec: ModelSpec, data: Data, *, device: torch.device | str = "cpu") -> nn.Module:
    """Build ``spec.name``, load ``spec.weights`` (``weights_only``), check it fits ``data``; eval mode."""
    num_classes = spec.num_classes or data.num_classes
    if num_classes != data.num_classes:
        raise ConfigError(
            f"num_classes={num_classes} does not match dataset {data.spec.dataset!r} with "
            f"{data.num_classes} classes; drop --num-classes or pick the matching dataset"
        )
    model = build_model(spec.name, num_classes)
    if spec.weights is not None:
        load_state_dict_file(model, spec.weights)
        log.info("loaded weights %s into %s", spec.weights, spec.name)
    model.to(torch.device(device)).eval()
    check_model_fits(model, data.example(), num_classes, what=f"model {spec.name!r}")
    return model


def train_ann(
    model: nn.Module,
    data: Data,
    spec: TrainSpec,
    *,
    device: torch.device | str = "cpu",
    seed: int | None = 0,
    checkpoint: str | os.PathLike[str] | None = None,
) -> dict[str, Any]:
    """Train ``model`` in place on ``data``; returns the training summary (JSON-safe)."""
    from adacal.training import train_classifier

    loader = data.train_loader(spec.batch_size, seed)
    log.info("training %s for %d epochs on %s", type(model).__name__, spec.epochs, data.spec.dataset)
    out = train_classifier(
        model,
        loader,
        epochs=spec.epochs,
        lr=spec.lr,
        weight_decay=spec.weight_decay,
        label_smoothing=spec.label_smoothing,
        device=device,
        eval_loader=data.test,
        seed=seed,
        checkpoint_path=checkpoint,
        log_every=0,
    )
    model.eval()
    return {
        "epochs": spec.epochs,
        "final_eval_acc": out["final_eval_acc"],
        "train_time_s": out["train_time_s"],
        "history": out["history"],
        "config": asdict(spec),
    }


def evaluate_ann(model: nn.Module, data: Data, *, device: torch.device | str = "cpu") -> float:
    """Top-1 test accuracy (%) of the ANN."""
    from adacal.training import evaluate_classifier

    return float(evaluate_classifier(model, data.test, device))


# --------------------------------------------------------------------------------------- results
def _version(pkg: str) -> str | None:
    try:
        return importlib.metadata.version(pkg)
    except importlib.metadata.PackageNotFoundError:
        return None


def new_results(
    kind: str,
    *,
    model: Mapping[str, Any],
    settings: Mapping[str, Any],
    device: torch.device | str,
    command: str | None = None,
) -> dict[str, Any]:
    """An empty results dict (schema ``adacal-results`` v1) for a ``kind`` of job."""
    return {
        "schema": RESULTS_SCHEMA,
        "version": RESULTS_VERSION,
        "kind": kind,
        "created": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "adacal_version": _version("adacal"),
        "command": command,
        "environment": {
            "python": sys.version.split()[0],
            "torch": torch.__version__,
            "platform": platform.platform(),
            "device": str(device),
            "threads": torch.get_num_threads(),
        },
        "model": dict(model),
        "ann": {"accuracy": None, "energy_mj": None},
        "settings": dict(settings),
        "training": None,
        "runs": [],
        "timing": {},
    }


def run_name(method: str, timesteps: int, iat: bool = False) -> str:
    """``"adafire+ssc@T8"``, ``"adafire+ssc+iat@T8"``: the run's key in results and on the page."""
    return f"{method}{'+iat' if iat else ''}@T{timesteps}"


def make_run(
    method: str,
    timesteps: int,
    metrics: Mapping[str, Any],
    *,
    iat: bool,
    record: Mapping[str, Any] | None,
    policy: Any = None,
    curve: list[dict[str, float]] | None = None,
    times: Mapping[str, float] | None = None,
) -> dict[str, Any]:
    energy = metrics.get("energy_mj")
    ann_energy = metrics.get("ann_energy_mj")
    energy_report = metrics.get("energy") or {}
    layers = list(
        metrics.get("layers")
        or [
            {
                "name": r["name"],
                "kind": r.get("kind"),
                "macs": r.get("macs_per_image"),
                "sops": r.get("sops_per_image"),
                "energy_mj": r["energy_pj"] * PJ_TO_MJ,
                "ann_energy_mj": r["ann_energy_pj"] * PJ_TO_MJ,
            }
            for r in energy_report.get("layers") or []
        ]
    )
    neurons = [
        {
            "name": r["name"],
            "firing_rate": r.get("firing_rate"),
            "spikes": r.get("spikes_per_image"),
            "sops": r.get("sops_per_image"),
            "energy_mj": r["energy_pj"] * PJ_TO_MJ,
        }
        for r in energy_report.get("neurons") or []
    ]
    ratio = float(energy) / float(ann_energy) if energy is not None and ann_energy else None
    return {
        "name": run_name(method, timesteps, iat),
        "method": method,
        "timesteps": int(timesteps),
        "iat": bool(iat),
        "accuracy": metrics.get("accuracy"),
        "accuracy_per_step": (
            list(metrics["accuracy_per_step"]) if metrics.get("accuracy_per_step") is not None else None
        ),
        "energy_mj": energy,
        "ann_energy_mj": ann_energy,
        "energy_ratio": ratio,
        "mean_timesteps": metrics.get("mean_timesteps", float(timesteps)),
        "exit_histogram": list(metrics["exit_histogram"])
        if metrics.get("exit_histogram") is not None
        else None,
        "layers": layers,
        "neurons": neurons,
        "energy_costs": energy_report.get("costs"),
        "iat_policy": policy.to_dict() if policy is not None else None,
        "iat_curve": curve,
        "conversion": dict(record) if record is not None else None,
        "time_s": dict(times or {}),
    }


# --------------------------------------------------------------------------------------- SNN jobs
def convert_ann(
    ann: nn.Module,
    data: Data,
    *,
    method: str,
    timesteps: int,
    phi_target: int,
    options: Mapping[str, Any] | None = None,
    workdir: str | os.PathLike[str] | None = None,
) -> tuple[Any, dict[str, Any]]:
    """Calibrate (and search) ``ann`` into an SNN with :func:`adacal.pipeline.convert`.

    ``workdir``: where sensitivity profiles are checkpointed, so an interrupted conversion resumes.
    """
    from adacal.pipeline import PipelineConfig, convert

    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r}; valid: {list(METHODS)}")
    opts = dict(options or {})
    clash = sorted({"method", "timesteps", "phi_target"} & set(opts))
    if clash:
        raise ConfigError(f"pipeline options {clash} are set by their own flags; remove them from 'pipeline'")
    config = dataclass_from_dict(
        PipelineConfig,
        {**opts, "method": method, "timesteps": timesteps, "phi_target": phi_target},
        "pipeline",
    )

    def progress(stage: str, i: int, n: int) -> None:
        if i < n:
            log.info("%s: layer %d/%d", stage, i + 1, n)

    snn, record = convert(
        ann, data.calib, config=config, progress=progress, workdir=None if workdir is None else str(workdir)
    )
    return snn, dict(record)


def evaluate_snn(
    snn: Any,
    data: Data,
    *,
    timesteps: int,
    iat: bool = False,
    alpha_base: float = 0.6,
    curve_alphas: Sequence[float] = (),
) -> tuple[dict[str, Any], Any, list[dict[str, float]] | None]:
    """Test metrics at ``timesteps`` (with an IAT policy fitted on the calibration data if ``iat``).

    Returns ``(metrics, policy or None, curve or None)``; the curve re-derives the policy for each
    α_base in ``curve_alphas`` (no refit) and evaluates it.
    """
    from adacal.evaluate import evaluate, fit_exit_policy

    if not iat:
        return dict(evaluate(snn, data.test, timesteps=timesteps)), None, None
    policy = fit_exit_policy(snn, data.calib, timesteps=timesteps, alpha_base=alpha_base)
    metrics = dict(evaluate(snn, data.test, timesteps=timesteps, exit_policy=policy))
    curve: list[dict[str, float]] | None = None
    if curve_alphas:
        curve = []
        for a in curve_alphas:
            m = evaluate(snn, data.test, timesteps=timesteps, exit_policy=policy.with_alpha_base(a))
            curve.append(
                {
                    "alpha_base": float(a),
                    "mean_timesteps": float(m["mean_timesteps"]),
                    "accuracy": float(m["accuracy"]),
                    "energy_mj": m.get("energy_mj"),
                }
            )
    return metrics, policy, curve


def run_sweep(
    ann: nn.Module,
    data: Data,
    config: SweepConfig,
    *,
    results: dict[str, Any],
    ann_accuracy: float | None = None,
    on_run: Callable[[dict[str, Any]], None] | None = None,
) -> dict[str, Any]:
    """Convert ``ann`` with every method at every T, evaluate each (and the IAT run); fill ``results``.

    ``on_run(results)`` is called after every finished run (e.g. to save partial results).
    """
    t_start = time.perf_counter()
    if ann_accuracy is None:
        ann_accuracy = evaluate_ann(ann, data)
    results["ann"]["accuracy"] = ann_accuracy
    log.info("ANN test accuracy %.2f%%", ann_accuracy)
    jobs = [(m, t) for t in config.timesteps for m in config.methods]
    total = len(jobs) + (len(config.timesteps) if config.iat else 0)
    done = 0
    for method, T in jobs:
        done += 1
        log.info("[%d/%d] converting with %s at T=%d", done, total, method, T)
        t0 = time.perf_counter()
        snn, record = convert_ann(
            ann, data, method=method, timesteps=T, phi_target=config.phi_target, options=config.pipeline
        )
        t1 = time.perf_counter()
        metrics, _, _ = evaluate_snn(snn, data, timesteps=T)
        t2 = time.perf_counter()
        run = make_run(
            method, T, metrics, iat=False, record=record, times={"convert": t1 - t0, "evaluate": t2 - t1}
        )
        results["runs"].append(run)
        if results["ann"].get("energy_mj") is None:
            results["ann"]["energy_mj"] = metrics.get("ann_energy_mj")
        log.info(
            "[%d/%d] %s: accuracy %.2f%%, energy %.4g µJ/image (%.0f%% of the ANN), %.1f s",
            done,
            total,
            run["name"],
            run["accuracy"],
            1e3 * (run["energy_mj"] or float("nan")),
            100 * (run["energy_ratio"] or float("nan")),
            t2 - t0,
        )
        if config.iat and method == config.iat_method:
            done += 1
            log.info("[%d/%d] fitting the IAT exit policy at T=%d", done, total, T)
            alphas = config.iat_curve if T == max(config.timesteps) else ()
            t3 = time.perf_counter()
            m2, policy, curve = evaluate_snn(
                snn, data, timesteps=T, iat=True, alpha_base=config.alpha_base, curve_alphas=alphas
            )
            iat_run = make_run(
                method,
                T,
                m2,
                iat=True,
                record=record,
                policy=policy,
                curve=curve,
                times={"convert": t1 - t0, "evaluate": time.perf_counter() - t3},
            )
            results["runs"].append(iat_run)
            log.info(
                "[%d/%d] %s: accuracy %.2f%% at %.2f mean timesteps",
                done,
                total,
                iat_run["name"],
                iat_run["accuracy"],
                iat_run["mean_timesteps"],
            )
        if on_run is not None:
            on_run(results)
    results["timing"]["sweep_s"] = time.perf_counter() - t_start
    return results


# --------------------------------------------------------------------------------------- saved SNNs
def save_converted(
    snn: Any,
    record: Mapping[str, Any],
    folder: str | os.PathLike[str],
    *,
    model: ModelSpec,
    data: DataSpec,
    command: str | None = None,
) -> Path:
    """:func:`adacal.persist.save_snn` plus ``source.json``: how to rebuild the ANN and the data.

    Paths in ``source.json`` are absolute, so ``adacal evaluate`` works from any directory.
    """
    from adacal.persist import save_snn

    out = Path(folder)
    save_snn(snn, dict(record), out)
    model_info = asdict(model)
    if model_info.get("weights"):
        model_info["weights"] = str(Path(model_info["weights"]).resolve())
    data_info = asdict(data)
    if data_info.get("data_dir"):
        data_info["data_dir"] = str(Path(data_info["data_dir"]).resolve())
    write_json_atomic({"command": command, "model": model_info, "data": data_info}, out / SOURCE_FILE)
    return out


def read_source(folder: str | os.PathLike[str]) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """The ``(model, data)`` spec dicts recorded by :func:`save_converted`, or None if absent."""
    f = Path(folder)
    if not f.is_dir():
        raise CheckpointError(
            f"SNN folder {str(f)!r} does not exist; create it with 'adacal convert --out ...'"
        )
    path = f / SOURCE_FILE
    if not path.is_file():
        return None
    try:
        src = json.loads(path.read_text(encoding="utf-8"))
        model, data = dict(src["model"]), dict(src["data"])
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError) as exc:
        raise CheckpointError(
            f"{str(path)!r} is corrupt ({type(exc).__name__}: {exc}); pass --model, --weights and --dataset"
        ) from exc
    model.pop("version", None)
    data.pop("version", None)
    return model, data


def evaluate_saved(
    folder: str | os.PathLike[str],
    *,
    model: ModelSpec,
    data: DataSpec,
    timesteps: int | None = None,
    iat: bool = False,
    alpha_base: float = 0.6,
    curve_alphas: Sequence[float] = (),
    device: torch.device | str = "cpu",
    command: str | None = None,
) -> dict[str, Any]:
    """Load a saved SNN (rebuilding its ANN), evaluate it on the test data; one-run results dict.

    ``timesteps`` defaults to the T it was converted for.
    """
    from adacal.persist import load_snn

    dev = torch.device(device)
    loaded = load_data(data)
    ann = load_ann(model, loaded, device=dev)
    snn, record = load_snn(ann, folder, loaded.example().to(dev))
    T = timesteps or int(record.get("timesteps") or 1)
    results = new_results(
        "evaluate",
        model={
            **asdict(model),
            "dataset": data.dataset,
            "num_classes": loaded.num_classes,
            "snn": str(folder),
        },
        settings={"timesteps": T, "iat": iat, "alpha_base": alpha_base, "data": asdict(data)},
        device=dev,
        command=command,
    )
    t0 = time.perf_counter()
    results["ann"]["accuracy"] = evaluate_ann(ann, loaded, device=dev)
    metrics, policy, curve = evaluate_snn(
        snn, loaded, timesteps=T, iat=iat, alpha_base=alpha_base, curve_alphas=curve_alphas
    )
    results["ann"]["energy_mj"] = metrics.get("ann_energy_mj")
    results["runs"].append(
        make_run(
            str(record.get("method", "?")),
            T,
            metrics,
            iat=iat,
            record=record,
            policy=policy,
            curve=curve,
            times={"evaluate": time.perf_counter() - t0},
        )
    )
    return results


# --------------------------------------------------------------------------------------- whole jobs
def train_to_folder(
    model: ModelSpec,
    data: DataSpec,
    train: TrainSpec,
    out: str | os.PathLike[str],
    *,
    device: torch.device | str = "cpu",
    seed: int = 0,
    resume: bool = True,
    command: str | None = None,
) -> dict[str, Any]:
    """Train and write ``out/model.pt`` (state_dict) and ``out/train.json``; ``out/checkpoint.pt``
    (written every epoch) lets an interrupted run resume when ``resume``."""
    from adacal.training import save_atomic

    folder = ensure_writable_dir(out)
    loaded = load_data(data)
    ann = load_ann(model, loaded, device=device)
    summary = train_ann(
        ann, loaded, train, device=device, seed=seed, checkpoint=folder / "checkpoint.pt" if resume else None
    )
    save_atomic(ann.state_dict(), folder / "model.pt")
    write_json_atomic(
        {"command": command, "model": asdict(model), "data": asdict(data), **summary}, folder / "train.json"
    )
    return summary


def sweep_to_folder(
    model: ModelSpec,
    data: DataSpec,
    sweep: SweepConfig,
    out: str | os.PathLike[str],
    *,
    device: torch.device | str = "cpu",
    seed: int = 0,
    report: bool = True,
    command: str | None = None,
) -> dict[str, Any]:
    """:func:`run_sweep` on a saved model into ``out``: progress in ``summary.partial.json`` after
    every run, then the report and ``summary.json`` (see :func:`adacal.report.publish_results`)."""
    from adacal.report import publish_results, save_partial

    folder = ensure_writable_dir(out)
    t0 = time.perf_counter()
    loaded = load_data(data)
    ann = load_ann(model, loaded, device=device)
    results = new_results(
        "sweep",
        model={
            **asdict(model),
            "dataset": data.dataset,
            "num_classes": loaded.num_classes,
            "parameters": sum(p.numel() for p in ann.parameters()),
        },
        settings={"data": asdict(data), "sweep": asdict(sweep), "seed": seed},
        device=device,
        command=command,
    )
    run_sweep(ann, loaded, sweep, results=results, on_run=lambda r: save_partial(r, folder))
    results["timing"]["total_s"] = time.perf_counter() - t0
    publish_results(results, folder, report=report)
    return results

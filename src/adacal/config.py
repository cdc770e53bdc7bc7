"""Every configuration dataclass in one torch-free module, and the one loader from dicts and YAML.

Frozen, validated on construction (:class:`~adacal.errors.ConfigError` naming the field), versioned.
:func:`load_config` builds any of them — nested sections included — from plain YAML/JSON values and
names an unknown or misspelt key with the closest valid one. :class:`JobConfig` is the whole job
(what the CLI reads from ``--config FILE`` and flags); the library API takes the smaller pieces.
Names of datasets, models and tasks are validated by their own registries when they are used.
"""
from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from adacal.checks import check_choice, check_int, check_number, check_phi, check_rho, check_timesteps, suggest
from adacal.errors import ConfigError
from adacal.recipes import DEFAULT_METHOD, get_recipe

__all__ = ["CalibrationConfig", "ConversionConfig", "DataSpec", "EvaluateConfig", "JobConfig", "ModelSpec",
           "NeuronConfig", "PipelineConfig", "SweepConfig", "TrainSpec", "config_to_dict", "load_config", "read_yaml"]


def _strict_kwargs(cls: type) -> type:
    """Unknown keyword arguments name the field and suggest the closest one (not a bare TypeError)."""
    init = cls.__init__
    names = [f.name for f in fields(cls)]

    @functools.wraps(init)
    def checked(self: Any, *args: Any, **kwargs: Any) -> None:
        unknown = [k for k in kwargs if k not in names]
        if unknown:
            k = unknown[0]
            raise ConfigError(f"{cls.__name__} has no option {k!r}{suggest(k, names)} (options: {names})")
        init(self, *args, **kwargs)

    cls.__init__ = checked  # type: ignore[method-assign]
    return cls


def config(cls: type) -> type:
    """``@dataclass(frozen=True)`` with strict keyword arguments."""
    return _strict_kwargs(dataclass(frozen=True)(cls))


# ------------------------------------------------------------------------------------- engine
@config
class NeuronConfig:
    """Initial neuron settings: ``kind`` (a registered neuron type: ``if``, or ``signed`` — negative
    spikes take back earlier ones, for inputs that change every step; see
    :mod:`adacal.neurons.signed`), φ (max spikes per step), ρ (threshold ratio) and ``v_init``
    (initial potential as a fraction of the threshold)."""

    kind: str = "if"
    phi: int = 1
    rho: float = 1.0
    v_init: float = 0.5
    version: int = 1

    def __post_init__(self) -> None:
        check_phi(self.phi)
        check_rho(self.rho)
        check_number("NeuronConfig.v_init", self.v_init, minimum=0.0, below=1.0)


@config
class ConversionConfig:
    """How the ANN becomes an SNN.

    ``activations``: extra activation types/functions to treat as ReLU — each is measured against
    the neuron's response (ReLU) on the example batch, and a relative error above
    ``activation_tolerance`` is an error unless ``accept_activation_error`` (then a warning states
    it); ``analog``: qualified names of ops allowed to stay in floating point on the spiking path
    (they see the running average of their input, see :mod:`adacal.neurons.analog`);
    ``leaf_modules``: submodule names fx must not trace into; ``check_rtol``: tolerance of the
    ANN-mode output check.
    """

    neuron: NeuronConfig = field(default_factory=NeuronConfig)
    activations: tuple[Any, ...] = ()
    analog: tuple[str, ...] = ()
    leaf_modules: tuple[str, ...] = ()
    check_rtol: float = 1e-4
    activation_tolerance: float = 0.01
    accept_activation_error: bool = False
    version: int = 1

    def __post_init__(self) -> None:
        check_number("ConversionConfig.check_rtol", self.check_rtol, above=0.0)
        check_number("ConversionConfig.activation_tolerance", self.activation_tolerance, minimum=0.0)


@config
class CalibrationConfig:
    """Threshold calibration and correction (method.md §2-3).

    ``method``: ``max`` | ``percentile`` | ``mse`` (surrogate search over ``grid_size`` clip levels
    ``max·(1 − grid_step·i)``); ``granularity``: per ``layer`` or per output ``channel``;
    ``correction``: ``none`` | ``bias`` | ``potential``; ``weight_calibration`` runs the
    layer-wise weight optimisation ("advanced") before the correction. ``correction_memory_mb``:
    the correction simulates all T steps of its samples in one pass; it uses only as many samples
    as keep T × samples × the largest activation under this many MB (logged when it cuts).
    """

    method: str = "mse"
    granularity: str = "layer"
    percentile: float = 99.99
    grid_size: int = 95
    grid_step: float = 0.01
    num_batches: int = 1
    correction: str = "bias"
    correction_batches: int = 1
    weight_calibration: bool = False
    weight_iters: int = 200
    weight_lr: float = 1e-4
    correction_memory_mb: int = 2048
    version: int = 1

    def __post_init__(self) -> None:
        check_choice("CalibrationConfig.method", self.method, ("max", "percentile", "mse"))
        check_choice("CalibrationConfig.granularity", self.granularity, ("layer", "channel"))
        check_choice("CalibrationConfig.correction", self.correction, ("none", "bias", "potential"))
        check_number("CalibrationConfig.percentile", self.percentile, above=0.0)
        if self.percentile > 100:
            raise ConfigError(f"CalibrationConfig.percentile must be in (0, 100], got {self.percentile!r}")
        check_int("CalibrationConfig.grid_size", self.grid_size, minimum=1)
        if not 0 < self.grid_step * (self.grid_size - 1) < 1 and self.grid_size > 1:
            raise ConfigError("CalibrationConfig grid must satisfy grid_size >= 1 and grid_step*(grid_size-1) < 1")
        for name in ("num_batches", "correction_batches", "weight_iters", "correction_memory_mb"):
            check_int(f"CalibrationConfig.{name}", getattr(self, name), minimum=1)
        check_number("CalibrationConfig.weight_lr", self.weight_lr, above=0.0)


def default_rho_candidates() -> tuple[float, ...]:
    """ρ ∈ {1, 1.5, …, 10} (seed: SSC search space)."""
    return tuple(1.0 + 0.5 * i for i in range(19))


@config
class PipelineConfig:
    """Everything :func:`adacal.convert` decides with; defaults from method.md.

    ``method``: a recipe name (:mod:`adacal.recipes`). ``energy_ratio`` / ``sensitivity_ratio``: r of
    the φ budget ``r·Σ_i E_i(φ_target)`` / of the ρ budget. ``search_cost``: ``"sops"`` (consistent with
    reported energy) or ``"spikes"`` (the paper code's raw count). ``phi_profile_thresholds``:
    ``"per_candidate"`` profiles each φ at its own refit threshold, as the network will run;
    ``"largest_phi"`` (the paper) at those fitted for 2·φ_target, which unchecked spends ≈1.3×
    BurstFire's energy on CIFAR-10 (benchmarks/results/ablations.md). ``sensitivity_budget``:
    ``"excess"`` counts only increases, Σ max(0, S_i(ρ_i) − S_i(1)) ≤ (r − 1)·S; ``"sum"`` is the
    paper's Σ S_i(ρ_i) ≤ r·Σ S_i(1).

    ``check="holdout"`` measures every network a search could return on ``check_images`` held-out
    training images (never calibration or test images) and keeps the best by ``check_metric``
    (top-1 ``"agreement"`` with the ANN, ties broken by the task's divergence; or ``"kl"``, the
    divergence alone, which ranked φ picks unlike the test set at T=4:
    benchmarks/results/ablations_search.md) within the measured φ budget, or the cheapest
    within (1 + ``check_tolerance``) × the unsearched score among ρ picks up to ``check_ratio``
    (:meth:`adacal.knobs.Knob.choose`, README *Held-out checks*); ``"none"``: the paper's searches.
    """

    method: str = DEFAULT_METHOD
    timesteps: int = 8
    phi_target: int = 4
    phi_min: int = 1
    energy_ratio: float = 1.0
    sensitivity_ratio: float = 1.0
    rho_candidates: tuple[float, ...] = field(default_factory=default_rho_candidates)
    search_cost: str = "sops"
    phi_profile_thresholds: str = "per_candidate"
    sensitivity_budget: str = "excess"
    profile_batch: int = 128
    check: str = "holdout"
    check_metric: str = "agreement"
    check_images: int = 1024
    check_tolerance: float = 0.0
    check_ratio: float = 3.0
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    conversion: ConversionConfig = field(default_factory=ConversionConfig)
    version: int = 1

    def __post_init__(self) -> None:
        get_recipe(self.method)
        check_timesteps(self.timesteps)
        check_choice("PipelineConfig.check", self.check, ("holdout", "none"))
        check_choice("PipelineConfig.check_metric", self.check_metric, ("kl", "agreement"))
        check_number("PipelineConfig.check_tolerance", self.check_tolerance, minimum=0.0)
        check_number("PipelineConfig.check_ratio", self.check_ratio, minimum=1.0)
        for name in ("phi_target", "phi_min", "profile_batch", "check_images"):
            check_int(f"PipelineConfig.{name}", getattr(self, name), minimum=1)
        if self.phi_min > 2 * self.phi_target:
            raise ConfigError(f"phi_min ({self.phi_min}) must be <= 2·phi_target ({2 * self.phi_target})")
        check_choice("PipelineConfig.search_cost", self.search_cost, ("sops", "spikes"))
        check_choice("PipelineConfig.phi_profile_thresholds", self.phi_profile_thresholds,
                     ("largest_phi", "per_candidate"))
        check_choice("PipelineConfig.sensitivity_budget", self.sensitivity_budget, ("excess", "sum"))
        for name in ("energy_ratio", "sensitivity_ratio"):
            check_number(f"PipelineConfig.{name}", getattr(self, name), above=0.0)
        if self.sensitivity_budget == "excess" and not self.sensitivity_ratio >= 1:
            raise ConfigError(f"sensitivity_ratio must be >= 1 with sensitivity_budget='excess' (1 = no "
                              f"predicted loss), got {self.sensitivity_ratio!r}")
        if isinstance(self.rho_candidates, (str, bytes)) or not self.rho_candidates:
            raise ConfigError("rho_candidates must be a non-empty list of values >= 1")
        object.__setattr__(self, "rho_candidates", tuple(check_rho(r) for r in self.rho_candidates))

    def to_dict(self) -> dict[str, Any]:
        return config_to_dict(self)


# ------------------------------------------------------------------------------------- jobs
@config
class DataSpec:
    """Which dataset, where it lives and how it is batched.

    ``calib_size`` samples of the *training* split calibrate the SNN (batches of
    ``calib_batch_size``, default ``batch_size``); ``test_size`` evaluates on a seeded random
    subset of N test samples, stratified by class where there are labels (``None``: all);
    ``options``: dataset-specific settings (e.g. event frames), checked by the dataset's loader.
    ``holdout_size``: other training samples, never used for calibration, that the searches' held-out
    check and the risk-controlled exit rule are measured on (0: the calibration samples beyond those
    thresholds and corrections use).
    """

    dataset: str = "digits"
    data_dir: str | None = None
    calib_size: int = 512
    calib_batch_size: int | None = None
    batch_size: int = 128
    test_size: int | None = None
    num_workers: int = 0
    seed: int = 0
    holdout_size: int = 0
    options: Mapping[str, Any] = field(default_factory=dict)
    version: int = 1

    def __post_init__(self) -> None:
        for name in ("calib_size", "batch_size"):
            check_int(f"data.{name}", getattr(self, name), minimum=1)
        check_int("data.calib_batch_size", self.calib_batch_size, minimum=1, allow_none=True)
        check_int("data.holdout_size", self.holdout_size, minimum=0)
        check_int("data.test_size", self.test_size, minimum=1, allow_none=True)
        check_int("data.num_workers", self.num_workers, minimum=0)
        check_int("data.seed", self.seed)
        object.__setattr__(self, "options", dict(self.options or {}))


@config
class ModelSpec:
    """A model by name (built-in, torchvision, or ``package.module:factory``), optional weights
    (a state_dict), ``num_classes`` (default: the dataset's) and factory ``options``."""

    name: str = "digits_cnn"
    weights: str | None = None
    num_classes: int | None = None
    options: Mapping[str, Any] = field(default_factory=dict)
    version: int = 1

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name:
            raise ConfigError(f"model.name must be a non-empty model name, got {self.name!r}")
        check_int("model.num_classes", self.num_classes, minimum=1, allow_none=True)
        object.__setattr__(self, "options", dict(self.options or {}))


@config
class TrainSpec:
    """ANN training (SGD with Nesterov momentum, per-batch one-cycle/cosine schedule)."""

    epochs: int = 30
    lr: float = 0.05
    weight_decay: float = 5e-4
    batch_size: int = 64
    label_smoothing: float = 0.0
    schedule: str = "onecycle"
    version: int = 1

    def __post_init__(self) -> None:
        check_int("train.epochs", self.epochs, minimum=1)
        check_int("train.batch_size", self.batch_size, minimum=1)
        check_number("train.lr", self.lr, above=0.0)
        check_number("train.weight_decay", self.weight_decay, minimum=0.0)
        check_number("train.label_smoothing", self.label_smoothing, minimum=0.0, below=1.0)
        check_choice("train.schedule", self.schedule, ("onecycle", "cosine", "constant"))


#: α_base values of the IAT accuracy-versus-latency curve (seed: 0.6 for CIFAR, 0.995 for ImageNet).
DEFAULT_IAT_CURVE = (0.2, 0.4, 0.6, 0.8, 0.9, 0.95, 0.99)


@config
class SweepConfig:
    """Methods × timesteps to convert and evaluate, plus the IAT runs.

    ``methods``: recipe names, or ``("all",)``. ``iat``: also run ``iat_method`` with input-aware
    adaptive timesteps at every T (default: the default method, when it is swept). ``exit_rule``:
    ``"auto"`` — ``"risk"`` where the task supports it and ``data.holdout_size`` gives held-out data,
    else ``"eq15"``; ``"risk"`` loses at most ``exit_epsilon`` accuracy points against full T with
    probability ``exit_confidence`` (:func:`adacal.iat.calibrate_exit`); ``"eq15"`` is the paper's α
    schedule. ``iat_curve`` / ``exit_curve``: the α_base / ε values of the accuracy-versus-timesteps
    curves. ``delta``: δ of eq. 15 (dense outputs, whose mean per-pixel entropy moves little, need a
    smaller one than 1 to exit at all). ``profile_rows`` / ``check_rows``: profile on
    ``max(16, profile_rows // T)`` samples and check on ``max(128, check_rows // T)`` at each T, for a
    constant cost across T.
    """

    methods: tuple[str, ...] = ("all",)
    timesteps: tuple[int, ...] = (2, 4, 8)
    iat: bool = True
    iat_method: str | None = None
    alpha_base: float = 0.6
    iat_curve: tuple[float, ...] = DEFAULT_IAT_CURVE
    profile_rows: int | None = None
    check_rows: int | None = None
    exit_rule: str = "auto"
    exit_epsilon: float = 0.3
    exit_confidence: float = 0.9
    exit_loss: str = "error"
    exit_curve: tuple[float, ...] = (0.1, 0.3, 1.0, 3.0)
    delta: float = 1.0
    version: int = 1

    def __post_init__(self) -> None:
        methods = (self.methods,) if isinstance(self.methods, str) else tuple(self.methods)
        if methods == ("all",):
            from adacal.recipes import RECIPES

            methods = tuple(RECIPES)
        if not methods:
            raise ConfigError("sweep.methods is empty; name at least one conversion method")
        for m in methods:
            get_recipe(m)
        if len(set(methods)) != len(methods):
            raise ConfigError(f"sweep.methods has duplicates: {list(methods)}")
        object.__setattr__(self, "methods", methods)
        ts = (self.timesteps,) if isinstance(self.timesteps, int) else tuple(self.timesteps)
        if not ts:
            raise ConfigError("sweep.timesteps is empty; give at least one T")
        object.__setattr__(self, "timesteps", tuple(check_timesteps(t) for t in ts))
        object.__setattr__(self, "iat_curve", tuple(check_number("sweep.iat_curve", a) for a in self.iat_curve))
        check_number("sweep.alpha_base", self.alpha_base)
        check_number("sweep.delta", self.delta, above=0.0)
        check_int("sweep.profile_rows", self.profile_rows, minimum=1, allow_none=True)
        check_int("sweep.check_rows", self.check_rows, minimum=1, allow_none=True)
        check_exit("sweep", self)
        object.__setattr__(self, "exit_curve", tuple(check_number("sweep.exit_curve", e, above=0.0, below=100.0)
                                                     for e in self.exit_curve))
        if self.iat_method is None:  # the default method when swept; otherwise no IAT runs
            object.__setattr__(self, "iat", self.iat and DEFAULT_METHOD in methods)
            object.__setattr__(self, "iat_method", DEFAULT_METHOD)
        if self.iat and self.iat_method not in methods:
            raise ConfigError(f"sweep.iat_method {self.iat_method!r} is not among the methods {list(methods)}; "
                              "add it or turn IAT off")


#: Early-exit rules: ``risk`` (certified accuracy drop, :mod:`adacal.iat.risk`), ``eq15`` (the paper's α schedule).
EXIT_RULES = ("auto", "risk", "eq15")


def check_exit(section: str, cfg: Any) -> None:
    check_choice(f"{section}.exit_rule", cfg.exit_rule, EXIT_RULES)
    check_number(f"{section}.exit_epsilon", cfg.exit_epsilon, above=0.0, below=100.0)
    check_number(f"{section}.exit_confidence", cfg.exit_confidence, above=0.0, below=1.0)
    check_choice(f"{section}.exit_loss", cfg.exit_loss, ("error", "flip"))


@config
class EvaluateConfig:
    """``adacal evaluate``: T (default: the converted T), IAT on/off and its exit rule (as in
    :class:`SweepConfig`), α_base, δ and the α_base curve of the eq. 15 rule."""

    timesteps: int | None = None
    iat: bool = False
    alpha_base: float = 0.6
    iat_curve: tuple[float, ...] = ()
    exit_rule: str = "auto"
    exit_epsilon: float = 0.3
    exit_confidence: float = 0.9
    exit_loss: str = "error"
    exit_curve: tuple[float, ...] = ()
    delta: float = 1.0
    version: int = 1

    def __post_init__(self) -> None:
        if self.timesteps is not None:
            object.__setattr__(self, "timesteps", check_timesteps(self.timesteps))
        check_number("evaluate.alpha_base", self.alpha_base)
        check_exit("evaluate", self)
        check_number("evaluate.delta", self.delta, above=0.0)


@config
class JobConfig:
    """A whole job: task, model, data, training, conversion, sweep and evaluation settings.

    ``task``: the task's name (default: the dataset's task). ``device``: ``cpu``, ``cuda``,
    ``cuda:N`` or ``mps``; ``threads``: CPU threads for torch (None: torch's choice).
    """

    task: str | None = None
    model: ModelSpec = field(default_factory=ModelSpec)
    data: DataSpec = field(default_factory=DataSpec)
    train: TrainSpec = field(default_factory=TrainSpec)
    pipeline: PipelineConfig = field(default_factory=PipelineConfig)
    sweep: SweepConfig = field(default_factory=SweepConfig)
    evaluate: EvaluateConfig = field(default_factory=EvaluateConfig)
    device: str = "cpu"
    seed: int = 0
    threads: int | None = None
    report: bool = True
    version: int = 1

    def __post_init__(self) -> None:
        check_int("seed", self.seed)
        check_int("threads", self.threads, minimum=1, allow_none=True)


# ------------------------------------------------------------------------------------- loading
def _is_config(tp: Any) -> bool:
    return isinstance(tp, type) and dataclasses.is_dataclass(tp)


_KINDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _coerce(tp: Any, value: Any, where: str) -> Any:
    """YAML value → field value, checked against the field's type: nested sections become
    dataclasses, lists become tuples; a wrong type is an error naming the key (never a deep crash)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in typing.get_args(tp):
            return None
        inner = [a for a in typing.get_args(tp) if a is not type(None)]
        return _coerce(inner[0], value, where) if len(inner) == 1 else value
    if _is_config(tp):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where} must be a section (a mapping of options), got {value!r}")
        return load_config(tp, value, where)
    if origin is tuple:
        if isinstance(value, (str, bytes, Mapping)) or not isinstance(value, (list, tuple)):
            value = [value]  # a single value where a list is expected
        args = typing.get_args(tp)
        return tuple(_coerce(args[0], v, f"{where}[{i}]") for i, v in enumerate(value)) if args else tuple(value)
    if origin in (Mapping, dict) or tp in (Mapping, dict):
        if not isinstance(value, Mapping):
            raise ConfigError(f"{where} must be a mapping, got {value!r}")
        return dict(value)
    if tp in _KINDS:
        ok = (isinstance(value, bool) if tp is bool else not isinstance(value, bool) and (
            isinstance(value, int) or (isinstance(value, float) and value.is_integer()) if tp is int
            else isinstance(value, (int, float)) if tp is float else isinstance(value, str)))
        if not ok:
            raise ConfigError(f"{where} must be {_KINDS[tp]}, got {value!r}")
        return int(value) if tp is int else float(value) if tp is float else value
    return value


def load_config(cls: type, data: Mapping[str, Any] | None, where: str = "") -> Any:
    """Build the config dataclass ``cls`` (nested sections included) from plain YAML/JSON values.

    Unknown keys raise :class:`ConfigError` naming the key path and the closest valid key; invalid
    values raise it naming the field. ``version`` keys are accepted and ignored.
    """
    if data is None:
        data = {}
    if not isinstance(data, Mapping):
        raise ConfigError(f"{where or cls.__name__} must be a mapping of options, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = [f.name for f in fields(cls)]
    kwargs: dict[str, Any] = {}
    for key, value in data.items():
        k = str(key).replace("-", "_")
        path = f"{where}.{k}" if where else k
        if k not in names:
            raise ConfigError(f"unknown option {path!r}{suggest(k, names)}; valid"
                              f"{' under ' + where if where else ''}: {[n for n in names if n != 'version']}")
        if k == "version":
            continue
        kwargs[k] = _coerce(hints[k], value, path)
    try:
        return cls(**kwargs)
    except ConfigError as exc:
        if where and not str(exc).startswith(where):
            raise ConfigError(f"{where}: {exc}") from exc
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"invalid {where or cls.__name__} options: {exc}") from exc


def config_to_dict(cfg: Any) -> dict[str, Any]:
    """JSON-safe dict of a config (callables and types in ``activations`` are named, not stored)."""
    def clean(v: Any) -> Any:
        if isinstance(v, dict):
            return {k: clean(x) for k, x in v.items()}
        if isinstance(v, (list, tuple)):
            return [clean(x) for x in v]
        if isinstance(v, (str, int, float, bool)) or v is None:
            return v
        return getattr(v, "__qualname__", None) or type(v).__name__

    return clean(asdict(cfg))


def read_yaml(path: str | Path) -> dict[str, Any]:
    """A YAML file as a mapping (empty file: ``{}``); clear errors for a missing file or bad YAML."""
    import yaml

    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config file {str(p)!r}: {exc.strerror or exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"config file {str(p)!r} is not valid YAML: {' '.join(str(exc).split())}") from exc
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"config file {str(p)!r} must hold a mapping of option: value, got {type(data).__name__}")
    return data

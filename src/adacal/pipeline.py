"""One call from a trained ANN to a calibrated, searched SNN (method.md §8), with a full record.

Methods (the baselines come from the same call by name):
  * ``plain``        max thresholds, φ = 1, no correction;
  * ``calibration``  SNN Calibration: φ = 1, MSE thresholds, bias correction;
  * ``burstfire``    every layer at φ_target, MSE thresholds, bias correction;
  * ``adafire``      φ per layer by the Pareto search under an energy budget, thresholds refit,
                     bias correction;
  * ``adafire+ssc``  then ρ per layer (SSC) by the Pareto search under a sensitivity budget,
                     bias correction again.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, replace
from typing import Any

import torch
from torch import Tensor, nn

from adacal import inputs
from adacal.calibrate import calibrate_thresholds, correct_bias, thresholds_per_phi
from adacal.calibrate.capture import model_device
from adacal.config import CalibrationConfig, ConversionConfig
from adacal.convert import prepare
from adacal.data import InputFn, take_batches
from adacal.errors import ConfigError
from adacal.search import SearchTable, minimise_cost, minimise_score, pareto_front
from adacal.sensitivity import CostFn, SensitivityTable, profile
from adacal.spiking_model import SpikingModel

__all__ = ["METHODS", "PipelineConfig", "convert", "default_rho_candidates", "excess_over"]

log = logging.getLogger(__name__)

METHODS = ("plain", "calibration", "burstfire", "adafire", "adafire+ssc")
SEARCH_COSTS = ("sops", "spikes")
PHI_PROFILE_THRESHOLDS = ("per_candidate", "largest_phi")
SENSITIVITY_BUDGETS = ("excess", "sum")


def default_rho_candidates() -> tuple[float, ...]:
    """ρ ∈ {1, 1.5, …, 10} (seed: SSC search space)."""
    return tuple(1.0 + 0.5 * i for i in range(19))


@dataclass(frozen=True)
class PipelineConfig:
    """Everything :func:`convert` decides with, defaults from method.md.

    ``energy_ratio`` (r of the φ search): budget ``r·Σ_i E_i(φ_target)``; ``sensitivity_ratio``
    (r of the ρ search): budget ``r·Σ_i S_i(ρ=1)``. ``search_cost``: ``"sops"`` — the energy
    model's synaptic operations, consistent with reported energy (default) — or ``"spikes"``, the
    raw spike count the paper's code uses. ``profile_batch``: calibration images used for
    profiling (the first batches, concatenated and cut to this size).
    ``phi_profile_thresholds``: ``"largest_phi"`` (default, the paper) profiles every φ at the
    thresholds fitted for 2·φ_target and refits afterwards; its budget ``Σ_i E_i(φ_target)`` is
    measured at those thresholds, so the searched network spends more than BurstFire (CIFAR-10
    ResNet-20: ≈1.3×). ``"per_candidate"`` profiles each φ at the threshold fitted for that φ
    (what the refit gives it), so the network keeps to BurstFire's energy — but on CIFAR-10 it was
    then no more accurate than BurstFire (benchmarks/results/ablations.md).
    ``sensitivity_budget``: how the ρ search's budget reads ``sensitivity_ratio`` (r).
    ``"excess"`` (default): Σ_i max(0, S_i(ρ_i) − S_i(1)) ≤ (r − 1)·S(1) — only increases of
    sensitivity count, so a layer that profiles slightly *better* at some ρ > 1 cannot fund
    another layer's loss (such trades are not additive: on CIFAR-10 at T=4 they cost 2.4 points
    for 12 % energy); r = 1 keeps only the compression the profile sees as free. ``"sum"``: the
    paper's Σ_i S_i(ρ_i) ≤ r·Σ_i S_i(1).
    """

    method: str = "adafire+ssc"
    timesteps: int = 8
    phi_target: int = 4
    phi_min: int = 1
    energy_ratio: float = 1.0
    sensitivity_ratio: float = 1.0
    rho_candidates: tuple[float, ...] = field(default_factory=default_rho_candidates)
    search_cost: str = "sops"
    phi_profile_thresholds: str = "largest_phi"
    sensitivity_budget: str = "excess"
    profile_batch: int = 128
    calibration: CalibrationConfig = field(default_factory=CalibrationConfig)
    conversion: ConversionConfig = field(default_factory=ConversionConfig)
    version: int = 1

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ConfigError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
        if self.search_cost not in SEARCH_COSTS:
            raise ConfigError(f"search_cost must be one of {SEARCH_COSTS}, got {self.search_cost!r}")
        if self.phi_profile_thresholds not in PHI_PROFILE_THRESHOLDS:
            raise ConfigError(f"phi_profile_thresholds must be one of {PHI_PROFILE_THRESHOLDS}, "
                              f"got {self.phi_profile_thresholds!r}")
        for name in ("timesteps", "phi_target", "phi_min", "profile_batch"):
            v = getattr(self, name)
            if isinstance(v, bool) or int(v) != v or v < 1:
                raise ConfigError(f"PipelineConfig.{name} must be an integer >= 1, got {v!r}")
        if self.phi_min > 2 * self.phi_target:
            raise ConfigError(f"phi_min ({self.phi_min}) must be <= 2·phi_target ({2 * self.phi_target})")
        if self.sensitivity_budget not in SENSITIVITY_BUDGETS:
            raise ConfigError(f"sensitivity_budget must be one of {SENSITIVITY_BUDGETS}, "
                              f"got {self.sensitivity_budget!r}")
        if self.sensitivity_budget == "excess" and not self.sensitivity_ratio >= 1:
            raise ConfigError(f"sensitivity_ratio must be >= 1 with sensitivity_budget='excess' (1 = no "
                              f"predicted loss), got {self.sensitivity_ratio!r}")
        for name in ("energy_ratio", "sensitivity_ratio"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"PipelineConfig.{name} must be > 0, got {getattr(self, name)!r}")
        if not self.rho_candidates or any(not r >= 1 for r in self.rho_candidates):
            raise ConfigError("rho_candidates must be a non-empty list of values >= 1")

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["conversion"] = {k: v for k, v in d["conversion"].items() if k != "activations"}
        d["rho_candidates"] = list(self.rho_candidates)
        return d

    @property
    def phi_candidates(self) -> tuple[int, ...]:
        return tuple(range(self.phi_min, 2 * self.phi_target + 1))


Progress = Callable[[str, int, int], None]


class _Stages:
    def __init__(self) -> None:
        self.times: dict[str, float] = {}

    @contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        log.info("stage: %s", name)
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.times[name] = round(time.perf_counter() - t0, 4)


def _threshold_summary(snn: SpikingModel) -> dict[str, dict[str, float]]:
    return {
        k: {"mean": float(n.theta.mean()), "min": float(n.theta.min()), "max": float(n.theta.max())}
        for k, n in snn.neurons().items()
    }


def _frontier_record(table: SearchTable, chosen: Any, budget: float) -> dict[str, Any]:
    front = pareto_front(table, max_points=4000)
    return {"cost": [float(c) for c in front.cost], "score": [float(s) for s in front.score],
            "chosen": [float(chosen.cost), float(chosen.score)], "budget": float(budget),
            "exact": bool(front.exact)}


def _sops_cost(snn: SpikingModel, example: Any, batch: int) -> CostFn:
    """Cost of a neuron's spikes in synaptic operations per image (energy-model fan-out)."""
    from adacal.energy import EnergyModel  # local: the energy model is optional for other costs

    model = EnergyModel.build(snn, inputs.narrow(example, 0, 1))

    def cost(name: str, spikes: Tensor) -> float:
        return model.neuron_costs({name: spikes}, batch, metric="sops")[name]

    return cost


def convert(
    ann: nn.Module,
    calib_data: Any,
    *,
    config: PipelineConfig | None = None,
    input_fn: InputFn | None = None,
    progress: Progress | None = None,
    workdir: str | None = None,
) -> tuple[SpikingModel, dict[str, Any]]:
    """Convert ``ann`` with ``config.method``; returns the SNN and a JSON-safe record.

    ``calib_data``: training-set batches (never test data). ``workdir``: where sensitivity
    profiles are checkpointed, so an interrupted run resumes. ``progress(stage, i, n)`` is called
    as profiling advances.
    """
    cfg = config or PipelineConfig()
    stages = _Stages()
    calib = cfg.calibration
    T = cfg.timesteps
    dev = model_device(ann)
    with stages("data"):
        xs = take_batches(calib_data, max(calib.num_batches, calib.correction_batches), input_fn=input_fn,
                          device=dev)
    with stages("prepare"):
        snn = prepare(ann, xs[0], config=cfg.conversion)
    neurons = snn.neurons()
    record: dict[str, Any] = {"method": cfg.method, "timesteps": T, "config": cfg.to_dict()}
    thr_batches = xs[: calib.num_batches]
    corr_batches = xs[: calib.correction_batches]
    method = cfg.method
    if method == "plain":
        calib = replace(calib, method="max", correction="none")
    phi0 = 1 if method in ("plain", "calibration") else (
        cfg.phi_target if method == "burstfire" else 2 * cfg.phi_target)
    for n in neurons.values():
        n.set_phi(phi0)
    with stages("thresholds"):
        calibrate_thresholds(snn, None, timesteps=T, config=calib, batches=thr_batches)
    joined = inputs.cat(xs, 0)
    profile_x = inputs.narrow(joined, 0, min(cfg.profile_batch, inputs.batch_size(joined)))

    def cost_fn() -> CostFn | None:
        return _sops_cost(snn, profile_x, inputs.batch_size(profile_x)) if cfg.search_cost == "sops" else None

    def prog(stage: str) -> Callable[[int, int, str], None] | None:
        if progress is None:
            return None
        return lambda i, n, _name: progress(stage, i, n)

    def ckpt(name: str) -> str | None:
        return None if workdir is None else f"{workdir}/profile_{name}.json"

    if method in ("adafire", "adafire+ssc"):
        theta_table = None
        if cfg.phi_profile_thresholds == "per_candidate":
            with stages("thresholds_per_phi"):
                theta_table = thresholds_per_phi(snn, cfg.phi_candidates, timesteps=T, config=calib,
                                                 batches=thr_batches)
        with stages("profile_phi"):
            table = profile(snn, profile_x, knob="phi", candidates=cfg.phi_candidates, timesteps=T,
                            cost_fn=cost_fn(), checkpoint=ckpt("phi"), progress=prog("profile_phi"),
                            thresholds=theta_table)
        with stages("search_phi"):
            st = SearchTable.from_mapping(table.as_mapping())
            budget = cfg.energy_ratio * st.evaluate(cfg.phi_target)[0]
            sel = minimise_score(st, budget)
            for name, phi in sel.choices.items():
                neurons[name].set_phi(int(phi))
            record["frontiers"] = {"phi": _frontier_record(st, sel, budget)}
        _store_table(record, table)
        with stages("refit_thresholds"):
            calibrate_thresholds(snn, None, timesteps=T, config=calib, batches=thr_batches)
    if calib.weight_calibration and method != "plain":
        from adacal.calibrate.weights import calibrate_weights

        with stages("weight_calibration"):
            calibrate_weights(snn, thr_batches, timesteps=T, iters=calib.weight_iters, lr=calib.weight_lr)
    if calib.correction != "none":
        with stages("correction"):
            correct_bias(snn, None, timesteps=T, target=calib.correction, batches=corr_batches)
    if method == "adafire+ssc":
        with stages("profile_rho"):
            table = profile(snn, profile_x, knob="rho", candidates=cfg.rho_candidates, timesteps=T,
                            cost_fn=cost_fn(), checkpoint=ckpt("rho"), progress=prog("profile_rho"))
        with stages("search_rho"):
            base = 1.0 if 1.0 in table.candidates else min(table.candidates)
            if cfg.sensitivity_budget == "sum":
                st = SearchTable.from_mapping(table.as_mapping())
                budget = cfg.sensitivity_ratio * st.evaluate(base)[1]
            else:
                st = SearchTable.from_mapping(excess_over(table.as_mapping(), base))
                network = sum(row[base] for row in table.scores.values()) / len(table.scores)
                budget = (cfg.sensitivity_ratio - 1.0) * network
            sel = minimise_cost(st, budget)
            for name, rho in sel.choices.items():
                neurons[name].set_rho(float(rho))
            record.setdefault("frontiers", {})["rho"] = _frontier_record(st, sel, budget)
        _store_table(record, table)
        if calib.correction != "none":
            with stages("correction_after_ssc"):
                # ρ changed the thresholds the earlier correction was made for
                for n in neurons.values():
                    n.clear_corrections()
                correct_bias(snn, None, timesteps=T, target=calib.correction, batches=corr_batches)
    record["thresholds"] = _threshold_summary(snn)
    record["phi"] = {k: int(n.phi) for k, n in neurons.items()}
    record["rho"] = {k: float(n.rho) for k, n in neurons.items()}
    record["stage_times"] = stages.times
    log.info("%s conversion done in %.1f s", method, sum(stages.times.values()))
    return snn, record


def excess_over(
    table: dict[str, dict[float, tuple[float, float]]], base: float
) -> dict[str, dict[float, tuple[float, float]]]:
    """``{layer: {v: (cost, max(0, score − score at base))}}``: sensitivity increases only."""
    return {layer: {v: (c, max(0.0, s - row[base][1])) for v, (c, s) in row.items()}
            for layer, row in table.items()}


def _store_table(record: dict[str, Any], table: SensitivityTable) -> None:
    d = table.to_dict()
    record.setdefault("sensitivity", {})[table.knob] = d["scores"]
    record.setdefault("energy_table", {})[table.knob] = d["costs"]
    record.setdefault("spike_table", {})[table.knob] = d["spikes"]
    record.setdefault("profile_seconds", {})[table.knob] = d["seconds"]

"""One call from a trained ANN to a calibrated, searched SNN (method.md §8), with a full record.

:func:`convert` runs the stages of the method's :class:`~adacal.recipes.Recipe`; each stage type
has one runner below. Knobs (φ, ρ, ...) are handled through :mod:`adacal.knobs`, so nothing here
names a method or a knob.
"""
from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from typing import Any

import torch
from torch import Tensor, nn

from adacal.calibrate import calibrate_thresholds, calibrate_thresholds_presented, correct_bias
from adacal.config import PipelineConfig
from adacal.convert import prepare
from adacal.data import InputFn, take_batches
from adacal.devices import model_device
from adacal.knobs import KNOBS, get_knob
from adacal.neurons.analog import RunningIncrement
from adacal.presentation import Present, Presentation, concat, present_all
from adacal.recipes import Correction, Search, Thresholds, Uniform, WeightCalibration, get_recipe
from adacal.sensitivity import CostFn, profile
from adacal.spiking_model import SpikingModel

__all__ = ["PipelineConfig", "analog_errors", "convert"]

log = logging.getLogger(__name__)

Progress = Callable[[str, int, int], None]


@dataclass
class _Context:
    """What the stages of one conversion share: ``batches`` are what the ANN sees, ``shown`` what
    the SNN sees over T steps (the same batches as constant inputs, unless a task presents them
    otherwise, e.g. as event streams)."""

    snn: SpikingModel
    config: PipelineConfig
    batches: list[Any]
    record: dict[str, Any]
    progress: Progress | None
    workdir: str | None
    divergence: Any = None
    times: dict[str, float] = field(default_factory=dict)
    shown: list[Presentation] = field(default_factory=list)

    @property
    def threshold_batches(self) -> list[Any]:
        return self.batches[: self.config.calibration.num_batches]

    @property
    def correction_batches(self) -> list[Any]:
        return self.batches[: self.config.calibration.correction_batches]

    @property
    def sequence(self) -> bool:
        """The SNN sees a different input at every step: calibrate on what it really sees."""
        return bool(self.shown) and self.shown[0].sequence

    @contextmanager
    def stage(self, name: str) -> Iterator[None]:
        log.info("stage: %s", name)
        t0 = time.perf_counter()
        try:
            yield
        finally:
            key, k = name, 2
            while key in self.times:  # a stage type used twice in a recipe (e.g. the threshold refit)
                key, k = f"{name}_{k}", k + 1
            self.times[key] = round(time.perf_counter() - t0, 4)


def _uniform(stage: Uniform, ctx: _Context) -> None:
    knob = get_knob(stage.knob)
    value = knob.resolve(stage.at, ctx.config)
    for n in ctx.snn.neurons().values():
        knob.set(n, value)


def _thresholds(stage: Thresholds, ctx: _Context) -> None:
    calib = ctx.config.calibration
    if stage.method is not None:
        calib = replace(calib, method=stage.method)
    with ctx.stage("thresholds"):
        if ctx.sequence and calib.method == "mse":  # the MSE of what the neurons really receive
            calibrate_thresholds_presented(ctx.snn, ctx.shown[: calib.num_batches],
                                           timesteps=ctx.config.timesteps, config=calib)
        else:
            calibrate_thresholds(ctx.snn, None, timesteps=ctx.config.timesteps, config=calib,
                                 batches=ctx.threshold_batches)


def _profile_input(ctx: _Context) -> Presentation:
    joined = concat(ctx.shown)
    return joined.narrow(0, min(ctx.config.profile_batch, joined.batch_size()))


def _sops_cost(snn: SpikingModel, shown: Presentation) -> CostFn:
    """Cost of a neuron's spikes in synaptic operations per sample (energy-model fan-out)."""
    from adacal.energy import EnergyModel

    model = EnergyModel.build(snn, shown.first_sample())
    batch = shown.batch_size()
    return lambda name, spikes: model.neuron_costs({name: spikes}, batch, metric="sops")[name]


def _search(stage: Search, ctx: _Context) -> None:
    cfg, knob = ctx.config, get_knob(stage.knob)
    x = _profile_input(ctx)
    t0 = time.perf_counter()
    thresholds = knob.profile_thresholds(ctx.snn, cfg, ctx.threshold_batches)
    if thresholds is not None:  # the knob refits thresholds per candidate
        ctx.times[f"thresholds_per_{knob.name}"] = round(time.perf_counter() - t0, 4)
    progress = None if ctx.progress is None else (lambda i, n, _name: ctx.progress(f"profile_{knob.name}", i, n))
    with ctx.stage(f"profile_{knob.name}"):
        table = profile(ctx.snn, x.inputs, knob=knob, candidates=knob.candidates(cfg), timesteps=cfg.timesteps,
                        sequence=x.sequence,
                        cost_fn=_sops_cost(ctx.snn, x) if cfg.search_cost == "sops" else None,
                        checkpoint=None if ctx.workdir is None else f"{ctx.workdir}/profile_{knob.name}.json",
                        progress=progress, thresholds=thresholds, divergence=ctx.divergence)
    with ctx.stage(f"search_{knob.name}"):
        sel = knob.select(table.as_mapping(), cfg)
        neurons = ctx.snn.neurons()
        for name, value in sel.choices.items():
            knob.set(neurons[name], value)
    d = table.to_dict()
    rec = ctx.record
    rec.setdefault("frontiers", {})[knob.name] = sel.frontier
    for key, part in (("sensitivity", "scores"), ("energy_table", "costs"), ("spike_table", "spikes"),
                      ("profile_seconds", "seconds")):
        rec.setdefault(key, {})[knob.name] = d[part]


def _weight_calibration(stage: WeightCalibration, ctx: _Context) -> None:
    calib = ctx.config.calibration
    if not calib.weight_calibration:
        return
    from adacal.calibrate.weights import calibrate_weights

    with ctx.stage("weight_calibration"):
        calibrate_weights(ctx.snn, ctx.threshold_batches, timesteps=ctx.config.timesteps,
                          iters=calib.weight_iters, lr=calib.weight_lr)


def _correction(stage: Correction, ctx: _Context) -> None:
    target = ctx.config.calibration.correction
    if target == "none":
        return
    with ctx.stage("correction"):
        if stage.fresh:  # the thresholds changed since: older corrections no longer apply
            for n in ctx.snn.neurons().values():
                n.clear_corrections()
        n = ctx.config.calibration.correction_batches
        correct_bias(ctx.snn, None, timesteps=ctx.config.timesteps, target=target,
                     batches=[p.inputs for p in ctx.shown[:n]], sequence=ctx.sequence,
                     reference=ctx.correction_batches)


_RUNNERS: dict[type, Callable[[Any, _Context], None]] = {
    Uniform: _uniform, Thresholds: _thresholds, Search: _search, WeightCalibration: _weight_calibration,
    Correction: _correction,
}


def convert(
    ann: nn.Module,
    calib_data: Any,
    *,
    config: PipelineConfig | None = None,
    input_fn: InputFn | None = None,
    progress: Progress | None = None,
    workdir: str | None = None,
    divergence: Callable[[Any, Any], Any] | None = None,
    present: Present | None = None,
) -> tuple[SpikingModel, dict[str, Any]]:
    """Convert ``ann`` with ``config.method``; returns the SNN and a JSON-safe record.

    ``calib_data``: training-set batches (never test data). ``workdir``: where sensitivity
    profiles are checkpointed, so an interrupted run resumes. ``progress(stage, i, n)`` is called
    as profiling advances. ``divergence(ann_out, snn_out)``: the task's distance used by profiling
    (default: symmetric KL of softmax outputs). ``present(inputs, T)``: what the SNN will see for
    a batch (a task's :meth:`~adacal.tasks.Task.present`; default: the batch at every step); the
    ANN sees its time average, and thresholds (MSE), bias correction and profiling are measured on
    the presented per-step inputs, so the SNN is calibrated for the input it will really get.
    """
    cfg = config or PipelineConfig()
    recipe = get_recipe(cfg.method)
    calib = cfg.calibration
    t_data = time.perf_counter()
    raw = take_batches(calib_data, max(calib.num_batches, calib.correction_batches), input_fn=input_fn,
                       device=model_device(ann))
    shown = present_all(raw, present, cfg.timesteps)
    batches = [p.ann_inputs() for p in shown]
    times = {"data": round(time.perf_counter() - t_data, 4)}
    t_prep = time.perf_counter()
    snn = prepare(ann, batches[0], config=cfg.conversion)
    times["prepare"] = round(time.perf_counter() - t_prep, 4)
    record: dict[str, Any] = {"method": cfg.method, "timesteps": cfg.timesteps, "config": cfg.to_dict()}
    ctx = _Context(snn, cfg, batches, record, progress, workdir, divergence, times, shown)
    for stage in recipe.stages:
        _RUNNERS[type(stage)](stage, ctx)
    shown_x = _profile_input(ctx)
    errors = analog_errors(snn, shown_x.inputs, cfg.timesteps, sequence=shown_x.sequence)
    if errors:
        record["analog_ops"] = errors
        worst = max(errors.values())
        (log.warning if worst > 0.05 else log.info)(
            "ops kept in floating point (analog): relative error of their time-averaged SNN output against the "
            "ANN at T=%d on calibration data: %s", cfg.timesteps, {k: round(v, 4) for k, v in errors.items()})
    neurons = snn.neurons()
    record["thresholds"] = {k: {"mean": float(n.theta.mean()), "min": float(n.theta.min()),
                                "max": float(n.theta.max())} for k, n in neurons.items()}
    record["knobs"] = {knob.name: {k: knob.get(n) for k, n in neurons.items()} for knob in KNOBS.values()}
    record["stage_times"] = ctx.times
    log.info("%s conversion done in %.1f s", cfg.method, sum(ctx.times.values()))
    return snn, record


@torch.no_grad()
def analog_errors(snn: SpikingModel, x: Any, timesteps: int, *, sequence: bool = False) -> dict[str, float]:
    """Relative error of every analog op's time-averaged SNN output against its ANN output.

    ``sequence``: ``x`` is ``[T, B, ...]`` (a different input every step); the ANN sees its time average.

    The output wrapper of an analog op receives ``f(x̄_t)`` at step t (:mod:`adacal.neurons.analog`);
    its value after the last step is what the SNN computes for the op.
    """
    wrappers = {k: m for k, m in snn.graph_module.named_modules() if isinstance(m, RunningIncrement)}
    if not wrappers:
        return {}
    seen: dict[str, dict[str, Tensor]] = {"ann": {}, "snn": {}}

    def hook(name: str, key: str) -> Callable[..., None]:
        def grab(m: RunningIncrement, args: tuple[Tensor, ...]) -> None:
            y = args[0]
            if key == "snn":  # the last of the steps stacked on the batch dimension
                y = y.unflatten(m.batch_dim, (timesteps, -1)).select(m.batch_dim, timesteps - 1)
            seen[key][name] = y.detach()
        return grab

    ann_x = Presentation(x, sequence).ann_inputs()
    for key, run in (("ann", lambda: snn.ann_forward(ann_x)),
                     ("snn", lambda: snn.run(x, timesteps, sequence=sequence, time_chunk=None))):
        handles = [m.register_forward_pre_hook(hook(k, key)) for k, m in wrappers.items()]
        try:
            run()
        finally:
            for h in handles:
                h.remove()
    return {k: float((seen["snn"][k] - a).norm() / a.norm().clamp(min=1e-12)) for k, a in seen["ann"].items()}

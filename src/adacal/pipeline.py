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

from adacal import inputs
from adacal.calibrate import calibrate_thresholds, calibrate_thresholds_presented, correct_bias
from adacal.calibrate.correction import correction_capacity
from adacal.config import PipelineConfig
from adacal.convert import prepare
from adacal.data import InputFn, take_batches, take_split
from adacal.devices import model_device
from adacal.distributed import check_ranks
from adacal.errors import DataError
from adacal.knobs import KNOBS, Checked, Knob, get_knob
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
    holdout: list[Any] = field(default_factory=list)
    _check: Any = None

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

    def check(self) -> Any:
        """The held-out check (:class:`adacal.holdout.HoldoutCheck`), or None when it is off or has no data."""
        if self.config.check == "none":
            return None
        if self._check is None:
            if not self.holdout:
                log.warning("held-out check skipped: no held-out images (pass holdout_data=, or calibration data "
                            "with more batches than calibration.num_batches/correction_batches use)")
                self.record["checks"] = {"skipped": "no held-out images"}
                self._check = False
            else:
                from adacal.holdout import HoldoutCheck

                self._check = HoldoutCheck(self.snn, self.holdout, timesteps=self.config.timesteps,
                                           divergence=self.divergence)
        return self._check or None

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
    d = table.to_dict()
    rec = ctx.record
    rec.setdefault("frontiers", {})[knob.name] = sel.frontier
    for key, part in (("sensitivity", "scores"), ("energy_table", "costs"), ("spike_table", "spikes"),
                      ("profile_seconds", "seconds")):
        rec.setdefault(key, {})[knob.name] = d[part]
    check = ctx.check()
    if check is None:
        _apply(knob, ctx.snn, sel.choices)
        for then in stage.then:
            _RUNNERS[type(then)](then, ctx)
        return
    with ctx.stage(f"check_{knob.name}"):
        rec.setdefault("checks", {})[knob.name] = _checked_pick(stage, ctx, knob, table.as_mapping(), sel.choices,
                                                                check)


def _apply(knob: Knob, snn: SpikingModel, choices: dict[str, Any]) -> None:
    neurons = snn.neurons()
    for name, value in choices.items():
        knob.set(neurons[name], value)


def _snapshot(snn: SpikingModel) -> dict[str, Any]:
    return {k: v.detach().clone() for k, v in snn.state_dict().items()}


def _checked_pick(stage: Search, ctx: _Context, knob: Knob, table: dict[str, dict[Any, tuple[float, float]]],
                  first: dict[str, Any], check: Any) -> dict[str, Any]:
    """Measure uniform settings and Pareto picks as they will run; keep the best within the knob's bound.

    Each configuration is set on the network as it was before the search, then ``stage.then``
    (threshold refit, correction) turns it into the network as it runs, and the held-out check
    measures it. Uniform settings are measured when the additive model says they could beat the
    uniform reference within the widest budget. A φ-like knob (objective ``"score"``) re-searches
    with a smaller budget while a pick's measured energy exceeds the measured bound; a ρ-like knob
    measures the picks of every budget of its ladder. Returns the record: what was compared, and why the pick won.
    """
    from adacal.search import SearchTable, minimise_cost, minimise_score

    cfg, snn, metric = ctx.config, ctx.snn, ctx.config.check_metric
    start = _snapshot(snn)
    quiet = replace(ctx, times={})  # the then-stages' times count as the check's
    st = SearchTable.from_mapping(knob.search_table(table, cfg))
    measured: list[Checked] = []
    states: dict[tuple[Any, ...], tuple[Checked, dict[str, Any]]] = {}

    def predicted(choices: dict[str, Any]) -> tuple[float, float]:
        rows = knob.search_table(table, cfg)
        return (sum(rows[k][v][0] for k, v in choices.items()), sum(rows[k][v][1] for k, v in choices.items()))

    also: dict[tuple[Any, ...], list[str]] = {}

    def realise(label: str, choices: dict[str, Any]) -> Checked:
        key = tuple(choices[k] for k in table)
        if key in states:  # measured already (e.g. the Pareto pick is a uniform setting)
            also.setdefault(key, []).append(label)
            return states[key][0]
        snn.load_state_dict(start)
        _apply(knob, snn, choices)
        for then in stage.then:
            _RUNNERS[type(then)](then, quiet)
        m = check.measure(snn)
        c = Checked(label, dict(choices), m.energy_pj, m.score(metric), predicted(choices), m.to_dict())
        states[key] = (c, _snapshot(snn))
        measured.append(c)
        log.info("check %s: %s -> %.4g µJ, score %.4g (agreement %.2f%%)", knob.name, label, c.energy / 1e6,
                 c.score, 100 * m.agreement)
        return c

    ref_value = knob.reference(cfg)
    reference = realise(f"uniform {knob.symbol}={ref_value:g}", {k: ref_value for k in table})
    bound = knob.check_bound(reference, cfg)
    ladder = knob.budget_ladder(table, cfg)
    limit = max(ladder)
    ref_cost, ref_score = reference.predicted or (0.0, 0.0)
    for value in knob.candidates(cfg):  # uniform settings that could beat the reference within the widest budget
        cost, score = predicted({k: value for k in table})
        within = (cost if knob.objective == "score" else score) <= limit * (1 + 1e-9) + 1e-12
        better = score < ref_score if knob.objective == "score" else cost < ref_cost
        if within and better:
            realise(f"uniform {knob.symbol}={value:g}", {k: value for k in table})
    for budget in ladder:
        try:
            sel = (minimise_score if knob.objective == "score" else minimise_cost)(st, budget)
        except Exception as exc:  # noqa: BLE001 - an infeasible rung is skipped, the others still count
            log.info("check %s: budget %.6g infeasible (%s)", knob.name, budget, exc)
            continue
        c = realise(f"pareto @ {budget:.6g}", {k: knob.check(v) for k, v in sel.choices.items()})
        for _ in range(4):  # a φ-like pick over the measured energy: search again under a smaller budget
            if knob.objective != "score" or knob.feasible(c, bound):
                break
            budget *= bound / c.energy * 0.995
            try:
                sel = minimise_score(st, budget)
            except Exception:  # noqa: BLE001
                break
            c = realise(f"pareto @ {budget:.6g}", {k: knob.check(v) for k, v in sel.choices.items()})
    best, why = knob.choose(measured, reference, cfg)
    snn.load_state_dict(states[tuple(best.choices[k] for k in table)][1])
    log.info("check %s keeps %s: %s", knob.name, best.label, why)
    names = list(table)
    return {
        "metric": metric, "images": check.images, "bound": bound, "reference": reference.label, "picked": best.label,
        "reason": why, "pareto_first": first == best.choices,
        "candidates": [{"label": c.label, "energy_pj": c.energy, "score": c.score,
                        "predicted_cost": c.predicted[0] if c.predicted else None,
                        "predicted_score": c.predicted[1] if c.predicted else None,
                        "feasible": knob.feasible(c, bound), "values": [c.choices[k] for k in names],
                        "also": also.get(tuple(c.choices[k] for k in names), []),
                        **{k: v for k, v in (c.details or {}).items() if k in ("divergence", "agreement")}}
                       for c in measured],
    }


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
                     reference=ctx.correction_batches, memory_mb=ctx.config.calibration.correction_memory_mb)


def _correction_samples(ctx: _Context) -> int:
    """Samples the bias correction saw: its batches, cut to what fits its memory budget."""
    if ctx.config.calibration.correction == "none" or not ctx.shown:
        return 0
    n = sum(inputs.batch_size(b) for b in ctx.correction_batches)
    first = ctx.shown[0]
    return min(n, correction_capacity(ctx.snn, first.inputs, ctx.config.timesteps, first.sequence,
                                      ctx.config.calibration.correction_memory_mb))


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
    holdout_data: Any = None,
    present: Present | None = None,
) -> tuple[SpikingModel, dict[str, Any]]:
    """Convert ``ann`` with ``config.method``; returns the SNN and a JSON-safe record.

    ``calib_data``: training-set batches (never test data). ``holdout_data``: other training
    batches for the searches' held-out check (``config.check``; its first ``check_images`` inputs);
    if None, the calibration batches beyond those calibration and correction use serve (taken in
    the same pass, so they never overlap). ``workdir``: where sensitivity
    profiles are checkpointed, so an interrupted run resumes. ``progress(stage, i, n)`` is called
    as profiling advances. ``divergence(ann_out, snn_out)``: the task's distance used by profiling
    (default: symmetric KL of softmax outputs). ``present(inputs, T)``: what the SNN will see for
    a batch (a task's :meth:`~adacal.tasks.Task.present`; default: the batch at every step); the
    ANN sees its time average, and thresholds (MSE), bias correction and profiling are measured on
    the presented per-step inputs, so the SNN is calibrated for the input it will really get.
    Under torch.distributed pass every rank the same ``calib_data`` (adacal splits the work,
    :mod:`adacal.distributed`); all ranks return the same SNN.
    """
    cfg = config or PipelineConfig()
    recipe = get_recipe(cfg.method)
    calib = cfg.calibration
    t_data = time.perf_counter()
    n_cal, dev = max(calib.num_batches, calib.correction_batches), model_device(ann)
    wants_check = cfg.check != "none" and any(isinstance(s, Search) for s in recipe.stages)
    held: list[Any] = []
    if wants_check and holdout_data is None:
        raw, held = take_split(calib_data, n_cal, cfg.check_images, input_fn=input_fn, device=dev)
    else:
        raw = take_batches(calib_data, n_cal, input_fn=input_fn, device=dev)
        if wants_check:
            held = take_split(holdout_data, 0, cfg.check_images, input_fn=input_fn, device=dev,
                              what="held-out data")[1]
            if not held:
                raise DataError("holdout_data is empty: it yielded no batch; pass held-out training batches or "
                                "holdout_data=None")
    shown = present_all(raw, present, cfg.timesteps)
    batches = [p.ann_inputs() for p in shown]
    held_shown = present_all(held, present, cfg.timesteps)
    # the check runs the SNN on constant inputs: it cannot measure a network fed a different input each step
    holdout = [] if any(p.sequence for p in held_shown) else [p.inputs for p in held_shown]
    times = {"data": round(time.perf_counter() - t_data, 4)}
    check_ranks(ann, batches)
    t_prep = time.perf_counter()
    snn = prepare(ann, batches[0], config=cfg.conversion)
    times["prepare"] = round(time.perf_counter() - t_prep, 4)
    record: dict[str, Any] = {"method": cfg.method, "timesteps": cfg.timesteps, "config": cfg.to_dict()}
    if snn.analog_prefix_ops:  # not spiking and not priced by the energy model: say so in the record
        record["analog_prefix_ops"] = list(snn.analog_prefix_ops)
    ctx = _Context(snn, cfg, batches, record, progress, workdir, divergence, times, shown=shown, holdout=holdout)
    for stage in recipe.stages:
        _RUNNERS[type(stage)](stage, ctx)
    shown_x = _profile_input(ctx)
    record["samples"] = {  # which calibration samples each stage saw (the first N of calib_data)
        "thresholds": sum(inputs.batch_size(b) for b in ctx.threshold_batches),
        "correction": _correction_samples(ctx),
        "profile": shown_x.batch_size() if any(isinstance(s, Search) for s in recipe.stages) else 0}
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

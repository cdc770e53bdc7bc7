"""Evaluation of a converted SNN on a task's data: its metrics, timesteps and energy per sample."""
from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch

from adacal import inputs, progress
from adacal.checks import check_timesteps
from adacal.devices import model_device
from adacal.distributed import agree, all_reduce_sum, check_same_model, reduce_counts, world
from adacal.errors import ConfigError, DataError
from adacal.iat.policy import ExitPolicy
from adacal.iat.runtime import run_early_exit
from adacal.presentation import Presentation
from adacal.spiking_model import SpikingModel
from adacal.tasks import Task, get_task

__all__ = ["collect_examples", "evaluate", "evaluate_ann", "fit_exit_policy", "fit_risk_exit", "held_out_outputs",
           "task_batches"]

log = logging.getLogger(__name__)


def task_batches(data: Any, task: Task, device: torch.device,
                 max_batches: int | None = None, *, what: str = "evaluate") -> Iterator[tuple[Any, Any]]:
    """``(inputs, target)`` of every batch, split by the task and moved to ``device``; each batch is a
    step of the progress task ``what`` (:mod:`adacal.progress`)."""
    if isinstance(data, torch.Tensor) or not hasattr(data, "__iter__"):
        raise DataError(f"{what}: data must be an iterable of (inputs, target) batches (a DataLoader), got "
                        f"{type(data).__name__}")
    it = iter(data)
    if max_batches is not None:
        it = itertools.islice(it, max_batches)
    n = 0
    with progress.task(what, progress.length_of(data, max_batches), "batch") as bar:
        for batch in it:
            x, y = task.split_batch(batch)
            n += 1
            yield (inputs.map_tensors(lambda t: t.to(device), x),
                   inputs.map_tensors(lambda t: t.to(device), y))
            bar.advance()
    if n == 0:
        raise DataError("evaluation data is empty: it yielded no batch")


def _shown(task: Task, x: Any, timesteps: int, sequence: bool) -> Presentation:
    """What the SNN sees for batch inputs ``x``: ``x`` itself when the caller passes ready-made
    sequences (``sequence=True``), else the task's presentation for ``timesteps`` steps."""
    return Presentation(x, True) if sequence else task.present(x, timesteps)


def _infer_classes(task: Task, output: Any) -> Task:
    """A task given by name learns ``num_classes`` from the model's output (dim 1 of the first output)."""
    if "num_classes" not in task.info:
        first = inputs.leaves(output)[0]
        task.info["num_classes"] = int(first.shape[1]) if first.dim() > 1 else 1
    return task


@torch.no_grad()
def evaluate_ann(model: torch.nn.Module, data: Any, *, task: str | Task = "classification",
                 max_batches: int | None = None) -> dict[str, Any]:
    """The ANN's task metrics on ``data`` (the reference every SNN run is compared with)."""
    dev = model_device(model)
    task = get_task(task)
    was = model.training
    model.eval()
    metrics = None
    try:
        batches = task_batches(data, task, dev, max_batches, what="evaluate ANN")
        for x, y in agreed_batches(batches, "ANN evaluation data"):
            out = inputs.call(model, task.ann_input(x))
            if metrics is None:
                metrics = _infer_classes(task, out).metrics().to(dev)
            metrics.update(out, y)
    finally:
        model.train(was)
    assert metrics is not None
    return metrics.compute()


@torch.no_grad()
def fit_exit_policy(
    snn: SpikingModel,
    data: Any,
    *,
    timesteps: int,
    task: str | Task = "classification",
    alpha_base: float = 0.6,
    delta: float = 1.0,
    score: str = "entropy",
    num_batches: int = 100,
    sequence: bool = False,
) -> ExitPolicy:
    """Fit IAT thresholds from the SNN's per-step outputs on (training) data (method.md §7).

    The SNN sees each batch as the task presents it for T steps (``sequence=True``: the batches are
    already ``[T, B, ...]`` sequences).
    """
    T = check_timesteps(timesteps)
    dev = model_device(snn)
    task = get_task(task)
    batches = ((snn.run(shown.inputs, T, sequence=shown.sequence), y)
               for x, y in task_batches(data, task, dev, num_batches, what=f"fit IAT policy T={T}")
               for shown in [_shown(task, x, T, sequence)])
    first = next(batches)  # one batch of per-step outputs in memory at a time (dense maps at large T)
    _infer_classes(task, inputs.map_tensors(lambda o: o[0], first[0]))
    return ExitPolicy.fit_batches(itertools.chain([first], batches), alpha_base=alpha_base, delta=delta,
                                  score=score, accumulate=task.exit_accumulate, scorer=task.exit_score,
                                  correct=task.correct)


@torch.no_grad()
def held_out_outputs(snn: SpikingModel, data: Any, *, timesteps: int, task: str | Task = "classification",
                     max_batches: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Every step's output ``[T, B, C, ...]`` and the targets on ``data`` (what an exit rule is calibrated on)."""
    T = check_timesteps(timesteps)
    dev = model_device(snn)
    task = get_task(task)
    outs, ys = [], []
    for x, y in task_batches(data, task, dev, max_batches, what=f"held-out outputs T={T}"):
        shown = _shown(task, x, T, False)
        out = snn.run(shown.inputs, T, sequence=shown.sequence)
        if not isinstance(out, torch.Tensor) or not isinstance(y, torch.Tensor):
            raise ConfigError("the risk-controlled exit rule needs one output tensor and tensor targets; "
                              "use exit_rule='eq15' for this task")
        outs.append(out)
        ys.append(y)
    return torch.cat(outs, 1), torch.cat(ys)


def fit_risk_exit(
    snn: SpikingModel,
    data: Any,
    *,
    timesteps: int,
    task: str | Task = "classification",
    epsilon: float,
    confidence: float = 0.9,
    loss: str = "error",
    max_batches: int | None = None,
    outputs: tuple[torch.Tensor, torch.Tensor] | None = None,
) -> ExitPolicy:
    """The risk-controlled exit rule (:func:`adacal.iat.calibrate_exit`) on held-out training ``data``.

    ``epsilon``: the tolerated accuracy drop against full T, a fraction (0.001 = 0.1 points), held
    with probability ``confidence`` over the draw of ``data`` — which must be training inputs the
    SNN was not calibrated on (and never test inputs). Needs tensor outputs ``[B, C, ...]``.
    ``outputs``: :func:`held_out_outputs` already recorded (then ``data`` is not read).
    """
    from adacal.iat.risk import calibrate_exit

    out, y = outputs if outputs is not None else held_out_outputs(snn, data, timesteps=timesteps, task=task,
                                                                  max_batches=max_batches)
    policy, _ = calibrate_exit(out, y, epsilon=epsilon, delta=1.0 - confidence, loss=loss)
    return policy


@torch.no_grad()
def evaluate(
    snn: SpikingModel,
    data: Any,
    *,
    timesteps: int,
    task: str | Task = "classification",
    exit_policy: ExitPolicy | None = None,
    energy: Any = "auto",
    max_batches: int | None = None,
    sequence: bool = False,
    progress: Callable[[int, int | None], None] | None = None,
    examples: int | Sequence[int] = 0,
) -> dict[str, Any]:
    """Task metrics, mean timesteps and energy per sample on ``data``.

    The SNN sees each batch as ``task.present`` shows it for T steps (``sequence=True``: the batches
    are already ``[T, B, ...]`` sequences). With ``exit_policy`` each input stops early (IAT) and
    energy counts only the steps run; input events of a streamed presentation count toward the
    energy of the layers they drive, step by step.
    ``energy``: an :class:`adacal.energy.EnergyModel`, ``"auto"`` (built from the first batch) or
    None (skip energy). ``examples``: keep what the task shows in pictures for the first N samples,
    or for the samples at these indices (``result["examples"]``, each with its ``"index"``). The
    metrics are also top-level keys of the result (``result["accuracy"]``).

    A task without per-step metrics that averages its outputs over time (the default
    :meth:`~adacal.tasks.Task.reduce_time`) gets that average accumulated chunk by chunk, so memory
    does not grow with T (dense maps at large T).
    """
    T = check_timesteps(timesteps if exit_policy is None else exit_policy.T)
    dev = model_device(snn)
    metrics = per_step = None
    hist = torch.zeros(T, dtype=torch.long)
    total = steps_run = 0
    events: Any = None
    any_sequence = False
    kept: list[dict[str, Any]] = []
    t0 = time.perf_counter()
    model = None
    probe: Any = None
    task = get_task(task)
    wanted = _example_indices(examples)
    streamed = not task.per_step and type(task).reduce_time is Task.reduce_time
    check_same_model(snn, what="SNN")
    with snn.record_activity():
        name = f"evaluate T={T}" + (" IAT" if exit_policy is not None else "")
        for i, (x, y) in enumerate(agreed_batches(task_batches(data, task, dev, max_batches, what=name),
                                                  "evaluation data")):
            shown = _shown(task, x, T, sequence)
            any_sequence |= shown.sequence
            batch = shown.batch_size()
            first = shown.first_sample()
            if metrics is None:
                probe = snn.ann_forward(first)
                metrics = _infer_classes(task, probe).metrics().to(dev)
                per_step = [task.metrics().to(dev) for _ in range(T)] if task.per_step and not exit_policy else None
                if energy == "auto":
                    from adacal.energy import EnergyModel

                    model = EnergyModel.build(snn, first)
            if exit_policy is None and streamed and per_step is None:  # memory does not grow with T
                out = snn.run(shown.inputs, T, sequence=shown.sequence, reduce="mean")
                steps_run += T * batch
                hist[T - 1] += batch
                ran = None
            elif exit_policy is None:
                out_steps = snn.run(shown.inputs, T, sequence=shown.sequence)
                out = task.reduce_time(out_steps)
                if per_step is not None:
                    running = None
                    for t in range(T):
                        step = inputs.map_tensors(lambda o, t=t: o[t], out_steps)
                        running = step if running is None else _sum(running, step)
                        per_step[t].update(inputs.map_tensors(lambda r, t=t: r / (t + 1), running), y)
                steps_run += T * batch
                hist[T - 1] += batch
                ran = None
            else:
                res = run_early_exit(snn, shown.inputs, exit_policy, sequence=shown.sequence, scorer=task.exit_score)
                steps_run += res.steps_run
                hist += torch.bincount(res.exit_steps.cpu() - 1, minlength=T)
                ran = res.exit_steps
                out = inputs.map_tensors(lambda o, res=res: o / res.exit_steps.view(-1, *[1] * (o.dim() - 1)),
                                         res.outputs)
            if shown.events is not None:
                ev = _events_run(shown.events, ran)
                events = ev if events is None else events + ev
            metrics.update(out, y)
            ex = _keep_examples(task, wanted, total, batch, x, out, y, dim=1 if sequence else 0)
            if ex is not None:
                kept.append(ex)
            total += batch
            if progress is not None:
                progress(i + 1, max_batches)
        counts = snn.spike_counts()
    if world().active:  # this rank's shard of the test data: sum the counts over ranks
        counts, (total, steps_run) = reduce_counts(counts, total, steps_run)
        total, (hist,) = int(total), all_reduce_sum([hist], what="summing exit histograms")
        if events is not None:  # input events of a streamed presentation (every rank has them or none)
            (events,) = all_reduce_sum([events], what="summing input events")
    assert metrics is not None
    seconds = time.perf_counter() - t0
    mean_steps = steps_run / total
    values = metrics.compute()
    result: dict[str, Any] = {
        "task": task.name,
        "timesteps": T,
        "num_samples": total,
        "metrics": values,
        "metrics_per_step": None,
        "mean_timesteps": mean_steps,
        "seconds": seconds,
        **values,
    }
    if per_step is not None:
        steps = [m.compute() for m in per_step]
        result["metrics_per_step"] = {k: [s[k] for s in steps] for k in values if isinstance(values[k], float)}
    if exit_policy is not None:
        result["exit_histogram"] = [int(h) for h in hist]
    if kept:
        result["examples"] = kept
    energy_model = model if energy == "auto" else energy
    if energy_model is not None:
        rep = energy_model.estimate(counts, num_samples=total, timesteps=mean_steps, sequence=any_sequence,
                                    input_events=events)
        # the task's own floating-point work, measured over this evaluation (e.g. NMS candidates)
        d = _add_outside(rep.to_dict(), task.analog_ops(probe), mean_steps if exit_policy is not None else 1.0)
        result["energy_mj"] = d["snn_energy_pj"] * 1e-9
        result["ann_energy_mj"] = d["ann_energy_pj"] * 1e-9
        result["energy"] = d
    head = task.headline
    log.info("evaluated %d samples: %s %.4g at %.2f mean timesteps (%.1f s)", total, head,
             values.get(head, float("nan")), mean_steps, seconds)
    return result


def agreed_batches(batches: Iterator[Any], what: str) -> Iterator[Any]:
    """``batches``, after every rank has checked it has at least one (an empty shard, or any error
    taking the first batch, fails on every rank at once instead of hanging the others)."""
    it = iter(batches)
    first: list[Any] = []
    problem: BaseException | None = None
    try:
        first.append(next(it))
    except StopIteration:
        problem = DataError(f"{what} is empty: it yielded no batch")
    except Exception as exc:  # re-raised below on this rank, reported on the others
        problem = exc
    if world().active:
        w = world()
        if isinstance(problem, DataError) and "yielded no batch" in str(problem):
            problem = DataError(f"{problem} on rank {w.rank} of {w.size}: its shard is empty; use fewer "
                                "processes than test samples (or more data)")
        agree(problem, what=what)
    elif problem is not None:
        raise problem
    yield from first
    yield from it


def _add_outside(report: dict[str, Any], rows: list[dict[str, Any]], step_runs: float) -> dict[str, Any]:
    """Price the task's floating-point work outside the network (:meth:`Task.analog_ops`) at E_MAC:
    layers of kind ``"analog"`` named ``outside.<name>``, added to the SNN's and the ANN's energy
    (the ANN runs each once; the SNN runs ``per_step`` rows ``step_runs`` times per sample)."""
    if not rows:
        return report
    e_mac = float(report["costs"]["e_mac_pj"])
    for r in rows:
        runs = step_runs if r.get("per_step") else 1.0
        macs = float(r["macs"])
        report["layers"].append({"name": f"outside.{r['name']}", "kind": "analog", "op": "outside", "macs": macs,
                                 "runs_per_image": runs, "macs_per_image": macs * runs, "sops_per_image": 0.0,
                                 "energy_pj": e_mac * macs * runs, "ann_energy_pj": e_mac * macs})
        report["snn_energy_pj"] += e_mac * macs * runs
        report["mac_energy_pj"] += e_mac * macs * runs
        report["ann_energy_pj"] += e_mac * macs
    report["energy_ratio"] = report["snn_energy_pj"] / report["ann_energy_pj"] if report["ann_energy_pj"] else None
    report["saving"] = None if report["energy_ratio"] is None else 1.0 - report["energy_ratio"]
    return report


def _events_run(events: torch.Tensor, exit_steps: torch.Tensor | None) -> torch.Tensor:
    """Input events per position over the steps each sample actually ran, summed over the batch."""
    if exit_steps is not None:
        t = torch.arange(events.shape[0], device=events.device).view(-1, 1, *[1] * (events.dim() - 2))
        events = events * (t < exit_steps.to(events.device).view(1, -1, *[1] * (events.dim() - 2)))
    return events.sum(dim=(0, 1)).double()


def _sum(a: Any, b: Any) -> Any:
    it = iter(inputs.leaves(b))
    return inputs.map_tensors(lambda t: t + next(it), a)


def _example_indices(examples: int | Sequence[int]) -> set[int]:
    """The sample indices whose pictures an evaluation keeps: the first N, or the given ones."""
    if isinstance(examples, (int, np.integer)) and not isinstance(examples, bool):
        return set(range(int(examples)))
    return {int(i) for i in examples}


def _keep_examples(task: Task, wanted: set[int], start: int, batch: int, x: Any, out: Any, y: Any,
                   dim: int = 0) -> dict[str, Any] | None:
    """``task.examples`` of the wanted samples in this batch (global indices ``start..start+batch-1``)."""
    local = sorted(i - start for i in wanted if start <= i < start + batch)
    if not local:
        return None
    idx = torch.tensor(local, dtype=torch.long)
    pick = lambda v, d: inputs.index_select(v, idx, d)  # noqa: E731
    ex = task.examples(pick(x, dim), pick(out, 0), pick(y, 0))
    if ex is None:
        return None
    return {**ex, "index": np.asarray(local, dtype=np.int64) + start}


@torch.no_grad()
def collect_examples(model: Callable[[Any], Any], data: Any, *, task: str | Task,
                     examples: int | Sequence[int], device: torch.device | None = None) -> list[dict[str, Any]]:
    """What ``task`` keeps for its pictures of the wanted test samples, from ``model``'s outputs
    (e.g. the ANN's, next to the SNN runs' ``evaluate(..., examples=...)``); stops after the last one."""
    task = get_task(task)
    wanted = _example_indices(examples)
    if not wanted:
        return []
    dev = device or (model_device(model) if isinstance(model, torch.nn.Module) else torch.device("cpu"))
    was = getattr(model, "training", None)
    if isinstance(model, torch.nn.Module):
        model.eval()
    kept: list[dict[str, Any]] = []
    start = 0
    try:
        for x, y in task_batches(data, task, dev):
            batch = inputs.batch_size(x)
            if any(start <= i < start + batch for i in wanted):
                ex = _keep_examples(task, wanted, start, batch, x, inputs.call(model, task.ann_input(x)), y)
                if ex is not None:
                    kept.append(ex)
            start += batch
            if start > max(wanted):
                break
    finally:
        if isinstance(model, torch.nn.Module) and was is not None:
            model.train(was)
    return kept

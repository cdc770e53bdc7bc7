"""Evaluation of a converted SNN on a task's data: its metrics, timesteps and energy per sample."""
from __future__ import annotations

import itertools
import logging
import time
from collections.abc import Callable, Iterator
from typing import Any

import torch

from adacal import inputs
from adacal.checks import check_timesteps
from adacal.devices import model_device
from adacal.errors import DataError
from adacal.iat.policy import ExitPolicy
from adacal.iat.runtime import run_early_exit
from adacal.presentation import Presentation
from adacal.spiking_model import SpikingModel
from adacal.tasks import Task, get_task

__all__ = ["evaluate", "evaluate_ann", "fit_exit_policy", "task_batches"]

log = logging.getLogger(__name__)


def task_batches(data: Any, task: Task, device: torch.device,
                 max_batches: int | None = None) -> Iterator[tuple[Any, Any]]:
    """``(inputs, target)`` of every batch, split by the task and moved to ``device``."""
    it = iter(data)
    if max_batches is not None:
        it = itertools.islice(it, max_batches)
    n = 0
    for batch in it:
        x, y = task.split_batch(batch)
        n += 1
        yield (inputs.map_tensors(lambda t: t.to(device), x),
               inputs.map_tensors(lambda t: t.to(device), y))
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
        for x, y in task_batches(data, task, dev, max_batches):
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
    outputs = []
    for x, y in task_batches(data, task, dev, num_batches):
        shown = _shown(task, x, T, sequence)
        outputs.append((snn.run(shown.inputs, T, sequence=shown.sequence), y))
    _infer_classes(task, inputs.map_tensors(lambda o: o[0], outputs[0][0]))
    return ExitPolicy.fit_batches(outputs, alpha_base=alpha_base, delta=delta, score=score,
                                  scorer=task.exit_score, correct=task.correct)


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
    examples: int = 0,
) -> dict[str, Any]:
    """Task metrics, mean timesteps and energy per sample on ``data``.

    The SNN sees each batch as ``task.present`` shows it for T steps (``sequence=True``: the batches
    are already ``[T, B, ...]`` sequences). With ``exit_policy`` each input stops early (IAT) and
    energy counts only the steps run; input events of a streamed presentation count toward the
    energy of the layers they drive, step by step.
    ``energy``: an :class:`adacal.energy.EnergyModel`, ``"auto"`` (built from the first batch) or
    None (skip energy). ``examples``: keep what the task shows in pictures for that many of the
    first samples (``result["examples"]``). The metrics are also top-level keys of the result
    (``result["accuracy"]``).
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
    task = get_task(task)
    with snn.record_activity():
        for i, (x, y) in enumerate(task_batches(data, task, dev, max_batches)):
            shown = _shown(task, x, T, sequence)
            any_sequence |= shown.sequence
            batch = shown.batch_size()
            first = shown.first_sample()
            if metrics is None:
                metrics = _infer_classes(task, snn.ann_forward(first)).metrics().to(dev)
                per_step = [task.metrics().to(dev) for _ in range(T)] if task.per_step and not exit_policy else None
                if energy == "auto":
                    from adacal.energy import EnergyModel

                    model = EnergyModel.build(snn, first)
            if exit_policy is None:
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
            if len(kept) < examples:
                ex = task.examples(x, out, y)
                if ex is not None:
                    kept.append(ex)
            total += batch
            if progress is not None:
                progress(i + 1, max_batches)
        counts = snn.spike_counts()
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
        d = rep.to_dict()
        result["energy_mj"] = d["snn_energy_pj"] * 1e-9
        result["ann_energy_mj"] = d["ann_energy_pj"] * 1e-9
        result["energy"] = d
    head = task.headline
    log.info("evaluated %d samples: %s %.4g at %.2f mean timesteps (%.1f s)", total, head,
             values.get(head, float("nan")), mean_steps, seconds)
    return result


def _events_run(events: torch.Tensor, exit_steps: torch.Tensor | None) -> torch.Tensor:
    """Input events per position over the steps each sample actually ran, summed over the batch."""
    if exit_steps is not None:
        t = torch.arange(events.shape[0], device=events.device).view(-1, 1, *[1] * (events.dim() - 2))
        events = events * (t < exit_steps.to(events.device).view(1, -1, *[1] * (events.dim() - 2)))
    return events.sum(dim=(0, 1)).double()


def _sum(a: Any, b: Any) -> Any:
    it = iter(inputs.leaves(b))
    return inputs.map_tensors(lambda t: t + next(it), a)

"""The task protocol: everything above the engine that depends on what the network predicts.

A :class:`Task` says how a batch splits into input and target, how per-step outputs become a
prediction, how predictions are scored (its metrics), how confident a running output is (early
exit), how the ANN is trained, how far an SNN's output is from the ANN's (profiling) and which
pictures it adds to a report. ``evaluate``, the sweep, training, the CLI and the report call these
methods and nothing task-specific of their own. A new task is one module with one subclass and a
:func:`~adacal.tasks.register_task` call.
"""
from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from adacal import inputs
from adacal.errors import DataError, ShapeError
from adacal.metrics import symmetric_kl
from adacal.presentation import Presentation

__all__ = ["MetricSet", "Task"]


class MetricSet:
    """Task metrics over a whole dataset: ``update(outputs, target)`` per batch, ``compute()`` once.

    Wraps torchmetrics objects (which accumulate state, not averages of averages, and sync across
    processes) under short names; ``scale`` turns fractions into percent.
    """

    def __init__(self, metrics: Mapping[str, Any], scale: Mapping[str, float] | None = None) -> None:
        self.metrics = dict(metrics)
        self.scale = dict(scale or {})

    def to(self, device: torch.device) -> MetricSet:
        for m in self.metrics.values():
            if hasattr(m, "to"):
                m.to(device)
        return self

    def update(self, outputs: Any, target: Any) -> None:
        for m in self.metrics.values():
            m.update(outputs, target)

    def compute(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, m in self.metrics.items():
            v = m.compute()
            v = v.tolist() if isinstance(v, Tensor) and v.numel() > 1 else float(v) if isinstance(v, Tensor) else v
            s = self.scale.get(k, 1.0)
            out[k] = [x * s for x in v] if isinstance(v, list) else v * s if isinstance(v, float) else v
        return out


class Task:
    """Base class of tasks. ``info`` holds the dataset facts a task needs (``num_classes``, ...)."""

    #: Registry key and the ``--task`` value.
    name: str = ""
    #: Metric key tables and plots lead with; its label; whether larger is better.
    headline: str = ""
    labels: Mapping[str, str] = {}
    higher_is_better: bool = True
    #: Whether evaluation also reports the metrics after every step t = 1..T (cheap tasks only).
    per_step: bool = False
    #: Whether input-aware adaptive timesteps (early exit) are defined for this task.
    supports_exit: bool = True
    #: Whether the risk-controlled exit rule (:func:`adacal.iat.calibrate_exit`) applies: one score
    #: tensor per sample against class labels. ``exit_rule="auto"`` picks eq. 15 otherwise.
    risk_exit: bool = False
    #: Which fixed test samples a sweep keeps (:meth:`examples`) for the report's pictures: the
    #: first N, or a tuple of sample indices.
    report_examples: int | tuple[int, ...] = 0
    #: What :meth:`exit_score` and :meth:`correct` see at step t: the running ``"sum"`` O_t or its
    #: ``"mean"`` O_t/t (a task that decodes the output, e.g. boxes from head maps, needs the mean).
    exit_accumulate: str = "sum"

    def __init__(self, **info: Any) -> None:
        self.info = dict(info)

    @property
    def num_classes(self) -> int:
        if "num_classes" not in self.info:
            raise DataError(f"task {self.name!r} needs num_classes (from the dataset or --num-classes)")
        return int(self.info["num_classes"])

    def describe(self) -> dict[str, Any]:
        """What the results file stores about the task (read back by the report)."""
        return {"name": self.name, "headline": self.headline, "higher_is_better": self.higher_is_better,
                "metrics": {k: {"label": v} for k, v in self.labels.items()},
                "info": {k: v for k, v in self.info.items() if isinstance(v, (int, float, str, bool, list))}}

    def bind_model(self, model: Any) -> None:
        """Learn what the task needs from the ANN it scores (e.g. a detector's box decoder); default nothing."""

    def analog_ops(self, output: Any) -> list[dict[str, Any]]:
        """Floating-point work the task does outside the network per sample (e.g. a detector's box
        decoding and NMS), priced by :func:`adacal.evaluate` with the energy model's E_MAC: rows
        ``{"name", "macs", "per_step"}`` (MAC-equivalent operations per run; ``per_step``: runs at
        every step under early exit, else once). ``output``: one sample's output. Default: none."""
        return []

    # ------------------------------------------------------------------ data
    def split_batch(self, batch: Any) -> tuple[Any, Any]:
        """``(inputs, target)`` of one batch (default: a ``(inputs, target)`` pair)."""
        if isinstance(batch, (list, tuple)) and len(batch) >= 2 and inputs.leaves(batch[0]):
            return batch[0], batch[1]
        raise DataError(f"task {self.name!r}: batches must be (inputs, target) pairs, got {type(batch).__name__}")

    def check_outputs(self, outputs: Any, what: str = "model") -> None:
        """Raise :class:`ShapeError` if the model's outputs do not fit this task's data."""

    def ann_input(self, x: Any) -> Any:
        """What the ANN is given for the task's inputs ``x`` (training, ANN evaluation, tracing).

        Default: ``x`` itself. A task whose inputs carry more than the ANN sees (event recordings in
        time bins, of which the ANN sees the accumulated frame) reduces them here.
        """
        return x

    def present(self, x: Any, timesteps: int) -> Presentation:
        """What the SNN is shown over ``timesteps`` steps for the inputs ``x``.

        Default: the ANN's input at every step. Contract (relied on by calibration, correction,
        profiling and evaluation): the time average of the presented input equals
        :meth:`ann_input` of ``x``; a sequence has exactly ``timesteps`` slices.
        """
        return Presentation(self.ann_input(x))

    # ------------------------------------------------------------------ predictions and metrics
    def reduce_time(self, per_step: Any) -> Any:
        """The network output from per-step outputs ``[T, B, ...]``: their time average."""
        return inputs.map_tensors(lambda o: o.mean(0), per_step)

    def metrics(self) -> MetricSet:
        raise NotImplementedError

    def loss(self, outputs: Any, target: Any, *, label_smoothing: float = 0.0) -> Tensor:
        """The training loss of the ANN (``label_smoothing``: for tasks with class targets)."""
        raise NotImplementedError

    # ------------------------------------------------------------------ conversion and early exit
    def divergence(self, ann: Any, snn: Any) -> Tensor:
        """How far the SNN's output is from the ANN's (sensitivity profiling): symmetric KL of the
        softmax over dim 1, summed over the outputs of a multi-output network."""
        return sum((symmetric_kl(a, s) for a, s in zip(inputs.leaves(ann), inputs.leaves(snn))),
                   torch.zeros((), dtype=torch.float64))

    def exit_score(self, output: Any, kind: str = "entropy") -> Tensor:
        """Confidence in [0, 1] of each sample's running output ``[B, ...]`` (early exit)."""
        raise NotImplementedError(f"task {self.name!r} defines no early-exit score")

    def correct(self, output: Any, target: Any) -> Tensor:
        """Per-sample bool: the running output is right (early-exit statistics, seed eq. 15)."""
        raise NotImplementedError(f"task {self.name!r} defines no per-sample correctness")

    # ------------------------------------------------------------------ report
    def examples(self, x: Any, output: Any, target: Any) -> dict[str, Any] | None:
        """What to keep of a few fixed test samples for the report's pictures (numpy arrays)."""
        return None

    def figures(self, results: Mapping[str, Any], folder: Path) -> dict[str, tuple[Path, str]]:
        """Task pictures for the report: ``{key: (png path, caption)}`` (default: none)."""
        return {}

    def _check_logits(self, outputs: Any, what: str, dims: int) -> Tensor:
        if not isinstance(outputs, Tensor) or outputs.dim() != dims or outputs.shape[1] != self.num_classes:
            shape = inputs.describe(outputs)
            raise ShapeError(f"{what} outputs {shape} but task {self.name!r} on this data expects "
                             f"{dims}-d outputs with {self.num_classes} classes on dim 1; pass --num-classes "
                             f"{self.num_classes} (and weights trained for it) or pick a model for this task")
        return outputs

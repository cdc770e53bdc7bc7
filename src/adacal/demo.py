"""The demo job: train a tiny CNN on scikit-learn digits, convert it every way, report.

Runs offline on a fresh install (the digits ship with scikit-learn) in well under a minute on
two CPU cores: trains ``digits_cnn``, converts it with every method (plain, calibration,
burstfire, adafire, adafire+ssc, and adafire+ssc with input-aware adaptive timesteps) at a few
T, evaluates each on the held-out digits and writes ``summary.json``, PNG plots and
``report.md``/``report.html`` into the output folder.

Example:
    >>> from adacal.demo import DemoConfig, run_demo
    >>> results = run_demo(DemoConfig(), "runs/demo")      # doctest: +SKIP
"""

from __future__ import annotations

import logging
import os
import time
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import torch

from adacal.errors import ConfigError
from adacal.jobs import (
    DataSpec,
    ModelSpec,
    SweepConfig,
    TrainSpec,
    dataclass_from_dict,
    ensure_writable_dir,
    evaluate_ann,
    load_ann,
    load_data,
    new_results,
    run_sweep,
    train_ann,
)
from adacal.report import SUMMARY_FILE, publish_results, save_partial

__all__ = ["DemoConfig", "run_demo"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DemoConfig:
    """Everything the demo does; :meth:`fast` is a seconds-long variant for tests and smoke checks."""

    data: DataSpec = field(default_factory=lambda: DataSpec(dataset="digits", calib_size=256, batch_size=128))
    model: ModelSpec = field(default_factory=lambda: ModelSpec(name="digits_cnn"))
    train: TrainSpec = field(default_factory=lambda: TrainSpec(epochs=8, lr=0.05, batch_size=64))
    sweep: SweepConfig = field(default_factory=SweepConfig)
    report: bool = True
    version: int = 1

    @classmethod
    def fast(cls) -> DemoConfig:
        """Few epochs, T=2 only, a short IAT curve, 128 test images: for tests (< 30 s)."""
        return cls(
            data=DataSpec(dataset="digits", calib_size=128, batch_size=128, test_size=128),
            train=TrainSpec(epochs=3, lr=0.05, batch_size=64),
            sweep=SweepConfig(timesteps=(2,), iat_curve=(0.5, 0.9)),
        )

    def with_overrides(self, **kw: Any) -> DemoConfig:
        """A copy with fields of the nested specs replaced by name (``epochs=5, timesteps=(2, 4)``).

        Each name goes to the first spec that has it (sweep, train, data, model); ``report`` is
        the demo's own; ``None`` values are ignored; unknown names raise :class:`ConfigError`.
        """
        parts: dict[str, dict[str, Any]] = {"sweep": {}, "train": {}, "data": {}, "model": {}}
        own: dict[str, Any] = {}
        for key, value in kw.items():
            if value is None:
                continue
            if key == "report":
                own[key] = bool(value)
                continue
            part = next(
                (p for p in parts if key != "version" and key in {f.name for f in fields(getattr(self, p))}),
                None,
            )
            if part is None:
                raise ConfigError(f"unknown demo option {key!r}")
            parts[part][key] = value
        updated = {
            p: dataclass_from_dict(type(getattr(self, p)), {**asdict(getattr(self, p)), **v}, p)
            for p, v in parts.items()
            if v
        }
        return replace(self, **own, **updated)


def run_demo(
    config: DemoConfig,
    out: str | os.PathLike[str],
    *,
    device: torch.device | str = "cpu",
    seed: int = 0,
    command: str | None = None,
) -> dict[str, Any]:
    """Train, convert with every method at every T, evaluate, and write the report into ``out``.

    Progress goes to ``summary.partial.json`` after every run; ``summary.json`` is written last,
    so an interrupted demo leaves the previous complete results intact. Returns the results dict.
    """
    t0 = time.perf_counter()
    folder = ensure_writable_dir(out)
    dev = torch.device(device)
    data = load_data(config.data)
    ann = load_ann(config.model, data, device=dev)
    settings = {
        "data": asdict(config.data),
        "model": asdict(config.model),
        "train": asdict(config.train),
        "sweep": asdict(config.sweep),
        "seed": seed,
    }
    results = new_results(
        "demo",
        model={
            "name": config.model.name,
            "dataset": config.data.dataset,
            "num_classes": data.num_classes,
            "weights": config.model.weights,
            "parameters": sum(p.numel() for p in ann.parameters()),
        },
        settings=settings,
        device=dev,
        command=command,
    )
    if config.model.weights is None:
        training = train_ann(ann, data, config.train, device=dev, seed=seed)
        results["training"] = training
        results["timing"]["train_s"] = training["train_time_s"]
    ann_acc = evaluate_ann(ann, data, device=dev)
    run_sweep(
        ann,
        data,
        config.sweep,
        results=results,
        ann_accuracy=ann_acc,
        on_run=lambda r: save_partial(r, folder),
    )
    t1 = time.perf_counter()
    results["timing"]["total_s"] = t1 - t0
    written = publish_results(results, folder, report=config.report)
    log.info("wrote %s", written.get("report_html", written["summary"]))
    return results


def summary_path(out: str | os.PathLike[str]) -> Path:
    """Where :func:`run_demo` writes its results."""
    return Path(out) / SUMMARY_FILE

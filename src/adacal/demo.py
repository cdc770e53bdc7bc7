"""The demo job: train a tiny CNN on scikit-learn digits, convert it every way, report.

Runs offline on a fresh install (the digits ship with scikit-learn) in about a minute or two on
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
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from adacal.jobs import (
    DataSpec,
    ModelSpec,
    SweepConfig,
    TrainSpec,
    ensure_writable_dir,
    evaluate_ann,
    load_ann,
    load_data,
    new_results,
    run_sweep,
    train_ann,
)
from adacal.report import SUMMARY_FILE, write_json_atomic, write_report

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
        """Replace fields of the nested specs by name: ``epochs=5, timesteps=(2, 4), out=...``."""
        parts: dict[str, Any] = {"data": {}, "model": {}, "train": {}, "sweep": {}}
        own: dict[str, Any] = {}
        for key, value in kw.items():
            if value is None:
                continue
            for part in ("sweep", "train", "data", "model"):
                if key in {f for f in asdict(getattr(self, part))} and key != "version":
                    parts[part][key] = value
                    break
            else:
                if key == "report":
                    own[key] = value
                else:
                    from adacal.errors import ConfigError

                    raise ConfigError(f"unknown demo option {key!r}")
        return replace(
            self,
            **own,
            **{p: replace(getattr(self, p), **v) for p, v in parts.items() if v},
        )


def run_demo(
    config: DemoConfig,
    out: str | os.PathLike[str],
    *,
    device: torch.device | str = "cpu",
    seed: int = 0,
    command: str | None = None,
) -> dict[str, Any]:
    """Train, convert with every method at every T, evaluate, and write the report into ``out``.

    ``summary.json`` is rewritten (atomically) after every run, so an interrupted demo leaves
    valid partial results. Returns the results dict.
    """
    t0 = time.perf_counter()
    folder = ensure_writable_dir(out)
    dev = torch.device(device)
    data = load_data(config.data)
    ann = load_ann(config.model, data, device=dev)
    settings = {
        "data": asdict(config.data), "model": asdict(config.model), "train": asdict(config.train),
        "sweep": asdict(config.sweep), "seed": seed,
    }
    results = new_results(
        "demo",
        model={"name": config.model.name, "dataset": config.data.dataset, "num_classes": data.num_classes,
               "weights": None, "parameters": sum(p.numel() for p in ann.parameters())},
        settings=settings, device=dev, command=command,
    )
    if config.model.weights is None:
        training = train_ann(ann, data, config.train, device=dev, seed=seed)
        results["training"] = training
        results["timing"]["train_s"] = training["train_time_s"]
    ann_acc = evaluate_ann(ann, data, device=dev)
    summary = folder / SUMMARY_FILE

    def save(res: dict[str, Any]) -> None:
        write_json_atomic(res, summary)

    run_sweep(ann, data, config.sweep, results=results, ann_accuracy=ann_acc, on_run=save)
    results["timing"]["total_s"] = time.perf_counter() - t0
    save(results)
    log.info("wrote %s", summary)
    if config.report:
        t1 = time.perf_counter()
        written = write_report(results, folder)
        results["timing"]["report_s"] = time.perf_counter() - t1
        results["timing"]["total_s"] = time.perf_counter() - t0
        save(results)
        log.info("report: %s", written.get("report_html", folder))
    return results


def summary_path(out: str | os.PathLike[str]) -> Path:
    """Where :func:`run_demo` writes its results."""
    return Path(out) / SUMMARY_FILE

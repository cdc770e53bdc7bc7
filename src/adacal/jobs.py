"""The jobs behind the command line — train, convert, evaluate, sweep — as library functions.

Each job takes the frozen configs of :mod:`adacal.config`, logs progress to ``adacal.jobs`` and
returns results built by :mod:`adacal.results`. Nothing here parses arguments, prints or seeds
global RNGs: that is the CLI's part. Everything task-specific goes through the job's
:class:`~adacal.tasks.Task`.

Example:
    >>> from adacal.config import DataSpec, JobConfig, ModelSpec
    >>> job = JobConfig(model=ModelSpec("resnet20", weights="zoo/resnet20_cifar10.pt"),
    ...                 data=DataSpec("cifar10", data_dir="/data/cifar10"))   # doctest: +SKIP
    >>> results = sweep_to_folder(job, "runs/sweep")                          # doctest: +SKIP
"""
from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

from adacal import distributed as dist
from adacal import inputs, progress
from adacal import results as res
from adacal.atomic import atomic_write_json
from adacal.config import DataSpec, JobConfig, ModelSpec, PipelineConfig, TrainSpec, config_to_dict
from adacal.datasets import DatasetInfo, dataset_info, get_splits, labels_of, make_loader, sample_indices
from adacal.datasets.registry import subset
from adacal.errors import CheckpointError, ConfigError, DataError, ModelError, ShapeError
from adacal.models import build_model, load_state_dict_file
from adacal.tasks import Task, get_task

__all__ = [
    "Data", "SOURCE_FILE", "convert_ann", "ensure_writable_dir", "evaluate_saved", "evaluate_snn", "held_out_data",
    "load_ann", "load_data", "load_saved", "publish", "read_source", "run_sweep", "save_converted", "split_holdout",
    "subset_facts",
    "sweep_to_folder", "train_ann", "train_to_folder",
]

log = logging.getLogger(__name__)

#: File written next to a saved SNN by :func:`save_converted`: how to rebuild its ANN and data.
SOURCE_FILE = "source.json"


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


def _sha256(path: str | None) -> str | None:
    if not path or not Path(path).is_file():
        return None
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()[:16]


# --------------------------------------------------------------------------------------- data
@dataclass(frozen=True)
class Data:
    """A dataset ready for a job: its task, ``calib`` and ``test`` loaders (fixed order), the train set,
    and ``holdout``: other training samples for the held-out checks (None unless ``holdout_size``)."""

    spec: DataSpec
    info: DatasetInfo
    task: Task
    train_set: Dataset[Any]
    calib: DataLoader[Any]
    test: DataLoader[Any]
    test_indices: tuple[int, ...] | None = None
    holdout: DataLoader[Any] | None = None

    @property
    def num_classes(self) -> int:
        return self.info.num_classes

    def train_loader(self, batch_size: int, seed: int | None) -> DataLoader[Any]:
        return make_loader(self.train_set, batch_size, shuffle=True, seed=seed, num_workers=self.spec.num_workers)

    def example(self) -> Any:
        """The first calibration batch's inputs as the ANN sees them (for tracing and shape checks)."""
        return self.task.ann_input(self.task.split_batch(next(iter(self.calib)))[0])


def load_data(spec: DataSpec, task: str | Task | None = None, *, num_classes: int | None = None) -> Data:
    """Load ``spec.dataset`` (local files only) for ``task`` (default: the dataset's own task).

    ``test_size`` keeps a seeded random subset of the test split, stratified by class where the
    dataset exposes its labels; the results name the subset.
    """
    info = dataset_info(spec.dataset)
    if spec.data_dir is not None and not Path(spec.data_dir).exists():
        raise DataError(f"data folder {spec.data_dir!r} does not exist; pass --data-dir pointing at the "
                        f"{spec.dataset} files")
    splits = get_splits(spec.dataset, spec.data_dir, calib_size=spec.calib_size, seed=spec.seed,
                        options=spec.options)
    calib_set, holdout_set = splits.calib, None
    if spec.holdout_size:
        try:
            pool = get_splits(spec.dataset, spec.data_dir, calib_size=spec.calib_size + spec.holdout_size,
                              seed=spec.seed, options=spec.options).calib
        except ConfigError as exc:
            raise ConfigError(f"{exc}: data.calib_size ({spec.calib_size}) + data.holdout_size "
                              f"({spec.holdout_size}) training samples are needed; lower data.holdout_size") from exc
        holdout_set = split_holdout(calib_set, pool, spec.holdout_size)
    test_set: Dataset[Any] = splits.test
    picked = None
    if spec.test_size is not None and spec.test_size < len(test_set):  # type: ignore[arg-type]
        idx = sample_indices(len(test_set), spec.test_size, spec.seed, labels_of(test_set))  # type: ignore[arg-type]
        test_set, picked = subset(test_set, idx), tuple(int(i) for i in idx)
    facts = {"num_classes": num_classes or info.num_classes, "classes": list(info.classes), **info.extra,
             "data_options": dict(spec.options)}
    task_obj = get_task(task or info.task, **facts)
    calib = make_loader(calib_set, spec.calib_batch_size or spec.batch_size, num_workers=spec.num_workers)
    test = make_loader(test_set, spec.batch_size, num_workers=spec.num_workers)
    if dist.world().active:  # each rank evaluates its shard; the calibration data stays whole (see convert)
        test = DataLoader(test_set, batch_size=spec.batch_size, sampler=dist.ShardSampler(test_set),
                          num_workers=spec.num_workers, persistent_workers=spec.num_workers > 0)
    holdout = None if holdout_set is None else make_loader(holdout_set, spec.batch_size, num_workers=spec.num_workers)
    log.info("data %s (%s): %d train, %d calibration, %d held-out, %d test samples%s", spec.dataset, task_obj.name,
             len(splits.train), len(calib_set), spec.holdout_size, len(test_set),  # type: ignore[arg-type]
             " (seeded random subset)" if picked else "")
    return Data(spec, info, task_obj, splits.train, calib, test, picked, holdout)


def split_holdout(calib: Dataset[Any], pool: Dataset[Any], holdout_size: int) -> Dataset[Any]:
    """``holdout_size`` samples of ``pool`` (training samples, in its order) that are not in ``calib``.

    Samples are told apart by content, so the calibration samples stay exactly those of a job
    without a holdout whatever the dataset family, and no held-out sample is a calibration sample.
    """
    seen = {_digest(calib[i]) for i in range(len(calib))}  # type: ignore[arg-type]
    keep = [i for i in range(len(pool)) if _digest(pool[i]) not in seen][:holdout_size]  # type: ignore[arg-type]
    if len(keep) < holdout_size:
        raise DataError(f"only {len(keep)} training samples are left for data.holdout_size={holdout_size} besides "
                        "the calibration samples; lower data.holdout_size")
    return subset(pool, np.asarray(keep))


def _digest(sample: Any) -> str:
    h = hashlib.sha1()

    def feed(v: Any) -> None:
        if isinstance(v, torch.Tensor):
            h.update(v.detach().cpu().contiguous().numpy().tobytes())
        elif isinstance(v, np.ndarray):
            h.update(np.ascontiguousarray(v).tobytes())
        elif isinstance(v, (list, tuple)):
            for x in v:
                feed(x)
        elif isinstance(v, Mapping):
            for k in sorted(v, key=str):
                h.update(str(k).encode())
                feed(v[k])
        else:
            h.update(repr(v).encode())

    feed(sample)
    return h.hexdigest()


# --------------------------------------------------------------------------------------- models
def load_ann(spec: ModelSpec, data: Data, *, device: torch.device | str = "cpu") -> nn.Module:
    """Build ``spec.name``, load ``spec.weights`` (a state_dict), check it fits ``data``'s task; eval mode."""
    num_classes = spec.num_classes or data.num_classes
    if num_classes != data.num_classes:
        raise ConfigError(f"num_classes={num_classes} does not match dataset {data.spec.dataset!r} with "
                          f"{data.num_classes} classes; drop --num-classes or pick the matching dataset")
    model = build_model(spec.name, num_classes, **spec.options)
    if spec.weights is not None:
        load_state_dict_file(model, spec.weights)
        log.info("loaded weights %s into %s", spec.weights, spec.name)
    model.to(torch.device(device)).eval()
    data.task.bind_model(model)
    example = inputs.map_tensors(lambda t: t[:2].to(device), data.example())
    try:
        with torch.no_grad():
            out = inputs.call(model, example)
    except Exception as exc:  # any failure here means the model does not fit the data
        raise ShapeError(f"model {spec.name!r} cannot process inputs of shape {inputs.describe(example)}: "
                         f"{type(exc).__name__}: {(str(exc).splitlines() or [''])[0][:200]}; pick a model built "
                         "for this dataset") from exc
    data.task.check_outputs(out, what=f"model {spec.name!r}")
    if any(t.is_floating_point() and not bool(torch.isfinite(t).all()) for t in inputs.leaves(out)):
        raise ModelError(f"model {spec.name!r} outputs NaN or Inf on the first {data.spec.dataset} batch (its weights "
                         "are finite: activations overflow); check the checkpoint and the data's scaling")
    return model


def train_ann(model: nn.Module, data: Data, spec: TrainSpec, *, device: torch.device | str = "cpu",
              seed: int | None = 0, checkpoint: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Train ``model`` in place on ``data`` with its task's loss; returns the training summary."""
    from adacal.training import train_model

    log.info("training %s for %d epochs on %s", type(model).__name__, spec.epochs, data.spec.dataset)
    out = train_model(model, data.train_loader(spec.batch_size, seed), task=data.task, epochs=spec.epochs,
                      lr=spec.lr, weight_decay=spec.weight_decay, label_smoothing=spec.label_smoothing,
                      schedule=spec.schedule, device=device, eval_loader=data.test, seed=seed,
                      checkpoint_path=checkpoint, log_every=0)
    model.eval()
    return {"epochs": spec.epochs, "final_eval": out["final_eval"], "train_time_s": out["train_time_s"],
            "history": out["history"], "config": asdict(spec)}


# --------------------------------------------------------------------------------------- SNN jobs
def convert_ann(ann: nn.Module, data: Data, config: PipelineConfig, *,
                workdir: str | os.PathLike[str] | None = None) -> tuple[Any, dict[str, Any]]:
    """:func:`adacal.pipeline.convert` on the calibration data, profiling with the task's divergence."""
    from adacal.pipeline import convert

    snn, record = convert(ann, data.calib, config=config, input_fn=lambda b: data.task.split_batch(b)[0],
                          workdir=None if workdir is None else str(workdir),
                          divergence=data.task.divergence, holdout_data=data.holdout, present=data.task.present)
    return snn, dict(record)


def evaluate_snn(snn: Any, data: Data, *, timesteps: int, iat: bool = False, alpha_base: float = 0.6,
                 curve_alphas: tuple[float, ...] = (), examples: int | tuple[int, ...] = 0, exit: Any = None,
                 held_out: Any = None, delta: float = 1.0) -> tuple[dict[str, Any], Any, list[dict[str, Any]] | None]:
    """Test metrics at ``timesteps``, with early exit if ``iat``.

    ``exit``: the exit settings (a :class:`~adacal.config.SweepConfig` or
    :class:`~adacal.config.EvaluateConfig`; None: the eq. 15 rule with ``alpha_base``). The eq. 15
    policy is fitted on the calibration data; the risk-controlled rule on ``held_out`` (training
    inputs the SNN was not calibrated on; default: :func:`held_out_data`). Returns ``(evaluation,
    policy or None, curve or None)``; the curve re-derives the policy for each value of
    ``curve_alphas`` — α_base (eq. 15, no refit) or ε in points (the risk rule, recertified on the
    same held-out outputs) — and evaluates it.
    """
    from adacal.evaluate import evaluate, fit_exit_policy, fit_risk_exit, held_out_outputs

    task = data.task
    if not iat:
        return evaluate(snn, data.test, timesteps=timesteps, task=task, examples=examples), None, None
    if not task.supports_exit:
        raise ConfigError(f"task {task.name!r} defines no early exit; turn IAT off (--no-iat)")
    if exit is not None and exit_rule(exit, data) == "risk":
        try:
            recorded = held_out_outputs(snn, held_out if held_out is not None else held_out_data(data),
                                        timesteps=timesteps, task=task)
        except DataError as exc:
            raise ConfigError(f"the risk exit rule needs held-out training data ({exc}): set data.holdout_size "
                              "(e.g. 512) or use exit_rule eq15") from exc

        def risk_policy(eps: float) -> Any:
            return fit_risk_exit(snn, None, timesteps=timesteps, task=task, epsilon=eps / 100.0,
                                 confidence=exit.exit_confidence, loss=exit.exit_loss, outputs=recorded)

        policy = risk_policy(exit.exit_epsilon)
        evaluation = evaluate(snn, data.test, timesteps=timesteps, task=task, exit_policy=policy, examples=examples)
        curve = None
        if curve_alphas:  # for this rule: the tolerated drops ε (points) of the curve
            curve = []
            for e in curve_alphas:
                m = evaluate(snn, data.test, timesteps=timesteps, task=task, exit_policy=risk_policy(e))
                curve.append({"epsilon": float(e), "mean_timesteps": float(m["mean_timesteps"]),
                              "value": m["metrics"].get(task.headline), "energy_mj": m.get("energy_mj")})
        return evaluation, policy, curve
    policy = fit_exit_policy(snn, data.calib, timesteps=timesteps, task=task, alpha_base=alpha_base, delta=delta)
    evaluation = evaluate(snn, data.test, timesteps=timesteps, task=task, exit_policy=policy, examples=examples)
    curve = None
    if curve_alphas:
        curve = []
        for a in curve_alphas:
            m = evaluate(snn, data.test, timesteps=timesteps, task=task, exit_policy=policy.with_alpha_base(a))
            curve.append({"alpha_base": float(a), "mean_timesteps": float(m["mean_timesteps"]),
                          "value": m["metrics"].get(task.headline), "energy_mj": m.get("energy_mj")})
    return evaluation, policy, curve


def exit_rule(exit: Any, data: Data) -> str:
    """The exit rule that runs: ``exit.exit_rule``, with ``"auto"`` resolved to the risk rule where the
    task supports it and held-out training data was loaded, else eq. 15."""
    if exit.exit_rule != "auto":
        return str(exit.exit_rule)
    return "risk" if data.task.risk_exit and data.holdout is not None else "eq15"


class _Skip:
    """An iterable over ``loader`` without its first ``skip`` batches (a fresh pass each time)."""

    def __init__(self, loader: Any, skip: int) -> None:
        self.loader, self.skip = loader, skip

    def __iter__(self) -> Any:
        import itertools

        return itertools.islice(iter(self.loader), self.skip, None)


def held_out_data(data: Data, pipeline: PipelineConfig | None = None) -> Any:
    """Training data the SNN was not calibrated on: ``data.holdout``, else the calibration batches
    beyond those the thresholds and corrections use (``pipeline.calibration``)."""
    if data.holdout is not None:
        return data.holdout
    calib = (pipeline or PipelineConfig()).calibration
    return _Skip(data.calib, max(calib.num_batches, calib.correction_batches))


def _environment(device: torch.device | str) -> dict[str, Any]:
    return {"torch": torch.__version__, "device": str(device), "threads": torch.get_num_threads()}


def _model_facts(job: JobConfig, data: Data, ann: nn.Module | None = None) -> dict[str, Any]:
    facts: dict[str, Any] = {**asdict(job.model), "dataset": job.data.dataset, "num_classes": data.num_classes,
                             "weights_sha256": _sha256(job.model.weights)}
    if ann is not None:
        facts["parameters"] = sum(p.numel() for p in ann.parameters())
    facts.update(subset_facts(data))
    return facts


def _class_counts(dataset: Any) -> dict[str, int] | None:
    labels = labels_of(dataset)
    if labels is None:
        return None
    values, counts = np.unique(np.asarray(labels), return_counts=True)
    return {str(v): int(c) for v, c in zip(values.tolist(), counts.tolist())}


def subset_facts(data: Data) -> dict[str, Any]:
    """What the results say about the samples used: the calibration subset always, the test subset if one
    was drawn — size, seed, how drawn and, where the data has labels, how many of each class (so a subset
    that covers only some classes shows)."""
    calib = data.calib.dataset
    facts: dict[str, Any] = {"calib_subset": {
        "size": len(calib), "seed": data.spec.seed,  # type: ignore[arg-type]
        "sampling": "seeded random subset of the training split, stratified by class where the dataset has labels",
        "class_counts": _class_counts(calib)}}
    if data.test_indices is not None:
        facts["test_subset"] = {"size": len(data.test_indices), "seed": data.spec.seed,
                                "sampling": "seeded random, stratified by class where labels exist",
                                "class_counts": _class_counts(data.test.dataset)}
    return facts


def _sweep_fingerprint(job: JobConfig, data: Data) -> str:
    return res.fingerprint(config_to_dict(replace(job, device="-", threads=None)), data.task.name,
                           _sha256(job.model.weights))


def run_sweep(ann: nn.Module, data: Data, job: JobConfig, *, results: dict[str, Any],
              on_run: Callable[[dict[str, Any]], None] | None = None,
              save_examples: Callable[[str, list[dict[str, Any]]], str] | None = None,
              workdir: str | os.PathLike[str] | None = None) -> dict[str, Any]:
    """Convert ``ann`` with every method at every T of ``job.sweep`` and evaluate each (and the IAT
    runs); fill ``results``. Runs already in ``results["runs"]`` (a resumed sweep) are skipped.

    ``on_run(results)`` is called after every finished run (e.g. to save partial results);
    ``save_examples(run_name, examples)`` stores the task's picture data and returns its path.
    ``workdir``: sensitivity profiles are checkpointed in ``workdir/T<T>``, so methods that profile
    the same network state at the same T (one recipe's φ search is the first stage of another's)
    share one, and an interrupted conversion resumes.
    """
    sweep, task = job.sweep, data.task
    t_start = time.perf_counter()
    if not results["ann"].get("metrics"):
        from adacal.evaluate import evaluate_ann

        results["ann"]["metrics"] = evaluate_ann(ann, data.test, task=task)
    log.info("ANN %s", results["ann"]["metrics"])
    done = {r["name"] for r in results["runs"]}
    iat = sweep.iat and task.supports_exit
    plan = [(m, t) for t in sweep.timesteps for m in sweep.methods]
    total = len(plan) + (len(sweep.timesteps) if iat else 0)
    n_examples = _example_plan(task.report_examples, len(data.test.dataset)) if save_examples else 0  # type: ignore[arg-type]
    if n_examples and save_examples is not None and not results["ann"].get("examples"):
        from adacal.evaluate import collect_examples  # the ANN's pictures, next to every run's

        kept = collect_examples(ann, data.test, task=task, examples=n_examples)
        if kept:
            results["ann"]["examples"] = save_examples("ann", kept)
    for k, (method, T) in enumerate(progress.track(plan, "sweep", len(plan), "conversion"), 1):
        names = [res.run_name(method, T)] + ([res.run_name(method, T, True)] if iat and method == sweep.iat_method
                                            else [])
        if all(n in done for n in names):
            log.info("[%d/%d] %s already done (resumed)", k, len(plan), names[0])
            continue
        log.info("[%d/%d] converting with %s at T=%d (%d runs in all)", k, len(plan), method, T, total)
        cfg = replace(job.pipeline, method=method, timesteps=T)
        if sweep.profile_rows is not None:
            cfg = replace(cfg, profile_batch=max(16, sweep.profile_rows // T))
        if sweep.check_rows is not None:
            cfg = replace(cfg, check_images=max(128, sweep.check_rows // T))
        t0 = time.perf_counter()
        snn, record = convert_ann(ann, data, cfg, workdir=None if workdir is None else _profile_dir(workdir, T))
        t1 = time.perf_counter()
        for name in names:
            if name in done:
                continue
            with_iat = name != names[0]
            curve = (sweep.iat_curve if exit_rule(sweep, data) == "eq15" else sweep.exit_curve) \
                if with_iat and T == max(sweep.timesteps) else ()
            t2 = time.perf_counter()
            evaluation, policy, points = evaluate_snn(snn, data, timesteps=T, iat=with_iat,
                                                      alpha_base=sweep.alpha_base, curve_alphas=curve,
                                                      examples=n_examples, exit=sweep, delta=sweep.delta,
                                                      held_out=held_out_data(data, job.pipeline))
            run = res.make_run(method, T, evaluation, iat=with_iat, record=record, policy=policy, curve=points,
                               times={"convert": t1 - t0, "evaluate": time.perf_counter() - t2})
            if evaluation.get("examples") and save_examples is not None:
                run["examples"] = save_examples(name, evaluation["examples"])
            results["runs"].append(run)
            if results["ann"].get("energy_mj") is None:
                results["ann"]["energy_mj"] = evaluation.get("ann_energy_mj")
            log.info("%s: %s %.4g, energy %.4g µJ/sample (%.0f%% of the ANN), %.2f mean timesteps", name,
                     task.headline, run["metrics"].get(task.headline, float("nan")),
                     1e3 * (run["energy_mj"] or float("nan")), 100 * (run["energy_ratio"] or float("nan")),
                     run["mean_timesteps"])
        if on_run is not None:
            on_run(results)
    results["timing"]["sweep_s"] = results["timing"].get("sweep_s", 0.0) + time.perf_counter() - t_start
    return results


def _profile_dir(workdir: str | os.PathLike[str], timesteps: int) -> Path:
    folder = Path(workdir) / f"T{timesteps}"
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def _example_plan(wanted: int | tuple[int, ...], n_test: int) -> int | tuple[int, ...]:
    """The task's picture samples that exist in this test set; if none of the indices it names do
    (a small ``--test-size``), as many of the first samples."""
    if isinstance(wanted, int):
        return min(wanted, n_test)
    present = tuple(i for i in wanted if 0 <= i < n_test)
    return present or min(len(wanted), n_test)


def publish(results: Mapping[str, Any], folder: str | os.PathLike[str], *, report: bool = True) -> dict[str, Path]:
    """Finish a job: plots and pages (if ``report``), then ``summary.json``, then drop the partial file.

    ``summary.json`` is written last, so it always describes a finished job.
    """
    from adacal.report import write_report

    out = Path(folder)
    written = write_report(results, out) if report else {}
    written["summary"] = atomic_write_json(out / res.SUMMARY_FILE, results)
    (out / res.PARTIAL_FILE).unlink(missing_ok=True)
    return written


def _resume(folder: Path, key: str, restart: bool) -> list[dict[str, Any]]:
    """Finished runs of an earlier sweep into ``folder`` with the same settings (``key``)."""
    for name in (res.PARTIAL_FILE, res.SUMMARY_FILE):
        path = folder / name
        if not path.is_file() or restart:
            continue
        try:
            old = res.check_results(json.loads(path.read_text(encoding="utf-8")), str(path))
        except (DataError, json.JSONDecodeError, UnicodeDecodeError):
            log.warning("ignoring unreadable %s", path)
            continue
        if old.get("fingerprint") != key:
            raise ConfigError(f"{path} holds results of a sweep with other settings; use another --out, or "
                              "pass --restart to discard them")
        log.info("resuming from %s: %d runs already done", path, len(old["runs"]))
        return list(old["runs"])
    return []


def sweep_to_folder(job: JobConfig, out: str | os.PathLike[str], *, kind: str = "sweep", restart: bool = False,
                    command: str | None = None, train: bool = False) -> dict[str, Any]:
    """The sweep job into ``out``: progress in ``summary.partial.json`` after every run, then the
    report and ``summary.json``. A rerun with the same settings resumes (``restart``: start over).
    ``train``: train the ANN first (the demo), unless ``job.model.weights`` is given.
    """
    folder = ensure_writable_dir(out)
    t0 = time.perf_counter()
    device = torch.device(job.device)
    data = load_data(job.data, job.task, num_classes=job.model.num_classes)
    ann = load_ann(job.model, data, device=device)
    results = res.new_results(kind, task=data.task.describe(), model=_model_facts(job, data, ann),
                              settings=config_to_dict(job), environment=_environment(device), command=command)
    results["fingerprint"] = key = _sweep_fingerprint(job, data)
    results["runs"] = dist.broadcast_object(_resume(folder, key, restart) if dist.is_main() else [],
                                            what="reading the sweep's partial results")
    if train and job.model.weights is None:
        training = train_ann(ann, data, job.train, device=device, seed=job.seed)
        results["training"] = training
        results["timing"]["train_s"] = training["train_time_s"]

    def save_examples(name: str, examples: list[dict[str, Any]]) -> str:
        rel = f"examples/{name.replace('@', '_').replace('+', '-')}.npz"
        if not dist.is_main():  # only rank 0 writes files
            return rel
        from adacal.atomic import atomic_write

        merged = {k: np.concatenate([np.asarray(e[k]) for e in examples]) for k in examples[0]}
        atomic_write(folder / rel, lambda f: np.savez_compressed(f, **merged))
        return rel

    run_sweep(ann, data, job, results=results, on_run=lambda r: res.save_partial(r, folder) if dist.is_main() else None,
              save_examples=save_examples, workdir=folder / "profiles")
    results["timing"]["total_s"] = time.perf_counter() - t0
    if dist.is_main():
        publish(results, folder, report=job.report)
    return results


# --------------------------------------------------------------------------------------- saved SNNs
def save_converted(snn: Any, record: Mapping[str, Any], folder: str | os.PathLike[str], *, job: JobConfig,
                   command: str | None = None) -> Path:
    """:func:`adacal.persist.save_snn` plus ``source.json``: how to rebuild the ANN and the data.

    Paths in ``source.json`` are absolute, so ``adacal evaluate`` works from any directory.
    """
    from adacal.persist import save_snn

    out = Path(folder)
    save_snn(snn, dict(record), out)
    model = asdict(job.model)
    if model.get("weights"):
        model["weights"] = str(Path(model["weights"]).resolve())
    data = asdict(job.data)
    if data.get("data_dir"):
        data["data_dir"] = str(Path(data["data_dir"]).resolve())
    atomic_write_json(out / SOURCE_FILE, {"command": command, "task": job.task, "model": model, "data": data})
    return out


def read_source(folder: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The ``{"task", "model", "data"}`` recorded by :func:`save_converted`, or None if absent."""
    f = Path(folder)
    if not f.is_dir():
        raise CheckpointError(f"SNN folder {str(f)!r} does not exist; create it with 'adacal convert --out ...'")
    path = f / SOURCE_FILE
    if not path.is_file():
        return None
    try:
        src = json.loads(path.read_text(encoding="utf-8"))
        out = {"task": src.get("task"), "model": dict(src["model"]), "data": dict(src["data"])}
    except (json.JSONDecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError, AttributeError) as exc:
        raise CheckpointError(f"{str(path)!r} is corrupt ({type(exc).__name__}: {exc}); pass --model, --weights "
                              "and --dataset") from exc
    for part in ("model", "data"):
        out[part].pop("version", None)
    return out


def load_saved(folder: str | os.PathLike[str], job: JobConfig) -> tuple[Any, dict[str, Any], Data, nn.Module]:
    """A saved SNN rebuilt on its ANN: ``(snn, record, data, ann)``."""
    from adacal.persist import load_snn

    data = load_data(job.data, job.task, num_classes=job.model.num_classes)
    ann = load_ann(job.model, data, device=job.device)
    snn, record = load_snn(ann, folder, inputs.map_tensors(lambda t: t.to(job.device), data.example()))
    return snn, record, data, ann


def evaluate_saved(folder: str | os.PathLike[str], job: JobConfig, *, command: str | None = None) -> dict[str, Any]:
    """Load a saved SNN (rebuilding its ANN), evaluate it on the test data; a one-run results dict.

    ``job.evaluate.timesteps`` defaults to the T it was converted for.
    """
    from adacal.evaluate import evaluate_ann

    device = torch.device(job.device)
    snn, record, data, ann = load_saved(folder, job)
    saved_t = record.get("timesteps")
    if job.evaluate.timesteps is None and not (isinstance(saved_t, int) and not isinstance(saved_t, bool)
                                               and saved_t >= 1):
        raise CheckpointError(f"{folder}/record.json has no usable 'timesteps' ({saved_t!r}); pass --timesteps")
    T = job.evaluate.timesteps or int(saved_t)
    ev = job.evaluate
    results = res.new_results("evaluate", task=data.task.describe(),
                              model={**_model_facts(job, data), "snn": str(folder)}, settings=config_to_dict(job),
                              environment=_environment(device), command=command)
    t0 = time.perf_counter()
    results["ann"]["metrics"] = evaluate_ann(ann, data.test, task=data.task)
    curve_values = ev.iat_curve if exit_rule(ev, data) == "eq15" else ev.exit_curve
    evaluation, policy, curve = evaluate_snn(snn, data, timesteps=T, iat=ev.iat, alpha_base=ev.alpha_base,
                                             curve_alphas=curve_values,
                                             exit=ev, delta=ev.delta,
                                             held_out=held_out_data(data, job.pipeline))
    results["ann"]["energy_mj"] = evaluation.get("ann_energy_mj")
    results["runs"].append(res.make_run(str(record.get("method", "?")), T, evaluation, iat=ev.iat, record=record,
                                        policy=policy, curve=curve, times={"evaluate": time.perf_counter() - t0}))
    return results


def train_to_folder(job: JobConfig, out: str | os.PathLike[str], *, resume: bool = True,
                    command: str | None = None) -> dict[str, Any]:
    """Train and write ``out/model.pt`` (state_dict) and ``out/train.json``; ``out/checkpoint.pt``
    (written every epoch) lets an interrupted run resume when ``resume``."""
    from adacal.training import save_atomic

    folder = ensure_writable_dir(out)
    data = load_data(job.data, job.task, num_classes=job.model.num_classes)
    ann = load_ann(job.model, data, device=job.device)
    summary = train_ann(ann, data, job.train, device=job.device, seed=job.seed,
                        checkpoint=folder / "checkpoint.pt" if resume else None)
    save_atomic(ann.state_dict(), folder / "model.pt")
    atomic_write_json(folder / "train.json", {"command": command, "task": data.task.name,
                                              "model": asdict(job.model), "data": asdict(job.data), **summary})
    return summary

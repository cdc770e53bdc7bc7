"""Train the ANNs that later get converted to SNNs, for any task (its loss and metrics).

Deliberately plain: SGD with Nesterov momentum, a per-batch one-cycle or cosine schedule, optional
label smoothing (classification), and an atomic checkpoint (model + optimizer + scheduler + epoch + history) after
every epoch so an interrupted run resumes where it stopped.  All progress goes to the
``adacal.training`` logger; nothing is printed.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from adacal import inputs, progress
from adacal.atomic import atomic_write
from adacal.errors import CheckpointError, ConfigError
from adacal.evaluate import evaluate_ann
from adacal.tasks import Task, get_task

__all__ = ["TrainConfig", "train_model", "save_atomic"]

log = logging.getLogger("adacal.training")

_SCHEDULES = ("onecycle", "cosine", "constant")


@dataclass(frozen=True)
class TrainConfig:
    """Hyper-parameters that define a run; stored in checkpoints so a resume with different ones is caught."""

    epochs: int
    lr: float
    weight_decay: float
    momentum: float
    nesterov: bool
    schedule: str
    warmup_frac: float
    label_smoothing: float
    steps_per_epoch: int

    def validate(self) -> None:
        if self.epochs < 1:
            raise ConfigError(f"epochs must be >= 1, got {self.epochs}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ConfigError(f"lr must be a positive finite number, got {self.lr}")
        if self.weight_decay < 0 or not 0 <= self.momentum < 1:
            raise ConfigError(f"need weight_decay >= 0 and 0 <= momentum < 1, got {self.weight_decay}, {self.momentum}")
        if self.nesterov and self.momentum == 0:
            raise ConfigError("nesterov=True needs momentum > 0")
        if self.schedule not in _SCHEDULES:
            raise ConfigError(f"unknown schedule {self.schedule!r}; valid: {list(_SCHEDULES)}")
        if not 0 <= self.warmup_frac < 1:
            raise ConfigError(f"warmup_frac must be in [0, 1), got {self.warmup_frac}")
        if not 0 <= self.label_smoothing < 1:
            raise ConfigError(f"label_smoothing must be in [0, 1), got {self.label_smoothing}")
        if self.steps_per_epoch < 1:
            raise ConfigError("train_loader is empty (0 batches per epoch)")


def _lr_factor(cfg: TrainConfig, step: int) -> float:
    """Multiplier of ``cfg.lr`` at optimizer step ``step`` (a pure function, so resuming is exact)."""
    total = cfg.epochs * cfg.steps_per_epoch
    if cfg.schedule == "constant":
        return 1.0
    warm = int(cfg.warmup_frac * total)
    if cfg.schedule == "onecycle" and warm == 0:
        warm = max(1, int(0.15 * total))
    start = 1.0 / 25.0 if cfg.schedule == "onecycle" else 0.0
    if step < warm:
        return start + (1.0 - start) * step / warm
    t = (step - warm) / max(1, total - warm)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, t)))


def save_atomic(obj: Any, path: str | os.PathLike[str]) -> None:
    """``torch.save`` to a temp file in the same directory, fsync, then ``os.replace``: a crash
    mid-write never leaves a truncated checkpoint behind."""
    atomic_write(path, lambda f: torch.save(obj, f))


def _to_device(x: Any, device: torch.device, channels_last: bool) -> Any:
    def move(t: torch.Tensor) -> torch.Tensor:
        t = torch.as_tensor(t).to(device, non_blocking=True)
        return t.contiguous(memory_format=torch.channels_last) if channels_last and t.ndim == 4 else t

    return inputs.map_tensors(move, x)


def train_model(model: nn.Module, train_loader: Iterable[Any], *, task: str | Task = "classification", epochs: int,
                lr: float = 0.1, weight_decay: float = 5e-4, momentum: float = 0.9, device: str | torch.device = "cpu",
                checkpoint_path: str | os.PathLike[str] | None = None, resume: bool = True,
                eval_loader: Iterable[Any] | None = None, log_every: int = 100, schedule: str = "onecycle",
                warmup_frac: float = 0.0, label_smoothing: float = 0.0, nesterov: bool = True, seed: int | None = 0,
                channels_last: bool = False, autocast_dtype: torch.dtype | None = None) -> dict[str, Any]:
    """Train ``model`` in place with SGD on ``task``'s loss; returns ``{"history", "epochs_completed",
    "final_eval", "resumed_from_epoch", "train_time_s", "config"}`` (``final_eval``: the task's
    metrics on ``eval_loader``).

    The LR follows ``schedule`` per batch ("onecycle": linear warm-up from lr/25 over ``warmup_frac``
    (default 15 %) of the steps, then cosine to 0; "cosine": optional linear warm-up then cosine to 0;
    "constant").  With ``checkpoint_path`` a checkpoint is written atomically after every epoch; with
    ``resume=True`` an existing one is loaded and training continues from its stored epoch (a
    checkpoint from a run with different hyper-parameters raises :class:`CheckpointError`).
    With ``seed``, the global torch RNG (and the loader's own generator, if it has one) is reseeded at
    every epoch from ``(seed, epoch)`` so augmentation and shuffling after a resume match an
    uninterrupted run.  ``log_every`` (batches; 0 = off) adds intra-epoch progress lines.
    """
    try:
        steps = len(train_loader)  # type: ignore[arg-type]
    except TypeError as exc:
        raise ConfigError("train_loader must have a length (a DataLoader over a map-style dataset)") from exc
    cfg = TrainConfig(epochs=int(epochs), lr=float(lr), weight_decay=float(weight_decay), momentum=float(momentum),
                      nesterov=bool(nesterov), schedule=schedule, warmup_frac=float(warmup_frac),
                      label_smoothing=float(label_smoothing), steps_per_epoch=int(steps))
    cfg.validate()
    dev = torch.device(device)
    model.to(dev)
    if channels_last:
        model.to(memory_format=torch.channels_last)
    opt = torch.optim.SGD(model.parameters(), lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay,
                          nesterov=cfg.nesterov)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: _lr_factor(cfg, s))
    task = get_task(task)
    history: list[dict[str, float]] = []
    start_epoch = 0
    ckpt = Path(checkpoint_path) if checkpoint_path is not None else None
    if ckpt is not None and resume and ckpt.exists():
        start_epoch, history = _load_checkpoint(ckpt, model, opt, sched, cfg, dev)
        log.info("resumed from %s at epoch %d/%d", ckpt, start_epoch, cfg.epochs)
    resumed_from = start_epoch
    t_run = time.perf_counter()
    for epoch in range(start_epoch, cfg.epochs):
        if seed is not None:
            torch.manual_seed(seed * 100003 + epoch)
            gen = getattr(train_loader, "generator", None)
            if isinstance(gen, torch.Generator):
                gen.manual_seed(seed * 100003 + epoch)
        model.train()
        t0 = time.perf_counter()
        loss_sum = 0.0
        seen = 0
        batches = progress.track(train_loader, f"train epoch {epoch + 1}/{cfg.epochs}", steps, "batch")
        for i, batch in enumerate(batches):
            x, y = task.split_batch(batch)
            x, y = _to_device(task.ann_input(x), dev, channels_last), _to_device(y, dev, False)
            with torch.autocast(dev.type, dtype=autocast_dtype, enabled=autocast_dtype is not None):
                out = inputs.call(model, x)
                loss = task.loss(out, y, label_smoothing=cfg.label_smoothing)
            if not torch.isfinite(loss):
                raise ConfigError(
                    f"training loss became {loss.item()} at epoch {epoch + 1}, batch {i + 1}; "
                    f"lower lr (now {opt.param_groups[0]['lr']:.4g})"
                )
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            n = inputs.batch_size(x)
            loss_sum += float(loss.detach()) * n
            seen += n
            if log_every and (i + 1) % log_every == 0:
                log.info("epoch %d/%d batch %d/%d loss %.4f lr %.4g (%.1f samples/s)", epoch + 1, cfg.epochs,
                         i + 1, steps, loss_sum / seen, opt.param_groups[0]["lr"], seen / (time.perf_counter() - t0))
        rec: dict[str, Any] = {
            "epoch": float(epoch + 1),
            "train_loss": loss_sum / max(1, seen),
            "lr": float(opt.param_groups[0]["lr"]),
            "train_time_s": time.perf_counter() - t0,
        }
        if eval_loader is not None:
            rec["eval"] = evaluate_ann(model, eval_loader, task=task)
        rec["epoch_time_s"] = time.perf_counter() - t0
        history.append(rec)
        log.info("epoch %d/%d loss %.4f %s lr %.4g time %.1fs", epoch + 1, cfg.epochs, rec["train_loss"],
                 " ".join(f"eval {k} {v:.4g}" for k, v in (rec.get("eval") or {}).items()
                          if isinstance(v, float)), rec["lr"], rec["epoch_time_s"])
        if ckpt is not None:
            save_atomic(
                {
                    "model": model.state_dict(),
                    "optimizer": opt.state_dict(),
                    "scheduler": sched.state_dict(),
                    "epoch": epoch + 1,
                    "history": history,
                    "config": asdict(cfg),
                },
                ckpt,
            )
    final = history[-1].get("eval") if history else None
    if final is None and eval_loader is not None:
        final = evaluate_ann(model, eval_loader, task=task)
    return {
        "history": history,
        "epochs_completed": cfg.epochs,
        "final_eval": final,
        "resumed_from_epoch": resumed_from,
        "train_time_s": time.perf_counter() - t_run,
        "config": asdict(cfg),
    }


def _load_checkpoint(path: Path, model: nn.Module, opt: torch.optim.Optimizer,
                     sched: torch.optim.lr_scheduler.LRScheduler, cfg: TrainConfig,
                     dev: torch.device) -> tuple[int, list[dict[str, float]]]:
    try:
        state = torch.load(path, map_location=dev, weights_only=True)
    except Exception as exc:
        raise CheckpointError(
            f"cannot read training checkpoint {str(path)!r} (corrupt?): "
            f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:200]}; "
            f"delete it or pass resume=False"
        ) from exc
    needed = ("model", "optimizer", "scheduler", "epoch", "config")
    if not isinstance(state, dict) or any(k not in state for k in needed):
        raise CheckpointError(f"{str(path)!r} is not a training checkpoint (needs keys {list(needed)})")
    stored = state["config"]
    diff = {k: (stored.get(k), v) for k, v in asdict(cfg).items() if stored.get(k) != v}
    if diff:
        raise CheckpointError(
            f"training checkpoint {str(path)!r} was written with different settings "
            f"(key: (stored, requested)) {diff}; use the same settings, another "
            f"checkpoint_path, or resume=False"
        )
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise CheckpointError(f"training checkpoint {str(path)!r} does not fit the model: {exc}") from exc
    opt.load_state_dict(state["optimizer"])
    sched.load_state_dict(state["scheduler"])
    return int(state["epoch"]), list(state.get("history", []))

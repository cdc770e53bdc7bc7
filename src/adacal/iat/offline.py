"""Offline evaluation of IAT exit policies on recorded per-step outputs.

Running the SNN once for the full T and recording every step's output lets one replay any exit
policy exactly (the streaming simulator applies the same :func:`~adacal.iat.policy.exit_mask`),
so accuracy-versus-latency curves cost one simulation instead of one per threshold.
"""
from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass

import torch
from torch import Tensor

from adacal.errors import ConfigError, DataError, ShapeError
from adacal.iat.policy import (
    ExitPolicy,
    ExitStatistics,
    _acc_dtype,
    _check_finite_real,
    _check_labels,
    _check_per_step,
    exit_mask,
)

__all__ = ["ExitResult", "evaluate_exits", "fixed_T_accuracy", "sweep_alpha_base"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True, eq=False)
class ExitResult:
    """Outcome of replaying an exit policy on a batch of recorded outputs.

    ``predictions``: argmax of O at each sample's exit step, ``[B]`` (or ``[B, *spatial]`` per-pixel
    maps for dense outputs), on the outputs' device. ``exit_steps``: 1-based exit step per sample,
    ``[B]`` long. ``histogram[t-1]``: how many samples exited at step t. ``accuracy``: top-1
    accuracy, or global pixel accuracy (correct / valid pixels over the whole batch) for dense
    outputs; ``None`` without labels.
    """

    predictions: Tensor
    exit_steps: Tensor
    mean_exit_step: float
    histogram: tuple[int, ...]
    accuracy: float | None
    T: int

    @property
    def num_samples(self) -> int:
        """Batch size B."""
        return int(self.exit_steps.shape[0])


def _accuracy(pred: Tensor, labels: Tensor, ignore_index: int | None) -> float:
    """Top-1 accuracy, or global pixel accuracy over non-ignored pixels for dense predictions."""
    hit = pred == labels
    if ignore_index is not None:
        valid = labels != ignore_index
        n_valid = int(valid.sum())
        if n_valid == 0:
            raise DataError(f"every label equals ignore_index={ignore_index}; accuracy is undefined")
        return int((hit & valid).sum()) / n_valid
    return float(hit.double().mean())


def evaluate_exits(per_step_outputs: Tensor, policy: ExitPolicy, labels: Tensor | None = None, *,
                   ignore_index: int | None = None) -> ExitResult:
    """Replay ``policy`` on per-step outputs ``[T, B, C, *spatial]`` (T must equal ``policy.T``).

    Each sample exits at the first t where :func:`exit_mask` says so (always by T) and predicts
    argmax of its accumulated output there.
    """
    if not isinstance(policy, ExitPolicy):
        raise ConfigError(f"policy must be an ExitPolicy, got {type(policy).__name__}")
    x = _check_per_step(per_step_outputs)
    T, B = x.shape[0], x.shape[1]
    if T != policy.T:
        raise ShapeError(
            f"per_step_outputs has T={T} timesteps but the policy has {policy.T} thresholds; "
            "record outputs for exactly the policy's T (or build a policy for this T)"
        )
    y = None if labels is None else _check_labels(labels, x, ignore_index)

    running = torch.zeros(x.shape[1:], dtype=_acc_dtype(x.dtype), device=x.device)
    done = torch.zeros(B, dtype=torch.bool, device=x.device)
    exit_steps = torch.full((B,), T, dtype=torch.long, device=x.device)
    predictions = torch.zeros((B, *x.shape[3:]), dtype=torch.long, device=x.device)
    for t in range(1, T + 1):
        running += x[t - 1]
        new = exit_mask(policy, running, t) & ~done
        if bool(new.any()):
            predictions[new] = running[new].argmax(dim=1)
            exit_steps[new] = t
            done |= new
        if bool(done.all()):
            break

    histogram = tuple(int(c) for c in torch.bincount(exit_steps - 1, minlength=T).tolist())
    accuracy = None if y is None else _accuracy(predictions, y, ignore_index)
    mean_exit = float(exit_steps.double().mean())
    logger.debug("IAT replay: B=%d mean exit step %.3f histogram %s accuracy %s", B, mean_exit, histogram, accuracy)
    return ExitResult(predictions=predictions, exit_steps=exit_steps, mean_exit_step=mean_exit, histogram=histogram,
                      accuracy=accuracy, T=T)


def fixed_T_accuracy(per_step_outputs: Tensor, labels: Tensor, *, ignore_index: int | None = None) -> list[float]:
    """Accuracy when every input runs exactly t steps, for t = 1..T (the fixed-timestep baseline)."""
    x = _check_per_step(per_step_outputs)
    y = _check_labels(labels, x, ignore_index)
    running = torch.zeros(x.shape[1:], dtype=_acc_dtype(x.dtype), device=x.device)
    out = []
    for t in range(x.shape[0]):
        running += x[t]
        out.append(_accuracy(running.argmax(dim=1), y, ignore_index))
    return out


def sweep_alpha_base(per_step_outputs: Tensor, labels: Tensor, train_per_step_outputs: Tensor, train_labels: Tensor,
                     alpha_bases: Iterable[float], *, delta: float = 1.0, score: str = "entropy",
                     accumulate: str = "sum", reduction: str = "mean",
                     ignore_index: int | None = None) -> list[tuple[float, float, float]]:
    """Accuracy-versus-latency curve: ``(alpha_base, mean_timesteps, accuracy)`` per α_base.

    Entropy statistics are gathered once on the training outputs; each α_base then re-derives the
    thresholds (eq. 15) and replays them on the evaluation outputs.
    """
    bases = [_check_finite_real("alpha_base", a) for a in alpha_bases]
    if not bases:
        raise ConfigError("alpha_bases is empty; pass at least one α_base to sweep")
    stats = ExitStatistics.from_outputs(train_per_step_outputs, train_labels, accumulate=accumulate,
                                        reduction=reduction, ignore_index=ignore_index)
    base_policy = ExitPolicy.from_statistics(stats, alpha_base=bases[0], delta=delta, score=score)
    curve = []
    for a in bases:
        policy = base_policy.with_alpha_base(a)
        res = evaluate_exits(per_step_outputs, policy, labels, ignore_index=ignore_index)
        accuracy = res.accuracy if res.accuracy is not None else float("nan")  # labels given: never None
        curve.append((a, res.mean_exit_step, accuracy))
    return curve

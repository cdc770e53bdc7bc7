"""Early exit with a guarantee: an exit rule calibrated for a tolerated accuracy drop (risk control).

The paper's schedule (eq. 15) sets α_t from entropy statistics; nothing bounds what it costs. Here
the exit rule is one member of a family ordered from cautious to eager — by default, exit after step
t when the running output's lead (top-1 minus top-2 of O_t = Σ_{k≤t} out_k) exceeds λ·(T − t + 1):
λ per step still to come, so the schedule scales with T and tightens as the remaining steps (what
could still overturn the lead) grow — and λ is calibrated on held-out training inputs with
Learn-then-Test (Angelopoulos et al., 2021):

* the loss of an input under λ is 1 when exiting changes its outcome against running all T steps
  (``loss="error"``: right at T, wrong at its exit; ``loss="flip"``: any other prediction than at T,
  no labels needed); both bound the accuracy drop against full T from above;
* every λ of the grid is a hypothesis "risk(λ) > ε" with the exact binomial-tail p-value
  ``P(Binomial(n, ε) ≤ n·R̂(λ))``; testing them in the fixed order cautious → eager and stopping at the
  first that is not rejected at level δ controls the family-wise error (fixed-sequence testing);
* the most eager rejected λ is kept; with probability ≥ 1 − δ over the calibration draw, its risk
  — hence the accuracy drop against full T on data like the calibration data — is at most ε. If
  no λ is certified, the rule never exits early (no drop, no saving).

:func:`oracle_exit_steps` is the limit any rule is measured against: each input stops at the first
step after which its running prediction never changes (no loss, the fewest steps).
"""
from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch
from scipy import stats
from torch import Tensor

from adacal.errors import ConfigError, DataError
from adacal.iat.policy import ExitPolicy, _acc_dtype, _check_choice, _check_labels, _check_per_step, scores

__all__ = ["LOSSES", "SCHEDULES", "RiskCalibration", "binomial_pvalue", "calibrate_exit", "default_grid",
           "oracle_exit_steps", "schedule_thresholds"]

log = logging.getLogger(__name__)

#: ``error``: right after all T steps, wrong at the exit (labels needed); ``flip``: a prediction other
#: than the one after all T steps (no labels). Either upper-bounds the accuracy drop against full T.
LOSSES = ("error", "flip")
#: How λ becomes the thresholds α_1..α_T: ``remaining`` — λ·(T − t + 1); ``constant`` — λ at every step.
SCHEDULES = ("remaining", "constant")


def binomial_pvalue(losses: int, n: int, epsilon: float) -> float:
    """P(Binomial(n, ε) ≤ losses): small when ``losses`` in ``n`` trials is unlikely if the risk were ε."""
    if n < 1:
        raise DataError("a risk bound needs at least one calibration input")
    if not 0.0 < epsilon < 1.0:
        raise ConfigError(f"epsilon (tolerated risk, a fraction) must be in (0, 1), got {epsilon!r}")
    return float(stats.binom.cdf(int(losses), int(n), float(epsilon)))


def oracle_exit_steps(per_step_outputs: Tensor) -> Tensor:
    """Per input, the first step t (1-based) after which argmax(O_s) = argmax(O_T) for every s ≥ t.

    ``per_step_outputs``: ``[T, B, C, *spatial]`` (dense outputs: every pixel must have settled).
    Stopping there loses nothing against full T; no rule that sees only the past can stop earlier
    on every input without loss — the limit early exit is measured against.
    """
    x = _check_per_step(per_step_outputs)
    pred = x.to(torch.float64).cumsum(0).argmax(2)  # [T, B, *spatial]
    same = (pred == pred[-1]).flatten(2).all(2) if pred.dim() > 2 else pred == pred[-1]  # [T, B]
    T = same.shape[0]
    steps = torch.arange(1, T + 1, device=same.device).unsqueeze(1).expand_as(same)
    last_diff = torch.where(~same, steps, torch.zeros_like(steps)).amax(0)  # 0: never differs
    return last_diff + 1


def default_grid(score: str = "margin") -> tuple[float, ...]:
    """λ from cautious to eager, fixed before any data is seen (as Learn-then-Test requires).

    ``margin``: +∞, then 10^(3 − k/16) for k = 0..112 (1000 down to 1e-4, 16 per decade), 0, −∞;
    ``confidence``/``entropy``: +∞, 1 − 10^(−k/8) for k = 48..1, then 0.2 down to 0.02, −∞.
    """
    _check_choice("score", score, ("margin", "confidence", "entropy"))
    if score == "margin":
        return (math.inf, *[10 ** (3 - k / 16) for k in range(113)], 0.0, -math.inf)
    eager = [1.0 - 10 ** (-k / 8) for k in range(48, 0, -1)]  # 1 − 1e-6 ... 1 − 10^(−1/8)
    return (math.inf, *eager, *[0.2 - 0.02 * i for i in range(10)], -math.inf)


def schedule_thresholds(lam: float, T: int, schedule: str = "remaining") -> tuple[float, ...]:
    """α_1..α_T of the family member λ: λ·(T − t + 1) (``remaining``) or λ (``constant``)."""
    _check_choice("schedule", schedule, SCHEDULES)
    if schedule == "constant" or not math.isfinite(lam) or lam == 0:
        return (float(lam),) * T
    return tuple(float(lam * (T - t + 1)) for t in range(1, T + 1))


@dataclass(frozen=True)
class RiskCalibration:
    """How a risk-controlled exit rule was calibrated: everything needed to audit the guarantee."""

    epsilon: float
    delta: float
    loss: str
    n: int
    chosen: float
    grid: tuple[float, ...]
    losses: tuple[int, ...]
    pvalues: tuple[float, ...]
    mean_steps: tuple[float, ...]
    score: str = "margin"
    schedule: str = "remaining"
    accumulate: str = "sum"

    @property
    def certified(self) -> bool:
        """Whether some λ was certified (else the rule runs every input for all T steps)."""
        return self.chosen != math.inf

    def to_dict(self) -> dict[str, Any]:
        def enc(v: float) -> float | str:
            return v if math.isfinite(v) else ("inf" if v > 0 else "-inf")

        return {"epsilon": self.epsilon, "delta": self.delta, "loss": self.loss, "n": self.n, "score": self.score,
                "schedule": self.schedule, "accumulate": self.accumulate,
                "chosen": enc(self.chosen), "certified": self.certified, "grid": [enc(v) for v in self.grid],
                "losses": list(self.losses), "pvalues": list(self.pvalues), "mean_steps": list(self.mean_steps)}


def _outcome_loss(pred_exit: Tensor, pred_full: Tensor, labels: Tensor | None, loss: str) -> Tensor:
    flat = (lambda p: p.flatten(1)) if pred_exit.dim() > 1 else (lambda p: p.unsqueeze(1))
    if loss == "flip":
        return (flat(pred_exit) != flat(pred_full)).any(1)
    assert labels is not None
    right_full = (flat(pred_full) == flat(labels)).all(1)
    right_exit = (flat(pred_exit) == flat(labels)).all(1)
    return right_full & ~right_exit


def _trajectory(x: Tensor, score: str, accumulate: str) -> tuple[Tensor, Tensor]:
    """Score and argmax of the running output after every step, exactly as the exit rule
    (:func:`adacal.iat.exit_mask`) computes them."""
    running = torch.zeros(x.shape[1:], dtype=_acc_dtype(x.dtype), device=x.device)
    conf, pred = [], []
    for t in range(1, x.shape[0] + 1):
        running += x[t - 1]
        conf.append(scores(running / t if accumulate == "mean" else running, score))
        pred.append(running.argmax(dim=1))
    return torch.stack(conf), torch.stack(pred)


def calibrate_exit(per_step_outputs: Tensor, labels: Tensor | None = None, *, epsilon: float, delta: float = 0.1,
                   loss: str = "error", score: str = "margin", schedule: str = "remaining", accumulate: str = "sum",
                   grid: Sequence[float] | None = None) -> tuple[ExitPolicy, RiskCalibration]:
    """The most eager exit rule of the family whose accuracy drop against full T is certified ≤ ε.

    The family: exit after step t when ``score(O_t) > α_t(λ)`` (:func:`schedule_thresholds`; ``O_t``
    the running sum, or mean with ``accumulate="mean"``), λ over ``grid`` (default
    :func:`default_grid`). ``per_step_outputs``: ``[T, B, C, ...]`` of held-out training inputs
    (never the inputs the SNN was calibrated on, never test inputs); ``labels`` for
    ``loss="error"``. ``epsilon``: the tolerated drop as a fraction (0.001 = 0.1 points);
    ``delta``: 1 − the confidence of the guarantee. Returns the policy and its
    :class:`RiskCalibration` record (also in ``policy.certificate``).
    """
    _check_choice("loss", loss, LOSSES)
    _check_choice("schedule", schedule, SCHEDULES)
    x = _check_per_step(per_step_outputs)
    if loss == "error":
        if labels is None:
            raise DataError("loss='error' needs the held-out inputs' labels; pass labels or use loss='flip'")
        labels = _check_labels(labels, x, None)
    if not 0.0 < delta < 1.0:
        raise ConfigError(f"delta (1 − confidence) must be in (0, 1), got {delta!r}")
    T, n = x.shape[0], x.shape[1]
    lambdas = tuple(float(v) for v in (grid if grid is not None else default_grid(score)))
    if not lambdas:
        raise ConfigError("the λ grid is empty")
    conf, pred = _trajectory(x, score, accumulate)  # [T, B] each: the exit score and prediction after every step
    full = pred[-1]
    rows = torch.arange(n, device=x.device)
    chosen, losses, pvalues, steps = math.inf, [], [], []
    testing = True
    for lam in lambdas:
        alphas = schedule_thresholds(lam, T, schedule)
        leave = torch.stack([conf[t] > alphas[t] for t in range(T)])  # as exit_mask compares, step by step
        leave[-1] = True  # every input stops at T
        first = leave.int().argmax(0)  # the first step whose score passes its threshold (0-based)
        k = int(_outcome_loss(pred[first, rows], full, labels, loss).sum())
        p = binomial_pvalue(k, n, epsilon)
        losses.append(k)
        pvalues.append(p)
        steps.append(float((first + 1).double().mean()))
        if testing and p <= delta:
            chosen = lam
        else:
            testing = False  # fixed-sequence testing stops at the first hypothesis it cannot reject
    record = RiskCalibration(epsilon=float(epsilon), delta=float(delta), loss=loss, n=n, chosen=chosen,
                             grid=lambdas, losses=tuple(losses), pvalues=tuple(pvalues), mean_steps=tuple(steps),
                             score=score, schedule=schedule, accumulate=accumulate)
    policy = ExitPolicy(thresholds=schedule_thresholds(chosen, T, schedule), score=score, accumulate=accumulate,
                        certificate=record.to_dict())
    log.info("risk-controlled exit (ε=%g, δ=%g, %s loss, n=%d): λ=%s, %.2f mean steps on the calibration inputs",
             epsilon, delta, loss, n, chosen, steps[lambdas.index(chosen)] if chosen in lambdas else T)
    return policy, record

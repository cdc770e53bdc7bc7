"""Exit policy for Input-aware Adaptive Timesteps (IAT; seed eq. 15 and Algorithm 2, method.md §7).

An SNN emits one output per timestep; the accumulated output O_t = Σ_{k≤t} out_k is scored after
every step and an input stops ("exits") at the first t with Score_t > α_t, or at T. This module
holds everything that decision depends on, independent of any model:

* :func:`scores` turns accumulated outputs into one score per sample in [0, 1];
* :class:`ExitStatistics` gathers the per-step entropy statistics eq. 15 needs, as sums and counts
  so batches and shards combine exactly (``a + b``), never as averages of averages;
* :class:`ExitPolicy` holds the per-step thresholds α_t (fitted or constant) and serialises to JSON;
* :func:`exit_mask` is the single exit rule, used both by offline evaluation
  (:mod:`adacal.iat.offline`) and by the simulator's streaming early-exit path.

Conventions. Outputs are ``[B, C]`` (classification) or ``[B, C, *spatial]`` (dense prediction,
e.g. segmentation); classes are always on dim 1. Callers always pass the running SUM O_t; a policy
with ``accumulate="mean"`` divides by t itself. Dense outputs are scored per pixel and reduced to
one score per image by the mean over pixels (default) or the minimum (the least confident pixel).
"""
from __future__ import annotations

import logging
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from adacal import inputs
from adacal.errors import ConfigError, DataError, ShapeError

__all__ = ["ACCUMULATE_MODES", "DENSE_CORRECT_PIXEL_ACCURACY", "ENTROPY_SAMPLES", "REDUCTIONS", "SCORE_KINDS",
           "ExitPolicy", "ExitStatistics", "exit_mask", "normalized_entropy", "scores"]

logger = logging.getLogger(__name__)

SCORE_KINDS: tuple[str, ...] = ("entropy", "confidence", "margin")
"""``entropy``: 1 − H(softmax(O))/log C (the paper's score); ``confidence``: max softmax probability;
``margin``: the largest output minus the second largest (in output units, not bounded; it does not
saturate as probabilities do when outputs are summed over many steps)."""

ACCUMULATE_MODES: tuple[str, ...] = ("sum", "mean")
"""``sum``: score O_t itself (method.md); ``mean``: score O_t / t (a softmax temperature of t)."""

REDUCTIONS: tuple[str, ...] = ("mean", "min")
"""How per-pixel scores of dense outputs become one score per image."""

ENTROPY_SAMPLES: tuple[str, ...] = ("correct", "all")
"""Which training samples Ē_t averages over: correctly classified ones (method.md) or all."""

DENSE_CORRECT_PIXEL_ACCURACY = 0.5
"""A dense sample counts as "correctly classified" when its pixel accuracy is at least this."""

_FORMAT = "adacal.iat.ExitPolicy"
#: ``scorer(running_output, kind)`` -> confidence per sample in [0, 1]; ``correct(running, target)`` -> bool [B].
Scorer = Callable[[Any, str], Tensor]
Correct = Callable[[Any, Any], Tensor]


def _map2(fn: Callable[[Tensor, Tensor], Tensor], a: Any, b: Any) -> Any:
    """``fn`` on matching leaves of two same-structured values."""
    it = iter(inputs.leaves(b))
    return inputs.map_tensors(lambda t: fn(t, next(it)), a)
_VERSION = 1


# ----------------------------------------------------------------------------------------------
# validation helpers (shared with adacal.iat.offline)
# ----------------------------------------------------------------------------------------------
def _check_choice(name: str, value: str, choices: Sequence[str]) -> str:
    if not isinstance(value, str) or value not in choices:
        raise ConfigError(f"{name}={value!r} is not supported; choose one of {', '.join(choices)}")
    return value


def _check_finite_real(name: str, value: Any) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ConfigError(f"{name} must be a real number, got {type(value).__name__} {value!r}")
    out = float(value)
    if not math.isfinite(out):
        raise ConfigError(f"{name} must be finite, got {out}")
    return out


def _check_delta(delta: Any) -> float:
    d = _check_finite_real("delta", delta)
    if d <= 0:
        raise ConfigError(f"delta must be > 0 (the decay constant of eq. 15), got {d}")
    return d


def _check_T(T: Any) -> int:
    if isinstance(T, bool) or not isinstance(T, int) or T < 1:
        raise ConfigError(f"T must be an integer >= 1 (number of timesteps), got {T!r}")
    return T


def _acc_dtype(dtype: torch.dtype) -> torch.dtype:
    """Accumulate in at least float32: half-precision sums over many steps lose the small classes."""
    return torch.promote_types(dtype, torch.float32)


def _check_outputs(x: Any, name: str, *, per_step: bool) -> Tensor:
    """Validate an output tensor; ``per_step`` means a leading T dimension ([T, B, C, *spatial])."""
    layout = "[T, B, C, *spatial]" if per_step else "[B, C, *spatial]"
    if not isinstance(x, Tensor):
        raise DataError(f"{name} must be a torch.Tensor {layout}, got {type(x).__name__}")
    if x.is_complex() or x.dtype == torch.bool:
        raise DataError(f"{name} must be a real (float or integer) tensor, got dtype {x.dtype}")
    min_dims = 3 if per_step else 2
    if x.dim() < min_dims:
        raise ShapeError(f"{name} must have shape {layout} (classes on dim {2 if per_step else 1}), "
                         f"got shape {tuple(x.shape)}")
    if per_step and x.shape[0] < 1:
        raise ShapeError(f"{name} has T=0 timesteps; it needs at least one, shape {tuple(x.shape)}")
    class_dim = 2 if per_step else 1
    if x.shape[class_dim] < 1:
        raise ShapeError(f"{name} has no classes (dim {class_dim} is 0), shape {tuple(x.shape)}")
    if any(s < 1 for s in x.shape[class_dim + 1 :]):
        raise ShapeError(f"{name} has an empty spatial dimension, shape {tuple(x.shape)}")
    return x


def _check_per_step(x: Any, name: str = "per_step_outputs") -> Tensor:
    """Full offline validation: shape, non-empty batch, all values finite."""
    x = _check_outputs(x, name, per_step=True)
    if x.shape[1] < 1:
        raise DataError(f"{name} is an empty batch (B=0), shape {tuple(x.shape)}; pass at least one sample")
    if x.is_floating_point() and not bool(torch.isfinite(x).all()):
        n_bad = int((~torch.isfinite(x)).sum())
        raise DataError(f"{name} contains {n_bad} NaN/Inf values; the SNN outputs must be finite")
    return x


def _check_labels(labels: Any, outputs: Tensor, ignore_index: int | None, name: str = "labels") -> Tensor:
    """Labels must be integer class ids of shape [B] (or [B, *spatial] for dense outputs)."""
    if not isinstance(labels, Tensor):
        raise DataError(f"{name} must be a torch.Tensor of integer class ids, got {type(labels).__name__}")
    if labels.is_floating_point() or labels.is_complex() or labels.dtype == torch.bool:
        raise DataError(f"{name} must hold integer class ids, got dtype {labels.dtype}; use labels.long()")
    B, C = outputs.shape[1], outputs.shape[2]
    expected = (B, *outputs.shape[3:])
    if tuple(labels.shape) != expected:
        raise ShapeError(f"{name} has shape {tuple(labels.shape)} but the outputs {tuple(outputs.shape)} need "
                         f"{expected} (one class id per sample, or per pixel for dense outputs)")
    labels = labels.to(device=outputs.device, dtype=torch.long)
    valid = labels != ignore_index if ignore_index is not None else torch.ones_like(labels, dtype=torch.bool)
    bad = valid & ((labels < 0) | (labels >= C))
    if bool(bad.any()):
        example = int(labels[bad][0])
        hint = "" if ignore_index is not None else " (pass ignore_index=... for 'void' labels such as 255)"
        raise DataError(f"{name} holds class id {example} outside [0, {C}){hint}")
    return labels


def _check_thresholds(values: Any, name: str = "thresholds") -> tuple[float, ...]:
    if isinstance(values, (str, bytes)) or not isinstance(values, Iterable):
        raise ConfigError(f"{name} must be a sequence of floats (one per timestep), got {values!r}")
    out = []
    for i, v in enumerate(values):
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise ConfigError(f"{name}[{i}] must be a real number (±inf allowed), got {v!r}")
        f = float(v)
        if math.isnan(f):
            raise ConfigError(f"{name}[{i}] is NaN; use +inf for 'never exit' or -inf for 'always exit'")
        out.append(f)
    if not out:
        raise ConfigError(f"{name} is empty; an exit policy needs one threshold per timestep (T >= 1)")
    return tuple(out)


# ----------------------------------------------------------------------------------------------
# scores
# ----------------------------------------------------------------------------------------------
def normalized_entropy(cum_output: Tensor) -> Tensor:
    """Per-sample (per-pixel for dense) H(softmax(x))/log C in [0, 1]; classes on dim 1.

    Zero for C == 1 (a single class is certain). Computed from log-softmax so huge logits
    (accumulated over many steps) neither overflow nor produce 0·log 0 = NaN.
    """
    x = cum_output.to(_acc_dtype(cum_output.dtype))
    C = x.shape[1]
    if C == 1:
        return torch.zeros_like(x.select(1, 0))
    logp = torch.log_softmax(x, dim=1)
    p = logp.exp()
    plogp = torch.where(p > 0, p * logp, torch.zeros_like(p))
    h = -plogp.sum(dim=1) / math.log(C)
    return h.clamp_(0.0, 1.0)


def _reduce(per_pixel: Tensor, reduction: str) -> Tensor:
    if per_pixel.dim() == 1:
        return per_pixel
    flat = per_pixel.flatten(1)
    return flat.mean(dim=1) if reduction == "mean" else flat.amin(dim=1)


def scores(cum_output: Tensor, kind: str = "entropy", reduction: str = "mean") -> Tensor:
    """Confidence of each sample's (already accumulated) output, shape [B].

    ``kind="entropy"``: 1 − H(softmax)/log C (seed eq. 15's score) and ``"confidence"``: max softmax
    probability, both in [0, 1]; ``"margin"``: top-1 minus top-2 output (≥ 0). Dense outputs
    ``[B, C, *spatial]`` are scored per pixel and reduced per image by ``reduction`` (``"mean"`` over
    pixels, or ``"min"``: the least confident pixel decides).
    The dtype is the input's, promoted to at least float32; the device is the input's.
    """
    _check_choice("kind", kind, SCORE_KINDS)
    _check_choice("reduction", reduction, REDUCTIONS)
    x = _check_outputs(cum_output, "cum_output", per_step=False)
    if x.shape[0] == 0:
        return torch.empty(0, dtype=_acc_dtype(x.dtype), device=x.device)
    if kind == "entropy":
        per_pixel = 1.0 - normalized_entropy(x)
    elif kind == "margin":
        xf = x.to(_acc_dtype(x.dtype))
        top = xf.topk(2, dim=1).values if x.shape[1] > 1 else torch.cat([xf, torch.full_like(xf, -math.inf)], 1)
        per_pixel = top.select(1, 0) - top.select(1, 1)
    else:
        per_pixel = torch.softmax(x.to(_acc_dtype(x.dtype)), dim=1).amax(dim=1)
    return _reduce(per_pixel, reduction)


# ----------------------------------------------------------------------------------------------
# statistics for fitting (eq. 15)
# ----------------------------------------------------------------------------------------------
def _sample_correct(running: Tensor, labels: Tensor, ignore_index: int | None) -> Tensor:
    """Per-sample correctness of argmax(O_t): exact match, or pixel accuracy >= 0.5 for dense."""
    pred = running.argmax(dim=1)
    if labels.dim() == 1:
        return pred == labels
    hit = (pred == labels).flatten(1)
    if ignore_index is None:
        return hit.float().mean(dim=1) >= DENSE_CORRECT_PIXEL_ACCURACY
    valid = (labels != ignore_index).flatten(1)
    n_valid = valid.sum(dim=1)
    n_hit = (hit & valid).sum(dim=1)
    # An image whose pixels are all 'void' has no accuracy: it never counts as correct.
    return (n_valid > 0) & (n_hit.double() >= DENSE_CORRECT_PIXEL_ACCURACY * n_valid.double())


@dataclass(frozen=True)
class ExitStatistics:
    """Per-step entropy sums and counts over training samples, combinable with ``+``.

    Entropy here is the per-sample normalised entropy 1 − score (entropy score, reduced over
    pixels with ``reduction`` for dense outputs) of O_t (or O_t/t for ``accumulate="mean"``).
    Keeping sums and counts (not means) makes statistics from different batches or shards add up
    to exactly the statistics of their union.
    """

    accumulate: str
    reduction: str
    sum_entropy_correct: tuple[float, ...]
    count_correct: tuple[int, ...]
    sum_entropy_all: tuple[float, ...]
    count_all: int

    def __post_init__(self) -> None:
        _check_choice("accumulate", self.accumulate, ACCUMULATE_MODES)
        _check_choice("reduction", self.reduction, REDUCTIONS)
        T = len(self.sum_entropy_all)
        if T < 1 or not (len(self.sum_entropy_correct) == len(self.count_correct) == T):
            raise ConfigError("ExitStatistics needs one entry per timestep (T >= 1) in sum_entropy_correct, "
                              f"count_correct and sum_entropy_all; got lengths {len(self.sum_entropy_correct)}, "
                              f"{len(self.count_correct)}, {T}")
        object.__setattr__(self, "sum_entropy_correct", tuple(float(v) for v in self.sum_entropy_correct))
        object.__setattr__(self, "count_correct", tuple(int(v) for v in self.count_correct))
        object.__setattr__(self, "sum_entropy_all", tuple(float(v) for v in self.sum_entropy_all))
        if self.count_all < 0 or any(c < 0 or c > self.count_all for c in self.count_correct):
            raise ConfigError("ExitStatistics counts must satisfy 0 <= count_correct[t] <= count_all")

    @property
    def T(self) -> int:
        """Number of timesteps the statistics cover."""
        return len(self.sum_entropy_all)

    @classmethod
    def from_outputs(cls, per_step_outputs: Tensor, labels: Tensor, *, accumulate: str = "sum", reduction: str = "mean",
                     ignore_index: int | None = None, scorer: Scorer | None = None,
                     correct: Correct | None = None) -> ExitStatistics:
        """Gather statistics from one batch of per-step outputs ``[T, B, C, *spatial]`` and labels.

        ``labels``: ``[B]`` class ids, or ``[B, *spatial]`` for dense outputs (pixels equal to
        ``ignore_index`` do not count towards a sample's pixel accuracy). A task with other outputs
        passes its own ``scorer(running, "entropy")`` (confidence per sample) and
        ``correct(running, labels)``; outputs and labels are then taken as they are.
        """
        _check_choice("accumulate", accumulate, ACCUMULATE_MODES)
        _check_choice("reduction", reduction, REDUCTIONS)
        if scorer is None or correct is None:  # class logits: checked, scored per pixel, dense accuracy >= 0.5
            per_step_outputs = _check_per_step(per_step_outputs)
            labels = _check_labels(labels, per_step_outputs, ignore_index)
            scorer = lambda running, kind: scores(running, kind, reduction)
            correct = lambda running, y: _sample_correct(running, y, ignore_index)
        return cls._from_task(per_step_outputs, labels, accumulate, reduction, scorer, correct)

    @classmethod
    def _from_task(cls, per_step: Any, labels: Any, accumulate: str, reduction: str, scorer: Scorer,
                   correct: Correct) -> ExitStatistics:
        first = inputs.leaves(per_step)[0]
        T, B = first.shape[0], first.shape[1]
        sums_c, sums_a, counts = [], [], []
        running: Any = None
        for t in range(1, T + 1):
            step = inputs.map_tensors(lambda o, t=t: o[t - 1].to(_acc_dtype(o.dtype)), per_step)
            running = step if running is None else _map2(lambda a, b: a + b, running, step)
            scored = inputs.map_tensors(lambda o, t=t: o / t, running) if accumulate == "mean" else running
            ent = (1.0 - scorer(scored, "entropy")).double()
            ok = correct(scored, labels).bool()
            sums_c.append(float(ent[ok].sum()))
            sums_a.append(float(ent.sum()))
            counts.append(int(ok.sum()))
        return cls(accumulate=accumulate, reduction=reduction, sum_entropy_correct=tuple(sums_c),
                   count_correct=tuple(counts), sum_entropy_all=tuple(sums_a), count_all=B)

    @classmethod
    def from_batches(cls, batches: Iterable[tuple[Tensor, Tensor]], *, accumulate: str = "sum", reduction: str = "mean",
                     ignore_index: int | None = None, scorer: Scorer | None = None,
                     correct: Correct | None = None) -> ExitStatistics:
        """Sum statistics over an iterable of ``(per_step_outputs, labels)`` batches."""
        total: ExitStatistics | None = None
        for i, item in enumerate(batches):
            if not isinstance(item, (tuple, list)) or len(item) != 2:
                raise DataError(f"batch {i} must be a (per_step_outputs, labels) pair, got {type(item).__name__}")
            stats = cls.from_outputs(item[0], item[1], accumulate=accumulate, reduction=reduction,
                                     ignore_index=ignore_index, scorer=scorer, correct=correct)
            total = stats if total is None else total + stats
        if total is None:
            raise DataError("no batches to fit the exit policy on: the iterable was empty")
        return total

    def __add__(self, other: ExitStatistics) -> ExitStatistics:
        """Statistics of the union of the two sample sets (exact: sums and counts add)."""
        if not isinstance(other, ExitStatistics):
            return NotImplemented
        if (self.T, self.accumulate, self.reduction) != (other.T, other.accumulate, other.reduction):
            raise ConfigError("cannot combine ExitStatistics gathered with different settings: "
                              f"(T, accumulate, reduction) = {(self.T, self.accumulate, self.reduction)} vs "
                              f"{(other.T, other.accumulate, other.reduction)}")

        def added(a: tuple[Any, ...], b: tuple[Any, ...]) -> tuple[Any, ...]:
            return tuple(x + y for x, y in zip(a, b))

        return ExitStatistics(self.accumulate, self.reduction,
                              added(self.sum_entropy_correct, other.sum_entropy_correct),
                              added(self.count_correct, other.count_correct),
                              added(self.sum_entropy_all, other.sum_entropy_all), self.count_all + other.count_all)

    def mean_entropy(self, samples: str = "correct") -> tuple[float, ...]:
        """Ē_t for t = 1..T over correctly classified samples (or ``samples="all"``).

        A step at which no sample is correct falls back to the mean over all samples (with a
        warning): an undefined Ē_t would otherwise make every threshold undefined.
        """
        _check_choice("samples", samples, ENTROPY_SAMPLES)
        if self.count_all == 0:
            raise DataError("ExitStatistics hold no samples; fit on at least one labelled sample")
        out = []
        for t in range(self.T):
            if samples == "correct" and self.count_correct[t] > 0:
                out.append(self.sum_entropy_correct[t] / self.count_correct[t])
            else:
                if samples == "correct":
                    logger.warning("IAT fit: no training sample is correctly classified at timestep %d; "
                                   "using the mean entropy of all %d samples for that step", t + 1, self.count_all)
                out.append(self.sum_entropy_all[t] / self.count_all)
        return tuple(out)


def _thresholds_from_entropy(mean_entropy: Sequence[float], alpha_base: float, delta: float) -> tuple[float, ...]:
    """Seed eq. 15: α_t = α_base + (1 − α_base)·exp(−(Ē_t − Ē_min)/δ)."""
    e_min = min(mean_entropy)
    beta = 1.0 - alpha_base
    return tuple(alpha_base + beta * math.exp(-(e - e_min) / delta) for e in mean_entropy)


# ----------------------------------------------------------------------------------------------
# the policy
# ----------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class ExitPolicy:
    """Per-step exit thresholds α_1..α_T and how outputs are scored against them.

    An input exits at the first t with score(O_t) > α_t, and at T regardless. ``+inf`` thresholds
    never exit early, ``-inf`` always exit. ``alpha_base``, ``delta`` and ``mean_entropy`` (Ē_t)
    record how a fitted policy was made (``None`` for hand-built ones); keeping Ē_t lets
    :meth:`with_alpha_base` re-derive thresholds without touching data again. ``certificate``: how
    a risk-controlled rule was certified (:class:`adacal.iat.risk.RiskCalibration` as a dict).
    """

    thresholds: tuple[float, ...]
    score: str = "entropy"
    accumulate: str = "sum"
    reduction: str = "mean"
    alpha_base: float | None = None
    delta: float | None = None
    mean_entropy: tuple[float, ...] | None = field(default=None)
    certificate: Mapping[str, Any] | None = field(default=None, compare=False, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "thresholds", _check_thresholds(self.thresholds))
        _check_choice("score", self.score, SCORE_KINDS)
        _check_choice("accumulate", self.accumulate, ACCUMULATE_MODES)
        _check_choice("reduction", self.reduction, REDUCTIONS)
        if self.alpha_base is not None:
            object.__setattr__(self, "alpha_base", _check_finite_real("alpha_base", self.alpha_base))
        if self.delta is not None:
            object.__setattr__(self, "delta", _check_delta(self.delta))
        if self.mean_entropy is not None:
            me = _check_thresholds(self.mean_entropy, "mean_entropy")
            if len(me) != len(self.thresholds) or not all(math.isfinite(v) for v in me):
                raise ConfigError(f"mean_entropy must hold {len(self.thresholds)} finite values (one per timestep), "
                                  f"got {me}")
            object.__setattr__(self, "mean_entropy", me)

    # -- construction ------------------------------------------------------------------------
    @property
    def T(self) -> int:
        """Number of timesteps the policy covers."""
        return len(self.thresholds)

    def threshold(self, t: int) -> float:
        """α_t for 1-based timestep t."""
        return self.thresholds[_check_step(t, self.T) - 1]

    @classmethod
    def constant(cls, alpha: float, T: int, *, score: str = "entropy", accumulate: str = "sum",
                 reduction: str = "mean") -> ExitPolicy:
        """The same threshold at every step (the pre-IAT baseline); ``+inf`` means fixed T."""
        T = _check_T(T)
        return cls(thresholds=(alpha,) * T, score=score, accumulate=accumulate, reduction=reduction)

    @classmethod
    def from_statistics(cls, stats: ExitStatistics, *, alpha_base: float = 0.6, delta: float = 1.0,
                        score: str = "entropy", samples: str = "correct") -> ExitPolicy:
        """Thresholds from eq. 15 given gathered statistics (β = 1 − α_base, range α_base..1).

        The thresholds always come from entropy statistics (as in the paper) whatever ``score``
        the exit test uses.
        """
        if not isinstance(stats, ExitStatistics):
            raise ConfigError(f"stats must be ExitStatistics, got {type(stats).__name__}")
        alpha_base = _check_finite_real("alpha_base", alpha_base)
        delta = _check_delta(delta)
        _check_choice("score", score, SCORE_KINDS)
        mean_entropy = stats.mean_entropy(samples)
        policy = cls(_thresholds_from_entropy(mean_entropy, alpha_base, delta), score, stats.accumulate,
                     stats.reduction, alpha_base, delta, mean_entropy)
        logger.info("IAT policy fitted on %d samples: alpha_base=%g delta=%g mean entropy=%s thresholds=%s",
                    stats.count_all, alpha_base, delta, [round(v, 4) for v in mean_entropy],
                    [round(v, 4) for v in policy.thresholds])
        return policy

    @classmethod
    def fit(cls, per_step_outputs: Tensor, labels: Tensor, *, alpha_base: float = 0.6, delta: float = 1.0,
            score: str = "entropy", accumulate: str = "sum", reduction: str = "mean",
            ignore_index: int | None = None) -> ExitPolicy:
        """Fit α_t (eq. 15) on labelled training outputs ``[T, B, C, *spatial]``.

        Ē_t is the mean normalised entropy of the samples correctly classified at step t (dense:
        pixel accuracy >= 0.5); see :class:`ExitStatistics`.
        """
        stats = ExitStatistics.from_outputs(per_step_outputs, labels, accumulate=accumulate, reduction=reduction,
                                            ignore_index=ignore_index)
        return cls.from_statistics(stats, alpha_base=alpha_base, delta=delta, score=score)

    @classmethod
    def fit_batches(cls, batches: Iterable[tuple[Tensor, Tensor]], *, alpha_base: float = 0.6, delta: float = 1.0,
                    score: str = "entropy", accumulate: str = "sum", reduction: str = "mean",
                    ignore_index: int | None = None, scorer: Scorer | None = None,
                    correct: Correct | None = None) -> ExitPolicy:
        """Like :meth:`fit` over an iterable of ``(per_step_outputs, labels)`` batches.

        Statistics are summed across batches, so the result equals :meth:`fit` on their
        concatenation (up to float summation order).
        """
        stats = ExitStatistics.from_batches(batches, accumulate=accumulate, reduction=reduction,
                                            ignore_index=ignore_index, scorer=scorer, correct=correct)
        return cls.from_statistics(stats, alpha_base=alpha_base, delta=delta, score=score)

    def with_alpha_base(self, alpha_base: float, delta: float | None = None) -> ExitPolicy:
        """The same fitted policy re-derived for another α_base (and optionally δ), no data needed."""
        if self.mean_entropy is None:
            raise ConfigError("with_alpha_base needs a fitted policy (mean_entropy is None); fit one with "
                              "ExitPolicy.fit")
        alpha_base = _check_finite_real("alpha_base", alpha_base)
        delta = self.delta if delta is None else delta
        delta = _check_delta(1.0 if delta is None else delta)
        return ExitPolicy(_thresholds_from_entropy(self.mean_entropy, alpha_base, delta), self.score,
                          self.accumulate, self.reduction, alpha_base, delta, self.mean_entropy)

    # -- the exit rule ------------------------------------------------------------------------
    def exit_mask(self, cum_output_at_t: Any, t: int, *, scorer: Scorer | None = None) -> Tensor:
        """Same as :func:`exit_mask` (``policy.exit_mask(O_t, t)``)."""
        return exit_mask(self, cum_output_at_t, t, scorer=scorer)

    # -- serialisation ------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict; infinite thresholds become the strings ``"inf"`` / ``"-inf"``.

        Finite floats survive ``json.dumps``/``json.loads`` exactly (shortest repr), so
        ``ExitPolicy.from_dict(json.loads(json.dumps(p.to_dict()))) == p``.
        """
        return {
            "format": _FORMAT,
            "version": _VERSION,
            "thresholds": [_encode_float(v) for v in self.thresholds],
            "score": self.score,
            "accumulate": self.accumulate,
            "reduction": self.reduction,
            "alpha_base": self.alpha_base,
            "delta": self.delta,
            "mean_entropy": None if self.mean_entropy is None else list(self.mean_entropy),
            **({} if self.certificate is None else {"certificate": dict(self.certificate)}),
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> ExitPolicy:
        """Inverse of :meth:`to_dict`; also accepts real ±inf floats for thresholds."""
        if not isinstance(data, Mapping):
            raise ConfigError(f"an ExitPolicy dict is required, got {type(data).__name__}")
        allowed = {"format", "version", "thresholds", "score", "accumulate", "reduction",
                   "alpha_base", "delta", "mean_entropy", "certificate"}
        unknown = sorted(set(data) - allowed)
        if unknown:
            raise ConfigError(f"unknown ExitPolicy keys {unknown}; expected a subset of {sorted(allowed)}")
        if data.get("format", _FORMAT) != _FORMAT:
            raise ConfigError(f"not an ExitPolicy dict: format={data.get('format')!r}")
        if data.get("version", _VERSION) != _VERSION:
            raise ConfigError(f"unsupported ExitPolicy version {data.get('version')!r}; this adacal reads {_VERSION}")
        if "thresholds" not in data:
            raise ConfigError("ExitPolicy dict is missing 'thresholds'")
        raw = data["thresholds"]
        if isinstance(raw, (str, bytes)) or not isinstance(raw, Iterable):
            raise ConfigError(f"'thresholds' must be a list, got {raw!r}")
        me = data.get("mean_entropy")
        return cls(thresholds=tuple(_decode_float(v, f"thresholds[{i}]") for i, v in enumerate(raw)),
                   score=data.get("score", "entropy"), accumulate=data.get("accumulate", "sum"),
                   reduction=data.get("reduction", "mean"), alpha_base=data.get("alpha_base"), delta=data.get("delta"),
                   mean_entropy=None if me is None else tuple(me), certificate=data.get("certificate"))


def _encode_float(v: float) -> float | str:
    if math.isinf(v):
        return "inf" if v > 0 else "-inf"
    return v


def _decode_float(v: Any, name: str) -> float:
    if isinstance(v, str):
        key = v.strip().lower()
        if key in ("inf", "+inf", "infinity", "+infinity"):
            return math.inf
        if key in ("-inf", "-infinity"):
            return -math.inf
        raise ConfigError(f"{name}={v!r}: only 'inf' and '-inf' are accepted as strings")
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise ConfigError(f"{name} must be a number or 'inf'/'-inf', got {v!r}")
    return float(v)


def _check_step(t: Any, T: int) -> int:
    if isinstance(t, bool) or not isinstance(t, int) or not 1 <= t <= T:
        raise ConfigError(f"timestep t={t!r} is outside 1..{T} (t is 1-based, T is the policy's length)")
    return t


def exit_mask(policy: ExitPolicy, cum_output_at_t: Any, t: int, *, scorer: Scorer | None = None) -> Tensor:
    """Which samples stop after timestep t (1-based): ``score(O_t) > α_t``, or all of them at T.

    ``cum_output_at_t`` is the running SUM O_t of the samples still running, ``[B, C, *spatial]``
    (the policy divides by t itself when ``accumulate="mean"``). Returns a bool tensor ``[B]`` on
    the input's device. This is the one exit rule: offline evaluation and the simulator's
    streaming early exit both call it. It does not check for NaN (that would cost a device sync
    per step); a NaN score compares False, so such a sample runs to T. ``scorer(O, kind)`` scores
    outputs of other tasks (default: :func:`scores` on class logits).
    """
    if not isinstance(policy, ExitPolicy):
        raise ConfigError(f"policy must be an ExitPolicy, got {type(policy).__name__}")
    t = _check_step(t, policy.T)
    x = cum_output_at_t if scorer is not None else _check_outputs(cum_output_at_t, "cum_output_at_t", per_step=False)
    first = inputs.leaves(x)[0]
    B, device = first.shape[0], first.device
    if t == policy.T:
        return torch.ones(B, dtype=torch.bool, device=device)
    alpha = policy.thresholds[t - 1]
    if alpha == math.inf:
        return torch.zeros(B, dtype=torch.bool, device=device)
    if alpha == -math.inf:
        return torch.ones(B, dtype=torch.bool, device=device)
    scored = inputs.map_tensors(lambda o: o / t, x) if policy.accumulate == "mean" else x
    if scorer is not None:
        return scorer(scored, policy.score) > alpha
    return scores(scored, policy.score, policy.reduction) > alpha

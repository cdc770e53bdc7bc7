"""Exact Pareto-frontier search over per-layer settings (seed Algorithm 1, method.md §6).

Every layer ``i`` offers candidates ``k`` (a firing pattern φ, a threshold ratio ρ, ...) with a cost
``c_i(k)`` (energy) and a score ``s_i(k)`` (sensitivity), both additive over layers. Choosing one
candidate per layer is a multiple-choice knapsack; walking the layers in order while keeping only
the Pareto-optimal partial assignments solves it exactly (a partial assignment that is weakly
dominated can never be completed into something better than its dominator's completion).

Two uses, both answered from the same frontier:

* :func:`minimise_score` -- least total score with total cost <= budget (AdaFire φ search);
* :func:`minimise_cost` -- least total cost with total score <= budget (SSC ρ search).

Results are keyed by layer *name* and candidate *value*, never by position, and are returned in the
table's layer order (the research code traced back without reversing, giving layer ``k`` the
setting of layer ``L-1-k``; here choices are written into their layer's slot, so there is nothing
to reverse).

Determinism. The frontier keeps, for each total cost, only the lowest total score, and a point only
if its score is strictly below every cheaper point's. Among assignments with exactly equal totals the
one whose tuple of candidate indices is lexicographically smallest in layer order wins ("earlier
candidate"); selections then prefer lower score (resp. cost), then lower cost (resp. score).
Totals are summed left to right in layer order, so they are bit-identical to
``sum(c_i(k_i) for i in layers)``. The tie rule is exact whenever sums do not round (e.g. integer
values); with rounding, an assignment that was strictly dominated at some layer can reach totals
bit-equal to its dominator's (``1e-62 + 1.0 == 0.0 + 1.0``), and then the dominator is returned.

Budgets and floating point. A budget ``B`` is met when ``total <= B + tol`` with
``tol = BUDGET_RTOL * sum_i max_k |value_i(k)|`` (the magnitude scale of any total). Summation error
for ``L`` layers is at most about ``L * 2.2e-16`` times that scale, so a budget computed as the sum of
some setting's costs in any other order is still met, while a genuinely different total is never
mistaken for the budget unless it lies within one part in 1e9 of the scale.

Speed. Everything is exact by default and vectorised per layer (one sort of ``F*K`` points). The
front itself can be large: with 100 layers whose every candidate is Pareto-optimal (energy rising,
sensitivity falling, the realistic shape) it has ~1e5 points and takes seconds to enumerate, while
random independent tables give a few thousand points in milliseconds. A single budget question does
not need the whole front: :func:`minimise_score` / :func:`minimise_cost` on a table also prune
partial assignments whose LP-relaxation bound cannot reach a feasible incumbent (exact, tens of ms
for 100 x 20). For plotting huge fronts, ``pareto_front(..., max_points=m)`` is an opt-in
approximation (see there). Numbers: ``benchmarks/pareto_speed.py``.
"""
from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Hashable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal, Union

import numpy as np
from numpy.typing import NDArray

from adacal.errors import BudgetError, ConfigError

__all__ = ["BUDGET_RTOL", "ParetoFront", "SearchTable", "Selection", "TableLike", "as_table", "minimise_cost",
           "minimise_score", "pareto_front"]

#: Relative tolerance of budget comparisons, scaled by the largest possible |total| (module docstring).
BUDGET_RTOL: float = 1e-9

FloatArray = NDArray[np.float64]
IntArray = NDArray[np.integer[Any]]
Objective = Literal["min_score", "min_cost"]


def _readonly(array: NDArray[Any]) -> NDArray[Any]:
    array.setflags(write=False)
    return array


def _as_values(name: str, what: str, raw: Any) -> FloatArray:
    """1-D finite float64 copy of ``raw``, or a ConfigError naming the layer."""
    try:
        arr = np.asarray(raw)
        if arr.dtype.kind not in "biuf":
            raise TypeError(arr.dtype)
        arr = np.array(arr, dtype=np.float64)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"layer {name!r}: {what} must be real numbers, got {raw!r}") from exc
    if arr.ndim != 1:
        raise ConfigError(f"layer {name!r}: {what} must be a flat sequence, got shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        bad = [int(j) for j in np.flatnonzero(~np.isfinite(arr))]
        raise ConfigError(f"layer {name!r}: {what} must be finite (NaN/inf at candidate positions {bad})")
    return _readonly(arr)


def _scale(arrays: Sequence[FloatArray]) -> float:
    return math.fsum(float(np.max(np.abs(a))) for a in arrays)


@dataclass(frozen=True, slots=True, eq=False)
class SearchTable:
    """Per-layer candidates with their cost and score; the validated input of every search.

    ``values[i][k]`` is the setting (e.g. φ = 3) that candidate ``k`` of layer ``layers[i]`` stands
    for; ``costs[i][k]`` / ``scores[i][k]`` are its cost and score. Layers may have different numbers
    of candidates. Arrays are converted to read-only float64.
    """

    layers: tuple[str, ...]
    values: tuple[tuple[Hashable, ...], ...]
    costs: tuple[FloatArray, ...]
    scores: tuple[FloatArray, ...]

    def __post_init__(self) -> None:
        layers = tuple(self.layers)
        if not layers:
            raise ConfigError("a search table needs at least one layer")
        for name in layers:
            if not isinstance(name, str):
                raise ConfigError(f"layer names must be str, got {name!r} ({type(name).__name__})")
        if len(set(layers)) != len(layers):
            dup = sorted({n for n in layers if layers.count(n) > 1})
            raise ConfigError(f"duplicate layer names {dup}; each layer must appear once")
        n = len(layers)
        for what, seq in (("values", self.values), ("costs", self.costs), ("scores", self.scores)):
            if len(seq) != n:
                raise ConfigError(f"{what} has {len(seq)} entries for {n} layers; give one per layer")
        values: list[tuple[Hashable, ...]] = []
        costs: list[FloatArray] = []
        scores: list[FloatArray] = []
        for name, vals, cost, score in zip(layers, self.values, self.costs, self.scores):
            vals_t = tuple(v.item() if isinstance(v, np.generic) else v for v in vals)  # JSON-friendly
            if not vals_t:
                raise ConfigError(f"layer {name!r} has no candidates; give at least one")
            try:
                unique = len(set(vals_t)) == len(vals_t)
            except TypeError as exc:
                msg = f"layer {name!r}: candidate values must be hashable, got {vals_t!r}"
                raise ConfigError(msg) from exc
            if not unique:
                raise ConfigError(f"layer {name!r}: candidate values must be distinct, got {vals_t!r}")
            c = _as_values(name, "costs", cost)
            s = _as_values(name, "scores", score)
            if len(c) != len(vals_t) or len(s) != len(vals_t):
                raise ConfigError(
                    f"layer {name!r}: {len(vals_t)} candidate values but {len(c)} costs and {len(s)} scores;"
                    " the lengths must match"
                )
            values.append(vals_t)
            costs.append(c)
            scores.append(s)
        object.__setattr__(self, "layers", layers)
        object.__setattr__(self, "values", tuple(values))
        object.__setattr__(self, "costs", tuple(costs))
        object.__setattr__(self, "scores", tuple(scores))

    @classmethod
    def from_mapping(cls, table: Mapping[str, Mapping[Hashable, tuple[float, float]]]) -> SearchTable:
        """``{layer: {value: (cost, score)}}``; layer and candidate order follow the mappings."""
        if not isinstance(table, Mapping):
            kind = type(table).__name__
            raise ConfigError(f"expected a mapping layer -> {{value: (cost, score)}}, got {kind}")
        values, costs, scores = [], [], []
        for name, cands in table.items():
            if not isinstance(cands, Mapping):
                raise ConfigError(
                    f"layer {name!r}: expected a mapping value -> (cost, score), got {type(cands).__name__}"
                )
            vals, cs, ss = [], [], []
            for value, pair in cands.items():
                if isinstance(pair, (str, bytes)) or not isinstance(pair, Sequence) or len(pair) != 2:
                    raise ConfigError(
                        f"layer {name!r}, candidate {value!r}: expected a (cost, score) pair, got {pair!r}"
                    )
                vals.append(value)
                cs.append(pair[0])
                ss.append(pair[1])
            values.append(vals)
            costs.append(cs)
            scores.append(ss)
        names = tuple(table.keys())
        return cls(names, tuple(map(tuple, values)), tuple(costs), tuple(scores))  # type: ignore[arg-type]

    @classmethod
    def from_arrays(cls, costs: Sequence[Sequence[float]] | NDArray[Any],
                    scores: Sequence[Sequence[float]] | NDArray[Any], *, layers: Sequence[str] | None = None,
                    values: Sequence[Hashable] | None = None) -> SearchTable:
        """Parallel per-layer cost/score rows (ragged allowed).

        ``layers`` defaults to ``"0", "1", ...``; ``values`` is one candidate list shared by every
        layer (all rows must then have its length) and defaults to candidate positions ``0..K-1``.
        For per-layer candidate values use :meth:`from_mapping` or the constructor.
        """
        try:
            rows = [len(row) for row in costs]
            n_scores = len(scores)
        except TypeError as exc:
            raise ConfigError("costs and scores must be sequences (one row per layer) of numbers") from exc
        if n_scores != len(rows):
            raise ConfigError(f"costs has {len(rows)} layers but scores has {n_scores}; they must match")
        names = tuple(str(i) for i in range(len(rows))) if layers is None else tuple(layers)
        if values is None:
            vals = tuple(tuple(range(k)) for k in rows)
        else:
            shared = tuple(values)
            for name, k in zip(names, rows):
                if k != len(shared):
                    msg = f"layer {name!r} has {k} costs but {len(shared)} shared candidate values"
                    raise ConfigError(msg)
            vals = tuple(shared for _ in rows)
        return cls(names, vals, tuple(costs), tuple(scores))  # type: ignore[arg-type]

    @property
    def cost_tolerance(self) -> float:
        """Absolute slack of cost-budget comparisons (module docstring)."""
        return BUDGET_RTOL * _scale(self.costs)

    @property
    def score_tolerance(self) -> float:
        """Absolute slack of score-budget comparisons (module docstring)."""
        return BUDGET_RTOL * _scale(self.scores)

    @property
    def min_total_cost(self) -> float:
        """Smallest achievable total cost: the smallest feasible cost budget."""
        return _left_sum(float(np.min(c)) for c in self.costs)

    @property
    def min_total_score(self) -> float:
        """Smallest achievable total score: the smallest feasible score budget."""
        return _left_sum(float(np.min(s)) for s in self.scores)

    def index(self, layer: str, value: Hashable) -> int:
        """Position of candidate ``value`` in ``layer``."""
        try:
            i = self.layers.index(layer)
        except ValueError:
            raise ConfigError(f"unknown layer {layer!r}; known layers: {list(self.layers)}") from None
        try:
            return self.values[i].index(value)
        except ValueError:
            raise ConfigError(
                f"layer {layer!r} has no candidate {value!r}; candidates: {list(self.values[i])}"
            ) from None

    def evaluate(self, choices: Mapping[str, Hashable] | Hashable) -> tuple[float, float]:
        """Total (cost, score) of a setting: ``{layer: value}`` for every layer, or one value for all.

        Useful for budgets such as ``r * table.evaluate(phi_target)[0]`` (method.md §6).
        """
        if isinstance(choices, Mapping):
            missing = [n for n in self.layers if n not in choices]
            extra = [n for n in choices if n not in self.layers]
            if missing or extra:
                raise ConfigError(f"choices must name every layer once: missing {missing}, unknown {extra}")
            picks = [self.index(n, choices[n]) for n in self.layers]
        else:
            picks = [self.index(n, choices) for n in self.layers]
        cost = _left_sum(float(c[k]) for c, k in zip(self.costs, picks))
        score = _left_sum(float(s[k]) for s, k in zip(self.scores, picks))
        return cost, score


TableLike = Union[SearchTable, Mapping[str, Mapping[Hashable, tuple[float, float]]]]


def as_table(table: TableLike) -> SearchTable:
    """Accept a :class:`SearchTable` or ``{layer: {value: (cost, score)}}``."""
    if isinstance(table, SearchTable):
        return table
    return SearchTable.from_mapping(table)


def _left_sum(items: Any) -> float:
    """Left-to-right float sum from 0.0, the order the search adds layers in."""
    total = 0.0
    for x in items:
        total += x
    return total


class _FrozenDict(Mapping[str, Hashable]):
    """Read-only, hashable, picklable ordered mapping (``MappingProxyType`` cannot be pickled)."""

    __slots__ = ("_items",)

    def __init__(self, items: Mapping[str, Hashable]) -> None:
        self._items = dict(items)

    def __getitem__(self, key: str) -> Hashable:
        return self._items[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __hash__(self) -> int:
        return hash(tuple(self._items.items()))

    def __repr__(self) -> str:
        return repr(self._items)

    def __getstate__(self) -> dict[str, Hashable]:
        return self._items

    def __setstate__(self, state: dict[str, Hashable]) -> None:
        self._items = state


@dataclass(frozen=True, slots=True)
class Selection:
    """One assignment: the chosen candidate value per layer (in layer order) and its totals.

    ``objective``/``budget`` record the question it answers (``None`` for a bare frontier point).
    """

    choices: Mapping[str, Hashable]
    indices: tuple[int, ...]
    cost: float
    score: float
    objective: Objective | None = None
    budget: float | None = None

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly form (choices as a plain dict in layer order)."""
        return {
            "choices": dict(self.choices),
            "indices": list(self.indices),
            "cost": self.cost,
            "score": self.score,
            "objective": self.objective,
            "budget": self.budget,
        }


@dataclass(frozen=True, slots=True, eq=False)
class ParetoFront:
    """All Pareto-optimal complete assignments, sorted by total cost.

    ``cost`` strictly increases and ``score`` strictly decreases along the front (plot one against
    the other); ``choices[j, i]`` is the candidate index of layer ``i`` at point ``j``. A front built
    with a budget holds only the points within it (the optimum under that budget is unchanged).
    ``exact`` is False when ``max_points`` thinned it: every point is then still a real assignment
    with exact totals, but the curve may lie above the true front between its (exact) end points.
    """

    table: SearchTable
    cost: FloatArray
    score: FloatArray
    choices: IntArray
    cost_budget: float | None = None
    score_budget: float | None = None
    exact: bool = True

    def __len__(self) -> int:
        return int(self.cost.shape[0])

    @property
    def layers(self) -> tuple[str, ...]:
        return self.table.layers

    def point(self, j: int, *, objective: Objective | None = None, budget: float | None = None) -> Selection:
        """Point ``j`` of the front as a :class:`Selection` keyed by layer name."""
        n = len(self)
        if not -n <= j < n:
            raise ConfigError(f"front point {j} out of range for a front of {n} points")
        idx = tuple(int(k) for k in self.choices[j])
        chosen = {name: vals[k] for name, vals, k in zip(self.table.layers, self.table.values, idx)}
        return Selection(choices=_FrozenDict(chosen), indices=idx, cost=float(self.cost[j]), score=float(self.score[j]),
                         objective=objective, budget=budget)


def _check_budget(name: str, budget: Any) -> float:
    if isinstance(budget, bool) or not isinstance(budget, numbers.Real):
        raise ConfigError(f"{name} must be a real number, got {budget!r}")
    value = float(budget)
    if math.isnan(value):
        raise ConfigError(f"{name} must not be NaN")
    return value


def _nondominated(cost: FloatArray, score: FloatArray) -> IntArray:
    """Positions of the strict Pareto points, ascending (input order breaks exact ties: earliest wins).

    Sorting by (cost, score) stably, a point survives iff its score is strictly below the running
    minimum of everything before it: a cheaper-or-equal point with lower-or-equal score dominates it.
    """
    order = np.lexsort((score, cost))
    return np.sort(order[_strict_running_min(score[order])])


def _strict_running_min(ordered: FloatArray) -> NDArray[np.bool_]:
    keep = np.empty(ordered.shape[0], dtype=bool)
    keep[0] = True
    np.less(ordered[1:], np.minimum.accumulate(ordered)[:-1], out=keep[1:])
    return keep


def _thin(cost: FloatArray, score: FloatArray, m: int) -> IntArray:
    """About ``m`` positions spread evenly along the front's arc length (axes scaled to unit range).

    Both end points are kept, so the least-cost and least-score assignments stay exact.
    """
    dc = np.diff(cost) / max(float(cost[-1] - cost[0]), np.finfo(float).tiny)
    ds = np.diff(score) / max(float(score[0] - score[-1]), np.finfo(float).tiny)
    arc = np.concatenate([[0.0], np.cumsum(np.hypot(dc, ds))])
    targets = np.linspace(0.0, arc[-1], m)
    picked = np.searchsorted(arc, targets, side="left").clip(0, cost.shape[0] - 1)
    picked[0], picked[-1] = 0, cost.shape[0] - 1
    return np.unique(picked)


def _infeasible(kind: str, budget: float, smallest: float, detail: str) -> BudgetError:
    return BudgetError(
        f"{kind} budget {budget!r} cannot be met: the smallest achievable total {kind} is {smallest!r}"
        f" ({detail}); use a {kind} budget of at least {smallest!r}"
    )


#: ``prune(layer, totals_cost, totals_score)`` -> mask of partial assignments worth keeping (or None).
_Prune = Callable[[int, FloatArray, FloatArray], NDArray[np.bool_] | None]


def _search(
    table: SearchTable, prune: _Prune | None, max_points: int | None = None
) -> tuple[FloatArray, FloatArray, IntArray, bool]:
    """Layer-by-layer frontier walk: the final front in cost order (possibly empty), and exactness.

    Each level combines the current front (``F`` points, sorted by cost) with the layer's
    non-dominated candidates into ``F*K`` points and keeps the strict Pareto ones. ``lexrank`` ranks
    the front's index tuples lexicographically; it is only consulted when two points tie exactly in
    cost, to apply the "earliest candidate" rule (a tie-free level needs a single unstable argsort).
    ``prune`` may drop partial assignments that cannot lead to the answer; a pruned node can only
    dominate nodes that are pruned too, so pruning never changes which survivors win.
    ``max_points`` (approximate mode) thins every level to about that many points (``_thin``).
    """
    n_layers = len(table.layers)
    cost: FloatArray = np.zeros(1)
    score: FloatArray = np.zeros(1)
    lexrank: IntArray = np.zeros(1, dtype=np.intp)
    parents: list[IntArray] = []
    picks: list[IntArray] = []
    exact = True
    for i in range(n_layers):
        cand = _nondominated(table.costs[i], table.scores[i])  # a dominated candidate never helps
        k, f = cand.shape[0], cost.shape[0]
        new_c = np.add.outer(table.costs[i][cand], cost).ravel()  # flat index = j * f + parent
        new_s = np.add.outer(table.scores[i][cand], score).ravel()
        pos: IntArray | None = None
        if prune is not None:
            ok = prune(i, new_c, new_s)
            if ok is not None and not ok.all():
                pos = np.flatnonzero(ok)
                new_c, new_s = new_c[pos], new_s[pos]
        if new_c.shape[0] == 0:
            empty = np.zeros(0)
            return empty, empty, np.zeros((0, n_layers), dtype=np.int32), exact
        order = np.argsort(new_c)
        by_cost = new_c[order]
        if np.any(by_cost[1:] == by_cost[:-1]):
            flat = np.arange(new_c.shape[0]) if pos is None else pos
            order = np.lexsort((lexrank[flat % f] * k + flat // f, new_s, new_c))
        sel = order[_strict_running_min(new_s[order])]
        if max_points is not None and sel.shape[0] > max_points:
            exact = False
            sel = sel[_thin(new_c[sel], new_s[sel], max_points)]
        flat = sel if pos is None else pos[sel]
        parent, j = flat % f, flat // f
        rank_order = np.argsort(lexrank[parent] * k + j)  # keys are distinct: any sort will do
        lexrank = np.empty(sel.shape[0], dtype=np.intp)
        lexrank[rank_order] = np.arange(sel.shape[0])
        parents.append(parent.astype(np.int32))  # int32 halves the memory of large fronts
        picks.append(cand[j].astype(np.int32))
        cost, score = new_c[sel], new_s[sel]
    choices = np.empty((cost.shape[0], n_layers), dtype=np.int32)
    node = np.arange(cost.shape[0])
    for i in range(n_layers - 1, -1, -1):
        choices[:, i] = picks[i][node]
        node = parents[i][node]
    return cost, score, choices, exact


def _suffix_min(values: Sequence[FloatArray]) -> list[float]:
    """``out[i]`` = smallest possible sum over layers after ``i``."""
    mins = [float(np.min(v)) for v in values]
    return [math.fsum(mins[i + 1 :]) for i in range(len(mins))]


def _budget_prune(table: SearchTable, cost_limit: float, score_limit: float) -> _Prune | None:
    """Drop partial assignments that exceed a limit even if every later layer takes its minimum."""
    if cost_limit == math.inf and score_limit == math.inf:
        return None
    rest_c, rest_s = _suffix_min(table.costs), _suffix_min(table.scores)

    def prune(i: int, cost: FloatArray, score: FloatArray) -> NDArray[np.bool_]:
        return (cost + rest_c[i] <= cost_limit) & (score + rest_s[i] <= score_limit)

    return prune


def _lower_hull(x: FloatArray, y: FloatArray) -> IntArray:
    """Candidate indices on the falling lower convex hull of (x, y), from least x to least y."""
    pts = _nondominated(x, y)
    pts = pts[np.argsort(x[pts], kind="stable")]
    # Positive rescaling keeps convexity and keeps the cross products below overflow.
    u = (x / max(float(np.max(np.abs(x))), np.finfo(float).tiny)).tolist()
    v = (y / max(float(np.max(np.abs(y))), np.finfo(float).tiny)).tolist()
    hull: list[int] = []
    for p in pts.tolist():
        while len(hull) >= 2:
            o, a = hull[-2], hull[-1]
            cross = (u[a] - u[o]) * (v[p] - v[o]) - (v[a] - v[o]) * (u[p] - u[o])
            if cross > 0:
                break
            hull.pop()
        hull.append(p)
    return np.asarray(hull, dtype=np.intp)


def _hull_bounds(
    con: Sequence[FloatArray], obj: Sequence[FloatArray], con_budget: float
) -> tuple[list[tuple[FloatArray, FloatArray]], list[int]]:
    """LP-relaxation bounds of the remaining layers, and a good feasible assignment.

    For every ``i``, the lower convex envelope of the achievable (Σcon, Σobj) over layers ``> i`` is
    the Minkowski sum of the per-layer hulls: start at every layer's least-``con`` vertex and take
    all hull edges in order of slope (breakpoints ``(xs, ys)``). Its value at a remaining budget is a
    lower bound on the remaining ``obj``. Walking the full envelope (all layers) until ``con_budget``
    ends on a breakpoint, which is a real assignment: the incumbent (returned as candidate indices).
    """
    n_layers = len(con)
    hulls = [_lower_hull(c, o) for c, o in zip(con, obj)]
    start_x = [float(c[h[0]]) for c, h in zip(con, hulls)]
    start_y = [float(o[h[0]]) for o, h in zip(obj, hulls)]
    dx = [np.diff(c[h]) for c, h in zip(con, hulls)]
    dy = [np.diff(o[h]) for o, h in zip(obj, hulls)]
    with np.errstate(over="ignore", divide="ignore"):  # a subnormal dx gives slope -inf: still in order
        slope = [b / a for a, b in zip(dx, dy)]  # dx > 0 on a falling hull

    def envelope(first: int) -> tuple[FloatArray, FloatArray, IntArray]:
        layers = range(first, n_layers)
        if first >= n_layers:
            return np.zeros(1), np.zeros(1), np.zeros(0, dtype=np.intp)
        order = np.argsort(np.concatenate([slope[j] for j in layers]), kind="stable")
        steps_x = np.cumsum(np.concatenate([dx[j] for j in layers])[order])
        steps_y = np.cumsum(np.concatenate([dy[j] for j in layers])[order])
        xs = math.fsum(start_x[first:]) + np.concatenate([[0.0], steps_x])
        ys = math.fsum(start_y[first:]) + np.concatenate([[0.0], steps_y])
        owner = np.concatenate([np.full(dx[j].shape[0], j, dtype=np.intp) for j in layers])[order]
        return xs, ys, owner

    bounds = []
    for i in range(n_layers):
        xs, ys, _ = envelope(i + 1)
        bounds.append((xs, ys))
    xs, _, owner = envelope(0)
    taken = int(np.searchsorted(xs, con_budget, side="right")) - 1  # edges walked within budget
    steps = np.bincount(owner[: max(taken, 0)], minlength=n_layers)
    incumbent = [int(h[min(int(s), h.shape[0] - 1)]) for h, s in zip(hulls, steps)]
    return bounds, incumbent


def pareto_front(table: TableLike, *, cost_budget: float | None = None, score_budget: float | None = None,
                 max_points: int | None = None) -> ParetoFront:
    """The exact cost/score Pareto front of all one-candidate-per-layer assignments.

    With ``cost_budget`` and/or ``score_budget`` only the points meeting them are kept (partial
    assignments that cannot meet them are pruned early, which is faster and exact). Raises
    :class:`BudgetError` naming the smallest feasible budget when none can be met. To answer a single
    budget question, :func:`minimise_score` / :func:`minimise_cost` on the table are faster still.

    ``max_points`` (default ``None``: exact) caps the front kept after every layer, thinning it evenly
    along its arc length (both axes scaled to unit range, end points kept). It bounds time and memory
    for plotting huge fronts (100 layers whose every candidate is Pareto-optimal give ~1e5 points);
    the points stay real assignments with exact totals, but the curve may lie above the true front
    (about 0.1% of the score range for 2000 points in ``benchmarks/pareto_speed.py``). Such a front
    is marked ``exact=False`` and refused by the selection functions.
    """
    tab = as_table(table)
    if max_points is not None and (
        isinstance(max_points, bool) or not isinstance(max_points, numbers.Integral) or max_points < 2
    ):
        raise ConfigError(f"max_points must be an integer >= 2 or None, got {max_points!r}")
    cost_limit = score_limit = math.inf
    cb = sb = None
    if cost_budget is not None:
        cb = _check_budget("cost_budget", cost_budget)
        tol = tab.cost_tolerance
        if tab.min_total_cost > cb + tol:
            raise _infeasible("cost", cb, tab.min_total_cost, "every layer at its cheapest candidate")
        cost_limit = cb + 2.0 * tol  # the extra slack absorbs rounding of the remainder bound
    if score_budget is not None:
        sb = _check_budget("score_budget", score_budget)
        tol = tab.score_tolerance
        if tab.min_total_score > sb + tol:
            raise _infeasible("score", sb, tab.min_total_score, "every layer at its lowest-score candidate")
        score_limit = sb + 2.0 * tol
    cost, score, choices, exact = _search(
        tab, _budget_prune(tab, cost_limit, score_limit), None if max_points is None else int(max_points)
    )
    keep = np.ones(cost.shape[0], dtype=bool)
    if cb is not None:
        keep &= cost <= cb + tab.cost_tolerance
    if sb is not None:
        keep &= score <= sb + tab.score_tolerance
    if not keep.any():
        # Each budget alone is feasible (checked above), so only the combination can fail here.
        cheapest = minimise_cost(tab, sb).cost if sb is not None else math.nan
        raise BudgetError(
            f"no assignment meets cost budget {cb!r} and score budget {sb!r} together: with total score"
            f" <= {sb!r} the smallest achievable total cost is {cheapest!r}; raise the cost budget to at"
            " least that or relax the score budget"
        )
    if not keep.all():
        cost, score, choices = cost[keep], score[keep], choices[keep]
    return ParetoFront(table=tab, cost=_readonly(cost), score=_readonly(score), choices=_readonly(choices),
                       cost_budget=cb, score_budget=sb, exact=exact)


def _pick(front: ParetoFront, objective: Objective, budget: float) -> Selection:
    """Best front point for the question; the front has strictly rising cost and falling score."""
    tab = front.table
    if not front.exact:
        raise ConfigError(
            "this front was thinned by max_points and may miss the optimum; pass the table itself to"
            " minimise_score/minimise_cost for an exact answer"
        )
    if objective == "min_score":
        kind, built, other, tol = "cost", front.cost_budget, front.score_budget, tab.cost_tolerance
        feasible = np.flatnonzero(front.cost <= budget + tol)
        smallest, detail = tab.min_total_cost, "every layer at its cheapest candidate"
    else:
        kind, built, other, tol = "score", front.score_budget, front.cost_budget, tab.score_tolerance
        feasible = np.flatnonzero(front.score <= budget + tol)
        smallest, detail = tab.min_total_score, "every layer at its lowest-score candidate"
    if built is not None and budget > built + tol:
        raise ConfigError(
            f"this front was built with {kind}_budget={built!r} and lacks the points needed for"
            f" {kind}_budget={budget!r}; build it without a budget or with a larger one"
        )
    if feasible.shape[0] == 0:
        if other is not None and smallest <= budget + tol:
            raise ConfigError(
                f"this front was built with a budget on the other objective ({other!r}) that excludes every"
                f" point within {kind}_budget={budget!r}; build it without that budget"
            )
        raise _infeasible(kind, budget, smallest, detail)
    j = int(feasible[-1] if objective == "min_score" else feasible[0])
    return front.point(j, objective=objective, budget=budget)


def _select(tab: SearchTable, objective: Objective, budget: float) -> Selection:
    """Branch-and-bound frontier walk for one budget question (same answer as the full front).

    On top of the budget pruning, a partial assignment is dropped when its objective plus the LP
    lower bound of the best completion exceeds a feasible incumbent (``_hull_bounds``): it can then
    not reach the optimum, nor tie it. Both slacks (``2 * tol``) only make pruning more conservative.
    """
    if objective == "min_score":
        con, obj, kind = tab.costs, tab.scores, "cost"
        tol_con, tol_obj, smallest = tab.cost_tolerance, tab.score_tolerance, tab.min_total_cost
        detail = "every layer at its cheapest candidate"
    else:
        con, obj, kind = tab.scores, tab.costs, "score"
        tol_con, tol_obj, smallest = tab.score_tolerance, tab.cost_tolerance, tab.min_total_score
        detail = "every layer at its lowest-score candidate"
    if smallest > budget + tol_con:
        raise _infeasible(kind, budget, smallest, detail)
    limit = budget + 2.0 * tol_con
    bounds, incumbent = _hull_bounds(con, obj, budget)
    if _left_sum(float(c[k]) for c, k in zip(con, incumbent)) > budget + tol_con:
        incumbent = [int(np.argmin(c)) for c in con]  # feasible: its total is `smallest`
    best = _left_sum(float(o[k]) for o, k in zip(obj, incumbent)) + tol_obj
    rest = _suffix_min(con)

    def prune(i: int, cost: FloatArray, score: FloatArray) -> NDArray[np.bool_]:
        x, y = (cost, score) if objective == "min_score" else (score, cost)
        xs, ys = bounds[i]
        return (x + rest[i] <= limit) & (y + np.interp(limit - x, xs, ys) <= best)

    cost, score, choices, _ = _search(tab, prune)
    front = ParetoFront(table=tab, cost=_readonly(cost), score=_readonly(score), choices=_readonly(choices))
    return _pick(front, objective, budget)


def minimise_score(source: ParetoFront | TableLike, cost_budget: float) -> Selection:
    """Least total score with total cost <= ``cost_budget`` (ties: lower cost, then earlier candidates).

    ``source`` is a table (searched directly, with exact pruning) or a front from
    :func:`pareto_front`. Raises :class:`BudgetError` naming the smallest feasible cost budget.
    """
    b = _check_budget("cost_budget", cost_budget)
    if isinstance(source, ParetoFront):
        return _pick(source, "min_score", b)
    return _select(as_table(source), "min_score", b)


def minimise_cost(source: ParetoFront | TableLike, score_budget: float) -> Selection:
    """Least total cost with total score <= ``score_budget`` (ties: lower score, then earlier candidates).

    ``source`` is a table (searched directly, with exact pruning) or a front from
    :func:`pareto_front`. Raises :class:`BudgetError` naming the smallest feasible score budget.
    """
    b = _check_budget("score_budget", score_budget)
    if isinstance(source, ParetoFront):
        return _pick(source, "min_cost", b)
    return _select(as_table(source), "min_cost", b)

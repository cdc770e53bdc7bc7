"""Pareto-frontier search (method.md §6): exactness against brute force, ties, budgets, validation."""
from __future__ import annotations

import ast
import itertools
import json
import math
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import adacal.search.pareto as pareto_module
from adacal.errors import BudgetError, ConfigError
from adacal.search import (
    BUDGET_RTOL,
    ParetoFront,
    SearchTable,
    Selection,
    minimise_cost,
    minimise_score,
    pareto_front,
)

FAST = settings(max_examples=60, deadline=None)
Point = tuple[float, float, tuple[int, ...]]  # (total cost, total score, candidate index per layer)

# --------------------------------------------------------------------------------------------------
# Reference implementation: enumerate every assignment (itertools.product yields index tuples in
# lexicographic order, which is the documented tie-break order) and sum left to right like the search.


def brute_points(table: SearchTable) -> list[Point]:
    points = []
    for idx in itertools.product(*(range(len(v)) for v in table.values)):
        cost = sum(float(c[k]) for c, k in zip(table.costs, idx))
        score = sum(float(s[k]) for s, k in zip(table.scores, idx))
        points.append((cost, score, idx))
    return points


def brute_front(table: SearchTable) -> list[Point]:
    ordered = sorted(brute_points(table), key=lambda p: (p[0], p[1]))  # stable: lexicographic ties
    front, best = [], math.inf
    for point in ordered:
        if point[1] < best:
            front.append(point)
            best = point[1]
    return front


def brute_min_score(table: SearchTable, budget: float) -> Point | None:
    ok = [p for p in brute_points(table) if p[0] <= budget + table.cost_tolerance]
    return min(ok, key=lambda p: (p[1], p[0], p[2])) if ok else None


def brute_min_cost(table: SearchTable, budget: float) -> Point | None:
    ok = [p for p in brute_points(table) if p[1] <= budget + table.score_tolerance]
    return min(ok, key=lambda p: (p[0], p[1], p[2])) if ok else None


# --------------------------------------------------------------------------------------------------
# Strategies: small tables, integer-valued (many exact ties) or arbitrary floats, with layer names
# and candidate values that differ from positions so that keying by index would be caught.

integer_values = st.integers(-3, 6).map(float)
float_values = st.floats(-10.0, 10.0, allow_nan=False, allow_infinity=False)


@st.composite
def tables(draw: st.DrawFn, max_layers: int = 6, max_candidates: int = 4) -> SearchTable:
    n_layers = draw(st.integers(1, max_layers))
    numbers = draw(st.sampled_from([integer_values, float_values]))
    names = draw(st.permutations([f"layer{i}" for i in range(n_layers)]))
    values, costs, scores = [], [], []
    for _ in range(n_layers):
        k = draw(st.integers(1, max_candidates))
        values.append(tuple(draw(st.lists(st.integers(1, 20), min_size=k, max_size=k, unique=True))))
        costs.append(draw(st.lists(numbers, min_size=k, max_size=k)))
        scores.append(draw(st.lists(numbers, min_size=k, max_size=k)))
    return SearchTable(tuple(names), tuple(values), tuple(costs), tuple(scores))


def budget_for(draw: st.DrawFn, totals: list[float]) -> float:
    """A budget that is often exactly an achievable total (the boundary case), sometimes anything."""
    lo, hi = min(totals), max(totals)
    return draw(st.one_of(st.sampled_from(totals), st.floats(lo - 2.0, hi + 2.0)))


def exact_sums(table: SearchTable) -> bool:
    """Integer values add without rounding, so the tie rule (earliest candidates) is exactly checkable.

    With rounding, two assignments can reach bit-equal totals although one was strictly dominated
    at an earlier layer (``1e-62 + 1.0 == 0.0 + 1.0``); the search then returns the surviving one.
    Totals still match brute force exactly, which is what is checked for such tables.
    """
    return all(np.all(v == np.round(v)) for v in (*table.costs, *table.scores))


def assert_same_point(table: SearchTable, sel: Selection, expected: Point) -> None:
    assert (sel.cost, sel.score) == expected[:2]
    assert table.evaluate(sel.choices) == (sel.cost, sel.score)
    if exact_sums(table):
        assert sel.indices == expected[2]


# --------------------------------------------------------------------------------------------------
# Exactness


@FAST
@given(tables())
def test_front_equals_brute_force(table: SearchTable) -> None:
    front = pareto_front(table)
    expected = brute_front(table)
    assert front.cost.tolist() == [p[0] for p in expected]
    assert front.score.tolist() == [p[1] for p in expected]
    if exact_sums(table):
        assert [tuple(ch) for ch in front.choices.tolist()] == [p[2] for p in expected]


@FAST
@given(tables())
def test_front_is_strictly_monotone_and_points_are_real(table: SearchTable) -> None:
    front = pareto_front(table)
    assert len(front) >= 1
    assert np.all(np.diff(front.cost) > 0)
    assert np.all(np.diff(front.score) < 0)
    for j in range(len(front)):
        point = front.point(j)
        assert list(point.choices) == list(table.layers)
        assert table.evaluate(point.choices) == (point.cost, point.score)


@FAST
@given(st.data())
def test_minimise_score_equals_brute_force(data: st.DataObject) -> None:
    table = data.draw(tables())
    budget = budget_for(data.draw, [p[0] for p in brute_points(table)])
    expected = brute_min_score(table, budget)
    if expected is None:
        with pytest.raises(BudgetError, match=re.escape(repr(table.min_total_cost))):
            minimise_score(table, budget)
        with pytest.raises(BudgetError, match="cannot be met"):
            minimise_score(pareto_front(table), budget)
        return
    direct = minimise_score(table, budget)  # branch and bound on the table
    via_front = minimise_score(pareto_front(table), budget)
    assert_same_point(table, direct, expected)
    assert_same_point(table, via_front, expected)
    assert direct == via_front
    assert direct.objective == "min_score" and direct.budget == budget


@FAST
@given(st.data())
def test_minimise_cost_equals_brute_force(data: st.DataObject) -> None:
    table = data.draw(tables())
    budget = budget_for(data.draw, [p[1] for p in brute_points(table)])
    expected = brute_min_cost(table, budget)
    if expected is None:
        with pytest.raises(BudgetError, match=re.escape(repr(table.min_total_score))):
            minimise_cost(table, budget)
        return
    direct = minimise_cost(table, budget)
    via_front = minimise_cost(pareto_front(table), budget)
    assert_same_point(table, direct, expected)
    assert_same_point(table, via_front, expected)
    assert direct == via_front
    assert direct.objective == "min_cost"


@FAST
@given(st.data())
def test_budget_pruned_front_is_the_front_within_budget(data: st.DataObject) -> None:
    table = data.draw(tables())
    full = pareto_front(table)
    cost_budget = data.draw(st.sampled_from(sorted(full.cost.tolist())))
    score_budget = data.draw(st.sampled_from(sorted(full.score.tolist())))
    cost_ok = full.cost <= cost_budget + table.cost_tolerance
    score_ok = full.score <= score_budget + table.score_tolerance
    for kwargs, keep in (
        ({"cost_budget": cost_budget}, cost_ok),
        ({"score_budget": score_budget}, score_ok),
        ({"cost_budget": cost_budget, "score_budget": score_budget}, cost_ok & score_ok),
    ):
        if not keep.any():
            with pytest.raises(BudgetError, match="together"):
                pareto_front(table, **kwargs)
            continue
        pruned = pareto_front(table, **kwargs)
        np.testing.assert_array_equal(pruned.cost, full.cost[keep])
        np.testing.assert_array_equal(pruned.score, full.score[keep])
        np.testing.assert_array_equal(pruned.choices, full.choices[keep])
    assert minimise_score(pareto_front(table, cost_budget=cost_budget), cost_budget) == minimise_score(
        full, cost_budget
    )


@FAST
@given(st.data())
def test_larger_budget_never_worse(data: st.DataObject) -> None:
    table = data.draw(tables())
    front = pareto_front(table)
    lo = float(front.cost[0])
    b1, b2 = sorted(data.draw(st.lists(st.floats(lo, lo + 30.0), min_size=2, max_size=2)))
    assert minimise_score(table, b2).score <= minimise_score(table, b1).score
    lo = float(front.score[-1])
    b1, b2 = sorted(data.draw(st.lists(st.floats(lo, lo + 30.0), min_size=2, max_size=2)))
    assert minimise_cost(table, b2).cost <= minimise_cost(table, b1).cost


def anticorrelated(rng: np.random.Generator, n_layers: int, k: int) -> SearchTable:
    """The realistic shape: cost rises and score falls with the setting (every candidate Pareto)."""
    costs = np.cumsum(rng.random((n_layers, k)) + 0.01, axis=1)
    scores = np.cumsum(rng.random((n_layers, k))[:, ::-1] + 0.01, axis=1)[:, ::-1] / np.arange(1, k + 1)
    return SearchTable.from_arrays(costs, scores, layers=[f"conv{i}" for i in range(n_layers)],
                                   values=list(range(1, k + 1)))


@settings(max_examples=5, deadline=None)
@given(st.integers(0, 2**32 - 1))
def test_branch_and_bound_matches_front_on_larger_tables(seed: int) -> None:
    """Too big for brute force: the pruned single-budget search must agree with the full front."""
    table = anticorrelated(np.random.default_rng(seed), 25, 6)
    front = pareto_front(table)
    for q in (0.0, 0.05, 0.3, 0.5, 0.9, 1.0):
        budget = float(np.quantile(front.cost, q))
        assert minimise_score(table, budget) == minimise_score(front, budget)
        budget = float(np.quantile(front.score, q))
        assert minimise_cost(table, budget) == minimise_cost(front, budget)


# --------------------------------------------------------------------------------------------------
# Layer order (regression: the research code returned the traced-back choices reversed)


def test_choices_are_keyed_by_layer_in_layer_order() -> None:
    table = {
        "stem": {1: (1.0, 9.0), 2: (2.0, 4.0), 3: (3.0, 0.5)},  # worth its energy
        "mid": {1: (1.0, 0.2), 2: (2.0, 0.1), 3: (3.0, 0.0)},  # insensitive: keep it cheap
        "head": {1: (1.0, 5.0), 2: (2.0, 1.0), 3: (3.0, 0.8)},
    }
    sel = minimise_score(table, 3.0 + 1.0 + 2.0)
    assert list(sel.choices.items()) == [("stem", 3), ("mid", 1), ("head", 2)]
    assert sel.indices == (2, 0, 1)
    assert (sel.cost, sel.score) == (6.0, 0.5 + 0.2 + 1.0)
    reordered = {name: table[name] for name in ("head", "stem", "mid")}
    again = minimise_score(reordered, 6.0)
    assert list(again.choices) == ["head", "stem", "mid"]
    assert dict(again.choices) == dict(sel.choices)


@settings(max_examples=25, deadline=None)
@given(seed=st.integers(0, 2**32 - 1), data=st.data())
def test_permuting_layers_gives_same_choice_per_layer(seed: int, data: st.DataObject) -> None:
    rng = np.random.default_rng(seed)
    n_layers = data.draw(st.integers(2, 12))
    names = [f"l{i}" for i in range(n_layers)]
    raw = {
        name: {v: (float(rng.random()), float(rng.random())) for v in range(1, int(rng.integers(2, 6)) + 1)}
        for name in names
    }
    order = data.draw(st.permutations(names))
    permuted = {name: raw[name] for name in order}
    table = SearchTable.from_mapping(raw)
    cost_budget = table.evaluate({n: 1 + (i % 2) for i, n in enumerate(names)})[0]
    score_budget = table.evaluate(1)[1]
    for solve, budget in ((minimise_score, cost_budget), (minimise_cost, score_budget)):
        a, b = solve(raw, budget), solve(permuted, budget)
        assert dict(a.choices) == dict(b.choices)
        assert list(b.choices) == order
        assert math.isclose(a.cost, b.cost) and math.isclose(a.score, b.score)


# --------------------------------------------------------------------------------------------------
# Ties and floating point


def test_ties_prefer_earlier_candidates() -> None:
    # (a=1, b=2) and (a=2, b=1) both reach cost 1, score 1; the first is lexicographically earlier.
    table = {"a": {1: (0.0, 1.0), 2: (1.0, 0.0)}, "b": {1: (0.0, 1.0), 2: (1.0, 0.0)}}
    assert dict(minimise_score(table, 1.0).choices) == {"a": 1, "b": 2}
    assert dict(minimise_cost(table, 1.0).choices) == {"a": 1, "b": 2}
    duplicate = {"x": {"p": (1.0, 1.0), "q": (1.0, 1.0)}}
    assert minimise_score(duplicate, 5.0).choices["x"] == "p"


def test_ties_prefer_lower_cost_then_lower_score() -> None:
    table = {"a": {1: (0.0, 1.0), 2: (5.0, 1.0)}, "b": {1: (0.0, 3.0), 2: (0.0, 2.0)}}
    sel = minimise_score(table, 10.0)
    assert dict(sel.choices) == {"a": 1, "b": 2} and sel.cost == 0.0
    sel = minimise_cost(table, 10.0)
    assert dict(sel.choices) == {"a": 1, "b": 2} and sel.score == 3.0


def test_budget_from_other_summation_order_is_feasible() -> None:
    rng = np.random.default_rng(0)
    costs = rng.random((100, 8)) * 10.0 ** rng.uniform(-3, 3, size=(100, 1))
    scores = rng.random((100, 8))
    table = SearchTable.from_arrays(costs, scores, values=list(range(1, 9)))
    target = 4
    target_cost, target_score = table.evaluate(target)
    for budget in (float(np.sum(costs[:, 3])), math.fsum(costs[::-1, 3]), float(np.sort(costs[:, 3]).sum())):
        assert abs(budget - target_cost) <= 100 * np.finfo(float).eps * target_cost
        sel = minimise_score(table, budget)
        assert sel.score <= target_score
        assert sel.cost <= budget + table.cost_tolerance
    # A budget exactly at the cheapest total, computed in another order, is feasible as well.
    assert minimise_score(table, float(np.sum(costs.min(axis=1)[::-1]))).cost <= table.min_total_cost
    assert table.cost_tolerance == pytest.approx(BUDGET_RTOL * float(np.abs(costs).max(axis=1).sum()))


def test_infinite_budget_gives_the_extreme_points() -> None:
    table = anticorrelated(np.random.default_rng(1), 6, 4)
    assert minimise_score(table, math.inf).score == table.min_total_score
    assert minimise_cost(table, math.inf).cost == table.min_total_cost


# --------------------------------------------------------------------------------------------------
# Infeasible budgets


def test_infeasible_cost_budget_names_smallest_feasible() -> None:
    table = {"a": {1: (2.0, 1.0), 2: (3.0, 0.0)}, "b": {1: (1.5, 1.0), 2: (4.0, 0.0)}}
    with pytest.raises(BudgetError, match=r"smallest achievable total cost is 3\.5.*at least 3\.5"):
        minimise_score(table, 3.4)
    with pytest.raises(BudgetError, match=r"at least 3\.5"):
        pareto_front(table, cost_budget=3.4)
    with pytest.raises(BudgetError, match=r"at least 3\.5"):
        minimise_score(pareto_front(table), 3.4)
    with pytest.raises(BudgetError, match=r"at least 3\.5"):
        minimise_score(table, -math.inf)
    assert minimise_score(table, 3.5).cost == 3.5


def test_infeasible_score_budget_names_smallest_feasible() -> None:
    table = {"a": {1: (2.0, 1.0), 2: (3.0, 0.25)}, "b": {1: (1.5, 1.0), 2: (4.0, 0.5)}}
    with pytest.raises(BudgetError, match=r"smallest achievable total score is 0\.75.*at least 0\.75"):
        minimise_cost(table, 0.5)
    with pytest.raises(BudgetError, match=r"at least 0\.75"):
        pareto_front(table, score_budget=0.7)
    assert minimise_cost(table, 0.75).score == 0.75


def test_jointly_infeasible_budgets() -> None:
    table = {"a": {1: (0.0, 1.0), 2: (1.0, 0.0)}}
    with pytest.raises(BudgetError, match=r"together.*smallest achievable total cost is 1\.0"):
        pareto_front(table, cost_budget=0.5, score_budget=0.5)


# --------------------------------------------------------------------------------------------------
# Input validation


@pytest.mark.parametrize(
    ("make", "match"),
    [
        (lambda: SearchTable.from_mapping({}), "at least one layer"),
        (lambda: SearchTable.from_mapping({"a": {}}), "layer 'a' has no candidates"),
        (lambda: SearchTable.from_mapping({"a": {1: (math.nan, 0.0)}}), r"layer 'a': costs must be finite"),
        (lambda: SearchTable.from_mapping({"a": {1: (0.0, math.inf)}}), r"layer 'a': scores must be finite"),
        (lambda: SearchTable.from_mapping({"a": {1: (0.0, "x")}}), "must be real numbers"),
        (lambda: SearchTable.from_mapping({"a": {1: (0.0,)}}), r"expected a \(cost, score\) pair"),
        (lambda: SearchTable.from_mapping({"a": [(0.0, 1.0)]}), "expected a mapping value"),
        (lambda: SearchTable.from_mapping([("a", 1)]), "expected a mapping layer"),
        (lambda: SearchTable.from_mapping({3: {1: (0.0, 1.0)}}), "layer names must be str"),
        (lambda: SearchTable.from_arrays([[1.0, 2.0]], [[1.0]]), r"2 candidate values but 2 costs and 1 sc"),
        (lambda: SearchTable.from_arrays([[1.0], [2.0]], [[1.0]]), "costs has 2 layers but scores has 1"),
        (lambda: SearchTable.from_arrays([[1.0, 2.0]], [[1.0, 2.0]], values=[1]), "shared candidate values"),
        (lambda: SearchTable.from_arrays([[1.0]], [[1.0]], layers=["a", "b"]), "values has 1 entries for 2"),
        (lambda: SearchTable.from_arrays(3.0, [[1.0]]), "must be sequences"),
        (lambda: SearchTable(("a", "a"), ((1,), (1,)), ([0.0], [0.0]), ([0.0], [0.0])), "duplicate layer"),
        (lambda: SearchTable(("a",), ((1, 1),), ([0.0, 1.0],), ([0.0, 1.0],)), "must be distinct"),
        (lambda: SearchTable(("a",), (([1], [2]),), ([0.0, 1.0],), ([0.0, 1.0],)), "must be hashable"),
        (lambda: SearchTable(("a",), ((1,),), ([[0.0]],), ([0.0],)), "must be a flat sequence"),
    ],
)
def test_invalid_tables_raise_config_error(make, match: str) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ConfigError, match=match):
        make()


TABLE = {"a": {1: (1.0, 2.0), 2: (2.0, 1.0)}, "b": {1: (1.0, 2.0), 2: (2.0, 1.0)}}


@pytest.mark.parametrize("bad", [math.nan, "3", None, True, [1.0]])
def test_invalid_budgets_raise_config_error(bad: object) -> None:
    with pytest.raises(ConfigError, match="cost_budget must"):
        minimise_score(TABLE, bad)  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="score_budget must"):
        minimise_cost(TABLE, bad)  # type: ignore[arg-type]
    if bad is not None:
        with pytest.raises(ConfigError, match="cost_budget must"):
            pareto_front(TABLE, cost_budget=bad)  # type: ignore[arg-type]


def test_front_reuse_is_checked() -> None:
    front = pareto_front(TABLE, cost_budget=3.0)
    with pytest.raises(ConfigError, match="built with cost_budget=3.0"):
        minimise_score(front, 4.0)
    assert minimise_score(front, 3.0).cost == 3.0
    with pytest.raises(ConfigError, match="budget on the other objective"):
        minimise_cost(front, 2.0)  # only (4, 2) meets score 2, but the front stops at cost 3
    with pytest.raises(ConfigError, match=r"max_points must be an integer >= 2"):
        pareto_front(TABLE, max_points=1)
    with pytest.raises(ConfigError, match="out of range"):
        front.point(len(front))


def test_evaluate_validates_choices() -> None:
    table = SearchTable.from_mapping(TABLE)
    assert table.evaluate({"b": 2, "a": 1}) == (3.0, 3.0)
    assert table.evaluate(2) == (4.0, 2.0)
    with pytest.raises(ConfigError, match=r"missing \['b'\]"):
        table.evaluate({"a": 1})
    with pytest.raises(ConfigError, match="layer 'a' has no candidate 7"):
        table.evaluate(7)
    with pytest.raises(ConfigError, match="unknown layer 'z'"):
        table.index("z", 1)


# --------------------------------------------------------------------------------------------------
# Approximate mode, results as data, purity


def test_max_points_is_an_opt_in_approximation() -> None:
    table = anticorrelated(np.random.default_rng(2), 30, 8)
    exact = pareto_front(table)
    assert exact.exact and len(exact) > 200
    thin = pareto_front(table, max_points=50)
    assert not thin.exact and 2 <= len(thin) <= 50
    assert thin.cost[0] == exact.cost[0] and thin.score[0] == exact.score[0]
    assert thin.cost[-1] == exact.cost[-1] and thin.score[-1] == exact.score[-1]
    for j in range(len(thin)):
        assert table.evaluate(thin.point(j).choices) == (thin.cost[j], thin.score[j])
    with pytest.raises(ConfigError, match="thinned by max_points"):
        minimise_score(thin, float(exact.cost[-1]))
    assert pareto_front(table, max_points=10**6).exact


def test_results_are_immutable_data() -> None:
    front = pareto_front(TABLE)
    assert isinstance(front, ParetoFront)
    with pytest.raises(ValueError, match="read-only"):
        front.cost[0] = 0.0
    sel = minimise_score(TABLE, 3.0)
    with pytest.raises(TypeError):
        sel.choices["a"] = 2  # type: ignore[index]
    assert pickle.loads(pickle.dumps(sel)) == sel
    assert hash(sel.choices) == hash(pickle.loads(pickle.dumps(sel)).choices)
    assert sel.choices == {"a": 1, "b": 2}
    as_json = json.loads(json.dumps(sel.to_dict()))
    assert as_json == {"choices": {"a": 1, "b": 2}, "indices": [0, 1], "cost": 3.0, "score": 3.0,
                       "objective": "min_score", "budget": 3.0}
    numpy_values = SearchTable.from_arrays([[1.0, 2.0]], [[2.0, 1.0]], values=np.array([4, 8]))
    assert type(minimise_cost(numpy_values, 5.0).choices["0"]) is int


def test_search_module_imports_no_torch() -> None:
    tree = ast.parse(Path(pareto_module.__file__).read_text())
    imported = {a.name.split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names}
    imported |= {(n.module or "").split(".")[0] for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert "torch" not in imported

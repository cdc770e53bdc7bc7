"""Per-layer setting search under a budget (method.md §6); pure numpy, imports no torch."""
from __future__ import annotations

from adacal.search.pareto import (
    BUDGET_RTOL,
    ParetoFront,
    SearchTable,
    Selection,
    TableLike,
    as_table,
    minimise_cost,
    minimise_score,
    pareto_front,
)

__all__ = ["BUDGET_RTOL", "ParetoFront", "SearchTable", "Selection", "TableLike", "as_table", "minimise_cost",
           "minimise_score", "pareto_front"]

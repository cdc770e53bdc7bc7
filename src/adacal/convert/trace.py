"""torch.fx tracing with errors that name the failing op instead of a deep stack trace."""
from __future__ import annotations

import traceback
from collections.abc import Iterable

from torch import fx, nn

from adacal.errors import TraceError

__all__ = ["trace"]


class _Tracer(fx.Tracer):
    """Standard leaf policy plus user-declared opaque modules (kept whole, never looked into)."""

    def __init__(self, leaf_types: tuple[type, ...] = (), leaf_names: frozenset[str] = frozenset()) -> None:
        super().__init__()
        self._leaf_types = leaf_types
        self._leaf_names = leaf_names

    def is_leaf_module(self, m: nn.Module, qualname: str) -> bool:
        if qualname in self._leaf_names or (self._leaf_types and isinstance(m, self._leaf_types)):
            return True
        return super().is_leaf_module(m, qualname)


def _user_frame(exc: BaseException) -> str:
    """The innermost frame outside torch: the user's line that fx could not trace."""
    frames = traceback.extract_tb(exc.__traceback__)
    for fr in reversed(frames):
        if "/torch/" not in fr.filename.replace("\\", "/") and "adacal/convert" not in fr.filename:
            return f"{fr.filename}:{fr.lineno} in {fr.name}: {(fr.line or '').strip()}"
    return "unknown location"


def trace(model: nn.Module, *, leaf_types: Iterable[type] = (), leaf_names: Iterable[str] = ()) -> fx.GraphModule:
    """Symbolically trace ``model`` (not modified) into a GraphModule.

    Raises TraceError naming the op (file, line and source) that broke tracing — typically
    data-dependent control flow — and how to work around it (declare the submodule a leaf).
    """
    tracer = _Tracer(tuple(leaf_types), frozenset(leaf_names))
    try:
        graph = tracer.trace(model)
    except Exception as exc:  # fx raises many types; all mean "cannot trace"
        raise TraceError(
            f"torch.fx could not trace {type(model).__name__}: {type(exc).__name__}: {exc} "
            f"(failing op at {_user_frame(exc)}). Remove data-dependent control flow there, or pass "
            "the enclosing submodule's name in leaf_names=[...] so it is kept whole (it must then "
            "contain no activation to convert)."
        ) from exc
    name = type(model).__name__
    return fx.GraphModule(tracer.root, graph, name)


def qualname(node: fx.Node) -> str:
    """A readable identifier for a node: module path for modules, node name otherwise."""
    if node.op == "call_module":
        return str(node.target)
    return node.name


def describe_target(gm: fx.GraphModule, node: fx.Node) -> str:
    """The node's type: module class, function or method name."""
    if node.op == "call_module":
        return type(gm.get_submodule(str(node.target))).__name__
    if node.op == "call_function":
        t = node.target
        mod = getattr(t, "__module__", None) or ""
        return f"{mod}.{getattr(t, '__name__', str(t))}".lstrip(".")
    if node.op == "call_method":
        return f"Tensor.{node.target}"
    return node.op


def rebuild(gm: fx.GraphModule) -> None:
    """After a graph rewrite: check the graph, drop submodules no node uses any more, regenerate the code."""
    gm.graph.lint()
    gm.delete_all_unused_submodules()
    gm.recompile()

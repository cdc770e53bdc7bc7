"""Recognise ReLU-family activations in an fx graph (modules, functions and tensor methods)."""
from __future__ import annotations

import numbers
from collections.abc import Callable, Iterable
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from adacal.convert.ops import node_arg

__all__ = ["activation_clip", "declared_activation", "NOT_AN_ACTIVATION"]

NOT_AN_ACTIVATION = object()
_RELU_FUNCS: set[Any] = {F.relu, torch.relu, torch.relu_, F.relu_}
_RELU_METHODS = {"relu", "relu_"}
_CLAMP_FUNCS: set[Any] = {torch.clamp, torch.clip, torch.clamp_min}
_CLAMP_METHODS = {"clamp", "clamp_", "clip", "clip_", "clamp_min", "clamp_min_"}


def _clamp_clip(lo: Any, hi: Any) -> Any:
    """``clamp(x, 0, a)`` is a ReLU clipped at ``a`` (``a`` None: plain ReLU)."""
    if not isinstance(lo, numbers.Number) or isinstance(lo, bool) or lo != 0:
        return NOT_AN_ACTIVATION
    if hi is None:
        return None
    if isinstance(hi, numbers.Number) and not isinstance(hi, bool) and hi > 0:
        return float(hi)
    return NOT_AN_ACTIVATION


def activation_clip(gm: fx.GraphModule, node: fx.Node, extra: Iterable[type | Callable[..., Any]] = ()) -> Any:
    """``None`` for a plain ReLU, the clip value for a clipped one, or ``NOT_AN_ACTIVATION``."""
    extra = tuple(extra)
    if node.op == "call_module":
        mod = gm.get_submodule(str(node.target))
        if isinstance(mod, nn.ReLU6):
            return 6.0
        if isinstance(mod, nn.ReLU):
            return None
        if isinstance(mod, nn.Hardtanh):
            return _clamp_clip(mod.min_val, mod.max_val)
        ext_types = tuple(e for e in extra if isinstance(e, type))
        if ext_types and isinstance(mod, ext_types):
            return None
        return NOT_AN_ACTIVATION
    if node.op == "call_function":
        t = node.target
        if t in _RELU_FUNCS:
            return None
        if t is F.relu6:
            return 6.0
        if t in (F.hardtanh, F.hardtanh_):
            return _clamp_clip(node_arg(node, 1, "min_val", -1.0), node_arg(node, 2, "max_val", 1.0))
        if t is torch.clamp_min:
            return _clamp_clip(node_arg(node, 1, "min", None), None)
        if t in _CLAMP_FUNCS:
            return _clamp_clip(node_arg(node, 1, "min", None), node_arg(node, 2, "max", None))
        if any(t is e for e in extra if not isinstance(e, type)):
            return None
        return NOT_AN_ACTIVATION
    if node.op == "call_method":
        if node.target in _RELU_METHODS:
            return None
        if node.target in ("clamp_min", "clamp_min_"):
            return _clamp_clip(node_arg(node, 1, "min", None), None)
        if node.target in _CLAMP_METHODS:
            return _clamp_clip(node_arg(node, 1, "min", None), node_arg(node, 2, "max", None))
    return NOT_AN_ACTIVATION


def declared_activation(
    gm: fx.GraphModule, node: fx.Node, extra: Iterable[type | Callable[..., Any]] = ()
) -> Callable[..., Any] | None:
    """The original activation of a node matched only through ``extra`` (None for ReLU-family ops).

    A module is returned as is; a function is bound to the node's other (constant) arguments.
    """
    extra = tuple(extra)
    if not extra or activation_clip(gm, node) is not NOT_AN_ACTIVATION:
        return None  # a genuine ReLU-family op, or nothing declared
    if node.op == "call_module":
        mod = gm.get_submodule(str(node.target))
        types = tuple(e for e in extra if isinstance(e, type))
        return mod if types and isinstance(mod, types) else None
    if node.op == "call_function" and any(node.target is e for e in extra if not isinstance(e, type)):
        consts: list[Any] = []
        fx.node.map_aggregate((node.args[1:], node.kwargs), consts.append)
        if any(isinstance(c, fx.Node) for c in consts):
            return None  # computed arguments cannot be bound: ANN mode falls back to ReLU
        return _Bound(node.target, tuple(node.args[1:]), dict(node.kwargs))
    return None


class _Bound:
    """``fn(x, *args, **kwargs)``: a declared activation function with its constant arguments."""

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        self.fn, self.args, self.kwargs = fn, args, kwargs

    def __call__(self, x: Any) -> Any:
        return self.fn(x, *self.args, **self.kwargs)

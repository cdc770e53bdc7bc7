"""Model inputs and outputs that are one tensor, a tuple of tensors or a dict of tensors.

A converted network may take several inputs (a part-segmentation PointNet takes points and a
category vector) and return several outputs (a detector returns one tensor per pyramid level).
Everything that batches, slices, repeats over time or moves such values goes through these
helpers, so the engine treats a tuple of tensors exactly like one tensor.

Conventions: a tuple or list is the model's positional arguments, a dict its keyword arguments;
every tensor leaf shares the batch dimension (dim 0, or dim 1 for ``[T, B, ...]`` sequences).
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from adacal.errors import DataError, ShapeError

__all__ = ["batch_size", "call", "cat", "describe", "index_select", "leaves", "map_tensors", "narrow",
           "repeat_over_time", "split", "validate"]

Inputs = Any  # Tensor | tuple[Tensor, ...] | list[Tensor] | dict[str, Tensor] (nested allowed)


def map_tensors(fn: Callable[[Tensor], Any], value: Any) -> Any:
    """Apply ``fn`` to every tensor leaf of tuples, lists, named tuples and dicts."""
    if isinstance(value, Tensor):
        return fn(value)
    if isinstance(value, dict):
        return {k: map_tensors(fn, v) for k, v in value.items()}
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return type(value)(*(map_tensors(fn, v) for v in value))
    if isinstance(value, (tuple, list)):
        return type(value)(map_tensors(fn, v) for v in value)
    return value


def leaves(value: Any) -> list[Tensor]:
    """The tensor leaves in a fixed order (dict keys in insertion order)."""
    out: list[Tensor] = []
    map_tensors(out.append, value)
    return out


def describe(value: Any) -> str:
    """``(8, 3, 32, 32)`` or ``((8, 3, 1024), (8, 16))``: shapes for error messages."""
    if isinstance(value, Tensor):
        return str(tuple(value.shape))
    if isinstance(value, dict):
        return "{" + ", ".join(f"{k}: {describe(v)}" for k, v in value.items()) + "}"
    if isinstance(value, (tuple, list)):
        return "(" + ", ".join(describe(v) for v in value) + ")"
    return type(value).__name__


def batch_size(value: Any, dim: int = 0) -> int:
    """The common size of every leaf along ``dim``; :class:`ShapeError` if they disagree."""
    sizes = {t.shape[dim] for t in leaves(value) if t.dim() > dim}
    if not sizes:
        raise DataError(f"input {describe(value)} has no tensor with a batch dimension {dim}")
    if len(sizes) > 1:
        raise ShapeError(f"the input tensors {describe(value)} disagree on the batch size (dim {dim})")
    return sizes.pop()


def call(module: nn.Module | Callable[..., Any], value: Any) -> Any:
    """``module(value)`` for a tensor, ``module(*value)`` for a tuple/list, ``module(**value)`` for a dict."""
    if isinstance(value, dict):
        return module(**value)
    if isinstance(value, (tuple, list)) and not hasattr(value, "_fields"):
        return module(*value)
    return module(value)


def narrow(value: Any, start: int, length: int, dim: int = 0) -> Any:
    return map_tensors(lambda t: t.narrow(dim, start, length), value)


def index_select(value: Any, index: Tensor, dim: int = 0) -> Any:
    return map_tensors(lambda t: t.index_select(dim, index.to(t.device)), value)


def split(value: Any, size: int, dim: int = 0) -> list[Any]:
    """Pieces of at most ``size`` along ``dim`` (the last may be smaller)."""
    n = batch_size(value, dim)
    return [narrow(value, s, min(size, n - s), dim) for s in range(0, n, size)]


def cat(parts: Sequence[Any], dim: int = 0) -> Any:
    """Concatenate same-structured values leaf by leaf."""
    if len(parts) == 1:
        return parts[0]
    first = parts[0]
    if isinstance(first, Tensor):
        return torch.cat(list(parts), dim=dim)
    if isinstance(first, dict):
        return {k: cat([p[k] for p in parts], dim) for k in first}
    if isinstance(first, tuple) and hasattr(first, "_fields"):
        return type(first)(*(cat([p[i] for p in parts], dim) for i in range(len(first))))
    if isinstance(first, (tuple, list)):
        return type(first)(cat([p[i] for p in parts], dim) for i in range(len(first)))
    return first


def repeat_over_time(value: Any, steps: int) -> Any:
    """``[B, ...]`` → ``[steps·B, ...]``: the same input at every one of ``steps`` stacked steps."""
    return map_tensors(lambda t: t.unsqueeze(0).expand(steps, *t.shape).reshape(steps * t.shape[0], *t.shape[1:]),
                       value)


def validate(value: Any, what: str = "input", *, dim: int = 0) -> int:
    """Check an input is usable (tensors only, non-empty, finite); returns its batch size."""
    ts = leaves(value)
    if not ts:
        raise DataError(f"{what} must be a tensor, or a tuple/dict of tensors; got {type(value).__name__}")
    if any(t.dim() <= dim for t in ts):
        raise DataError(f"{what} of shape {describe(value)} has no batch dimension {dim}")
    meta = [t for t in ts if t.device.type == "meta"]
    if meta:
        raise DataError(f"{what} is on the meta device (shapes without data, {describe(value)}); give real tensors "
                        "(on cpu, cuda, ...)")
    b = batch_size(value, dim)
    if b == 0 or any(t.numel() == 0 for t in ts):
        raise DataError(f"{what} is empty (shape {describe(value)})")
    for t in ts:
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            raise DataError(f"{what} contains NaN or Inf values; clean the data first")
    return b

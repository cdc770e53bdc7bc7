"""Chunking-independent simulation: every weighted op always sees the same number of rows.

Why. CPU (and GPU) libraries pick their GEMM/convolution kernel, blocking and reduction order from
the call's shape, so one sample's result can differ in the last bit with the number of rows in
the call (measured here: oneDNN convolution with N=1 vs N≥2; MKL sgemm for a Linear with N=1,
2-15 and ≥16 rows: three results). A simulation stacks ``steps × batch`` rows per call, so without
care the outputs depend on ``time_chunk``, ``batch_chunk``, the batch size and early exit — and a
threshold turns a 1-ulp difference into a different spike, which then propagates (issue 19).

What. While a simulation runs (:class:`~adacal.spiking_model.Session`, or ``SpikingModel.mode
("snn")``), each Conv/ConvTranspose/Linear module, and each ``F.conv*``/``F.linear``/``matmul``
node of the graph, is evaluated on canonical blocks of exactly ``R`` rows: the rows are split
into blocks of R, the last block zero-padded to R rows. ``R`` is a pure function of the op's
per-row input/output sizes (:func:`block_rows`), never of the number of rows, so a row's result
is the same however the run is chunked. The guarantee rests on one property of the libraries,
checked by the tests and measured broadly (every op type, 1 and 2 threads): for a fixed call
shape, a row's result does not depend on its position in the call nor on the other rows.

Modules are not renamed or replaced (state_dict keys, ``isinstance`` checks and hooks keep
working): their ``forward`` is shadowed by an instance attribute while the context is active and
restored on exit, even on error.
"""
from __future__ import annotations

import contextlib
import functools
import math
import operator
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

__all__ = [
    "BLOCK_ELEMENTS",
    "MAX_BLOCK_ROWS",
    "WEIGHTED_MODULES",
    "block_rows",
    "blocked",
    "canonical_blocks",
    "deterministic_graph",
]

WEIGHTED_MODULES: tuple[type[nn.Module], ...] = (
    nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d, nn.Linear,
)

#: Input + output elements one block aims at: below ~64 K elements per call the kernels lose
#: efficiency per row (benchmarks/results/simulation_speed.md, determinism section).
BLOCK_ELEMENTS = 1 << 16
#: Most rows in one block. It bounds the padding a call with few rows pays (batch 1, streaming):
#: at most MAX_BLOCK_ROWS − 1 zero rows per op and call.
MAX_BLOCK_ROWS = 8

_MISSING = object()


def block_rows(row_elements: int, *, block_elements: int = BLOCK_ELEMENTS, max_rows: int = MAX_BLOCK_ROWS) -> int:
    """Rows per canonical block for an op moving ``row_elements`` (input + output) per row.

    A power of two in ``[1, max_rows]``: the smallest number of rows that fills ``block_elements``.
    Depends only on the op's per-row sizes, so it is the same in every call of a run.
    """
    want = max(1, math.ceil(block_elements / max(1, row_elements)))
    rows = 1 << (want - 1).bit_length()  # next power of two
    return max(1, min(max_rows, rows))


def blocked(fn: Callable[..., Tensor], x: Tensor, rows: int, *args: Any, **kwargs: Any) -> Tensor:
    """``fn(x, *args)`` computed on blocks of exactly ``rows`` rows of ``x`` (last one zero-padded)."""
    n = x.shape[0]
    if n == rows:
        return fn(x, *args, **kwargs)
    x = x.contiguous()  # every block then has the same layout as the padded one
    full = n - n % rows
    outs = [fn(x[i:i + rows], *args, **kwargs) for i in range(0, full, rows)]
    if full < n:
        pad = x.new_zeros((rows, *x.shape[1:]))
        pad[: n - full] = x[full:]
        outs.append(fn(pad, *args, **kwargs)[: n - full])
    return outs[0] if len(outs) == 1 else torch.cat(outs)


# --------------------------------------------------------------------------- per-row sizes
def _conv_out(size: int, k: int, s: int, p: int, d: int) -> int:
    return (size + 2 * p - d * (k - 1) - 1) // s + 1


def _module_out_row(mod: nn.Module, row_shape: torch.Size) -> int:
    """Output elements per row of a weighted module for an input row of ``row_shape``."""
    if isinstance(mod, nn.Linear):
        return math.prod(row_shape[:-1]) * mod.out_features
    conv = mod  # _ConvNd
    spatial = list(row_shape[1:])
    dims = len(spatial)
    ks, st, dl = conv.kernel_size, conv.stride, conv.dilation  # type: ignore[attr-defined]
    pad = conv.padding  # type: ignore[attr-defined]
    out = []
    for i in range(dims):
        if isinstance(conv, nn.modules.conv._ConvTransposeNd):
            op = conv.output_padding[i]
            out.append((spatial[i] - 1) * st[i] - 2 * pad[i] + dl[i] * (ks[i] - 1) + op + 1)
        elif pad == "same":
            out.append(spatial[i])
        elif pad == "valid":
            out.append(_conv_out(spatial[i], ks[i], st[i], 0, dl[i]))
        else:
            out.append(_conv_out(spatial[i], ks[i], st[i], pad[i], dl[i]))
    return conv.out_channels * math.prod(out)  # type: ignore[attr-defined]


def _rows_for(in_row: int, out_row: int) -> int:
    return block_rows(in_row + out_row)


# --------------------------------------------------------------------------- module patching
def _blocked_forward(mod: nn.Module, forward: Callable[[Tensor], Tensor], cache: dict[Any, int],
                     x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
    if not isinstance(x, Tensor) or x.dim() < 2 or (not isinstance(mod, nn.Linear) and x.dim() == mod.weight.dim() - 1):
        return forward(x, *args, **kwargs)  # unbatched input: nothing to canonicalise
    key = tuple(x.shape[1:])
    rows = cache.get(key)
    if rows is None:
        try:
            out_row = _module_out_row(mod, x.shape[1:])
        except Exception:  # an exotic subclass: size the block on the input alone
            out_row = 0
        rows = cache[key] = _rows_for(math.prod(key), out_row)
    return blocked(forward, x, rows, *args, **kwargs)


@contextlib.contextmanager
def canonical_blocks(modules: Iterator[nn.Module] | list[nn.Module]) -> Iterator[None]:
    """Shadow the ``forward`` of every weighted module in ``modules`` with its blocked version."""
    patched: list[tuple[nn.Module, Any]] = []
    try:
        for mod in modules:
            if not isinstance(mod, WEIGHTED_MODULES):
                continue
            saved = mod.__dict__.get("forward", _MISSING)
            inner = mod.forward
            object.__setattr__(mod, "forward", functools.partial(_blocked_forward, mod, inner, {}))
            patched.append((mod, saved))
        yield
    finally:
        for mod, saved in reversed(patched):
            if saved is _MISSING:
                mod.__dict__.pop("forward", None)
            else:
                object.__setattr__(mod, "forward", saved)


# --------------------------------------------------------------------------- functional nodes
def _det_linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    if x.dim() < 2:
        return F.linear(x, weight, bias)
    rows = _rows_for(x[0].numel(), x[0].numel() // max(1, weight.shape[-1]) * weight.shape[0])
    return blocked(F.linear, x, rows, weight, bias)


def _det_conv(fn: Callable[..., Tensor], dims: int) -> Callable[..., Tensor]:
    def conv(x: Tensor, weight: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        if x.dim() != dims + 2:
            return fn(x, weight, *args, **kwargs)
        # size the block on the input row and a same-size output row per output channel
        in_row = x[0].numel()
        rows = _rows_for(in_row, in_row // max(1, x.shape[1]) * weight.shape[0])
        return blocked(fn, x, rows, weight, *args, **kwargs)

    conv.__name__ = f"deterministic_{fn.__name__}"
    return conv


def _det_matmul(a: Tensor, b: Tensor) -> Tensor:
    if a.dim() < 2 or b.dim() != 2:  # only x @ W with rows on x's first axis is canonicalised
        return torch.matmul(a, b)
    rows = _rows_for(a[0].numel(), a[0].numel() // max(1, b.shape[0]) * b.shape[1])
    return blocked(torch.matmul, a, rows, b)


_FUNCTIONAL: dict[Any, Callable[..., Tensor]] = {
    F.linear: _det_linear,
    torch.matmul: _det_matmul,
    operator.matmul: _det_matmul,
    F.conv1d: _det_conv(F.conv1d, 1),
    F.conv2d: _det_conv(F.conv2d, 2),
    F.conv3d: _det_conv(F.conv3d, 3),
    F.conv_transpose1d: _det_conv(F.conv_transpose1d, 1),
    F.conv_transpose2d: _det_conv(F.conv_transpose2d, 2),
    F.conv_transpose3d: _det_conv(F.conv_transpose3d, 3),
}


def deterministic_target(target: Any) -> Any:
    """The canonical-block twin of a graph function (itself when it has none)."""
    try:
        return _FUNCTIONAL.get(target, target)
    except TypeError:  # unhashable target
        return target


def deterministic_graph(gm: fx.GraphModule) -> fx.GraphModule:
    """``gm`` with its weighted function nodes retargeted to their canonical-block twins.

    Returns ``gm`` itself when it has none (the common case: weighted ops are modules, which
    :func:`canonical_blocks` handles). The copy shares ``gm``'s submodules and parameters.
    """
    if not any(n.op == "call_function" and deterministic_target(n.target) is not n.target for n in gm.graph.nodes):
        return gm
    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    for node in gm.graph.nodes:
        new = graph.node_copy(node, lambda n: env[n])
        if new.op == "call_function":
            new.target = deterministic_target(new.target)
        env[node] = new
    return fx.GraphModule(gm, graph)

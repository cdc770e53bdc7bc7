"""Chunking-independent simulation: every weighted op computes each row in a verified block size.

Why. CPU and GPU libraries pick their GEMM/convolution kernel, blocking and reduction order from
the call's shape, so one row's result can differ in the last bit with the number of rows in the
call (measured here, Xeon/oneDNN 3.12/MKL: a convolution with N=1 differs from N≥2; a Linear has
three results, N=1, 2-15 and ≥16). A simulation stacks ``steps × batch`` rows per call, so without
care its outputs depend on ``time_chunk``, ``batch_chunk``, the batch size and early exit — and a
threshold turns a 1-ulp difference into a different spike, which then propagates (issue 19).

What. While a simulation runs (:class:`~adacal.spiking_model.Session`, ``SpikingModel.mode("snn")``)
every Conv/ConvTranspose/Linear module and every ``F.conv*``/``F.linear``/``matmul`` node of the
graph is evaluated on row blocks whose sizes come from a *block plan*: power-of-two sizes ≤ M
that give every row exactly the same result as an M-row call. A call of n rows is split into such
blocks (largest first); a remainder smaller than the smallest size r is zero-padded to r rows.
So a row's result never depends on how many rows share its call, nor on which — whatever the
chunking. M is bounded by bytes (:data:`BLOCK_ELEMENTS`) and by :data:`MAX_BLOCK_ROWS`.

Plans are verified, not assumed: at the first call of an op for a given per-row shape, dtype,
device and thread count, a random probe of M rows is run whole, rolled (position independence)
and in head and tail slices of each smaller size; a size joins the plan only if every row is
bit-identical. If even the rolled M-row call differs, the plan is single rows (always invariant).
Measured on this machine: convolutions verify {2, …, 64} (so batch 64 runs as one call, a
1-row step pads to 2), Linear layers {16, 32, 64}. Plans live on the model (``_split_cache``),
cleared when it moves device or dtype.

Layout. A 2-D convolution may also run on channels-last input (NHWC memory order), which oneDNN
computes faster for few channels on large maps and slower for many channels on small ones
(benchmarks/results/simulation_speed.md: "layout speed-up"). The layout is a plan too (:func:`layout_plan`):
channels-last is admitted for an op only if every block size of its plan gives the same bits in it
as the contiguous M-row call, and with ``layout="auto"`` (the model's default) only if it is also
measurably faster. The choice therefore never changes a result, only the time it takes.

Modules are not renamed or replaced (state_dict keys, ``isinstance`` checks and hooks keep
working): their ``forward`` is shadowed by an instance attribute while the context is active and
restored on exit, even on error.
"""
from __future__ import annotations

import contextlib
import functools
import logging
import math
import operator
import time
from collections.abc import Callable, Iterator, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

__all__ = ["BLOCK_ELEMENTS", "LAYOUTS", "LAYOUT_KEY", "MAX_BLOCK_ROWS", "WEIGHTED_MODULES", "blocked", "block_plan",
           "canonical_blocks", "deterministic_graph", "is_channels_last", "layout_plan", "planned_layouts"]

log = logging.getLogger(__name__)

WEIGHTED_MODULES: tuple[type[nn.Module], ...] = (
    nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d, nn.Linear,
)

#: Input elements of the largest block: beyond ~4 M elements (16 MB float32) a bigger call gains
#: no efficiency, and the one-off probe stays cheap.
BLOCK_ELEMENTS = 1 << 22
#: Most rows in one block (M ≤ this): at batch 64 a step is one call.
MAX_BLOCK_ROWS = 64

#: ``contiguous``: every op on contiguous (NCHW) input, as verified by the block plan; ``channels_last``:
#: 2-D convolutions on channels-last input wherever that gives the same bits; ``auto``: there only
#: where it is also faster (timed once per op and shape).
LAYOUTS = ("auto", "contiguous", "channels_last")
#: Where a plans dict carries the layout setting (absent: ``contiguous``, the behaviour before layouts).
LAYOUT_KEY = "layout"
#: Channels-last must beat contiguous by this factor to be picked by ``auto`` (timing noise margin).
_LAYOUT_GAIN = 0.9

_MISSING = object()
Plan = tuple[int, ...]  # verified block sizes, largest first


def max_block_rows(row_elements: int) -> int:
    """M for an op reading ``row_elements`` per row: the largest power of two ≤ MAX_BLOCK_ROWS
    whose block stays within BLOCK_ELEMENTS (at least 1)."""
    fit = max(1, BLOCK_ELEMENTS // max(1, row_elements))
    return max(1, min(MAX_BLOCK_ROWS, 1 << (fit.bit_length() - 1)))


@torch.no_grad()
def block_plan(call: Callable[[Tensor], Tensor], row_shape: tuple[int, ...], dtype: torch.dtype,
               device: torch.device) -> Plan:
    """The block sizes for which ``call`` gives every row the same bits as an M-row call.

    Probed on seeded random data (its own generator: the global RNG is untouched).
    """
    m = max_block_rows(math.prod(row_shape))
    probe = _probe(m, row_shape, dtype, device)
    ref = call(probe)
    if m > 1 and not torch.equal(call(probe.roll(m // 2 + 1, 0)).roll(-(m // 2 + 1), 0), ref):
        return (1,)  # a row's result depends on its position: only single rows are invariant
    sizes = [m]
    s = m // 2
    while s >= 1:
        if torch.equal(call(probe[:s]), ref[:s]) and torch.equal(call(probe[m - s:]), ref[m - s:]):
            sizes.append(s)
        s //= 2
    return tuple(sizes)


def _probe(m: int, row_shape: tuple[int, ...], dtype: torch.dtype, device: torch.device) -> Tensor:
    gen = torch.Generator(device=device).manual_seed(0x5EED)
    return torch.randn((m, *row_shape), generator=gen, device=device).to(dtype)


def _best_time(call: Callable[[], Any], device: torch.device, repeats: int = 3) -> float:
    """The fastest of ``repeats`` calls (on CUDA, waiting for the kernels to finish)."""
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    best = math.inf
    for _ in range(repeats):
        sync()
        t0 = time.perf_counter()
        call()
        sync()
        best = min(best, time.perf_counter() - t0)
    return best


@torch.no_grad()
def layout_plan(call: Callable[[Tensor], Tensor], row_shape: tuple[int, ...], plan: Plan, dtype: torch.dtype,
                device: torch.device, *, measure: bool = True, arrives: torch.memory_format = torch.contiguous_format
                ) -> torch.memory_format:
    """``torch.channels_last`` if ``call`` (a 2-D convolution: rows ``[C, H, W]``) gives, on
    channels-last input, the same bits as the contiguous M-row call for every block size of
    ``plan`` (and, with ``measure``, is faster on M rows, counting the conversion from the layout
    the input ``arrives`` in: a faster convolution behind a copy of its input is no gain);
    else ``torch.contiguous_format``."""
    if len(row_shape) != 3 or row_shape[0] == 1 or row_shape[1] * row_shape[2] == 1:
        return torch.contiguous_format  # not a 4-D input, or both layouts are the same memory order
    m = max_block_rows(math.prod(row_shape))
    probe = _probe(m, row_shape, dtype, device)
    ref = call(probe)
    nhwc = probe.contiguous(memory_format=torch.channels_last)
    for s in plan:
        if s > m or not (torch.equal(call(nhwc[:s]), ref[:s]) and torch.equal(call(nhwc[m - s:]), ref[m - s:])):
            return torch.contiguous_format
    if measure:
        call(probe), call(nhwc)  # warm both (oneDNN builds a primitive per layout on first use)
        given = nhwc if arrives == torch.channels_last else probe
        contiguous = _best_time(lambda: call(given.contiguous()), device)
        channels_last = _best_time(lambda: call(given.contiguous(memory_format=torch.channels_last)), device)
        if channels_last > _LAYOUT_GAIN * contiguous:
            return torch.contiguous_format
    return torch.channels_last


def blocked(fn: Callable[..., Tensor], x: Tensor, plan: Plan, *args: Any,
            layout: torch.memory_format = torch.contiguous_format, **kwargs: Any) -> Tensor:
    """``fn(x, *args)`` computed on row blocks of the plan's sizes (remainder zero-padded), on
    input in ``layout`` (both verified by the plans)."""
    n = x.shape[0]
    x = x.contiguous(memory_format=layout)
    if n in plan:
        return fn(x, *args, **kwargs)
    outs: list[Tensor] = []
    i = 0
    for size in plan:
        while n - i >= size:
            outs.append(fn(x[i:i + size], *args, **kwargs))
            i += size
    if i < n:
        pad = x.new_zeros((plan[-1], *x.shape[1:])).contiguous(memory_format=layout)
        pad[: n - i] = x[i:]
        outs.append(fn(pad, *args, **kwargs)[: n - i])
    return outs[0] if len(outs) == 1 else torch.cat(outs)


def is_channels_last(x: Tensor) -> bool:
    """Whether ``x`` is a 4-D tensor laid out channels-last (and not also plainly contiguous)."""
    return x.dim() == 4 and not x.is_contiguous() and x.is_contiguous(memory_format=torch.channels_last)


def _plan(plans: dict[Any, Any], key: Any, call: Callable[[Tensor], Tensor], x: Tensor) -> tuple[Plan, Any]:
    """The block sizes and input layout of this op for ``x``'s row shape (computed once)."""
    full = (key, tuple(x.shape[1:]), x.dtype, x.device, torch.get_num_threads())
    plan = plans.get(full)
    if plan is None:
        plan = plans[full] = block_plan(call, tuple(x.shape[1:]), x.dtype, x.device)
        log.debug("block plan for %s %s: %s", key, tuple(x.shape[1:]), plan)
    setting = plans.get(LAYOUT_KEY, "contiguous")
    if setting == "contiguous":
        return plan, torch.contiguous_format
    layout = plans.get((full, setting))
    if layout is None:
        arrives = torch.channels_last if is_channels_last(x) else torch.contiguous_format
        layout = plans[(full, setting)] = layout_plan(call, tuple(x.shape[1:]), plan, x.dtype, x.device,
                                                      measure=setting == "auto", arrives=arrives)
        log.debug("layout for %s %s: %s", key, tuple(x.shape[1:]), layout)
    return plan, layout


def planned_layouts(plans: dict[Any, Any]) -> dict[Any, torch.memory_format]:
    """The input layout chosen so far for each op (``("module", name)`` or ``("function", node)``)
    under the plans' layout setting; ops not yet run are absent."""
    setting = plans.get(LAYOUT_KEY, "contiguous")
    return {k[0][0]: v for k, v in plans.items()
            if isinstance(k, tuple) and len(k) == 2 and isinstance(k[0], tuple) and k[1] == setting}


# --------------------------------------------------------------------------- module patching
def _blocked_forward(mod: nn.Module, key: tuple[str, str], forward: Callable[..., Tensor], plans: dict[Any, Plan],
                     x: Any, *args: Any, **kwargs: Any) -> Tensor:
    unbatched = not isinstance(mod, nn.Linear) and x.dim() == mod.weight.dim() - 1
    if args or kwargs or not isinstance(x, Tensor) or x.dim() < 2 or unbatched or not x.is_floating_point():
        return forward(x, *args, **kwargs)
    plan, layout = _plan(plans, key, forward, x)
    return blocked(forward, x, plan, layout=layout)


@contextlib.contextmanager
def canonical_blocks(modules: Mapping[str, nn.Module], plans: dict[Any, Plan]) -> Iterator[None]:
    """Shadow the ``forward`` of every weighted module (by qualified name) with its blocked twin."""
    patched: list[tuple[nn.Module, Any]] = []
    try:
        for name, mod in modules.items():
            if not isinstance(mod, WEIGHTED_MODULES):
                continue
            saved = mod.__dict__.get("forward", _MISSING)
            patch = functools.partial(_blocked_forward, mod, ("module", name), mod.forward, plans)
            object.__setattr__(mod, "forward", patch)
            patched.append((mod, saved))
        yield
    finally:
        for mod, saved in reversed(patched):
            if saved is _MISSING:
                mod.__dict__.pop("forward", None)
            else:
                object.__setattr__(mod, "forward", saved)


# --------------------------------------------------------------------------- functional nodes
def _rows_first(target: Any, args: tuple[Any, ...]) -> bool:
    """Whether this call's first argument holds independent rows on its first axis."""
    x = args[0] if args else None
    if not isinstance(x, Tensor) or x.dim() < 2 or not x.is_floating_point():
        return False
    if target in (torch.matmul, operator.matmul):
        return len(args) == 2 and isinstance(args[1], Tensor) and args[1].dim() == 2  # x @ W
    if target in (F.linear,):
        return True
    dims = {F.conv1d: 1, F.conv2d: 2, F.conv3d: 3, F.conv_transpose1d: 1, F.conv_transpose2d: 2,
            F.conv_transpose3d: 3}[target]
    return x.dim() == dims + 2  # batched input


class _BlockedFunction:
    """A graph function node evaluated on verified row blocks (see :func:`deterministic_graph`)."""

    def __init__(self, fn: Callable[..., Tensor], node: tuple[str, str], plans: dict[Any, Plan]) -> None:
        self.fn, self.node, self.plans = fn, node, plans
        self.__name__ = self.__qualname__ = f"blocked_{getattr(fn, '__name__', 'fn')}"
        self.__module__ = __name__

    def __call__(self, *args: Any, **kwargs: Any) -> Tensor:
        if not _rows_first(self.fn, args):
            return self.fn(*args, **kwargs)
        x, rest = args[0], args[1:]
        call = functools.partial(_call_first, self.fn, rest, kwargs)
        plan, layout = _plan(self.plans, self.node, call, x)
        return blocked(call, x, plan, layout=layout)


def _call_first(fn: Callable[..., Tensor], rest: tuple[Any, ...], kwargs: dict[str, Any], x: Tensor) -> Tensor:
    return fn(x, *rest, **kwargs)


_FUNCTIONS = {F.linear, torch.matmul, operator.matmul, F.conv1d, F.conv2d, F.conv3d, F.conv_transpose1d,
              F.conv_transpose2d, F.conv_transpose3d}


def _weighted_function(node: fx.Node) -> bool:
    if node.op != "call_function":
        return False
    try:
        return node.target in _FUNCTIONS
    except TypeError:  # unhashable target
        return False


def deterministic_graph(gm: fx.GraphModule, plans: dict[Any, Plan]) -> fx.GraphModule:
    """``gm`` with its weighted function nodes evaluated on verified row blocks.

    Plans are keyed by node name: the split graphs keep the names of the graph they come from,
    so the same op shares its plan whichever graph runs it.

    Returns ``gm`` itself when it has none (the common case: weighted ops are modules, which
    :func:`canonical_blocks` handles). The copy shares ``gm``'s submodules and parameters.
    """
    if not any(_weighted_function(n) for n in gm.graph.nodes):
        return gm
    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    for node in gm.graph.nodes:
        new = graph.node_copy(node, lambda n: env[n])
        if _weighted_function(node):
            new.target = _BlockedFunction(node.target, ("function", node.name), plans)
        env[node] = new
    return fx.GraphModule(gm, graph)

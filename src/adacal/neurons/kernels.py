"""The neuron update of one timestep, eager (op by op) or fused into one compiled loop.

Why. The update ``u += z; n = clamp(⌊u/θ⌋, 0, φ); s = n·θ; u −= s`` is five element-wise passes
over memory in eager PyTorch (and its exact floor division is slow: fmod), and at large batch
the simulation is bound by them. ``torch.compile`` (inductor: C++ on CPU, Triton on CUDA) makes
a step one pass: [64, 16384] float32, 1 thread: 1.1 ms fused vs 9.3 ms eager.

Bit-identity. Eager uses ``torch.div(..., rounding_mode="floor")``: the exact floor of the real
quotient u/θ. The fused step computes the same exact floor without fmod: ``q = ⌊round(u/θ)⌋`` is
the true floor or one above it (rounding is monotonic and integers are representable, so it never
falls below); it is one above exactly when ``q·θ > u``, decided exactly from the rounded product
``p`` and its error ``e`` (Dekker's TwoProduct: ``p + e = q·θ`` exactly; ``u − p`` is exact by
Sterbenz's lemma). Both paths thus get the same ``n``, and ``s = n·θ`` and ``u − s`` are single
correctly rounded operations in both — with floating-point contraction off, since an FMA would
round ``u − n·θ`` once and move the last bit. Outputs and membranes agree to the bit (tested on
adversarial values: exact multiples of θ and their neighbours, float32 and float64); at most
the sign of a zero can differ, which ``==`` and ``torch.equal`` do not see.

Compilation is per process (:data:`KERNEL`): one compiled function per (device type, dtype), each
with its own code object so that dynamo's per-code cache and recompile limit apply to it alone.
Shapes are dynamic: one compilation serves every neuron, batch size and chunking; the variants
(a residual term or not, :mod:`adacal.neurons.residual`; bias or not; one row or more; dynamo
also specialises a single position and as many rows as positions, which real layers hardly meet)
are counted in ``KERNEL.compiles`` — at most :data:`MAX_VARIANTS` per (device, dtype).

Direct calls. Through ``torch.compile`` a call costs ~30 µs of guards and wrappers (plus ~7 µs per
aliased operand), more than a step of 4 K elements takes to compute, so small steps used to stay
eager. Each variant inductor compiles is therefore also kept as a :class:`_Direct` call: the
compiled graph itself, its placeholders bound from the step's operands by the sources dynamo
recorded (an operand, a size of one, a constant). The variant key carries everything the graph
was specialised on (bias or not, sizes equal to 1 or to each other, dtype, device); operands are
checked contiguous; and the first direct step of each variant is run beside the guarded call on
copies and must agree to the bit, else that variant keeps the guarded call.
"""
from __future__ import annotations

import functools
import logging
import os
import threading
import time
import types
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor

__all__ = ["FUSED_DTYPES", "FUSED_MIN_CALL_ELEMENTS", "FUSED_MIN_ELEMENTS", "KERNEL", "MAX_VARIANTS", "FusedKernel",
           "if_update_eager_", "if_update_reference"]

log = logging.getLogger(__name__)

#: Elements per step from which ``fused="auto"`` uses the compiled update. Through dynamo a call
#: costs ~30-40 µs (guards, aliasing), break-even ≈ 16 K elements; called directly (module
#: docstring) ~5-8 µs, less than eager's five passes from about 1 K elements (measured, 1 thread:
#: benchmarks/results/neuron_step.md). The bound keeps tiny networks from paying a compilation.
FUSED_MIN_ELEMENTS = 1 << 12
#: Elements per call (all its steps) from which ``fused="auto"`` compiles: preparing the direct
#: call costs some µs per neuron call, which one small step (streaming at batch 1) does not repay
#: (benchmarks/results/neuron_step.md, "one neuron call": a single step of 16 K elements runs at
#: 1.27× eager, of 8 K at 1.02×, of 4 K at 0.82×; with the step constants cached per neuron).
FUSED_MIN_CALL_ELEMENTS = 1 << 14
#: Graph variants per (device, dtype): residual term or not × bias or not × the size cases (rows =
#: 1 or more, positions = 1 or more, rows = positions) that can occur together.
MAX_VARIANTS = 20
#: Dtypes the fused path serves. Half precision stays eager: eager rounds to half after every op,
#: a fused loop keeps float32 intermediates and would differ.
FUSED_DTYPES = (torch.float32, torch.float64)
_DEVICES = ("cpu", "cuda")
_INDUCTOR_OPTIONS = {
    "cpp.enable_floating_point_contract_flag": "off",  # no FMA in generated C++ (u − n·θ, TwoProduct)
    "emulate_precision_casts": True,  # Triton: enable_fp_fusion off (no FMA)
    "eager_numerics.division_rounding": True,  # Triton: div_rn like eager CUDA, not div.full
}
#: Veltkamp splitting constants 2^⌈p/2⌉ + 1 (p: mantissa bits) for TwoProduct.
_SPLIT = {torch.float32: 4097.0, torch.float64: 134217729.0}


def if_update_eager_(u: Tensor, z: Tensor, th: Tensor, phi: Tensor, out: Tensor, scratch: Tensor,
                     zero: Tensor | None = None) -> None:
    """One step in place, op by op: ``u += z``; ``out = clamp(⌊u/θ⌋, 0, φ)·θ``; ``u −= out``."""
    u.add_(z)
    torch.div(u, th, rounding_mode="floor", out=scratch)
    scratch.clamp_(min=torch.zeros((), dtype=u.dtype, device=u.device) if zero is None else zero, max=phi)
    torch.mul(scratch, th, out=out)
    u.sub_(out)


def if_update_reference(u: Tensor, z: Tensor, r: Tensor | None, bias: Tensor | None, th: Tensor, phi: Tensor,
                        out: Tensor) -> None:
    """The step as compiled, on ``[rows, P]`` tensors (``th``, ``bias``: ``[P]``), in place.

    The input current is ``(z + r) + bias`` in that order, as the graph's residual add and the eager
    loop compute it (``r``: a residual term, :mod:`adacal.neurons.residual`); the floor is exact
    (module docstring).
    """
    if r is not None:
        z = z + r
    v = u + (z if bias is None else z + bias)
    q = torch.floor(v / th)
    p = q * th
    split = _SPLIT[v.dtype]
    cq = q * split
    q_hi = cq - (cq - q)
    q_lo = q - q_hi
    ct = th * split
    t_hi = ct - (ct - th)
    t_lo = th - t_hi
    err = ((q_hi * t_hi - p) + q_hi * t_lo + q_lo * t_hi) + q_lo * t_lo  # p + err == q·θ exactly
    n = torch.where((v - p) - err < 0, q - 1, q)
    s = torch.minimum(n.clamp(min=0), phi) * th
    out.copy_(s)
    u.copy_(v - s)


def _alias(t: Tensor, *shape: int) -> Tensor:
    """A plain (non-view) contiguous tensor of ``shape`` on ``t``'s memory. Dynamo guards a
    view's base shape, which would recompile per layer shape and chunking; a plain tensor is
    guarded on its own shape only."""
    strides = [1] * len(shape)
    for i in range(len(shape) - 2, -1, -1):
        strides[i] = strides[i + 1] * shape[i + 1]
    return torch.empty(0, dtype=t.dtype, device=t.device).set_(t.untyped_storage(), t.storage_offset(), shape, strides)


def _same_bits(a: Tensor, b: Tensor) -> bool:
    """Equal values, NaN where the other has NaN (a zero's sign aside, as the module docstring says)."""
    nan = a.isnan()
    return torch.equal(nan, b.isnan()) and torch.equal(a.masked_fill(nan, 0), b.masked_fill(nan, 0))


def _fresh_copy(fn: Any, tag: str) -> Any:
    """``fn`` with a code object of its own (dynamo keys its cache and recompile limit on it)."""
    code = fn.__code__.replace(co_name=f"{fn.__name__}_{tag}")
    new = types.FunctionType(code, fn.__globals__, code.co_name, fn.__defaults__, fn.__closure__)
    new.__qualname__ = code.co_name
    return new


def _compile_disabled() -> str | None:
    for var in ("TORCH_COMPILE_DISABLE", "TORCHDYNAMO_DISABLE"):
        if os.environ.get(var, "") not in ("", "0"):
            return f"torch.compile disabled by {var}"
    try:
        import torch._dynamo

        if torch._dynamo.config.disable:
            return "torch.compile disabled (torch._dynamo.config.disable)"
    except Exception as exc:  # pragma: no cover - a torch build without dynamo
        return f"torch.compile unavailable ({type(exc).__name__})"
    return None


@dataclass
class _Direct:
    """One compiled variant, called without dynamo: ``fn(*args)`` with ``args`` bound by ``bind``.

    ``bind`` holds per placeholder ``("arg", name)``, ``("size", name, dim)`` or ``("const", value)``.
    ``checked``: the first direct step agreed with the guarded call to the bit.
    """

    fn: Any
    bind: list[tuple[Any, ...]]
    checked: bool = False

    def __post_init__(self) -> None:
        # where a step's z, out and residual go in the argument list (the operands that change per step)
        self.at_z, self.at_out = self.bind.index(("arg", "z")), self.bind.index(("arg", "out"))
        self.at_r = self.bind.index(("arg", "r")) if ("arg", "r") in self.bind else None

    def args(self, ops: dict[str, Any]) -> list[Any]:
        return [ops[b[1]] if b[0] == "arg" else ops[b[1]].shape[b[2]] if b[0] == "size" else b[1]
                for b in self.bind]


def _binding(gm: Any) -> list[tuple[Any, ...]] | None:
    """How to fill ``gm``'s placeholders from the update's operands; None where a placeholder comes
    from anything but an operand, an operand's size or a constant global (the guarded call stays)."""
    from torch._dynamo.source import GlobalSource, LocalSource, TensorProperty, TensorPropertySource

    bind: list[tuple[Any, ...]] = []
    for node in gm.graph.nodes:
        if node.op != "placeholder":
            continue
        arg = node.meta.get("grapharg")
        src = getattr(arg, "source", None)
        if isinstance(src, LocalSource):
            bind.append(("arg", src.local_name))
        elif (isinstance(src, TensorPropertySource) and src.prop is TensorProperty.SIZE
              and isinstance(src.base, LocalSource) and isinstance(src.idx, int)):
            bind.append(("size", src.base.local_name, src.idx))
        elif isinstance(getattr(src, "base", None), GlobalSource) and isinstance(getattr(arg, "example", None), Tensor):
            bind.append(("const", arg.example.detach().clone()))  # a module constant (_SPLIT), wrapped
        else:
            return None
    return bind


class FusedKernel:
    """The compiled neuron updates, their compilation count and the devices where they failed.

    ``compiles`` counts inductor compilations (one per graph variant), ``compile_seconds`` their
    wall time, ``failed[device_type]`` why a device fell back to eager for the process.
    ``direct_calls``: call compiled variants directly (module docstring); False: always through
    dynamo's guards (the reference the direct calls are checked and benchmarked against).
    """

    def __init__(self, direct_calls: bool = True) -> None:
        self.direct_calls = direct_calls
        self._fns: dict[tuple[str, torch.dtype], Any] = {}
        self.compiles = 0
        self.compiles_by_key: dict[tuple[str, torch.dtype], int] = {}
        self.compile_seconds = 0.0
        self.failed: dict[str, str] = {}
        self.direct: dict[tuple[Any, ...], _Direct] = {}
        self.direct_rejected: set[tuple[Any, ...]] = set()
        self._local = threading.local()  # .pending: the variant key of the call now compiling, per thread

    def unavailable(self, device: torch.device, dtype: torch.dtype) -> str | None:
        """Why the fused update cannot serve this device/dtype (None: it can)."""
        if device.type not in _DEVICES:
            return f"no fused kernel for device {device.type!r}"
        if dtype not in FUSED_DTYPES:
            return f"dtype {dtype} runs eager (fused: float32/float64)"
        if device.type in self.failed:
            return self.failed[device.type]
        return _compile_disabled()

    def _backend(self, key: tuple[str, torch.dtype], gm: Any, example_inputs: Any) -> Any:
        from torch._inductor.compile_fx import compile_fx

        self.compiles += 1
        self.compiles_by_key[key] = self.compiles_by_key.get(key, 0) + 1
        t0 = time.perf_counter()
        try:
            compiled = compile_fx(gm, example_inputs, config_patches=_INDUCTOR_OPTIONS)
        finally:
            self.compile_seconds += time.perf_counter() - t0
        pending = getattr(self._local, "pending", None)
        bind = _binding(gm) if pending is not None else None
        if bind is not None and ("arg", "z") in bind and ("arg", "out") in bind and pending not in self.direct_rejected:
            self.direct[pending] = _Direct(compiled, bind)
        return compiled

    def _compiled(self, device_type: str, dtype: torch.dtype) -> Any:
        key = (device_type, dtype)
        if key not in self._fns:  # bounded: 2 device types × 2 dtypes
            fn = _fresh_copy(if_update_reference, f"{device_type}_{str(dtype).removeprefix('torch.')}")
            backend = functools.partial(self._backend, key)
            self._fns[key] = torch.compile(fn, backend=backend, dynamic=True, fullgraph=True)
        return self._fns[key]

    def steps_(self, u: Tensor, z: Tensor, bias: Tensor | None, th: Tensor, phi: Tensor, out: Tensor,
               r: Tensor | None = None) -> int:
        """Run ``z.shape[0]`` fused steps in place: ``u`` ``[rows, P]``, ``z``, ``out`` and the
        optional residual term ``r`` ``[steps, rows, P]`` (contiguous rows; ``z`` may repeat one step
        with stride 0), ``th``/``bias`` ``[P]``. Returns the steps done: fewer only if compiling
        failed (the device is then marked failed, and nothing of the step that failed was written)."""
        steps, rows, per = z.shape
        fn = self._compiled(u.device.type, u.dtype)
        key = (u.device.type, u.dtype, r is None, bias is None, rows == 1, per == 1, rows == per)
        rs: list[Tensor | None] = [None] * steps if r is None else list(r.unbind(0))
        t = 0
        try:
            with torch.no_grad():
                direct = self.direct.get(key) if self.direct_calls else None
                if (direct is not None and u.is_contiguous() and z[0].is_contiguous() and out[0].is_contiguous()
                        and (r is None or r[0].is_contiguous())):
                    ops = {"u": u, "bias": bias, "th": th, "phi": phi}
                    if not direct.checked:
                        direct = self._check_direct(key, direct, fn, dict(ops, z=z[0], out=out[0], r=rs[0]))
                    if direct is not None:  # one argument list; only the step's z, r and out change
                        args = direct.args(dict(ops, z=z[0], out=out[0], r=rs[0]))
                        at_z, at_out, at_r = direct.at_z, direct.at_out, direct.at_r
                        for zt, ot, rt in zip(z.unbind(0), out.unbind(0), rs):
                            args[at_z], args[at_out] = zt, ot
                            if at_r is not None:
                                args[at_r] = rt
                            direct.fn(*args)
                            t += 1
                if t < steps:
                    uu = _alias(u, rows, per)
                    self._local.pending = key
                    try:
                        while t < steps:
                            rt = rs[t]
                            fn(uu, _alias(z[t], rows, per), None if rt is None else _alias(rt, rows, per), bias, th,
                               phi, _alias(out[t], rows, per))
                            t += 1
                    finally:
                        self._local.pending = None
        except Exception as exc:  # no compiler, unsupported op...: eager from now on, for this device
            msg = str(exc).splitlines()[0][:200] if str(exc) else ""
            reason = f"torch.compile failed on {u.device.type}: {type(exc).__name__}: {msg}"
            self.failed[u.device.type] = reason
            log.warning("fused neuron update unavailable, falling back to eager: %s", reason)
        return t

    def _check_direct(self, key: tuple[Any, ...], direct: _Direct, fn: Any, ops: dict[str, Any]) -> _Direct | None:
        """Run one step both ways on copies; keep the direct call only if it matches to the bit."""
        rows, per = ops["u"].shape
        mine = {k: v.clone() if k in ("u", "out") else v for k, v in ops.items()}
        ref = {k: v.clone() if k in ("u", "out") else v for k, v in ops.items()}
        try:
            direct.fn(*direct.args(mine))
        except Exception as exc:  # noqa: BLE001 - the guarded call still serves
            log.info("direct call of the fused update unusable (%s: %s); guarded calls", type(exc).__name__, exc)
            mine = None
        fn(*(_alias(ref[k], rows, per) if k in ("u", "z", "out") or (k == "r" and ref[k] is not None) else ref[k]
             for k in ("u", "z", "r", "bias", "th", "phi", "out")))
        same = mine is not None and all(_same_bits(mine[k], ref[k]) for k in ("u", "out"))
        if not same:
            self.direct.pop(key, None)
            self.direct_rejected.add(key)
            log.warning("fused update: the direct call of variant %s differed from the guarded one; "
                        "that variant keeps the guarded call", key[2:])
            return None
        direct.checked = True
        return direct

    def warm_up(self, device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> float:
        """Compile the common variants now (bias or not, one row or several, with a residual term at
        several rows); returns the seconds taken."""
        device = torch.device(device)
        t0 = time.perf_counter()
        if self.unavailable(device, dtype) is not None:
            return 0.0
        for rows, residual in ((2, False), (1, False), (2, True)):
            for bias in (None, torch.zeros(16, dtype=dtype, device=device)):
                u = torch.zeros(rows, 16, dtype=dtype, device=device)
                th = torch.ones(16, dtype=dtype, device=device)
                phi = torch.ones((), dtype=dtype, device=device)
                z = torch.ones(1, rows, 16, dtype=dtype, device=device)
                r = torch.ones_like(z) if residual else None
                if not self.steps_(u, z, bias, th, phi, torch.empty_like(z), r):
                    return time.perf_counter() - t0
        return time.perf_counter() - t0


#: The process-wide compiled updates. Why module level: compiled code belongs to the process
#: (dynamo caches it on code objects whatever object compiles it), so per-model copies would only
#: recompile the same kernel. Bounded: ≤ 4 functions (device type × dtype) × ≤ MAX_VARIANTS each.
KERNEL = FusedKernel()

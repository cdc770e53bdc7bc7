"""Static analysis of a converted graph: which weighted layers see spikes, their MACs, and fan-outs.

Done once per model (weights' zero pattern and graph only; thresholds, φ and ρ do not matter), so
that turning recorded spike counts into synaptic operations is then a few dot products.

* **Kinds.** Every graph value is ``const`` (parameters, shapes), ``spike`` (a linear, unweighted
  function of neuron outputs only: pooling, reshapes, sums, concatenation, ...), ``analog`` (the
  network input, a weighted layer's output, or anything nonlinear) or ``mixed`` (spikes plus
  analog). A weighted layer whose input is ``spike`` is *spike-fed* and costs one accumulate per
  synaptic event; every other weighted layer is *analog-fed* and costs its dense MACs per run.
* **MACs** come from ``torch.utils.flop_counter.FlopCounterMode`` on one sample: MACs = FLOPs / 2
  (torch counts a multiply-accumulate as two FLOPs; bias adds are not counted).
* **Products of two variable tensors** (``bmm``/``matmul``/``einsum`` with no constant operand, e.g.
  a T-Net's learned matrix times the features, kept in floating point with ``analog=[...]``) are
  priced like analog-fed layers: their dense MACs every time they run.
* **Fan-out maps** ``f_{N→L}(p)``: the number of synapses (non-zero weight entries × output
  positions) of layer L that one spike at position p of neuron N's output drives, with any pooling
  in between folded in. They are the gradients of an *indicator network*: weights replaced by
  ``w != 0``, biases by 0, average pools by sum pools (a spike reaches every pooled cell covering
  it), means by sums, subtractions by additions, constant scales by ``scale != 0``; neuron outputs
  are leaves of ones and each layer's output is detached so nothing downstream leaks in. Padded
  borders come out right by construction (a border spike has fewer output positions to reach).
"""
from __future__ import annotations

import copy
import dataclasses
import logging
import operator
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn
from torch.utils.flop_counter import FlopCounterMode

from adacal import inputs
from adacal.convert.ops import DIVISIONS, WEIGHTED_FUNCS, Op, op_kind, pool_dims
from adacal.convert.rules import spiking_nodes
from adacal.convert.trace import describe_target
from adacal.errors import UnsupportedLayerError
from adacal.neurons import is_neuron_node
from adacal.neurons.analog import TimeState

__all__ = ["LayerInfo", "GraphAnalysis", "analyze_graph", "SPIKE", "ANALOG"]

log = logging.getLogger(__name__)

SPIKE, ANALOG, MIXED, CONST = "spike", "analog", "mixed", "const"
_SPIKY = (SPIKE, MIXED)
#: Ops that forward spikes as 0/1 connectivity (maybe with copies or sums): the spikes stay spikes.
_PASS = {Op.PASS, Op.CAST, Op.ADD, Op.SUM, Op.MEAN, Op.AVG_POOL, Op.ADAPTIVE_POOL, Op.CHANNEL_SCALE}
#: Products of two tensors: with two variable operands (e.g. a PointNet T-Net's learned matrix times the
#: features, kept in floating point with ``analog=[...]``) they cost their dense MACs every time they run.
_PRODUCTS: dict[Any, str] = {torch.bmm: "bmm", torch.matmul: "matmul", operator.matmul: "matmul",
                             torch.einsum: "einsum", "bmm": "bmm", "matmul": "matmul", "__matmul__": "matmul"}


@dataclass(frozen=True)
class LayerInfo:
    """One weighted layer call of the converted graph.

    ``kind``: ``"spike"`` (input is spikes: costs E_AC per synaptic event) or ``"analog"`` (costs
    E_MAC per MAC each time it runs). ``macs``: dense MACs for one sample (FLOPs / 2 from
    ``FlopCounterMode``). ``in_prefix``: it runs before any neuron (with a constant input and a
    splittable prefix it is computed once per input). ``sources``: neurons whose spikes reach it.
    ``synapses``: Σ of its fan-out maps — the synaptic events if every source position spiked once.
    ``input_fed``: its input is the network's (single) input passed on unweighted, so when the
    input is a stream of events the layer can run event-driven (one accumulate per synapse an input
    event reaches; fan-out map in :attr:`GraphAnalysis.input_fanouts`).
    """

    name: str
    op: str
    kind: str
    macs: int
    in_prefix: bool
    sources: tuple[str, ...] = ()
    synapses: int = 0
    input_fed: bool = False


@dataclass(frozen=True)
class GraphAnalysis:
    """Everything the energy model needs from the graph (see the module docstring)."""

    layers: tuple[LayerInfo, ...]
    neuron_shapes: dict[str, tuple[int, ...]]
    fanouts: dict[tuple[str, str], Tensor]  # (layer, neuron) -> per-sample fan-out map
    other_macs: int  # FLOPs/2 of ops that are not conv/linear layers (matmul, ...): priced as analog layers too
    input_fanouts: dict[str, Tensor] = dataclasses.field(default_factory=dict)  # input-fed layer -> map


# ------------------------------------------------------------------------------------------- helpers
def _has_tensor(x: Any) -> bool:
    if isinstance(x, Tensor):
        return True
    if isinstance(x, (list, tuple)):
        return any(_has_tensor(v) for v in x)
    return False


def _combine(kinds: Sequence[str]) -> str:
    live = {k for k in kinds if k != CONST}
    if not live:
        return CONST
    if len(live) == 1:
        return live.pop()
    return MIXED


def _module(gm: fx.GraphModule, node: fx.Node) -> nn.Module | None:
    return gm.get_submodule(str(node.target)) if node.op == "call_module" else None


def _first_arg(node: fx.Node, name: str = "input") -> Any:
    return node.args[0] if node.args else node.kwargs.get(name)


def _func_weight(node: fx.Node) -> Any:
    return node.args[1] if len(node.args) > 1 else node.kwargs.get("weight")


def _owner_name(node: fx.Node, op: str) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    owner = next(reversed(stack.values()))[0] if stack else ""
    return f"{owner}.{op}".strip(".") if owner else op


def _fmt_ops(ops: Counter[str]) -> str:
    return ", ".join(f"{k} x{v}" if v > 1 else k for k, v in ops.items())


# ------------------------------------------------------------------------------------------- pass 1
class _Profiler(fx.Interpreter):
    """Real forward pass on one sample: FLOPs per node, value kinds and spike sources."""

    def __init__(self, gm: fx.GraphModule) -> None:
        super().__init__(gm)
        self.gm = gm
        self.kind: dict[fx.Node, str] = {}
        self.sources: dict[fx.Node, frozenset[str]] = {}
        self.flops: dict[fx.Node, int] = {}
        self.shapes: dict[fx.Node, tuple[int, ...]] = {}
        self.weighted: dict[fx.Node, str] = {}  # node -> op description
        self.products: set[fx.Node] = set()  # weighted nodes that multiply two variable tensors
        self.nonlinear_on_spikes: Counter[str] = Counter()
        # values that are the (single) network input passed on unweighted: 0/1 connectivity to it
        self.input_path: set[fx.Node] = set()
        self._placeholders = [n for n in gm.graph.nodes if n.op == "placeholder"]

    def run_node(self, n: fx.Node) -> Any:
        if n.op in ("call_module", "call_function", "call_method"):
            with FlopCounterMode(display=False) as counter:
                out = super().run_node(n)
            self.flops[n] = int(counter.get_total_flops())
        else:
            out = super().run_node(n)
        if isinstance(out, Tensor):
            self.shapes[n] = tuple(out.shape)
        self.kind[n], self.sources[n] = self._classify(n, out)
        if self._on_input_path(n):
            self.input_path.add(n)
        return out

    def _on_input_path(self, n: fx.Node) -> bool:
        if n.op == "placeholder":
            return len(self._placeholders) == 1
        live = [i for i in n.all_input_nodes if self.kind.get(i) != CONST]
        if not live or not all(i in self.input_path for i in live):
            return False
        op = op_kind(self.gm, n)
        if op in _PASS:
            return True
        operands = [a for a in (*n.args, *n.kwargs.values()) if isinstance(a, fx.Node)]
        return op is Op.SCALE and len([a for a in operands if a in self.input_path]) == 1 and (
            n.target not in DIVISIONS or _first_arg(n, "input") in self.input_path)

    def _classify(self, n: fx.Node, out: Any) -> tuple[str, frozenset[str]]:
        gm = self.gm
        none: frozenset[str] = frozenset()
        if n.op == "placeholder":
            return ANALOG, none
        if n.op == "get_attr" or n.op == "output" or not _has_tensor(out):
            return CONST, none
        if is_neuron_node(gm, n):
            return SPIKE, frozenset({str(n.target)})
        ins = n.all_input_nodes
        kinds = [self.kind[i] for i in ins]
        srcs = frozenset().union(*(self.sources[i] for i in ins if self.kind[i] in _SPIKY))
        if isinstance(_module(gm, n), TimeState):  # running averages around an analog op: values, not spikes
            return ANALOG, none
        op = op_kind(gm, n)
        if op is Op.WEIGHTED and n.op == "call_module":
            self.weighted[n] = type(_module(gm, n)).__name__
            return ANALOG, none
        if op is Op.WEIGHTED:
            w = _func_weight(n)
            if not isinstance(w, fx.Node) or self.kind.get(w) == CONST:
                self.weighted[n] = WEIGHTED_FUNCS[n.target]
                return ANALOG, none
        product = _PRODUCTS.get(n.target if n.op == "call_function" else str(n.target)) if op is Op.SCALE else None
        operands = [self.kind[a] for a in (*n.args, *n.kwargs.values()) if isinstance(a, fx.Node)]
        if product is not None and len(operands) >= 2 and all(k != CONST for k in operands):
            self.weighted[n] = product  # two variable operands: an analog product, dense MACs per run
            self.products.add(n)
            return ANALOG, none
        if op in _PASS:
            kind = _combine(kinds)
            return kind, srcs if kind in _SPIKY else none
        if op is Op.SCALE:
            operands = [a for a in (*n.args, *n.kwargs.values()) if isinstance(a, fx.Node)]
            spiky = [a for a in operands if self.kind[a] in _SPIKY]  # with multiplicity: x*x is not linear
            others = [self.kind[a] for a in operands if self.kind[a] not in _SPIKY]
            if not spiky:
                return _combine(kinds), none
            carrier_first = _first_arg(n, "input") is spiky[0]
            if len(spiky) == 1 and all(k == CONST for k in others) and (
                n.target not in DIVISIONS or carrier_first
            ):
                return self.kind[spiky[0]], srcs
        if all(k == CONST for k in kinds):
            return CONST, none
        if any(k in _SPIKY for k in kinds):
            self.nonlinear_on_spikes[str(n.target) if n.op == "call_module" else n.name] += 1
        return ANALOG, none


# ------------------------------------------------------------------------------------------- pass 2
def _ntuple(v: Any, nd: int) -> tuple[int, ...]:
    if isinstance(v, (list, tuple)):
        return tuple(int(x) for x in v) if len(v) == nd else tuple(int(v[0]) for _ in range(nd))
    return tuple(int(v) for _ in range(nd))


def _sum_pool(nd: int, input: Tensor, kernel_size: Any, stride: Any = None, padding: Any = 0, ceil_mode: bool = False,
              count_include_pad: bool = True, divisor_override: Any = None) -> Tensor:
    """Average pooling without the division (same signature as ``F.avg_poolNd``)."""
    k = _ntuple(kernel_size, nd)
    s = k if stride is None or (isinstance(stride, (list, tuple)) and not stride) else _ntuple(stride, nd)
    p = _ntuple(padding, nd)
    if nd == 1:  # avg_pool1d has no divisor_override: go through 2d with a unit axis
        y = F.avg_pool2d(input.unsqueeze(-2), (1, k[0]), (1, s[0]), (0, p[0]), ceil_mode, True, divisor_override=1)
        return y.squeeze(-2)
    fn = F.avg_pool2d if nd == 2 else F.avg_pool3d
    return fn(input, k, s, p, ceil_mode, True, divisor_override=1)


def _adaptive_sum(nd: int, input: Tensor, output_size: Any) -> Tensor:
    """Adaptive average pooling times each cell's window size (windows may overlap)."""
    fn = (F.adaptive_avg_pool1d, F.adaptive_avg_pool2d, F.adaptive_avg_pool3d)[nd - 1]
    y = fn(input, output_size)
    for d in range(-nd, 0):
        length, out = input.shape[d], y.shape[d]
        idx = torch.arange(out, device=y.device)
        start = torch.div(idx * length, out, rounding_mode="floor")
        end = -torch.div(-(idx + 1) * length, out, rounding_mode="floor")
        shape = [1] * y.dim()
        shape[d] = out
        y = y * (end - start).to(y.dtype).view(shape)
    return y


def _indicator(v: Any, dtype: torch.dtype) -> Any:
    if isinstance(v, Tensor):
        return (v != 0).to(dtype).detach()
    if isinstance(v, (int, float)) and not isinstance(v, bool):
        return float(v != 0)
    return v


def _detach(x: Any) -> Any:
    if isinstance(x, Tensor):
        return x.detach()
    if isinstance(x, (list, tuple)):
        return type(x)(_detach(v) for v in x)
    if isinstance(x, dict):
        return {k: _detach(v) for k, v in x.items()}
    return x


class _FanoutTracer(fx.Interpreter):
    """The indicator network (module docstring); collects one scalar per spike-fed layer."""

    def __init__(self, gm: fx.GraphModule, profile: _Profiler, layer_of: dict[str, LayerInfo], dtype: torch.dtype,
                 device: torch.device) -> None:
        super().__init__(gm)
        self.gm = gm
        self.device = device
        # pass-1 facts keyed by node name (this graph is a deep copy of the profiled one)
        self.kind = {n.name: k for n, k in profile.kind.items()}
        self.input_path = {n.name for n in profile.input_path}
        self.shape = {n.name: s for n, s in profile.shapes.items()}
        self.layer_of = layer_of
        self.dtype = dtype
        self.leaves: dict[str, Tensor] = {}
        self.scalars: dict[str, Tensor] = {}

    def run_node(self, n: fx.Node) -> Any:
        if n.op in ("placeholder", "get_attr", "output"):
            return super().run_node(n)
        gm = self.gm
        if is_neuron_node(gm, n):
            leaf = torch.ones(self.shape[n.name], dtype=self.dtype, device=self.device, requires_grad=True)
            self.leaves[str(n.target)] = leaf
            return leaf
        with self._set_current_node(n):
            args, kwargs = self.fetch_args_kwargs_from_env(n)
        layer = self.layer_of.get(n.name)
        if layer is not None:
            if n.op == "call_function" and n.target in WEIGHTED_FUNCS:  # indicator weight, no bias
                args, kwargs = self._functional_indicator(args, kwargs)
            if layer.kind != SPIKE and not layer.input_fed:
                with torch.no_grad():
                    return getattr(self, n.op)(n.target, _detach(args), _detach(kwargs))
            if layer.kind != SPIKE:  # input-fed: only its input leaf carries a gradient
                args, kwargs = self._only_input(n, args, kwargs)
            y = getattr(self, n.op)(n.target, args, kwargs)
            self.scalars[layer.name] = y.sum()
            return y.detach()
        if self.kind.get(n.name) in _SPIKY or n.name in self.input_path:
            return self._positive(gm, n, args, kwargs)
        with torch.no_grad():
            return getattr(self, n.op)(n.target, _detach(args), _detach(kwargs))

    def _only_input(self, n: fx.Node, args: tuple[Any, ...], kwargs: dict[str, Any]) -> tuple[Any, Any]:
        """Arguments of an input-fed layer with everything but its input detached."""
        first = _first_arg(n)
        if n.args and first is n.args[0]:
            return (args[0], *_detach(args[1:])), _detach(kwargs)
        return _detach(args), {k: (v if k == "input" else _detach(v)) for k, v in kwargs.items()}

    def _functional_indicator(
        self, args: tuple[Any, ...], kwargs: dict[str, Any]
    ) -> tuple[tuple[Any, ...], dict[str, Any]]:
        a = list(args)
        kw = dict(kwargs)
        if len(a) > 1:
            a[1] = _indicator(a[1], self.dtype)
        elif "weight" in kw:
            kw["weight"] = _indicator(kw["weight"], self.dtype)
        if len(a) > 2:
            a[2] = None
        kw.pop("bias", None)
        return tuple(a), kw

    def _positive(self, gm: fx.GraphModule, n: fx.Node, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """The op with every coefficient on the spikes replaced by its 0/1 connectivity."""
        op, t = op_kind(gm, n), n.target
        x = args[0] if args else None
        if op is Op.CHANNEL_SCALE:
            mod = gm.get_submodule(str(t))
            return x * _indicator(mod.scale, x.dtype).view([1, -1] + [1] * (x.dim() - 2))
        if op is Op.AVG_POOL:  # a spike reaches every pooled cell covering it
            if n.op == "call_module":
                mod = gm.get_submodule(str(t))
                return _sum_pool(pool_dims(gm, n), x, mod.kernel_size, mod.stride, mod.padding, mod.ceil_mode)
            return partial(_sum_pool, pool_dims(gm, n))(*args, **kwargs)
        if op is Op.ADAPTIVE_POOL:
            if n.op == "call_module":
                return _adaptive_sum(pool_dims(gm, n), x, gm.get_submodule(str(t)).output_size)
            return partial(_adaptive_sum, pool_dims(gm, n))(*args, **kwargs)
        if op is Op.ADD:  # subtraction and negation reach the same synapses as addition
            return self._add(args)
        if op is Op.MEAN:
            return torch.sum(*args, **kwargs) if n.op == "call_function" else x.sum(*args[1:], **kwargs)
        if op is Op.CAST:  # keep the analysis dtype: fan-outs must stay exact integers
            return x
        if op is Op.SCALE:
            return self._scale(n, args)
        return getattr(self, n.op)(t, args, kwargs)

    @staticmethod
    def _add(args: tuple[Any, ...]) -> Any:
        ts = [a for a in args[:2] if isinstance(a, Tensor)]
        if not ts:
            return args[0]
        return ts[0] if len(ts) == 1 else ts[0] + ts[1]

    def _scale(self, n: fx.Node, args: tuple[Any, ...]) -> Any:
        a, b = args[0], args[1] if len(args) > 1 else 1.0
        first = n.args[0] if n.args else None
        a_spiky = isinstance(first, fx.Node) and (self.kind.get(first.name) in _SPIKY
                                                  or first.name in self.input_path)
        if a_spiky:
            return a * _indicator(b, self.dtype)
        return b * _indicator(a, self.dtype)


# ------------------------------------------------------------------------------------------- driver
def analyze_graph(gm: fx.GraphModule, example: Any) -> GraphAnalysis:
    """Classify layers, count their MACs and build fan-out maps on one sample ``example[:1]``.

    ``gm`` must be in a state where neurons act as their activation (ANN mode); it is not
    modified (the indicator pass runs on a deep copy in float64 — float32 on MPS).
    """
    from adacal.convert.prepare import positional

    x = positional(gm, inputs.map_tensors(lambda t: t[:1], example))
    profile = _Profiler(gm)
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)  # the fused attention kernel is invisible to the FLOP counter
    try:
        with torch.no_grad():
            profile.run(*x)
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)

    neuron_nodes = [n for n in gm.graph.nodes if is_neuron_node(gm, n)]
    calls = Counter(str(n.target) for n in neuron_nodes)
    reused = sorted(k for k, v in calls.items() if v > 1)
    if reused:
        raise UnsupportedLayerError(
            f"neuron module(s) {reused} are called at more than one place in the graph; their spike "
            "counts mix both uses, so the synaptic operations cannot be attributed exactly. Use one "
            "activation module per call site (adacal.convert.prepare does this for you)."
        )
    neuron_shapes = {str(n.target): tuple(profile.shapes[n][1:]) for n in neuron_nodes}
    if profile.nonlinear_on_spikes:
        log.warning(
            "ops on the spiking path that are not linear in the spikes: %s; weighted layers after "
            "them are counted as analog (dense MACs every step)", _fmt_ops(profile.nonlinear_on_spikes),
        )

    spiking = spiking_nodes(gm)
    used: Counter[str] = Counter()
    layers: list[LayerInfo] = []
    layer_of: dict[str, LayerInfo] = {}
    mixed: list[str] = []
    for n in gm.graph.nodes:
        if n not in profile.weighted:
            continue
        op = profile.weighted[n]
        base = str(n.target) if n.op == "call_module" else _owner_name(n, op)
        name = base if not used[base] else f"{base}_{used[base]}"
        used[base] += 1
        inp = _first_arg(n)
        in_kind = profile.kind.get(inp, ANALOG) if isinstance(inp, fx.Node) else CONST
        if in_kind == MIXED and n not in profile.products:
            mixed.append(name)
        kind = SPIKE if in_kind == SPIKE and n not in profile.products else ANALOG
        sources = tuple(sorted(profile.sources[inp], key=list(neuron_shapes).index)) if kind == SPIKE else ()
        info = LayerInfo(name=name, op=op, kind=kind, macs=profile.flops.get(n, 0) // 2,
                         in_prefix=n not in spiking, sources=sources,
                         input_fed=isinstance(inp, fx.Node) and inp in profile.input_path)
        layers.append(info)
        layer_of[n.name] = info
    if mixed:
        log.warning("layers %s receive spikes and analog values summed; counted as analog (dense MACs "
                    "every step)", mixed)
    other_macs = 0
    for n in gm.graph.nodes:  # matmuls, attention, ... kept in floating point: MACs each time they run
        macs = profile.flops.get(n, 0) // 2
        if macs and n not in profile.weighted:
            base = str(n.target) if n.op == "call_module" else n.name
            name = base if not used[base] else f"{base}_{used[base]}"
            used[base] += 1
            layers.append(LayerInfo(name=name, op=describe_target(gm, n), kind=ANALOG, macs=macs,
                                    in_prefix=n not in spiking))
            other_macs += macs
    if other_macs:
        log.info("%d MACs per sample come from ops that are not conv/linear layers (e.g. matmul); priced as "
                 "analog MACs each time they run", other_macs)

    fanouts, input_fanouts = _fanouts(gm, x, profile, layer_of)
    final = []
    for info in layers:
        if info.kind == SPIKE:
            total = sum(float(fanouts[(info.name, s)].sum()) for s in info.sources)
            info = dataclasses.replace(info, synapses=int(round(total)))
        final.append(info)
    return GraphAnalysis(tuple(final), neuron_shapes, fanouts, int(other_macs), input_fanouts)


def _fanouts(
    gm: fx.GraphModule, x: tuple[Any, ...], profile: _Profiler, layer_of: dict[str, LayerInfo]
) -> tuple[dict[tuple[str, str], Tensor], dict[str, Tensor]]:
    spike_layers = [info for info in layer_of.values() if info.kind == SPIKE]
    input_layers = [info for info in layer_of.values() if info.input_fed]
    if not spike_layers and not input_layers:
        return {}, {}
    with torch.inference_mode(False), torch.enable_grad():  # the fan-outs are gradients
        return _fanouts_impl(gm, x, profile, layer_of, spike_layers, input_layers)


def _fanouts_impl(
    gm: fx.GraphModule, x: tuple[Any, ...], profile: _Profiler, layer_of: dict[str, LayerInfo],
    spike_layers: list[LayerInfo], input_layers: list[LayerInfo],
) -> tuple[dict[tuple[str, str], Tensor], dict[str, Tensor]]:
    device = inputs.leaves(x)[0].device
    dtype = torch.float32 if device.type == "mps" else torch.float64  # MPS has no float64
    work = copy.deepcopy(gm).to(dtype)
    for p in work.parameters():
        p.requires_grad_(False)
    with torch.no_grad():
        for node_name in layer_of:
            node = next(n for n in work.graph.nodes if n.name == node_name)
            if node.op != "call_module":
                continue
            mod = work.get_submodule(str(node.target))
            mod.weight.copy_((mod.weight != 0).to(dtype))
            if getattr(mod, "bias", None) is not None:
                mod.bias.zero_()
    tracer = _FanoutTracer(work, profile, layer_of, dtype, device)
    xs = inputs.map_tensors(lambda t: t.to(dtype) if t.is_floating_point() else t.clone(), x)
    if input_layers:  # the input as a leaf of ones: its gradients are the input fan-out maps
        xs = (torch.ones_like(xs[0], requires_grad=True),)
    tracer.run(*xs)
    inputs_out: dict[str, Tensor] = {}
    for info in input_layers:
        scalar = tracer.scalars[info.name]
        (g,) = torch.autograd.grad(scalar, [xs[0]], retain_graph=True, allow_unused=True)
        inputs_out[info.name] = (torch.zeros_like(xs[0]) if g is None else g.detach()).round()[0]
    out: dict[tuple[str, str], Tensor] = {}
    for info in spike_layers:
        leaves = [tracer.leaves[s] for s in info.sources]
        scalar = tracer.scalars[info.name]
        grads: Sequence[Tensor | None] = (
            torch.autograd.grad(scalar, leaves, retain_graph=True, allow_unused=True)
            if scalar.requires_grad else [None] * len(leaves)
        )
        for src, leaf, g in zip(info.sources, leaves, grads):
            g = torch.zeros_like(leaf) if g is None else g.detach()
            r = g.round()
            err = float((g - r).abs().max()) if g.numel() else 0.0
            if err > 1e-6:
                log.warning("fan-out %s -> %s is not integral (max deviation %.3g); an op on the path is "
                            "not a 0/1 connection", src, info.name, err)
            out[(info.name, src)] = r[0]
    return out, inputs_out

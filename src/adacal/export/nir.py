"""Export a converted SNN to NIR (the Neuromorphic Intermediate Representation), exactly or not at all.

NIR (``nir`` >= 1.0.8) describes networks by their dynamics, for every simulator and chip to read.
Its ``IF`` node *resets to* ``v_reset`` and fires when ``v > v_threshold``; adacal's neuron resets
*by subtraction*, fires when ``u >= θ'``, starts at ``u(0) = v_init·θ' + v_offset`` and may burst
up to φ spikes per step. NIR has no reset-mode switch and no initial state, so the IF node cannot
carry adacal's neuron. What it can carry exactly is the spike-response-model decomposition that
NIR's own primitives spell out — this is the default ``neuron_form="exact"``:

* ``<name>.v`` — ``nir.I`` (``r = 1``): the integrator ``v(t) = v(t-1) + input(t)``, ``v(0) = 0``.
* ``<name>.fire`` (``.fire1 .. .fireφ`` for a burst neuron) — ``nir.Threshold`` (``v > thr_k``)
  with ``thr_k`` the largest number of the export dtype below ``k·θ' − u0``. So ``v > thr_k`` is
  ``u0 + v >= k·θ'`` (adacal's ``>=`` and its initial potential ``u0``, folded into the threshold),
  and ``Σ_k [v > thr_k] = clamp(floor(u/θ'), 0, φ)`` (the burst cap φ, exactly).
* ``<name>.reset`` — ``nir.Scale(−θ')`` fed by the fire nodes and feeding ``<name>.v``: reset by
  subtraction as negative feedback (a recurrent edge: it reaches the integrator at the next step,
  which is exactly when adacal's reset matters).
* ``<name>`` — ``nir.Scale(θ')``: the neuron's output ``n·θ'`` (a spike carries θ').

Linear ops map one to one: Conv1d/Conv2d -> ``Conv1d``/``Conv2d``, Linear -> ``Affine``, an
unfolded BatchNorm (:class:`~adacal.convert.fold_bn.ChannelAffine`) -> a depthwise 1x1 conv (or a
diagonal ``Affine``), average pooling -> ``AvgPool2d``, flatten/view -> ``Flatten``, residual sums
-> several edges into one node (NIR sums a node's inputs), scalar multiples -> ``Scale``. Bias
corrections (``bias_offset``) are folded into the bias of the weighted layer that feeds the neuron
alone (through a residual sum if need be); where none exists, an identity depthwise conv carries it.
The constant-input prefix is written as ordinary nodes that the input feeds every step.

Exactness means: equal in real arithmetic. Another simulator may round sums in another order, so
bit-for-bit equality holds when the partial sums are representable (the round-trip test uses
dyadic weights and inputs and gets identical spike counts and outputs).

Not representable (the export fails listing every node, and says which ones ``allow_lossy=True``
accepts): max-pools (NIR has no max; written as ``AvgPool2d`` of the same window when allowed),
early-exit policies (NIR graphs run a fixed number of steps; the policy goes to metadata), and
with ``neuron_form="if"`` every neuron (a ``nir.IF`` resets to 0, fires on ``>``, starts at 0 and
emits one spike per step; θ', φ, u0 and the reset mode go to node metadata). Ops that have no NIR
counterpart at all (concatenation, Conv3d, transposed convs, analog ops kept in floating point, ...)
are refused with or without ``allow_lossy``. Whatever is accepted as lossy is logged (a warning per
node) and recorded in the file (graph metadata ``adacal`` -> ``lossy``).
"""
from __future__ import annotations

import json
import logging
import operator
import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any, Literal, cast

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor, fx, nn

from adacal.convert.fold_bn import ChannelAffine
from adacal.convert.trace import describe_target, qualname
from adacal.errors import AdacalError, ConfigError, DataError, UnsupportedLayerError
from adacal.neurons.module import IFNeuron
from adacal.neurons.pool import SpikingMaxPool2d
from adacal.spiking_model import SpikingModel

__all__ = ["NIRError", "NIRExportError", "NIRIssue", "export_nir", "export_run_folder", "FORMAT", "NEURON_FORMS"]

log = logging.getLogger(__name__)

#: Graph metadata key ``adacal`` holds a JSON object with this ``format`` tag.
FORMAT = "adacal-nir/1"
NEURON_FORMS = ("exact", "if")
NeuronForm = Literal["exact", "if"]

_CONVS = (nn.Conv1d, nn.Conv2d)
_ALIAS_MODULES = (nn.Identity, nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout)
_ALIAS_FUNCS = {F.dropout, F.dropout1d, F.dropout2d, F.dropout3d}
_ALIAS_METHODS = {"contiguous", "clone", "detach"}
_ADD = {operator.add, operator.iadd, torch.add, "add", "add_"}
_SUB = {operator.sub, operator.isub, torch.sub, torch.subtract, "sub", "sub_"}
_NEG = {operator.neg, torch.neg, "neg"}
_MUL = {operator.mul, operator.imul, torch.mul, "mul", "mul_"}
_DIV = {operator.truediv, operator.itruediv, torch.div, torch.true_divide, "div", "div_"}
_RESHAPE = {torch.flatten, torch.reshape, "flatten", "view", "reshape"}
_MAXPOOL_FUNCS = {F.max_pool2d, torch.max_pool2d}

_Src = dict[str, float]  # NIR node name -> coefficient; the value is Σ coefficient·output


class NIRError(AdacalError):
    """NIR interchange failed (the ``nir`` package is missing, or a file cannot be read/written)."""


@dataclass(frozen=True)
class NIRIssue:
    """One node NIR cannot represent exactly. ``lossy``: ``allow_lossy=True`` writes an approximation."""

    node: str
    op: str
    what: str
    lossy: bool

    def line(self) -> str:
        tag = "lossy, allow_lossy=True writes it" if self.lossy else "no NIR equivalent, not exportable"
        return f"  - {self.node} ({self.op}): {self.what} [{tag}]"

    def to_dict(self) -> dict[str, Any]:
        return {"node": self.node, "op": self.op, "what": self.what, "lossy": self.lossy}


class NIRExportError(NIRError, UnsupportedLayerError):
    """The network holds ops NIR cannot represent exactly; ``issues`` lists every one."""

    def __init__(self, message: str, issues: list[NIRIssue]) -> None:
        super().__init__(message)
        self.issues = issues


def require_nir() -> ModuleType:
    """The ``nir`` package, or a clear error saying how to install it."""
    try:
        import nir
    except ImportError as exc:  # pragma: no cover - exercised only without the extra
        raise NIRError("NIR interchange needs the 'nir' package: pip install 'adacal[nir]'") from exc
    return nir


def below(bound: np.ndarray, dtype: np.dtype[Any]) -> np.ndarray:
    """The largest value of ``dtype`` strictly below ``bound`` (float64), elementwise.

    ``v > below(b)`` is then ``v >= b`` for every ``v`` of ``dtype``: how adacal's ``>=`` firing
    rule is written with NIR's strict ``>``.
    """
    t = bound.astype(dtype)
    return np.where(t.astype(np.float64) >= bound, np.nextafter(t, dtype.type(-np.inf)), t).astype(dtype)


class _Shapes(fx.Interpreter):
    """Runs the graph once (ANN mode) and records every node's output shape (None: not a tensor)."""

    def __init__(self, gm: fx.GraphModule) -> None:
        super().__init__(gm)
        self.shapes: dict[fx.Node, tuple[int, ...] | None] = {}

    def run_node(self, n: fx.Node) -> Any:
        out = super().run_node(n)
        self.shapes[n] = tuple(out.shape) if isinstance(out, Tensor) else None
        return out


def _in(node: fx.Node, ops: set[Any]) -> bool:
    return node.op in ("call_function", "call_method") and node.target in ops


def _np(t: Tensor, dtype: np.dtype[Any]) -> np.ndarray:
    return t.detach().cpu().to(torch.float64).numpy().astype(dtype)


def buffers(mod: nn.Module) -> dict[str, Tensor]:
    """A module's own buffers by name (typed: attribute access on a Module is ``Tensor | Module``)."""
    return dict(mod.named_buffers(recurse=False))


def _dense(weight: Tensor, groups: int) -> Tensor:
    """A grouped conv's weight as the equivalent dense (block-diagonal) weight: exact, zeros elsewhere.

    NIR 1.0.8 infers a conv's input channels from ``weight.shape[1]`` whatever ``groups`` says, so a
    grouped conv would not type-check when read back.
    """
    if groups == 1:
        return weight
    out_c, in_per = weight.shape[:2]
    dense = weight.new_zeros((out_c, in_per * groups, *weight.shape[2:]))
    per_out = out_c // groups
    for g in range(groups):
        dense[g * per_out:(g + 1) * per_out, g * in_per:(g + 1) * in_per] = weight[g * per_out:(g + 1) * per_out]
    return dense


def _pair(v: Any, n: int) -> tuple[int, ...]:
    if isinstance(v, (tuple, list)):
        return tuple(int(x) for x in v) if len(v) == n else tuple(int(v[0]) for _ in range(n))
    return tuple(int(v) for _ in range(n))


class _Exporter:
    """Builds the NIR nodes and edges for one :class:`SpikingModel` (see the module docstring)."""

    def __init__(self, snn: SpikingModel, example: Tensor, *, neuron_form: str) -> None:
        self.nir = require_nir()
        self.snn = snn
        self.gm = snn.graph_module
        self.form = neuron_form
        self.nodes: dict[str, Any] = {}
        self.edges: list[tuple[str, str]] = []
        self.shape_of: dict[str, tuple[int, ...]] = {}  # NIR node -> per-sample output shape
        self.src: dict[fx.Node, _Src] = {}
        self.issues: list[NIRIssue] = []
        self.extra_bias: dict[fx.Node, Tensor] = {}  # carrier layer -> per-channel bias to add
        self.bias_nodes: dict[fx.Node, Tensor] = {}  # neuron -> bias node needed in front
        self._scaled: dict[tuple[str, float], str] = {}
        self.torch_dtype = self._float_dtype()
        # float64 models export float64 arrays; every other float dtype fits float32 exactly
        self.dtype = np.dtype(np.float64 if self.torch_dtype == torch.float64 else np.float32)
        with torch.no_grad(), snn.mode("ann"):
            rec = _Shapes(self.gm)
            rec.run(example)
        self.shapes = rec.shapes

    def _float_dtype(self) -> torch.dtype:
        for t in (*self.gm.parameters(), *self.gm.buffers()):
            if t.is_floating_point():
                return t.dtype
        return torch.get_default_dtype()

    # ------------------------------------------------------------------ bookkeeping
    def _name(self, base: str) -> str:
        name, k = base, 1
        while name in self.nodes or name in ("input", "output"):
            name, k = f"{base}_{k}", k + 1
        return name

    def _add(self, name: str, node: Any, shape: tuple[int, ...]) -> str:
        if name in self.nodes:
            raise ValueError(f"NIR node name {name!r} is taken twice")
        self.nodes[name] = node
        self.shape_of[name] = tuple(int(s) for s in shape)
        return name

    def _edge(self, a: str, b: str) -> None:
        if (a, b) not in self.edges:
            self.edges.append((a, b))

    def _connect(self, src: _Src, dst: str) -> None:
        """Edges from every source into ``dst`` (NIR sums a node's inputs); coefficients ≠ 1 via Scale."""
        for name, coef in src.items():
            if coef == 0:
                continue
            if coef == 1:
                self._edge(name, dst)
                continue
            key = (name, float(coef))
            if key not in self._scaled:
                shape = self.shape_of[name]
                sname = self._name(f"{name}.times{len(self._scaled)}")
                scale = np.full(shape, coef, dtype=self.dtype)
                self._add(sname, self.nir.Scale(scale=scale), shape)
                self._edge(name, sname)
                self._scaled[key] = sname
            self._edge(self._scaled[key], dst)

    def _issue(self, node: fx.Node, what: str, *, lossy: bool) -> None:
        self.issues.append(NIRIssue(qualname(node), describe_target(self.gm, node), what, lossy))

    def _tensor_args(self, node: fx.Node) -> list[fx.Node]:
        return [a for a in node.all_input_nodes if self.shapes.get(a) is not None and a.op != "get_attr"]

    def _source(self, node: fx.Node) -> _Src:
        return self.src.get(node, {})

    def _per_sample(self, node: fx.Node) -> tuple[int, ...]:
        shape = self.shapes[node]
        if shape is None:
            raise ValueError(f"{node.name} is not a tensor")
        return shape[1:]

    # ------------------------------------------------------------------ bias corrections
    def _module(self, node: fx.Node) -> nn.Module | None:
        return self.gm.get_submodule(str(node.target)) if node.op == "call_module" else None

    def _carrier(self, z: fx.Node, sign: float) -> tuple[fx.Node, float] | None:
        """A weighted layer whose output reaches only ``z`` through sums: its bias can take a correction."""
        if len(z.users) != 1:
            return None
        mod = self._module(z)
        if isinstance(mod, (*_CONVS, nn.Linear, ChannelAffine)):
            return z, sign
        if isinstance(mod, _ALIAS_MODULES) or _in(z, _ALIAS_FUNCS | _ALIAS_METHODS):
            return self._carrier(z.all_input_nodes[0], sign) if z.all_input_nodes else None
        if _in(z, _ADD | _SUB):
            operands = [a for a in z.args[:2] if isinstance(a, fx.Node)]
            for i, a in enumerate(operands):
                found = self._carrier(a, -sign if (i == 1 and _in(z, _SUB)) else sign)
                if found is not None:
                    return found
        return None

    def _plan_biases(self) -> None:
        for node in self.gm.graph.nodes:
            mod = self._module(node)
            if not isinstance(mod, IFNeuron) or not isinstance(node.args[0], fx.Node):
                continue
            offset = buffers(mod)["bias_offset"].detach()
            if not bool((offset != 0).any()):
                continue
            z = node.args[0]
            channels = self._per_sample(z)[0]
            vec = offset.reshape(-1).to(torch.float64)
            vec = vec.expand(channels).clone() if vec.numel() == 1 else vec
            found = self._carrier(z, 1.0)
            if found is None:
                self.bias_nodes[node] = vec
            else:
                carrier, sign = found
                prev = self.extra_bias.get(carrier)
                self.extra_bias[carrier] = sign * vec if prev is None else prev + sign * vec

    def _bias(self, node: fx.Node, bias: Tensor | None, channels: int) -> np.ndarray:
        """The layer's bias plus any bias correction it carries (summed in the model's dtype)."""
        b = torch.zeros(channels, dtype=self.torch_dtype) if bias is None else bias.detach().cpu().to(self.torch_dtype)
        if node in self.extra_bias:
            b = b + self.extra_bias[node].to(self.torch_dtype)
        return _np(b, self.dtype)

    # ------------------------------------------------------------------ export
    def run(self) -> tuple[dict[str, Any], list[tuple[str, str]]]:
        self._plan_biases()
        inputs = [n for n in self.gm.graph.nodes if n.op == "placeholder"]
        for extra in inputs[1:]:
            self._issue(extra, "a second graph input; NIR export supports one input", lossy=False)
        for node in self.gm.graph.nodes:
            if node in inputs[1:]:
                continue
            try:
                self._visit(node)
            except (ValueError, TypeError, AssertionError) as exc:  # a NIR node refused its parameters
                self._issue(node, f"cannot be written as NIR ({type(exc).__name__}: {exc})", lossy=False)
        return self.nodes, self.edges

    def _visit(self, node: fx.Node) -> None:
        if node.op == "placeholder":
            shape = self._per_sample(node)
            self._add("input", self.nir.Input(input_type=np.array(shape)), shape)
            self.src[node] = {"input": 1.0}
            return
        if node.op == "get_attr" or (self.shapes.get(node) is None and node.op != "output"):
            return  # constants and shape arithmetic (x.size(0)) are consumed by the ops that use them
        if node.op == "output":
            self._output(node)
            return
        mod = self._module(node)
        if isinstance(mod, IFNeuron):
            self._neuron(node, mod)
        elif isinstance(mod, _CONVS):
            self._conv(node, mod)
        elif isinstance(mod, nn.Linear):
            self._linear(node, mod)
        elif isinstance(mod, ChannelAffine):
            self._channel_affine(node, mod)
        elif isinstance(mod, (nn.AvgPool2d, nn.AdaptiveAvgPool2d)) or _in(node, {F.avg_pool2d, F.adaptive_avg_pool2d}):
            self._avg_pool(node, mod)
        elif isinstance(mod, (nn.MaxPool2d, SpikingMaxPool2d)) or _in(node, _MAXPOOL_FUNCS):
            self._max_pool(node, mod)
        elif isinstance(mod, nn.Flatten) or _in(node, _RESHAPE):
            self._reshape(node)
        elif isinstance(mod, _ALIAS_MODULES) or _in(node, _ALIAS_FUNCS | _ALIAS_METHODS):
            self.src[node] = dict(self._source(node.all_input_nodes[0]))
        elif _in(node, _ADD | _SUB | _NEG | _MUL | _DIV):
            self._arith(node)
        else:
            self._issue(node, "no NIR node for this op", lossy=False)

    def _output(self, node: fx.Node) -> None:
        arg = node.args[0]
        if not isinstance(arg, fx.Node) or self.shapes.get(arg) is None:
            self._issue(node, "the network returns several values; NIR export supports one output", lossy=False)
            return
        shape = self._per_sample(arg)
        src = self._source(arg)
        if len(src) == 1 and next(iter(src.values())) == 1:
            self._add("output", self.nir.Output(output_type=np.array(shape)), shape)
            self._connect(src, "output")
            return
        # A sum (or a scaled value) as the network output: one Scale(1) node does the summing.
        name = self._add(self._name("output_sum"), self.nir.Scale(scale=np.ones(shape, dtype=self.dtype)), shape)
        self._connect(src, name)
        self._add("output", self.nir.Output(output_type=np.array(shape)), shape)
        self._edge(name, "output")

    def _single_input(self, node: fx.Node) -> fx.Node:
        ins = self._tensor_args(node)
        if len(ins) != 1:
            raise ValueError(f"expected one tensor input, got {len(ins)}")
        return ins[0]

    def _layer(self, node: fx.Node, nir_node: Any, base: str | None = None) -> str:
        x = self._single_input(node)
        name = self._add(self._name(base or qualname(node)), nir_node, self._per_sample(node))
        self._connect(self._source(x), name)
        self.src[node] = {name: 1.0}
        return name

    def _conv(self, node: fx.Node, mod: nn.Conv1d | nn.Conv2d) -> None:
        if mod.padding_mode != "zeros":
            self._issue(node, f"padding_mode={mod.padding_mode!r} (NIR convolutions pad with zeros)", lossy=False)
            return
        x = self._single_input(node)
        spatial = self._per_sample(x)[1:]
        dims = 1 if isinstance(mod, nn.Conv1d) else 2
        weight = _np(_dense(mod.weight, int(mod.groups)), self.dtype)
        bias = self._bias(node, mod.bias, mod.out_channels)
        padding: Any = mod.padding if isinstance(mod.padding, str) else _pair(mod.padding, dims)
        if dims == 1:
            nir_node = self.nir.Conv1d(input_shape=int(spatial[0]), weight=weight, stride=int(_pair(mod.stride, 1)[0]),
                                       padding=padding if isinstance(padding, str) else int(padding[0]),
                                       dilation=int(_pair(mod.dilation, 1)[0]), groups=1, bias=bias)
        else:
            nir_node = self.nir.Conv2d(
                input_shape=tuple(int(s) for s in spatial), weight=weight, stride=_pair(mod.stride, 2),
                padding=padding, dilation=_pair(mod.dilation, 2), groups=1, bias=bias,
            )
        self._layer(node, nir_node)

    def _linear(self, node: fx.Node, mod: nn.Linear) -> None:
        x = self._single_input(node)
        if len(self._per_sample(x)) != 1:
            self._issue(node, "Linear on a tensor of rank > 2 (NIR Affine maps one feature vector)", lossy=False)
            return
        weight = _np(mod.weight, self.dtype)
        self._layer(node, self.nir.Affine(weight=weight, bias=self._bias(node, mod.bias, mod.out_features)))

    def _channel_affine(self, node: fx.Node, mod: ChannelAffine) -> None:
        x = self._single_input(node)
        shape = self._per_sample(x)
        c = shape[0]
        b = buffers(mod)
        scale = b["scale"].detach().reshape(-1).expand(c)
        bias = self._bias(node, b["shift"].reshape(-1).expand(c), c)
        if len(shape) == 1:
            weight = np.diag(_np(scale, self.dtype)).astype(self.dtype)
            self._layer(node, self.nir.Affine(weight=weight, bias=bias))
        elif len(shape) in (2, 3):
            self._layer(node, self._depthwise(scale, bias, shape))
        else:
            self._issue(node, "per-channel affine on a rank > 4 tensor", lossy=False)

    def _depthwise(self, scale: Tensor, bias: np.ndarray, shape: tuple[int, ...]) -> Any:
        """``x·scale + bias`` per channel as a 1x1 convolution with a diagonal weight.

        Exact: each output is one product plus zeros plus the bias. (Not a grouped conv: NIR 1.0.8
        type-checks a conv's input channels as ``weight.shape[1]``, ignoring ``groups``.)
        """
        c = shape[0]
        diag = np.diag(_np(scale, self.dtype)).astype(self.dtype)
        if len(shape) == 2:
            return self.nir.Conv1d(input_shape=int(shape[1]), weight=diag.reshape(c, c, 1), stride=1, padding=0,
                                   dilation=1, groups=1, bias=bias)
        return self.nir.Conv2d(input_shape=(int(shape[1]), int(shape[2])), weight=diag.reshape(c, c, 1, 1),
                               stride=(1, 1), padding=(0, 0), dilation=(1, 1), groups=1, bias=bias)

    def _pool_params(self, node: fx.Node, mod: nn.Module | None) -> tuple[Any, ...] | None:
        """(kernel, stride, padding) of a 2-d average/max pool, or None after recording why not."""
        x = self._single_input(node)
        h, w = self._per_sample(x)[1:]
        size: Any
        if isinstance(mod, nn.AdaptiveAvgPool2d) or _in(node, {F.adaptive_avg_pool2d}):
            if mod is not None:
                size = mod.output_size
            else:
                size = node.args[1] if len(node.args) > 1 else node.kwargs["output_size"]
            if isinstance(size, (tuple, list)):
                oh, ow = int(size[0] or h), int(size[1] or w)
            else:
                oh = ow = int(size)
            if h % oh or w % ow:
                self._issue(node, f"adaptive pooling {h}x{w} -> {oh}x{ow} has uneven windows", lossy=False)
                return None
            window = (h // oh, w // ow)
            return window, window, (0, 0)
        kernel: Any
        stride: Any
        padding: Any
        ceil: Any
        extra: dict[str, Any]
        if mod is not None:
            kernel, stride, padding = mod.kernel_size, mod.stride, mod.padding
            ceil = mod.ceil_mode
            extra = {"count_include_pad": getattr(mod, "count_include_pad", True),
                     "divisor_override": getattr(mod, "divisor_override", None),
                     "dilation": getattr(mod, "dilation", 1)}
        else:
            names = ["kernel_size", "stride", "padding", "ceil_mode", "count_include_pad", "divisor_override"]
            if node.target in _MAXPOOL_FUNCS:
                names = ["kernel_size", "stride", "padding", "dilation", "ceil_mode"]
            params: dict[str, Any] = dict(zip(names, node.args[1:]))
            params.update(node.kwargs)
            kernel = params["kernel_size"]
            stride = params.get("stride") or kernel
            padding = params.get("padding", 0)
            ceil = params.get("ceil_mode", False)
            extra = {k: params.get(k) for k in ("count_include_pad", "divisor_override", "dilation")}
        k, s, p = _pair(kernel, 2), _pair(stride if stride is not None else kernel, 2), _pair(padding, 2)
        if ceil:
            self._issue(node, "ceil_mode=True pooling (NIR pools floor the output size)", lossy=False)
            return None
        if extra.get("divisor_override"):
            self._issue(node, "pooling with divisor_override", lossy=False)
            return None
        if any(p) and extra.get("count_include_pad") is False:
            self._issue(node, "padded average pooling with count_include_pad=False", lossy=False)
            return None
        if _pair(extra.get("dilation") or 1, 2) != (1, 1):
            self._issue(node, "dilated pooling", lossy=False)
            return None
        return k, s, p

    def _avg_pool(self, node: fx.Node, mod: nn.Module | None) -> None:
        params = self._pool_params(node, mod)
        if params is None:
            return
        k, s, p = (np.array(v) for v in params)
        self._layer(node, self.nir.AvgPool2d(kernel_size=k, stride=s, padding=p))

    def _max_pool(self, node: fx.Node, mod: nn.Module | None) -> None:
        pooled = "accumulated spike currents" if isinstance(mod, SpikingMaxPool2d) else "input currents"
        what = (f"max-pooling of {pooled}; NIR has no max-pool: written as AvgPool2d of the same window, "
                "which changes the network")
        self._issue(node, what, lossy=True)
        params = self._pool_params(node, mod)
        if params is None:
            return
        k, s, p = (np.array(v) for v in params)
        meta = {"adacal": json.dumps({"op": "max_pool2d", "kernel_size": params[0], "stride": params[1],
                                      "padding": params[2], "lossy": "written as AvgPool2d"})}
        self._layer(node, self.nir.AvgPool2d(kernel_size=k, stride=s, padding=p, metadata=meta))

    def _reshape(self, node: fx.Node) -> None:
        x = self._single_input(node)
        s_in, s_out = self._per_sample(x), self._per_sample(node)
        if s_in == s_out:
            self.src[node] = dict(self._source(x))
            return
        # A flatten merges one run of dims [i, j] (per-sample indexing, as NIR's Flatten counts).
        runs = [
            (i, j) for i in range(len(s_in)) for j in range(i + 1, len(s_in))
            if (*s_in[:i], int(np.prod(s_in[i:j + 1])), *s_in[j + 1:]) == s_out
        ]
        if not runs:
            self._issue(node, f"reshape {s_in} -> {s_out} is not a flatten", lossy=False)
            return
        i, j = runs[0]
        end = -1 if j == len(s_in) - 1 else j
        self._layer(node, self.nir.Flatten(input_type={"input": np.array(s_in)}, start_dim=i, end_dim=end))

    def _arith(self, node: fx.Node) -> None:
        tensors = self._tensor_args(node)
        args = list(node.args)
        if _in(node, _ADD | _SUB):
            alpha = node.kwargs.get("alpha", 1)
            if len(args) != 2 or not all(isinstance(a, fx.Node) and a in tensors for a in args) or alpha != 1:
                self._issue(node, "sum with a constant or alpha (NIR has no constant-add node)", lossy=False)
                return
            a, b = cast(fx.Node, args[0]), cast(fx.Node, args[1])
            if self.shapes[a] != self.shapes[b]:
                self._issue(node, "sum of tensors of different shapes (broadcasting)", lossy=False)
                return
            sign = -1.0 if _in(node, _SUB) else 1.0
            out = dict(self._source(a))
            for k, v in self._source(b).items():
                out[k] = out.get(k, 0.0) + sign * v
            self.src[node] = out
            return
        if _in(node, _NEG):
            self.src[node] = {k: -v for k, v in self._source(tensors[0]).items()}
            return
        scalars = [a for a in args if isinstance(a, (int, float)) and not isinstance(a, bool)]
        if len(tensors) != 1 or len(scalars) != 1 or len(args) != 2:
            self._issue(node, "product/quotient with a tensor (only scalar multiples have a NIR node)", lossy=False)
            return
        if _in(node, _DIV) and args[0] is not tensors[0]:
            self._issue(node, "division by a tensor", lossy=False)
            return
        factor = float(scalars[0]) if _in(node, _MUL) else 1.0 / float(scalars[0])
        self.src[node] = {k: v * factor for k, v in self._source(tensors[0]).items()}

    # ------------------------------------------------------------------ neurons
    def _neuron_params(self, mod: IFNeuron, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
        """θ' and u0 per position, computed as the neuron computes them (in its dtype), as float64."""
        b = buffers(mod)
        x = torch.zeros((1, *shape), dtype=b["theta"].dtype, device=b["theta"].device)
        th = mod._bc(mod.effective_threshold(), x)
        u0 = mod._bc(b["v_init"], x) * th + mod._bc(b["v_offset"], x)
        th_full = th.expand_as(x)[0]
        u0_full = u0.expand_as(x)[0]
        return (th_full.detach().cpu().to(torch.float64).numpy(), u0_full.detach().cpu().to(torch.float64).numpy())

    def _neuron_meta(self, mod: IFNeuron, form: str) -> dict[str, str]:
        def arr(t: Tensor) -> Any:
            return t.detach().cpu().to(torch.float64).tolist()

        b = buffers(mod)
        info = {
            "op": "IFNeuron", "form": form, "reset": "subtract", "fires": "u >= theta*rho",
            "theta": arr(b["theta"]), "rho": float(b["rho"]), "phi": int(b["phi"]), "v_init": float(b["v_init"]),
            "v_offset": arr(b["v_offset"]), "bias_offset_folded": arr(b["bias_offset"]),
        }
        return {"adacal": json.dumps(info)}

    def _neuron(self, node: fx.Node, mod: IFNeuron) -> None:
        if getattr(mod, "signed", False):
            self._issue(node, "negative spikes that take back earlier ones (signed neuron)", lossy=False)
        z = node.args[0]
        if not isinstance(z, fx.Node):
            raise ValueError("neuron input is not a tensor")
        shape = self._per_sample(z)
        base = self._name(qualname(node))
        th, u0 = self._neuron_params(mod, shape)
        phi = int(buffers(mod)["phi"])
        src = self._source(z)
        if node in self.bias_nodes:
            bname = self._add(self._name(f"{base}.bias"), self._bias_node(self.bias_nodes[node], shape), shape)
            self._connect(src, bname)
            src = {bname: 1.0}
        meta = self._neuron_meta(mod, self.form)
        if self.form == "if":
            lost = ["reset by subtraction (NIR IF resets to v_reset = 0)",
                    "firing at u >= θ' (NIR IF fires at v > v_threshold)"]
            if bool((u0 != 0).any()):
                lost.append("initial potential u0 = v_init·θ' + v_offset (NIR IF starts at 0)")
            if phi > 1:
                lost.append(f"burst cap φ = {phi} (NIR IF emits one spike per step)")
            self._issue(node, "; ".join(lost), lossy=True)
            vname = self._add(f"{base}.if", self.nir.IF(
                r=np.ones(shape, dtype=self.dtype), v_threshold=th.astype(self.dtype),
                v_reset=np.zeros(shape, dtype=self.dtype), metadata=meta), shape)
            fires = [vname]
        else:
            vname = self._add(f"{base}.v", self.nir.I(r=np.ones(shape, dtype=self.dtype)), shape)
            fires = []
            for k in range(1, phi + 1):
                fname = f"{base}.fire" if phi == 1 else f"{base}.fire{k}"
                thr = below(k * th - u0, self.dtype)
                fires.append(self._add(fname, self.nir.Threshold(threshold=thr), shape))
                self._edge(vname, fname)
            reset = self._add(f"{base}.reset", self.nir.Scale(scale=(-th).astype(self.dtype)), shape)
            for f in fires:
                self._edge(f, reset)
            self._edge(reset, vname)
        self._connect(src, vname)
        out = self._add(base, self.nir.Scale(scale=th.astype(self.dtype), metadata=meta), shape)
        for f in fires:
            self._edge(f, out)
        self.src[node] = {out: 1.0}

    def _bias_node(self, vec: Tensor, shape: tuple[int, ...]) -> Any:
        """An identity layer that adds a per-channel bias (where no layer bias can take the correction)."""
        c = shape[0]
        bias = vec.numpy().astype(self.dtype)
        if len(shape) == 1:
            return self.nir.Affine(weight=np.eye(c, dtype=self.dtype), bias=bias)
        if len(shape) in (2, 3):
            return self._depthwise(torch.ones(c, dtype=torch.float64), bias, shape)
        raise ValueError(f"bias correction on a rank-{len(shape) + 1} tensor")


def _exit_policy_dict(policy: Any) -> dict[str, Any]:
    if policy is None or isinstance(policy, Mapping):
        return dict(policy or {})
    to_dict = getattr(policy, "to_dict", None)
    if not callable(to_dict):
        raise ConfigError(f"exit_policy must be an ExitPolicy or its dict, got {type(policy).__name__}")
    return dict(to_dict())


def export_nir(snn: SpikingModel, example_input: Tensor, path: str | os.PathLike[str] | None = None, *,
               allow_lossy: bool = False, neuron_form: NeuronForm = "exact", exit_policy: Any = None,
               timesteps: int | None = None, metadata: Mapping[str, Any] | None = None) -> Any:
    """Write ``snn`` as a ``nir.NIRGraph`` (to ``path`` with ``nir.write`` if given) and return the graph.

    ``example_input`` (``[B, ...]``, one batch is enough) fixes the shapes NIR nodes carry.
    ``neuron_form="exact"`` writes each neuron as NIR's integrator/threshold/reset primitives (exact,
    see the module docstring); ``"if"`` writes ``nir.IF`` nodes, which cannot express adacal's
    neuron and is therefore lossy. ``exit_policy`` (an ExitPolicy or its dict) and ``timesteps``
    are recorded in the graph metadata (an exit policy is lossy: NIR graphs run a fixed T).

    Raises :class:`NIRExportError` naming every op NIR cannot represent (one error for all of
    them); with ``allow_lossy=True`` the approximable ones are written (warning per node, recorded
    under graph metadata ``adacal`` -> ``lossy``) and only ops without any NIR node still fail.
    """
    nir = require_nir()
    if not isinstance(snn, SpikingModel):
        raise ConfigError(f"export_nir expects a SpikingModel, got {type(snn).__name__}")
    if neuron_form not in NEURON_FORMS:
        raise ConfigError(f"neuron_form must be one of {NEURON_FORMS}, got {neuron_form!r}")
    if not isinstance(example_input, Tensor) or example_input.dim() == 0 or example_input.shape[0] == 0:
        raise DataError("example_input must be a non-empty batch tensor [B, ...]")
    snn.check_input(example_input)
    exp = _Exporter(snn, example_input[:1], neuron_form=neuron_form)
    nodes, edges = exp.run()
    issues = list(exp.issues)
    policy = _exit_policy_dict(exit_policy)
    if policy:
        issues.append(NIRIssue("exit_policy", "ExitPolicy", "early exit (IAT): NIR graphs run a fixed number "
                               "of steps; the policy is written to graph metadata only", True))
    hard = [i for i in issues if not i.lossy]
    lossy = [i for i in issues if i.lossy]
    if hard or (lossy and not allow_lossy):
        head = f"{len(issues)} node(s) of the network cannot be written to NIR exactly:"
        tail = []
        if lossy:
            tail.append("pass allow_lossy=True (CLI: --allow-lossy) to write the lossy ones as approximations, "
                        "recorded in the file's metadata")
        if hard:
            tail.append("the ones without a NIR equivalent must be removed or replaced in the model")
        raise NIRExportError("\n".join([head, *(i.line() for i in issues), *tail]), issues)
    for i in lossy:
        log.warning("NIR export is lossy at %s (%s): %s", i.node, i.op, i.what)
    info: dict[str, Any] = {
        "format": FORMAT,
        "neuron_form": neuron_form,
        "readout": "the network output is the mean over timesteps of the Output node",
        "exact": not lossy,
        "lossy": [i.to_dict() for i in lossy],
    }
    try:
        from adacal import __version__ as version
        info["adacal_version"] = version
    except ImportError:  # pragma: no cover
        pass
    if timesteps is not None:
        info["timesteps"] = int(timesteps)
    if policy:
        info["exit_policy"] = policy
    if metadata:
        info["user"] = dict(metadata)
    try:
        graph = nir.NIRGraph(nodes=nodes, edges=edges, metadata={"adacal": json.dumps(info)}, type_check=True)
    except (ValueError, AssertionError) as exc:
        raise NIRError(f"the exported NIR graph does not type-check ({exc}); please report it with the model") from exc
    if path is not None:
        out = Path(path)
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_name(f".{out.name}.tmp")
        try:
            nir.write(tmp, graph)
            os.replace(tmp, out)
        finally:
            if tmp.exists():
                tmp.unlink()
        log.info("wrote NIR graph (%d nodes, %d edges%s) to %s", len(nodes), len(edges),
                 ", LOSSY" if lossy else ", exact", out)
    return graph


def export_run_folder(folder: str | os.PathLike[str], job: Any, out: str | os.PathLike[str] | None = None, *,
                      allow_lossy: bool = False, neuron_form: NeuronForm = "exact") -> Path:
    """Export the SNN saved by ``adacal convert`` in ``folder`` to ``out`` (default ``folder/snn.nir``).

    ``job`` (an :class:`adacal.config.JobConfig`) says how to rebuild its ANN and data, as
    ``adacal evaluate`` does from ``source.json``; the recorded T and any saved exit policy go into
    the graph metadata (the policy is lossy).
    """
    from adacal import inputs
    from adacal.jobs import load_saved

    src = Path(folder)
    snn, record, data, _ = load_saved(src, job)
    example = inputs.map_tensors(lambda t: t[:1].to(job.device), data.example())
    target = Path(out) if out is not None else src / "snn.nir"
    if target.suffix != ".nir" and (target.is_dir() or not target.suffix):
        target = target / "snn.nir"
    export_nir(snn, example, target, allow_lossy=allow_lossy, neuron_form=neuron_form,
               exit_policy=record.get("exit_policy"), timesteps=record.get("timesteps"),
               metadata={"method": record.get("method"), "source": str(src.resolve())})
    return target

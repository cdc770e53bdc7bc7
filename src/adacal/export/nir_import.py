"""Read a NIR graph back into a :class:`~adacal.spiking_model.SpikingModel` (inspect, evaluate, price).

Understood exactly: the neuron form adacal writes (``nir.I`` -> ``Threshold`` nodes -> ``Scale(−θ')``
fed back, ``Scale(θ')`` out; see :mod:`adacal.export.nir`), which becomes one :class:`IFNeuron`
with the same φ, θ' and initial potential (and its original θ, ρ, v_init, v_offset when the node
metadata written by adacal agrees with the structure), and ``Affine``/``Linear``/``Conv1d``/
``Conv2d``/``AvgPool2d``/``SumPool2d``/``Flatten``/``Scale``. Several edges into a node are summed.

``nir.IF`` nodes written by other tools reset *to* ``v_reset``; adacal's neuron resets by
subtraction, so they import only with ``allow_lossy=True`` (as subtractive-reset neurons firing at
``v > v_threshold``, output scaled back to one per spike). ``nir.IF`` nodes written by adacal with
``neuron_form="if"`` carry the original neuron in their metadata and import as it. Every other
node type (LIF, LI, CubaLIF, Delay, subgraphs, ...) is refused in one error naming each node.
"""
from __future__ import annotations

import json
import keyword
import logging
import operator
import os
import re
from collections import defaultdict, deque
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import torch
from torch import fx, nn

from adacal.convert.fold_bn import ChannelAffine
from adacal.errors import ConfigError, UnsupportedLayerError
from adacal.export.nir import FORMAT, NIRError, buffers, require_nir
from adacal.neurons.module import IFNeuron
from adacal.spiking_model import SpikingModel

__all__ = ["NIRImportError", "import_nir"]

log = logging.getLogger(__name__)

#: Structural thresholds must match k·θ' − u0 to this relative tolerance (they are rounded once).
THRESHOLD_RTOL = 1e-5


class NIRImportError(NIRError, UnsupportedLayerError):
    """The NIR graph holds nodes adacal cannot simulate; ``problems`` lists every one."""

    def __init__(self, message: str, problems: list[str]) -> None:
        super().__init__(message)
        self.problems = problems


@dataclass
class _Neuron:
    """One spiking neuron found in the graph (several NIR nodes collapse into it)."""

    name: str  # the NIR node whose output is the neuron's value
    members: set[str]
    inputs: list[str]  # NIR nodes feeding its membrane (summed)
    r: np.ndarray
    theta: np.ndarray  # θ' per position
    u0: np.ndarray  # initial potential per position
    phi: int
    meta: dict[str, Any] = field(default_factory=dict)
    spike_value: np.ndarray | None = None  # NIR spike value when it is not θ' (foreign IF: 1)


def _meta(node: Any) -> dict[str, Any]:
    raw = (getattr(node, "metadata", None) or {}).get("adacal")
    if raw is None:
        return {}
    try:
        return dict(json.loads(raw if isinstance(raw, str) else bytes(raw).decode("utf8")))
    except (ValueError, TypeError):
        return {}


def _per_channel(values: np.ndarray, what: str, name: str) -> np.ndarray:
    """``[C, ...]`` values constant over every non-channel position -> ``[C]`` (adacal's granularity)."""
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim == 0:
        return arr.reshape(1)
    flat = arr.reshape(arr.shape[0], -1)
    if not np.array_equal(flat, np.repeat(flat[:, :1], flat.shape[1], axis=1)):
        raise ValueError(f"{name}: {what} varies within a channel; adacal neurons hold one value per channel")
    return flat[:, 0].copy()


def _ints(v: Any, n: int) -> Any:
    arr = np.atleast_1d(np.asarray(v)).astype(int).tolist()
    return tuple(arr) if len(arr) == n else tuple(arr[:1] * n)


class _Importer:
    def __init__(self, graph: Any, *, allow_lossy: bool) -> None:
        self.nir = require_nir()
        self.graph = graph
        self.allow_lossy = allow_lossy
        self.nodes: dict[str, Any] = dict(graph.nodes)
        self.ins: dict[str, list[str]] = defaultdict(list)
        self.outs: dict[str, list[str]] = defaultdict(list)
        for a, b in graph.edges:
            self.ins[b].append(a)
            self.outs[a].append(b)
        self.problems: list[str] = []
        self.lossy: list[str] = []
        self.neurons: dict[str, _Neuron] = {}
        self.owner: dict[str, str] = {}  # member NIR node -> neuron name

    def problem(self, name: str, what: str) -> None:
        self.problems.append(f"  - {name} ({type(self.nodes[name]).__name__}): {what}")

    # ------------------------------------------------------------------ neuron recognition
    def find_neurons(self) -> None:
        nir = self.nir
        for name, node in self.nodes.items():
            try:
                if isinstance(node, nir.I):
                    self._exact_neuron(name, node)
                elif isinstance(node, nir.IF):
                    self._if_neuron(name, node)
            except ValueError as exc:
                self.problem(name, str(exc))
        for neuron in self.neurons.values():
            for m in neuron.members:
                self.owner[m] = neuron.name

    def _exact_neuron(self, name: str, node: Any) -> None:
        nir = self.nir
        fires = list(self.outs[name])
        if not fires or not all(isinstance(self.nodes[f], nir.Threshold) for f in fires):
            raise ValueError("an integrator must feed only Threshold nodes (adacal's neuron form)")
        if any(self.ins[f] != [name] for f in fires):
            raise ValueError("its Threshold nodes must read only this integrator")
        after = {d for f in fires for d in self.outs[f]}
        reset = [d for d in after if d in self.ins[name]]
        output = [d for d in after if d not in self.ins[name]]
        if len(reset) != 1 or len(output) != 1:
            raise ValueError("expected one Scale fed back into the integrator (reset) and one Scale out")
        r_name, o_name = reset[0], output[0]
        r_node, o_node = self.nodes[r_name], self.nodes[o_name]
        for n_name, n in ((r_name, r_node), (o_name, o_node)):
            if not isinstance(n, nir.Scale) or sorted(self.ins[n_name]) != sorted(fires):
                raise ValueError(f"{n_name} must be a Scale fed by exactly the Threshold nodes")
        if self.outs[r_name] != [name]:
            raise ValueError(f"the reset Scale {r_name} must feed only the integrator")
        theta = np.asarray(o_node.scale, dtype=np.float64)
        if not np.array_equal(np.asarray(r_node.scale, dtype=np.float64), -theta):
            raise ValueError("reset amount differs from the spike value (adacal subtracts what a spike carries)")
        if (theta <= 0).any():
            raise ValueError("spike values θ' must be > 0")
        dtype = np.asarray(o_node.scale).dtype
        bounds = [
            np.nextafter(np.asarray(self.nodes[f].threshold, dtype=dtype), dtype.type(np.inf)).astype(np.float64)
            for f in fires
        ]
        bounds.sort(key=lambda b: float(np.mean(b)))
        u0 = theta - bounds[0]  # the first spike needs u0 + v >= θ'
        for k, b in enumerate(bounds, start=1):
            expect = k * theta - u0
            if not np.allclose(b, expect, rtol=THRESHOLD_RTOL, atol=THRESHOLD_RTOL * float(np.abs(theta).max())):
                raise ValueError(f"threshold {k} is not {k}·θ' − u0: not a burst neuron adacal can simulate")
        members = {name, *fires, r_name, o_name}
        self.neurons[o_name] = _Neuron(
            name=o_name, members=members, inputs=[i for i in self.ins[name] if i != r_name],
            r=np.asarray(node.r, dtype=np.float64), theta=theta, u0=u0, phi=len(fires), meta=_meta(o_node),
        )

    def _if_neuron(self, name: str, node: Any) -> None:
        nir = self.nir
        meta = _meta(node)
        ours = meta.get("op") == "IFNeuron" and meta.get("form") == "if"
        theta = np.asarray(node.v_threshold, dtype=np.float64)
        outs = self.outs[name]
        scale_out = (len(outs) == 1 and isinstance(self.nodes[outs[0]], nir.Scale)
                     and self.ins[outs[0]] == [name])
        if ours and scale_out:
            o_name = outs[0]
            o_theta = np.asarray(self.nodes[o_name].scale, dtype=np.float64)
            if not np.array_equal(o_theta, theta):
                raise ValueError("IF node written by adacal but its output Scale is not θ'")
            self.neurons[o_name] = _Neuron(name=o_name, members={name, o_name}, inputs=list(self.ins[name]),
                                           r=np.asarray(node.r, dtype=np.float64), theta=theta, u0=np.zeros_like(theta),
                                           phi=int(meta.get("phi", 1)), meta=meta)
            log.info("%s: nir.IF written by adacal (neuron_form='if'); restoring the neuron from its metadata", name)
            return
        if np.any(np.asarray(node.v_reset) != 0):
            raise ValueError("reset to v_reset != 0 has no adacal equivalent (adacal resets by subtraction)")
        if (theta <= 0).any():
            raise ValueError("v_threshold must be > 0")
        what = ("NIR IF resets to v_reset = 0 and fires at v > v_threshold; adacal would simulate it with "
                "reset by subtraction (threshold nudged up one ulp so >= matches >)")
        if not self.allow_lossy:
            self.problem(name, what + "; pass allow_lossy=True to import it so")
            return
        self.lossy.append(f"{name}: {what}")
        dtype = np.asarray(node.v_threshold).dtype
        nudged = np.nextafter(np.asarray(node.v_threshold), dtype.type(np.inf)).astype(np.float64)
        self.neurons[name] = _Neuron(
            name=name, members={name}, inputs=list(self.ins[name]), r=np.asarray(node.r, dtype=np.float64),
            theta=nudged, u0=np.zeros_like(theta), phi=1, spike_value=np.ones_like(theta),
        )

    # ------------------------------------------------------------------ graph building
    def units(self) -> list[str]:
        """NIR names of what becomes one step of the fx graph (neurons collapsed), in topological order."""
        unit_of = {n: self.owner.get(n, n) for n in self.nodes}
        deps: dict[str, set[str]] = defaultdict(set)
        for u in set(unit_of.values()):
            sources = self.neurons[u].inputs if u in self.neurons else self.ins[u]
            deps[u] = {unit_of[s] for s in sources}
        order: list[str] = []
        indeg = {u: len(d) for u, d in deps.items()}
        users: dict[str, list[str]] = defaultdict(list)
        for u, d in deps.items():
            for s in d:
                users[s].append(u)
        queue = deque(sorted(u for u, k in indeg.items() if k == 0))
        while queue:
            u = queue.popleft()
            order.append(u)
            for v in users[u]:
                indeg[v] -= 1
                if indeg[v] == 0:
                    queue.append(v)
        if len(order) != len(indeg):
            stuck = sorted(u for u, k in indeg.items() if k > 0)
            raise NIRImportError(
                f"the NIR graph has a recurrent loop adacal cannot simulate (through {', '.join(stuck[:8])}); "
                "only the reset feedback of its own neuron form is understood", [],
            )
        return order

    def build(self) -> SpikingModel:
        nir = self.nir
        root = nn.Module()
        graph = fx.Graph()
        value: dict[str, fx.Node] = {}
        inputs = [n for n, node in self.nodes.items() if isinstance(node, nir.Input)]
        if len(inputs) != 1:
            raise NIRImportError(f"a NIR graph with one Input node is needed, got {len(inputs)}", [])
        input_shape = tuple(int(s) for s in np.asarray(self.nodes[inputs[0]].input_type["input"]).tolist())
        outputs: list[fx.Node] = []
        dtype = torch.float32

        order = self.units()
        paths = _module_paths([u for u in order if not isinstance(self.nodes[u], (nir.Input, nir.Output))])

        def attach(name: str, module: nn.Module, suffix: str = "") -> str:
            path = paths[name] + suffix
            root_add(root, path, module)
            return path

        def summed(sources: list[str]) -> fx.Node:
            vals = [value[s] for s in sources]
            if not vals:
                raise ValueError("has no input")
            out = vals[0]
            for v in vals[1:]:
                out = graph.call_function(operator.add, (out, v))
            return out

        for u in order:
            node = self.nodes[u]
            try:
                if u in self.neurons:
                    value[u] = self._neuron_node(self.neurons[u], graph, summed, attach, root)
                    continue
                if isinstance(node, nir.Input):
                    value[u] = graph.placeholder("x")
                    continue
                if isinstance(node, nir.Output):
                    outputs.append(summed(self.ins[u]))
                    continue
                module, post = self._layer(u, node)
                if module is None:
                    continue
                dtype = next((p.dtype for p in module.parameters()), dtype)
                out = graph.call_module(attach(u, module), (summed(self.ins[u]),))
                value[u] = post(out) if post is not None else out
            except KeyError:
                continue  # an input was refused: already reported
            except (ValueError, TypeError, ConfigError) as exc:
                self.problem(u, str(exc))
        if self.problems:
            raise NIRImportError(
                f"{len(self.problems)} NIR node(s) cannot be imported:\n" + "\n".join(self.problems), self.problems
            )
        if not outputs:
            raise NIRImportError("the NIR graph has no Output node", [])
        graph.output(outputs[0] if len(outputs) == 1 else tuple(outputs))
        gm = fx.GraphModule(root, graph)
        gm.graph.lint()
        gm.to(dtype)
        return _spiking_model(gm, input_shape, dtype)

    def _layer(self, name: str, node: Any) -> tuple[nn.Module | None, Any]:
        """The torch module for a plain NIR node, and an optional post-op on its fx node."""
        nir = self.nir
        t = lambda a: torch.from_numpy(np.ascontiguousarray(np.asarray(a)))  # noqa: E731
        if isinstance(node, (nir.Affine, nir.Linear)):
            w = t(node.weight)
            if w.dim() != 2:
                raise ValueError("only 2-d weight matrices are supported")
            lin = nn.Linear(w.shape[1], w.shape[0], bias=isinstance(node, nir.Affine), dtype=w.dtype)
            with torch.no_grad():
                lin.weight.copy_(w)
                if lin.bias is not None:
                    lin.bias.copy_(t(node.bias))
            return lin, None
        if isinstance(node, (nir.Conv1d, nir.Conv2d)):
            n = 1 if isinstance(node, nir.Conv1d) else 2
            w = t(node.weight)
            groups = int(np.asarray(node.groups))
            pad = node.padding
            padding: Any = pad if isinstance(pad, str) else _ints(pad, n)
            if _is_channel_affine(w, groups, padding, _ints(node.stride, n)):
                # a per-channel x·scale + shift (how adacal writes an unfolded BatchNorm or a bias node)
                return ChannelAffine(torch.diagonal(w.reshape(w.shape[0], w.shape[1])), t(node.bias).reshape(-1)), None
            conv_cls = nn.Conv1d if n == 1 else nn.Conv2d
            kernel: Any = tuple(w.shape[2:])
            conv = conv_cls(w.shape[1] * groups, w.shape[0], kernel, stride=_ints(node.stride, n), padding=padding,
                            dilation=_ints(node.dilation, n), groups=groups, bias=True,
                            dtype=w.dtype)
            with torch.no_grad():
                conv.weight.copy_(w)
                cast(torch.Tensor, conv.bias).copy_(t(node.bias))
            return conv, None
        if isinstance(node, (nir.AvgPool2d, nir.SumPool2d)):
            k = _ints(node.kernel_size, 2)
            pool = nn.AvgPool2d(k, stride=_ints(node.stride, 2), padding=_ints(node.padding, 2))
            if isinstance(node, nir.SumPool2d):
                factor = float(k[0] * k[1])  # sum = average x window (zero padding counts, as in a sum)
                return pool, lambda x: x.graph.call_function(operator.mul, (x, factor))
            return pool, None
        if isinstance(node, nir.Flatten):
            start, end = int(node.start_dim), int(node.end_dim)
            return nn.Flatten(start + 1 if start >= 0 else start, end + 1 if end >= 0 else end), None
        if isinstance(node, nir.Scale):
            return _Scale(t(node.scale)), None
        if isinstance(node, (nir.I, nir.IF, nir.Threshold)):
            raise KeyError(name)  # part of a refused neuron: reported by find_neurons
        raise ValueError("no adacal equivalent for this NIR node type")

    def _neuron_node(self, n: _Neuron, graph: fx.Graph, summed: Any, attach: Any, root: nn.Module) -> fx.Node:
        dtype = torch.float64 if self._dtype_of(n) == np.float64 else torch.float32
        x = summed(n.inputs)
        if not np.all(n.r == 1):
            x = graph.call_module(attach(n.name, _Scale(torch.from_numpy(n.r).to(dtype)), "_r"), (x,))
        neuron = self._make_neuron(n, dtype)
        out = graph.call_module(attach(n.name, neuron), (x,))
        if n.spike_value is not None:
            ratio = torch.from_numpy(n.spike_value / n.theta).to(dtype)
            out = graph.call_module(attach(n.name, _Scale(ratio), "_spike"), (out,))
        return out

    def _dtype_of(self, n: _Neuron) -> Any:
        node = self.nodes[n.name]
        arr = getattr(node, "scale", None)
        if arr is None:
            arr = getattr(node, "v_threshold", None)
        return np.asarray(arr).dtype if arr is not None else np.float32

    def _make_neuron(self, n: _Neuron, dtype: torch.dtype) -> IFNeuron:
        theta = _per_channel(n.theta, "θ'", n.name)
        u0 = _per_channel(n.u0, "the initial potential", n.name)
        from_meta = self._from_meta(n, dtype, theta, u0)
        if from_meta is not None:
            return from_meta
        neuron = IFNeuron(phi=n.phi, rho=1.0, v_init=0.0).to(dtype)
        neuron.set_theta(torch.from_numpy(theta).to(dtype))
        if np.any(u0 != 0):
            neuron.set_v_offset(torch.from_numpy(u0).to(dtype))
        return neuron

    def _from_meta(self, n: _Neuron, dtype: torch.dtype, theta: np.ndarray, u0: np.ndarray) -> IFNeuron | None:
        """The neuron exactly as adacal wrote it, if its metadata agrees with the graph's structure."""
        m = n.meta
        if m.get("op") != "IFNeuron":
            return None
        try:
            neuron = IFNeuron(phi=int(m["phi"]), rho=float(m["rho"]), v_init=float(m["v_init"])).to(dtype)
            neuron.set_theta(torch.tensor(m["theta"], dtype=dtype))
            neuron.set_v_offset(torch.tensor(m["v_offset"], dtype=dtype))
            probe = torch.zeros((1, theta.size), dtype=dtype)
            b = buffers(neuron)
            th = neuron._bc(neuron.effective_threshold(), probe).expand_as(probe)[0].double().numpy()
            start = (neuron._bc(b["v_init"], probe) * neuron._bc(neuron.effective_threshold(), probe)
                     + neuron._bc(b["v_offset"], probe)).expand_as(probe)[0].double().numpy()
        except (KeyError, TypeError, ValueError, ConfigError, RuntimeError):
            log.warning("%s: unreadable adacal metadata; using the graph's structure", n.name)
            return None
        tol = THRESHOLD_RTOL * float(np.abs(theta).max())
        ok = np.allclose(th, theta, rtol=THRESHOLD_RTOL, atol=tol)
        if m.get("form") != "if":  # the exact form also fixes φ and u0 structurally
            ok = ok and int(m["phi"]) == n.phi and np.allclose(start, u0, rtol=THRESHOLD_RTOL, atol=tol)
        if not ok:
            log.warning("%s: adacal metadata disagrees with the graph's structure; using the structure", n.name)
            return None
        return neuron


def _is_channel_affine(w: torch.Tensor, groups: int, padding: Any, stride: tuple[int, ...]) -> bool:
    """A 1x1 conv with a diagonal weight: a per-channel affine (how adacal writes one)."""
    pad_zero = padding == "valid" or (not isinstance(padding, str) and not any(padding))
    if groups != 1 or w.shape[0] != w.shape[1] or any(k != 1 for k in w.shape[2:]) or not pad_zero:
        return False
    if any(s != 1 for s in stride):
        return False
    m = w.reshape(w.shape[0], w.shape[1])
    return bool(torch.equal(m, torch.diag(torch.diagonal(m))))


class _Scale(nn.Module):
    """Elementwise ``x·scale`` (NIR ``Scale``); a buffer, so calibration never trains it."""

    def __init__(self, scale: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("scale", scale.detach().clone())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * buffers(self)["scale"]


def _module_paths(names: list[str]) -> dict[str, str]:
    """Module paths for NIR node names: dotted like the original model where no name nests in another."""
    taken: set[str] = set()
    paths: dict[str, str] = {}
    every = set(names)
    for name in names:
        parts = name.split(".")
        nests = any(".".join(parts[:i]) in every for i in range(1, len(parts))) or any(
            o.startswith(name + ".") for o in every)
        ok = not nests and all(p.isidentifier() or p.isdigit() for p in parts) and not any(
            keyword.iskeyword(p) for p in parts)
        base = name if ok else re.sub(r"\W", "_", name)
        base = f"nir_{base}" if keyword.iskeyword(base) else base
        path, k = base, 1
        while path in taken or any(t.startswith(path + ".") or path.startswith(t + ".") for t in taken):
            path, k = f"{base}_{k}", k + 1
        taken.add(path)
        paths[name] = path
    return paths


def root_add(root: nn.Module, path: str, module: nn.Module) -> None:
    owner = root
    *parents, leaf = path.split(".")
    for p in parents:
        if not hasattr(owner, p):
            owner.add_module(p, nn.Module())
        owner = getattr(owner, p)
    owner.add_module(leaf, module)


def _spiking_model(gm: fx.GraphModule, input_shape: tuple[int, ...], dtype: torch.dtype) -> SpikingModel:
    """Wrap and check the graph: one ANN-mode forward on zeros must run (shape errors surface here)."""
    biggest = 0

    class _Sizes(fx.Interpreter):
        def run_node(self, n: fx.Node) -> Any:
            nonlocal biggest
            out = super().run_node(n)
            if isinstance(out, torch.Tensor):
                biggest = max(biggest, out.numel() * out.element_size())
            return out

    snn = SpikingModel(gm, input_shape)
    try:
        with torch.no_grad(), snn.mode("ann"):
            _Sizes(gm).run(torch.zeros((1, *input_shape), dtype=dtype))
    except Exception as exc:  # any failure means the NIR graph is inconsistent
        raise NIRImportError(f"the imported graph does not run on inputs of shape {input_shape}: "
                             f"{type(exc).__name__}: {exc}", []) from exc
    snn.activation_bytes = biggest
    return snn.eval()


def import_nir(source: Any, *, allow_lossy: bool = False) -> SpikingModel:
    """Read a NIR graph (a path written by ``nir.write``, or a ``nir.NIRGraph``) into a SpikingModel.

    The result simulates, evaluates (:meth:`SpikingModel.run`) and prices
    (:class:`~adacal.energy.EnergyModel`) like a converted network; its neurons start in ANN mode.
    Raises :class:`NIRImportError` naming every node it cannot represent; ``allow_lossy=True``
    accepts ``nir.IF`` nodes from other tools (logged as a warning each).
    """
    nir = require_nir()
    if isinstance(source, (str, os.PathLike)):
        try:
            graph = nir.read(source)
        except (OSError, ValueError, KeyError, AssertionError) as exc:
            raise NIRError(f"cannot read NIR graph {str(source)!r}: {type(exc).__name__}: {exc}") from exc
    elif isinstance(source, nir.NIRGraph):
        graph = source
    else:
        raise ConfigError(f"import_nir expects a file path or a nir.NIRGraph, got {type(source).__name__}")
    imp = _Importer(graph, allow_lossy=allow_lossy)
    imp.find_neurons()
    for name, node in imp.nodes.items():
        if name in imp.owner:
            continue
        if not isinstance(node, (nir.Input, nir.Output, nir.Affine, nir.Linear, nir.Conv1d, nir.Conv2d,
                                 nir.AvgPool2d, nir.SumPool2d, nir.Flatten, nir.Scale, nir.I, nir.IF, nir.Threshold)):
            imp.problem(name, "no adacal equivalent for this NIR node type")
    if imp.problems:
        raise NIRImportError(f"{len(imp.problems)} NIR node(s) cannot be imported:\n" + "\n".join(imp.problems),
                             imp.problems)
    snn = imp.build()
    for line in imp.lossy:
        log.warning("NIR import is lossy at %s", line)
    info = _meta(graph)
    snn.nir_metadata = {"adacal": info, "lossy_import": list(imp.lossy)}  # type: ignore[assignment]
    if info.get("format") == FORMAT and not info.get("exact", True):
        log.warning("this NIR file was exported lossy by adacal: %s", info.get("lossy"))
    log.info("imported NIR graph: %d neurons, %d NIR nodes", len(imp.neurons), len(imp.nodes))
    return snn

"""The converted network: one traced graph whose activations are IF neurons, and its time loop."""
from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, fx, nn
from torch.utils._pytree import tree_leaves, tree_map

from adacal import inputs
from adacal.checks import check_timesteps
from adacal.determinism import (
    LAYOUT_KEY,
    LAYOUTS,
    canonical_blocks,
    deterministic_graph,
    is_channels_last,
    planned_layouts,
)
from adacal.errors import ConfigError, DataError, ShapeError, first_line
from adacal.neurons import IFNeuron, is_neuron, is_neuron_node
from adacal.neurons.analog import TimeState
from adacal.neurons.kernels import FUSED_MIN_CALL_ELEMENTS, FUSED_MIN_ELEMENTS, KERNEL
from adacal.neurons.pool import SpikingMaxPool
from adacal.neurons.residual import fuse_residual_adds

__all__ = ["SpikingModel", "Session"]

log = logging.getLogger(__name__)


def _split_constant_prefix(gm: fx.GraphModule) -> tuple[fx.GraphModule, fx.GraphModule, list[str]] | None:
    """Split the graph where the analog prefix (no neuron upstream) meets the first neurons.

    For a constant input the prefix is computed once per input instead of once per timestep.
    Only possible when every prefix value used downstream goes straight into a neuron; otherwise
    (a skip connection from the raw input, a batch size read off the input) returns None and the
    caller repeats the input over time instead — slower, never wrong.
    """
    spiking: set[fx.Node] = set()
    for node in gm.graph.nodes:
        if is_neuron_node(gm, node) or any(a in spiking for a in node.all_input_nodes):
            spiking.add(node)
    if not spiking:
        return None
    frontier: list[fx.Node] = []
    entry_neurons: list[str] = []
    for node in gm.graph.nodes:
        if node in spiking or node.op == "output":
            continue
        users = [u for u in node.users if u in spiking or u.op == "output"]
        if not users:
            continue
        if node.op == "get_attr":
            continue  # parameters/buffers read on the spiking path are fine
        if not all(u in spiking and is_neuron_node(gm, u) for u in users):
            return None
        frontier.append(node)
        entry_neurons.extend(str(u.target) for u in users)
    # prefix graph: placeholders .. frontier values
    prefix = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    for node in gm.graph.nodes:
        if node in spiking or node.op == "output":
            continue
        env[node] = prefix.node_copy(node, lambda n: env[n])
    prefix.output(tuple(env[f] for f in frontier))
    # suffix graph: frontier values .. output
    suffix = fx.Graph()
    env2: dict[fx.Node, fx.Node] = {}
    for i, f in enumerate(frontier):
        env2[f] = suffix.placeholder(f"entry_{i}")
    for node in gm.graph.nodes:
        if node.op == "get_attr" and any(u in spiking for u in node.users):
            env2[node] = suffix.node_copy(node, lambda n: env2[n])
        elif node in spiking or node.op == "output":
            env2[node] = suffix.node_copy(node, lambda n: env2[n])
    return fx.GraphModule(gm, prefix), fx.GraphModule(gm, suffix), sorted(set(entry_neurons))


def _explained(run: Callable[..., Any]) -> Callable[..., Any]:
    """``run`` with torch errors on inputs unlike the conversion example explained (see ``_explain_failures``)."""
    @functools.wraps(run)
    def wrapper(self: SpikingModel, x: Any, *args: Any, **kwargs: Any) -> Any:
        with self._explain_failures(x, sequence=bool(kwargs.get("sequence", False))):
            return run(self, x, *args, **kwargs)

    return wrapper


class SpikingModel(nn.Module):
    """A converted network. ``forward`` runs the graph once with the neurons' current modes.

    Use :meth:`run` for a whole simulation (per-step outputs ``[T, B, ...]``) and
    :meth:`session` to step it yourself (streaming, early exit). ``ann_forward`` reproduces
    the original network exactly.
    """

    #: Bytes of the largest per-step activation that ``time_chunk="auto"`` aims to keep per call:
    #: stacking time steps speeds up small batches (bigger GEMMs), but once one call's tensors
    #: outgrow the CPU caches the neuron loop runs from DRAM and streaming is faster
    #: (benchmarks/results/simulation_speed.md).
    AUTO_CHUNK_BYTES = 4 << 20

    def __init__(self, graph_module: fx.GraphModule, input_shape: Any,
                 activation_bytes: int = 0, input_dtypes: tuple[torch.dtype, ...] | None = None) -> None:
        super().__init__()
        #: dtype of each input leaf seen at conversion (None: not recorded, e.g. an imported NIR graph)
        self.input_dtypes = None if input_dtypes is None else tuple(input_dtypes)
        #: non-linear ops before the first neuron, kept in floating point (set by prepare; see the record)
        self.analog_prefix_ops: tuple[str, ...] = ()
        self.graph_module = graph_module
        # per-sample shape seen at conversion; a tuple of shapes for a model with several inputs
        self.input_shapes: tuple[tuple[int, ...], ...] = (
            (tuple(input_shape),) if not input_shape or isinstance(input_shape[0], int)
            else tuple(tuple(s) for s in input_shape)
        )
        self.activation_bytes = int(activation_bytes)  # largest activation per sample
        #: Canonical row blocks (adacal.determinism): outputs independent of time_chunk,
        #: batch_chunk, batch size and early exit. Off: each op sees all rows of a call at once.
        self.deterministic = True
        #: Neuron update: "auto" (compiled where it pays), True (compiled wherever it can) or
        #: False (eager). All give identical outputs (adacal.neurons.kernels).
        self.fused: bool | str = "auto"
        #: Input layout of 2-D convolutions while ``deterministic``: "auto" (channels-last where it gives
        #: the same bits and is faster), "channels_last" (wherever it gives the same bits) or
        #: "contiguous". Never changes a result (adacal.determinism, "Layout").
        self.layout = "auto"
        self._split_cache: dict[str, Any] = {}
        self._sim_depth = 0
        self._announced = ""

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Per-sample shape of the (first) input seen at conversion."""
        return self.input_shapes[0]

    # ---------------------------------------------------------------- structure
    def neurons(self) -> dict[str, IFNeuron]:
        """Neurons by qualified name, in topological (execution) order."""
        gm = self.graph_module
        mods = dict(gm.named_modules())  # one walk: get_submodule per node costs ms per run at batch 1
        found = ((str(n.target), mods.get(str(n.target))) for n in gm.graph.nodes if n.op == "call_module")
        return {k: m for k, m in found if is_neuron(m)}

    def _stateful(self) -> list[nn.Module]:
        """Every module with a time state: neurons, rate-preserving max-pools, analog-op wrappers."""
        gm = self.graph_module
        mods = dict(gm.named_modules())
        modules = (mods.get(str(n.target)) for n in gm.graph.nodes if n.op == "call_module")
        return [m for m in modules if isinstance(m, (IFNeuron, SpikingMaxPool, TimeState))]

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.graph_module(*args, **kwargs)

    def call(self, x: Any) -> Any:
        """Run the graph once on ``x`` (a tensor, or a tuple/dict of the model's inputs)."""
        with self._explain_failures(x):
            return inputs.call(self.graph_module, x)

    @contextlib.contextmanager
    def _explain_failures(self, x: Any, *, sequence: bool = False) -> Iterator[None]:
        """A torch error on an input unlike the one seen at conversion becomes an error saying so: another
        per-sample shape (calibration data of another size) a :class:`ShapeError`, another dtype (integer
        pixels) a :class:`DataError`."""
        try:
            yield
        except RuntimeError as exc:
            ts = inputs.leaves(x)
            got = [tuple(t.shape[2:] if sequence else t.shape[1:]) for t in ts]
            dtypes = [t.dtype for t in ts]
            same_shape = got == [tuple(s) for s in self.input_shapes]
            same_dtype = self.input_dtypes is None or tuple(dtypes) == self.input_dtypes
            if same_shape and same_dtype:
                raise
            seen = ", ".join(str(list(s)) for s in self.input_shapes)
            what = "per-sample shape " + ", ".join(str(list(g)) for g in got) + f" (conversion saw {seen})"
            error: type[DataError] = ShapeError
            if not same_dtype:
                error = DataError
                what = (f"dtype {', '.join(str(d).replace('torch.', '') for d in dtypes)} (conversion saw "
                        f"{', '.join(str(d).replace('torch.', '') for d in self.input_dtypes or ())})")
            raise error(f"the network cannot run on this input: its {what}; give data like the example the SNN was "
                        f"converted with ({type(exc).__name__}: {first_line(exc, 160)})") from exc

    def _apply(self, fn: Any, *args: Any, **kwargs: Any) -> SpikingModel:
        self._split_cache.clear()  # split graphs may hold references to moved tensors
        return super()._apply(fn, *args, **kwargs)

    def _split(self) -> tuple[fx.GraphModule, fx.GraphModule, list[str]] | None:
        if "split" not in self._split_cache:
            self._split_cache["split"] = _split_constant_prefix(self.graph_module)
        split = self._split_cache["split"]
        if split is None or not self.deterministic:
            return split
        if "split_det" not in self._split_cache:
            prefix, suffix, names = split
            plans = self._block_plans()
            self._split_cache["split_det"] = (
                deterministic_graph(prefix, plans), deterministic_graph(suffix, plans), names)
        return self._split_cache["split_det"]

    def simulation_graph(self) -> fx.GraphModule:
        """The graph a simulation runs: ``graph_module``, with its weighted function nodes
        (``F.conv*``, ``F.linear``, ``matmul``) on canonical row blocks when ``deterministic``."""
        if not self.deterministic:
            return self.graph_module
        if "graph_det" not in self._split_cache:
            self._split_cache["graph_det"] = deterministic_graph(self.graph_module, self._block_plans())
        return self._split_cache["graph_det"]

    def _session_graphs(self, sequence: bool) -> tuple[fx.GraphModule, tuple[fx.GraphModule, fx.GraphModule,
                                                                              list[str]] | None]:
        """What a :class:`Session` runs: the simulation graph and, for a constant input, the split
        at the constant prefix — with each residual add that feeds a neuron moved into the neuron's
        step (:mod:`adacal.neurons.residual`; same bits). Cached per ``deterministic`` setting."""
        key = ("session", self.deterministic, sequence)
        if key not in self._split_cache:
            split = None if sequence else self._split()
            if split is not None:
                split = (split[0], fuse_residual_adds(split[1]), split[2])
            self._split_cache[key] = (fuse_residual_adds(self.simulation_graph()), split)
        return self._split_cache[key]

    def _entry_layouts(self, suffix: fx.GraphModule) -> list[bool]:
        """Per entry value of the split: whether to keep it channels-last when the prefix makes it so
        — only where every convolution fed by the neurons it enters was planned on channels-last
        input. The entry is computed once per run but its neurons' outputs are converted every step
        wherever the layouts disagree; layouts never change a result (adacal.determinism), and a
        first run, before any plan, converts to NCHW."""
        chosen = planned_layouts(self._block_plans())
        keep = []
        for entry in (n for n in suffix.graph.nodes if n.op == "placeholder"):
            wanted = set()
            for neuron in entry.users:
                for user in neuron.users:
                    key = (("module", str(user.target)) if user.op == "call_module"
                           else getattr(user.target, "node", None))
                    if key in chosen:
                        wanted.add(chosen[key])
            keep.append(wanted == {torch.channels_last})
        return keep

    def _block_plans(self) -> dict[Any, Any]:
        """Verified row-block sizes and layouts per weighted op (adacal.determinism); dropped on ``.to()``."""
        plans = self._split_cache.setdefault("plans", {})
        plans[LAYOUT_KEY] = self.layout
        return plans

    @contextlib.contextmanager
    def _simulating(self) -> Iterator[None]:
        """While a simulation runs: weighted modules on canonical row blocks (when
        ``deterministic``) and every neuron on this model's ``fused`` setting. Re-entrant."""
        if self.fused not in ("auto", True, False):
            raise ConfigError(f"SpikingModel.fused must be 'auto', True or False, got {self.fused!r}")
        if self.layout not in LAYOUTS:
            raise ConfigError(f"SpikingModel.layout must be one of {LAYOUTS}, got {self.layout!r}")
        if self._sim_depth:
            self._sim_depth += 1
            try:
                yield
            finally:
                self._sim_depth -= 1
            return
        neurons = list(self.neurons().values())
        saved = [n.fused for n in neurons]
        self._sim_depth = 1
        try:
            for n in neurons:
                n.fused = self.fused
            if self.deterministic:
                with canonical_blocks(dict(self.graph_module.named_modules()), self._block_plans()):
                    yield
            else:
                yield
        finally:
            self._sim_depth = 0
            for n, f in zip(neurons, saved):
                n.fused = f

    def _announce(self, value: Any) -> None:
        """Log once (per model and setting) which neuron-update path and block mode run."""
        x = inputs.leaves(value)[0]
        why = KERNEL.unavailable(x.device, x.dtype) if self.fused is not False else "fused=False"
        if why is None:
            path = "fused (torch.compile/inductor" + (
                f", steps of ≥ {FUSED_MIN_ELEMENTS} elements in calls of ≥ {FUSED_MIN_CALL_ELEMENTS}; smaller "
                "ones eager)" if self.fused == "auto" else ")")
        else:
            path = f"eager ({why})"
        line = (f"simulation on {x.device.type}/{str(x.dtype).removeprefix('torch.')}: neuron update {path}; "
                f"canonical row blocks {'on, conv layout ' + self.layout if self.deterministic else 'off'}")
        if line != self._announced:
            self._announced = line
            log.info(line)

    @property
    def has_constant_prefix(self) -> bool:
        """Whether the first layers are computed once per input (constant input only)."""
        return self._split() is not None

    # ---------------------------------------------------------------- modes
    @contextlib.contextmanager
    def mode(self, mode: str, timesteps: int = 1) -> Iterator[SpikingModel]:
        """Temporarily put every neuron in ``mode`` (restored, and membranes reset, on exit)."""
        modules = self._stateful()
        saved = [_save_state(n) for n in modules]
        try:
            for n in modules:
                n.set_mode(mode)
                n.timesteps = check_timesteps(timesteps)
                if isinstance(n, IFNeuron):
                    n.constant_input = False
                else:
                    n.streaming = False
                n.reset()
            if mode == "snn":
                with self._simulating():
                    yield self
            else:
                yield self
        finally:
            for n, state in zip(modules, saved):
                _restore_state(n, state)

    @torch.no_grad()
    def ann_forward(self, x: Any) -> Any:
        """The original network's output (neurons act as their ReLU)."""
        with self.mode("ann"):
            return self.call(x)

    @contextlib.contextmanager
    def record_activity(self) -> Iterator[dict[str, IFNeuron]]:
        """Count spikes per neuron position while inside (a burst of k counts k)."""
        neurons = self.neurons()
        for n in neurons.values():
            n.reset_count()
            n.recording = True
        try:
            yield neurons
        finally:
            for n in neurons.values():
                n.recording = False

    def spike_counts(self) -> dict[str, Tensor]:
        """Per-position spike counts recorded so far, summed over timesteps and samples."""
        return {k: n.spike_count for k, n in self.neurons().items()}

    # ---------------------------------------------------------------- simulation
    def check_input(self, x: Any, *, sequence: bool = False) -> None:
        """Clear errors for inputs that would fail deep inside (wrong rank/channels, NaN, empty)."""
        ts = inputs.leaves(x)
        if not ts:
            raise DataError(f"expected a tensor input (or a tuple/dict of tensors), got {type(x).__name__}")
        lead = "[T, B, " if sequence else "[B, "
        expected = ", ".join(lead + ", ".join(map(str, s)) + "]" for s in self.input_shapes)
        if len(ts) != len(self.input_shapes):
            raise ShapeError(f"input {inputs.describe(x)} does not match the model: expected "
                             f"{len(self.input_shapes)} tensor(s) {expected} (per-sample shapes seen at conversion)")
        for t, expect in zip(ts, self.input_shapes):
            per_sample = t.shape[2:] if sequence else t.shape[1:]
            if len(per_sample) != len(expect) or (expect and per_sample[:1] != expect[:1]):
                raise ShapeError(
                    f"input shape {inputs.describe(x)} does not match the model: expected {expected} "
                    "(per-sample shape seen at conversion)"
                )
        if self.input_dtypes is not None and tuple(t.dtype for t in ts) != self.input_dtypes:
            got = ", ".join(str(t.dtype).replace("torch.", "") for t in ts)
            want = ", ".join(str(d).replace("torch.", "") for d in self.input_dtypes)
            raise DataError(f"input dtype {got} differs from the {want} the SNN was converted with; convert it first "
                            "(e.g. x.float(), scaled as at training)")
        inputs.validate(x, "input", dim=1 if sequence else 0)

    def session(self, x: Any, *, sequence: bool = False) -> Session:
        """A stepping session over one input batch (see :class:`Session`)."""
        self.check_input(x, sequence=sequence)
        return Session(self, x, sequence=sequence)

    @_explained
    @torch.no_grad()
    def run(
        self,
        x: Any,
        timesteps: int,
        *,
        sequence: bool = False,
        time_chunk: int | str | None = "auto",
        batch_chunk: int | None = None,
        reduce: str | None = None,
    ) -> Any:
        """Simulate ``timesteps`` steps; returns per-step outputs ``[T, B, ...]`` (same pytree).

        ``x`` is one constant input ``[B, ...]`` (or a tuple/dict of them for a model with several
        inputs), or a sequence ``[T, B, ...]`` (events) when ``sequence``. ``time_chunk`` steps are
        stacked on the batch axis per call (None: all; ``"auto"`` picks the largest chunk whose
        activations stay cache-sized, from the activation sizes measured for this input shape, see
        ``AUTO_CHUNK_BYTES``; 1 = streaming); ``batch_chunk`` bounds memory by splitting the batch.
        ``reduce="sum"`` or ``"mean"`` returns the time sum/mean ``[B, ...]`` accumulated step by
        step instead of storing every step: memory then does not grow with T. With
        ``deterministic`` (default) every chunking, batch size and batch split gives bit-identical
        outputs (see adacal.determinism).
        """
        timesteps = check_timesteps(timesteps)
        self.check_input(x, sequence=sequence)
        if reduce not in (None, "sum", "mean"):
            raise ConfigError(f"reduce must be None, 'sum' or 'mean', got {reduce!r}")
        bdim = 1 if sequence else 0
        batch = inputs.batch_size(x, bdim)
        if time_chunk == "auto":
            rows = self.AUTO_CHUNK_BYTES // max(1, self.measured_row_bytes(x, sequence=sequence) * batch)
            chunk = min(timesteps, max(1, int(rows)))
        else:
            chunk = timesteps if time_chunk is None else check_timesteps(time_chunk)
        if sequence and inputs.batch_size(x, 0) < timesteps:
            raise ShapeError(f"sequence input has {inputs.batch_size(x, 0)} frames but {timesteps} timesteps "
                             "were asked")
        if batch_chunk is not None and batch_chunk < batch:
            parts = [
                self.run(p, timesteps, sequence=sequence, time_chunk=chunk, reduce=reduce)
                for p in inputs.split(x, check_timesteps(batch_chunk), dim=bdim)
            ]
            return inputs.cat(parts, dim=0 if reduce else 1)
        sess = Session(self, x, sequence=sequence)
        try:
            total: Any = None  # [T, B, ...] filled chunk by chunk (one allocation, no final cat), or the sum
            done = 0
            while done < timesteps:
                steps = min(chunk, timesteps - done)
                out = sess.advance(steps)
                if reduce is None:
                    if total is None:
                        total = tree_map(lambda o: o.new_empty((timesteps, *o.shape[1:]))
                                         if isinstance(o, Tensor) else o, out)
                    _tree_copy_(total, out, done)
                else:  # step by step, in time order: the same sum whatever the chunking
                    for i in range(steps):
                        step = tree_map(lambda o, i=i: o[i] if isinstance(o, Tensor) else o, out)
                        total = tree_map(lambda o: o.clone() if isinstance(o, Tensor) else o, step) \
                            if total is None else _tree_add_(total, step)
                done += steps
        finally:
            sess.close()
        if reduce is None:
            return total
        if reduce == "mean":
            total = tree_map(lambda o: o.div_(timesteps) if isinstance(o, Tensor) else o, total)
        return total

    def measured_row_bytes(self, x: Any, *, sequence: bool = False) -> int:
        """Bytes of the largest value the graph computes for one sample of this input's shape
        (measured once per shape and dtype on one sample, neurons as identity, no hooks fired);
        ``activation_bytes`` (from the conversion's example) when it cannot run."""
        sample = inputs.narrow(inputs.narrow(x, 0, 1, 0), 0, 1, 1) if sequence else inputs.narrow(x, 0, 1, 0)
        if sequence:
            sample = inputs.map_tensors(lambda t: t[0], sample)
        key = ("row_bytes",) + tuple((tuple(t.shape[1:]), t.dtype, t.device) for t in inputs.leaves(sample))
        if key not in self._split_cache:
            probe = _LargestValue(self.graph_module)
            try:
                with torch.no_grad():
                    inputs.call(probe.run, sample)
                measured = probe.largest
            except Exception:  # a graph that rejects one sample: keep the conversion's figure
                measured = 0
            self._split_cache[key] = measured or self.activation_bytes
        return int(self._split_cache[key])


class _LargestValue(fx.Interpreter):
    """Runs the graph recording its largest tensor value; neurons pass their input through
    (same shape) and modules run their ``forward`` directly, so no hook sees this pass."""

    def __init__(self, gm: fx.GraphModule) -> None:
        super().__init__(gm)
        self.largest = 0

    def run_node(self, n: fx.Node) -> Any:
        out = super().run_node(n)
        for t in tree_leaves(out):
            if isinstance(t, Tensor):
                self.largest = max(self.largest, t.numel() * t.element_size())
        return out

    def call_module(self, target: Any, args: Any, kwargs: Any) -> Any:
        mod = self.fetch_attr(target)
        if is_neuron(mod):
            return args[0]
        return mod.forward(*args, **kwargs)


def _tree_copy_(total: Any, out: Any, start: int) -> None:
    """Copy per-step outputs ``out`` (``[k, ...]`` leaves) into ``total`` at steps ``start..start+k``."""
    if isinstance(total, Tensor):
        total[start:start + out.shape[0]].copy_(out)
    elif isinstance(total, (list, tuple)):
        for a, b in zip(total, out):
            _tree_copy_(a, b, start)
    elif isinstance(total, dict):
        for k in total:
            _tree_copy_(total[k], out[k], start)


def _tree_add_(total: Any, step: Any) -> Any:
    if isinstance(total, Tensor):
        return total.add_(step)
    if isinstance(total, (list, tuple)):
        merged = [_tree_add_(a, b) for a, b in zip(total, step)]
        return type(total)(*merged) if hasattr(total, "_fields") else type(total)(merged)
    if isinstance(total, dict):
        return {k: _tree_add_(total[k], step[k]) for k in total}
    return total


def _save_state(m: nn.Module) -> tuple[Any, ...]:
    flag = m.constant_input if isinstance(m, IFNeuron) else m.streaming
    return m.mode, m.timesteps, flag


def _restore_state(m: nn.Module, state: tuple[Any, ...]) -> None:
    m.mode, m.timesteps, flag = state
    if isinstance(m, IFNeuron):
        m.constant_input = flag
    else:
        m.streaming = flag
    m.reset()


class Session:
    """Steps one input batch through the SNN, keeping membranes between calls.

    ``advance(k)`` runs k more steps and returns their outputs ``[k, B_running, ...]``;
    ``keep(index)`` drops samples (early exit): their membranes and cached input currents go,
    so later steps compute only for the samples still running.
    """

    def __init__(self, model: SpikingModel, x: Any, *, sequence: bool) -> None:
        self.model = model
        self.sequence = sequence
        self.t = 0
        self._neurons = model._stateful()
        self._saved = [_save_state(n) for n in self._neurons]
        self._context = contextlib.ExitStack()
        self._context.enter_context(model._simulating())
        try:
            self._start(x)
        except BaseException:
            self.close()  # modes, patched forwards and fused settings restored even on error
            raise

    def _start(self, x: Tensor) -> None:
        model, sequence = self.model, self.sequence
        model._announce(x)
        for n in self._neurons:
            n.set_mode("snn")
            if isinstance(n, IFNeuron):
                n.constant_input = False
            else:
                n.streaming = True  # pools carry their accumulators from one advance() to the next
            n.reset()
        self._x = x
        self._entry: tuple[Any, ...] | None = None
        self._suffix: fx.GraphModule | None = None
        self._graph, split = model._session_graphs(sequence)
        if split is not None:
            prefix, self._suffix, entry_names = split
            with torch.no_grad():
                # computed once per run: its layout matters only for its neurons' consumers, every step
                keep = model._entry_layouts(self._suffix)
                self._entry = tuple(
                    inputs.map_tensors(lambda t, k=k: t if k and is_channels_last(t) else t.contiguous(), e)
                    for e, k in zip(inputs.call(prefix, x), keep))
            entry = set(entry_names)
            for name, n in model.neurons().items():
                n.constant_input = name in entry
        self.batch = inputs.batch_size(x, 1 if sequence else 0)

    @torch.no_grad()
    def advance(self, steps: int) -> Any:
        steps = check_timesteps(steps)
        for n in self._neurons:
            n.timesteps = steps
        b = self.batch
        if self._suffix is not None and self._entry is not None:
            out = self._suffix(*self._entry)
        elif self.sequence:
            frames_total = inputs.batch_size(self._x, 0)
            if self.t + steps > frames_total:
                raise ShapeError(f"sequence has only {frames_total} frames; step {self.t + steps} asked")
            frames = inputs.narrow(self._x, self.t, steps, 0)
            out = inputs.call(self._graph, inputs.map_tensors(lambda f: f.reshape(steps * b, *f.shape[2:]), frames))
        else:
            out = inputs.call(self._graph, inputs.repeat_over_time(self._x, steps))
        self.t += steps
        return inputs.map_tensors(lambda o: o.view(steps, b, *o.shape[1:]), out)

    def keep(self, index: Tensor) -> None:
        """Continue with only the samples at ``index`` (a LongTensor of running-batch positions)."""
        for n in self._neurons:
            if isinstance(n, (SpikingMaxPool, TimeState)):
                n.keep(index)
            elif n.v is not None:
                n.v = n.v.index_select(0, index)
        if self._entry is not None:
            self._entry = tuple(inputs.index_select(e, index) for e in self._entry)
        self._x = inputs.index_select(self._x, index, 1 if self.sequence else 0)
        self.batch = int(index.numel())

    def close(self) -> None:
        for n, state in zip(self._neurons, self._saved):
            _restore_state(n, state)
        self._context.close()

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

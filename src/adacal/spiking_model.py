"""The converted network: one traced graph whose activations are IF neurons, and its time loop."""
from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from typing import Any

import torch
from torch import Tensor, fx, nn

from adacal import inputs
from adacal.checks import check_timesteps
from adacal.errors import DataError, ShapeError
from adacal.neurons import IFNeuron, is_neuron_node
from adacal.neurons.analog import TimeState
from adacal.neurons.pool import SpikingMaxPool

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
                 activation_bytes: int = 0) -> None:
        super().__init__()
        self.graph_module = graph_module
        # per-sample shape seen at conversion; a tuple of shapes for a model with several inputs
        self.input_shapes: tuple[tuple[int, ...], ...] = (
            (tuple(input_shape),) if not input_shape or isinstance(input_shape[0], int)
            else tuple(tuple(s) for s in input_shape)
        )
        self.activation_bytes = int(activation_bytes)  # largest activation per sample
        self._split_cache: dict[str, Any] = {}

    @property
    def input_shape(self) -> tuple[int, ...]:
        """Per-sample shape of the (first) input seen at conversion."""
        return self.input_shapes[0]

    # ---------------------------------------------------------------- structure
    def neurons(self) -> dict[str, IFNeuron]:
        """Neurons by qualified name, in topological (execution) order."""
        gm = self.graph_module
        return {
            str(n.target): gm.get_submodule(str(n.target)) for n in gm.graph.nodes if is_neuron_node(gm, n)
        }

    def _stateful(self) -> list[nn.Module]:
        """Every module with a time state: neurons, rate-preserving max-pools, analog-op wrappers."""
        gm = self.graph_module
        modules = (gm.get_submodule(str(n.target)) for n in gm.graph.nodes if n.op == "call_module")
        return [m for m in modules if isinstance(m, (IFNeuron, SpikingMaxPool, TimeState))]

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.graph_module(*args, **kwargs)

    def call(self, x: Any) -> Any:
        """Run the graph once on ``x`` (a tensor, or a tuple/dict of the model's inputs)."""
        return inputs.call(self.graph_module, x)

    def _apply(self, fn: Any, *args: Any, **kwargs: Any) -> SpikingModel:
        self._split_cache.clear()  # split graphs may hold references to moved tensors
        return super()._apply(fn, *args, **kwargs)

    def _split(self) -> tuple[fx.GraphModule, fx.GraphModule, list[str]] | None:
        if "split" not in self._split_cache:
            self._split_cache["split"] = _split_constant_prefix(self.graph_module)
        return self._split_cache["split"]

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
        inputs.validate(x, "input", dim=1 if sequence else 0)

    def session(self, x: Any, *, sequence: bool = False) -> Session:
        """A stepping session over one input batch (see :class:`Session`)."""
        self.check_input(x, sequence=sequence)
        return Session(self, x, sequence=sequence)

    @torch.no_grad()
    def run(
        self,
        x: Any,
        timesteps: int,
        *,
        sequence: bool = False,
        time_chunk: int | str | None = "auto",
        batch_chunk: int | None = None,
    ) -> Any:
        """Simulate ``timesteps`` steps; returns per-step outputs ``[T, B, ...]`` (same pytree).

        ``x`` is one constant input ``[B, ...]`` (or a tuple/dict of them for a model with several
        inputs), or a sequence ``[T, B, ...]`` (events) when ``sequence``. ``time_chunk`` steps are
        stacked on the batch axis per call (None: all; ``"auto"`` picks the largest chunk whose
        activations stay cache-sized, see ``AUTO_CHUNK_BYTES``; 1 = streaming); ``batch_chunk``
        bounds memory by splitting the batch.
        All chunkings give identical outputs.
        """
        timesteps = check_timesteps(timesteps)
        self.check_input(x, sequence=sequence)
        bdim = 1 if sequence else 0
        batch = inputs.batch_size(x, bdim)
        if time_chunk == "auto":
            rows = self.AUTO_CHUNK_BYTES // max(1, self.activation_bytes * batch)
            chunk = min(timesteps, max(1, int(rows)))
        else:
            chunk = timesteps if time_chunk is None else check_timesteps(time_chunk)
        if sequence and inputs.batch_size(x, 0) < timesteps:
            raise ShapeError(f"sequence input has {inputs.batch_size(x, 0)} frames but {timesteps} timesteps "
                             "were asked")
        if batch_chunk is not None and batch_chunk < batch:
            parts = [
                self.run(p, timesteps, sequence=sequence, time_chunk=chunk)
                for p in inputs.split(x, check_timesteps(batch_chunk), dim=bdim)
            ]
            return inputs.cat(parts, dim=1)
        sess = Session(self, x, sequence=sequence)
        try:
            outs = []
            done = 0
            while done < timesteps:
                steps = min(chunk, timesteps - done)
                outs.append(sess.advance(steps))
                done += steps
        finally:
            sess.close()
        return inputs.cat(outs, dim=0)


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
        split = None if sequence else model._split()
        if split is not None:
            prefix, self._suffix, entry_names = split
            with torch.no_grad():
                self._entry = tuple(inputs.call(prefix, x))
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
            out = self.model.call(inputs.map_tensors(lambda f: f.reshape(steps * b, *f.shape[2:]), frames))
        else:
            out = self.model.call(inputs.repeat_over_time(self._x, steps))
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

    def __enter__(self) -> Session:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

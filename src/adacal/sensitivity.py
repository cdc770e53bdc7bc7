"""Per-layer sensitivity profiling (method.md §5): KL to the ANN when one layer's knob changes.

For each neuron i and candidate k (a φ or a ρ), only neuron i is changed; the network's
values that do not depend on neuron i are taken from one cached baseline run, so each candidate
re-executes just the part of the graph downstream of i ("prefix reuse"). The table is written
to JSON after every layer and an interrupted profile resumes where it stopped.
"""
from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, fx

from adacal import inputs
from adacal import progress as reporting
from adacal.atomic import atomic_write_json
from adacal.checks import check_timesteps
from adacal.distributed import broadcast_object, deal, gather_objects, is_main, world
from adacal.errors import ConfigError
from adacal.knobs import Knob, get_knob
from adacal.metrics import symmetric_kl
from adacal.neurons import IFNeuron, is_neuron, is_neuron_node
from adacal.spiking_model import SpikingModel

__all__ = ["SensitivityTable", "profile"]

log = logging.getLogger(__name__)

Progress = Callable[[int, int, str], None]
CostFn = Callable[[str, Tensor], float]
Thresholds = Mapping[str, Mapping[float, Tensor]]


@dataclass(frozen=True)
class SensitivityTable:
    """Scores (symmetric KL) and costs per layer and candidate, keyed by layer name and value."""

    knob: str
    candidates: tuple[float, ...]
    scores: dict[str, dict[float, float]]
    costs: dict[str, dict[float, float]]
    spikes: dict[str, dict[float, float]] = field(default_factory=dict)
    seconds: float = 0.0

    def as_mapping(self) -> dict[str, dict[float, tuple[float, float]]]:
        """``{layer: {value: (cost, score)}}`` for :class:`adacal.search.SearchTable`."""
        return {
            layer: {v: (self.costs[layer][v], self.scores[layer][v]) for v in self.scores[layer]}
            for layer in self.scores
        }

    def to_dict(self) -> dict[str, Any]:
        def keyed(d: dict[str, dict[float, float]]) -> dict[str, dict[str, float]]:
            return {k: {repr(float(v)): s for v, s in row.items()} for k, row in d.items()}

        return {"knob": self.knob, "candidates": list(self.candidates), "scores": keyed(self.scores),
                "costs": keyed(self.costs), "spikes": keyed(self.spikes), "seconds": self.seconds}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SensitivityTable:
        def unkeyed(rows: dict[str, dict[str, float]]) -> dict[str, dict[float, float]]:
            return {k: {_value(v): s for v, s in row.items()} for k, row in rows.items()}

        return cls(d["knob"], tuple(_value(str(c)) for c in d["candidates"]), unkeyed(d["scores"]),
                   unkeyed(d["costs"]), unkeyed(d.get("spikes", {})), float(d.get("seconds", 0.0)))


def _value(s: str) -> float:
    v = float(s)
    return int(v) if v.is_integer() else v


class _CachedRun:
    """One batched SNN run whose every node value is kept, to re-run any downstream part."""

    def __init__(self, snn: SpikingModel, x: Any, timesteps: int, sequence: bool = False) -> None:
        # the simulation's graph: weighted function nodes on canonical row blocks, as in run()
        self.snn, self.gm, self.T = snn, snn.simulation_graph(), timesteps
        self.batch = inputs.batch_size(x, 1 if sequence else 0)
        self.nodes = list(self.gm.graph.nodes)
        self.neuron_nodes = {
            str(n.target): n for n in self.nodes
            if is_neuron_node(self.gm, n)
        }
        from adacal.convert.prepare import positional

        self.xin = positional(self.gm, _stacked(x, timesteps, sequence))
        last_use: dict[fx.Node, fx.Node] = {}
        for node in self.nodes:
            for arg in node.all_input_nodes:
                last_use[arg] = node
        self._dies_at: dict[fx.Node, list[fx.Node]] = {}
        for value, user in last_use.items():
            self._dies_at.setdefault(user, []).append(value)
        self.env: dict[fx.Node, Any] = {}
        self.output = self._execute(self.xin, set(self.nodes), self.env)

    def _execute(self, xin: tuple[Any, ...], todo: set[fx.Node], env: dict[fx.Node, Any], *, free: bool = False,
                 keep: fx.Node | None = None) -> Any:
        """Run the ``todo`` nodes in order; with ``free``, drop each fresh value after its last use
        (cached baseline values stay alive in ``self.env``), keeping a rerun's peak memory low."""
        interp = fx.Interpreter(self.gm)
        args = iter(xin)
        for node in self.nodes:
            if node.op == "placeholder":
                value = next(args, None)
                if node in todo:
                    env[node] = value
                continue
            if node not in todo:
                continue
            if node.op == "output":
                out = fx.node.map_arg(node.args[0], lambda n: env[n])
                return (out, env[keep]) if keep is not None else out
            args = fx.node.map_arg(node.args, lambda n: env[n])
            kwargs = fx.node.map_arg(node.kwargs, lambda n: env[n])
            if node.op == "call_module":
                mod = self.gm.get_submodule(str(node.target))
                if is_neuron(mod):
                    mod.reset()
                env[node] = mod(*args, **kwargs)
            else:
                env[node] = getattr(interp, node.op)(node.target, args, kwargs)
            del args, kwargs
            if free:  # values computed in this rerun whose last user has now run
                for dead in self._dies_at.get(node, ()):
                    if dead in todo and dead is not keep:
                        env.pop(dead, None)
        raise RuntimeError("graph has no output node")

    def downstream(self, name: str) -> set[fx.Node]:
        start = self.neuron_nodes[name]
        out = {start}
        for node in self.nodes:
            if any(a in out for a in node.all_input_nodes):
                out.add(node)
        return out

    def rerun(self, name: str, todo: set[fx.Node]) -> tuple[Any, Tensor]:
        """Output and neuron ``name``'s own output when only the nodes in ``todo`` are recomputed."""
        env = {n: v for n, v in self.env.items() if n not in todo}
        keep = self.neuron_nodes[name]
        return self._execute(self.xin, todo | {self.nodes[-1]}, env, free=True, keep=keep)


def _stacked(x: Any, timesteps: int, sequence: bool) -> Any:
    """``[T·B, ...]``: a constant input repeated, or a sequence's first T steps, stacked on the batch axis."""
    if sequence:
        return inputs.map_tensors(lambda t: t[:timesteps].reshape(-1, *t.shape[2:]), x)
    return inputs.repeat_over_time(x, timesteps)


def _mean_output(out: Any, timesteps: int, batch: int) -> Any:
    return inputs.map_tensors(lambda o: o.view(timesteps, batch, *o.shape[1:]).mean(0), out)


def default_divergence(ann: Any, snn: Any) -> Any:
    """Symmetric KL of the softmax over dim 1 (seed eq. 4), summed over the outputs of a multi-output
    network; a task passes its own (:meth:`adacal.tasks.Task.divergence`)."""
    return sum(symmetric_kl(a, s) for a, s in zip(inputs.leaves(ann), inputs.leaves(snn)))


def _spike_total(neuron: IFNeuron, y: Tensor) -> Tensor:
    """Spikes per position summed over time and batch, from the neuron's output values (a negative
    spike of a signed neuron counts as one spike too)."""
    th = neuron._bc(neuron.effective_threshold(), y)
    return torch.round(y / th).abs().sum(0)


def _fingerprint(snn: SpikingModel, x: Any, knob: str, candidates: Sequence[float], T: int,
                 thresholds: Thresholds | None) -> str:
    h = hashlib.sha256()
    h.update(f"{knob}|{list(candidates)}|{T}|{list(snn.neurons())}|{inputs.describe(x)}".encode())
    for name, row in sorted((thresholds or {}).items()):
        for value, theta in sorted(row.items()):
            h.update(f"{name}|{value}|".encode())
            h.update(theta.detach().double().sum().cpu().numpy().tobytes())
    for leaf in inputs.leaves(x):
        h.update(leaf.detach().double().sum().cpu().numpy().tobytes())
    for n in snn.neurons().values():
        h.update(n.theta.detach().double().sum().cpu().numpy().tobytes())
        h.update(f"{int(n.phi)}|{float(n.rho)}".encode())
    return h.hexdigest()[:16]


@torch.no_grad()
def profile(
    snn: SpikingModel,
    x: Any,
    *,
    knob: str | Knob,
    candidates: Sequence[float],
    timesteps: int,
    cost_fn: CostFn | None = None,
    reuse_prefix: bool = True,
    layers: Sequence[str] | None = None,
    checkpoint: str | os.PathLike[str] | None = None,
    progress: Progress | None = None,
    thresholds: Thresholds | None = None,
    divergence: Callable[[Any, Any], Any] | None = None,
    sequence: bool = False,
) -> SensitivityTable:
    """Sensitivity of every neuron to every candidate of ``knob`` (a registered knob or its name).

    Score: ``divergence`` between the ANN's and the SNN's time-averaged outputs on the calibration
    batch ``x`` (default: symmetric KL of the softmax), with only that neuron changed. Cost:
    ``cost_fn(name, spike_map)`` of that neuron's spikes per image (default: the spike count per
    image). ``checkpoint`` is a JSON file written after every layer; a rerun with the same model,
    data and candidates picks up from it and gives identical results. ``layers`` restricts profiling to those neurons.
    ``thresholds[name][value]``: the threshold neuron ``name`` runs with at candidate ``value``
    (e.g. refit for that φ); by default a candidate keeps the neuron's current threshold.
    ``sequence``: ``x`` is ``[T, B, ...]``, a different input at every step (e.g. streamed events);
    the ANN's reference output is then taken on its time average.
    Under torch.distributed (same ``snn`` and ``x`` on every rank) the (layer, candidate) pairs are
    dealt over the ranks and every rank returns the same table; rank 0 writes the checkpoint.
    """
    knob_ = get_knob(knob)
    if not candidates:
        raise ConfigError("candidates must not be empty")
    cands = tuple(knob_.check(c) for c in candidates)
    divergence = divergence or default_divergence
    T = check_timesteps(timesteps)
    snn.check_input(x, sequence=sequence)
    batch = inputs.batch_size(x, 1 if sequence else 0)
    cost_fn = cost_fn or (lambda _name, spikes: float(spikes.sum()) / batch)
    path = Path(checkpoint) if checkpoint is not None else None
    key = _fingerprint(snn, x, knob_.name, cands, T, thresholds)
    state = _load_state(path, key, knob_.name)
    start = time.perf_counter()
    ann = snn.ann_forward(inputs.map_tensors(lambda t: t[:T].mean(0), x) if sequence else x)
    neurons = snn.neurons()
    if layers is not None:
        unknown = sorted(set(layers) - set(neurons))
        if unknown:
            raise ConfigError(f"unknown layer(s) {unknown}; the neurons are {list(neurons)}")
        neurons = {k: v for k, v in neurons.items() if k in set(layers)}
    if thresholds is not None:
        missing = sorted(f"{k}@{v}" for k in neurons for v in cands if v not in thresholds.get(k, {}))
        if missing:
            raise ConfigError(f"thresholds table lacks entries for {missing[:5]}"
                              f"{' …' if len(missing) > 5 else ''}; give one per neuron and candidate")
    scores: dict[str, dict[float, float]] = {}
    costs: dict[str, dict[float, float]] = {}
    spikes: dict[str, dict[float, float]] = {}
    for name, done in state["layers"].items():
        if name in neurons:
            scores[name] = {_value(k): v for k, v in done["scores"].items()}
            costs[name] = {_value(k): v for k, v in done["costs"].items()}
            spikes[name] = {_value(k): v for k, v in done["spikes"].items()}
    todo_layers = [k for k in neurons if k not in state["layers"]]
    w = world()
    # (layer, candidate) pairs dealt round-robin over the ranks; a round is `size` whole layers (one
    # layer's worth of work per rank), after which the rows are gathered and checkpointed by rank 0.
    pairs = [(name, value) for name in todo_layers for value in cands]
    per_round = w.size * len(cands)
    with snn.mode("snn", timesteps=T), contextlib.ExitStack() as stack:
        base = _CachedRun(snn, x, T, sequence) if reuse_prefix else None
        bar = stack.enter_context(reporting.task(f"profile {knob_.name}", len(neurons), "layer"))
        bar.advance(len(neurons) - len(todo_layers))
        for r0 in range(0, len(pairs), per_round):
            chunk = pairs[r0:r0 + per_round]
            if progress is not None:
                progress(len(neurons) - len(todo_layers) + r0 // len(cands), len(neurons), chunk[0][0])
            mine = [_score_pair(snn, base, neurons[name], name, value, x, T, knob_, thresholds, divergence,
                                ann, cost_fn, batch, sequence) for name, value in deal(chunk, w)]
            rows = [r for part in gather_objects(mine, what=f"profiling {knob_.name}") for r in part]
            got = {(name, value): r for name, value, *r in rows}
            finished = list(dict.fromkeys(n for n, _ in chunk))
            for name in finished:
                scores[name] = {v: got[(name, v)][0] for v in cands}
                costs[name] = {v: got[(name, v)][1] for v in cands}
                spikes[name] = {v: got[(name, v)][2] for v in cands}
                state["layers"][name] = {part: {repr(float(k)): v for k, v in row[name].items()}
                                         for part, row in (("scores", scores), ("costs", costs), ("spikes", spikes))}
            bar.advance(len(finished))
            if path is not None and is_main():
                atomic_write_json(path, state, indent=1)
    scores, costs, spikes = ({k: d[k] for k in neurons} for d in (scores, costs, spikes))
    if progress is not None:
        progress(len(neurons), len(neurons), "done")
    return SensitivityTable(knob_.name, cands, scores, costs, spikes, time.perf_counter() - start)


def _load_state(path: Path | None, key: str, knob: str) -> dict[str, Any]:
    """The checkpoint's finished layers if it belongs to this profile (read by rank 0, sent to all)."""
    state: dict[str, Any] = {"fingerprint": key, "layers": {}}
    if path is not None and is_main() and path.exists():
        try:
            saved = json.loads(path.read_text())
        except (OSError, json.JSONDecodeError):
            saved = {}
        if saved.get("fingerprint") == key:
            state = saved
            log.info("resuming %s profile from %s (%d layers done)", knob, path, len(state["layers"]))
        else:
            log.warning("ignoring %s: it belongs to another model, data or candidate set", path)
    return broadcast_object(state, what="reading the profile checkpoint")


def _score_pair(snn: SpikingModel, base: _CachedRun | None, neuron: IFNeuron, name: str, value: float, x: Any,
                T: int, knob: Knob, thresholds: Thresholds | None, divergence: Callable[[Any, Any], Any],
                ann: Any, cost_fn: CostFn, batch: int, sequence: bool) -> tuple[str, float, float, float, float]:
    """``(name, value, score, cost, spikes per sample)`` with only ``neuron``'s knob set to ``value``."""
    original = knob.get(neuron)
    original_theta = neuron.theta.detach().clone()
    try:
        knob.set(neuron, value)
        if thresholds is not None:
            neuron.set_theta(thresholds[name][value])
        if base is not None:
            out, y = base.rerun(name, base.downstream(name))
        else:
            out, y = _full_run(snn, x, T, name, sequence)
        smap = _spike_total(neuron, y)
        return (name, value, float(divergence(ann, _mean_output(out, T, batch))), float(cost_fn(name, smap)),
                float(smap.sum()) / batch)
    finally:
        knob.set(neuron, original)
        neuron.theta = original_theta


def _full_run(snn: SpikingModel, x: Any, T: int, name: str, sequence: bool = False) -> tuple[Any, Tensor]:
    """The naive way: simulate the whole network again (kept for the benchmark)."""
    captured: list[Tensor] = []
    neuron = snn.neurons()[name]
    handle = neuron.register_forward_hook(lambda _m, _a, out: captured.append(out))
    try:
        for n in snn.neurons().values():
            n.reset()
        out = inputs.call(snn.simulation_graph(), _stacked(x, T, sequence))
    finally:
        handle.remove()
    return out, captured[0]

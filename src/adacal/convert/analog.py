"""Ops the user keeps in floating point on the spiking path (``analog=[...]``), made honest.

Each such op is checked to act on every sample separately (an op that mixes samples — attention
over the batch axis, a batch statistic — would mix the time steps the simulator stacks there, so
it is rejected), then wrapped in a running average of its inputs and an increment of its output
(:mod:`adacal.neurons.analog`) so its SNN output converges to the ANN's as T grows.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor, fx

from adacal import inputs
from adacal.convert.trace import describe_target, qualname
from adacal.errors import UnsupportedLayerError
from adacal.neurons.analog import RunningIncrement, RunningMean

__all__ = ["wrap_analog_ops"]


class _Recorder(fx.Interpreter):
    """Runs the graph and keeps every node's value."""

    def __init__(self, gm: fx.GraphModule) -> None:
        super().__init__(gm)
        self.values: dict[fx.Node, Any] = {}

    def run_node(self, n: fx.Node) -> Any:
        out = super().run_node(n)
        self.values[n] = out
        return out


def _batch_dim(small: Any, large: Any) -> int | None:
    """The one dimension that grew by one sample between two runs (None if none or ambiguous)."""
    if not (isinstance(small, Tensor) and isinstance(large, Tensor)) or small.dim() != large.dim():
        return None
    grown = [d for d in range(small.dim()) if large.shape[d] == small.shape[d] + 1]
    same = all(large.shape[d] == small.shape[d] for d in range(small.dim()) if d not in grown)
    return grown[0] if len(grown) == 1 and same else None


def _mixes_samples(gm: fx.GraphModule, node: fx.Node, values: dict[fx.Node, Any], dims: dict[fx.Node, int]) -> bool:
    """Perturb sample 0 of every batched input; any other sample's output moving means mixing."""
    interp = fx.Interpreter(gm)

    def perturbed(a: fx.Node) -> Any:
        v = values[a]
        if a not in dims or not isinstance(v, Tensor) or not v.is_floating_point():
            return v
        v = v.clone()
        v.narrow(dims[a], 0, 1).add_(1.0 + v.narrow(dims[a], 0, 1).abs())
        return v

    args = fx.node.map_arg(node.args, perturbed)
    kwargs = fx.node.map_arg(node.kwargs, perturbed)
    with torch.no_grad():
        out = getattr(interp, node.op)(node.target, args, kwargs)
    bd = dims.get(node, 0)  # a tuple output (e.g. attention's): its tensors are batched on dim 0
    for a, b in zip(inputs.leaves(values[node]), inputs.leaves(out)):
        if a.dim() <= bd or a.shape[bd] < 2:
            continue
        if not torch.allclose(a.narrow(bd, 1, a.shape[bd] - 1), b.narrow(bd, 1, b.shape[bd] - 1),
                              rtol=1e-5, atol=1e-6):
            return True
    return False


def wrap_analog_ops(gm: fx.GraphModule, names: Iterable[str], analog_nodes: list[fx.Node],
                    example: tuple[Any, ...]) -> list[str]:
    """Check and wrap every node of ``analog_nodes`` (ops on the spiking path listed in ``names``).

    ``example``: the graph's positional example inputs (at least one sample). Returns the wrapped
    ops' names; raises :class:`UnsupportedLayerError` listing every op that mixes samples or has no
    batch dimension.
    """
    if not analog_nodes:
        return []
    small = _Recorder(gm)
    grown = _Recorder(gm)
    with torch.no_grad():
        small.run(*example)
        grown.run(*inputs.map_tensors(lambda t: torch.cat([t, t[:1]]), example))
    dims = {n: d for n in small.values if (d := _batch_dim(small.values[n], grown.values[n])) is not None}
    bad = []
    for node in analog_nodes:
        tensors_in = [a for a in node.all_input_nodes if isinstance(grown.values.get(a), Tensor)]
        unbatched = [a.name for a in tensors_in if a not in dims and a.op != "get_attr"]
        if unbatched or node not in dims and isinstance(grown.values[node], Tensor):
            bad.append(f"  - {qualname(node)} ({describe_target(gm, node)}): its input or output has no batch "
                       "dimension the simulator can stack time steps on")
        elif _mixes_samples(gm, node, grown.values, dims):
            bad.append(f"  - {qualname(node)} ({describe_target(gm, node)}): mixes samples of a batch (e.g. "
                       "attention or a statistic over the batch axis); the simulator stacks time steps on that "
                       "axis, so its result would depend on how a run is chunked")
    if bad:
        raise UnsupportedLayerError(f"{len(bad)} op(s) listed in analog=[...] cannot be kept in floating point "
                                    "on the spiking path:\n" + "\n".join(bad))
    wrapped = []
    for node in analog_nodes:
        base = qualname(node).replace(".", "_")
        for i, a in enumerate(dict.fromkeys(a for a in node.all_input_nodes if a in dims)):
            name = _free_name(gm, f"{base}_analog_in{i}")
            gm.add_submodule(name, RunningMean(dims[a]))
            with gm.graph.inserting_before(node):
                mean = gm.graph.call_module(name, (a,))
            node.replace_input_with(a, mean)
        outputs = [node] if isinstance(grown.values[node], Tensor) else [
            u for u in node.users if isinstance(grown.values.get(u), Tensor) and u in dims]
        for k, out in enumerate(outputs):
            name = _free_name(gm, f"{base}_analog_out{k}")
            gm.add_submodule(name, RunningIncrement(dims[out]))
            with gm.graph.inserting_after(out):
                inc = gm.graph.call_module(name, (out,))
            out.replace_all_uses_with(inc, delete_user_cb=lambda u, inc=inc: u is not inc)
        wrapped.append(qualname(node))
    gm.graph.lint()
    gm.recompile()
    return wrapped


def _free_name(gm: fx.GraphModule, name: str) -> str:
    k, out = 1, name
    while hasattr(gm, out):
        out, k = f"{name}{k}", k + 1
    return out

"""A residual add that feeds a neuron, computed inside the neuron's step.

Why. In a residual network the neuron after each block integrates ``conv(x) + shortcut(x)``. Run
as two ops, the add reads two tensors and writes a third, which the neuron then reads again: a
whole pass over memory per block and step, which at large batch costs a sizeable part of what the
neuron's own step costs. The fused neuron step can take both terms and add them itself
(:mod:`adacal.neurons.kernels`).

What. :func:`fuse_residual_adds` rewrites ``neuron(a + b)`` in a simulation graph into
``neuron_of_sum(neuron, a, b)``. At run time that computes exactly ``neuron(a + b)``: it passes
both terms to the neuron only where the sum then happens inside the same compiled step, with the
same rounding (``a + b``, then the bias correction, then the membrane). Otherwise (hooks on the
neuron, which must see the sum, a neuron type with its own dynamics, another mode, mismatched
shapes, dtypes or memory orders) it adds first, as the graph did. Outputs are the same to the bit
either way (tested).

Only the simulation's own graphs are rewritten (``Session``); ``SpikingModel.graph_module`` and
``simulation_graph()``, which calibration and profiling walk by neuron nodes, keep the add.
"""
from __future__ import annotations

import operator
from typing import Any

import torch
from torch import Tensor, fx
from torch.nn.modules import module as _module

from adacal.neurons.module import IFNeuron

__all__ = ["fuse_residual_adds", "neuron_of_sum"]

_ADDS = (operator.add, torch.add)


def _hooked(neuron: IFNeuron) -> bool:
    return bool(neuron._forward_hooks or neuron._forward_pre_hooks
                or _module._global_forward_hooks or _module._global_forward_pre_hooks)


def _same_order(a: Tensor, b: Tensor) -> bool:
    """Both plainly contiguous, or both 4-D channels-last: then one row order serves both."""
    if a.is_contiguous() and b.is_contiguous():
        return True
    cl = torch.channels_last
    return a.dim() == 4 and a.is_contiguous(memory_format=cl) and b.is_contiguous(memory_format=cl)


def neuron_of_sum(neuron: IFNeuron, a: Any, b: Any) -> Any:
    """``neuron(a + b)``, with the add done in the neuron's step where that is the same computation."""
    if (type(neuron)._spiking is IFNeuron._spiking and neuron.mode == "snn" and not neuron.constant_input
            and isinstance(a, Tensor) and isinstance(b, Tensor) and a.shape == b.shape and a.dtype == b.dtype
            and a.device == b.device and not (a.requires_grad or b.requires_grad) and _same_order(a, b)
            and not _hooked(neuron)):
        return neuron._spiking(a, residual=b)
    return neuron(a + b)


def _fusable_add(gm: fx.GraphModule, node: fx.Node) -> fx.Node | None:
    """The add node feeding neuron call ``node`` when it can move into the neuron, else None."""
    if node.op != "call_module" or len(node.args) != 1 or node.kwargs:
        return None
    if not isinstance(gm.get_submodule(str(node.target)), IFNeuron):
        return None
    add = node.args[0]
    if not isinstance(add, fx.Node) or add.op != "call_function" or add.kwargs or len(add.args) != 2:
        return None
    try:
        if add.target not in _ADDS:
            return None
    except TypeError:  # unhashable target
        return None
    if len(add.users) != 1 or not all(isinstance(t, fx.Node) for t in add.args):
        return None
    return add


def fuse_residual_adds(gm: fx.GraphModule) -> fx.GraphModule:
    """A copy of ``gm`` in which every ``neuron(a + b)`` whose sum has no other user becomes
    ``neuron_of_sum(neuron, a, b)``; ``gm`` itself when there is none. Shares ``gm``'s modules."""
    pairs = {n: add for n in gm.graph.nodes if (add := _fusable_add(gm, n)) is not None}
    if not pairs:
        return gm
    adds = set(pairs.values())
    graph = fx.Graph()
    env: dict[fx.Node, fx.Node] = {}
    for node in gm.graph.nodes:
        if node in adds:
            continue  # folded into its neuron below
        if node in pairs:
            a, b = (env[t] for t in pairs[node].args)
            mod = graph.get_attr(str(node.target))
            new = graph.call_function(neuron_of_sum, (mod, a, b))
        else:
            new = graph.node_copy(node, lambda n: env[n])
        env[node] = new
    return fx.GraphModule(gm, graph)

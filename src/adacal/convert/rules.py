"""What may sit on the spiking path, and the max-pool rewrite that keeps VGG/ResNet stems exact.

The spiking path is every node downstream of a neuron. Its ops must be linear in the spikes
(so the time average commutes with them): weighted layers, average pooling, sums, concatenation,
reshapes, upsampling. Everything else is reported at once, each offender with a hint.

Max-pools: ``maxpool(relu(z)) == relu(maxpool(z))``, so a max-pool after a ReLU moves in front of
its neuron (:func:`push_maxpools`); one that then pools spike-driven currents becomes a
:class:`~adacal.neurons.pool.SpikingMaxPool`, which pools accumulated currents so that rates are
preserved (:func:`rate_preserving_pools`).
"""
from __future__ import annotations

import copy
from collections import Counter
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import fx, nn

from adacal.convert.ops import DIVISIONS, LINEAR_OPS, Op, op_kind, pool_dims
from adacal.convert.trace import describe_target, qualname
from adacal.errors import UnsupportedLayerError
from adacal.neurons import is_neuron_node
from adacal.neurons.pool import SpikingMaxPool, SpikingMaxPool1d, SpikingMaxPool2d, SpikingMaxPool3d, spiking_max_pool

__all__ = ["spiking_nodes", "check_spiking_path", "push_maxpools", "rate_preserving_pools"]

is_neuron = is_neuron_node  # local short name

def spiking_nodes(gm: fx.GraphModule) -> set[fx.Node]:
    """Nodes downstream of (and including) any neuron."""
    out: set[fx.Node] = set()
    for node in gm.graph.nodes:  # topological order
        if is_neuron(gm, node) or any(a in out for a in node.all_input_nodes):
            out.add(node)
    return out


def _is_maxpool(gm: fx.GraphModule, node: fx.Node) -> bool:
    return op_kind(gm, node) is Op.MAXPOOL


def _feeds_only_neurons(gm: fx.GraphModule, node: fx.Node) -> bool:
    """A max-pool of currents is fine when its result goes only into neurons (maybe via max-pools)."""
    return len(node.users) > 0 and all(
        is_neuron(gm, u) or (_is_maxpool(gm, u) and _feeds_only_neurons(gm, u)) for u in node.users
    )


def _is_tensor_node(node: fx.Node) -> bool:
    meta = node.meta.get("tensor_meta")
    return meta is not None


def _hint(gm: fx.GraphModule, node: fx.Node) -> str:
    kind = op_kind(gm, node)
    if kind is Op.MAXPOOL:
        return ("max-pooling spikes is not rate-preserving; put the max-pool directly after a ReLU "
                "(adacal then moves it in front of the neuron) or use average pooling")
    if kind in (Op.SCALE, Op.WEIGHTED):
        return ("multiplies two spiking tensors, which is not linear in the spikes; list it in "
                "analog=[...] to compute it in floating point every step (approximate)")
    return ("no spiking equivalent: retrain with ReLU, pass a ReLU-like activation type/function in "
            "activations=[...] to turn it into a neuron, or list its name in analog=[...] to keep it "
            "in floating point on the spiking path (approximate)")


def _operand_ok(node: fx.Node, spiking: set[fx.Node]) -> bool:
    """A product is linear in the spikes while at most one operand carries them (counted by position:
    ``x * x`` of a spiking ``x`` is not), and a divisor never does."""
    operands: list[object] = []
    fx.node.map_arg((node.args, node.kwargs), lambda a: operands.append(a) or a)
    n_spiking = sum(1 for a in operands if isinstance(a, fx.Node) and a in spiking and _is_tensor_node(a))
    if node.target in DIVISIONS:
        return len(node.args) > 1 and not (isinstance(node.args[1], fx.Node) and node.args[1] in spiking)
    return n_spiking <= 1


def _allowed(gm: fx.GraphModule, node: fx.Node, spiking: set[fx.Node]) -> bool:
    if node.op in ("output", "placeholder", "get_attr") or not _is_tensor_node(node) or is_neuron(gm, node):
        return True
    kind = op_kind(gm, node)
    if kind is Op.MAXPOOL:
        return _feeds_only_neurons(gm, node)
    if kind is Op.SCALE or (kind is Op.WEIGHTED and node.op == "call_function"):
        return _operand_ok(node, spiking)
    return kind in LINEAR_OPS


def check_spiking_path(gm: fx.GraphModule, analog: Iterable[str] = ()) -> None:
    """Raise one UnsupportedLayerError listing every op on the spiking path that is not allowed."""
    analog = set(analog)
    spiking = spiking_nodes(gm)
    bad = []
    for node in gm.graph.nodes:
        if node not in spiking or qualname(node) in analog or node.name in analog:
            continue
        if not _allowed(gm, node, spiking):
            bad.append(f"  - {qualname(node)} ({describe_target(gm, node)}): {_hint(gm, node)}")
    if bad:
        raise UnsupportedLayerError(
            f"{len(bad)} op(s) on the spiking path cannot be converted:\n" + "\n".join(bad)
        )


def _copy_neuron(gm: fx.GraphModule, neuron_node: fx.Node, suffix: str) -> str:
    src = gm.get_submodule(str(neuron_node.target))
    new = copy.deepcopy(src)  # same type and settings (conversion runs before any calibration)
    name = f"{neuron_node.target}{suffix}"
    k = 1
    while _has(gm, name):
        name, k = f"{neuron_node.target}{suffix}{k}", k + 1
    gm.add_submodule(name, new)
    return name


def _has(gm: fx.GraphModule, name: str) -> bool:
    try:
        gm.get_submodule(name)
        return True
    except AttributeError:
        return False


def push_maxpools(gm: fx.GraphModule) -> int:
    """Move each max-pool that reads neuron outputs in front of the neurons (exact for the ANN).

    ``maxpool(relu(z)) == relu(maxpool(z))``; a neuron used elsewhere too is duplicated; a
    channel concatenation of neuron outputs is split (``maxpool(cat) == cat(maxpool)``).
    Max-pools over anything else are left for :func:`check_spiking_path` to report.
    """
    moved = 0
    changed = True
    while changed:
        changed = False
        for node in list(gm.graph.nodes):
            if _is_maxpool(gm, node) and node.args and isinstance(node.args[0], fx.Node):
                if _push_one(gm, node):
                    moved += 1
                    changed = True
                    break
    gm.graph.lint()
    gm.recompile()
    return moved


def _pool_like(gm: fx.GraphModule, pool: fx.Node, src: fx.Node) -> fx.Node:
    """A copy of ``pool`` applied to ``src`` (inserted right after ``src``)."""
    with gm.graph.inserting_after(src):
        return gm.graph.create_node(pool.op, pool.target, (src, *pool.args[1:]), dict(pool.kwargs))


def _push_one(gm: fx.GraphModule, pool: fx.Node) -> bool:
    src = pool.args[0]
    if not isinstance(src, fx.Node):
        return False
    if is_neuron(gm, src):
        z = src.args[0]
        if not isinstance(z, fx.Node):
            return False
        if len(src.users) == 1:  # reorder: pool(z) -> neuron
            pool.args = (z, *pool.args[1:])
            src.args = (pool,)
            pool.replace_all_uses_with(src, delete_user_cb=lambda u: u is not src)
            _move_after(gm, src, pool)
            return True
        new_pool = _pool_like(gm, pool, z)
        name = _copy_neuron(gm, src, "_pooled")
        with gm.graph.inserting_after(new_pool):
            new_neuron = gm.graph.call_module(name, (new_pool,))
        pool.replace_all_uses_with(new_neuron)
        gm.graph.erase_node(pool)
        return True
    is_cat = src.op == "call_function" and src.target in (torch.cat, torch.concat)
    if is_cat:
        dim = src.args[1] if len(src.args) > 1 else src.kwargs.get("dim", 0)
        parts = src.args[0]
        if dim in (1, -3) and isinstance(parts, (list, tuple)) and all(
            isinstance(p, fx.Node) and is_neuron(gm, p) for p in parts
        ):
            pooled = [_pool_like(gm, pool, p) for p in parts]
            with gm.graph.inserting_before(pool):
                new_cat = gm.graph.call_function(src.target, (pooled, *src.args[1:]), dict(src.kwargs))
            pool.replace_all_uses_with(new_cat)
            gm.graph.erase_node(pool)
            if not src.users:
                gm.graph.erase_node(src)
            return True
    return False


def _move_after(gm: fx.GraphModule, node: fx.Node, anchor: fx.Node) -> None:
    anchor.append(node)


def _spiking_pool_for(gm: fx.GraphModule, node: fx.Node) -> nn.Module | None:
    """A :class:`SpikingMaxPool` equivalent to the max-pool ``node`` (None: cannot be built)."""
    if node.op == "call_module":
        mod = gm.get_submodule(str(node.target))
        if isinstance(mod, SpikingMaxPool) or mod.return_indices:
            return None
        return spiking_max_pool(mod)
    names = ["kernel_size", "stride", "padding", "dilation", "ceil_mode"]
    if node.target in (F.max_pool1d, F.max_pool2d, F.max_pool3d):
        names.append("return_indices")
    params = dict(zip(names, node.args[1:]))
    params.update(node.kwargs)
    leaves: list[object] = []
    fx.node.map_aggregate(list(params.values()), leaves.append)
    if any(isinstance(v, fx.Node) for v in leaves) or params.pop("return_indices", False):
        return None  # computed hyper-parameters or indices: left as the plain per-step pool
    if params.get("stride") in (None, [], ()):
        params["stride"] = None
    cls = {1: SpikingMaxPool1d, 2: SpikingMaxPool2d, 3: SpikingMaxPool3d}[pool_dims(gm, node)]
    return cls(**params)


def rate_preserving_pools(gm: fx.GraphModule) -> int:
    """Replace every max-pool of spike-driven currents by a :class:`SpikingMaxPool` (own state each).

    Max-pools in the analog prefix (constant input) stay as they are: pooling a constant current
    per step is already exact. Returns how many pools were replaced.
    """
    spiking = spiking_nodes(gm)
    uses = Counter(str(n.target) for n in gm.graph.nodes if n.op == "call_module")
    replaced = 0
    for node in list(gm.graph.nodes):
        if not (_is_maxpool(gm, node) and node.args and node.args[0] in spiking):
            continue
        if not _feeds_only_neurons(gm, node):
            continue
        new = _spiking_pool_for(gm, node)
        if new is None:
            continue
        if node.op == "call_module" and uses[str(node.target)] == 1:
            name = str(node.target)  # sole use: same name, same place
        else:
            base = (str(node.target) if node.op == "call_module" else node.name).replace(".", "_")
            name, k = f"{base}_spiking", 1
            while _has(gm, name):
                name, k = f"{base}_spiking{k}", k + 1
        old = gm.get_submodule(str(node.target)) if node.op == "call_module" else None
        if isinstance(old, nn.Module):
            new.train(old.training)
        _set_module(gm, name, new)
        with gm.graph.inserting_after(node):
            new_node = gm.graph.call_module(name, (node.args[0],))
        new_node.meta = dict(node.meta)
        node.replace_all_uses_with(new_node)
        gm.graph.erase_node(node)
        spiking.add(new_node)  # a chained pool reading this one is replaced too
        replaced += 1
    gm.graph.lint()
    gm.delete_all_unused_submodules()
    gm.recompile()
    return replaced


def _set_module(gm: fx.GraphModule, name: str, module: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    parent = gm.get_submodule(parent_name) if parent_name else gm
    setattr(parent, attr, module)

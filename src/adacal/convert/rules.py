"""What may sit on the spiking path, and the max-pool rewrite that keeps VGG/ResNet stems exact.

The spiking path is every node downstream of a neuron. Its ops must be linear in the spikes
(so the time average commutes with them): weighted layers, average pooling, sums, concatenation,
reshapes, upsampling. Everything else is reported at once, each offender with a hint.

Max-pools: ``maxpool(relu(z)) == relu(maxpool(z))``, so a max-pool after a ReLU moves in front of
its neuron (:func:`push_maxpools`); one that then pools spike-driven currents becomes a
:class:`~adacal.neurons.pool.SpikingMaxPool`, which pools accumulated currents so that rates are
preserved (:func:`rate_preserving_pools`). A max over whole dimensions (a global max over points:
``torch.max(x, 2)[0]``, ``x.max(2).values``, ``amax``, ``adaptive_max_pool1d(x, 1)``) is first
rewritten into one :class:`~adacal.neurons.pool.MaxOver` module (:func:`canonical_max_reductions`)
and then follows the same two rules.
"""
from __future__ import annotations

import copy
import operator
from collections import Counter
from collections.abc import Iterable

import torch
import torch.nn.functional as F
from torch import fx, nn

from adacal.convert.ops import DIVISIONS, LINEAR_OPS, Op, node_arg, op_kind, pool_dims
from adacal.convert.trace import describe_target, qualname, rebuild
from adacal.errors import UnsupportedLayerError
from adacal.neurons import is_neuron_node
from adacal.neurons.pool import (
    MaxOver,
    SpikingMaxPool,
    SpikingMaxPool1d,
    SpikingMaxPool2d,
    SpikingMaxPool3d,
    spiking_max_pool,
)

__all__ = ["spiking_nodes", "check_spiking_path", "canonical_max_reductions", "push_maxpools",
           "rate_preserving_pools"]

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
    if node.op in ("call_function", "call_method") and node.target in (_MAX_FUNCS | _AMAX_FUNCS):
        return ("a max that returns indices or reduces the batch dimension has no spiking equivalent; take "
                "the values over non-batch dimensions (x.max(2)[0], amax) directly after a ReLU")
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
        raise UnsupportedLayerError(f"{len(bad)} op(s) on the spiking path cannot be converted:\n" + "\n".join(bad))


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


_MAX_FUNCS = {torch.max, "max"}
_AMAX_FUNCS = {torch.amax, "amax"}
_ADAPTIVE_MAX_FUNCS = {F.adaptive_max_pool1d: 1, F.adaptive_max_pool2d: 2, F.adaptive_max_pool3d: 3}
_ADAPTIVE_MAX_MODULES = {nn.AdaptiveMaxPool1d: 1, nn.AdaptiveMaxPool2d: 2, nn.AdaptiveMaxPool3d: 3}


def _rank(node: object) -> int | None:
    meta = node.meta.get("tensor_meta") if isinstance(node, fx.Node) else None
    shape = getattr(meta, "shape", None)
    return None if shape is None else len(shape)


def _reduced_dims(dims: object, rank: int | None) -> tuple[int, ...] | None:
    """Non-negative, sorted reduced dims without the batch dim 0; None if not a max over whole dims."""
    if isinstance(dims, int) and not isinstance(dims, bool):
        dims = (dims,)
    if not isinstance(dims, (tuple, list)) or not dims or not all(isinstance(d, int) for d in dims):
        return None
    if any(d < 0 for d in dims):
        if rank is None:
            return None
        dims = [d + rank if d < 0 else d for d in dims]
    out = tuple(sorted(set(dims)))
    return None if 0 in out or (rank is not None and out[-1] >= rank) else out


def _all_ones(size: object) -> bool:
    if isinstance(size, int) and not isinstance(size, bool):
        return size == 1
    return isinstance(size, (tuple, list)) and bool(size) and all(v == 1 for v in size)


def _max_over_spec(gm: fx.GraphModule, node: fx.Node) -> tuple[tuple[int, ...], bool, list[fx.Node]] | None:
    """``(dims, keepdim, value nodes)`` if ``node`` is a max over whole non-batch dims, else None.

    ``value nodes``: the nodes that read the max's values (``[0]``, ``.values``; unused reads of the
    indices may follow them and are dropped) — indices that are used have no spiking equivalent —
    or ``[node]`` for ops returning values only.
    """
    x = node.args[0] if node.args else None
    if not isinstance(x, fx.Node):
        return None
    rank = _rank(x)
    if node.op in ("call_function", "call_method") and node.target in _MAX_FUNCS:
        dim = node_arg(node, 1, "dim")
        if isinstance(dim, fx.Node) or dim is None:
            return None  # max(a, b) of two tensors, or a max over everything
        dims = _reduced_dims(dim, rank)

        def reads(u: fx.Node, index: int, attr: str) -> bool:
            return u.op == "call_function" and (
                (u.target is operator.getitem and u.args[1] == index) or (u.target is getattr and u.args[1] == attr))

        values = [u for u in node.users if reads(u, 0, "values")]
        unused = [u for u in node.users if reads(u, 1, "indices") and not u.users]  # `v, _ = torch.max(...)`
        if dims is None or not values or len(values) + len(unused) != len(node.users):
            return None
        return dims, bool(node_arg(node, 2, "keepdim", False)), values + unused
    if node.op in ("call_function", "call_method") and node.target in _AMAX_FUNCS:
        dims = _reduced_dims(node_arg(node, 1, "dim", ()), rank)
        return None if dims is None else (dims, bool(node_arg(node, 2, "keepdim", False)), [node])
    nd: int | None = None
    size: object = None
    if node.op == "call_function" and node.target in _ADAPTIVE_MAX_FUNCS:
        nd, size = _ADAPTIVE_MAX_FUNCS[node.target], node_arg(node, 1, "output_size")
        if node_arg(node, 2, "return_indices", False):
            return None
    elif node.op == "call_module":
        mod = gm.get_submodule(str(node.target))
        if type(mod) in _ADAPTIVE_MAX_MODULES and not mod.return_indices:
            nd, size = _ADAPTIVE_MAX_MODULES[type(mod)], mod.output_size
    if nd is None or not _all_ones(size) or rank is None or rank < nd + 2:
        return None
    return tuple(range(rank - nd, rank)), True, [node]


def _owner(gm: fx.GraphModule, node: fx.Node) -> str:
    stack = node.meta.get("nn_module_stack") or {}
    owner = next(reversed(stack.values()))[0] if stack else ""
    return owner if owner and _has(gm, owner) else ""


def canonical_max_reductions(gm: fx.GraphModule) -> int:
    """Rewrite every max over whole non-batch dimensions into one :class:`MaxOver` module.

    ``torch.max(x, d)[0]``, ``x.max(d).values``, ``torch.amax``/``x.amax`` and global adaptive
    max-pools (output size 1) all become ``MaxOver(dims, keepdim)``, which the max-pool rules
    then move and make rate-preserving. A max whose indices are used, or one over the batch
    dimension, is left as is (and reported by :func:`check_spiking_path` if it is on the spiking
    path). Needs ShapeProp metadata for negative dims. Returns how many were rewritten.
    """
    count = 0
    uses = Counter(str(n.target) for n in gm.graph.nodes if n.op == "call_module")
    for node in list(gm.graph.nodes):
        if node.op == "call_module" and isinstance(gm.get_submodule(str(node.target)), MaxOver):
            continue
        spec = _max_over_spec(gm, node)
        if spec is None:
            continue
        dims, keepdim, values = spec
        if node.op == "call_module" and uses[str(node.target)] == 1:
            name = str(node.target)  # a global adaptive max-pool module: same name, same place
            _set_module(gm, name, MaxOver(dims, keepdim))
        else:
            owner = _owner(gm, node) if node.op != "call_module" else str(node.target).rpartition(".")[0]
            base = f"{owner}.max" if owner else "max"
            name, k = base, 1
            while _has(gm, name):
                name, k = f"{base}_{k}", k + 1
            gm.add_submodule(name, MaxOver(dims, keepdim))
        with gm.graph.inserting_after(node):
            new = gm.graph.call_module(name, (node.args[0],))
        new.meta = dict(values[0].meta)
        for v in values:
            v.replace_all_uses_with(new)  # unused index reads have no uses to replace
        for v in values:
            if v is not node:
                gm.graph.erase_node(v)
        gm.graph.erase_node(node)
        count += 1
    if count:
        rebuild(gm)
    return count


def push_maxpools(gm: fx.GraphModule) -> int:
    """Move each max-pool that reads neuron outputs in front of the neurons (exact for the ANN).

    ``maxpool(relu(z)) == relu(maxpool(z))``; a neuron used elsewhere too is duplicated; a
    channel concatenation of neuron outputs is split (``maxpool(cat) == cat(maxpool)``).
    Max-pools over anything else are left for :func:`check_spiking_path` to report. Maxes over whole
    dimensions are first rewritten by :func:`canonical_max_reductions`.
    """
    canonical_max_reductions(gm)
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
        if _splits_over_cat(gm, pool, src, dim) and isinstance(parts, (list, tuple)) and all(
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


def _splits_over_cat(gm: fx.GraphModule, pool: fx.Node, cat: fx.Node, dim: object) -> bool:
    """Whether ``pool(cat(parts, dim)) == cat(pool(p) for p in parts)``: channel concatenation, and
    (for a :class:`MaxOver`) the channel dim is not among the reduced ones."""
    if pool.op == "call_module" and isinstance(mod := gm.get_submodule(str(pool.target)), MaxOver):
        rank = _rank(cat)
        d = dim + rank if isinstance(dim, int) and dim < 0 and rank is not None else dim
        return d == 1 and 1 not in mod.dims
    return dim in (1, -3)


def _move_after(gm: fx.GraphModule, node: fx.Node, anchor: fx.Node) -> None:
    anchor.append(node)


def _spiking_pool_for(gm: fx.GraphModule, node: fx.Node) -> nn.Module | None:
    """A :class:`SpikingMaxPool` equivalent to the max-pool ``node`` (None: cannot be built)."""
    if node.op == "call_module":
        mod = gm.get_submodule(str(node.target))
        if isinstance(mod, SpikingMaxPool) or getattr(mod, "return_indices", False):
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
    rebuild(gm)
    return replaced


def _set_module(gm: fx.GraphModule, name: str, module: nn.Module) -> None:
    parent_name, _, attr = name.rpartition(".")
    parent = gm.get_submodule(parent_name) if parent_name else gm
    setattr(parent, attr, module)

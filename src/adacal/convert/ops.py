"""What every op does to spikes — one table for conversion and for the energy model.

Conversion (:mod:`adacal.convert.rules`) lets an op sit on the spiking path when it is linear in
the spikes; the energy model (:mod:`adacal.energy.graph`) follows spikes through the same ops to
the weighted layers they drive. Both read :func:`op_kind`, so they cannot disagree about an op.
"""
from __future__ import annotations

import operator
from enum import Enum
from typing import Any

import torch
import torch.nn.functional as F
from torch import fx, nn

from adacal.convert.fold_bn import ChannelAffine
from adacal.neurons.pool import MaxOver

__all__ = ["LINEAR_OPS", "Op", "op_kind", "pool_dims"]


class Op(Enum):
    WEIGHTED = "weighted"  # conv / linear: spikes in → synaptic events (module, or function with a constant weight)
    PASS = "pass"  # unweighted 0/1 connectivity: reshapes, concatenation, copies, nearest upsampling, zero pads
    CAST = "cast"  # dtype/layout changes (the energy analysis keeps its own dtype)
    ADD = "add"  # sums, differences and negation of operands
    SUM = "sum"  # sum over dimensions
    MEAN = "mean"  # mean over dimensions (a sum and a constant scale)
    AVG_POOL = "avg_pool"  # fixed-window average pooling
    ADAPTIVE_POOL = "adaptive_pool"  # adaptive average pooling
    CHANNEL_SCALE = "channel_scale"  # an unfolded BatchNorm (per-channel scale and shift)
    SCALE = "scale"  # a product with another operand: linear while at most one operand carries spikes
    RESAMPLE = "resample"  # (bi/tri)linear or area interpolation: linear, but fractional weights
    MAXPOOL = "maxpool"  # not linear; allowed only in front of neurons (see rules)


#: Ops whose result is linear in the spikes whatever the operands.
LINEAR_OPS = frozenset({Op.WEIGHTED, Op.PASS, Op.CAST, Op.ADD, Op.SUM, Op.MEAN, Op.AVG_POOL, Op.ADAPTIVE_POOL,
                        Op.CHANNEL_SCALE, Op.RESAMPLE})

_WEIGHTED_MODULES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d,
                     nn.Linear)
WEIGHTED_FUNCS: dict[Any, str] = {
    F.conv1d: "conv1d", F.conv2d: "conv2d", F.conv3d: "conv3d", F.conv_transpose1d: "conv_transpose1d",
    F.conv_transpose2d: "conv_transpose2d", F.conv_transpose3d: "conv_transpose3d", F.linear: "linear",
}
_POOL_MODULES = {nn.AvgPool1d: 1, nn.AvgPool2d: 2, nn.AvgPool3d: 3}
_ADAPTIVE_MODULES = {nn.AdaptiveAvgPool1d: 1, nn.AdaptiveAvgPool2d: 2, nn.AdaptiveAvgPool3d: 3}
_POOL_FUNCS = {F.avg_pool1d: 1, F.avg_pool2d: 2, F.avg_pool3d: 3}
_ADAPTIVE_FUNCS = {F.adaptive_avg_pool1d: 1, F.adaptive_avg_pool2d: 2, F.adaptive_avg_pool3d: 3}
_MAXPOOL_MODULES = (nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, MaxOver)  # MaxOver: a max over whole dims
_MAXPOOL_FUNCS = {F.max_pool1d: 1, F.max_pool2d: 2, F.max_pool3d: 3, torch.max_pool1d: 1, torch.max_pool2d: 2,
                  torch.max_pool3d: 3}
_PASS_MODULES = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Dropout3d, nn.AlphaDropout, nn.Identity, nn.Flatten,
                 nn.Unflatten, nn.ZeroPad1d, nn.ZeroPad2d, nn.ZeroPad3d, nn.PixelShuffle, nn.PixelUnshuffle,
                 nn.ChannelShuffle, nn.UpsamplingNearest2d)
_CONSTANT_PADS = (nn.ConstantPad1d, nn.ConstantPad2d, nn.ConstantPad3d)
_NEAREST = ("nearest", "nearest-exact")

_FUNCS: dict[Any, Op] = {
    **{f: Op.PASS for f in (
        operator.getitem, torch.cat, torch.concat, torch.stack, torch.flatten, torch.reshape, torch.transpose,
        torch.permute, torch.squeeze, torch.unsqueeze, torch.chunk, torch.split, torch.narrow, torch.swapaxes,
        torch.movedim, torch.t, torch.flip, torch.roll, F.dropout, F.dropout1d, F.dropout2d, F.dropout3d,
        F.pixel_shuffle, F.pixel_unshuffle, F.channel_shuffle)},
    **{f: Op.ADD for f in (operator.add, operator.iadd, operator.sub, operator.isub, operator.neg, operator.pos,
                           torch.add, torch.sub, torch.subtract, torch.neg, torch.negative, torch.positive)},
    torch.sum: Op.SUM, torch.mean: Op.MEAN,
    **{f: Op.AVG_POOL for f in _POOL_FUNCS},
    **{f: Op.ADAPTIVE_POOL for f in _ADAPTIVE_FUNCS},
    **{f: Op.SCALE for f in (operator.mul, operator.imul, operator.truediv, operator.itruediv, operator.matmul,
                             torch.mul, torch.multiply, torch.div, torch.divide, torch.true_divide, torch.matmul,
                             torch.bmm, torch.einsum)},
    **{f: Op.MAXPOOL for f in _MAXPOOL_FUNCS},
}
_METHODS: dict[str, Op] = {
    **{m: Op.PASS for m in (
        "view", "reshape", "flatten", "permute", "transpose", "squeeze", "unsqueeze", "chunk", "split", "expand",
        "expand_as", "repeat", "unflatten", "t", "narrow", "view_as", "reshape_as", "__getitem__", "flip", "roll",
        "movedim", "swapaxes", "size", "dim")},
    **{m: Op.CAST for m in ("to", "float", "double", "half", "bfloat16", "type_as", "type", "contiguous", "clone")},
    **{m: Op.ADD for m in ("add", "add_", "sub", "sub_", "subtract", "neg")},
    "sum": Op.SUM, "mean": Op.MEAN,
    **{m: Op.SCALE for m in ("mul", "mul_", "div", "div_", "multiply", "divide", "true_divide", "matmul", "bmm")},
}
#: Divisions: the divisor must not carry spikes.
DIVISIONS = {operator.truediv, operator.itruediv, torch.div, torch.divide, torch.true_divide, "div", "div_",
             "divide", "true_divide"}


def node_arg(node: fx.Node, index: int, name: str, default: Any = None) -> Any:
    """Argument ``index`` of a call node, whether passed by position or as keyword ``name``."""
    return node.args[index] if len(node.args) > index else node.kwargs.get(name, default)


def op_kind(gm: fx.GraphModule, node: fx.Node) -> Op | None:
    """What ``node`` does to spikes; None for anything not linear in them (and not a max-pool)."""
    if node.op == "call_module":
        mod = gm.get_submodule(str(node.target))
        if isinstance(mod, _WEIGHTED_MODULES):
            return Op.WEIGHTED
        if isinstance(mod, ChannelAffine):
            return Op.CHANNEL_SCALE
        if type(mod) in _POOL_MODULES:
            return Op.AVG_POOL
        if type(mod) in _ADAPTIVE_MODULES:
            return Op.ADAPTIVE_POOL
        if isinstance(mod, _MAXPOOL_MODULES):
            return Op.MAXPOOL
        if isinstance(mod, nn.Upsample):  # includes UpsamplingBilinear2d
            return Op.PASS if mod.mode in _NEAREST else Op.RESAMPLE
        if isinstance(mod, _CONSTANT_PADS):
            return Op.PASS if mod.value == 0 else None
        return Op.PASS if isinstance(mod, _PASS_MODULES) else None
    if node.op == "call_function":
        if node.target in WEIGHTED_FUNCS:
            return Op.WEIGHTED
        if node.target is F.interpolate:
            return Op.PASS if node_arg(node, 3, "mode", "nearest") in _NEAREST else Op.RESAMPLE
        if node.target is F.pad:  # copies (zero, reflect, replicate, circular); a non-zero constant is affine
            constant = node_arg(node, 2, "mode", "constant") == "constant"
            return None if constant and node_arg(node, 3, "value", None) not in (None, 0, 0.0) else Op.PASS
        return _FUNCS.get(node.target)
    if node.op == "call_method":
        return _METHODS.get(str(node.target))
    return None


def pool_dims(gm: fx.GraphModule, node: fx.Node) -> int:
    """Spatial dimensions (1, 2 or 3) of an average, adaptive or max pool node."""
    if node.op == "call_module":
        t = type(gm.get_submodule(str(node.target)))
        for table in (_POOL_MODULES, _ADAPTIVE_MODULES):
            if t in table:
                return table[t]
        return {nn.MaxPool1d: 1, nn.MaxPool2d: 2, nn.MaxPool3d: 3}[t]
    for table in (_POOL_FUNCS, _ADAPTIVE_FUNCS, _MAXPOOL_FUNCS):
        if node.target in table:
            return table[node.target]
    raise KeyError(f"{node.name} is not a pooling op")

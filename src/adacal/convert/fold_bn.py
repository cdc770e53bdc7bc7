"""Fold eval-mode BatchNorm into the preceding weighted layer; keep the rest as channel affines."""
from __future__ import annotations

import logging
from collections import Counter

import torch
from torch import Tensor, fx, nn

from adacal.convert.trace import rebuild

__all__ = ["ChannelAffine", "batchnorm_types", "fold_batchnorm"]

log = logging.getLogger(__name__)

_BN: tuple[type, ...] = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d)
try:  # torchvision's detection backbones normalise with fixed statistics: the same eval-mode affine
    from torchvision.ops.misc import FrozenBatchNorm2d

    _BN = (*_BN, FrozenBatchNorm2d)
except ImportError:  # pragma: no cover - torchvision is a dependency
    pass


def batchnorm_types() -> tuple[type, ...]:
    """Module types folded as eval-mode BatchNorm (tracing keeps them whole so they can be)."""
    return _BN


_FOLDABLE = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)


class ChannelAffine(nn.Module):
    """``y = x·scale + shift`` per channel (dim 1): an unfoldable eval BatchNorm.

    Linear, so it is allowed on the spiking path (e.g. DenseNet's BN after a concatenation).
    Buffers, not parameters: calibration never trains it, and ``.train()`` cannot change it.
    """

    def __init__(self, scale: Tensor, shift: Tensor) -> None:
        super().__init__()
        self.register_buffer("scale", scale.detach().clone())
        self.register_buffer("shift", shift.detach().clone())

    def forward(self, x: Tensor) -> Tensor:
        shape = [1, -1] + [1] * (x.dim() - 2)
        return x * self.scale.view(shape) + self.shift.view(shape)

    @classmethod
    def from_batchnorm(cls, bn: nn.modules.batchnorm._BatchNorm) -> ChannelAffine:
        scale, shift = _bn_scale_shift(bn)
        return cls(scale, shift)


def _bn_scale_shift(bn: nn.Module) -> tuple[Tensor, Tensor]:
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError(f"BatchNorm without running statistics cannot be folded: {bn}")
    std = torch.sqrt(bn.running_var + bn.eps)
    gamma = bn.weight if bn.weight is not None else torch.ones_like(std)
    beta = bn.bias if bn.bias is not None else torch.zeros_like(std)
    scale = gamma / std
    return scale, beta - bn.running_mean * scale


@torch.no_grad()
def _fold_into(layer: nn.Module, bn: nn.modules.batchnorm._BatchNorm) -> None:
    scale, shift = _bn_scale_shift(bn)
    w = layer.weight
    if isinstance(layer, (nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)):
        # weight: [in, out/groups, k...]; output channel o = g·(out/groups) + j
        g = layer.groups
        w_view = w.view(g, w.shape[0] // g, w.shape[1], *w.shape[2:])
        s = scale.view(g, 1, w.shape[1], *([1] * (w.dim() - 2)))
        w.copy_((w_view * s).view_as(w))
    else:
        w.mul_(scale.view(-1, *([1] * (w.dim() - 1))))
    bias = layer.bias if layer.bias is not None else torch.zeros_like(scale)
    new_bias = bias * scale + shift
    if layer.bias is None:
        layer.bias = nn.Parameter(new_bias)
    else:
        layer.bias.copy_(new_bias)


def fold_batchnorm(gm: fx.GraphModule) -> tuple[int, int]:
    """In place: fold each BN whose input is a weighted layer used once and feeding only it.

    Every other BN with running statistics becomes a :class:`ChannelAffine`; one without them
    is left as it is. Returns ``(folded, kept_as_affine)``.
    """
    calls = Counter(n.target for n in gm.graph.nodes if n.op == "call_module")
    folded = kept = 0
    for node in list(gm.graph.nodes):
        if node.op != "call_module" or not isinstance(gm.get_submodule(node.target), _BN):
            continue
        bn = gm.get_submodule(node.target)
        if bn.running_mean is None or bn.running_var is None:
            # Normalises with batch statistics even in eval mode: neither foldable nor a fixed
            # affine. Left in place; check_spiking_path reports it if it sits on the spiking path.
            log.warning("%s has no running statistics (track_running_stats=False); not folded", node.target)
            continue
        prev = node.args[0]
        if (
            isinstance(prev, fx.Node)
            and prev.op == "call_module"
            and isinstance(gm.get_submodule(prev.target), _FOLDABLE)
            and _same_channels(gm.get_submodule(prev.target), bn, prev)
            and len(prev.users) == 1
            and calls[prev.target] == 1
            and calls[node.target] == 1
        ):
            _fold_into(gm.get_submodule(prev.target), bn)
            node.replace_all_uses_with(prev)
            gm.graph.erase_node(node)
            folded += 1
        else:
            _replace_module(gm, node.target, ChannelAffine.from_batchnorm(bn))
            kept += 1
    rebuild(gm)
    log.debug("folded %d BatchNorm layers, kept %d as channel affine", folded, kept)
    return folded, kept


def _same_channels(layer: nn.Module, bn: nn.modules.batchnorm._BatchNorm, node: fx.Node) -> bool:
    """Whether BN's channels (dim 1) are the layer's output channels.

    For a Linear they are only when its output is 2-D ``[B, F]``: on ``[B, C, L]`` a Linear maps
    the last dim while BatchNorm1d normalises dim 1 (rank known from ShapeProp metadata, if run).
    """
    if isinstance(layer, nn.Linear):
        meta = node.meta.get("tensor_meta")
        rank = len(meta.shape) if meta is not None and hasattr(meta, "shape") else 2
        return rank == 2 and layer.out_features == bn.running_mean.numel()
    out = layer.out_channels if hasattr(layer, "out_channels") else None
    return out == bn.running_mean.numel()


def _replace_module(gm: fx.GraphModule, target: str, new: nn.Module) -> None:
    parent_name, _, attr = target.rpartition(".")
    parent = gm.get_submodule(parent_name) if parent_name else gm
    setattr(parent, attr, new)

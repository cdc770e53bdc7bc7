"""Max-pools with a 1x1 window are strided selections: rewrite them as slicing (linear, spike-safe).

torchvision's FPN adds its coarsest level with ``F.max_pool2d(x, 1, 2, 0)`` (``LastLevelMaxPool``):
a window of one element takes no maximum, it only keeps every second row and column. As slicing
(``x[:, :, ::2, ::2]``) it is linear, so it may sit anywhere on the spiking path and the energy
model follows its fan-out like any other selection.
"""
from __future__ import annotations

import operator

import torch
import torch.nn.functional as F
from torch import fx, nn

from adacal.convert.trace import rebuild

__all__ = ["unit_maxpools_to_slices"]

_FUNCS = {F.max_pool1d: 1, F.max_pool2d: 2, F.max_pool3d: 3, torch.max_pool1d: 1, torch.max_pool2d: 2,
          torch.max_pool3d: 3}
_MODULES = {nn.MaxPool1d: 1, nn.MaxPool2d: 2, nn.MaxPool3d: 3}
_NAMES = ("kernel_size", "stride", "padding", "dilation", "ceil_mode", "return_indices")


def _tuple(v: object, nd: int) -> tuple[int, ...]:
    return tuple(v) if isinstance(v, (tuple, list)) else (v,) * nd  # type: ignore[return-value]


def _settings(gm: fx.GraphModule, node: fx.Node) -> tuple[int, dict[str, object]] | None:
    if node.op == "call_function" and node.target in _FUNCS:
        nd = _FUNCS[node.target]
        vals = dict(zip(_NAMES, node.args[1:]))
        vals.update({k: v for k, v in node.kwargs.items() if k in _NAMES})
        vals.setdefault("stride", None)
        return nd, vals
    if node.op == "call_module":
        m = gm.get_submodule(str(node.target))
        for cls, nd in _MODULES.items():
            if type(m) is cls:
                return nd, {k: getattr(m, k) for k in _NAMES}
    return None


def unit_maxpools_to_slices(gm: fx.GraphModule) -> int:
    """In place: every max-pool with window 1, no padding and no returned indices becomes a slice.

    Returns how many were rewritten.
    """
    count = 0
    for node in list(gm.graph.nodes):
        found = _settings(gm, node)
        if found is None:
            continue
        nd, s = found
        if s.get("return_indices") or any(isinstance(s.get(k), fx.Node) for k in _NAMES):
            continue
        if _tuple(s["kernel_size"], nd) != (1,) * nd or _tuple(s.get("padding", 0), nd) != (0,) * nd:
            continue
        stride = _tuple(s["stride"] if s.get("stride") not in (None, ()) else 1, nd)
        index = (slice(None), slice(None), *(slice(None, None, int(k)) for k in stride))
        with gm.graph.inserting_after(node):
            new = gm.graph.call_function(operator.getitem, (node.args[0], index))
        new.meta = dict(node.meta)
        node.replace_all_uses_with(new)
        gm.graph.erase_node(node)
        count += 1
    if count:
        rebuild(gm)
    return count

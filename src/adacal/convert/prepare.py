"""prepare(): a copy of the ANN traced, BN-folded, with every ReLU turned into an IF neuron."""
from __future__ import annotations

import copy
import logging
from collections import Counter
from typing import Any

import torch
from torch import Tensor, fx, nn
from torch.fx.passes.shape_prop import ShapeProp

from adacal import inputs
from adacal.config import ConversionConfig
from adacal.convert.activations import NOT_AN_ACTIVATION, activation_clip, declared_activation
from adacal.convert.analog import wrap_analog_ops
from adacal.convert.fold_bn import batchnorm_types, fold_batchnorm
from adacal.convert.ops import LINEAR_OPS, op_kind
from adacal.convert.rules import check_spiking_path, push_maxpools, rate_preserving_pools, spiking_nodes
from adacal.convert.trace import describe_target, qualname, rebuild, trace
from adacal.convert.unit_pools import unit_maxpools_to_slices
from adacal.devices import model_float
from adacal.errors import CalibrationError, ConfigError, DataError, ModelError, UnsupportedLayerError
from adacal.logs import warn_once
from adacal.neurons import is_neuron_node
from adacal.neurons.kinds import neuron_class
from adacal.spiking_model import SpikingModel

__all__ = ["prepare"]

log = logging.getLogger(__name__)


def _neuron_name(gm: fx.GraphModule, node: fx.Node, used: Counter[str]) -> str:
    """Module path for a module activation (``_k`` for its k-th reuse); owner path + op otherwise."""
    if node.op == "call_module":
        base = str(node.target)
    else:
        stack = node.meta.get("nn_module_stack") or {}
        owner = next(reversed(stack.values()))[0] if stack else ""
        op = node.target if isinstance(node.target, str) else getattr(node.target, "__name__", "act")
        base = f"{owner}.{op}".strip(".").rstrip("_") if owner else str(op).rstrip("_")
    base = base.replace("..", ".")
    name = base
    own = str(node.target) if node.op == "call_module" else None
    while used[name] or (name != own and _has_module(gm, name)):
        used[base] += 1
        name = f"{base}_{used[base] - 1}"
    used[base] = max(used[base], 1)
    used[name] = max(used[name], 1)
    return name


def _has_module(gm: fx.GraphModule, name: str) -> bool:
    try:
        gm.get_submodule(name)
    except AttributeError:
        return False
    return True


def positional(gm: fx.GraphModule, x: Any) -> tuple[Any, ...]:
    """The graph's positional arguments for an input given as a tensor, tuple or dict (by name)."""
    if not isinstance(x, dict):
        return tuple(x) if isinstance(x, (tuple, list)) else (x,)
    names = [str(n.target) for n in gm.graph.nodes if n.op == "placeholder"]
    missing = [n for n in names if n not in x and not n.startswith("*")]
    unknown = sorted(set(x) - set(names))
    if missing or unknown:
        raise DataError(f"example input keys {sorted(x)} do not match the model's forward arguments {names}")
    return tuple(x[n] for n in names if n in x)


def _insert_neurons(gm: fx.GraphModule, cfg: ConversionConfig, device: torch.device, dtype: torch.dtype) -> int:
    used: Counter[str] = Counter()
    count = 0
    # Decide first, rewrite after: replacing a reused ReLU module must not hide its later uses.
    found = [
        (n, clip, declared_activation(gm, n, cfg.activations))
        for n in gm.graph.nodes
        if (clip := activation_clip(gm, n, cfg.activations)) is not NOT_AN_ACTIVATION
    ]
    for node, clip, original in found:
        name = _neuron_name(gm, node, used)
        neuron = neuron_class(cfg.neuron.kind)(clip=clip, phi=cfg.neuron.phi, rho=cfg.neuron.rho,
                                               v_init=cfg.neuron.v_init, ann_fn=original)
        neuron.to(device=device, dtype=dtype)
        gm.add_submodule(name, neuron)
        with gm.graph.inserting_after(node):
            new = gm.graph.call_module(name, (node.args[0],))
        new.meta = dict(node.meta)
        node.replace_all_uses_with(new)
        gm.graph.erase_node(node)
        count += 1
    rebuild(gm)
    return count


def _max_abs(x: Any) -> float:
    if isinstance(x, Tensor):
        return float(x.detach().abs().max()) if x.numel() else 0.0
    if isinstance(x, (list, tuple)):
        return max((_max_abs(v) for v in x), default=0.0)
    if isinstance(x, dict):
        return max((_max_abs(v) for v in x.values()), default=0.0)
    return 0.0


def _max_diff(a: Any, b: Any) -> float:
    if isinstance(a, Tensor) and isinstance(b, Tensor):
        if a.shape != b.shape:
            return float("inf")
        return float((a.detach() - b.detach()).abs().max()) if a.numel() else 0.0
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)) and len(a) == len(b):
        return max((_max_diff(x, y) for x, y in zip(a, b)), default=0.0)
    if isinstance(a, dict) and isinstance(b, dict) and a.keys() == b.keys():
        return max((_max_diff(a[k], b[k]) for k in a), default=0.0)
    return 0.0 if a == b else float("inf")


def _largest_activation(gm: fx.GraphModule, batch: int) -> int:
    """Bytes per sample of the largest tensor the graph computes (from ShapeProp metadata)."""
    best = 0
    for node in gm.graph.nodes:
        meta = node.meta.get("tensor_meta")
        shape = getattr(meta, "shape", None)
        dtype = getattr(meta, "dtype", None)
        if shape is not None and dtype is not None and len(shape) > 0:
            best = max(best, int(torch.Size(shape).numel()) * torch.empty((), dtype=dtype).element_size() // batch)
    return best


@torch.no_grad()
def prepare(model: nn.Module, example_input: Any, *, config: ConversionConfig | None = None) -> SpikingModel:
    """Convert a copy of ``model`` into a :class:`SpikingModel` (neurons start in ANN mode).

    ``example_input`` (e.g. the first calibration batch) drives tracing checks and the final
    check that the converted graph in ANN mode reproduces the original outputs. It is a tensor
    ``[B, ...]``, or a tuple (positional arguments) or dict (keyword arguments) of tensors for a
    model with several inputs; the model may return a tensor, a tuple or a dict of tensors.

    Raises TraceError (untraceable model), UnsupportedLayerError (all offending ops at once),
    ShapeError (the example does not fit the model), CalibrationError (ANN-mode mismatch).
    """
    cfg = config or ConversionConfig()
    if not isinstance(model, nn.Module):
        raise ConfigError(f"prepare() expects a torch.nn.Module, got {type(model).__name__}")
    x = example_input
    batch = inputs.validate(x, "example input")
    ann = copy.deepcopy(model).eval()
    reference = _reference(ann, x)
    first = inputs.leaves(x)[0]  # neurons follow the model's device and dtype (the input's if it has none)
    device, dtype = model_float(ann) or (first.device, first.dtype if first.is_floating_point()
                                         else torch.get_default_dtype())
    gm = trace(ann, leaf_types=batchnorm_types(), leaf_names=cfg.leaf_modules)
    args = positional(gm, x)
    ShapeProp(gm).propagate(*args)  # ranks for fold_batchnorm (a Linear folds a BN only on [B, F])
    folded, kept = fold_batchnorm(gm)
    n_neurons = _insert_neurons(gm, cfg, device, dtype)
    if n_neurons == 0:
        raise UnsupportedLayerError(
            f"{type(model).__name__} has no ReLU-family activation (nn.ReLU, F.relu, relu_, ReLU6, "
            "hardtanh(x, 0, a), clamp(min=0)) to turn into spiking neurons; retrain it with ReLU or "
            "pass a ReLU-like activation in activations=[...]. Its ops with no spiking equivalent:\n"
            + "\n".join(nonlinear_ops(gm))
        )
    _check_declared_activations(gm, args, cfg)
    unit_maxpools_to_slices(gm)  # 1x1 max-pools (torchvision FPN's extra level) only subsample
    moved = push_maxpools(gm)
    rate_preserving_pools(gm)
    gm.delete_all_unused_submodules()
    ShapeProp(gm).propagate(*args)
    check_spiking_path(gm, cfg.analog)
    analog = wrap_analog_ops(gm, cfg.analog, analog_nodes(gm, cfg.analog), args)
    gm.eval()
    snn = SpikingModel(gm, [tuple(t.shape[1:]) for t in inputs.leaves(x)], _largest_activation(gm, batch),
                       input_dtypes=tuple(t.dtype for t in inputs.leaves(x)))
    snn.eval()  # like its modules: a converted network is for inference
    snn.analog_prefix_ops = analog_prefix_ops(gm)
    if snn.analog_prefix_ops:
        warn_once(log, model, "%d op(s) before the first spiking neuron are not linear and stay in floating point "
                  "(computed from the input, not from spikes): %s; the energy estimate does not count them (the "
                  "record lists them under 'analog_prefix_ops')", len(snn.analog_prefix_ops),
                  ", ".join(snn.analog_prefix_ops))
    got = snn.ann_forward(x)
    diff, scale = _max_diff(got, reference), _max_abs(reference)
    if not diff <= cfg.check_rtol * max(scale, 1.0):
        raise CalibrationError(
            f"the converted network in ANN mode differs from the original by {diff:.3g} (output scale "
            f"{scale:.3g}); an op was converted wrongly — please report it with the model definition"
        )
    log.info(
        "converted %s: %d neurons, %d BatchNorm folded, %d kept as affine, %d max-pools moved, %d analog "
        "op(s) %s; ANN-mode max abs diff %.2e", type(model).__name__, n_neurons, folded, kept, moved, len(analog),
        analog, diff,
    )
    return snn


def _reference(ann: nn.Module, x: Any) -> Any:
    """The model's own output on the example — checked to exist, be finite and be deterministic."""
    meta = [name for name, t in (*ann.named_parameters(), *ann.named_buffers()) if t.device.type == "meta"]
    if meta:
        raise ModelError(f"the model's weights are on the meta device (shapes without data) in {meta[:8]}; "
                         "materialise them first (model.to_empty(device='cpu') and load_state_dict(...))")
    bad = [name for name, t in (*ann.named_parameters(), *ann.named_buffers())
           if t.is_floating_point() and not bool(torch.isfinite(t).all())]
    if bad:
        raise ModelError(f"the model's weights hold NaN or Inf values in {bad[:8]}{' …' if len(bad) > 8 else ''}; "
                         "fix the training or the checkpoint before converting")
    try:
        first, second = inputs.call(ann, x), inputs.call(ann, x)
    except Exception as exc:
        raise ModelError(
            f"the model's own forward pass fails on the example input of shape {inputs.describe(x)}: "
            f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''} (the model, not the "
            "conversion, rejects this input: check its shape, dtype and device)"
        ) from exc
    if any(not bool(torch.isfinite(t).all()) for t in inputs.leaves(first) if t.is_floating_point()):
        raise ModelError(f"the model's own output on the example input of shape {inputs.describe(x)} holds NaN or "
                         "Inf values (its weights are finite: activations overflow); check the checkpoint and the "
                         "input scaling before converting")
    diff = _max_diff(first, second)
    if diff != 0.0:
        raise ModelError(f"the model is not deterministic: two forward passes on the same input differ by "
                         f"{diff:.3g}; remove random ops (torch.rand*, dropout with training=True, ...) from its "
                         "forward before converting")
    return first


def nonlinear_ops(gm: fx.GraphModule) -> list[str]:
    """``  - name (type)`` of every op that is not linear (and not a max-pool): what has no spiking twin."""
    return [f"  - {qualname(n)} ({describe_target(gm, n)})" for n in gm.graph.nodes
            if n.op not in ("placeholder", "output", "get_attr") and n.meta.get("tensor_meta") is not None
            and op_kind(gm, n) is None and not is_neuron_node(gm, n)]


def analog_prefix_ops(gm: fx.GraphModule) -> tuple[str, ...]:
    """``name (type)`` of every op upstream of all neurons that is not linear (a GELU or a LayerNorm on the
    input): computed in floating point once per input, so it is neither spiking nor priced by the energy model."""
    spiking = spiking_nodes(gm)
    return tuple(f"{qualname(n)} ({describe_target(gm, n)})" for n in gm.graph.nodes
                 if n not in spiking and n.op in ("call_module", "call_function", "call_method")
                 and n.meta.get("tensor_meta") is not None and op_kind(gm, n) is None)


def analog_nodes(gm: fx.GraphModule, names: tuple[str, ...]) -> list[fx.Node]:
    """The ops listed in ``analog=[...]`` that sit on the spiking path and are not linear in the spikes."""
    spiking = spiking_nodes(gm)
    return [n for n in gm.graph.nodes if n in spiking and (qualname(n) in names or n.name in names)
            and not is_neuron_node(gm, n) and op_kind(gm, n) not in LINEAR_OPS]


def _check_declared_activations(gm: fx.GraphModule, args: tuple[Any, ...], cfg: ConversionConfig) -> None:
    """A declared activation becomes a neuron whose spikes approximate ReLU: measure how far that is
    from the activation itself on the example batch, and refuse (or warn, if accepted) when it is not close."""
    declared = {str(n.target): n for n in gm.graph.nodes
                if is_neuron_node(gm, n) and gm.get_submodule(str(n.target)).ann_fn is not None}
    if not declared:
        return
    seen: dict[str, Tensor] = {}
    hooks = [gm.get_submodule(k).register_forward_pre_hook(lambda _m, a, k=k: seen.__setitem__(k, a[0].detach()))
             for k in declared]
    try:
        with torch.no_grad():
            gm(*args)
    finally:
        for h in hooks:
            h.remove()
    errors = {}
    for name, a in seen.items():
        neuron = gm.get_submodule(name)
        want = neuron.ann_fn(a)
        got = a.clamp(min=0) if neuron.clip is None else a.clamp(0, neuron.clip)
        errors[name] = float((want - got).norm() / want.norm().clamp(min=1e-12))
    worst = {k: v for k, v in errors.items() if v > cfg.activation_tolerance}
    if not worst:
        return
    text = ", ".join(f"{k}: {v:.1%}" for k, v in worst.items())
    if not cfg.accept_activation_error:
        raise UnsupportedLayerError(
            f"declared activation(s) differ from the spiking neuron's response (a ReLU) by more than "
            f"{cfg.activation_tolerance:.1%} on the example batch — {text}; the SNN would converge to the ReLU "
            "network, not yours. Retrain with ReLU, or pass ConversionConfig(accept_activation_error=True) to "
            "convert anyway")
    log.warning("converting declared activation(s) with a measured relative error against the neuron's "
                "response of %s (accept_activation_error=True)", text)

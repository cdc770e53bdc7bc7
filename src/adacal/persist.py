"""Saving and loading converted SNNs: a state_dict plus a JSON record, never a pickled module.

Loading re-converts the user's ANN architecture (deterministic: same graph, same names) and
loads the saved tensors into it, so no code is ever unpickled.
"""
from __future__ import annotations

import io
import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from adacal import inputs
from adacal.atomic import atomic_write_bytes, atomic_write_json
from adacal.config import ConversionConfig, NeuronConfig
from adacal.convert import prepare
from adacal.errors import CheckpointError, first_line
from adacal.spiking_model import SpikingModel

__all__ = ["load_snn", "read_record", "save_snn"]

WEIGHTS = "snn_state.pt"
RECORD = "record.json"


def save_snn(
    snn: SpikingModel, record: dict[str, Any], folder: str | os.PathLike[str], *, exit_policy: Any = None
) -> Path:
    """Write ``snn_state.pt`` (tensors only) and ``record.json`` into ``folder``.

    A fitted IAT ``exit_policy`` is stored in the record (``record["exit_policy"]``); read it back
    with ``ExitPolicy.from_dict(record["exit_policy"])``.
    """
    folder = Path(folder)
    if folder.exists() and not folder.is_dir():
        raise CheckpointError(f"cannot save the SNN into {str(folder)!r}: it is a file, and save_snn writes a folder "
                              f"({WEIGHTS} + {RECORD}); choose another path")
    if not isinstance(record, Mapping):
        raise CheckpointError(f"save_snn: record must be a mapping (the record convert() returns), got "
                              f"{type(record).__name__}")
    buf = io.BytesIO()
    state = {k: v.detach().cpu() for k, v in snn.graph_module.state_dict().items()}
    torch.save(state, buf)
    atomic_write_bytes(folder / WEIGHTS, buf.getvalue())
    meta = dict(record)
    meta["input_shape"] = list(snn.input_shape)
    meta["neurons"] = list(snn.neurons())
    if exit_policy is not None:
        meta["exit_policy"] = exit_policy.to_dict()
    atomic_write_json(folder / RECORD, meta)
    return folder


def read_record(folder: str | os.PathLike[str]) -> dict[str, Any]:
    """``folder/record.json``, checked: a JSON object whose ``neurons`` (if present) is a list of layer names;
    anything else is a :class:`CheckpointError` (its ``timesteps`` are checked where they are used)."""
    path = Path(folder) / RECORD
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise CheckpointError(f"{str(path)!r} not found: is {str(folder)!r} a folder written by save_snn()/adacal "
                              "convert?") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{str(path)!r} is not readable JSON ({type(exc).__name__}: {exc}); convert again or "
                              "restore the file") from exc
    if not isinstance(record, dict):
        raise CheckpointError(f"{str(path)!r} must hold a JSON object (the conversion record), got a "
                              f"{type(record).__name__}; convert again or restore the file")
    neurons = record.get("neurons")
    if neurons is not None and (not isinstance(neurons, list) or not all(isinstance(n, str) for n in neurons)):
        raise CheckpointError(f"{str(path)!r}: 'neurons' must be a list of layer names, got {neurons!r}")
    return record


def load_snn(ann: nn.Module, folder: str | os.PathLike[str], example_input: Tensor, *,
             config: ConversionConfig | None = None) -> tuple[SpikingModel, dict[str, Any]]:
    """Re-convert ``ann`` (same architecture as when saved) and load the saved SNN state.

    ``config``: how to re-convert; by default the ops kept in floating point (``analog``), the
    opaque submodules and the check tolerance recorded at conversion (``record["config"]``).
    ``example_input``: a tensor, or a tuple/dict of tensors for a model with several inputs.
    """
    folder = Path(folder)
    wpath, rpath = folder / WEIGHTS, folder / RECORD
    for p in (wpath, rpath):
        if not p.is_file():
            raise CheckpointError(f"{p} not found: is {folder} a folder written by save_snn()/adacal convert?")
    record = read_record(folder)
    try:
        state = torch.load(wpath, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"cannot read the saved SNN state {str(wpath)!r} (damaged?): {type(exc).__name__}: "
                              f"{first_line(exc)}") from exc
    if not isinstance(state, Mapping) or not all(isinstance(v, Tensor) for v in state.values()):
        raise CheckpointError(f"{str(wpath)!r} does not hold a state_dict of tensors; write it with save_snn()")
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise CheckpointError(f"the saved SNN state {str(wpath)!r} holds NaN or Inf values in {bad[:8]}; convert again")
    snn = prepare(ann, example_input, config=config or _recorded_conversion(record))
    names = list(snn.neurons())
    if record.get("neurons") and record["neurons"] != names:
        raise CheckpointError(
            f"the SNN in {folder} was converted from a different architecture "
            f"({len(record['neurons'])} neurons saved, {len(names)} in this model)"
        )
    try:
        snn.graph_module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        raise CheckpointError(f"saved SNN state does not fit this model: {str(exc).splitlines()[0]}") from exc
    snn.to(inputs.leaves(example_input)[0].device)
    return snn, record


def _recorded_conversion(record: dict[str, Any]) -> ConversionConfig:
    """The recorded conversion settings that decide the converted graph (activation types and
    functions are stored by name only: pass ``config=`` to re-convert with those)."""
    conv = (record.get("config") or {}).get("conversion") or {}
    if not isinstance(conv, dict):
        return ConversionConfig()
    kw: dict[str, Any] = {k: tuple(conv[k]) for k in ("analog", "leaf_modules") if conv.get(k)}
    kind = (conv.get("neuron") or {}).get("kind") if isinstance(conv.get("neuron"), dict) else None
    if kind:  # the neuron kind is not a tensor: take it from the record
        kw["neuron"] = NeuronConfig(kind=str(kind))
    if isinstance(conv.get("check_rtol"), (int, float)):
        kw["check_rtol"] = float(conv["check_rtol"])
    return ConversionConfig(**kw)

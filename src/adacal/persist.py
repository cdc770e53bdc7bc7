"""Saving and loading converted SNNs: a state_dict plus a JSON record, never a pickled module.

Loading re-converts the user's ANN architecture (deterministic: same graph, same names) and
loads the saved tensors into it, so no code is ever unpickled.
"""
from __future__ import annotations

import io
import json
import os
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from adacal import inputs
from adacal.atomic import atomic_write_bytes, atomic_write_json
from adacal.config import ConversionConfig
from adacal.convert import prepare
from adacal.errors import CheckpointError
from adacal.spiking_model import SpikingModel

__all__ = ["save_snn", "load_snn"]

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


def load_snn(
    ann: nn.Module,
    folder: str | os.PathLike[str],
    example_input: Tensor,
    *,
    config: ConversionConfig | None = None,
) -> tuple[SpikingModel, dict[str, Any]]:
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
    try:
        record = json.loads(rpath.read_text())
        state = torch.load(wpath, map_location="cpu", weights_only=True)
    except Exception as exc:
        raise CheckpointError(f"cannot read the saved SNN in {folder}: {exc}") from exc
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
    if isinstance(conv.get("check_rtol"), (int, float)):
        kw["check_rtol"] = float(conv["check_rtol"])
    return ConversionConfig(**kw)

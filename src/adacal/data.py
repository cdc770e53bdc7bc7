"""Taking input batches out of whatever the user has: a tensor, a DataLoader, any iterable."""
from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from adacal import inputs
from adacal.errors import ConfigError, DataError

__all__ = ["default_input_fn", "take_batches", "take_split"]

InputFn = Callable[[Any], Any]


def default_input_fn(batch: Any) -> Any:
    """``batch[0]`` for ``(inputs, target)`` pairs (inputs may be a tuple/dict of tensors), the
    batch itself for a tensor."""
    if isinstance(batch, Tensor):
        return batch
    if isinstance(batch, (list, tuple)) and batch and inputs.leaves(batch[0]):
        return batch[0]
    if isinstance(batch, dict):
        for key in ("input", "inputs", "image", "images", "x"):
            if key in batch and inputs.leaves(batch[key]):
                return batch[key]
    raise DataError(
        f"cannot find the input tensor in a batch of type {type(batch).__name__}; pass "
        "input_fn=lambda batch: ... to pick it out"
    )


def take_batches(data: Any, num_batches: int, *, input_fn: InputFn | None = None, device: torch.device | None = None,
                 what: str = "calibration data") -> list[Any]:
    """The first ``num_batches`` inputs of ``data`` (tensors, or tuples/dicts of tensors), validated,
    on ``device``.

    ``data`` is a tensor (one batch), a DataLoader or any iterable of batches. Empty data,
    NaN/Inf values and empty batches raise DataError naming ``what``.
    """
    if isinstance(num_batches, bool) or int(num_batches) != num_batches or num_batches < 1:
        raise ConfigError(f"num_batches must be an integer >= 1, got {num_batches!r}")
    fn = input_fn or default_input_fn
    if isinstance(data, Tensor):
        batches: Iterable[Any] = [data]
    else:
        try:
            batches = iter(data)
        except TypeError as exc:
            raise DataError(f"{what} must be a tensor or an iterable of batches, got {type(data).__name__}") from exc
    out: list[Any] = []
    for i, batch in enumerate(itertools.islice(batches, int(num_batches))):
        x = fn(batch)
        inputs.validate(x, f"{what}: batch {i}")
        out.append(inputs.map_tensors(lambda t: t.to(device), x) if device is not None else x)
    if not out:
        raise DataError(f"{what} is empty: it yielded no batch; pass a non-empty loader or tensor")
    return out


def take_split(data: Any, num_batches: int, images: int, *, input_fn: InputFn | None = None,
               device: torch.device | None = None, what: str = "calibration data") -> tuple[list[Any], list[Any]]:
    """The first ``num_batches`` batches of ``data`` and, from the same pass, the next batches up to
    ``images`` inputs (the last one narrowed): calibration inputs and held-out inputs that can never
    overlap, even for a shuffling loader (which would reorder a second pass). ``num_batches=0``:
    just the first ``images`` inputs."""
    if isinstance(data, Tensor) and num_batches:
        return take_batches(data, num_batches, input_fn=input_fn, device=device, what=what), []
    if isinstance(data, Tensor):
        data = [data]
    fn = input_fn or default_input_fn
    try:
        it = iter(data)
    except TypeError as exc:
        raise DataError(f"{what} must be a tensor or an iterable of batches, got {type(data).__name__}") from exc
    first = take_batches(itertools.islice(it, int(num_batches)), num_batches, input_fn=input_fn, device=device,
                         what=what) if num_batches else []
    rest: list[Any] = []
    got = 0
    for batch in it:
        if got >= images:
            break
        x = fn(batch)
        inputs.validate(x, f"{what}: held-out batch {len(rest)}")
        x = inputs.narrow(x, 0, min(inputs.batch_size(x), images - got))
        rest.append(inputs.map_tensors(lambda t: t.to(device), x) if device is not None else x)
        got += inputs.batch_size(x)
    return first, rest

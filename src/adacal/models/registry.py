"""Build models by name and load weights with errors a user can act on.

Names: the built-in CIFAR/digits models (see :data:`BUILTIN_MODELS`), any torchvision
classification model (``torchvision.models.list_models(module=torchvision.models)``, built with
``weights=None``: no downloads), or ``"package.module:factory"`` for a user factory that is called
as ``factory(num_classes=..., **kw)``.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable, Mapping
from pathlib import Path

import torch
from torch import nn

from adacal.checks import suggest
from adacal.errors import CheckpointError, ConfigError
from adacal.models.cifar import digits_cnn, resnet20, resnet20_wide, vgg16_cifar

__all__ = ["BUILTIN_MODELS", "available_models", "build_model", "load_state_dict_file", "register_model"]

#: Built-in architectures by name; each is called as ``factory(num_classes=..., **options)``.
BUILTIN_MODELS: dict[str, Callable[..., nn.Module]] = {
    "resnet20": resnet20,
    "resnet20_wide": resnet20_wide,
    "vgg16_cifar": vgg16_cifar,
    "digits_cnn": digits_cnn,
}


def register_model(name: str, factory: Callable[..., nn.Module]) -> Callable[..., nn.Module]:
    """Make ``factory(num_classes=..., **options)`` buildable by ``name`` (``--model``, ``build_model``)."""
    BUILTIN_MODELS[name] = factory
    return factory


def _torchvision_classifiers() -> list[str]:
    import torchvision.models as tvm

    return sorted(tvm.list_models(module=tvm))


def available_models() -> list[str]:
    """All names :func:`build_model` accepts (besides ``module:factory`` strings)."""
    return sorted(BUILTIN_MODELS) + _torchvision_classifiers()


def build_model(name: str, num_classes: int, **kw: object) -> nn.Module:
    """Instantiate an untrained model; unknown names raise :class:`ConfigError` listing valid ones."""
    if not isinstance(num_classes, int) or num_classes < 1:
        raise ConfigError(f"num_classes must be a positive int, got {num_classes!r}")
    if name in BUILTIN_MODELS:
        return BUILTIN_MODELS[name](num_classes=num_classes, **kw)
    if ":" in name:
        return _build_from_factory(name, num_classes, kw)
    tv_names = _torchvision_classifiers()
    if name in tv_names:
        import torchvision.models as tvm

        return tvm.get_model(name, weights=None, num_classes=num_classes, **kw)
    raise ConfigError(
        f"unknown model {name!r}{suggest(name, [*BUILTIN_MODELS, *tv_names])}; valid names: built-in "
        f"{sorted(BUILTIN_MODELS)}, torchvision {tv_names}, or 'package.module:factory'"
    )


def _build_from_factory(spec: str, num_classes: int, kw: Mapping[str, object]) -> nn.Module:
    module_name, _, attr = spec.partition(":")
    if not module_name or not attr:
        raise ConfigError(f"model factory {spec!r} must look like 'package.module:factory'")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"cannot import module {module_name!r} for model factory {spec!r}: {exc}") from exc
    factory = getattr(module, attr, None)
    if not callable(factory):
        raise ConfigError(f"module {module_name!r} has no callable {attr!r} (model factory {spec!r})")
    model = factory(num_classes=num_classes, **kw)
    if not isinstance(model, nn.Module):
        raise ConfigError(f"model factory {spec!r} returned {type(model).__name__}, expected torch.nn.Module")
    return model


def load_state_dict_file(model: nn.Module, path: str | os.PathLike[str]) -> nn.Module:
    """Load weights saved with ``torch.save(model.state_dict())`` (or a training checkpoint holding
    ``"model"``) into ``model`` strictly; every failure becomes a :class:`CheckpointError` naming the
    file and, for mismatches, the offending keys and shapes."""
    p = Path(path)
    if not p.is_file():
        raise CheckpointError(
            f"checkpoint file {str(p)!r} does not exist (expected a torch.save'd state_dict)"
        )
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for truncated/corrupt/unsafe files
        raise CheckpointError(
            f"cannot read checkpoint {str(p)!r} (corrupt or not a torch file?): "
            f"{type(exc).__name__}: {(str(exc).strip().splitlines() or [''])[0][:200]}"
        ) from exc
    if isinstance(obj, Mapping) and "model" in obj and isinstance(obj["model"], Mapping):
        obj = obj["model"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(
            f"checkpoint {str(p)!r} does not hold a state_dict (a mapping of name -> tensor)"
        )
    state = dict(obj)
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    unexpected = sorted(set(state) - set(own))
    shape_bad = [
        f"{k}: checkpoint {tuple(state[k].shape)} vs model {tuple(own[k].shape)}"
        for k in own
        if k in state and state[k].shape != own[k].shape
    ]
    problems = []
    if shape_bad:
        problems.append(
            "shape mismatch for "
            + "; ".join(shape_bad)
            + " (different num_classes or width than the model was trained with?)"
        )
    if missing:
        problems.append(f"missing keys {_short(missing)}")
    if unexpected:
        problems.append(f"unexpected keys {_short(unexpected)}")
    if problems:
        raise CheckpointError(
            f"checkpoint {str(p)!r} does not match {type(model).__name__}: " + "; ".join(problems)
        )
    model.load_state_dict(state, strict=True)
    return model


def _short(keys: list[str], limit: int = 8) -> str:
    return str(keys) if len(keys) <= limit else f"{keys[:limit]} (+{len(keys) - limit} more)"

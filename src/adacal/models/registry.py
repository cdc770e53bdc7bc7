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
from adacal.errors import AdacalError, CheckpointError, ConfigError, ModelError, first_line, plain_text
from adacal.models.cifar import digits_cnn, resnet20, resnet20_wide, vgg16_cifar

__all__ = ["BUILTIN_MODELS", "available_models", "build_model", "load_state_dict_file", "read_state_dict",
           "register_model"]

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
    if not isinstance(name, str) or not name:
        raise ConfigError(f"model name must be a non-empty string, got {name!r}")
    if name in BUILTIN_MODELS:
        return _call_factory(BUILTIN_MODELS[name], f"model {name!r}", num_classes, kw)
    if ":" in name:
        return _build_from_factory(name, num_classes, kw)
    tv_names = _torchvision_classifiers()
    if name in tv_names:
        import torchvision.models as tvm

        return _call_factory(lambda **a: tvm.get_model(name, weights=None, **a), f"torchvision model {name!r}",
                             num_classes, kw)
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
    return _call_factory(factory, f"model factory {spec!r}", num_classes, kw)


def _call_factory(factory: Callable[..., object], what: str, num_classes: int, kw: Mapping[str, object]) -> nn.Module:
    """``factory(num_classes=..., **kw)``, checked: whatever the (possibly user-written) factory raises
    becomes a :class:`ModelError` naming it, and it must return an ``nn.Module``."""
    try:
        model = factory(num_classes=num_classes, **kw)
    except AdacalError:
        raise
    except TypeError as exc:  # usually a keyword it does not take: num_classes or one of the options
        given = ", ".join([f"num_classes={num_classes}", *kw])
        raise ModelError(f"{what} does not accept the arguments it was given ({given}): {first_line(exc)}; check "
                         "model.options (a model factory takes num_classes= and its options as keyword "
                         "arguments)") from exc
    except Exception as exc:
        raise ModelError(f"{what} failed while building the model: {type(exc).__name__}: {first_line(exc)} "
                         "(run with --verbose for the traceback)") from exc
    if not isinstance(model, nn.Module):
        raise ConfigError(f"{what} returned {type(model).__name__}, expected a torch.nn.Module")
    return model


def load_state_dict_file(model: nn.Module, path: str | os.PathLike[str]) -> nn.Module:
    """Load weights saved with ``torch.save(model.state_dict())`` (or a training checkpoint holding
    ``"model"``) into ``model`` strictly; every failure becomes a :class:`CheckpointError` naming the
    file and, for mismatches, the offending keys and shapes."""
    state = read_state_dict(path)
    p = Path(path)
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
        raise CheckpointError(f"checkpoint {str(p)!r} does not match {type(model).__name__}: " + "; ".join(problems))
    model.load_state_dict(state, strict=True)
    return model


def read_state_dict(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """A state_dict file (or a training checkpoint holding ``"model"``), read with ``weights_only=True``.

    Every way the file can be wrong is a :class:`CheckpointError` saying which: missing, a folder,
    a pickled model instead of its state_dict, not a torch file, not a mapping of tensors, or
    holding NaN/Inf values.
    """
    p = Path(path)
    if p.is_dir():
        raise CheckpointError(f"checkpoint {str(p)!r} is a directory, not a file; pass the state_dict file in it "
                              "(e.g. model.pt)")
    if not p.is_file():
        raise CheckpointError(f"checkpoint file {str(p)!r} does not exist (expected a torch.save'd state_dict)")
    try:
        obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as exc:  # torch raises many types for truncated/corrupt/unsafe files
        raise CheckpointError(_unreadable(p, exc)) from exc
    if isinstance(obj, Mapping) and "model" in obj and isinstance(obj["model"], Mapping):
        obj = obj["model"]
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"checkpoint {str(p)!r} does not hold a state_dict (a mapping of name -> tensor) but "
                              f"a {type(obj).__name__}; save it with torch.save(model.state_dict(), path)")
    state = {str(k): v for k, v in obj.items()}
    bad = [k for k, v in state.items() if v.is_floating_point() and not bool(torch.isfinite(v).all())]
    if bad:
        raise CheckpointError(f"checkpoint {str(p)!r} holds NaN or Inf values in {_short(bad)}; the training "
                              "diverged or the file is damaged: use an earlier checkpoint")
    return state


def _unreadable(p: Path, exc: Exception) -> str:
    """Why ``torch.load(weights_only=True)`` refused ``p``, in words a user can act on."""
    text = plain_text(str(exc))
    if _is_torch_file(p) and ("weights_only" in text.lower() or "unpickl" in type(exc).__name__.lower()):
        if _holds_pickled_module(p):
            return (f"{str(p)!r} holds a pickled model, not a state_dict: save model.state_dict() instead "
                    "(torch.save(model.state_dict(), path)); adacal never unpickles code")
        return (f"{str(p)!r} holds Python objects other than tensors, which adacal does not unpickle; save a "
                "state_dict: torch.save(model.state_dict(), path)")
    return (f"cannot read checkpoint {str(p)!r}: it is not a torch file or it is damaged "
            f"({type(exc).__name__}: {first_line(exc)})")


def _is_torch_file(p: Path) -> bool:
    """A torch.save file: a zip archive (torch >= 1.6) or a legacy pickle stream (starts with the PROTO opcode)."""
    import zipfile

    try:
        with open(p, "rb") as f:
            head = f.read(1)
    except OSError:
        return False
    return head == b"\x80" or zipfile.is_zipfile(p)


def _holds_pickled_module(p: Path) -> bool:
    """Whether a torch zip file pickles an ``nn.Module`` (read from its pickle opcodes, nothing executed)."""
    import pickletools
    import zipfile

    try:
        with zipfile.ZipFile(p) as z:
            name = next((n for n in z.namelist() if n.endswith("/data.pkl") or n == "data.pkl"), None)
            if name is None:
                return False
            data = z.read(name)
        strings = {str(arg) for op, arg, _ in pickletools.genops(data) if isinstance(arg, str)}
    except Exception:  # not a zip, a damaged pickle: then it is not a readable pickled model either
        return False
    # a module's pickled __dict__ holds these keys; its classes live in torch.nn.modules (or the user's code)
    return {"_modules", "_parameters"} <= strings or any(s.startswith("torch.nn.modules") for s in strings)


def _short(keys: list[str], limit: int = 8) -> str:
    return str(keys) if len(keys) <= limit else f"{keys[:limit]} (+{len(keys) - limit} more)"

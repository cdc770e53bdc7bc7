"""Split a detector into the part that spikes and the part that stays in floating point; convert it.

A detector is *pre-processing* (resize, normalise: the data loader), a *spiking part* (backbone,
pyramid, heads: an ``nn.Module`` from the image tensor to head tensors) and a *decoder* (anchors or
locations, box decoding, NMS) applied to the time-averaged head outputs — and, under early exit,
to the running average at every step. :func:`detector_parts` finds the split:

* a module with a ``decoder`` attribute (e.g. ``fcos_lite``) is its own spiking part;
* a registered detector type (torchvision RetinaNet, FCOS, SSD; :func:`register_detector`) uses
  its adapter;
* otherwise ``spiking="submodule.name"`` names the spiking part and ``decoder=`` gives the decoder.

:func:`convert_detector` is the one call: split, :func:`adacal.convert` the spiking part with the
decoder's divergence, attach the decoder to the SNN and record which parts stayed analog.
"""
from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from adacal.errors import ConfigError

__all__ = ["DETECTORS", "DetectorParts", "convert_detector", "detector_parts", "register_detector"]

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class DetectorParts:
    """``spiking``: the module to convert (image → head tensors, with ``decoder`` attached);
    ``decoder``: floating-point post-processing; ``analog``: what stays analog and why."""

    spiking: nn.Module
    decoder: Any
    analog: tuple[str, ...]

    def describe(self) -> dict[str, Any]:
        return {"spiking": type(self.spiking).__name__, "analog": list(self.analog),
                "decoder": self.decoder.describe()}


#: Adapters by detector type: ``adapter(model, **options) -> DetectorParts``.
DETECTORS: dict[type, Callable[..., DetectorParts]] = {}

_PRE = "pre-processing: resize and normalise (data loader)"


def register_detector(cls: type, adapter: Callable[..., DetectorParts]) -> None:
    """Let :func:`detector_parts` split detectors of type ``cls`` with ``adapter(model, **options)``."""
    DETECTORS[cls] = adapter


def _attach(module: nn.Module, decoder: Any) -> nn.Module:
    # a plain attribute (not a submodule): no state_dict keys, not traced, read by DetectionTask.bind_model
    object.__setattr__(module, "decoder", decoder)
    return module


def detector_parts(model: nn.Module, *, spiking: str | nn.Module | None = None, decoder: Any = None,
                   **options: Any) -> DetectorParts:
    """The spiking part and decoder of ``model`` (see the module docstring); ``options`` go to the adapter
    (torchvision: ``num_classes``, ``label_offset``, ``input_size``)."""
    if spiking is not None:
        part = model.get_submodule(spiking) if isinstance(spiking, str) else spiking
        dec = decoder if decoder is not None else getattr(part, "decoder", None)
        if dec is None:
            raise ConfigError(f"spiking part {spiking!r} has no decoder: pass decoder=... (an object with "
                              "detections(outputs), divergence, analog_ops, describe), e.g. adacal.detection."
                              "FCOSDecoder")
        return DetectorParts(_attach(part, dec), dec, (_PRE, "post-processing: " + str(dec.describe())))
    if getattr(model, "decoder", None) is not None:
        dec = model.decoder
        return DetectorParts(model, dec, (_PRE, "post-processing: " + str(dec.describe())))
    for cls, adapter in DETECTORS.items():
        if isinstance(model, cls):
            return adapter(model, **options)
    raise ConfigError(f"cannot find the spiking part of {type(model).__name__}: pass spiking='<submodule>' "
                      f"and decoder=..., or register an adapter (known: {[c.__name__ for c in DETECTORS]})")


def convert_detector(model: nn.Module, calib_data: Any, *, config: Any = None, input_fn: Any = None,
                     spiking: str | nn.Module | None = None, decoder: Any = None, progress: Any = None,
                     workdir: str | None = None, **options: Any) -> tuple[Any, dict[str, Any]]:
    """One call from a trained detector to its SNN: split (:func:`detector_parts`), convert the spiking
    part (:func:`adacal.convert`, profiling with the decoder's divergence) and return ``(snn, record)``;
    the SNN carries the decoder (``snn.decoder``), the record a ``detector`` entry naming the analog parts.
    """
    from adacal.pipeline import convert

    parts = detector_parts(model, spiking=spiking, decoder=decoder, **options)
    snn, record = convert(parts.spiking, calib_data, config=config, input_fn=input_fn, progress=progress,
                          workdir=workdir, divergence=parts.decoder.divergence)
    _attach(snn, parts.decoder)
    record["detector"] = parts.describe()
    log.info("converted %s: spiking part %s; analog: %s", type(model).__name__, type(parts.spiking).__name__,
             "; ".join(parts.analog))
    return snn, record


def _torchvision_adapter(kind: str) -> Callable[..., DetectorParts]:
    def adapter(model: nn.Module, *, num_classes: int | None = None, label_offset: int = 0,
                input_size: Any = None) -> DetectorParts:
        from adacal.detection import torchvision_models as tv

        part = {"retinanet": tv.RetinaNetSpiking, "fcos": tv.FCOSSpiking, "ssd": tv.SSDSpiking}[kind](model)
        if kind == "ssd":
            label_offset = max(label_offset, 1)  # SSD's class 0 is background by construction
        n = num_classes if num_classes is not None else tv.head_classes(model) - label_offset
        dec = tv.TorchvisionDecoder(model, kind, num_classes=n, label_offset=label_offset, input_size=input_size)
        analog = [_PRE, f"post-processing: {kind} anchors, box decoding, score filtering, NMS (torchvision)"]
        if kind == "fcos":
            analog.append("heads: GroupNorm normalises with per-image statistics (not linear in spikes), so both "
                          "FCOS heads run in floating point on the time-averaged pyramid features")
        if kind == "ssd":
            analog.append("level 0: L2 normalisation of conv4_3 (per-position norm) and its two head convs run in "
                          "floating point on the time-averaged conv4_3 features")
        return DetectorParts(_attach(part, dec), dec, tuple(analog))

    return adapter


def _register_torchvision() -> None:
    from torchvision.models.detection.fcos import FCOS
    from torchvision.models.detection.retinanet import RetinaNet
    from torchvision.models.detection.ssd import SSD

    register_detector(RetinaNet, _torchvision_adapter("retinanet"))
    register_detector(FCOS, _torchvision_adapter("fcos"))
    register_detector(SSD, _torchvision_adapter("ssd"))


_register_torchvision()

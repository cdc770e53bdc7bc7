"""Object detection: box conventions, decoders of head outputs, the spiking/analog split of a detector."""
from __future__ import annotations

from adacal.detection.boxes import pad_target, to_continuous, unpad_target, voc_to_continuous, xywh_to_xyxy
from adacal.detection.fcos import FCOSDecoder

__all__ = ["FCOSDecoder", "pad_target", "to_continuous", "unpad_target", "voc_to_continuous", "xywh_to_xyxy"]

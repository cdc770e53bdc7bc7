"""ANN model definitions (CIFAR ResNet-20 / VGG-16, a tiny digits CNN) and a name-based registry."""

from __future__ import annotations

from adacal.models import pointnet as _pointnet  # noqa: F401  (registers pointnet_cls and pointnet_seg)
from adacal.models import segmentation as _segmentation  # noqa: F401  (registers fcn_small and torchvision's)
from adacal.models.cifar import (
    BasicBlock,
    CifarResNet,
    DigitsCNN,
    VGGCifar,
    digits_cnn,
    resnet20,
    resnet20_wide,
    vgg16_cifar,
)
from adacal.models.registry import (
    BUILTIN_MODELS,
    available_models,
    build_model,
    load_state_dict_file,
    register_model,
)

__all__ = ["BUILTIN_MODELS", "BasicBlock", "CifarResNet", "DigitsCNN", "VGGCifar", "available_models", "build_model",
           "digits_cnn", "load_state_dict_file", "register_model", "resnet20", "resnet20_wide", "vgg16_cifar"]
from adacal.models import detection as _detection  # noqa: E402,F401  (registers fcos_lite and torchvision detectors)
from adacal.models import events as _events  # noqa: F401,E402  (registers event_cnn, nmnist_cnn)

"""Name -> constructor lookup for the model zoo, with one-line errors for bad requests."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from sdkd_core.errors import UserError, unknown_choice
from sdkd_core.models import imagenet_resnet, resnet, vgg, wrn
from sdkd_core.models.base import StagedNet
from sdkd_core.models.deeplab import deeplabv3_resnet, deeplabv3_small, dilated_resnet
from sdkd_core.models.depth_net import depthnet
from sdkd_core.models.mobilenetv1 import MobileNetV1
from sdkd_core.models.mobilenetv2 import MobileNetV2
from sdkd_core.models.shufflenetv2 import ShuffleV2

Builder = Callable[[int, int], StagedNet]

_BUILDERS: dict[str, Builder] = {
    "resnet8": resnet.resnet8,
    "resnet14": resnet.resnet14,
    "resnet20": resnet.resnet20,
    "resnet32": resnet.resnet32,
    "resnet56": resnet.resnet56,
    "resnet110": resnet.resnet110,
    "resnet8x4": resnet.resnet8x4,
    "resnet32x4": resnet.resnet32x4,
    "wrn_16_2": wrn.wrn_16_2,
    "wrn_40_2": wrn.wrn_40_2,
    "vgg8": vgg.vgg8,
    "vgg13": vgg.vgg13,
    "ShuffleV2": ShuffleV2,
    "MobileNetV2": MobileNetV2,
    # ImageNet-scale: a stride-2 stem (ResNets: and a max-pool), so 32x32 inputs end at 1x1.
    "resnet18": imagenet_resnet.resnet18,
    "resnet34": imagenet_resnet.resnet34,
    "resnet50": imagenet_resnet.resnet50,
    "MobileNetV1": MobileNetV1,
}

# Classification models: logits (N, num_classes).
CLASSIFICATION_MODEL_NAMES: tuple[str, ...] = tuple(_BUILDERS)

# Dense models (DenseNet: logits a map at the input's size). `deeplabv3_<arch>` segments into
# num_classes >= 2 classes, `depthnet_<arch>` predicts depth in its one channel (num_classes 1).
# torchvision's ResNets as its segmentation models dilate them (output stride 8) ...
_DILATED_RESNETS = ("resnet18", "resnet34", "resnet50", "resnet101")
# ... and the CPU zoo's backbones, classifier dropped (output stride 4 to 16).
_SMALL_BACKBONES = ("resnet8", "resnet14", "resnet20", "resnet32", "resnet56", "resnet110",
                    "resnet8x4", "resnet32x4", "wrn_16_2", "wrn_40_2", "vgg8", "vgg13",
                    "ShuffleV2", "MobileNetV2")
SEGMENTATION_PREFIX, DEPTH_PREFIX = "deeplabv3_", "depthnet_"


def _small_deeplab(arch: str, num_classes: int, in_channels: int) -> StagedNet:
    return deeplabv3_small(_BUILDERS[arch](num_classes, in_channels), num_classes)


def _depthnet(arch: str, num_classes: int, in_channels: int) -> StagedNet:
    if arch in _DILATED_RESNETS:
        return depthnet(dilated_resnet(arch, in_channels))
    return depthnet(_BUILDERS[arch](num_classes, in_channels))


_DENSE_BUILDERS: dict[str, Builder] = {
    **{f"{SEGMENTATION_PREFIX}{a}": partial(deeplabv3_resnet, a) for a in _DILATED_RESNETS},
    **{f"{SEGMENTATION_PREFIX}{a}": partial(_small_deeplab, a) for a in _SMALL_BACKBONES},
    **{f"{DEPTH_PREFIX}{a}": partial(_depthnet, a) for a in (*_DILATED_RESNETS,
                                                             *_SMALL_BACKBONES)},
}
DENSE_MODEL_NAMES: tuple[str, ...] = tuple(_DENSE_BUILDERS)
_BUILDERS.update(_DENSE_BUILDERS)
MODEL_NAMES: tuple[str, ...] = tuple(_BUILDERS)


def is_dense_model(name: str) -> bool:
    """Whether `name` builds a DenseNet (per-pixel logits at the input's size)."""
    return name in _DENSE_BUILDERS


class UnknownModelError(UserError):
    """A model name that is not in MODEL_NAMES; the message suggests the closest one."""


def _check_count(what: str, value: object, minimum: int) -> None:
    # bool is an int subclass but never a sensible count.
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UserError(f"{what} must be an integer >= {minimum}, got {value!r}")


def build_model(name: str, num_classes: int, in_channels: int = 3) -> StagedNet:
    """A freshly initialised model from MODEL_NAMES; `num_classes` is its output channels
    (classes; 1 for the depth models' depth)."""
    builder = _BUILDERS.get(name)
    if builder is None:
        raise unknown_choice("model", name, MODEL_NAMES, UnknownModelError)
    if name.startswith(DEPTH_PREFIX):
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes != 1:
            raise UserError(f"{name} predicts one depth channel: num_classes must be 1, "
                            f"got {num_classes!r}")
    else:
        _check_count("num_classes", num_classes, 2)
    _check_count("in_channels", in_channels, 1)
    return builder(num_classes, in_channels)

"""Name -> constructor lookup for the model zoo, with one-line errors for bad requests."""

from __future__ import annotations

from collections.abc import Callable

from sdkd_core.errors import UserError, unknown_choice
from sdkd_core.models import imagenet_resnet, resnet, vgg, wrn
from sdkd_core.models.base import StagedNet
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

MODEL_NAMES: tuple[str, ...] = tuple(_BUILDERS)


class UnknownModelError(UserError):
    """A model name that is not in MODEL_NAMES; the message suggests the closest one."""


def _check_count(what: str, value: object, minimum: int) -> None:
    # bool is an int subclass but never a sensible count.
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise UserError(f"{what} must be an integer >= {minimum}, got {value!r}")


def build_model(name: str, num_classes: int, in_channels: int = 3) -> StagedNet:
    """A freshly initialised model from MODEL_NAMES."""
    builder = _BUILDERS.get(name)
    if builder is None:
        raise unknown_choice("model", name, MODEL_NAMES, UnknownModelError)
    _check_count("num_classes", num_classes, 2)
    _check_count("in_channels", in_channels, 1)
    return builder(num_classes, in_channels)

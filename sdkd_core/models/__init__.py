"""Model zoo (CIFAR-style networks, ImageNet ResNet-18/34/50 and MobileNet-V1) whose forward
pass also returns per-stage feature maps."""

from sdkd_core.models.base import ModelOutput, StagedNet
from sdkd_core.models.registry import MODEL_NAMES, UnknownModelError, build_model

__all__ = ["MODEL_NAMES", "ModelOutput", "StagedNet", "UnknownModelError", "build_model"]

"""Model zoo (CIFAR-style networks, ImageNet ResNet-18/34/50 and MobileNet-V1) whose forward
pass also returns per-stage feature maps, and dense-prediction models on those backbones
(DeepLabV3 for segmentation, an encoder-decoder for depth)."""

from sdkd_core.models.base import ModelOutput, StagedNet
from sdkd_core.models.dense import DenseNet
from sdkd_core.models.registry import (
    CLASSIFICATION_MODEL_NAMES,
    DENSE_MODEL_NAMES,
    MODEL_NAMES,
    UnknownModelError,
    build_model,
    is_dense_model,
)

__all__ = ["CLASSIFICATION_MODEL_NAMES", "DENSE_MODEL_NAMES", "MODEL_NAMES", "DenseNet",
           "ModelOutput", "StagedNet", "UnknownModelError", "build_model", "is_dense_model"]

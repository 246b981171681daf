"""DeepLabV3 (Chen et al. 2017) for semantic segmentation, on dilated ResNets and on the CPU zoo.

`deeplabv3_resnet50` / `deeplabv3_resnet101` are torchvision's models
(torchvision/models/segmentation/deeplabv3.py) under torchvision's module names: a ResNet with
layer3 and layer4 dilated (2 and 4, output stride 8) as `backbone.{conv1,bn1,layer1..4}`, and
`classifier = DeepLabHead(2048, num_classes)`: ASPP at rates 12, 24, 36 with 256 channels, a
3x3 conv-BN-ReLU and a 1x1 conv to the classes. Loading rule: torchvision's state dict minus its
`aux_classifier.*` keys (the FCNHead on layer3, a training-time loss only) loads strictly
(`load_torchvision_deeplab`; `load_teacher_checkpoint` reads torchvision's files the same way),
and the logits are then torchvision's to the bit. From the same seed, a model built here has
the initial weights of torchvision's built with `aux_loss=False` (its backbone is built as a
1000-class ResNet whose fc is then dropped, as torchvision's is).
The ASPP modules are written out here rather than imported: importing torchvision's
segmentation package costs every import of the zoo about 1.5 s.

`deeplabv3_resnet18` is the student of winycg/CIRKD's Cityscapes benchmark (models/deeplabv3.py,
models/base_models/resnetv1b.py), at output stride 8 with its dilated BasicBlocks (see
imagenet_resnet). It differs from CIRKD's in what keeps it a torchvision-style model:
- the stem is torchvision's 7x7 conv (64 channels); CIRKD's `resnet18_v1s` has a deep stem of
  three 3x3 convs (64, 64, 128 channels), so its layer1 takes 128 channels;
- the head is torchvision's DeepLabHead (256 channels); CIRKD's has 512 for both the ResNet-18
  and ResNet-50/101 backbones, a Dropout(0.1) before the last conv, and upsamples its ASPP
  pooling branch with align_corners=True;
- the logits come upsampled to the input's size; CIRKD's forward returns them at 1/8 and
  its training loop upsamples, and it returns an auxiliary FCNHead's logits (on layer3) too.

`deeplabv3_<zoo name>` (resnet8, resnet8x4, wrn_40_2, ...) is the same head, narrower, on a CPU
zoo backbone with its classifier dropped: ASPP at rates 1, 2, 3 with 64 channels. Those
backbones' last maps are 1/4 to 1/16 of the input (16x16 for a 64x64 input to a CIFAR ResNet),
where torchvision's rates 12-36 would sample mostly padding. One SGD step (forward,
cross-entropy, backward, update) on a batch of 64 grayscale 64x64 images, torch on 2 threads of
2 otherwise idle CPU cores, takes 0.49 s for deeplabv3_resnet8 (255k parameters at 10 classes;
0.11 s at 32x32) and 4.6 s for deeplabv3_resnet8x4 (1.74M). The backbones dominate: they run
their first stage at the input's full resolution, and the resnet8 and resnet8x4 classifiers
alone take 0.29 s and 3.4 s for the same batch.

The ASPP's pooling branch runs BatchNorm on a 1x1 map: a training batch needs 2+ images.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from sdkd_core.errors import UserError
from sdkd_core.models import imagenet_resnet
from sdkd_core.models.base import StagedNet
from sdkd_core.models.dense import DenseNet, load_dense_state

TORCHVISION_RATES = (12, 24, 36)
TORCHVISION_ASPP_CHANNELS = 256
SMALL_RATES = (1, 2, 3)
SMALL_ASPP_CHANNELS = 64
# torchvision's segmentation ResNets: layer3 and layer4 dilated, output stride 8.
OUTPUT_STRIDE_8 = (False, True, True)
# Built as the 1000-class classifier torchvision builds, then headless: the same draws from the
# random generator, so the same seed gives torchvision's backbone weights.
_BACKBONE_CLASSES = 1000


class ASPPConv(nn.Sequential):
    """torchvision's ASPPConv: a dilated 3x3 conv-BN-ReLU."""

    def __init__(self, cin: int, cout: int, dilation: int) -> None:
        super().__init__(
            nn.Conv2d(cin, cout, 3, padding=dilation, dilation=dilation, bias=False),
            nn.BatchNorm2d(cout),
            nn.ReLU(),
        )


class ASPPPooling(nn.Sequential):
    """torchvision's ASPPPooling: image-level features, broadcast back bilinearly."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__(
            nn.AdaptiveAvgPool2d(1), nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout),
            nn.ReLU(),
        )

    def forward(self, x: Tensor) -> Tensor:
        size = x.shape[-2:]
        for module in self:
            x = module(x)
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class ASPP(nn.Module):
    """torchvision's ASPP: a 1x1 branch, one dilated branch per rate and the pooling branch,
    concatenated and projected (with Dropout(0.5)) to `cout` channels."""

    def __init__(self, cin: int, rates: Sequence[int], cout: int = 256) -> None:
        super().__init__()
        branches: list[nn.Module] = [
            nn.Sequential(nn.Conv2d(cin, cout, 1, bias=False), nn.BatchNorm2d(cout), nn.ReLU())]
        branches += [ASPPConv(cin, cout, rate) for rate in rates]
        branches.append(ASPPPooling(cin, cout))
        self.convs = nn.ModuleList(branches)
        self.project = nn.Sequential(
            nn.Conv2d(len(self.convs) * cout, cout, 1, bias=False), nn.BatchNorm2d(cout),
            nn.ReLU(), nn.Dropout(0.5),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.project(torch.cat([branch(x) for branch in self.convs], dim=1))


class DeepLabHead(nn.Sequential):
    """torchvision's DeepLabHead with the ASPP's width and rates as parameters (its own are
    256 and 12, 24, 36)."""

    def __init__(self, cin: int, num_classes: int, rates: Sequence[int] = TORCHVISION_RATES,
                 width: int = TORCHVISION_ASPP_CHANNELS) -> None:
        super().__init__(
            ASPP(cin, rates, width),
            nn.Conv2d(width, width, 3, padding=1, bias=False),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.Conv2d(width, num_classes, 1),
        )


class DeepLabV3(DenseNet):
    """A backbone and a DeepLabHead registered as `classifier` (torchvision's name). The head
    keeps torch's default initialisation, as torchvision's does."""

    def __init__(self, name: str, backbone: StagedNet, num_classes: int,
                 rates: Sequence[int] = TORCHVISION_RATES,
                 width: int = TORCHVISION_ASPP_CHANNELS) -> None:
        super().__init__(name, backbone)
        self.classifier = DeepLabHead(self.stage_channels[-1], num_classes, rates, width)

    @property
    def head(self) -> nn.Module:
        return self.classifier


def dilated_resnet(arch: str, in_channels: int) -> imagenet_resnet.ImageNetResNet:
    """torchvision's ResNet `arch` at output stride 8, as its segmentation models build it."""
    build = getattr(imagenet_resnet, arch)
    return build(_BACKBONE_CLASSES, in_channels, dilate=OUTPUT_STRIDE_8)


def deeplabv3_resnet(arch: str, num_classes: int, in_channels: int = 3) -> DeepLabV3:
    """DeepLabV3 on a dilated torchvision ResNet (resnet18, resnet34, resnet50, resnet101)."""
    return DeepLabV3(f"deeplabv3_{arch}", dilated_resnet(arch, in_channels), num_classes)


def deeplabv3_small(backbone: StagedNet, num_classes: int) -> DeepLabV3:
    """The narrow DeepLabV3 on a CPU zoo backbone (its classifier is dropped)."""
    return DeepLabV3(f"deeplabv3_{backbone.name}", backbone, num_classes, SMALL_RATES,
                     SMALL_ASPP_CHANNELS)


def load_torchvision_deeplab(model: DeepLabV3, state_dict: Mapping[str, Tensor]) -> DeepLabV3:
    """Load a torchvision DeepLabV3 state dict (torchvision's `.pth` files are such dicts) into
    `model`, dropping `aux_classifier.*`, strictly; a UserError in one line when the classes or
    the architecture differ."""
    head = state_dict.get("classifier.4.weight")
    if head is not None and head.dim() == 4 and head.shape[0] != model.num_classes:
        raise UserError(
            f"this DeepLabV3 state dict predicts {head.shape[0]} classes (classifier.4.weight "
            f"{list(head.shape)}) but {model.name} was built for {model.num_classes}; build it "
            f"with num_classes={head.shape[0]}, or train the head for your classes")
    load_dense_state(model, state_dict)
    return model

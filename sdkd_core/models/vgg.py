"""VGG with BatchNorm in the CRD (Tian et al. 2020) CIFAR layout: five conv blocks, four pools."""

from __future__ import annotations

from itertools import pairwise

from torch import nn

from sdkd_core.models.base import StagedNet

# One list of conv widths per block; block 0 is the full-resolution stem.
VGG8_CFG = [[64], [128], [256], [512], [512]]
VGG13_CFG = [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]]


def _block(cin: int, widths: list[int]) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for w in widths:
        # No conv bias: the following BN has its own shift.
        layers += [
            nn.Conv2d(cin, w, 3, padding=1, bias=False),
            nn.BatchNorm2d(w),
            nn.ReLU(inplace=True),
        ]
        cin = w
    return layers


class VGG(StagedNet):
    """stem = block0; stage k = MaxPool2d(2) + block k (floors, so 28 -> 14 -> 7 -> 3 -> 1)."""

    def __init__(
        self, name: str, cfg: list[list[int]], num_classes: int, in_channels: int = 3
    ) -> None:
        super().__init__(name)
        self.stem = nn.Sequential(*_block(in_channels, cfg[0]))
        self.stages = nn.ModuleList(
            nn.Sequential(nn.MaxPool2d(kernel_size=2, stride=2), *_block(prev[-1], widths))
            for prev, widths in pairwise(cfg)
        )
        self.classifier = nn.Linear(cfg[-1][-1], num_classes)
        self._finish([widths[-1] for widths in cfg])


def vgg8(num_classes: int, in_channels: int = 3) -> VGG:
    return VGG("vgg8", VGG8_CFG, num_classes, in_channels)


def vgg13(num_classes: int, in_channels: int = 3) -> VGG:
    return VGG("vgg13", VGG13_CFG, num_classes, in_channels)

"""VGG-BN as RepDistiller's `vgg8` / `vgg13` (models/vgg.py, `vgg8_bn` / `vgg13_bn`).

Five conv blocks; max-pools before blocks 1-3 only. The reference pools before block 4 just for
64-pixel inputs, so on 32x32 CIFAR block 4 runs at block 3's 4x4 (3x3 on 28x28 Fashion-MNIST).
"""

from __future__ import annotations

from itertools import pairwise

from torch import nn

from sdkd_core.models.base import ClosingReLU, Stage, StagedNet

# One list of conv widths per block; block 0 is the full-resolution stem.
VGG8_CFG = [[64], [128], [256], [512], [512]]
VGG13_CFG = [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]]
# Blocks 1..3 start with a 2x2 max-pool; block 4 does not (see the module docstring).
POOLED_BLOCKS = 3


def _block(cin: int, widths: list[int]) -> list[nn.Module]:
    layers: list[nn.Module] = []
    for w in widths:
        # Conv bias although BN cancels it: the reference has one (parameter counts agree).
        layers += [nn.Conv2d(cin, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU(inplace=True)]
        cin = w
    # The block's last ReLU closes it: its input is the reference's f<k>_pre.
    layers[-1] = ClosingReLU()
    return layers


class VGG(StagedNet):
    """stem = block0; stages 1-3 = MaxPool2d(2) + block (floors: 28 -> 14 -> 7 -> 3); stage 4 =
    block 4 at stage 3's size."""

    def __init__(
        self, name: str, cfg: list[list[int]], num_classes: int, in_channels: int = 3
    ) -> None:
        super().__init__(name)
        self.stem = nn.Sequential(*_block(in_channels, cfg[0]))
        self.stages = nn.ModuleList(
            Stage(
                *([nn.MaxPool2d(kernel_size=2, stride=2)] if k <= POOLED_BLOCKS else []),
                *_block(prev[-1], widths),
            )
            for k, (prev, widths) in enumerate(pairwise(cfg), start=1)
        )
        self.classifier = nn.Linear(cfg[-1][-1], num_classes)
        self._finish([widths[-1] for widths in cfg])

    def init_weights(self) -> None:
        """He (fan_out) convs and identity BN as the base; the head N(0, 0.01) as the reference."""
        super().init_weights()
        nn.init.normal_(self.classifier.weight, 0.0, 0.01)
        nn.init.zeros_(self.classifier.bias)


def vgg8(num_classes: int, in_channels: int = 3) -> VGG:
    return VGG("vgg8", VGG8_CFG, num_classes, in_channels)


def vgg13(num_classes: int, in_channels: int = 3) -> VGG:
    return VGG("vgg13", VGG13_CFG, num_classes, in_channels)

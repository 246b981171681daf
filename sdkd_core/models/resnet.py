"""CIFAR ResNets (He et al. 2016, section 4.2) with BasicBlocks, as used in KD benchmarks."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from sdkd_core.models.base import Stage, StagedNet, conv_bn


class BasicBlock(nn.Module):
    """conv3x3-BN-ReLU-conv3x3-BN plus shortcut, ReLU after the add (its input, the sum, is the
    "preact" it reports: mdistiller's `preact` of an `is_last` block)."""

    takes_taps = True

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.body = nn.Sequential(
            *conv_bn(cin, cout, 3, stride), *conv_bn(cout, cout, 3, relu=False)
        )
        # Projection only where the identity cannot match shapes.
        self.shortcut = (
            nn.Sequential(*conv_bn(cin, cout, 1, stride, relu=False))
            if stride != 1 or cin != cout
            else nn.Identity()
        )

    def forward(self, x: Tensor, taps: dict[str, Tensor] | None = None) -> Tensor:
        preact = self.body(x) + self.shortcut(x)
        if taps is not None:
            taps["preact"] = preact
        return F.relu(preact)


class CifarResNet(StagedNet):
    """Stem conv3x3 + three stages of `blocks` BasicBlocks with strides 1, 2, 2."""

    def __init__(
        self, name: str, blocks: int, widths: list[int], num_classes: int, in_channels: int = 3
    ) -> None:
        super().__init__(name)
        self.stem = nn.Sequential(*conv_bn(in_channels, widths[0], 3))
        stages = []
        for cin, cout, stride in zip(widths[:-1], widths[1:], (1, 2, 2), strict=True):
            layers = [
                BasicBlock(cin if b == 0 else cout, cout, stride if b == 0 else 1)
                for b in range(blocks)
            ]
            stages.append(Stage(*layers))
        self.stages = nn.ModuleList(stages)
        self.classifier = nn.Linear(widths[-1], num_classes)
        self._finish(list(widths))


_NARROW = [16, 16, 32, 64]
_WIDE = [32, 64, 128, 256]


def _resnet(
    name: str, depth: int, widths: list[int], num_classes: int, in_channels: int
) -> CifarResNet:
    # Each stage has n blocks of two convs, plus stem conv and classifier: depth = 6n + 2.
    if (depth - 2) % 6:
        raise ValueError(f"ResNet depth must be 6n+2, got {depth}")
    return CifarResNet(name, (depth - 2) // 6, widths, num_classes, in_channels)


def resnet8(num_classes: int, in_channels: int = 3) -> CifarResNet:
    return _resnet("resnet8", 8, _NARROW, num_classes, in_channels)


def resnet14(num_classes: int, in_channels: int = 3) -> CifarResNet:
    return _resnet("resnet14", 14, _NARROW, num_classes, in_channels)


def resnet20(num_classes: int, in_channels: int = 3) -> CifarResNet:
    return _resnet("resnet20", 20, _NARROW, num_classes, in_channels)


def resnet32(num_classes: int, in_channels: int = 3) -> CifarResNet:
    return _resnet("resnet32", 32, _NARROW, num_classes, in_channels)


def resnet56(num_classes: int, in_channels: int = 3) -> CifarResNet:
    return _resnet("resnet56", 56, _NARROW, num_classes, in_channels)


def resnet110(num_classes: int, in_channels: int = 3) -> CifarResNet:
    return _resnet("resnet110", 110, _NARROW, num_classes, in_channels)


def resnet8x4(num_classes: int, in_channels: int = 3) -> CifarResNet:
    return _resnet("resnet8x4", 8, _WIDE, num_classes, in_channels)


def resnet32x4(num_classes: int, in_channels: int = 3) -> CifarResNet:
    return _resnet("resnet32x4", 32, _WIDE, num_classes, in_channels)

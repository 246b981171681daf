"""Wide ResNets (Zagoruyko & Komodakis 2016) with pre-activation blocks, CIFAR layout."""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from sdkd_core.models.base import ClosingReLU, Stage, StagedNet


def _conv3x3(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride, padding=1, bias=False)


class PreActBlock(nn.Module):
    """BN-ReLU-conv3x3-BN-ReLU-conv3x3 with a conv1x1 shortcut when shapes change.

    Opening a stage, it reports its first BN's output as the "entry_preact" of the stage's
    input: mdistiller's WRN `preact_feats` (`block<k+1>.layer[0].bn1(f<k>)`)."""

    takes_taps = True

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.bn1 = nn.BatchNorm2d(cin)
        self.conv1 = _conv3x3(cin, cout, stride)
        self.bn2 = nn.BatchNorm2d(cout)
        self.conv2 = _conv3x3(cout, cout)
        self.projection = (
            nn.Conv2d(cin, cout, 1, stride, bias=False) if stride != 1 or cin != cout else None
        )

    def forward(self, x: Tensor, taps: dict[str, Tensor] | None = None) -> Tensor:
        opened = self.bn1(x)
        if taps is not None:
            taps.setdefault("entry_preact", opened)
        a = F.relu(opened)
        out = self.conv2(F.relu(self.bn2(self.conv1(a))))
        # As in the original WRN, a projection reads the pre-activated input; identity reads x.
        return out + (x if self.projection is None else self.projection(a))


class WideResNet(StagedNet):
    """conv3x3 stem, three stages (strides 1, 2, 2), then the closing BN+ReLU before pooling.

    The closing BN+ReLU is `closing`, outside the last stage, so `feats[-1]` is the pre-BN map:
    the map RepDistiller's and mdistiller's WRNs return as their last feature, which SHAKE's
    shadow head, AT and ReviewKD read there."""

    def __init__(
        self, name: str, depth: int, widen: int, num_classes: int, in_channels: int = 3
    ) -> None:
        if (depth - 4) % 6:
            raise ValueError(f"WideResNet depth must be 6n+4, got {depth}")
        super().__init__(name)
        n = (depth - 4) // 6
        widths = [16, 16 * widen, 32 * widen, 64 * widen]
        self.stem = _conv3x3(in_channels, widths[0])
        stages = []
        for cin, cout, stride in zip(widths[:-1], widths[1:], (1, 2, 2), strict=True):
            stages.append(
                Stage(
                    *[
                        PreActBlock(cin if b == 0 else cout, cout, stride if b == 0 else 1)
                        for b in range(n)
                    ]
                )
            )
        self.stages = nn.ModuleList(stages)
        # Its BN output is the last map's pre-activation: mdistiller's f3_pre = self.bn1(f3).
        self.closing = Stage(nn.BatchNorm2d(widths[-1]), ClosingReLU())
        self.classifier = nn.Linear(widths[-1], num_classes)
        self._finish(widths)

    @property
    def cam_layer(self) -> nn.Module:  # Grad-CAM on the activated map, as before pooling
        return self.closing


def wrn_16_2(num_classes: int, in_channels: int = 3) -> WideResNet:
    return WideResNet("wrn_16_2", 16, 2, num_classes, in_channels)


def wrn_40_2(num_classes: int, in_channels: int = 3) -> WideResNet:
    return WideResNet("wrn_40_2", 40, 2, num_classes, in_channels)

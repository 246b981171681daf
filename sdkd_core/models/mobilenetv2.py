"""MobileNetV2 (Sandler et al. 2018) as RepDistiller's `mobile_half` (models/mobilenetv2.py):
width 0.5, expansion 6, a stride-2 stem, so 32x32 inputs end at 2x2 (28x28: 14, 7, 4, 2).

As the reference, unlike ImageNet MobileNetV2: ReLU instead of ReLU6, the 1x1 expansion conv kept
even when t == 1, and a 1280-channel head conv whatever the width (<= 1).
"""

from __future__ import annotations

from torch import Tensor, nn

from sdkd_core.models.base import ClosingReLU, Stage, StagedNet, conv_bn


class InvertedResidual(nn.Module):
    """1x1 expand, depthwise 3x3, linear 1x1 project; identity skip when shapes allow."""

    def __init__(self, cin: int, cout: int, stride: int, expand: int) -> None:
        super().__init__()
        hidden = cin * expand
        self.use_skip = stride == 1 and cin == cout
        self.body = nn.Sequential(
            *conv_bn(cin, hidden, 1),
            *conv_bn(hidden, hidden, 3, stride, groups=hidden),
            *conv_bn(hidden, cout, 1, relu=False),
        )

    def forward(self, x: Tensor) -> Tensor:
        out = self.body(x)
        return x + out if self.use_skip else out


# [expansion t, channels c, repeats n, first stride s], from the paper.
SETTINGS = [
    [1, 16, 1, 1],
    [6, 24, 2, 1],
    [6, 32, 3, 2],
    [6, 64, 4, 2],
    [6, 96, 3, 1],
    [6, 160, 3, 2],
    [6, 320, 1, 1],
]
# Which rows of SETTINGS make up each of the four stages.
STAGE_ROWS = [[0, 1], [2], [3, 4], [5, 6]]


def _scaled(c: int, width: float) -> int:
    return max(8, round(c * width))


class MobileNetV2(StagedNet):
    """Stem conv3x3 (stride 2), four stages of inverted residuals, last stage ends 1x1 -> 1280.

    The stages end where the reference taps f1..f4 (after setting rows 1, 2, 4, 6).
    """

    HEAD_CHANNELS = 1280

    def __init__(
        self,
        num_classes: int,
        in_channels: int = 3,
        width: float = 0.5,
        expand: int = 6,
        name: str = "MobileNetV2",
    ) -> None:
        super().__init__(name)
        cin = _scaled(32, width)
        channels = [cin]
        self.stem = nn.Sequential(*conv_bn(in_channels, cin, 3, stride=2))
        stages = []
        for rows in STAGE_ROWS:
            blocks: list[nn.Module] = []
            for row in rows:
                t, c, n, s = SETTINGS[row]
                t = expand if t != 1 else 1
                cout = _scaled(c, width)
                for b in range(n):
                    blocks.append(InvertedResidual(cin, cout, s if b == 0 else 1, t))
                    cin = cout
            stages.append(Stage(*blocks))
            channels.append(cin)
        # Head conv belongs to the last stage so feats[-1] is what the classifier pools.
        # Its ReLU closes the last stage (the stages before end on a linear projection).
        stages[-1].extend([*conv_bn(cin, self.HEAD_CHANNELS, 1, relu=False), ClosingReLU()])
        channels[-1] = self.HEAD_CHANNELS
        self.stages = nn.ModuleList(stages)
        self.classifier = nn.Linear(self.HEAD_CHANNELS, num_classes)
        self._finish(channels)

    def init_weights(self) -> None:
        """He (fan_out) convs and identity BN as the base; the head N(0, 0.01) as the reference."""
        super().init_weights()
        nn.init.normal_(self.classifier.weight, 0.0, 0.01)
        nn.init.zeros_(self.classifier.bias)

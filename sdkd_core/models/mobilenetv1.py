"""MobileNet-V1 (Howard et al. 2017) as mdistiller builds it for ImageNet students
(mdistiller/models/imagenet/mobilenetv1.py): width 1.0, a stride-2 3x3 conv-BN-ReLU stem and 13
depthwise-separable blocks (3x3 depthwise conv-BN-ReLU, 1x1 conv-BN-ReLU), then global average
pooling and one linear layer: 4,231,976 parameters at 1000 classes, as mdistiller's.

The stages end where mdistiller takes its features (blocks 3, 5, 11 and 13 of its `model`
Sequential): 128 x 56 x 56, 256 x 28 x 28, 512 x 14 x 14 and 1024 x 7 x 7 for a 224 input;
feats[0] is the stem (32 x 112 x 112), which mdistiller does not return. `preact_feats[1..4]` are
those maps before their closing ReLU (the last block's pointwise BN output), as mdistiller's
`preact_feats`. Unlike mdistiller (fc fixed at 1000 outputs, AvgPool2d(7) so 224 inputs only) the
head has `num_classes` outputs and pools globally at any input size. Weights start as every zoo
model's (He fan_out convs, identity BN); mdistiller keeps PyTorch's defaults.
"""

from __future__ import annotations

from torch import Tensor, nn

from sdkd_core.models.base import ClosingReLU, Stage, StagedNet, conv_bn


class DepthwiseSeparable(nn.Sequential):
    """mdistiller's conv_dw: depthwise 3x3 conv, BN, ReLU, pointwise 1x1 conv, BN, ReLU (indices
    0..5 as there). Its last ReLU closes the block: with taps it reports the BN output before it."""

    takes_taps = True

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__(*conv_bn(cin, cin, 3, stride, groups=cin),
                         *conv_bn(cin, cout, 1, relu=False), ClosingReLU())

    def forward(self, x: Tensor, taps: dict[str, Tensor] | None = None) -> Tensor:
        for module in list(self)[:-1]:
            x = module(x)
        return self[-1](x, taps)


# (output channels, stride) of each block, one list per stage; the stem gives 32 channels.
STAGES = [
    [(64, 1), (128, 2), (128, 1)],
    [(256, 2), (256, 1)],
    [(512, 2), *[(512, 1)] * 5],
    [(1024, 2), (1024, 1)],
]
STEM_CHANNELS = 32


class MobileNetV1(StagedNet):
    """Stem conv3x3 (stride 2) and four stages of depthwise-separable blocks, 1024 channels out."""

    def __init__(self, num_classes: int, in_channels: int = 3, name: str = "MobileNetV1") -> None:
        super().__init__(name)
        cin = STEM_CHANNELS
        self.stem = nn.Sequential(*conv_bn(in_channels, cin, 3, stride=2))
        channels, stages = [cin], []
        for blocks in STAGES:
            layers = []
            for cout, stride in blocks:
                layers.append(DepthwiseSeparable(cin, cout, stride))
                cin = cout
            stages.append(Stage(*layers))
            channels.append(cin)
        self.stages = nn.ModuleList(stages)
        self.classifier = nn.Linear(cin, num_classes)
        self._finish(channels)

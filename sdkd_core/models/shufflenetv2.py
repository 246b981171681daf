"""ShuffleNetV2 (Ma et al. 2018) as RepDistiller's `ShuffleV2` (models/ShuffleNetv2.py, net_size 1):
a 1x1 stride-1 stem and no max-pool, so 32x32 inputs end at 4x4 (28x28: 14, 7, 4)."""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from sdkd_core.models.base import ClosingReLU, Stage, StagedNet, conv_bn


def channel_shuffle(x: Tensor, groups: int = 2) -> Tensor:
    """Interleave channel groups so the two branches mix in the next block."""
    n, c, h, w = x.shape
    return x.reshape(n, groups, c // groups, h, w).transpose(1, 2).reshape(n, c, h, w)


class DownBlock(nn.Module):
    """Stride-2 unit: both branches see all input channels, each yields half the output."""

    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        mid = cout // 2
        self.left = nn.Sequential(
            *conv_bn(cin, cin, 3, 2, groups=cin, relu=False), *conv_bn(cin, mid, 1)
        )
        self.right = nn.Sequential(
            *conv_bn(cin, mid, 1),
            *conv_bn(mid, mid, 3, 2, groups=mid, relu=False),
            *conv_bn(mid, mid, 1),
        )

    def forward(self, x: Tensor) -> Tensor:
        return channel_shuffle(torch.cat([self.left(x), self.right(x)], dim=1))


class BasicUnit(nn.Module):
    """Stride-1 unit: half the channels pass through untouched, the other half are convolved.

    Its "preact" is the output with the convolved half before its closing ReLU (the untouched
    half is already >= 0), in the output's shuffled channel order: mdistiller's `preact` of an
    `is_last` unit is the same channels unshuffled."""

    takes_taps = True

    def __init__(self, channels: int) -> None:
        super().__init__()
        half = channels // 2
        self.half = half
        self.right = nn.Sequential(
            *conv_bn(half, half, 1),
            *conv_bn(half, half, 3, groups=half, relu=False),
            *conv_bn(half, half, 1),
        )

    def forward(self, x: Tensor, taps: dict[str, Tensor] | None = None) -> Tensor:
        left, right = x[:, : self.half], x[:, self.half :]
        if taps is None:
            return channel_shuffle(torch.cat([left, self.right(right)], dim=1))
        for layer in list(self.right)[:-1]:  # all but the closing ReLU, which works in place
            right = layer(right)
        taps["preact"] = channel_shuffle(torch.cat([left, right], dim=1))
        return channel_shuffle(torch.cat([left, F.relu(right)], dim=1))


class ShuffleV2(StagedNet):
    """Stem 1x1 -> 24, three stages (116, 232, 464) of a down block + 3/7/3 units; the last stage
    adds the 1x1 -> 1024 head conv."""

    OUT_CHANNELS = (116, 232, 464)
    NUM_BLOCKS = (3, 7, 3)
    HEAD_CHANNELS = 1024

    def __init__(self, num_classes: int, in_channels: int = 3, name: str = "ShuffleV2") -> None:
        super().__init__(name)
        stem_width = 24
        self.stem = nn.Sequential(*conv_bn(in_channels, stem_width, 1))
        stages = []
        cin = stem_width
        for cout, blocks in zip(self.OUT_CHANNELS, self.NUM_BLOCKS, strict=True):
            stages.append(Stage(DownBlock(cin, cout), *[BasicUnit(cout) for _ in range(blocks)]))
            cin = cout
        # Head conv sits in the last stage so feats[-1] is the map the classifier pools.
        stages[-1].extend([*conv_bn(cin, self.HEAD_CHANNELS, 1, relu=False), ClosingReLU()])
        self.stages = nn.ModuleList(stages)
        self.classifier = nn.Linear(self.HEAD_CHANNELS, num_classes)
        self._finish([stem_width, *self.OUT_CHANNELS[:-1], self.HEAD_CHANNELS])

    def init_weights(self) -> None:
        """PyTorch's default init of every layer: the reference sets none of its own."""
        for m in self.modules():
            if m is not self and hasattr(m, "reset_parameters"):
                m.reset_parameters()

"""Monocular depth estimation: a zoo backbone and a decoder that upsamples its last map back to
the input's resolution, one output channel.

The decoder is a chain of (bilinear upsample x2, 3x3 conv-BN-ReLU) blocks from the last backbone
map, one per halving of the backbone's output stride (3 for the dilated ResNets' 8, 2 for the
CPU zoo's 4), halving the width each block (from min(256, C/2), at least 16), then a 3x3 conv
to one channel and, where the stride is not a power of two, a bilinear resize to the input's
size. It has no skip connections: `forward_from(i, h)` (SDKD's proxy, which runs the model's
later stages from one fused map) has no earlier maps to give a U-Net-style decoder.

The same SGD step as deeplab's measurement (64 grayscale 64x64 images, 2 CPU cores, an L1 loss)
takes 0.68 s for depthnet_resnet8 (100k parameters) and 7.1 s for depthnet_resnet8x4 (1.58M),
whose decoder's two blocks at 32x32 and 64x64 cost about as much as its backbone.

Channel 0 of `logits` is the predicted depth, raw and unconstrained (no activation): the task
chooses the target's scale and clamps predictions for its metrics. The models are built with
`num_classes` = 1 (the registry refuses another count).
"""

from __future__ import annotations

from torch import nn

from sdkd_core.models.base import StagedNet
from sdkd_core.models.dense import DenseNet

MAX_DECODER_WIDTH = 256
MIN_DECODER_WIDTH = 16


def up_block(cin: int, cout: int) -> nn.Sequential:
    """Bilinear x2 upsampling, then a 3x3 conv-BN-ReLU."""
    return nn.Sequential(
        nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False),
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


def depth_decoder(cin: int, output_stride: int, out_channels: int = 1) -> nn.Sequential:
    """up_blocks until the output stride is spent (or less than 2 remains), then a 3x3 conv."""
    blocks: list[nn.Module] = []
    width = max(min(MAX_DECODER_WIDTH, cin // 2), MIN_DECODER_WIDTH)
    stride = output_stride
    while stride >= 2:
        blocks.append(up_block(cin, width))
        cin, width, stride = width, max(width // 2, MIN_DECODER_WIDTH), stride // 2
    blocks.append(nn.Conv2d(cin, out_channels, 3, padding=1))
    return nn.Sequential(*blocks)


class DepthNet(DenseNet):
    """A backbone and `decoder`, whose one output channel is the depth. The decoder keeps
    torch's default initialisation, as the DeepLab heads do."""

    def __init__(self, name: str, backbone: StagedNet, out_channels: int = 1) -> None:
        super().__init__(name, backbone)
        self.decoder = depth_decoder(self.stage_channels[-1], self.output_stride, out_channels)

    @property
    def head(self) -> nn.Module:
        return self.decoder


def depthnet(backbone: StagedNet) -> DepthNet:
    """The depth model on `backbone` (its classifier is dropped)."""
    return DepthNet(f"depthnet_{backbone.name}", backbone)

"""ImageNet ResNet-18/34/50/101 (He et al. 2016) as torchvision builds them (torchvision/models/
resnet.py, ResNet V1.5: the stride on the bottleneck's 3x3 conv), under torchvision's own
module names, so torchvision's state dicts (its downloaded `.pth` files included) load with
`strict=True` and the logits are torchvision's to the bit.

The module tree is torchvision's: conv1 bn1 relu maxpool layer1..layer4 fc (no `avgpool` module:
`forward_from` pools with the same function, and a module it never called would mislead hooks).
StagedNet's `stem`, `stages` and `classifier` are views onto those modules kept out of the module
tree (see `ImageNetResNet`), so every parameter has one name, torchvision's, in
`named_parameters()`, `state_dict()`, optimizers, DDP and `torch.func.functional_call`.

Taps: feats[0] is the stem after the max-pool (64 x 56 x 56 for a 224 input); feats[1..4] the
outputs of layer1..layer4. `preact_feats[1..4]` are those stage outputs before the closing ReLU
of their last block, as mdistiller's ImageNet ResNet (mdistiller/models/imagenet/resnet.py, whose
blocks leave that ReLU to the next block) returns them; `preact_feats[0]` is feats[0] itself (the
max-pooled map has no pre-activation of its own; mdistiller's feats[0] is taken before the pool).

Dilation (`dilate`, torchvision's `replace_stride_with_dilation`) trades a stage's stride for
dilated 3x3 convs, for dense prediction: torchvision's `_make_layer` rule, where a block that
opens a dilated stage convolves at the dilation its input had and the stage's later blocks at
the stage's. torchvision's BasicBlock refuses dilation; ours follows winycg/CIRKD's dilated
BasicBlockV1b (models/base_models/resnetv1b.py): the opening block's conv1 at the input's
dilation, its conv2 at the stage's. Undilated, every block is torchvision's.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from sdkd_core.models.base import Stage, StagedNet


def conv3x3(cin: int, cout: int, stride: int = 1, dilation: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 3, stride, padding=dilation, dilation=dilation, bias=False)


def conv1x1(cin: int, cout: int, stride: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, 1, stride, bias=False)


class BasicBlock(nn.Module):
    """torchvision's BasicBlock; with taps it reports the sum before the closing ReLU.

    `dilations`: (the dilation of the map the block receives, of the map it returns); conv1
    convolves at the first, conv2 at the second (CIRKD's dilated BasicBlock)."""

    expansion = 1
    takes_taps = True

    def __init__(self, cin: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None, dilations: tuple[int, int] = (1, 1)) -> None:
        super().__init__()
        self.conv1 = conv3x3(cin, planes, stride, dilations[0])
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = conv3x3(planes, planes, dilation=dilations[1])
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: Tensor, taps: dict[str, Tensor] | None = None) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        out = out + (x if self.downsample is None else self.downsample(x))
        return _close(out, self.relu, taps)


class Bottleneck(nn.Module):
    """torchvision's Bottleneck (stride on conv2); with taps it reports the sum before the ReLU.

    `dilations` as BasicBlock's; the one 3x3 conv, conv2, convolves at the input's dilation
    (torchvision's `dilation` argument, `previous_dilation` for the block opening a stage)."""

    expansion = 4
    takes_taps = True

    def __init__(self, cin: int, planes: int, stride: int = 1,
                 downsample: nn.Module | None = None, dilations: tuple[int, int] = (1, 1)) -> None:
        super().__init__()
        self.conv1 = conv1x1(cin, planes)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = conv3x3(planes, planes, stride, dilations[0])
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = conv1x1(planes, planes * self.expansion)
        self.bn3 = nn.BatchNorm2d(planes * self.expansion)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample
        self.stride = stride

    def forward(self, x: Tensor, taps: dict[str, Tensor] | None = None) -> Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        out = out + (x if self.downsample is None else self.downsample(x))
        return _close(out, self.relu, taps)


def _close(out: Tensor, relu: nn.ReLU, taps: dict[str, Tensor] | None) -> Tensor:
    if taps is None:
        return relu(out)
    taps["preact"] = out  # kept, so the ReLU must not overwrite it
    return F.relu(out)


Block = type[BasicBlock] | type[Bottleneck]
# Whether layer2, layer3, layer4 trade their stride for dilation (torchvision's
# replace_stride_with_dilation); (False, True, True) is output stride 8.
Dilate = tuple[bool, bool, bool]
NO_DILATION: Dilate = (False, False, False)


class ImageNetResNet(StagedNet):
    """torchvision's ResNet as a StagedNet: stem = conv1 bn1 relu maxpool, stages = layer1..4,
    classifier = fc; `dilate` as torchvision's `replace_stride_with_dilation`.

    `stem`, `stages` and `classifier` are properties over the registered torchvision modules:
    `stem` and `stages` build an unregistered container of those modules on each access (a few
    microseconds), so the parameters keep their one torchvision name each, and whatever the
    tree holds is what runs: `.to()`, `load_state_dict`, `functional_call`, `deepcopy`, and
    SyncBatchNorm conversion, which swaps `bn1` for a new module, all act on it. (A hook goes
    on a registered module, e.g. `layer4` = `stages[-1]`, not on the fresh `stem` container.)
    Modules are created and initialised in torchvision's order and way (StagedNet's init: He
    fan_out convs, identity BN, fc at nn.Linear's default, no zero_init_residual), so from the
    same seed the weights are torchvision's.
    """

    def __init__(self, name: str, block: Block, layers: list[int], num_classes: int,
                 in_channels: int = 3, dilate: Dilate = NO_DILATION) -> None:
        super().__init__(name)
        self.conv1 = nn.Conv2d(in_channels, 64, 7, 2, padding=3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, padding=1)
        cin, dilation = 64, 1
        for k, (planes, blocks, dilated) in enumerate(
                zip((64, 128, 256, 512), layers, (False, *dilate), strict=True)):
            stride, entry_dilation = (1 if k == 0 else 2), dilation
            if dilated:
                dilation, stride = dilation * stride, 1
            cout = planes * block.expansion
            # As torchvision's _make_layer: the projection is created before its block.
            downsample = (nn.Sequential(conv1x1(cin, cout, stride), nn.BatchNorm2d(cout))
                          if stride != 1 or cin != cout else None)
            stage = [block(cin, planes, stride, downsample, (entry_dilation, dilation))]
            stage += [block(cout, planes, dilations=(dilation, dilation))
                      for _ in range(1, blocks)]
            setattr(self, f"layer{k + 1}", Stage(*stage))
            cin = cout
        self.fc = nn.Linear(cin, num_classes)
        self._finish([64, *(planes * block.expansion for planes in (64, 128, 256, 512))])

    @property
    def stem(self) -> nn.Sequential:  # type: ignore[override]
        return nn.Sequential(self.conv1, self.bn1, self.relu, self.maxpool)

    @property
    def stages(self) -> nn.ModuleList:  # type: ignore[override]
        return nn.ModuleList([self.layer1, self.layer2, self.layer3, self.layer4])

    @property
    def classifier(self) -> nn.Linear:  # type: ignore[override]
        return self.fc


def resnet18(num_classes: int, in_channels: int = 3, dilate: Dilate = NO_DILATION
             ) -> ImageNetResNet:
    return ImageNetResNet("resnet18", BasicBlock, [2, 2, 2, 2], num_classes, in_channels, dilate)


def resnet34(num_classes: int, in_channels: int = 3, dilate: Dilate = NO_DILATION
             ) -> ImageNetResNet:
    return ImageNetResNet("resnet34", BasicBlock, [3, 4, 6, 3], num_classes, in_channels, dilate)


def resnet50(num_classes: int, in_channels: int = 3, dilate: Dilate = NO_DILATION
             ) -> ImageNetResNet:
    return ImageNetResNet("resnet50", Bottleneck, [3, 4, 6, 3], num_classes, in_channels, dilate)


def resnet101(num_classes: int, in_channels: int = 3, dilate: Dilate = NO_DILATION
              ) -> ImageNetResNet:
    return ImageNetResNet("resnet101", Bottleneck, [3, 4, 23, 3], num_classes, in_channels,
                          dilate)

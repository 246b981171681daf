"""Published RepDistiller/mdistiller teachers load into the zoo and compute the same logits.

The reference networks below re-implement RepDistiller's module names and forward passes
(HobbitLong/RepDistiller models/resnet.py, wrn.py, vgg.py, mobilenetv2.py, ShuffleNetv2.py) and
mdistiller's ImageNet MobileNetV1 (mdistiller/models/imagenet/mobilenetv1.py), written for this
test; nothing is imported from the reference repositories. The ImageNet ResNets' reference is
torchvision's own model, whose state dict they load as it is.
"""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
import torchvision
from torch import nn

from sdkd_core.models import CLASSIFICATION_MODEL_NAMES
from sdkd_core.models.published import load_teacher_checkpoint


def conv(cin: int, cout: int, k: int, stride: int = 1, groups: int = 1) -> nn.Conv2d:
    return nn.Conv2d(cin, cout, k, stride, k // 2, groups=groups, bias=False)


def shuffle(x: torch.Tensor) -> torch.Tensor:
    n, c, h, w = x.size()
    return x.view(n, 2, c // 2, h, w).permute(0, 2, 1, 3, 4).reshape(n, c, h, w)


class ResBlock(nn.Module):  # resnet.py BasicBlock
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = conv(cin, cout, 3, stride), nn.BatchNorm2d(cout)
        self.conv2, self.bn2 = conv(cout, cout, 3), nn.BatchNorm2d(cout)
        self.downsample = (nn.Sequential(conv(cin, cout, 1, stride), nn.BatchNorm2d(cout))
                           if stride != 1 or cin != cout else None)

    def forward(self, x):
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x)))))
        return F.relu(out + (x if self.downsample is None else self.downsample(x)))


class RefResNet(nn.Module):  # resnet.py ResNet(depth, num_filters, 'basicblock')
    def __init__(self, depth: int, filters: list[int], num_classes: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = conv(3, filters[0], 3), nn.BatchNorm2d(filters[0])
        cin, n = filters[0], (depth - 2) // 6
        for i, (cout, stride) in enumerate(zip(filters[1:], (1, 2, 2), strict=True)):
            blocks = [ResBlock(cin if b == 0 else cout, cout, stride if b == 0 else 1)
                      for b in range(n)]
            setattr(self, f"layer{i + 1}", nn.Sequential(*blocks))
            cin = cout
        self.avgpool, self.fc = nn.AvgPool2d(8), nn.Linear(filters[3], num_classes)

    def forward(self, x):
        x = self.layer3(self.layer2(self.layer1(F.relu(self.bn1(self.conv1(x))))))
        return self.fc(self.avgpool(x).view(x.size(0), -1))


class WrnBlock(nn.Module):  # wrn.py BasicBlock (pre-activation; shortcut reads relu(bn1(x)))
    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.bn1, self.conv1 = nn.BatchNorm2d(cin), conv(cin, cout, 3, stride)
        self.bn2, self.conv2 = nn.BatchNorm2d(cout), conv(cout, cout, 3)
        self.equal = cin == cout
        self.convShortcut = None if self.equal else conv(cin, cout, 1, stride)

    def forward(self, x):
        a = F.relu(self.bn1(x))
        out = self.conv2(F.relu(self.bn2(self.conv1(a))))
        return out + (x if self.equal else self.convShortcut(a))


class NetworkBlock(nn.Module):
    def __init__(self, n: int, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.layer = nn.Sequential(*[WrnBlock(cin if i == 0 else cout, cout,
                                              stride if i == 0 else 1) for i in range(n)])

    def forward(self, x):
        return self.layer(x)


class RefWRN(nn.Module):  # wrn.py WideResNet(depth, num_classes, widen_factor)
    def __init__(self, depth: int, widen: int, num_classes: int) -> None:
        super().__init__()
        ch, n = [16, 16 * widen, 32 * widen, 64 * widen], (depth - 4) // 6
        self.conv1 = conv(3, 16, 3)
        self.block1 = NetworkBlock(n, ch[0], ch[1], 1)
        self.block2 = NetworkBlock(n, ch[1], ch[2], 2)
        self.block3 = NetworkBlock(n, ch[2], ch[3], 2)
        self.bn1, self.fc = nn.BatchNorm2d(ch[3]), nn.Linear(ch[3], num_classes)

    def forward(self, x):
        out = F.relu(self.bn1(self.block3(self.block2(self.block1(self.conv1(x))))))
        return self.fc(F.avg_pool2d(out, 8).view(x.size(0), -1))


class RefVGG(nn.Module):  # vgg.py VGG(cfg, batch_norm=True): blocks end in BN, ReLU in forward
    def __init__(self, cfg: list[list[int]], num_classes: int) -> None:
        super().__init__()
        cin = 3
        for k, widths in enumerate(cfg):
            layers: list[nn.Module] = []
            for w in widths:
                layers += [nn.Conv2d(cin, w, 3, padding=1), nn.BatchNorm2d(w), nn.ReLU()]
                cin = w
            setattr(self, f"block{k}", nn.Sequential(*layers[:-1]))
        self.pool = nn.MaxPool2d(2, 2)
        self.classifier = nn.Linear(512, num_classes)

    def forward(self, x):
        h = x.shape[2]
        x = F.relu(self.block0(x))
        for k in (1, 2, 3):
            x = F.relu(getattr(self, f"block{k}")(self.pool(x)))
        x = F.relu(self.block4(self.pool(x) if h == 64 else x))  # pool3 only for 64-pixel inputs
        return self.classifier(F.adaptive_avg_pool2d(x, 1).view(x.size(0), -1))


class IR(nn.Module):  # mobilenetv2.py InvertedResidual (expansion conv kept even for t == 1)
    def __init__(self, cin: int, cout: int, stride: int, t: int) -> None:
        super().__init__()
        hid, self.res = cin * t, stride == 1 and cin == cout
        self.conv = nn.Sequential(conv(cin, hid, 1), nn.BatchNorm2d(hid), nn.ReLU(),
                                  conv(hid, hid, 3, stride, hid), nn.BatchNorm2d(hid), nn.ReLU(),
                                  conv(hid, cout, 1), nn.BatchNorm2d(cout))

    def forward(self, x):
        return x + self.conv(x) if self.res else self.conv(x)


class RefMobileHalf(nn.Module):  # mobilenetv2.py mobile_half = MobileNetV2(T=6, width_mult=0.5)
    ROWS = [(1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
            (6, 160, 3, 2), (6, 320, 1, 1)]

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.conv1 = nn.Sequential(conv(3, 16, 3, 2), nn.BatchNorm2d(16), nn.ReLU())
        self.blocks, cin = nn.ModuleList(), 16
        for t, c, n, s in self.ROWS:
            cout = int(c * 0.5)
            self.blocks.append(nn.Sequential(*[IR(cin if i == 0 else cout, cout,
                                                  s if i == 0 else 1, t) for i in range(n)]))
            cin = cout
        self.conv2 = nn.Sequential(conv(cin, 1280, 1), nn.BatchNorm2d(1280), nn.ReLU())
        self.classifier = nn.Sequential(nn.Linear(1280, num_classes))
        self.avgpool = nn.AvgPool2d(32 // 16, ceil_mode=True)

    def forward(self, x):
        out = self.conv1(x)
        for block in self.blocks:
            out = block(out)
        return self.classifier(self.avgpool(self.conv2(out)).view(x.size(0), -1))


def conv_bn(cin, cout, k, stride=1, groups=1):
    return conv(cin, cout, k, stride, groups), nn.BatchNorm2d(cout)


class Down(nn.Module):  # ShuffleNetv2.py DownBlock
    def __init__(self, cin: int, cout: int) -> None:
        super().__init__()
        mid = cout // 2
        self.conv1, self.bn1 = conv_bn(cin, cin, 3, 2, cin)
        self.conv2, self.bn2 = conv_bn(cin, mid, 1)
        self.conv3, self.bn3 = conv_bn(cin, mid, 1)
        self.conv4, self.bn4 = conv_bn(mid, mid, 3, 2, mid)
        self.conv5, self.bn5 = conv_bn(mid, mid, 1)

    def forward(self, x):
        left = F.relu(self.bn2(self.conv2(self.bn1(self.conv1(x)))))
        right = self.bn4(self.conv4(F.relu(self.bn3(self.conv3(x)))))
        return shuffle(torch.cat([left, F.relu(self.bn5(self.conv5(right)))], 1))


class Unit(nn.Module):  # ShuffleNetv2.py BasicBlock (split ratio 0.5)
    def __init__(self, c: int) -> None:
        super().__init__()
        self.c = c // 2
        self.conv1, self.bn1 = conv_bn(self.c, self.c, 1)
        self.conv2, self.bn2 = conv_bn(self.c, self.c, 3, 1, self.c)
        self.conv3, self.bn3 = conv_bn(self.c, self.c, 1)

    def forward(self, x):
        x1, x2 = x[:, : self.c], x[:, self.c :]
        out = self.bn2(self.conv2(F.relu(self.bn1(self.conv1(x2)))))
        return shuffle(torch.cat([x1, F.relu(self.bn3(self.conv3(out)))], 1))


class RefShuffleV2(nn.Module):  # ShuffleNetv2.py ShuffleV2 = ShuffleNetV2(net_size=1)
    def __init__(self, num_classes: int) -> None:
        super().__init__()
        self.conv1, self.bn1 = conv_bn(3, 24, 1)
        cin = 24
        for i, (cout, n) in enumerate(zip((116, 232, 464), (3, 7, 3), strict=True)):
            setattr(self, f"layer{i + 1}",
                    nn.Sequential(Down(cin, cout), *[Unit(cout) for _ in range(n)]))
            cin = cout
        self.conv2, self.bn2 = conv_bn(464, 1024, 1)
        self.linear = nn.Linear(1024, num_classes)

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.layer3(self.layer2(self.layer1(out)))
        out = F.avg_pool2d(F.relu(self.bn2(self.conv2(out))), 4)
        return self.linear(out.view(out.size(0), -1))


class RefMobileNetV1(nn.Module):  # mdistiller imagenet/mobilenetv1.py MobileNetV1
    WIDTHS = [(32, 64, 1), (64, 128, 2), (128, 128, 1), (128, 256, 2), (256, 256, 1),
              (256, 512, 2), *[(512, 512, 1)] * 5, (512, 1024, 2), (1024, 1024, 1)]

    def __init__(self, num_classes: int) -> None:
        super().__init__()
        blocks = [nn.Sequential(conv(3, 32, 3, 2), nn.BatchNorm2d(32), nn.ReLU())]
        blocks += [nn.Sequential(conv(cin, cin, 3, s, cin), nn.BatchNorm2d(cin), nn.ReLU(),
                                 conv(cin, cout, 1), nn.BatchNorm2d(cout), nn.ReLU())
                   for cin, cout, s in self.WIDTHS]
        self.model = nn.Sequential(*blocks)
        self.fc = nn.Linear(1024, num_classes)  # mdistiller's is fixed at 1000 outputs

    def forward(self, x):  # mdistiller's AvgPool2d(7) fits 224 inputs only: pool globally
        return self.fc(F.adaptive_avg_pool2d(self.model(x), 1).flatten(1))


NARROW, WIDE = [16, 16, 32, 64], [32, 64, 128, 256]
REFERENCES = {
    **{f"resnet{d}": (lambda nc, d=d: RefResNet(d, NARROW, nc)) for d in (8, 14, 20, 32, 56, 110)},
    "resnet8x4": lambda nc: RefResNet(8, WIDE, nc),
    "resnet32x4": lambda nc: RefResNet(32, WIDE, nc),
    "wrn_16_2": lambda nc: RefWRN(16, 2, nc),
    "wrn_40_2": lambda nc: RefWRN(40, 2, nc),
    "vgg8": lambda nc: RefVGG([[64], [128], [256], [512], [512]], nc),
    "vgg13": lambda nc: RefVGG([[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]], nc),
    "MobileNetV2": RefMobileHalf,
    "ShuffleV2": RefShuffleV2,
    **{f"resnet{d}": (lambda nc, d=d: getattr(torchvision.models, f"resnet{d}")(num_classes=nc))
       for d in (18, 34, 50)},
    "MobileNetV1": RefMobileNetV1,
}


def reference(arch: str, num_classes: int, seed: int = 0) -> nn.Module:
    """A reference net with random weights and BN statistics of real (random) batches."""
    torch.manual_seed(seed)
    net = REFERENCES[arch](num_classes)
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    for bn in bns:
        bn.momentum = 1.0  # running stats := one batch's: non-trivial yet well scaled
    with torch.no_grad():
        net.train()(torch.randn(4, 3, 32, 32))
        for bn in bns:
            bn.momentum = 0.1
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.normal_(0.0, 0.2)
    return net.eval()


# Batch 1-2 convolutions: a second thread gains nothing and slows a busy machine down.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_every_zoo_architecture_has_a_reference():
    assert set(REFERENCES) == set(CLASSIFICATION_MODEL_NAMES)


@pytest.mark.parametrize("arch", CLASSIFICATION_MODEL_NAMES)
def test_repdistiller_checkpoint_gives_the_same_logits(tmp_path, arch):
    net = reference(arch, 100)
    path = tmp_path / "ckpt_epoch_240.pth"
    torch.save({"epoch": 240, "model": net.state_dict(), "accuracy": torch.tensor(72.3)}, path)
    model = load_teacher_checkpoint(path, arch, 100, 3)
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        expected, got = net(x), model(x).logits
    assert expected.std() > 0.1  # the comparison is not between near-constant logits
    torch.testing.assert_close(got, expected, rtol=1e-5, atol=1e-5)

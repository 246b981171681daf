"""The ImageNet-scale zoo: torchvision's ResNet-18/34/50 (module names, sizes, initial weights,
logits, its checkpoints) and mdistiller's MobileNetV1 (size, feature taps), their stage views,
and the feature methods on the pairs resnet34->resnet18 and resnet50->MobileNetV1.

torchvision is the reference for the ResNets and is imported; mdistiller's MobileNetV1
(mdistiller/models/imagenet/mobilenetv1.py) is re-written below, its layers only.
"""

from __future__ import annotations

import copy

import pytest
import torch
import torchvision
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

from sdkd_core.distillers import build_distiller
from sdkd_core.errors import UserError
from sdkd_core.loader import example_inputs
from sdkd_core.models import build_model
from sdkd_core.models.published import load_teacher_checkpoint
from sdkd_core.proxy_stats import ProxyStatistics

RESNETS = ("resnet18", "resnet34", "resnet50")
# Parameters at 1000 classes: torchvision.models.resnetN(), and mdistiller's MobileNetV1 (its fc
# is fixed at 1000 outputs): stem 3*32*9 + 2*32, each conv_dw(i, o) 9i + 2i + i*o + 2o over the
# 13 blocks, fc 1024*1000 + 1000 = 4,231,976.
PARAMS = {"resnet18": 11_689_512, "resnet34": 21_797_672, "resnet50": 25_557_032,
          "MobileNetV1": 4_231_976}
# (channels, side) of feats[0..4] for a 224x224 input.
SHAPES_224 = {
    "resnet18": [(64, 56), (64, 56), (128, 28), (256, 14), (512, 7)],
    "resnet34": [(64, 56), (64, 56), (128, 28), (256, 14), (512, 7)],
    "resnet50": [(64, 56), (256, 56), (512, 28), (1024, 14), (2048, 7)],
    "MobileNetV1": [(32, 112), (128, 56), (256, 28), (512, 14), (1024, 7)],
}
# mdistiller's conv_dw blocks (in, out, stride), model[1..13]; feats after model[3, 5, 11, 13].
V1_BLOCKS = [(32, 64, 1), (64, 128, 2), (128, 128, 1), (128, 256, 2), (256, 256, 1),
             (256, 512, 2), *[(512, 512, 1)] * 5, (512, 1024, 2), (1024, 1024, 1)]
V1_FEATS = (3, 5, 11, 13)


# Batch 1-2 convolutions: a second thread gains nothing and slows a busy machine down.
pytestmark = pytest.mark.usefixtures("one_torch_thread")


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def torchvision_resnet(name: str, num_classes: int) -> nn.Module:
    return getattr(torchvision.models, name)(num_classes=num_classes)


class MdistillerMobileNetV1(nn.Module):
    """mdistiller's MobileNetV1 layers under its names (`model.N.M`, `fc`); its AvgPool2d(7)
    fits 224 inputs only, so the forward (for BN statistics) pools globally."""

    def __init__(self) -> None:
        super().__init__()
        self.model = mdistiller_layers()
        self.fc = nn.Linear(1024, 1000)

    def forward(self, x):
        return self.fc(F.adaptive_avg_pool2d(self.model[:-1](x), 1).flatten(1))


def mdistiller_layers() -> nn.Sequential:
    def conv_bn(inp, oup, stride):
        return nn.Sequential(nn.Conv2d(inp, oup, 3, stride, 1, bias=False), nn.BatchNorm2d(oup),
                             nn.ReLU(inplace=True))

    def conv_dw(inp, oup, stride):
        return nn.Sequential(nn.Conv2d(inp, inp, 3, stride, 1, groups=inp, bias=False),
                             nn.BatchNorm2d(inp), nn.ReLU(inplace=True),
                             nn.Conv2d(inp, oup, 1, 1, 0, bias=False), nn.BatchNorm2d(oup),
                             nn.ReLU(inplace=True))

    return nn.Sequential(conv_bn(3, 32, 2), *[conv_dw(*b) for b in V1_BLOCKS], nn.AvgPool2d(7))


def settle_batchnorm(net: nn.Module, side: int = 64) -> nn.Module:
    """Non-trivial BN statistics and affine weights (one random batch's), then eval mode."""
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        for bn in bns:
            bn.momentum = 1.0
        net.train()(torch.randn(2, 3, side, side))
        for bn in bns:
            bn.momentum = 0.1
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.normal_(0.0, 0.2)
    return net.eval()


@pytest.mark.parametrize("name", RESNETS)
def test_resnet_names_shapes_and_size_are_torchvisions(name):
    with torch.device("meta"):  # names and shapes only
        ours, theirs = build_model(name, 1000), torchvision_resnet(name, 1000)
    shapes = {k: v.shape for k, v in ours.state_dict().items()}
    assert list(shapes) == list(theirs.state_dict())
    assert shapes == {k: v.shape for k, v in theirs.state_dict().items()}
    assert count(ours) == count(theirs) == PARAMS[name]
    # Each parameter once, under torchvision's name: the stage views are not registered.
    named = [n for n, _ in ours.named_parameters(remove_duplicate=False)]
    assert named == [n for n, _ in theirs.named_parameters()]
    assert ours.stem[0] is ours.conv1 and ours.classifier is ours.fc
    assert list(ours.stages) == [ours.layer1, ours.layer2, ours.layer3, ours.layer4]


def test_resnet_from_the_same_seed_has_torchvisions_initial_weights():
    torch.manual_seed(0)
    ours = build_model("resnet18", 10)
    torch.manual_seed(0)
    theirs = torchvision_resnet("resnet18", 10)
    assert all(torch.equal(v, theirs.state_dict()[k]) for k, v in ours.state_dict().items())


def test_mobilenetv1_has_mdistillers_size():
    with torch.device("meta"):
        ours, theirs = build_model("MobileNetV1", 1000), MdistillerMobileNetV1()
    assert count(ours) == count(theirs) == PARAMS["MobileNetV1"]


def test_mobilenetv1_taps_are_mdistillers_features(tmp_path):
    torch.manual_seed(0)
    ref = settle_batchnorm(MdistillerMobileNetV1())
    torch.save({"model": ref.state_dict()}, tmp_path / "mobilenetv1.pth")
    ours = load_teacher_checkpoint(tmp_path / "mobilenetv1.pth", "MobileNetV1", 1000, 3)
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        out = ours(x, preact=True)
        h, pre = x, []
        for k, block in enumerate(ref.model[:14]):
            if k in V1_FEATS:
                pre.append(block[:-1](h))  # mdistiller's preact_feats: the block before its ReLU
            h = block(h)
    assert all(torch.equal(a, b) for a, b in zip(out.preact_feats[1:], pre, strict=True))
    assert all(torch.equal(a, F.relu(b)) for a, b in zip(out.feats[1:], pre, strict=True))


@pytest.mark.parametrize(("name", "classes"), [("resnet18", 1000), ("resnet34", 10),
                                               ("resnet50", 10)])
def test_torchvision_state_dict_loads_exactly_and_gives_its_logits(tmp_path, name, classes):
    torch.manual_seed(0)
    theirs = settle_batchnorm(torchvision_resnet(name, classes))
    path = tmp_path / f"{name}.pth"
    torch.save(theirs.state_dict(), path)  # what torchvision's downloaded weights are
    model = load_teacher_checkpoint(path, name, classes, 3)
    assert not model.training and not any(p.requires_grad for p in model.parameters())
    state = model.state_dict()
    assert all(torch.equal(state[k], v) for k, v in theirs.state_dict().items())
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected, got = theirs(x), model(x).logits
    assert expected.std() > 0.1 and torch.equal(got, expected)


def test_torchvision_checkpoint_of_other_classes_or_depth_is_one_line(tmp_path):
    path = tmp_path / "resnet18-imagenet.pth"
    torch.save(torchvision_resnet("resnet18", 1000).state_dict(), path)
    with pytest.raises(UserError) as err:
        load_teacher_checkpoint(path, "resnet18", 10, 3)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{path}: "), message
    for fragment in ("classifies 1000 classes (fc.weight [1000, 512])", "the dataset has 10",
                     "1000-class dataset (imagenet)", "give no checkpoint"):
        assert fragment in message, message
    with pytest.raises(UserError) as err:
        load_teacher_checkpoint(path, "resnet34", 10, 3)
    message = str(err.value)
    assert "\n" not in message, message
    for fragment in ("not a resnet34 checkpoint for 10 classes", "(torchvision's names)",
                     "missing key(s) such as layer1.2.conv1.weight",
                     "it is a resnet18 checkpoint for 1000 classes and 3 input channels"):
        assert fragment in message, message


@pytest.mark.parametrize("name", sorted(SHAPES_224))
def test_feature_shapes_at_224(name):
    with torch.device("meta"):  # shapes without the arithmetic
        model = build_model(name, 10).eval()
        out = model(torch.zeros(2, 3, 224, 224), preact=True)
    assert [(f.shape[1], f.shape[-1]) for f in out.feats] == SHAPES_224[name]
    assert all(f.shape[-2] == f.shape[-1] for f in out.feats)
    assert model.stage_channels == [c for c, _ in SHAPES_224[name]]
    assert [p.shape for p in out.preact_feats] == [f.shape for f in out.feats]
    assert out.pooled.shape == (2, SHAPES_224[name][-1][0]) and out.logits.shape == (2, 10)


@pytest.mark.parametrize("name", ["resnet18", "resnet50", "MobileNetV1"])
def test_forward_from_every_tap_reproduces_the_logits(name):
    torch.manual_seed(0)
    model = settle_batchnorm(build_model(name, 10))
    with torch.no_grad():
        out = model(torch.randn(1, 3, 64, 64), preact=True)
        assert len(out.feats) == len(out.preact_feats) == 5
        assert out.preact_feats[0] is out.feats[0]
        for pre, feat in zip(out.preact_feats[1:], out.feats[1:], strict=True):
            assert pre.min() < 0 and torch.equal(F.relu(pre), feat)
        for i, feat in enumerate(out.feats):
            resumed = model.forward_from(i, feat, preact=True)
            assert torch.equal(resumed.logits, out.logits)
            assert len(resumed.preact_feats) == 5 - i
            assert torch.equal(model.forward_from(i, feat).logits, out.logits)


def test_resnet_stage_views_follow_the_registered_modules():
    torch.manual_seed(0)
    model = build_model("resnet18", 10)
    params = list(model.parameters())
    assert len(params) == len({id(p) for p in params}) == 62
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    assert sum(len(g["params"]) for g in optimizer.param_groups) == len(params)
    # A copy's views are the copy's modules; a module swapped into the tree is what runs.
    twin = copy.deepcopy(model).eval()
    assert twin.stem[0] is twin.conv1 and twin.stem[0] is not model.conv1
    assert twin.stages[3] is twin.layer4 and twin.classifier is twin.fc
    synced = nn.SyncBatchNorm.convert_sync_batchnorm(copy.deepcopy(model))
    assert isinstance(synced.bn1, nn.SyncBatchNorm) and synced.stem[1] is synced.bn1
    assert isinstance(synced.stages[0][0].bn1, nn.SyncBatchNorm)
    # functional_call substitutes weights by torchvision's names, and the views run them.
    x = torch.randn(1, 3, 32, 32)
    state = {**dict(twin.named_parameters()), **dict(twin.named_buffers())}
    with torch.no_grad():
        plain = twin(x).logits
        assert torch.equal(functional_call(twin, state, (x,)).logits, plain)
        zero_fc = {**state, "fc.weight": torch.zeros_like(twin.fc.weight)}
        assert torch.equal(functional_call(twin, zero_fc, (x,)).logits[0], twin.fc.bias)
        other = {**state, "conv1.weight": state["conv1.weight"].flip(0)}
        assert not torch.equal(functional_call(twin, other, (x,)).logits, plain)


def test_proxy_statistics_use_the_resnets_own_buffer_names():
    model = build_model("resnet18", 10)
    stats = ProxyStatistics(model, 2)
    assert stats.names and all(n.startswith(("layer3.", "layer4.")) for n in stats.names)
    buffers = dict(model.named_buffers())
    assert all(torch.equal(v, buffers[k]) for k, v in stats.by_name().items())


@pytest.mark.parametrize(("teacher", "student"), [("resnet34", "resnet18"),
                                                  ("resnet50", "MobileNetV1")])
def test_feature_methods_step_on_imagenet_pairs(teacher, student):
    labels = torch.arange(20) % 10
    index = torch.tensor([3, 8])
    x, y = torch.randn(2, 3, 64, 64), labels[index]
    for method in ("sdkd", "kd", "fitnet", "at", "dkd", "reviewkd", "shake"):
        torch.manual_seed(0)
        m = build_distiller(method, build_model(student, 10), build_model(teacher, 10), {})
        m.train().bind_data(labels)
        m.begin_epoch(1, 2)  # past SDKD's phase boundary: every term runs
        if method == "sdkd":  # the proxy's own statistics replace buffers the student has
            names = {n for n, _ in m._views[0].named_buffers()}
            assert m.proxy_stats.names and set(m.proxy_stats.by_name("net.")) <= names
        given = example_inputs(x, index)
        _, losses = m(x, y, 1, **{k: given[k] for k in m.batch_inputs})
        sum(losses.values()).backward()
        assert all(torch.isfinite(v) for v in losses.values()), method
        assert all(p.grad is not None for p in m.student.parameters()), method

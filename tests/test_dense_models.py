"""Dense-prediction models: DeepLabV3 (torchvision's ResNet-50/101 models under their names and
weights; dilated ResNet-18/34; narrow heads on the CPU zoo) and the depth encoder-decoder. Their
logits are maps at the input's size, and `forward_from` reproduces them from every feature map.

torchvision is the reference for DeepLabV3-ResNet50/101 and is imported.
"""

from __future__ import annotations

import pytest
import torch
import torchvision
from torch import nn
from torch.func import functional_call
from torch.nn import functional as F

from sdkd_core.errors import UserError
from sdkd_core.models import (
    CLASSIFICATION_MODEL_NAMES,
    DENSE_MODEL_NAMES,
    MODEL_NAMES,
    DenseNet,
    UnknownModelError,
    build_model,
    is_dense_model,
)
from sdkd_core.models.deeplab import load_torchvision_deeplab
from sdkd_core.models.published import load_teacher_checkpoint
from sdkd_core.proxy_stats import ProxyStatistics

# Parameters of torchvision's deeplabv3_resnet50(num_classes=21, aux_loss=False), which is its
# aux_loss=True model (42,004,074) less the FCNHead (2,365,205).
DEEPLAB_R50_PARAMS_21 = 39_638_869
# A few of each family and kind of backbone (dilated torchvision ResNet; CIFAR ResNet; WRN, whose
# closing BN-ReLU runs before the head; stride-16 MobileNetV2), for the tests that compute.
SAMPLE = ("deeplabv3_resnet8", "deeplabv3_wrn_16_2", "deeplabv3_resnet18", "depthnet_resnet8x4",
          "depthnet_MobileNetV2", "depthnet_resnet18")

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def count(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def outputs(name: str) -> int:
    return 1 if name.startswith("depthnet_") else 5


def settle_batchnorm(net: nn.Module, x: torch.Tensor) -> nn.Module:
    """Non-trivial BN statistics and affine weights (one batch's), then eval mode."""
    bns = [m for m in net.modules() if isinstance(m, nn.BatchNorm2d)]
    with torch.no_grad():
        for bn in bns:
            bn.momentum = 1.0
        net.train()(x)
        for bn in bns:
            bn.momentum = 0.1
            bn.weight.uniform_(0.5, 1.5)
            bn.bias.normal_(0.0, 0.2)
    return net.eval()


def torchvision_deeplab(arch: str, num_classes: int, aux: bool) -> nn.Module:
    build = getattr(torchvision.models.segmentation, f"deeplabv3_{arch}")
    return build(weights=None, weights_backbone=None, num_classes=num_classes, aux_loss=aux)


@pytest.mark.parametrize("name", DENSE_MODEL_NAMES)
def test_logits_are_maps_at_the_input_size(name):
    with torch.device("meta"):  # shapes without the arithmetic
        model = build_model(name, outputs(name), 1).eval()
        side = 2 * model.output_stride * 4
        out = model(torch.zeros(2, 1, side, side + model.output_stride), preact=True)
    assert isinstance(model, DenseNet) and is_dense_model(name)
    assert out.logits.shape == (2, outputs(name), side, side + model.output_stride)
    assert model.num_classes == outputs(name) and model.in_channels == 1
    assert len(out.feats) == len(out.preact_feats) == model.num_stages + 1
    assert [f.shape[1] for f in out.feats] == model.stage_channels
    assert [side // f.shape[-2] for f in out.feats] == list(model.feat_strides)
    assert out.pooled.shape == (2, model.stage_channels[-1])


@pytest.mark.parametrize("name", ["deeplabv3_resnet18", "deeplabv3_resnet50",
                                  "depthnet_resnet101"])
def test_dilated_resnets_have_output_stride_8(name):
    with torch.device("meta"):
        model = build_model(name, outputs(name)).eval()
        out = model(torch.zeros(1, 3, 64, 64))
    assert [f.shape[-1] for f in out.feats] == [16, 16, 8, 8, 8]
    assert model.feat_strides == (4, 4, 8, 8, 8) and model.output_stride == 8


def test_dilated_basic_blocks_follow_cirkd():
    """An opening block convolves at its input's dilation, then at its stage's."""
    backbone = build_model("deeplabv3_resnet18", 5).backbone
    dilations = [(b.conv1.dilation[0], b.conv2.dilation[0])
                 for layer in (backbone.layer3, backbone.layer4) for b in layer]
    assert dilations == [(1, 2), (2, 2), (2, 4), (4, 4)]
    assert all(b.conv1.padding == b.conv1.dilation and b.conv2.padding == b.conv2.dilation
               for layer in (backbone.layer3, backbone.layer4) for b in layer)
    assert backbone.layer3[0].downsample[0].stride == (1, 1)


@pytest.mark.parametrize("name", SAMPLE)
def test_forward_from_every_map_reproduces_the_logits(name):
    torch.manual_seed(0)
    x = torch.randn(2, 3, 32, 32)
    model = settle_batchnorm(build_model(name, outputs(name)), x)
    with torch.no_grad():
        out = model(x, preact=True)
        assert torch.equal(model.forward_from(0, model.stem(x)).logits, out.logits)
        assert out.logits.std() > 0.01
        for i, feat in enumerate(out.feats):
            resumed = model.forward_from(i, feat, preact=True)
            assert torch.equal(resumed.logits, out.logits), i
            assert torch.equal(resumed.pooled, out.pooled), i
            assert torch.equal(model.forward_from(i, feat).logits, out.logits), i
            assert all(torch.equal(a, b) for a, b in
                       zip(resumed.preact_feats[1:], out.preact_feats[i + 1:], strict=True))


def test_forward_is_forward_from_the_stem_in_training_too():
    model = build_model("deeplabv3_resnet8", 5).train()
    x = torch.randn(2, 3, 16, 16)
    torch.manual_seed(1)  # the ASPP's dropout draws alike in both passes
    full = model(x).logits
    torch.manual_seed(1)
    assert torch.equal(model.forward_from(0, model.stem(x)).logits, full)


def test_forward_from_a_fused_map_gives_logits_at_the_input_size():
    """The SDKD proxy's case: a map the model never made, shaped like feats[i]."""
    model = build_model("deeplabv3_resnet18", 5).eval()
    with torch.no_grad():
        for i, (channels, stride) in enumerate(zip(model.stage_channels, model.feat_strides,
                                                   strict=True)):
            h = torch.randn(1, channels, 48 // stride, 40 // stride)
            assert model.forward_from(i, h).logits.shape == (1, 5, 48, 40)


def test_input_sides_must_be_multiples_of_the_output_stride():
    model = build_model("deeplabv3_resnet8", 5)
    with pytest.raises(ValueError, match=r"multiples of 4 .* got 30x32"):
        model(torch.randn(2, 3, 30, 32))
    with pytest.raises(ValueError, match="stage index"):
        model.forward_from(4, torch.randn(1, 64, 8, 8))


def test_torchvision_deeplabv3_resnet50_loads_and_gives_its_logits(tmp_path):
    torch.manual_seed(0)
    theirs = settle_batchnorm(torchvision_deeplab("resnet50", 21, aux=True),
                              torch.randn(2, 3, 64, 64))
    model = load_torchvision_deeplab(build_model("deeplabv3_resnet50", 21), theirs.state_dict())
    model.eval()
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        expected, got = theirs(x)["out"], model(x).logits
    assert expected.shape == (1, 21, 64, 64) and expected.std() > 0.1
    assert torch.equal(got, expected)
    # As a teacher checkpoint: torchvision's file (a plain state dict) as it is.
    torch.save(theirs.state_dict(), tmp_path / "deeplabv3_resnet50_coco.pth")
    teacher = load_teacher_checkpoint(tmp_path / "deeplabv3_resnet50_coco.pth",
                                      "deeplabv3_resnet50", 21, 3)
    assert not teacher.training and not any(p.requires_grad for p in teacher.parameters())
    assert all(torch.equal(v, theirs.state_dict()[k]) for k, v in teacher.state_dict().items())


def test_a_dense_teacher_checkpoint_loads_under_its_own_names(tmp_path):
    torch.manual_seed(0)
    x = torch.randn(2, 1, 16, 16)
    model = settle_batchnorm(build_model("depthnet_wrn_16_2", 1, 1), x)
    torch.save(model.state_dict(), tmp_path / "teacher.pt")
    teacher = load_teacher_checkpoint(tmp_path / "teacher.pt", "depthnet_wrn_16_2", 1, 1)
    with torch.no_grad():
        assert torch.equal(teacher(x).logits, model(x).logits)
    with pytest.raises(UserError) as err:
        load_teacher_checkpoint(tmp_path / "teacher.pt", "depthnet_wrn_40_2", 1, 1)
    message = str(err.value)
    assert "\n" not in message and message.startswith(f"{tmp_path / 'teacher.pt'}: "), message
    assert "not a depthnet_wrn_40_2 state dict" in message and "missing key(s)" in message


def test_deeplabv3_resnet50_is_torchvisions_without_aux():
    """Names, shapes and size; and from the same seed, the same initial weights."""
    torch.manual_seed(0)
    theirs = torchvision_deeplab("resnet50", 21, aux=False)
    torch.manual_seed(0)
    ours = build_model("deeplabv3_resnet50", 21)
    state = ours.state_dict()
    assert list(state) == list(theirs.state_dict())
    assert all(torch.equal(state[k], v) for k, v in theirs.state_dict().items())
    assert count(ours) == count(theirs) == DEEPLAB_R50_PARAMS_21
    with torch.device("meta"):
        with_aux = torchvision_deeplab("resnet50", 21, aux=True)
    assert count(with_aux) - count(with_aux.aux_classifier) == DEEPLAB_R50_PARAMS_21


def test_deeplabv3_resnet101_names_and_size_are_torchvisions():
    with torch.device("meta"):
        ours, theirs = build_model("deeplabv3_resnet101", 21), torchvision_deeplab(
            "resnet101", 21, aux=True)
    theirs_state = {k: v.shape for k, v in theirs.state_dict().items()
                    if not k.startswith("aux_classifier.")}
    assert {k: v.shape for k, v in ours.state_dict().items()} == theirs_state
    assert count(ours) == count(theirs) - count(theirs.aux_classifier)


def test_a_checkpoint_of_other_classes_or_depth_is_one_line():
    with torch.device("meta"):
        tv21 = torchvision_deeplab("resnet50", 21, aux=True).state_dict()
        tv101 = torchvision_deeplab("resnet101", 19, aux=False).state_dict()
        model = build_model("deeplabv3_resnet50", 19)
    with pytest.raises(UserError) as err:
        load_torchvision_deeplab(model, tv21)
    message = str(err.value)
    assert "\n" not in message, message
    for fragment in ("predicts 21 classes (classifier.4.weight [21, 256, 1, 1])",
                     "built for 19", "num_classes=21"):
        assert fragment in message, message
    with pytest.raises(UserError) as err:
        load_torchvision_deeplab(model, tv101)
    message = str(err.value)
    assert "\n" not in message and "deeplabv3_resnet50" in message, message
    assert "306 unexpected key(s) such as backbone.layer3.6.conv1.weight" in message, message


@pytest.mark.parametrize("name", ["deeplabv3_wrn_16_2", "depthnet_resnet8"])
def test_a_dense_loss_reaches_every_parameter(name):
    torch.manual_seed(0)
    model = build_model(name, outputs(name), 1).train()
    logits = model(torch.randn(2, 1, 32, 32)).logits
    if name.startswith("deeplabv3_"):
        loss = F.cross_entropy(logits, torch.randint(0, 5, (2, 32, 32)))
    else:
        loss = F.l1_loss(logits, torch.rand(2, 1, 32, 32))
    loss.backward()
    missing = [n for n, p in model.named_parameters() if p.grad is None or not p.grad.any()]
    assert not missing, missing


def test_functional_call_runs_the_substituted_weights():
    torch.manual_seed(0)
    model = build_model("deeplabv3_resnet8", 5).eval()
    x = torch.randn(2, 3, 16, 16)
    state = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    with torch.no_grad():
        plain = model(x, preact=True)
        out = functional_call(model, state, (x,), {"preact": True})
        assert torch.equal(out.logits, plain.logits)
        assert all(torch.equal(a, b) for a, b in zip(out.preact_feats, plain.preact_feats,
                                                     strict=True))
        zero_head = {**state, "classifier.4.weight": torch.zeros_like(state["classifier.4.weight"])}
        bias = state["classifier.4.bias"].view(1, 5, 1, 1).expand(2, 5, 16, 16)
        torch.testing.assert_close(functional_call(model, zero_head, (x,)).logits, bias)
        # As SDKD's proxy runs it: forward_from through a wrapper, with the model's weights.
        proxy = ForwardFrom(model)
        named = {f"net.{k}": v for k, v in state.items()}
        for i, feat in enumerate(plain.feats):
            assert torch.equal(functional_call(proxy, named, (i, feat)).logits, plain.logits)


class ForwardFrom(nn.Module):
    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, i: int, h: torch.Tensor):
        return self.net.forward_from(i, h)


def test_proxy_statistics_cover_the_head_and_the_closing():
    model = build_model("deeplabv3_wrn_16_2", 5)
    stats = ProxyStatistics(model, 2)
    assert stats.names[0].startswith("backbone.stages.2.")
    assert "backbone.closing.0" in stats.names and "classifier.0.convs.0.1" in stats.names
    buffers = dict(model.named_buffers())
    assert all(torch.equal(v, buffers[k]) for k, v in stats.by_name().items())
    depth = ProxyStatistics(build_model("depthnet_resnet18", 1), 3)
    assert depth.names[0].startswith("backbone.layer4.") and "decoder.0.2" in depth.names


def test_a_hook_on_the_last_stage_sees_the_last_map():
    model = build_model("depthnet_resnet18", 1).eval()
    seen = []
    hook = model.stages[-1].register_forward_hook(lambda _m, _i, output: seen.append(output))
    with torch.no_grad():
        out = model(torch.randn(1, 3, 32, 32))
    hook.remove()
    assert model.stages[-1] is model.backbone.layer4
    assert len(seen) == 1 and torch.equal(seen[0], out.feats[-1])


def test_registry_names_counts_and_suggestions():
    assert set(DENSE_MODEL_NAMES) <= set(MODEL_NAMES)
    assert set(MODEL_NAMES) == set(CLASSIFICATION_MODEL_NAMES) | set(DENSE_MODEL_NAMES)
    assert not set(CLASSIFICATION_MODEL_NAMES) & set(DENSE_MODEL_NAMES)
    assert not is_dense_model("resnet8") and not is_dense_model("deeplabv3")
    required = {f"{family}_{arch}" for family in ("deeplabv3", "depthnet")
                for arch in ("resnet18", "resnet50", "resnet101", "resnet8", "resnet20",
                             "resnet8x4", "resnet32x4", "wrn_16_2", "wrn_40_2")}
    assert required <= set(DENSE_MODEL_NAMES)
    with pytest.raises(UserError, match="depthnet_resnet8 predicts one depth channel: "
                                        "num_classes must be 1, got 2"):
        build_model("depthnet_resnet8", 2)
    with pytest.raises(UserError, match=">= 2"):
        build_model("deeplabv3_resnet8", 1)
    with pytest.raises(UnknownModelError, match="did you mean 'deeplabv3_resnet18'"):
        build_model("deeplabv3_resnet19", 5)


def test_depth_is_raw_and_one_channel():
    torch.manual_seed(0)
    model = build_model("depthnet_resnet8", 1).eval()
    with torch.no_grad():
        depth = model(torch.randn(4, 3, 16, 16)).logits
    assert depth.shape == (4, 1, 16, 16) and depth.min() < 0 < depth.max()

"""The zoo against RepDistiller's (HobbitLong/RepDistiller: models/vgg.py, models/mobilenetv2.py,
models/ShuffleNetv2.py, models/util.py ConvReg, train_student.py): feature sizes, parameter and
MAC counts derived from the reference structure, the stems, FitNet's regressor, 28x28 inputs."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.utils.flop_counter import FlopCounterMode

from sdkd_core.distillers import METHODS, build_distiller, methods_for
from sdkd_core.distillers.fitnet import conv_reg
from sdkd_core.errors import UserError
from sdkd_core.loader import example_inputs
from sdkd_core.models import CLASSIFICATION_MODEL_NAMES, build_model

# --- The reference networks as lists of convs (c_in, c_out, kernel, groups, output side), each
# followed by a BN of c_out, for a 3x32x32 input; written from the reference files, not ours.


def _down(side: int) -> int:
    return (side + 1) // 2  # a 3x3 stride-2 conv with padding 1, or a 2x2 max-pool on even sides


def ref_vgg(cfg: list[list[int]]) -> list[tuple[int, ...]]:
    convs, cin, side = [], 3, 32
    for k, widths in enumerate(cfg):
        if k in (1, 2, 3):  # pool0..pool2; pool3 runs only when the input is 64 pixels high
            side = _down(side)
        for w in widths:
            convs.append((cin, w, 3, 1, side))
            cin = w
    return convs


def ref_mobile_half() -> list[tuple[int, ...]]:
    rows = [(1, 16, 1, 1), (6, 24, 2, 1), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
            (6, 160, 3, 2), (6, 320, 1, 1)]
    side = _down(32)  # conv_bn(3, 16, stride 2)
    convs, cin = [(3, 16, 3, 1, side)], 16
    for t, c, n, s in rows:
        cout = int(c * 0.5)
        for b in range(n):
            hidden, out_side = cin * t, _down(side) if s == 2 and b == 0 else side
            convs += [(cin, hidden, 1, 1, side), (hidden, hidden, 3, hidden, out_side),
                      (hidden, cout, 1, 1, out_side)]
            cin, side = cout, out_side
    return [*convs, (cin, 1280, 1, 1, side)]  # conv2, then AvgPool2d(2, ceil_mode=True)


def ref_shuffle_v2() -> list[tuple[int, ...]]:
    convs, cin, side = [(3, 24, 1, 1, 32)], 24, 32  # conv1 is 1x1, stride 1, no max-pool
    for cout, units in zip((116, 232, 464), (3, 7, 3), strict=True):
        mid, out = cout // 2, _down(side)
        convs += [(cin, cin, 3, cin, out), (cin, mid, 1, 1, out),  # DownBlock, left branch
                  (cin, mid, 1, 1, side), (mid, mid, 3, mid, out), (mid, mid, 1, 1, out)]
        convs += [(mid, mid, 1, 1, out), (mid, mid, 3, mid, out), (mid, mid, 1, 1, out)] * units
        cin, side = cout, out
    return [*convs, (cin, 1024, 1, 1, side)]  # conv2, then avg_pool2d(4)


VGG8 = [[64], [128], [256], [512], [512]]
VGG13 = [[64, 64], [128, 128], [256, 256], [512, 512], [512, 512]]
# name -> (reference convs, conv bias?, head width)
REFERENCE = {"vgg8": (ref_vgg(VGG8), True, 512), "vgg13": (ref_vgg(VGG13), True, 512),
             "MobileNetV2": (ref_mobile_half(), False, 1280),
             "ShuffleV2": (ref_shuffle_v2(), False, 1024)}
# What the formulas below give at 100 classes: parameters and multiply-accumulates (convs + head).
EXACT = {"vgg8": (3_965_028, 96_192_512), "vgg13": (9_462_180, 284_936_192),
         "MobileNetV2": (812_836, 6_523_648), "ShuffleV2": (1_355_528, 44_504_448)}


def ref_counts(name: str, classes: int = 100) -> tuple[int, int]:
    convs, bias, head = REFERENCE[name]
    params = sum(ci // g * co * k * k + 2 * co + (co if bias else 0) for ci, co, k, g, _ in convs)
    macs = sum(ci // g * co * k * k * side * side for ci, co, k, g, side in convs)
    return params + head * classes + classes, macs + head * classes


def macs(model: nn.Module, x: torch.Tensor) -> int:
    with FlopCounterMode(display=False) as counter, torch.no_grad():
        model(x)
    return counter.get_total_flops() // 2  # a multiply-accumulate is two flops


def sides(model: nn.Module, x: torch.Tensor) -> list[int]:
    with torch.no_grad():
        return [f.shape[-1] for f in model(x).feats]


@pytest.mark.parametrize("name", sorted(EXACT))
def test_parameters_and_macs_are_the_reference_zoos(name):
    model = build_model(name, 100).eval()
    assert ref_counts(name) == EXACT[name]
    assert sum(p.numel() for p in model.parameters()) == EXACT[name][0]
    assert macs(model, torch.zeros(1, 3, 32, 32)) == EXACT[name][1]


def test_vgg_block4_runs_at_block3s_size_and_costs_what_the_reference_does():
    x = torch.zeros(1, 3, 32, 32)
    for name in ("vgg8", "vgg13"):
        model = build_model(name, 100).eval()
        assert sides(model, x) == [32, 16, 8, 4, 4]
        assert sum(isinstance(m, nn.MaxPool2d) for m in model.modules()) == 3
    # A fourth pool would run block 4 at 2x2: 29% fewer MACs for vgg8 than the reference.
    at_2x2 = EXACT["vgg8"][1] - 512 * 512 * 9 * (16 - 4)
    assert 0.28 < 1 - at_2x2 / EXACT["vgg8"][1] < 0.30


def test_mobilenetv2_stem_has_stride_2_and_the_last_stage_ends_at_2x2():
    model = build_model("MobileNetV2", 100).eval()
    stem = model.stem[0]
    assert (stem.kernel_size, stem.stride, stem.out_channels) == ((3, 3), (2, 2), 16)
    assert sides(model, torch.zeros(1, 3, 32, 32)) == [16, 16, 8, 4, 2]
    assert model.stage_channels == [16, 12, 16, 48, 1280]


def test_shufflev2_stem_is_a_1x1_conv_bn_relu_at_full_resolution():
    model = build_model("ShuffleV2", 100).eval()
    conv, bn, relu = model.stem
    assert (conv.kernel_size, conv.stride, conv.in_channels, conv.out_channels) == (
        (1, 1), (1, 1), 3, 24)
    assert conv.bias is None and isinstance(bn, nn.BatchNorm2d) and isinstance(relu, nn.ReLU)
    assert sides(model, torch.zeros(1, 3, 32, 32)) == [32, 16, 8, 4]
    assert model.stage_channels == [24, 116, 232, 1024]


IMAGENET_SCALE = {"resnet18", "resnet34", "resnet50", "MobileNetV1"}


@pytest.mark.parametrize("name", CLASSIFICATION_MODEL_NAMES)
def test_every_model_still_runs_on_fashion_mnist_sized_inputs(name):
    model = build_model(name, 10, 1).eval()
    with torch.no_grad():
        out = model(torch.randn(2, 1, 28, 28))
    assert out.logits.shape == (2, 10) and torch.isfinite(out.logits).all()
    # The ImageNet-scale models (a stride-2 stem, the ResNets' also a max-pool) end at 1x1.
    assert min(f.shape[-1] for f in out.feats) >= (1 if name in IMAGENET_SCALE else 2)
    if name == "MobileNetV2":
        assert [f.shape[-1] for f in out.feats] == [14, 14, 7, 4, 2]
    if name.startswith("vgg"):
        assert [f.shape[-1] for f in out.feats] == [28, 14, 7, 3, 3]
    if name in IMAGENET_SCALE:
        first = 14 if name == "MobileNetV1" else 7  # the ResNets' max-pool halves once more
        assert [f.shape[-1] for f in out.feats] == [first, 7, 4, 2, 1]


# --- FitNet: ConvReg (models/util.py), hint_layer 2 and -b 100 (train_student.py, the README's
# FitNet command), MSE (distiller_zoo/FitNet.py HintLoss).


def fitnet(teacher: str, student: str, values=None, channels: int = 3, classes: int = 100):
    torch.manual_seed(0)
    return build_distiller("fitnet", build_model(student, classes, channels),
                           build_model(teacher, classes, channels), values)


def hint_and_target(m, side: int = 32, channels: int = 3):
    x = torch.randn(2, channels, side, side)
    with torch.no_grad():
        return m.regressor(m.student(x).feats[m.j]), m.teacher(x).feats[m.jt]


@pytest.mark.parametrize(("teacher", "student", "conv", "kernel", "stride"), [
    ("resnet32x4", "resnet8x4", nn.Conv2d, (1, 1), (1, 1)),  # 16x16 -> 16x16: 1x1
    ("resnet8x4", "vgg8", nn.ConvTranspose2d, (4, 4), (2, 2)),  # 8x8 -> 16x16: transposed
    ("vgg13", "resnet8x4", nn.Conv2d, (3, 3), (2, 2)),  # 16x16 -> 8x8: strided
])
def test_fitnet_regressor_is_convreg(teacher, student, conv, kernel, stride):
    m = fitnet(teacher, student)
    assert (m.j, m.jt, m.config.hint_weight) == (2, 2, 100.0)
    first, bn, relu = m.regressor
    assert type(first) is conv and first.bias is not None
    assert (first.kernel_size, first.stride) == (kernel, stride)
    c_t = m.teacher.stage_channels[2]
    assert (first.in_channels, first.out_channels) == (m.student.stage_channels[2], c_t)
    assert isinstance(bn, nn.BatchNorm2d) and bn.num_features == c_t
    assert isinstance(relu, nn.ReLU)
    hint, target = hint_and_target(m)
    assert hint.shape == target.shape


def test_convreg_size_rules_and_the_case_the_reference_has_none_for():
    assert conv_reg((64, 8, 8), (32, 2, 2))[0].kernel_size == (7, 7)  # valid conv, 1 + 8 - 2
    assert conv_reg((64, 2, 2), (32, 1, 1))[0].stride == (2, 2)  # half: strided first
    with pytest.raises(UserError, match="2x2 student map to a 8x8 teacher map"):
        conv_reg((64, 2, 2), (32, 8, 8))
    with pytest.raises(UserError, match="fitnet"):  # MobileNetV2's 2x2 stage 4 -> resnet's 8x8
        fitnet("resnet8x4", "MobileNetV2", {"fitnet.hint_stage": 4})


def test_fitnet_step_trains_student_and_regressor_never_the_teacher():
    m = fitnet("resnet8x4", "vgg8").train()
    teacher_state = {k: v.clone() for k, v in m.teacher.state_dict().items()}
    x, y = torch.randn(4, 3, 32, 32), torch.randint(0, 100, (4,))
    logits, losses = m(x, y, 0)
    assert set(losses) == {"ce", "hint"}
    hint = m.regressor(m.student(x).feats[2])
    with torch.no_grad():
        target = m.teacher(x).feats[2]
    assert torch.allclose(losses["hint"], 100 * nn.functional.mse_loss(hint, target))
    sum(losses.values()).backward()
    assert all(p.grad is not None for p in m.student.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.regressor.parameters())
    assert all(p.grad is None for p in m.teacher.parameters())
    assert all(torch.equal(v, m.teacher.state_dict()[k]) for k, v in teacher_state.items())
    trained = {id(p) for group in m.optim_groups().values() for p in group}
    assert {id(p) for p in m.regressor.parameters()} <= trained


def test_building_fitnet_leaves_the_students_mode_and_bn_statistics_alone():
    torch.manual_seed(0)
    student = build_model("vgg8", 10, 1).train()
    before = {k: v.clone() for k, v in student.state_dict().items()}
    build_distiller("fitnet", student, build_model("resnet8x4", 10, 1))
    assert student.training
    assert all(torch.equal(v, student.state_dict()[k]) for k, v in before.items())


def test_fitnet_on_28x28_resizes_where_floors_leave_a_pixel():
    # Sized at 32 (4x4 -> 8x8, transposed); on 28 the student's 3x3 gives 6x6, the teacher 7x7.
    m = fitnet("resnet8x4", "vgg8", {"fitnet.hint_stage": 3}, channels=1, classes=10).train()
    hint, target = hint_and_target(m, side=28, channels=1)
    assert hint.shape[-1] == 6 and target.shape[-1] == 7
    _, losses = m(torch.randn(2, 1, 28, 28), torch.randint(0, 10, (2,)), 0)
    assert all(torch.isfinite(v) for v in losses.values())


@pytest.mark.parametrize(("teacher", "student"), [("vgg13", "vgg8"), ("vgg13", "MobileNetV2"),
                                                  ("resnet8x4", "ShuffleV2")])
def test_every_method_steps_on_the_changed_models_at_28x28(teacher, student):
    labels = torch.arange(20) % 10  # the training set the batch's two images come from
    index = torch.tensor([3, 8])
    x, y = torch.randn(2, 1, 28, 28), labels[index]
    for method in methods_for("classification"):
        torch.manual_seed(0)
        m = build_distiller(method, build_model(student, 10, 1),
                            build_model(teacher, 10, 1)).train()
        m.bind_data(labels)
        m.begin_epoch(1, 2)  # past SDKD's phase boundary: every term runs
        given = example_inputs(x, index)
        _, losses = m(x, y, 1, **{k: given[k] for k in m.batch_inputs})
        sum(losses.values()).backward()
        assert all(torch.isfinite(v) for v in losses.values()), method


def test_published_numbers_name_zoo_models_and_method_labels():
    """A published row is only shown when its pair and column names are the zoo's and the
    registry's own: a misspelt key ("shufflev2") would hide it silently."""
    from analysis.published import PUBLISHED, TEACHER

    labels = {cls.label for cls in METHODS.values()}
    for (teacher, student), row in PUBLISHED.items():
        assert {teacher, student} <= set(CLASSIFICATION_MODEL_NAMES), (teacher, student)
        assert set(row) - {TEACHER} <= labels, set(row) - labels


def test_every_batch_input_has_an_example_value():
    from sdkd_core.loader import BATCH_INPUTS

    x = torch.zeros(2, 1, 28, 28)
    assert set(example_inputs(x, torch.arange(2))) == set(BATCH_INPUTS)

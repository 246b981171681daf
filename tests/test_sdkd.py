"""SDKD's exact invariants: which parameters learn from which loss, and what stays untouched."""

import pytest
import torch
from torch.nn import functional as F

from sdkd_core.distillers import build_distiller, method_config
from sdkd_core.distillers.sdkd import SDKD, fusable_stages
from sdkd_core.errors import UserError
from sdkd_core.losses import feature_l1, kd_loss
from sdkd_core.models import build_model

PAIRS = [("resnet32x4", "resnet8x4"), ("wrn_40_2", "wrn_16_2"), ("resnet56", "resnet20"),
         ("resnet110", "resnet32"), ("vgg13", "vgg8"), ("resnet32x4", "ShuffleV2")]


def make(values=None, teacher="resnet20", student="resnet8", channels=1, classes=10):
    torch.manual_seed(0)
    t = build_model(teacher, classes, channels)
    s = build_model(student, classes, channels)
    return build_distiller("sdkd", s, t, values)


def batch(n=8, channels=1, size=28, classes=10):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, channels, size, size, generator=g), torch.randint(0, classes, (n,),
                                                                           generator=g)


def proxy_terms(losses):
    return sum(v for k, v in losses.items() if k.startswith("pt_"))


def test_proxy_loss_reaches_the_ffb_only():
    m = make().train()
    m.begin_epoch(9, 10)  # after the boundary: every term is present
    x, y = batch()
    _, losses = m(x, y, 9)
    proxy_terms(losses).backward()
    assert all(p.grad is None for p in m.student.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in m.ffb.parameters())


def test_proxy_forward_leaves_student_weights_and_bn_buffers_bit_identical():
    m = make().train()
    x, y = batch()
    out_s = m.student(x)
    before = {k: v.clone() for k, v in m.student.state_dict().items()}
    out_t = m.teacher_output(x)
    for _ in range(3):  # training-mode BatchNorm would update running stats on each pass
        m.proxy(out_s.feats, out_t.feats).logits.sum().backward()
    after = m.student.state_dict()
    assert all(torch.equal(before[k], after[k]) for k in before)
    assert any(k.endswith("running_mean") for k in before)


def _student_grads(m, loss):
    m.zero_grad(set_to_none=True)
    loss.backward()
    return [p.grad.clone() for p in m.student.parameters()]


def test_student_gradient_before_and_after_the_phase_boundary():
    x, y = batch()
    m = make({"sdkd.phase_boundary": 0.5}).train()
    m.begin_epoch(4, 10)
    assert m.k == 0
    z_s, losses = m(x, y, 4)
    assert "proxy_kd" not in losses
    full = _student_grads(m, sum(losses.values()))

    ref = make({"sdkd.phase_boundary": 0.5}).train()  # same seed: same weights
    out_s, z_t = ref.student(x), ref.teacher_output(x).logits
    alone = _student_grads(ref, F.cross_entropy(out_s.logits, y) + kd_loss(out_s.logits, z_t, 4))
    assert all(torch.equal(a, b) for a, b in zip(full, alone, strict=True))

    m.begin_epoch(5, 10)
    assert m.k == 1
    _, losses = m(x, y, 5)
    after = _student_grads(m, sum(losses.values()))
    ref2 = make({"sdkd.phase_boundary": 0.5}).train()
    out_s, z_t = ref2.student(x), ref2.teacher_output(x).logits
    out_p = ref2.proxy(out_s.feats, ref2.teacher_output(x).feats)
    expected = (F.cross_entropy(out_s.logits, y) + kd_loss(out_s.logits, z_t, 4)
                + feature_l1(out_s.feats[-1], out_p.feats[-1].detach())
                + kd_loss(out_s.logits, out_p.logits.detach(), 4))
    with_proxy = _student_grads(ref2, expected)
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(after, with_proxy, strict=True))
    assert not all(torch.allclose(a, b) for a, b in zip(after, alone, strict=True))


@pytest.mark.parametrize("depth", [1, 2, 4])
def test_ffb_depth_builds_exactly_that_many_conv_blocks(depth):
    m = make({"sdkd.ffb_depth": depth})
    convs = [mod for mod in m.ffb.modules() if isinstance(mod, torch.nn.Conv2d)]
    assert len(convs) == depth == m.ffb.depth
    assert convs[0].in_channels == 32 + 32 and convs[-1].out_channels == 32


@pytest.mark.parametrize("teacher, student", PAIRS)
@pytest.mark.parametrize("channels, size, classes", [(1, 28, 10), (3, 32, 100)])
def test_fusion_runs_for_every_pair_input_and_fuse_stage(teacher, student, channels, size,
                                                        classes):
    torch.manual_seed(0)
    s = build_model(student, classes, channels)
    t = build_model(teacher, classes, channels)
    x, y = batch(2, channels, size, classes)
    with torch.no_grad():
        out_s, out_t = s(x), t(x)
    for j in fusable_stages(s):
        m = SDKD(s, t, method_config("sdkd", {"sdkd.fuse_stage": j}))
        out_p = m.proxy(out_s.feats, out_t.feats)
        assert out_p.logits.shape == (2, classes)
        assert out_p.feats[-1].shape == out_s.feats[-1].shape
        assert torch.isfinite(out_p.logits).all()


@pytest.mark.parametrize("values", [
    {"sdkd.proxy_arch": "teacher"},
    {"sdkd.use_teacher_feats": False},
    {"sdkd.proxy_weights": "snapshot"},
])
def test_ablation_switches_train(values):
    m = make(values).train()
    m.begin_epoch(9, 10)
    x, y = batch()
    _, losses = m(x, y, 9)
    sum(losses.values()).backward()
    assert all(torch.isfinite(v) for v in losses.values())
    assert all(p.grad is not None for p in m.ffb.parameters())


@pytest.mark.parametrize("mode", ["live", "snapshot"])
def test_snapshot_proxy_keeps_the_weights_of_the_phase_boundary(mode):
    m = make({"sdkd.proxy_weights": mode}).eval()
    x, _ = batch()
    m.begin_epoch(5, 10)
    with torch.no_grad():
        feats_s, feats_t = m.student(x).feats, m.teacher_output(x).feats
        before = m.proxy(feats_s, feats_t).logits
        for p in m.student.parameters():
            p.add_(0.01)
        after = m.proxy(feats_s, feats_t).logits
    assert torch.equal(after, before) == (mode == "snapshot")
    if mode == "snapshot":
        assert bool(m.snapshot_taken) and "snapshot_taken" in m.state_dict()


@pytest.mark.parametrize("values, fragment", [
    ({"sdkd.lamda": 2}, "did you mean 'sdkd.lambda'"),
    ({"sdkd.ffb_depth": "two"}, "sdkd.ffb_depth='two'"),
    ({"sdkd.ffb_depth": 0}, "sdkd.ffb_depth=0"),
    ({"sdkd.phase_boundary": 1.5}, "sdkd.phase_boundary=1.5"),
    ({"sdkd.proxy_weights": "frozen"}, "sdkd.proxy_weights='frozen'"),
    ({"kd.temperature": 2}, "belongs to method 'kd'"),
    ({"sdkd.fuse_stage": 3}, "sdkd.fuse_stage=3 but resnet8 can fuse at stages 0..2"),
])
def test_bad_config_is_one_clear_line(values, fragment):
    with pytest.raises(UserError) as err:
        make(values)
    assert fragment in str(err.value) and "\n" not in str(err.value)

"""ReviewKD as mdistiller's ReviewKD.py: HCL and the ABF fusion against second, independent
writings in plain torch ops, the review order and shapes, which parameters learn, the warm-up."""

import math

import pytest
import torch
from torch.nn import functional as F

from sdkd_core.distillers import build_distiller
from sdkd_core.distillers.reviewkd import ABF, ReviewKD, hcl_loss, levels
from sdkd_core.errors import UserError
from sdkd_core.models import build_model

# ----------------------------------------------------------------- formulas written again


def by_hand_pool(x, side):
    """Adaptive average pooling by definition: window i spans [floor(i*H/s), ceil((i+1)*H/s))."""
    h, w = x.shape[-2:]
    rows = []
    for i in range(side):
        r0, r1 = (i * h) // side, -((-(i + 1) * h) // side)
        cols = []
        for j in range(side):
            c0, c1 = (j * w) // side, -((-(j + 1) * w) // side)
            cols.append(x[..., r0:r1, c0:c1].sum((-2, -1)) / ((r1 - r0) * (c1 - c0)))
        rows.append(torch.stack(cols, -1))
    return torch.stack(rows, -2)


def by_hand_hcl(student_maps, teacher_maps):
    """The paper's HCL as the reference weights it: the full map at 1, then each pyramid side
    below the map's (from 4, 2, 1) at 1/2, 1/4, 1/8 in the order used; normalised per level."""
    total = 0.0
    for fs, ft in zip(student_maps, teacher_maps, strict=True):
        sides = [s for s in (4, 2, 1) if s < fs.shape[-2]]
        weights = [1.0] + [0.5 ** (k + 1) for k in range(len(sides))]
        terms = [((fs - ft) ** 2).mean()]
        terms += [((by_hand_pool(fs, s) - by_hand_pool(ft, s)) ** 2).mean() for s in sides]
        total = total + sum(w * t for w, t in zip(weights, terms, strict=True)) / sum(weights)
    return total


def by_hand_bn_train(x, bn):
    mean = x.mean((0, 2, 3), keepdim=True)
    var = ((x - mean) ** 2).mean((0, 2, 3), keepdim=True)  # biased, as BN normalises
    return (x - mean) / torch.sqrt(var + bn.eps) * bn.weight[None, :, None, None] \
        + bn.bias[None, :, None, None]


def by_hand_nearest(x, size):
    """PyTorch's legacy "nearest": source index floor(i * in / out)."""
    h, w = x.shape[-2:]
    rows = torch.tensor([(i * h) // size[0] for i in range(size[0])])
    cols = torch.tensor([(j * w) // size[1] for j in range(size[1])])
    return x[..., rows, :][..., cols]


def by_hand_abf(abf, x, residual, out_size):
    w1 = abf.conv1[0].weight[:, :, 0, 0]
    x = by_hand_bn_train(torch.einsum("nchw,mc->nmhw", x, w1), abf.conv1[1])
    if abf.att_conv is not None:
        residual = by_hand_nearest(residual, x.shape[-2:])
        wa, ba = abf.att_conv[0].weight[:, :, 0, 0], abf.att_conv[0].bias
        logits = torch.einsum("nchw,ac->nahw", torch.cat([x, residual], 1), wa) \
            + ba[None, :, None, None]
        att = 1 / (1 + torch.exp(-logits))
        x = x * att[:, :1] + residual * att[:, 1:]
    if tuple(x.shape[-2:]) != tuple(out_size):
        x = by_hand_nearest(x, out_size)
    padded = F.pad(x, (1, 1, 1, 1))
    h, w = x.shape[-2:]
    w2 = abf.conv2[0].weight
    out = sum(torch.einsum("nchw,oc->nohw", padded[:, :, i:i + h, j:j + w], w2[:, :, i, j])
              for i in range(3) for j in range(3))
    return by_hand_bn_train(out, abf.conv2[1]), x


# ----------------------------------------------------------------- helpers

def make(teacher="resnet14", student="resnet8", values=None, channels=3, classes=10):
    torch.manual_seed(0)
    t = build_model(teacher, classes, channels).eval()
    return build_distiller("reviewkd", build_model(student, classes, channels), t, values), t


def batch(n=4, channels=3, side=32, classes=10):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, channels, side, side, generator=g), torch.randint(0, classes, (n,),
                                                                             generator=g)


# ----------------------------------------------------------------- HCL and ABF

@pytest.mark.parametrize("side", [8, 7, 4, 3, 2, 1, 28])
def test_hcl_matches_the_formula_written_again(side):
    g = torch.Generator().manual_seed(side)
    fs = [torch.randn(3, 5, side, side, generator=g, dtype=torch.float64) for _ in range(2)]
    ft = [torch.randn(3, 5, side, side, generator=g, dtype=torch.float64) for _ in range(2)]
    # float64 in, the project computes in float32: compare at float32's precision.
    assert hcl_loss(fs, ft).item() == pytest.approx(by_hand_hcl(fs, ft).item(), rel=1e-6)


def test_hcl_weights_by_hand_on_an_8x8_constant_gap():
    # A gap of 1 everywhere: every pool keeps it, so every term is 1 and the level's loss is 1.
    assert hcl_loss([torch.ones(2, 3, 8, 8)], [torch.zeros(2, 3, 8, 8)]).item() == 1.0
    # A checkerboard gap of +-1: full MSE 1, every pool averages it to 0 (8 is even): 1 / 1.875.
    board = (torch.arange(8)[:, None] + torch.arange(8)[None, :]) % 2 * 2.0 - 1
    got = hcl_loss([board.expand(2, 3, 8, 8)], [torch.zeros(2, 3, 8, 8)]).item()
    assert got == pytest.approx(1 / (1 + 0.5 + 0.25 + 0.125))


@pytest.mark.parametrize(("in_side", "residual_side", "out_side"),
                         [(8, 4, 8), (16, 8, 32), (7, 4, 14), (4, 1, 8)])
def test_abf_matches_a_plain_torch_reimplementation(in_side, residual_side, out_side):
    torch.manual_seed(0)
    abf = ABF(6, 5, 4, fuse=True).train().double()
    with torch.no_grad():  # non-trivial BN affine and attention bias
        for bn in (abf.conv1[1], abf.conv2[1]):
            bn.weight.uniform_(0.5, 1.5), bn.bias.uniform_(-0.5, 0.5)
        abf.att_conv[0].bias.uniform_(-1, 1)
    x = torch.randn(3, 6, in_side, in_side, dtype=torch.float64)
    residual = torch.randn(3, 5, residual_side, residual_side, dtype=torch.float64)
    out, fused = abf(x, residual, (out_side, out_side))
    want_out, want_fused = by_hand_abf(abf, x, residual, (out_side, out_side))
    assert fused.shape == (3, 5, out_side, out_side) and out.shape == (3, 4, out_side, out_side)
    torch.testing.assert_close(fused, want_fused, rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(out, want_out, rtol=1e-10, atol=1e-10)


def test_abf_attention_fusion_by_hand():
    """One channel, identity BNs (eval, running var 1 - eps): x' = 2x, then
    x' * sigmoid(a x' + b r + c) + r * sigmoid(d x' + e r + f) with r the nearest-upsampled
    residual."""
    abf = ABF(1, 1, 1, fuse=True).eval()
    with torch.no_grad():
        for bn in (abf.conv1[1], abf.conv2[1]):
            bn.running_var.fill_(1 - bn.eps)
        abf.conv1[0].weight.fill_(2.0)
        abf.conv2[0].weight.zero_()
        abf.conv2[0].weight[0, 0, 1, 1] = 1.0  # the 3x3 conv passes the centre through
        abf.att_conv[0].weight.copy_(torch.tensor([[0.5, -1.0], [1.0, 0.25]])[:, :, None, None])
        abf.att_conv[0].bias.copy_(torch.tensor([0.1, -0.2]))
    x = torch.tensor([[1.0, -1.0], [0.5, 2.0]])[None, None]
    residual = torch.tensor([[3.0]])[None, None]
    out, fused = abf(x, residual, (2, 2))
    for (i, j), v in {(0, 0): 1.0, (0, 1): -1.0, (1, 0): 0.5, (1, 1): 2.0}.items():
        xs, r = 2 * v, 3.0
        a0 = 1 / (1 + math.exp(-(0.5 * xs - 1.0 * r + 0.1)))
        a1 = 1 / (1 + math.exp(-(1.0 * xs + 0.25 * r - 0.2)))
        assert fused[0, 0, i, j].item() == pytest.approx(xs * a0 + r * a1, rel=1e-6)
    torch.testing.assert_close(out, fused)


# ----------------------------------------------------------------- the method

def test_abfs_are_the_references_layout_and_read_the_teachers_preact_levels():
    m, t = make("resnet32x4", "resnet8x4", classes=100)
    # cfg.py's defaults, which are this pair's: IN/OUT_CHANNELS [64, 128, 256, 256], mid 256.
    assert [abf.conv1[0].in_channels for abf in m.abfs][::-1] == [64, 128, 256, 256]
    assert [abf.conv2[0].out_channels for abf in m.abfs][::-1] == [64, 128, 256, 256]
    assert {abf.conv1[0].out_channels for abf in m.abfs} == {256}
    # Held deepest first; only the pooled level's ABF has nothing deeper to fuse.
    assert m.abfs[0].att_conv is None and all(a.att_conv is not None for a in m.abfs[1:])
    x, _ = batch(n=2, classes=100)
    with torch.no_grad():
        out_s, out_t = m.student(x), t(x, preact=True)
        sizes = [tuple(f.shape[-2:]) for f in levels(out_t.preact_feats, out_t.pooled)]
        outputs = m.review(levels(out_s.feats, out_s.pooled), sizes)
    # On 32x32 the sides read off the maps are mdistiller's hard-coded SHAPES and OUT_SHAPES.
    assert [s[0] for s in sizes][::-1] == [1, 8, 16, 32]
    assert [o.shape[-1] for o in outputs][::-1] == [1, 8, 16, 32]


@pytest.mark.parametrize("student_preact", [False, True])
def test_loss_is_hcl_of_the_reviewed_student_levels_to_the_teachers_preact(student_preact):
    m, t = make(values={"reviewkd.student_preact": student_preact})
    m.train()
    x, y = batch()
    torch.manual_seed(3)
    logits, losses = m(x, y, 30)
    with torch.no_grad():
        out_s, out_t = m.student(x, preact=True), t(x, preact=True)
        maps = out_s.preact_feats if student_preact else out_s.feats
        targets = levels(out_t.preact_feats, out_t.pooled)
        outputs = m.review(levels(maps, out_s.pooled), [tuple(f.shape[-2:]) for f in targets])
        want = 5.0 * by_hand_hcl([o.double() for o in outputs], [f.double() for f in targets])
    assert losses["reviewkd"].item() == pytest.approx(want.item(), rel=1e-5)
    assert losses["ce"].item() == pytest.approx(F.cross_entropy(logits, y).item())
    assert set(losses) == {"ce", "reviewkd"}


def test_fashion_mnist_sides_work_without_a_probe():
    m, t = make("resnet8", "ShuffleV2", channels=1)
    x, y = batch(n=2, channels=1, side=28)
    _, losses = m.train()(x, y, 0)
    assert torch.isfinite(losses["reviewkd"])
    with torch.no_grad():
        sides = [f.shape[-1] for f in levels(t(x, preact=True).preact_feats, t(x).pooled)]
    assert sides == [28, 14, 7, 1]


def test_student_and_abfs_learn_the_teacher_does_not():
    m, t = make()
    x, y = batch()
    _, losses = m.train()(x, y, 0)
    losses["reviewkd"].backward()
    assert all(p.grad is None for p in t.parameters())
    for name, p in m.abfs.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, name
    # The review reaches every stage of the student (its classifier learns from CE only).
    for name, p in m.student.named_parameters():
        if not name.startswith("classifier"):
            assert p.grad is not None and p.grad.abs().sum() > 0, name
    groups = m.optim_groups()
    assert list(groups) == ["student"]
    assert {id(p) for p in groups["student"]} == {id(p) for p in m.parameters()}
    assert not any(id(p) in {id(q) for q in groups["student"]} for p in t.parameters())


def test_warmup_is_the_references_per_epoch_ramp_counted_from_one():
    m, _ = make()
    assert [m.ramp(e) for e in (0, 1, 9, 18, 19, 100)] == [1 / 20, 2 / 20, 10 / 20, 19 / 20, 1, 1]
    x, y = batch()
    m.train()
    full = m(x, y, 19)[1]["reviewkd"].item()
    assert m(x, y, 4)[1]["reviewkd"].item() == pytest.approx(full * 5 / 20, rel=1e-6)
    m.begin_epoch(2, 10)
    assert m.epoch_metrics() == {"reviewkd_ramp": pytest.approx(3 / 20)}
    assert ReviewKD.schedule_marks(m.config, 240) == {"ReviewKD warm-up end": 19.0}
    off, _ = make(values={"reviewkd.warmup_epochs": 0})
    assert off.ramp(0) == 1.0


def test_pairs_of_different_depth_are_refused_with_the_fix():
    with pytest.raises(UserError, match="choose a teacher with 4 stages"):
        make("resnet32x4", "vgg8")

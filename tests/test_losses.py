import math

import torch
from torch.nn import functional as F

from sdkd_core.losses import at_loss, dkd_loss, kd_loss


def test_kd_loss_equals_direct_kl_div():
    torch.manual_seed(0)
    s, t = torch.randn(16, 10) * 3, torch.randn(16, 10) * 3
    for temp in (1.0, 4.0):
        direct = F.kl_div(F.log_softmax(s / temp, 1), F.softmax(t / temp, 1),
                          reduction="sum") / 16 * temp**2
        assert abs(kd_loss(s, t, temp).item() - direct.item()) < 1e-6


def test_kd_loss_gradient_reaches_only_the_student_argument():
    s = torch.randn(4, 5, requires_grad=True)
    t = torch.randn(4, 5, requires_grad=True)
    kd_loss(s, t.detach(), 4.0).backward()
    assert s.grad is not None and t.grad is None
    assert kd_loss(t, t, 4.0).item() < 1e-6


def _softmax(v):
    e = [math.exp(x) for x in v]
    return [x / sum(e) for x in e]


def _kl(p, q):
    return sum(a * math.log(a / b) for a, b in zip(p, q, strict=True) if a > 0)


def test_dkd_loss_matches_the_papers_formula_by_hand():
    # DKD = alpha * TCKD + beta * NCKD, both KL(teacher || student), scaled by T^2.
    s, t, target, alpha, beta, temp = [1.0, 2.0, 0.5], [3.0, 1.0, 0.0], 0, 1.0, 8.0, 2.0
    p_s, p_t = _softmax([v / temp for v in s]), _softmax([v / temp for v in t])
    b_s, b_t = [p_s[0], 1 - p_s[0]], [p_t[0], 1 - p_t[0]]
    tckd = _kl(b_t, b_s)
    q_s, q_t = _softmax([v / temp for v in s[1:]]), _softmax([v / temp for v in t[1:]])
    nckd = _kl(q_t, q_s)
    expected = (alpha * tckd + beta * nckd) * temp**2
    got = dkd_loss(torch.tensor([s]), torch.tensor([t]), torch.tensor([target]), alpha, beta,
                   temp)
    assert abs(got.item() - expected) < 1e-5


def test_dkd_reduces_to_kd_split():
    # With alpha = beta = 1 the two parts are not KD itself, but both vanish when s == t.
    z = torch.randn(8, 10)
    y = torch.randint(0, 10, (8,))
    assert dkd_loss(z, z, y).abs().item() < 1e-5
    assert dkd_loss(z, torch.randn(8, 10), y).item() > 0


def test_attention_loss_is_zero_for_identical_maps_and_resizes_the_teacher():
    f = torch.rand(2, 8, 14, 14)
    assert at_loss(f, f).item() == 0
    assert at_loss(f, torch.rand(2, 16, 28, 28)).item() > 0

"""SHAKE as lliai/SHAKE runs it, and logit standardisation for KD/DKD (Sun et al., CVPR 2024):
each formula checked against a second, independent writing of it in plain torch ops."""

import pytest
import torch

from sdkd_core.data import load_dataset
from sdkd_core.distillers import build_distiller
from sdkd_core.distillers.shake import ShadowNetwork
from sdkd_core.engine import Engine
from sdkd_core.losses import layer_norm_logits, shake_terms, zscore_logits
from sdkd_core.models import build_model
from sdkd_core.recipe import Recipe

G = torch.Generator().manual_seed(0)
S, T, SH = (torch.randn(6, 10, generator=G) * 3 for _ in range(3))
Y = torch.tensor([0, 3, 9, 1, 1, 7])


# ----------------------------------------------------------------- formulas written again

def by_hand_log_softmax(z):
    m = z.max(1, keepdim=True).values
    return z - m - torch.log(torch.exp(z - m).sum(1, keepdim=True))


def by_hand_kl(s, t, temp):
    """T^2 * mean over the batch of sum_c p_t (log p_t - log p_s), both at temperature T."""
    log_p_s, log_p_t = by_hand_log_softmax(s / temp), by_hand_log_softmax(t / temp)
    return (torch.exp(log_p_t) * (log_p_t - log_p_s)).sum(1).mean() * temp**2


def by_hand_ce(z, y):
    return -by_hand_log_softmax(z)[torch.arange(len(y)), y].mean()


def by_hand_layer_norm(z, scale=3.1415):
    mean = z.sum(1, keepdim=True) / z.shape[1]
    var = ((z - mean) ** 2).sum(1, keepdim=True) / z.shape[1]  # biased, eps inside the root
    return (z - mean) / torch.sqrt(var + 1e-7) * scale


def by_hand_zscore(z):
    mean = z.sum(1, keepdim=True) / z.shape[1]
    std = torch.sqrt(((z - mean) ** 2).sum(1, keepdim=True) / (z.shape[1] - 1))  # unbiased
    return (z - mean) / (std + 1e-7)


def by_hand_dkd(s, t, y, alpha, beta, temp):
    p_s, p_t = torch.exp(by_hand_log_softmax(s / temp)), torch.exp(by_hand_log_softmax(t / temp))
    rows = torch.arange(len(y))
    b_s = torch.stack([p_s[rows, y], 1 - p_s[rows, y]], 1)
    b_t = torch.stack([p_t[rows, y], 1 - p_t[rows, y]], 1)
    tckd = (b_t * (b_t.log() - b_s.log())).sum(1).mean()
    keep = torch.ones_like(s, dtype=torch.bool)
    keep[rows, y] = False
    s_nt, t_nt = s[keep].view(len(y), -1), t[keep].view(len(y), -1)
    nckd = by_hand_kl(s_nt, t_nt, temp) / temp**2
    return (alpha * tckd + beta * nckd) * temp**2


# ----------------------------------------------------------------- pure losses

def test_layer_norm_logits_is_shakes_formula_with_pi():
    assert torch.allclose(layer_norm_logits(S), by_hand_layer_norm(S), atol=1e-5)
    assert torch.allclose(layer_norm_logits(S, 3.0), by_hand_layer_norm(S, 3.0), atol=1e-5)
    assert torch.allclose(layer_norm_logits(S).std(1, unbiased=False), torch.tensor(3.1415))


def test_zscore_logits_is_sun_et_als_formula():
    assert torch.allclose(zscore_logits(S), by_hand_zscore(S), atol=1e-6)
    assert torch.allclose(zscore_logits(S * 5 + 2), zscore_logits(S), atol=1e-5)


def test_shake_terms_match_the_reference_losses_and_detach_like_it():
    s, t, sh = (z.clone().requires_grad_() for z in (S, T, SH))
    terms = shake_terms(s, t, sh, Y, 4.0)
    want = {"ce": by_hand_ce(S, Y), "kd": by_hand_kl(S, T, 4.0),
            "student_from_shadow": by_hand_kl(S, SH, 4.0),
            "shadow_from_student": by_hand_kl(SH, S, 4.0), "shadow_ce": by_hand_ce(SH, Y),
            "shadow_mse": ((SH - T) ** 2).mean()}
    assert set(terms) == set(want)
    for k, v in want.items():
        assert terms[k].item() == pytest.approx(v.item(), rel=1e-5), k
    learns = {"ce": {"s"}, "kd": {"s"}, "student_from_shadow": {"s"},
              "shadow_from_student": {"sh"}, "shadow_ce": {"sh"}, "shadow_mse": {"sh"}}
    for k, who in learns.items():
        grads = torch.autograd.grad(terms[k], [s, t, sh], retain_graph=True, allow_unused=True)
        got = {n for n, g in zip(("s", "t", "sh"), grads, strict=True) if g is not None}
        assert got == who, k


# ----------------------------------------------------------------- KD / DKD switches

def pair(method, values):
    torch.manual_seed(0)
    teacher = build_model("resnet14", 10, 1)
    m = build_distiller(method, build_model("resnet8", 10, 1), teacher, values).eval()
    x = torch.randn(8, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    y = torch.randint(0, 10, (8,), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        z_s, z_t = m.student(x).logits, teacher(x).logits
        _, losses = m(x, y, 0)
    return losses, z_s, z_t, y


@pytest.mark.parametrize("stand", [False, True])
def test_kd_switch_standardises_both_logits_before_the_tempered_kl(stand):
    losses, z_s, z_t, y = pair("kd", {"kd.logit_standardize": stand, "kd.temperature": 2,
                                      "kd.kd_weight": 9})
    s, t = (by_hand_zscore(z_s), by_hand_zscore(z_t)) if stand else (z_s, z_t)
    assert losses["kd"].item() == pytest.approx(9 * by_hand_kl(s, t, 2.0).item(), rel=1e-4)
    assert losses["ce"].item() == pytest.approx(0.1 * by_hand_ce(z_s, y).item(), rel=1e-5)


@pytest.mark.parametrize("stand", [False, True])
def test_dkd_switch_standardises_both_logits_before_dkd(stand):
    losses, z_s, z_t, y = pair("dkd", {"dkd.logit_standardize": stand, "dkd.temperature": 2,
                                       "dkd.alpha": 9, "dkd.beta": 72, "dkd.warmup_epochs": 0})
    s, t = (by_hand_zscore(z_s), by_hand_zscore(z_t)) if stand else (z_s, z_t)
    assert losses["dkd"].item() == pytest.approx(by_hand_dkd(s, t, y, 9, 72, 2.0).item(),
                                                 rel=1e-4)
    assert losses["ce"].item() == pytest.approx(by_hand_ce(z_s, y).item(), rel=1e-5)


# ----------------------------------------------------------------- SHAKE

def test_shake_defaults_are_the_reference_scripts():
    c = build_distiller("shake", build_model("resnet8", 10, 1), build_model("resnet14", 10, 1)
                        ).config
    assert (c.head, c.logit_standardize, c.logit_scale) == ("reference", True, 3.1415)
    assert (c.ce_weight, c.kd_weight, c.beta, c.temperature) == (1.0, 0.0, 1.0, 4.0)


def test_shake_head_for_resnet32x4_is_the_references():
    teacher = build_model("resnet32x4", 100, 3).eval()
    m = build_distiller("shake", build_model("resnet8x4", 100, 3), teacher).eval()
    head = m.shadow
    assert m.shadow_feats == [1, 2, 3]  # stage widths 64, 128, 256
    # (kernel, stride, in, out) of fuse1..fuse5, each conv-BN-ReLU.
    want = [(3, 2, 64, 128), (1, 1, 128, 128), (3, 2, 128, 256), (1, 1, 256, 256),
            (3, 1, 256, 256)]
    for i, (k, st, cin, cout) in enumerate(want, 1):
        conv, bn, relu = getattr(head, f"fuse{i}")
        assert (conv.kernel_size, conv.stride, conv.in_channels, conv.out_channels) == \
            ((k, k), (st, st), cin, cout) and conv.bias is None
        assert isinstance(bn, torch.nn.BatchNorm2d) and bn.num_features == cout
        assert isinstance(relu, torch.nn.ReLU)
    # Convs 64*128*9 + 128*128 + 128*256*9 + 256*256 + 256*256*9 = 1,040,384, BatchNorms
    # 2 * (128 + 128 + 256 + 256 + 256) = 2,048; no classifier of its own (the teacher's fc).
    assert sum(p.numel() for p in head.parameters()) == 1_042_432
    assert not any(isinstance(mod, torch.nn.Linear) for mod in head.modules())
    assert not any("cam_layer" in k for k in m.state_dict())  # no module registered twice
    x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        f = teacher(x).feats
        h = head.fuse5(head.fuse3(head.fuse1(f[1]) + head.fuse2(f[2])) + head.fuse4(f[3]))
        want_logits = teacher.classifier(h.mean((2, 3)))
        assert torch.allclose(m.shadow_logits(f), want_logits, atol=1e-5)
        net = m.extra_network("shadow")
        assert isinstance(net, ShadowNetwork) and net.cam_layer is head.fuse5
        assert torch.allclose(net(x), by_hand_layer_norm(want_logits), atol=1e-4)


@pytest.mark.parametrize("name, size, feats", [("vgg13", 28, [1, 2, 3]),  # 7 -> 4 vs 3: pooled
                                              ("MobileNetV2", 32, [2, 3, 4])])  # fc takes stage 4
def test_shake_head_fits_teachers_the_reference_never_ran(name, size, feats):
    m = build_distiller("shake", build_model("resnet8", 10, 1), build_model(name, 10, 1))
    assert m.shadow_feats == feats
    _, losses = m.train()(torch.randn(2, 1, size, size), torch.tensor([0, 1]), 0)
    assert all(torch.isfinite(v) for v in losses.values())


def shake(values=None):
    torch.manual_seed(0)
    teacher = build_model("resnet14", 10, 1)
    return build_distiller("shake", build_model("resnet8", 10, 1), teacher, values), teacher


def test_shake_standardises_every_logit_before_every_loss():
    m, teacher = shake()
    m.eval()
    x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    with torch.no_grad():
        out_t = teacher(x)
        s, t = by_hand_layer_norm(m.student(x).logits), by_hand_layer_norm(out_t.logits)
        sh = by_hand_layer_norm(m.shadow_logits(out_t.feats))
        _, losses = m(x, y, 0)
        evals = m.eval_logits(x)
    want = {"ce": by_hand_ce(s, y), "kd": 0 * by_hand_kl(s, t, 4.0),
            "student_from_shadow": by_hand_kl(s, sh, 4.0),
            "shadow_from_student": by_hand_kl(sh, s, 4.0), "shadow_ce": by_hand_ce(sh, y),
            "shadow_mse": ((sh - t) ** 2).mean()}
    for k, v in want.items():
        assert losses[k].item() == pytest.approx(v.item(), rel=1e-4, abs=1e-6), k
    assert torch.allclose(evals["student"], s, atol=1e-4)
    assert torch.allclose(evals["shadow"], sh, atol=1e-4)


@pytest.mark.parametrize("values", [{}, {"shake.head": "project"},
                                    {"shake.logit_standardize": False, "shake.kd_weight": 1}])
def test_a_shake_step_trains_student_and_head_never_the_teacher(values):
    m, teacher = shake(values)
    x, y = torch.randn(8, 1, 28, 28), torch.randint(0, 10, (8,))
    _, losses = m.train()(x, y, 0)
    sum(losses.values()).backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is not None for p in m.student.parameters())
    assert all(p.grad is not None for p in m.shadow.parameters())
    m.zero_grad(set_to_none=True)
    _, losses = m(x, y, 0)
    (losses["ce"] + losses["kd"] + losses["student_from_shadow"]).backward()
    assert all(p.grad is None for p in m.shadow.parameters())


@pytest.mark.slow  # ~20 s on two idle cores
def test_shake_learns_synthetic_data():
    data = load_dataset("synthetic", n_train=640, n_test=200)
    torch.manual_seed(0)
    teacher = build_model("resnet8", 10, 1)  # briefly trained (~55%): a random one's standardised
    Engine(build_distiller("vanilla", teacher), data,  # logits are near-constant confident
           Recipe(epochs=2, batch_size=32, lr=0.1), device="cpu", seed=0).fit()
    torch.manual_seed(0)
    m = build_distiller("shake", build_model("resnet8", 10, 1), teacher)
    # Standardised logits scale the first gradients by pi / std(raw logits), ~25x at init: at the
    # reference's lr 0.05 with no warm-up, a 60-step run freezes the student (its 240 epochs
    # recover). A warm-up to a constant lr 0.01 keeps this short run learning.
    recipe = Recipe(epochs=3, batch_size=32, lr=0.01, warmup_epochs=1, schedule="step", gamma=1)
    history = Engine(m, data, recipe, device="cpu", seed=0).fit()
    assert history[-1]["train_loss"] < history[0]["train_loss"]
    assert history[-1]["test_acc"] > 20.0, history[-1]  # chance is 10%
    assert history[-1]["test_acc_shadow"] > 40.0, history[-1]

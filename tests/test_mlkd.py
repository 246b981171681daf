"""MLKD (Jin et al., CVPR 2023) as Jin-Ying/Multi-Level-Logit-Distillation's KD_ours computes
it, quirks included: each term against a second writing in plain torch ops, who learns from
it, and the loader's strong view it trains on."""

import numpy as np
import pytest
import torch
from torchvision.transforms import v2

from sdkd_core.datasets import DATASET_INFO
from sdkd_core.distillers import METHODS, build_distiller, contract_problem, method_config
from sdkd_core.distillers.mlkd import below_median_fraction, mlkd_terms
from sdkd_core.loader import BatchLoader, rand_augment
from sdkd_core.models import build_model

G = torch.Generator().manual_seed(0)
SW, SS, TW, TS = (torch.randn(8, 10, generator=G) * 3 for _ in range(4))
Y = torch.tensor([0, 3, 9, 1, 1, 7, 2, 5])
TEMPS = (4.0, 3.0, 5.0, 2.0, 6.0)  # the config's first, then the reference's fixed four


# ----------------------------------------------------------------- formulas written again

def by_hand_softmax(z):
    e = torch.exp(z - z.max(1, keepdim=True).values)
    return e / e.sum(1, keepdim=True)


def by_hand_kd(s, t, temp):
    p_s, p_t = by_hand_softmax(s / temp), by_hand_softmax(t / temp)
    return (p_t * (torch.log(p_t) - torch.log(p_s))).sum(1).mean() * temp**2


def by_hand_ce(z, y):
    return -torch.log(by_hand_softmax(z)[torch.arange(len(y)), y]).mean()


def by_hand_bc(s, t, temp):
    """Batch level: the B x B matrices of sample-pair inner products, squared distance / B."""
    p_s, p_t = by_hand_softmax(s / temp), by_hand_softmax(t / temp)
    g_s, g_t = torch.einsum("ic,jc->ij", p_s, p_s), torch.einsum("ic,jc->ij", p_t, p_t)
    return ((g_t - g_s) ** 2).sum() / s.shape[0]


def by_hand_cc(s, t, temp):
    """Class level: the C x C matrices of class-pair inner products, squared distance / C."""
    p_s, p_t = by_hand_softmax(s / temp), by_hand_softmax(t / temp)
    g_s, g_t = torch.einsum("ic,id->cd", p_s, p_s), torch.einsum("ic,id->cd", p_t, p_t)
    return ((g_t - g_s) ** 2).sum() / s.shape[1]


def by_hand_zscore(z):
    mean = z.sum(1, keepdim=True) / z.shape[1]
    std = torch.sqrt(((z - mean) ** 2).sum(1, keepdim=True) / (z.shape[1] - 1))
    return (z - mean) / (std + 1e-7)


def numpy_fraction(values):
    """The reference's mask: values <= np.percentile(values, 50), as a fraction."""
    v = values.numpy()
    return float((v <= np.percentile(v.flatten(), 50)).mean())


def by_hand_terms(sw, ss, tw, ts, y, ce_w, kd_w, stand=False):
    p_t = by_hand_softmax(tw)
    m = numpy_fraction(p_t.max(1).values)
    m_c = numpy_fraction(p_t.sum(0))

    def kd(s, t, temp):
        return by_hand_kd(by_hand_zscore(s), by_hand_zscore(t), temp) if stand else \
            by_hand_kd(s, t, temp)

    return {
        "ce": ce_w * (by_hand_ce(sw, y) + by_hand_ce(ss, y)),
        "kd_weak": sum(kd_w * m * kd(sw, tw, temp) for temp in TEMPS),
        # The reference's strong-view sum: T0, 3, 5 on the strong logits, 2 and 6 on the weak.
        "kd_strong": kd_w * (kd(ss, ts, 4.0) + kd(ss, ts, 3.0) + kd(ss, ts, 5.0)
                             + kd(sw, tw, 2.0) + kd(sw, tw, 6.0)),
        "cc": sum(kd_w * m_c * by_hand_cc(sw, tw, temp) for temp in TEMPS),
        "bc": sum(kd_w * m * by_hand_bc(sw, tw, temp) for temp in TEMPS),
    }


# ----------------------------------------------------------------- the loss terms

@pytest.mark.parametrize("n", [2, 3, 7, 8, 64])
def test_below_median_fraction_is_numpys_percentile_rule(n):
    g = torch.Generator().manual_seed(n)
    for trial in range(50):
        v = torch.rand(n, generator=g)
        if trial % 2:
            v = v.round(decimals=1)  # ties at the median
        # float32 against numpy's float64: equal counts give fractions within 1e-7
        assert below_median_fraction(v).item() == pytest.approx(numpy_fraction(v), abs=1e-7)
    assert below_median_fraction(torch.tensor([1.0, 2.0, 3.0, 4.0])).item() == 0.5
    assert below_median_fraction(torch.tensor([1.0, 2.0, 2.0, 3.0])).item() == 0.75


@pytest.mark.parametrize("stand", [False, True])
def test_each_term_is_the_references_formula(stand):
    c = method_config("mlkd", {"mlkd.ce_weight": 0.3, "mlkd.kd_weight": 0.7,
                               "mlkd.logit_standardize": stand})
    got = mlkd_terms(SW, SS, TW, TS, Y, c)
    want = by_hand_terms(SW, SS, TW, TS, Y, 0.3, 0.7, stand)
    assert set(got) == set(want)
    for k, v in want.items():
        assert got[k].item() == pytest.approx(v.item(), rel=1e-5), k


def test_strong_view_terms_read_the_weak_logits_at_temperatures_2_and_6():
    c = method_config("mlkd")
    base = mlkd_terms(SW, SS, TW, TS, Y, c)
    other = mlkd_terms(SW, SS + 5 * torch.randn(8, 10, generator=G), TW, TS, Y, c)
    # Only CE and the strong KD sum read the strong logits; the class and batch levels and
    # the weak KD sum never do (the reference's strong-view cc and bc are never returned).
    assert {k for k in base if not torch.equal(base[k], other[k])} == {"ce", "kd_strong"}
    s = SS.clone().requires_grad_()
    kd_strong = mlkd_terms(SW, s, TW, TS, Y, c)["kd_strong"]
    kd_strong.backward()
    want = sum(by_hand_kd(SS, TS, t) for t in (4.0, 3.0, 5.0)) * 0.9
    assert kd_strong.item() - want.item() == pytest.approx(
        0.9 * (by_hand_kd(SW, TW, 2.0) + by_hand_kd(SW, TW, 6.0)).item(), rel=1e-4)


def test_masks_only_scale_the_already_averaged_losses():
    """The reference multiplies a reduced loss by a mask and takes the mean: the result is the
    loss times the masked fraction, whichever samples the mask picks."""
    c = method_config("mlkd", {"mlkd.kd_weight": 1.0})
    got = mlkd_terms(SW, SS, TW, TS, Y, c)
    m = numpy_fraction(by_hand_softmax(TW).max(1).values)
    assert got["kd_weak"].item() == pytest.approx(
        m * sum(by_hand_kd(SW, TW, t) for t in TEMPS).item(), rel=1e-5)


def test_defaults_are_the_reference_cifar_settings():
    c = method_config("mlkd")
    assert (c.ce_weight, c.kd_weight, c.temperature, c.strong_augment, c.logit_standardize) == \
        (0.1, 0.9, 4.0, True, False)
    assert contract_problem(METHODS["mlkd"]) is None


# ----------------------------------------------------------------- the method

def make(values=None):
    torch.manual_seed(0)
    teacher = build_model("resnet8", 10, 1)  # the architecture does not matter here
    return build_distiller("mlkd", build_model("resnet8", 10, 1), teacher, values), teacher


def views():
    g = torch.Generator().manual_seed(1)
    return (torch.randn(8, 1, 28, 28, generator=g), torch.randn(8, 1, 28, 28, generator=g),
            torch.randint(0, 10, (8,), generator=g))


def test_forward_runs_both_networks_on_both_views_and_returns_the_weak_logits():
    m, teacher = make()
    m.eval()  # BatchNorm on running statistics: each network's logits are reproducible
    x, xs, y = views()
    with torch.no_grad():
        z, losses = m(x, y, 0, strong_view=xs)
        sw, ss = m.student(x).logits, m.student(xs).logits
        tw, ts = teacher(x).logits, teacher(xs).logits
    assert torch.equal(z, sw)
    want = by_hand_terms(sw, ss, tw, ts, y, 0.1, 0.9)
    for k, v in want.items():
        assert losses[k].item() == pytest.approx(v.item(), rel=1e-4), k


def test_without_strong_augment_it_asks_for_nothing_and_both_views_are_the_weak_one():
    m, teacher = make({"mlkd.strong_augment": False})
    assert m.batch_inputs == () and METHODS["mlkd"].batch_inputs == ("strong_view",)
    m.eval()
    x, _, y = views()
    with torch.no_grad():
        _, losses = m(x, y, 0)
        sw, tw = m.student(x).logits, teacher(x).logits
    want = by_hand_terms(sw, sw, tw, tw, y, 0.1, 0.9)
    for k, v in want.items():
        assert losses[k].item() == pytest.approx(v.item(), rel=1e-4), k


def test_every_term_trains_the_student_and_nothing_reaches_the_teacher():
    m, teacher = make()
    m.train()
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    x, xs, y = views()
    _, losses = m(x, y, 0, strong_view=xs)
    student, frozen = list(m.student.parameters()), list(teacher.parameters())
    assert not any(p.requires_grad for p in frozen)
    for name, loss in losses.items():
        grads = torch.autograd.grad(loss, student, retain_graph=True, allow_unused=True)
        assert all(g is not None for g in grads), name
    sum(losses.values()).backward()
    assert all(p.grad is None for p in frozen)
    assert list(m.optim_groups()) == ["student"]
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())


# ----------------------------------------------------------------- the strong view

def loader(name, epoch=0, rank=0, seed=3, n=96):
    info = DATASET_INFO[name]
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, info.in_channels, info.image_size, info.image_size),
                      generator=g, dtype=torch.uint8)
    y = torch.randint(0, info.num_classes, (n,), generator=g)
    out = BatchLoader(x, y, info, 16, train=True, seed=seed, rank=rank, world_size=2,
                      inputs=("strong_view",))
    out.set_epoch(epoch)
    return out


def strong_views(ld):
    return [(x, extras["strong_view"]) for x, _, extras in ld.batches()]


@pytest.mark.parametrize("name", ["fashion_mnist", "cifar100"])
def test_strong_view_is_fixed_by_seed_epoch_and_rank_and_differs_from_the_weak(name):
    rng = torch.get_rng_state()
    first = strong_views(loader(name))
    assert torch.equal(torch.get_rng_state(), rng)  # the global RNG is left as it was
    again = strong_views(loader(name))
    assert all(torch.equal(a[1], b[1]) for a, b in zip(first, again, strict=True))
    for other in (loader(name, epoch=1), loader(name, rank=1), loader(name, seed=4)):
        assert not torch.equal(first[0][1], strong_views(other)[0][1])
    info = DATASET_INFO[name]
    for weak, strong in first:
        assert strong.shape == weak.shape and strong.dtype == weak.dtype == torch.float32
        assert not torch.equal(weak, strong)
        # Normalised as the weak view: undone, it gives uint8 pixel values again.
        mean = torch.tensor(info.mean).view(1, -1, 1, 1) * 255
        std = torch.tensor(info.std).view(1, -1, 1, 1) * 255
        pixels = strong * std + mean
        assert torch.allclose(pixels, pixels.round(), atol=1e-3)
        assert pixels.min() > -1e-3 and pixels.max() < 255 + 1e-3


def test_a_resumed_epoch_sees_the_same_strong_views():
    ld = loader("fashion_mnist")
    strong_views(ld)
    ld.set_epoch(1)
    continued = strong_views(ld)
    resumed = strong_views(loader("fashion_mnist", epoch=1))
    assert all(torch.equal(a[1], b[1]) for a, b in zip(continued, resumed, strict=True))


@pytest.mark.parametrize("shape", [(40, 1, 28, 28), (40, 3, 32, 32)])
def test_rand_augment_is_torchvisions_randaugment_image_by_image(shape):
    x = torch.randint(0, 256, shape, generator=torch.Generator().manual_seed(0),
                      dtype=torch.uint8)
    torch.manual_seed(7)
    batched = rand_augment(x, 2, 10)
    torch.manual_seed(7)
    one_by_one = torch.stack([v2.RandAugment(num_ops=2, magnitude=10)(img) for img in x])
    assert torch.equal(batched, one_by_one)
    assert batched.dtype == torch.uint8 and not torch.equal(batched, x)

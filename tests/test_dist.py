"""DIST (Huang et al., NeurIPS 2022) as hunto/image_classification_sota computes it: each term
against a second writing of the formula in plain torch ops, and who learns from it."""

import pytest
import torch

from sdkd_core.distillers import build_distiller, method_config
from sdkd_core.distillers.dist import dist_relations
from sdkd_core.models import build_model

G = torch.Generator().manual_seed(0)
S, T = torch.randn(6, 10, generator=G) * 3, torch.randn(6, 10, generator=G) * 5


def by_hand_softmax(z):
    e = torch.exp(z - z.max(1, keepdim=True).values)
    return e / e.sum(1, keepdim=True)


def by_hand_pearson(a, b, eps=1e-8):
    """Per row: sum of products of deviations over the product of root sums of squares (the
    reference adds eps to that product)."""
    da = a - a.sum(1, keepdim=True) / a.shape[1]
    db = b - b.sum(1, keepdim=True) / b.shape[1]
    root_a = torch.sqrt((da * da).sum(1))
    root_b = torch.sqrt((db * db).sum(1))
    return (da * db).sum(1) / (root_a * root_b + eps)


def by_hand_dist(s, t, tau):
    """(inter, intra) times tau^2: 1 - mean correlation over the samples (rows), then over the
    classes (columns) of the tempered softmaxes."""
    y_s, y_t = by_hand_softmax(s / tau), by_hand_softmax(t / tau)
    inter = 1 - by_hand_pearson(y_s, y_t).mean()
    intra = 1 - by_hand_pearson(y_s.t().contiguous(), y_t.t().contiguous()).mean()
    return tau**2 * inter, tau**2 * intra


def by_hand_zscore(z):
    mean = z.sum(1, keepdim=True) / z.shape[1]
    std = torch.sqrt(((z - mean) ** 2).sum(1, keepdim=True) / (z.shape[1] - 1))
    return (z - mean) / (std + 1e-7)


def by_hand_ce(z, y):
    return -torch.log(by_hand_softmax(z)[torch.arange(len(y)), y]).mean()


@pytest.mark.parametrize("tau", [1.0, 4.0])
def test_relations_are_one_minus_the_mean_pearson_correlation_times_tau_squared(tau):
    inter, intra = dist_relations(S, T, tau)
    want_inter, want_intra = by_hand_dist(S, T, tau)
    assert inter.item() == pytest.approx(want_inter.item(), rel=1e-5)
    assert intra.item() == pytest.approx(want_intra.item(), rel=1e-5)


def test_relations_vanish_when_the_student_matches_the_teacher():
    inter, intra = dist_relations(T, T, 4.0)
    assert abs(inter.item()) < 1e-4 and abs(intra.item()) < 1e-4  # tau^2 = 16 times eps


def test_defaults_are_the_reference_cifar_config():
    c = method_config("dist")
    assert (c.ce_weight, c.kd_weight, c.beta, c.gamma, c.temperature, c.logit_standardize) == \
        (1.0, 2.0, 1.0, 1.0, 4.0, False)


def pair(values):
    torch.manual_seed(0)
    teacher = build_model("resnet14", 10, 1)
    m = build_distiller("dist", build_model("resnet8", 10, 1), teacher, values).eval()
    x = torch.randn(8, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    y = torch.randint(0, 10, (8,), generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        z_s, z_t = m.student(x).logits, teacher(x).logits
        _, losses = m(x, y, 0)
    return losses, z_s, z_t, y


@pytest.mark.parametrize("stand", [False, True])
def test_forward_weighs_each_term_and_standardises_only_when_asked(stand):
    values = {"dist.ce_weight": 0.5, "dist.kd_weight": 3, "dist.beta": 2, "dist.gamma": 0.25,
              "dist.temperature": 2, "dist.logit_standardize": stand}
    losses, z_s, z_t, y = pair(values)
    s, t = (by_hand_zscore(z_s), by_hand_zscore(z_t)) if stand else (z_s, z_t)
    inter, intra = by_hand_dist(s, t, 2.0)
    assert set(losses) == {"ce", "inter", "intra"}
    assert losses["ce"].item() == pytest.approx(0.5 * by_hand_ce(z_s, y).item(), rel=1e-5)
    assert losses["inter"].item() == pytest.approx(3 * 2 * inter.item(), rel=1e-4)
    assert losses["intra"].item() == pytest.approx(3 * 0.25 * intra.item(), rel=1e-4)


def test_only_the_student_learns_and_the_teacher_stays_frozen():
    torch.manual_seed(0)
    teacher = build_model("resnet14", 10, 1)
    m = build_distiller("dist", build_model("resnet8", 10, 1), teacher).train()
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    x = torch.randn(8, 1, 28, 28, generator=torch.Generator().manual_seed(1))
    y = torch.randint(0, 10, (8,), generator=torch.Generator().manual_seed(2))
    for name in ("inter", "intra"):
        m.zero_grad(set_to_none=True)
        _, losses = m(x, y, 0)
        losses[name].backward()
        assert all(p.grad is not None for p in m.student.parameters()), name
        assert all(p.grad is None for p in teacher.parameters()), name
    assert list(m.optim_groups()) == ["student"]
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())

"""Exact invariants of the baselines: who learns from which term, what stays frozen."""

import pytest
import torch

from sdkd_core.distillers import build_distiller
from sdkd_core.models import build_model


def make(method, values=None):
    torch.manual_seed(0)
    teacher = build_model("resnet14", 10, 1)
    return build_distiller(method, build_model("resnet8", 10, 1), teacher, values), teacher


def batch(n=8):
    g = torch.Generator().manual_seed(1)
    return torch.randn(n, 1, 28, 28, generator=g), torch.randint(0, 10, (n,), generator=g)


def test_dkd_ramps_up_step_by_step_and_resumes_at_the_same_point():
    m, _ = make("dkd", {"dkd.warmup_epochs": 2})
    m.train().begin_epoch(0, 8, steps_per_epoch=10)
    assert m.ramp == pytest.approx(1 / 20)
    x, y = batch()
    for _ in range(5):
        m(x, y, 0)
    assert m.ramp == pytest.approx(6 / 20)
    m.begin_epoch(1, 8, steps_per_epoch=10)  # what a resumed run does
    assert m.ramp == pytest.approx(11 / 20)
    m.begin_epoch(2, 8, steps_per_epoch=10)
    assert m.ramp == 1.0


def test_dml_terms_reach_only_their_own_network():
    m, teacher = make("dml")
    assert m.peer.name == teacher.name and m.teacher is None
    x, y = batch()
    _, losses = m.train()(x, y, 0)
    (losses["ce"] + losses["kl"]).backward()
    assert all(p.grad is None for p in m.peer.parameters())
    assert all(p.grad is not None for p in m.student.parameters())
    m.zero_grad(set_to_none=True)
    _, losses = m(x, y, 0)
    (losses["peer_ce"] + losses["peer_kl"]).backward()
    assert all(p.grad is None for p in m.student.parameters())


@pytest.mark.parametrize("method", ["kd", "shake", "dkd", "fitnet", "at", "reviewkd", "sdkd"])
def test_teacher_is_frozen_through_a_training_step(method):
    m, teacher = make(method)
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    opt = torch.optim.SGD([p for ps in m.optim_groups().values() for p in ps], lr=0.1)
    x, y = batch()
    _, losses = m.train()(x, y, 0)
    sum(losses.values()).backward()
    opt.step()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    trained = {id(p) for ps in m.optim_groups().values() for p in ps}
    assert all(id(p) in trained for p in m.parameters() if p.requires_grad)


def test_shake_shadow_learns_through_the_frozen_teacher_classifier():
    m, teacher = make("shake")
    x, y = batch()
    _, losses = m.train()(x, y, 0)
    (losses["shadow_ce"] + losses["shadow_mse"]).backward()
    assert all(p.grad is not None for p in m.shadow.parameters())
    assert teacher.classifier.weight.grad is None
    assert all(p.grad is None for p in m.student.parameters())


def test_shake_reads_a_wrn_teachers_last_map_before_its_closing_bn(tmp_path):
    """lliai/SHAKE feeds its head `feat_t[1:-1]` of RepDistiller's WRN: block1..block3's outputs,
    the last taken before the network's closing BN+ReLU (`bn1`, applied only before pooling).
    The RepDistiller-layout WRN below, loaded with the same weights, gives those maps."""
    from test_published_teachers import reference

    from sdkd_core.models.published import load_teacher_checkpoint

    ref = reference("wrn_40_2", 10)
    path = tmp_path / "wrn_40_2.pth"
    torch.save(ref.state_dict(), path)
    teacher = load_teacher_checkpoint(path, "wrn_40_2", 10, 3)
    m = build_distiller("shake", build_model("wrn_16_2", 10, 3), teacher)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        f1 = ref.block1(ref.conv1(x))
        f2 = ref.block2(f1)
        f3 = ref.block3(f2)  # before ref.bn1 and its ReLU
    seen = []
    m.shadow.register_forward_pre_hook(lambda _, args: seen.append(args[0]))
    m.train()(x, torch.tensor([1, 2]), 0)
    (maps,) = seen
    for mine, theirs in zip(maps, (f1, f2, f3), strict=True):
        torch.testing.assert_close(mine, theirs, rtol=1e-5, atol=1e-5)
    assert (f3 < 0).any()  # the pre-BN map, not a post-ReLU one
    closed = torch.relu(ref.bn1(f3))
    assert not torch.allclose(maps[2], closed)

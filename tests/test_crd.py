"""CRD against formulas written here from the paper and RepDistiller's crd/ (not the project's
functions): the NCE loss with Z fixed on the first batch, the memory's momentum update, the
'exact' negatives, who gets gradients, the memory in the state_dict, and the update under DDP."""

import os
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from torch import distributed as dist

from sdkd_core.distillers import build_distiller
from sdkd_core.errors import UserError
from sdkd_core.models import build_model

N, K, B, T, MOMENTUM = 60, 20, 8, 0.07, 0.5
LABELS = torch.arange(N) % 10


def make(values=None, bind=True, labels=LABELS):
    torch.manual_seed(0)
    m = build_distiller("crd", build_model("resnet8", 10, 1), build_model("resnet14", 10, 1),
                        {"crd.nce_k": K, **(values or {})})
    if bind:
        m.bind_data(labels)
    return m.train()


def batch(seed=1, n=B):
    g = torch.Generator().manual_seed(seed)
    index = torch.randperm(N, generator=g)[:n]
    return torch.randn(n, 1, 28, 28, generator=g), LABELS[index], index


def embeddings(m, x):
    """v_s, v_t written out: l2-normalised linear maps of the pooled features (float64)."""
    def embed(linear, f):
        z = f.double() @ linear.weight.double().t() + linear.bias.double()
        return z / z.norm(dim=1, keepdim=True)
    with torch.no_grad():
        return (embed(m.embed_s.linear, m.student(x).pooled),
                embed(m.embed_t.linear, m.teacher(x).pooled))


def nce(v, bank, contrast, z=None):
    """Eq. 18 of the paper as crd/criterion.py computes it, and the Z it used: P = exp(m.v/T)/Z,
    Z = mean(exp(m.v/T)) * N when not given; noise K/N; eps 1e-7."""
    e = torch.exp(torch.einsum("bkd,bd->bk", bank.double()[contrast], v) / T)
    z = e.mean() * N if z is None else z
    p, c = e / z, K / N
    loss = -(torch.log(p[:, 0] / (p[:, 0] + c + 1e-7)).sum()
             + torch.log(c / (p[:, 1:] + c + 1e-7)).sum()) / len(v)
    return loss, z


def other_class_negatives(y, g):
    """K negatives per label, drawn here: distinct images of other classes."""
    rows = []
    for c in y.tolist():
        others = torch.nonzero(LABELS.ne(c)).flatten()
        rows.append(others[torch.randperm(len(others), generator=g)[:K]])
    return torch.stack(rows)


def test_nce_loss_is_the_formula_with_z_fixed_on_the_first_batch():
    m = make()
    g = torch.Generator().manual_seed(5)
    zs = []
    for step in range(2):
        x, y, index = batch(seed=step + 1)
        negatives = other_class_negatives(y, g)
        m.memory.negatives = lambda y, k, negatives=negatives: negatives
        v_s, v_t = embeddings(m, x)
        bank_s, bank_t = m.memory.student.clone(), m.memory.teacher.clone()
        _, losses = m(x, y, 0, index=index)
        contrast = torch.cat([index[:, None], negatives], 1)
        # P_s: the student's embedding against the teacher's bank, and the other way round.
        loss_s, z_s = nce(v_s, bank_t, contrast, zs[0] if zs else None)
        loss_t, z_t = nce(v_t, bank_s, contrast, zs[1] if zs else None)
        zs = zs or [z_s, z_t]
        assert losses["crd"].item() == pytest.approx(0.8 * (loss_s + loss_t).item(), rel=1e-5)
        assert m.memory.z.double().tolist() == pytest.approx([z_s.item(), z_t.item()],
                                                             rel=1e-5)
    assert losses["kd"].item() == 0.0


def test_memory_update_is_the_momentum_formula_on_the_batch_rows_only():
    m = make()
    x, y, index = batch()
    v_s, v_t = embeddings(m, x)
    before = {"student": m.memory.student.clone(), "teacher": m.memory.teacher.clone()}
    m(x, y, 0, index=index)
    for name, v in (("student", v_s), ("teacher", v_t)):
        new = MOMENTUM * before[name][index].double() + (1 - MOMENTUM) * v
        new = new / new.norm(dim=1, keepdim=True)
        bank = getattr(m.memory, name)
        torch.testing.assert_close(bank[index].double(), new, rtol=1e-5, atol=1e-6)
        rest = torch.ones(N, dtype=torch.bool)
        rest[index] = False
        assert torch.equal(bank[rest], before[name][rest])
    trained = m.memory.state_dict()
    m.eval()(x, y, 0, index=index)  # no update outside training
    assert all(torch.equal(v, m.memory.state_dict()[k]) for k, v in trained.items())


def test_gradients_reach_the_student_and_both_embeddings_never_the_teacher_or_memory():
    m = make()
    x, y, index = batch()
    _, losses = m(x, y, 0, index=index)
    losses["crd"].backward(retain_graph=True)
    classifier = {id(p) for p in m.student.classifier.parameters()}
    for name, p in m.student.named_parameters():
        assert (p.grad is None) == (id(p) in classifier), name  # CRD reads the pooled feature
    for p in [*m.embed_s.parameters(), *m.embed_t.parameters()]:
        assert p.grad is not None and p.grad.abs().sum() > 0
    assert all(p.grad is None for p in m.teacher.parameters())
    assert not any(b.requires_grad for b in m.memory.buffers())
    sum(losses.values()).backward()
    assert all(p.grad is not None for p in m.student.parameters())
    trained = {id(p) for ps in m.optim_groups().values() for p in ps}
    assert trained == {id(p) for mod in (m.student, m.embed_s, m.embed_t)
                       for p in mod.parameters()}


def step(m, seed):
    x, y, index = batch(seed)
    _, losses = m(x, y, 0, index=index)
    return {k: v.item() for k, v in losses.items()}


def test_state_dict_holds_the_memory_and_resumes_exactly():
    m = make()
    step(m, 1)
    state = {k: v.clone() for k, v in m.state_dict().items()}
    assert state["memory.student"].shape == (N, 128) and (state["memory.z"] > 0).all()
    rng = torch.get_rng_state()
    after = step(m, 2)
    unbound = make(bind=False)  # what the analysis does: no bind_data, then the checkpoint
    unbound.load_state_dict(state)
    assert all(torch.equal(v, unbound.state_dict()[k]) for k, v in state.items())
    resumed = make()
    resumed.load_state_dict(state)
    torch.set_rng_state(rng)
    assert step(resumed, 2) == after
    assert all(torch.equal(v, resumed.state_dict()[k]) for k, v in m.state_dict().items())
    with pytest.raises(UserError, match="holds 60 images but this training set has 70"):
        make(labels=torch.arange(70) % 10).load_state_dict(state)


@pytest.mark.parametrize("k", [30, 200], ids=["without-replacement", "with-replacement"])
def test_exact_negatives_are_uniform_over_other_classes(k):
    g = torch.Generator().manual_seed(0)
    labels = torch.randint(0, 4, (N,), generator=g)  # unequal classes
    m = make(labels=labels)
    y = labels[torch.arange(400) % N]
    neg = m.memory.negatives(y, k)
    assert neg.shape == (400, k)
    assert (labels[neg] != y[:, None]).all()
    distinct = torch.tensor([len(set(row.tolist())) for row in neg])
    others = N - torch.bincount(labels)[y]
    assert (distinct == k).all() if k == 30 else (distinct <= others).all()
    for c in range(4):  # every image of another class equally likely
        counts = torch.bincount(neg[y == c].flatten(), minlength=N)[labels != c].double()
        expected = counts.sum() / len(counts)
        assert ((counts - expected).abs() < 5 * expected.sqrt() + 1).all(), c


def _rank_main(rank, folder, v_s, v_t, p_s, p_t, index):
    """One rank: its shard (every other row) through the Z estimate and the update."""
    os.environ.setdefault("GLOO_SOCKET_IFNAME", "lo")
    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=f"file://{folder}/store", rank=rank,
                            world_size=2)
    try:
        m = make()
        m.memory._estimate_z(p_s[rank::2], p_t[rank::2])
        m.memory.update(v_s[rank::2], v_t[rank::2], index[rank::2], MOMENTUM)
        torch.save(dict(m.memory.state_dict()), Path(folder) / f"rank{rank}.pt")
    finally:
        dist.destroy_process_group()


@pytest.mark.slow
def test_two_ranks_apply_the_global_batchs_update_and_z(tmp_path):
    g = torch.Generator().manual_seed(3)
    v_s, v_t = (torch.nn.functional.normalize(torch.randn(B, 128, generator=g), dim=1)
                for _ in range(2))
    p_s, p_t = (torch.rand(B, K + 1, generator=g) for _ in range(2))
    index = torch.randperm(N, generator=g)[:B]
    ctx = mp.spawn(_rank_main, nprocs=2, join=False,
                   args=(str(tmp_path), v_s, v_t, p_s, p_t, index))
    deadline = time.monotonic() + 120
    while not ctx.join(timeout=1):
        assert time.monotonic() < deadline, "two ranks did not finish"
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    single = make().memory
    single._estimate_z(p_s, p_t)
    single.update(v_s, v_t, index, MOMENTUM)
    for name in ("student", "teacher", "z"):
        assert torch.equal(ranks[0][name], ranks[1][name]), name
    for name in ("student", "teacher"):
        assert torch.equal(ranks[0][name], getattr(single, name)), name
    torch.testing.assert_close(ranks[0]["z"], single.z, rtol=1e-6, atol=0)

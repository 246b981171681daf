"""Contrastive Representation Distillation (Tian et al., ICLR 2020) as RepDistiller runs it
(HobbitLong/RepDistiller b84f547: crd/criterion.py, crd/memory.py, helper/loops.py, mode 'exact'
of dataset/cifar100.py; scripts/run_cifar_distill.sh for the weights):

    v_s = l2norm(W_s f_s + b_s), v_t = l2norm(W_t f_t + b_t)     f: pooled features (feat[-1])
    P_s[i, j] = exp(M_t[c_ij] . v_s[i] / T) / Z_s,  P_t[i, j] = exp(M_s[c_ij] . v_t[i] / T) / Z_t
    c_i0 = index[i] (its own slot), c_i1..c_iK: K images of other classes
    NCE(P) = -1/B sum_i [log P_i0 / (P_i0 + K/N + eps) + sum_j>0 log (K/N) / (P_ij + K/N + eps)]
    L = ce_weight * CE + kd_weight * KD_T + crd_weight * (NCE(P_s) + NCE(P_t))

M_s, M_t are memory banks of one unit vector per training image (N of them); Z is fixed on the
first batch (mean(P) * N); after the loss, M[index] <- l2norm(m M[index] + (1 - m) v).
CRD is `crd.kd_weight: 0` (the reference's -a 0 -b 0.8), CRD+KD `crd.kd_weight: 1`.

Under DDP every rank gathers the global batch's indices and embeddings and applies the same
update, and Z is estimated on the global batch, so the banks stay identical without DDP's
per-step broadcast (which would send N x feat_dim x 2 floats every step).
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from pydantic import Field
from torch import Tensor, nn
from torch import distributed as dist
from torch.nn import functional as F

from sdkd_core.config import MethodConfig
from sdkd_core.distillers.base import Distiller
from sdkd_core.distributed import distributed
from sdkd_core.errors import UserError
from sdkd_core.losses import kd_loss

EPS = 1e-7  # crd/criterion.py `eps`
# Random keys drawn at once when sampling negatives without replacement (rows x images).
KEY_CHUNK = 1 << 25


class CRDConfig(MethodConfig):
    ce_weight: float = Field(1.0, ge=0)  # train_student.py -r (gamma), default 1
    kd_weight: float = Field(0.0, ge=0)  # -a: 0 for CRD, 1 for CRD+KD (run_cifar_distill.sh)
    crd_weight: float = Field(0.8, ge=0)  # -b 0.8 (run_cifar_distill.sh, README)
    temperature: float = Field(4.0, gt=0)  # --kd_T 4, for the KD term only
    feat_dim: int = Field(128, ge=1)  # --feat_dim 128
    nce_k: int = Field(16384, ge=1)  # --nce_k 16384 negatives per image
    nce_t: float = Field(0.07, gt=0)  # --nce_t 0.07
    nce_m: float = Field(0.5, ge=0, le=1)  # --nce_m 0.5, the memory's momentum


class Embed(nn.Module):
    """crd/criterion.py `Embed`: a linear map, then division by the L2 norm (no eps)."""

    def __init__(self, dim_in: int, dim_out: int):
        super().__init__()
        self.linear = nn.Linear(dim_in, dim_out)

    def forward(self, x: Tensor) -> Tensor:
        x = self.linear(x.flatten(1))
        return x.div(x.pow(2).sum(1, keepdim=True).pow(0.5))


def contrast_loss(p: Tensor, n_data: int) -> Tensor:
    """crd/criterion.py `ContrastLoss` on P [B, 1 + K] (column 0: the positive), noise 1/N."""
    b, m = p.shape[0], p.shape[1] - 1
    noise = m / float(n_data)
    p_pos, p_neg = p[:, 0], p[:, 1:]
    log_d1 = p_pos.div(p_pos.add(noise + EPS)).log()
    log_d0 = torch.full_like(p_neg, noise).div(p_neg.add(noise + EPS)).log()
    return -(log_d1.sum(0) + log_d0.sum()) / b


def gather_ranks(t: Tensor) -> Tensor:
    """`t` of every rank, concatenated in rank order (itself without a process group)."""
    if not distributed() or dist.get_world_size() == 1:
        return t
    parts = [torch.empty_like(t) for _ in range(dist.get_world_size())]
    dist.all_gather(parts, t.contiguous())
    return torch.cat(parts)


class ContrastMemory(nn.Module):
    """crd/memory.py `ContrastMemory` as buffers sized by the training set (`bind`): the banks
    (`student` = memory_v1, `teacher` = memory_v2) and Z ([Z_s, Z_t], -1 until estimated) go
    into the state_dict; the labels, from which negatives are drawn, are rebuilt by `bind`."""

    def __init__(self, feat_dim: int):
        super().__init__()
        self.feat_dim = feat_dim
        self.register_buffer("student", torch.empty(0, feat_dim))
        self.register_buffer("teacher", torch.empty(0, feat_dim))
        self.register_buffer("z", torch.full((2,), -1.0))
        long = torch.empty(0, dtype=torch.long)
        for name in ("labels", "by_class", "class_start", "class_count"):
            self.register_buffer(name, long.clone(), persistent=False)
        self._z: list[float] | None = None  # Z as Python floats, read once (no sync a step)

    @property
    def n_data(self) -> int:
        return self.student.shape[0]

    def bind(self, labels: Tensor) -> None:
        """Fresh banks for these training labels, initialised as the reference: uniform in
        [-stdv, stdv], stdv = 1 / sqrt(feat_dim / 3), from torch's global RNG."""
        labels = labels.detach().long().cpu()
        n, device = len(labels), self.z.device
        counts = torch.bincount(labels)
        if n == 0 or (counts == n).any():
            raise UserError("crd needs training images of at least two classes (its negatives "
                            "are images of other classes)")
        stdv = 1.0 / math.sqrt(self.feat_dim / 3)
        self.student = torch.rand(n, self.feat_dim).mul_(2 * stdv).add_(-stdv).to(device)
        self.teacher = torch.rand(n, self.feat_dim).mul_(2 * stdv).add_(-stdv).to(device)
        self.z.fill_(-1.0)
        self._z = None
        self.labels = labels.to(device)
        self.by_class = torch.argsort(labels, stable=True).to(device)
        self.class_count = counts.to(device)
        self.class_start = (counts.cumsum(0) - counts).to(device)

    def _load_from_state_dict(self, state_dict, prefix, *args, **kwargs):
        # Banks take the saved size, so a method built without bind_data (analysis) loads too.
        for name in ("student", "teacher"):
            saved, bank = state_dict.get(prefix + name), getattr(self, name)
            if saved is None or saved.shape == bank.shape:
                continue
            if len(self.labels) and saved.shape[0] != len(self.labels):
                raise UserError(f"the checkpoint's CRD memory holds {saved.shape[0]} images but "
                                f"this training set has {len(self.labels)}; resume on the same "
                                "data")
            setattr(self, name, torch.empty(saved.shape, dtype=bank.dtype, device=bank.device))
        self._z = None
        super()._load_from_state_dict(state_dict, prefix, *args, **kwargs)

    def sync_ranks(self) -> None:
        """Rank 0's banks and Z on every rank (DDP is told not to broadcast them)."""
        if distributed():
            for t in (self.student, self.teacher, self.z):
                dist.broadcast(t, src=0)
            self._z = None

    def negatives(self, y: Tensor, k: int) -> Tensor:
        """k training-set indices per label in `y`, all of other classes, uniformly: without
        replacement when the other classes hold at least k images, with replacement otherwise
        (dataset/cifar100.py: np.random.choice(cls_negative, k, replace=k > len))."""
        if not len(self.labels):
            raise UserError("crd: call bind_data(train_labels) before training")
        n, count = len(self.labels), self.class_count[y]
        others = n - count
        out = torch.empty(len(y), k, dtype=torch.long, device=y.device)
        spare = others >= k
        rows = spare.nonzero().flatten()
        # A uniform k-subset: the k smallest of iid uniform keys (chunks of KEY_CHUNK keys).
        for r in rows.split(max(1, KEY_CHUNK // n)) if len(rows) else ():
            keys = torch.rand(len(r), n, device=y.device)
            keys.masked_fill_(self.labels[None, :] == y[r, None], 2.0)  # own class barred
            out[r] = keys.topk(k, dim=1, largest=False, sorted=False).indices
        rows = (~spare).nonzero().flatten()
        if len(rows):  # position u among the other classes' images, in class order
            u = torch.rand(len(rows), k, dtype=torch.float64, device=y.device)
            u = (u * others[rows, None]).long().minimum(others[rows, None] - 1)
            start = self.class_start[y[rows]][:, None]
            out[rows] = self.by_class[u + (u >= start) * count[rows, None]]
        return out

    def probabilities(self, v_s: Tensor, v_t: Tensor, contrast: Tensor, t: float
                      ) -> tuple[Tensor, Tensor]:
        """P_s (v_s against the teacher bank) and P_t (v_t against the student bank) at the
        indices `contrast` [B, 1 + K], each divided by its Z (estimated on first use).

        The scores come from one [B, N] product, gathered at `contrast`: the reference gathers
        B x (1 + K) bank rows instead (B x 16385 x 128 floats a bank); the values are the same
        dot products summed in another order."""
        p_s = torch.exp(v_s.mm(self.teacher.t()).gather(1, contrast).div(t))
        p_t = torch.exp(v_t.mm(self.student.t()).gather(1, contrast).div(t))
        if self._z is None:
            if (self.z < 0).any():
                self._estimate_z(p_s, p_t)
            self._z = self.z.tolist()
        return p_s.div(self._z[0]), p_t.div(self._z[1])

    @torch.no_grad()
    def _estimate_z(self, p_s: Tensor, p_t: Tensor) -> None:
        # mean(P) * N on the global batch: the mean over ranks of equal shards' means.
        means = torch.stack([p_s.mean(), p_t.mean()])
        if distributed():
            dist.all_reduce(means)
            means /= dist.get_world_size()
        self.z.copy_(torch.where(self.z < 0, means * self.n_data, self.z))

    @torch.no_grad()
    def update(self, v_s: Tensor, v_t: Tensor, index: Tensor, momentum: float) -> None:
        """M[index] <- l2norm(m M[index] + (1 - m) v) for the whole global batch. Out of place:
        the forward's product saved the old bank for the backward."""
        index = gather_ranks(index)
        for name, v in (("student", gather_ranks(v_s.detach())),
                        ("teacher", gather_ranks(v_t.detach()))):
            bank = getattr(self, name)
            pos = bank.index_select(0, index).mul_(momentum).add_(torch.mul(v, 1 - momentum))
            norm = pos.pow(2).sum(1, keepdim=True).pow(0.5)
            setattr(self, name, bank.index_copy(0, index, pos.div(norm)))


class CRD(Distiller):
    name = "crd"
    label = "CRD"
    Config = CRDConfig
    batch_inputs: ClassVar[tuple[str, ...]] = ("index",)

    def __init__(self, student, teacher=None, config=None):
        super().__init__(student, teacher, config)
        c = self.config
        self.embed_s = Embed(student.classifier.in_features, c.feat_dim)
        self.embed_t = Embed(self.teacher.classifier.in_features, c.feat_dim)
        self.memory = ContrastMemory(c.feat_dim)
        # DDP would broadcast every buffer from rank 0 before each forward: the banks are
        # kept equal by the gathered update instead (sync_ranks once, at the first step).
        self._ddp_params_and_buffers_to_ignore = [
            f"memory.{n}" for n, _ in self.memory.named_buffers()]
        self._ranks_synced = False

    def bind_data(self, train_labels):
        self.memory.bind(train_labels)

    def optim_groups(self):
        # train_student.py: the embeddings train in the student's optimizer.
        return {"student": [*self.student.parameters(), *self.embed_s.parameters(),
                            *self.embed_t.parameters()]}

    def contrast_terms(self, f_s: Tensor, f_t: Tensor, contrast: Tensor
                       ) -> tuple[Tensor, Tensor, Tensor]:
        """NCE(P_s) + NCE(P_t) for pooled features and indices [B, 1 + K] (column 0: each
        image's own index), and the embeddings (v_s, v_t) for the memory update."""
        v_s, v_t = self.embed_s(f_s), self.embed_t(f_t)
        p_s, p_t = self.memory.probabilities(v_s, v_t, contrast, self.config.nce_t)
        n = self.memory.n_data
        return contrast_loss(p_s, n) + contrast_loss(p_t, n), v_s, v_t

    def forward(self, x, y, epoch, index=None):
        if index is None:
            raise UserError("crd needs each image's training-set index (batch_inputs 'index')")
        c = self.config
        out_t = self.teacher_output(x)
        out_s = self.student(x)
        if self.training and not self._ranks_synced:
            self.memory.sync_ranks()
            self._ranks_synced = True
        # exp(score / 0.07) in bf16 would be far off: the CRD head runs in float32.
        with torch.autocast(x.device.type, enabled=False):
            contrast = torch.cat([index[:, None], self.memory.negatives(y, c.nce_k)], 1)
            crd, v_s, v_t = self.contrast_terms(out_s.pooled.float(), out_t.pooled.float(),
                                                contrast)
            if self.training:
                self.memory.update(v_s, v_t, index, c.nce_m)
        return out_s.logits, {
            "ce": c.ce_weight * F.cross_entropy(out_s.logits, y),
            "kd": c.kd_weight * kd_loss(out_s.logits, out_t.logits, c.temperature),
            "crd": c.crd_weight * crd,
        }

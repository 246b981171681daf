"""DIST (Huang et al., NeurIPS 2022, "Knowledge Distillation from A Stronger Teacher"): the
student matches the teacher's relations, not its probabilities. With y = softmax(z / tau),

    inter = 1 - mean_i pearson(y_s[i, :], y_t[i, :])    (each sample, across the classes)
    intra = 1 - mean_c pearson(y_s[:, c], y_t[:, c])    (each class, across the batch)
    L = ce_weight * CE + kd_weight * tau^2 * (beta * inter + gamma * intra)

as hunto/image_classification_sota computes it (lib/models/losses/dist_kd.py, kd_loss.py; the
classification submodule of hunto/DIST_KD): Pearson = cosine similarity of the centred rows,
(a . b) / (|a| |b| + 1e-8). Defaults are its CIFAR-100 config
(configs/strategies/distill/dist_cifar.yaml: `kd: dist_t4`, ori_loss_weight 1, kd_loss_weight 2,
DIST(beta=1, gamma=1)). Its ImageNet configs (resnet_dist.yaml, dist_b2.yaml: `kd: dist`) use
tau 1 with the same weights: `dist.temperature=1`.

`dist.logit_standardize` has no reference: Sun et al. (CVPR 2024) apply their Z-score to KD,
DKD, CTKD and MLKD only. It is this project's extension, the same Z-score on both logits before
softmax(z / tau), as their code does for KD; off by default.
"""

from __future__ import annotations

from pydantic import Field
from torch import Tensor
from torch.nn import functional as F

from sdkd_core.config import MethodConfig
from sdkd_core.distillers.base import Distiller
from sdkd_core.losses import zscore_logits


class DISTConfig(MethodConfig):
    ce_weight: float = Field(1.0, ge=0)  # dist_cifar.yaml ori_loss_weight (ImageNet: 1 too)
    kd_weight: float = Field(2.0, ge=0)  # dist_cifar.yaml kd_loss_weight (ImageNet: 2 too)
    beta: float = Field(1.0, ge=0)  # inter-class weight: kd_loss.py builds DIST(beta=1, ...)
    gamma: float = Field(1.0, ge=0)  # intra-class weight: DIST(..., gamma=1, ...)
    temperature: float = Field(4.0, gt=0)  # dist_cifar.yaml `kd: dist_t4` (ImageNet `dist`: 1)
    logit_standardize: bool = False  # no reference (see above): Z-score both logits first


def pearson_rows(a: Tensor, b: Tensor, eps: float = 1e-8) -> Tensor:
    """Pearson correlation of each row of a with the same row of b, as the reference: the
    cosine of the centred rows, eps added to the product of their norms."""
    a = a - a.mean(1, keepdim=True)
    b = b - b.mean(1, keepdim=True)
    return (a * b).sum(1) / (a.norm(dim=1) * b.norm(dim=1) + eps)


def dist_relations(student_logits: Tensor, teacher_logits: Tensor, temperature: float
                   ) -> tuple[Tensor, Tensor]:
    """(inter, intra) of DIST, each times tau^2, on softmax(z / tau) in float32."""
    y_s = F.softmax(student_logits.float() / temperature, dim=1)
    y_t = F.softmax(teacher_logits.float() / temperature, dim=1)
    scale = temperature**2
    inter = 1 - pearson_rows(y_s, y_t).mean()
    intra = 1 - pearson_rows(y_s.t(), y_t.t()).mean()
    return scale * inter, scale * intra


class DIST(Distiller):
    name = "dist"
    label = "DIST"
    Config = DISTConfig

    def forward(self, x, y, epoch):
        c = self.config
        z_t = self.teacher_output(x).logits
        z_s = self.student(x).logits
        s, t = (zscore_logits(z_s), zscore_logits(z_t)) if c.logit_standardize else (z_s, z_t)
        inter, intra = dist_relations(s, t, c.temperature)
        return z_s, {"ce": c.ce_weight * F.cross_entropy(z_s.float(), y),
                     "inter": c.kd_weight * c.beta * inter,
                     "intra": c.kd_weight * c.gamma * intra}


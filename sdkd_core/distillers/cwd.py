"""Channel-wise distillation (Shu et al., ICCV 2021), for dense tasks.

Each channel of a map becomes a distribution over the pixels (a softmax over H*W at
temperature T), and the student's is pulled to the teacher's by KL, T^2-scaled and averaged
over images and channels:

    CWD(s, t) = T^2 / (N*C) * sum_{n,c} KL(softmax(t_nc / T) || softmax(s_nc / T))

as winycg/CIRKD's `CriterionCWD(norm_type='channel', divergence='kl', temperature=4)`
(losses/cwd.py) computes it. CIRKD's recipe (scripts/train_kd/train_cwd.sh, train_kd.py) sums
CE, per-pixel KD at T=1 (weight 1), CWD on the logits (weight 3) and CWD on the features (weight
50, the student's map through a 1x1 conv to the teacher's channels, trained with the student).
Deviations, all in docs/baselines.md: CIRKD's adversarial term (a discriminator, weights 0.001 /
0.1) is left out; its logits are the head's 1/8-resolution map and ours the model's output at
the input's resolution; its feature is the head's map after ASPP and ours the backbone's last
stage (`feats[-1]`).
"""

from __future__ import annotations

from pydantic import Field
from torch import nn
from torch.nn import functional as F

from sdkd_core.config import MethodConfig
from sdkd_core.distillers.base import Distiller
from sdkd_core.losses import resize_to


def cwd_loss(student, teacher, temperature: float):
    """Channel-wise KL of maps [N, C, H, W] (teacher: the target)."""
    n, c = student.shape[:2]
    t = temperature
    log_s = F.log_softmax(student.float().flatten(2) / t, dim=-1)
    log_t = F.log_softmax(teacher.float().flatten(2) / t, dim=-1)
    return (log_t.exp() * (log_t - log_s)).sum() * t * t / (n * c)


class CWDConfig(MethodConfig):
    ce_weight: float = Field(1.0, ge=0)
    kd_weight: float = Field(1.0, ge=0)
    kd_temperature: float = Field(1.0, gt=0)
    logit_weight: float = Field(3.0, ge=0)
    feat_weight: float = Field(50.0, ge=0)
    temperature: float = Field(4.0, gt=0)


class CWD(Distiller):
    name = "cwd"
    label = "CWD"
    Config = CWDConfig
    requires = frozenset({"dense", "class_scores"})

    def __init__(self, student, teacher=None, config=None):
        super().__init__(student, teacher, config)
        c_s, c_t = student.stage_channels[-1], self.teacher.stage_channels[-1]
        self.connector = nn.Conv2d(c_s, c_t, 1, bias=False)

    def forward(self, x, y, epoch):
        c, task = self.config, self.task
        out_t = self.teacher_output(x)
        out_s = self.student(x)
        z_s = out_s.logits
        f_s = self.connector(out_s.feats[-1])
        f_t = resize_to(out_t.feats[-1], tuple(f_s.shape[-2:]))
        return z_s, {
            "ce": c.ce_weight * task.supervised_loss(z_s, y),
            "kd": c.kd_weight * task.distill_loss(z_s, out_t.logits, c.kd_temperature),
            "cwd_logit": c.logit_weight * cwd_loss(z_s, out_t.logits, c.temperature),
            "cwd_feat": c.feat_weight * cwd_loss(f_s, f_t, c.temperature),
        }

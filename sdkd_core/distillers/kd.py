"""Hinton et al.'s knowledge distillation: weighted CE plus T^2-scaled KL to the teacher.

`kd.logit_standardize` adds Sun et al.'s Z-score (CVPR 2024; sunshangquan/logit-standardization-KD,
mdistiller/distillers/KD.py): student and teacher logits are each standardised over the classes
before the KL, the temperature still divides them (their recipe: T 2, KD weight 9, CE 0.1; set
those too, the switch alone changes nothing else). CE stays on the raw logits, as theirs.
"""

from __future__ import annotations

from pydantic import Field
from torch.nn import functional as F

from sdkd_core.config import MethodConfig
from sdkd_core.distillers.base import Distiller
from sdkd_core.losses import kd_loss, zscore_logits


class KDConfig(MethodConfig):
    ce_weight: float = Field(0.1, ge=0)
    kd_weight: float = Field(0.9, ge=0)
    temperature: float = Field(4.0, gt=0)
    logit_standardize: bool = False


class KD(Distiller):
    name = "kd"
    label = "KD"
    Config = KDConfig

    def forward(self, x, y, epoch):
        c = self.config
        z_t = self.teacher_output(x).logits
        z_s = self.student(x).logits
        s, t = (zscore_logits(z_s), zscore_logits(z_t)) if c.logit_standardize else (z_s, z_t)
        return z_s, {"ce": c.ce_weight * F.cross_entropy(z_s, y),
                     "kd": c.kd_weight * kd_loss(s, t, c.temperature)}

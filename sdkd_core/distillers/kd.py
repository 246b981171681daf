"""Hinton et al.'s knowledge distillation: weighted CE plus T^2-scaled KL to the teacher."""

from __future__ import annotations

from pydantic import Field
from torch.nn import functional as F

from sdkd_core.config import MethodConfig
from sdkd_core.distillers.base import Distiller
from sdkd_core.losses import kd_loss


class KDConfig(MethodConfig):
    ce_weight: float = Field(0.1, ge=0)
    kd_weight: float = Field(0.9, ge=0)
    temperature: float = Field(4.0, gt=0)


class KD(Distiller):
    name = "kd"
    label = "KD"
    Config = KDConfig

    def forward(self, x, y, epoch):
        c = self.config
        z_t = self.teacher_output(x).logits
        z_s = self.student(x).logits
        return z_s, {"ce": c.ce_weight * F.cross_entropy(z_s, y),
                     "kd": c.kd_weight * kd_loss(z_s, z_t, c.temperature)}

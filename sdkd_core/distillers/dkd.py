"""Decoupled KD (Zhao et al., 2022): target and non-target class KD weighted separately."""

from __future__ import annotations

from pydantic import Field
from torch.nn import functional as F

from sdkd_core.config import MethodConfig
from sdkd_core.distillers.base import Distiller
from sdkd_core.losses import dkd_loss


class DKDConfig(MethodConfig):
    ce_weight: float = Field(1.0, ge=0)
    alpha: float = Field(1.0, ge=0)
    beta: float = Field(8.0, ge=0)
    temperature: float = Field(4.0, gt=0)
    # The paper warms the DKD term up over 20 of 240 epochs; as a fraction it scales to short runs.
    warmup: float = Field(20 / 240, ge=0, le=1)


class DKD(Distiller):
    name = "dkd"
    Config = DKDConfig
    ramp = 1.0  # the warm-up factor of the DKD term; set per epoch

    def begin_epoch(self, epoch, epochs):
        warm_epochs = self.config.warmup * epochs
        self.ramp = min((epoch + 1) / warm_epochs, 1.0) if warm_epochs > 0 else 1.0

    def epoch_metrics(self):
        return {"dkd_ramp": self.ramp}

    def forward(self, x, y, epoch):
        c = self.config
        z_t = self.teacher_output(x).logits
        z_s = self.student(x).logits
        dkd = dkd_loss(z_s, z_t, y, c.alpha, c.beta, c.temperature)
        return z_s, {"ce": c.ce_weight * F.cross_entropy(z_s, y),
                     "dkd": self.ramp * dkd}

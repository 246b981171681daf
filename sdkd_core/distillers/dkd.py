"""Decoupled KD (Zhao et al., 2022): target and non-target class KD weighted separately.

`dkd.logit_standardize` adds Sun et al.'s Z-score (CVPR 2024; sunshangquan/logit-standardization-KD,
mdistiller/distillers/DKD.py) to both logits before DKD, the temperature still applied (their
recipe: T 2, alpha and beta times 9; set those too). CE stays on the raw logits, as theirs.
"""

from __future__ import annotations

from pydantic import Field
from torch.nn import functional as F

from sdkd_core.config import MethodConfig
from sdkd_core.distillers.base import Distiller
from sdkd_core.losses import dkd_loss, zscore_logits


class DKDConfig(MethodConfig):
    ce_weight: float = Field(1.0, ge=0)
    alpha: float = Field(1.0, ge=0)
    beta: float = Field(8.0, ge=0)
    temperature: float = Field(4.0, gt=0)
    # The DKD term ramps up linearly over this many epochs (step by step), as in the paper: its
    # weight dwarfs CE early on, and without the ramp short runs collapse to chance.
    warmup_epochs: float = Field(20.0, ge=0)
    logit_standardize: bool = False


class DKD(Distiller):
    name = "dkd"
    label = "DKD"
    Config = DKDConfig
    step, warmup_steps = 0, 0.0  # the DKD term ramps up linearly, step by step

    @classmethod
    def schedule_marks(cls, config, epochs):
        end = config.warmup_epochs
        return {"DKD warm-up end": end} if 0 < end < epochs else {}

    def begin_epoch(self, epoch, epochs, steps_per_epoch=1):
        # Derived from the epoch, not counted across it, so a resumed run ramps identically.
        self.step = epoch * steps_per_epoch
        self.warmup_steps = self.config.warmup_epochs * steps_per_epoch

    @property
    def ramp(self) -> float:
        return min((self.step + 1) / self.warmup_steps, 1.0) if self.warmup_steps > 0 else 1.0

    def epoch_metrics(self):
        return {"dkd_ramp": self.ramp}

    def forward(self, x, y, epoch):
        c = self.config
        z_t = self.teacher_output(x).logits
        z_s = self.student(x).logits
        s, t = (zscore_logits(z_s), zscore_logits(z_t)) if c.logit_standardize else (z_s, z_t)
        dkd = self.ramp * dkd_loss(s, t, y, c.alpha, c.beta, c.temperature)
        if self.training:
            self.step += 1
        return z_s, {"ce": c.ce_weight * F.cross_entropy(z_s, y), "dkd": dkd}

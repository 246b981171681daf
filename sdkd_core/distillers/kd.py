"""Hinton et al.'s knowledge distillation: weighted CE plus T^2-scaled KL to the teacher.

`kd.logit_standardize` adds Sun et al.'s Z-score (CVPR 2024; sunshangquan/logit-standardization-KD,
mdistiller/distillers/KD.py): student and teacher logits are each standardised over the classes
before the KL, the temperature still divides them (their recipe: T 2, KD weight 9, CE 0.1; set
those too, the switch alone changes nothing else). CE stays on the raw logits, as theirs.

On any task KD is the task's supervised loss plus its distillation term: Hinton's KL at every
pixel for segmentation (CIRKD's `CriterionKD`), regression to the teacher's output for depth.
"""

from __future__ import annotations

from pydantic import Field

from sdkd_core.config import MethodConfig
from sdkd_core.distillers.base import Distiller
from sdkd_core.errors import UserError
from sdkd_core.losses import zscore_logits


class KDConfig(MethodConfig):
    ce_weight: float = Field(0.1, ge=0)
    kd_weight: float = Field(0.9, ge=0)
    temperature: float = Field(4.0, gt=0)
    logit_standardize: bool = False


class KD(Distiller):
    name = "kd"
    label = "KD"
    Config = KDConfig
    requires = frozenset()  # any task: its supervised loss and distillation term

    @classmethod
    def check_task(cls, config, task):
        super().check_task(config, task)
        if config.logit_standardize and "image_logits" not in task.provides:
            raise UserError(f"kd.logit_standardize standardises a classifier's logits and "
                            f"{task.label} has none; set kd.logit_standardize: false")

    def forward(self, x, y, epoch):
        c, task = self.config, self.task
        z_t = self.teacher_output(x).logits
        z_s = self.student(x).logits
        s, t = (zscore_logits(z_s), zscore_logits(z_t)) if c.logit_standardize else (z_s, z_t)
        return z_s, {"ce": c.ce_weight * task.supervised_loss(z_s, y),
                     "kd": c.kd_weight * task.distill_loss(s, t, c.temperature)}

"""Attention transfer (Zagoruyko & Komodakis, 2017): match normalised spatial attention maps of
every student stage to the teacher's matching stage."""

from __future__ import annotations

from pydantic import Field
from torch.nn import functional as F

from sdkd_core.config import MethodConfig
from sdkd_core.distillers.base import Distiller, teacher_stage
from sdkd_core.losses import at_loss


class ATConfig(MethodConfig):
    at_weight: float = Field(1000.0, ge=0)
    p: int = Field(2, ge=1)


class AT(Distiller):
    name = "at"
    label = "AT"
    Config = ATConfig

    def __init__(self, student, teacher=None, config=None):
        super().__init__(student, teacher, config)
        n = student.num_stages
        self.pairs = [(j, teacher_stage(j, student, self.teacher)) for j in range(1, n + 1)]

    def forward(self, x, y, epoch):
        f_t = self.teacher_output(x).feats
        out_s = self.student(x)
        at = sum(at_loss(out_s.feats[j], f_t[jt], self.config.p) for j, jt in self.pairs)
        return out_s.logits, {"ce": F.cross_entropy(out_s.logits, y),
                              "at": self.config.at_weight * at}

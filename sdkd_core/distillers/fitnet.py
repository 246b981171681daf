"""FitNets (Romero et al., 2015), one-stage: a 1x1 regressor maps a middle student stage onto
the teacher's matching stage, trained jointly with CE."""

from __future__ import annotations

from pydantic import Field
from torch import nn
from torch.nn import functional as F

from sdkd_core.config import MethodConfig
from sdkd_core.distillers.base import Distiller, teacher_stage
from sdkd_core.errors import UserError
from sdkd_core.losses import resize_to


class FitNetConfig(MethodConfig):
    hint_weight: float = Field(100.0, ge=0)
    hint_stage: int | None = None  # student stage index; default: the middle stage


class FitNet(Distiller):
    name = "fitnet"
    label = "FitNet"
    Config = FitNetConfig

    def __init__(self, student, teacher=None, config=None):
        super().__init__(student, teacher, config)
        n = student.num_stages
        j = self.config.hint_stage if self.config.hint_stage is not None else (n + 1) // 2
        if not 1 <= j <= n:
            raise UserError(f"fitnet.hint_stage={j} but {student.name} has stages 1..{n}")
        self.j, self.jt = j, teacher_stage(j, student, self.teacher)
        c_s, c_t = student.stage_channels[j], self.teacher.stage_channels[self.jt]
        self.regressor = nn.Sequential(nn.Conv2d(c_s, c_t, 1, bias=False), nn.BatchNorm2d(c_t))

    def optim_groups(self):
        return {"student": [*self.student.parameters(), *self.regressor.parameters()]}

    def forward(self, x, y, epoch):
        f_t = self.teacher_output(x).feats[self.jt]
        out_s = self.student(x)
        hint = self.regressor(out_s.feats[self.j])
        target = resize_to(f_t, tuple(hint.shape[-2:]))
        return out_s.logits, {
            "ce": F.cross_entropy(out_s.logits, y),
            "hint": self.config.hint_weight * F.mse_loss(hint.float(), target.float()),
        }

"""SHAKE (Li et al., 2022): a shadow head on the frozen teacher's stage features, trained online
with the student so the student learns from a teacher-shaped proxy that moves with it."""

from __future__ import annotations

from typing import ClassVar

import torch
from pydantic import Field
from torch import nn
from torch.nn import functional as F

from sdkd_core.config import MethodConfig
from sdkd_core.distillers.base import Distiller
from sdkd_core.losses import kd_loss, resize_to


class ShakeConfig(MethodConfig):
    beta: float = Field(1.0, ge=0)  # weight of the four shadow terms
    kd_weight: float = Field(1.0, ge=0)
    temperature: float = Field(4.0, gt=0)


class ShadowHead(nn.Module):
    """Teacher stage maps -> 1x1 projections summed at the last stage's size -> conv3x3-BN-ReLU.
    The pooled result goes through the teacher's own (frozen) classifier."""

    def __init__(self, stage_channels: list[int]):
        super().__init__()
        last = stage_channels[-1]
        self.project = nn.ModuleList(nn.Conv2d(c, last, 1, bias=False) for c in stage_channels)
        self.fuse = nn.Sequential(nn.Conv2d(last, last, 3, padding=1, bias=False),
                                  nn.BatchNorm2d(last), nn.ReLU(inplace=True))

    def forward(self, maps: list[torch.Tensor]) -> torch.Tensor:
        size = tuple(maps[-1].shape[-2:])
        h = sum(p(resize_to(m, size)) for p, m in zip(self.project, maps, strict=True))
        return F.adaptive_avg_pool2d(self.fuse(h), 1).flatten(1)


class Shake(Distiller):
    name = "shake"
    label = "SHAKE"
    Config = ShakeConfig
    heads: ClassVar[dict[str, str]] = {"shadow": "SHAKE shadow head"}

    def __init__(self, student, teacher=None, config=None):
        super().__init__(student, teacher, config)
        self.shadow = ShadowHead(self.teacher.stage_channels[1:])

    def optim_groups(self):
        return {"student": list(self.student.parameters()),
                "shadow": list(self.shadow.parameters())}

    def _shadow_logits(self, teacher_feats):
        head = self.teacher.classifier
        return F.linear(self.shadow(teacher_feats[1:]), head.weight, head.bias)

    def extra_network(self, key):
        return ShadowNetwork(self)

    def forward(self, x, y, epoch):
        c = self.config
        out_t = self.teacher_output(x)
        z_t = out_t.logits
        z_s = self.student(x).logits
        z_sh = self._shadow_logits(out_t.feats)
        t = c.temperature
        return z_s, {
            "ce": F.cross_entropy(z_s, y),
            "kd": c.kd_weight * kd_loss(z_s, z_t, t),
            "student_from_shadow": c.beta * kd_loss(z_s, z_sh.detach(), t),
            "shadow_from_student": c.beta * kd_loss(z_sh, z_s.detach(), t),
            "shadow_ce": c.beta * F.cross_entropy(z_sh, y),
            "shadow_mse": c.beta * F.mse_loss(z_sh.float(), z_t.float()),
        }


class ShadowNetwork(nn.Module):
    """The shadow head as a network: images -> frozen teacher -> shadow head -> the teacher's
    classifier. Shares the method's modules; Grad-CAM looks at the head's fusing conv."""

    def __init__(self, shake: Shake):
        super().__init__()
        self.shake = shake
        self.cam_layer = shake.shadow.fuse

    def forward(self, x):
        return self.shake._shadow_logits(self.shake.teacher_output(x).feats)

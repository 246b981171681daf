"""SHAKE (Li et al., NeurIPS 2022): a shadow head on the frozen teacher's stage features, trained
online with the student so the student learns from a teacher-shaped proxy that moves with it.

By default this is what lliai/SHAKE runs (shake/models/util.py `Shake`, shake/helper/loops.py
`train_distill`, shake/scripts/run_cifar_distill.sh `-a 0 -b 1`):

    z_sh = fc_T(pool(fuse5(fuse3(fuse1(f1) + fuse2(f2)) + fuse4(f3))))   teacher's frozen fc
    every logit z <- pi * layer_norm(z) over the classes, before every loss
    L = ce_weight * CE(z_s, y) + kd_weight * KL_T(z_s||z_t)
        + beta * [KL_T(z_sh||z_s.detach) + KL_T(z_s||z_sh.detach) + CE(z_sh, y) + MSE(z_sh, z_t)]

`shake.head=project` and `shake.logit_standardize=false` bring back this project's former
variant (1x1 projections of every stage, raw logits) for ablations.
"""

from __future__ import annotations

from typing import ClassVar, Literal

import torch
from pydantic import Field
from torch import nn
from torch.nn import functional as F

from sdkd_core.config import MethodConfig
from sdkd_core.distillers.base import Distiller
from sdkd_core.errors import UserError
from sdkd_core.losses import layer_norm_logits, resize_to, shake_terms
from sdkd_core.models import StagedNet
from sdkd_core.models.base import conv_bn


class ShakeConfig(MethodConfig):
    head: Literal["reference", "project"] = "reference"
    logit_standardize: bool = True  # pi * layer_norm on every logit, as the reference
    logit_scale: float = Field(3.1415, gt=0)  # the reference's constant (3 before 2022-12)
    ce_weight: float = Field(1.0, ge=0)  # reference -r (gamma)
    kd_weight: float = Field(0.0, ge=0)  # reference -a (alpha): KL to the teacher, off
    beta: float = Field(1.0, ge=0)  # reference -b: weight of the four shadow terms
    temperature: float = Field(4.0, gt=0)  # reference --kd_T


def _block(cin: int, cout: int, kernel: int, stride: int = 1) -> nn.Sequential:
    return nn.Sequential(*conv_bn(cin, cout, kernel, stride))


def shadow_stages(teacher: StagedNet) -> tuple[int, int, int]:
    """The three teacher stages (feats indices) the reference head reads: the first three after
    the stem, as the reference does, when the third feeds the classifier's width; otherwise (a
    teacher the reference never ran, e.g. MobileNetV2) the last three."""
    n, widths = teacher.num_stages, teacher.stage_channels
    if n == 3 or (n > 3 and widths[3] == teacher.classifier.in_features):
        return 1, 2, 3
    return n - 2, n - 1, n


class ReferenceShadowHead(nn.Module):
    """lliai/SHAKE's head on three stage maps f1, f2, f3 of widths c1, c2, c3 (each stage halving
    the resolution): 3x3 stride-2 and 1x1 conv-BN-ReLU fusions, a final 3x3 conv-BN-ReLU."""

    def __init__(self, c1: int, c2: int, c3: int):
        super().__init__()
        self.fuse1, self.fuse2 = _block(c1, c2, 3, 2), _block(c2, c2, 1)
        self.fuse3, self.fuse4 = _block(c2, c3, 3, 2), _block(c3, c3, 1)
        self.fuse5 = _block(c3, c3, 3)
        for m in self.modules():  # the reference's init (BatchNorm's default is already 1, 0)
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    @property
    def cam_layer(self) -> nn.Module:  # a property: an attribute would register it twice
        return self.fuse5

    @staticmethod
    def _add(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        # A stride-2 conv matches the next stage exactly on CIFAR-sized maps; where a stage
        # rounds differently (28x28 VGG: 7 -> 3), pool to the next stage's size.
        return resize_to(a, tuple(b.shape[-2:])) + b

    def forward(self, maps: list[torch.Tensor]) -> torch.Tensor:
        f1, f2, f3 = maps
        h = self.fuse3(self._add(self.fuse1(f1), self.fuse2(f2)))
        h = self.fuse5(self._add(h, self.fuse4(f3)))
        return F.adaptive_avg_pool2d(h, 1).flatten(1)


class ProjectShadowHead(nn.Module):
    """This project's former head: every stage map 1x1-projected to the last stage's width,
    summed at the last stage's size, then conv3x3-BN-ReLU."""

    def __init__(self, stage_channels: list[int]):
        super().__init__()
        last = stage_channels[-1]
        self.project = nn.ModuleList(nn.Conv2d(c, last, 1, bias=False) for c in stage_channels)
        self.fuse = _block(last, last, 3)

    @property
    def cam_layer(self) -> nn.Module:
        return self.fuse

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
        widths = self.teacher.stage_channels
        if self.config.head == "reference":
            self.shadow_feats = list(shadow_stages(self.teacher))
            self.shadow = ReferenceShadowHead(*(widths[i] for i in self.shadow_feats))
        else:
            self.shadow_feats = list(range(1, self.teacher.num_stages + 1))
            self.shadow = ProjectShadowHead(widths[1:])

    @classmethod
    def check_pair(cls, config, teacher, student):
        if config.head == "reference" and teacher.num_stages < 3:
            raise UserError(f"shake.head=reference reads three teacher stages but {teacher.name} "
                            f"has {teacher.num_stages}; use shake.head=project")

    def optim_groups(self):
        return {"student": list(self.student.parameters()),
                "shadow": list(self.shadow.parameters())}

    def standardize(self, logits: torch.Tensor) -> torch.Tensor:
        c = self.config
        return layer_norm_logits(logits, c.logit_scale) if c.logit_standardize else logits

    def shadow_logits(self, teacher_feats: list[torch.Tensor]) -> torch.Tensor:
        """The head on the teacher's (detached) maps, through the teacher's frozen classifier."""
        fc = self.teacher.classifier
        pooled = self.shadow([teacher_feats[i] for i in self.shadow_feats])
        return F.linear(pooled, fc.weight.detach(), fc.bias.detach())

    def extra_network(self, key):
        return ShadowNetwork(self)

    def eval_logits(self, x):
        # Standardised as trained (the reference scores the same way); argmax is unchanged.
        z_sh = self.shadow_logits(self.teacher_output(x).feats)
        return {"student": self.standardize(self.student(x).logits),
                "shadow": self.standardize(z_sh)}

    def forward(self, x, y, epoch):
        c = self.config
        out_t = self.teacher_output(x)
        z_s = self.student(x).logits
        z_sh = self.shadow_logits(out_t.feats)
        std = self.standardize
        terms = shake_terms(std(z_s), std(out_t.logits), std(z_sh), y, c.temperature)
        weights = {"ce": c.ce_weight, "kd": c.kd_weight}
        return z_s, {k: weights.get(k, c.beta) * v for k, v in terms.items()}


class ShadowNetwork(nn.Module):
    """The shadow head as a network: images -> frozen teacher -> shadow head -> the teacher's
    classifier (-> standardised, as trained). Shares the method's modules; Grad-CAM looks at
    the head's last conv block."""

    def __init__(self, shake: Shake):
        super().__init__()
        self.shake = shake
        self.cam_layer = shake.shadow.cam_layer

    def forward(self, x):
        return self.shake.standardize(self.shake.shadow_logits(self.shake.teacher_output(x).feats))

"""FitNets (Romero et al., 2015) as RepDistiller's `--distill hint` (train_student.py, helper/
loops.py, models/util.py ConvReg), trained in one stage: CE + 100 * MSE between a regressed
student stage and the teacher's stage of the same index (2 by default, `--hint_layer 2`)."""

from __future__ import annotations

import torch
from pydantic import Field
from torch import nn
from torch.nn import functional as F

from sdkd_core.config import MethodConfig
from sdkd_core.distillers.base import Distiller, teacher_stage
from sdkd_core.errors import UserError
from sdkd_core.losses import resize_to
from sdkd_core.models import StagedNet

# The reference sizes the regressor from one probe pass of a 32x32 batch (train_student.py).
PROBE_SIDE = 32


class FitNetConfig(MethodConfig):
    hint_weight: float = Field(100.0, ge=0)  # the reference's -b 100
    hint_stage: int | None = None  # student stage index; default: 2, the reference's hint_layer


def conv_reg(s_shape: tuple[int, ...], t_shape: tuple[int, ...]) -> nn.Sequential:
    """ConvReg: a conv that maps a (C, H, W) student map onto the teacher's, then BN + ReLU.

    Half the teacher's side: 3x3 stride-2 conv; twice: 4x4 stride-2 transposed conv; otherwise a
    valid conv of side 1 + H_s - H_t (1x1 when equal). A teacher side beyond 2x the student's has
    no rule in the reference, which raises too.
    """
    (c_s, h_s, w_s), (c_t, h_t, w_t) = s_shape[-3:], t_shape[-3:]
    conv: nn.Module
    if h_s == 2 * h_t:
        conv = nn.Conv2d(c_s, c_t, 3, stride=2, padding=1)
    elif 2 * h_s == h_t:
        conv = nn.ConvTranspose2d(c_s, c_t, 4, stride=2, padding=1)
    elif h_s >= h_t:
        conv = nn.Conv2d(c_s, c_t, (1 + h_s - h_t, 1 + w_s - w_t))
    else:
        raise UserError(f"fitnet: no regressor from a {h_s}x{w_s} student map to a {h_t}x{w_t} "
                        "teacher map (sides beyond 2x larger); choose another fitnet.hint_stage")
    return nn.Sequential(conv, nn.BatchNorm2d(c_t), nn.ReLU(inplace=True))


def probe_shape(net: StagedNet, stage: int, side: int = PROBE_SIDE) -> tuple[int, int, int]:
    """(C, H, W) of feats[stage] for a side x side input, in eval mode (no BN statistics move)."""
    was_training = net.training
    ref = next(net.parameters())
    try:
        net.eval()
        with torch.no_grad():
            h = net.stem(torch.zeros(1, net.in_channels, side, side, device=ref.device,
                                     dtype=ref.dtype))
            for block in list(net.stages)[:stage]:
                h = block(h)
    finally:
        net.train(was_training)
    c, height, width = h.shape[1:]
    return c, height, width


def hint_stages(config: FitNetConfig, teacher: StagedNet, student: StagedNet) -> tuple[int, int]:
    """Student stage j and teacher stage jt: the same index, as the reference indexes both feature
    lists with hint_layer; relative depth only where the teacher has no stage j."""
    n = student.num_stages
    j = config.hint_stage if config.hint_stage is not None else min(2, n)
    if not 1 <= j <= n:
        raise UserError(f"fitnet.hint_stage={j} but {student.name} has stages 1..{n}")
    return j, j if j <= teacher.num_stages else teacher_stage(j, student, teacher)


class FitNet(Distiller):
    name = "fitnet"
    label = "FitNet"
    Config = FitNetConfig

    @classmethod
    def check_pair(cls, config, teacher, student):
        j, jt = hint_stages(config, teacher, student)
        conv_reg(probe_shape(student, j), probe_shape(teacher, jt))

    def __init__(self, student, teacher=None, config=None):
        super().__init__(student, teacher, config)
        self.j, self.jt = hint_stages(self.config, self.teacher, student)
        self.regressor = conv_reg(probe_shape(student, self.j),
                                  probe_shape(self.teacher, self.jt))

    def optim_groups(self):
        return {"student": [*self.student.parameters(), *self.regressor.parameters()]}

    def forward(self, x, y, epoch):
        f_t = self.teacher_output(x).feats[self.jt]
        out_s = self.student(x)
        hint = self.regressor(out_s.feats[self.j])
        # Equal on 32x32 inputs; off that geometry (28x28) a floor may leave a pixel's difference.
        target = resize_to(f_t, tuple(hint.shape[-2:]))
        return out_s.logits, {
            "ce": F.cross_entropy(out_s.logits, y),
            "hint": self.config.hint_weight * F.mse_loss(hint.float(), target.float()),
        }

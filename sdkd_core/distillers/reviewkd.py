"""ReviewKD (Chen et al., CVPR 2021, "Distilling Knowledge via Knowledge Review") as mdistiller's
`ReviewKD` (megvii-research/mdistiller a08d46f, mdistiller/distillers/ReviewKD.py; the paper's
dvlab-research/ReviewKD CIFAR-100/model/reviewkd.py is the same code).

The student's stage maps 1..N and its pooled feature (as a 1x1 map) are reviewed deepest first:
at each level an attention-based fusion (ABF) module projects the student's map, fuses it with
the deeper levels' fused map (nearest-upsampled, weighted by a per-pixel two-way attention) and
maps the result onto the teacher's channels and side. Each ABF output is matched with the
hierarchical context loss (HCL) to the teacher's map of the same level: its pre-activation stage
maps 1..N (`preact_feats`) and its pooled feature.

    loss = ce_weight * CE + reviewkd_weight * min((epoch + 1) / warmup_epochs, 1) * sum HCL
"""

from __future__ import annotations

import torch
from pydantic import Field
from torch import Tensor, nn
from torch.nn import functional as F

from sdkd_core.config import MethodConfig
from sdkd_core.distillers.base import Distiller
from sdkd_core.errors import UserError

# HCL's pyramid: the full map, then average pools to these sides (those below the map's side).
HCL_LEVELS = (4, 2, 1)


class ReviewKDConfig(MethodConfig):
    ce_weight: float = Field(1.0, ge=0)  # mdistiller cfg.py CFG.REVIEWKD.CE_WEIGHT
    # configs/cifar100/reviewkd.yaml REVIEWKD_WEIGHT (cfg.py's default is 1.0); the paper's
    # script/reviewKD.sh: 5 for most pairs, 0.6 resnet56->20, 1 resnet110->32, 8 ShuffleV2.
    reviewkd_weight: float = Field(5.0, ge=0)
    # cfg.py WARMUP_EPOCHS: the loss weight ramps min(epoch / 20, 1) per epoch, mdistiller's
    # epochs counted from 1 (so 1/20 in the first epoch); 0 turns the ramp off.
    warmup_epochs: float = Field(20.0, ge=0)
    # cfg.py MAX_MID_CHANNEL; the ABFs' width is min(this, the last stage's channels). ReviewKD.py
    # reads the setting but uses the literal 512, the same value.
    max_mid_channel: int = Field(512, ge=1)
    student_preact: bool = False  # cfg.py STU_PREACT: review the student's preact_feats


def hcl_loss(student_maps: list[Tensor], teacher_maps: list[Tensor]) -> Tensor:
    """Hierarchical context loss, summed over levels. Per level: MSE of the full maps (weight 1),
    then of their adaptive average pools to 4, 2, 1 (only sides below the map's), the weight
    halving at each pool used (1/2, 1/4, 1/8), normalised by the sum of the weights used."""
    total = torch.zeros((), device=student_maps[0].device)
    for fs, ft in zip(student_maps, teacher_maps, strict=True):
        fs, ft = fs.float(), ft.float()
        loss, weight, weight_sum = F.mse_loss(fs, ft), 1.0, 1.0
        for side in HCL_LEVELS:
            if side >= fs.shape[-2]:
                continue
            weight /= 2.0
            loss = loss + weight * F.mse_loss(F.adaptive_avg_pool2d(fs, side),
                                              F.adaptive_avg_pool2d(ft, side))
            weight_sum += weight
        total = total + loss / weight_sum
    return total


class ABF(nn.Module):
    """Attention-based fusion: 1x1 conv + BN onto `mid` channels; with a deeper level's map
    (`fuse`), x * a0 + up(residual) * a1 with a = sigmoid(1x1 conv(cat[x, up(residual)])) per
    pixel (up: nearest to x's side); nearest-resize to the teacher's side; 3x3 conv + BN onto the
    teacher's channels. Returns (output, the fused map the next shallower level fuses with)."""

    def __init__(self, in_channels: int, mid_channels: int, out_channels: int, fuse: bool):
        super().__init__()
        self.conv1 = nn.Sequential(nn.Conv2d(in_channels, mid_channels, 1, bias=False),
                                   nn.BatchNorm2d(mid_channels))
        self.conv2 = nn.Sequential(nn.Conv2d(mid_channels, out_channels, 3, padding=1, bias=False),
                                   nn.BatchNorm2d(out_channels))
        self.att_conv = (nn.Sequential(nn.Conv2d(2 * mid_channels, 2, 1), nn.Sigmoid())
                         if fuse else None)
        nn.init.kaiming_uniform_(self.conv1[0].weight, a=1)
        nn.init.kaiming_uniform_(self.conv2[0].weight, a=1)

    def forward(self, x: Tensor, residual: Tensor | None, out_size: tuple[int, int]
                ) -> tuple[Tensor, Tensor]:
        x = self.conv1(x)
        if self.att_conv is not None:
            residual = F.interpolate(residual, size=tuple(x.shape[-2:]), mode="nearest")
            attention = self.att_conv(torch.cat([x, residual], dim=1))
            x = x * attention[:, 0:1] + residual * attention[:, 1:2]
        if tuple(x.shape[-2:]) != tuple(out_size):
            x = F.interpolate(x, size=tuple(out_size), mode="nearest")
        return self.conv2(x), x


def review_channels(net) -> list[int]:
    """Channels of the reviewed levels: stage maps 1..N, then the pooled feature."""
    channels = net.stage_channels
    return [*channels[1:], channels[-1]]


def levels(maps: list[Tensor], pooled: Tensor) -> list[Tensor]:
    """Stage maps 1..N and the pooled feature as a 1x1 map, shallowest first."""
    return [*maps[1:], pooled[:, :, None, None]]


class ReviewKD(Distiller):
    name = "reviewkd"
    label = "ReviewKD"
    Config = ReviewKDConfig
    current_epoch = 0  # from 0, for the logged ramp

    @classmethod
    def check_pair(cls, config, teacher, student):
        # Each reviewed student level is matched with the teacher's level of the same index, as
        # the reference's zip of the two lists (a count mismatch pairs shifted levels there).
        if teacher.num_stages != student.num_stages:
            raise UserError(
                f"reviewkd matches each student stage with the teacher's stage of the same "
                f"index, but {student.name} has {student.num_stages} stages and {teacher.name} "
                f"{teacher.num_stages}; choose a teacher with {student.num_stages} stages")

    @classmethod
    def schedule_marks(cls, config, epochs):
        end = config.warmup_epochs - 1  # full weight from the reference's epoch `warmup_epochs`
        return {"ReviewKD warm-up end": end} if 0 < end < epochs else {}

    def __init__(self, student, teacher=None, config=None):
        super().__init__(student, teacher, config)
        s_channels, t_channels = review_channels(student), review_channels(self.teacher)
        mid = min(self.config.max_mid_channel, s_channels[-1])
        last = len(s_channels) - 1
        # Built shallowest first, as the reference, then held deepest first (the review order).
        abfs = [ABF(c_s, mid, c_t, fuse=k < last)
                for k, (c_s, c_t) in enumerate(zip(s_channels, t_channels, strict=True))]
        self.abfs = nn.ModuleList(abfs[::-1])

    def optim_groups(self):
        return {"student": [*self.student.parameters(), *self.abfs.parameters()]}

    def ramp(self, epoch: int) -> float:
        """The loss weight's warm-up at engine epoch `epoch` (from 0): the reference's
        min(epoch / warmup, 1) with its epochs counted from 1."""
        warmup = self.config.warmup_epochs
        return min((epoch + 1) / warmup, 1.0) if warmup > 0 else 1.0

    def begin_epoch(self, epoch, epochs, steps_per_epoch=1):
        self.current_epoch = epoch

    def epoch_metrics(self):
        return {"reviewkd_ramp": self.ramp(self.current_epoch)}

    def review(self, student_levels: list[Tensor], sizes: list[tuple[int, int]]) -> list[Tensor]:
        """The ABF outputs, shallowest first, for student levels (shallowest first) resized to
        the teacher's sides `sizes`. mdistiller's SHAPES are the student's sides and OUT_SHAPES
        the teacher's, hard-coded for 32x32; here both are read off the maps."""
        deepest_first, sizes = student_levels[::-1], sizes[::-1]
        out, residual = self.abfs[0](deepest_first[0], None, sizes[0])
        outputs = [out]
        for feat, abf, size in zip(deepest_first[1:], self.abfs[1:], sizes[1:], strict=True):
            out, residual = abf(feat, residual, size)
            outputs.insert(0, out)
        return outputs

    def forward(self, x, y, epoch):
        c = self.config
        out_t = self.teacher_output(x, preact=True)
        out_s = self.student(x, preact=c.student_preact)
        s_maps = out_s.preact_feats if c.student_preact else out_s.feats
        teacher_levels = levels(out_t.preact_feats, out_t.pooled)
        outputs = self.review(levels(s_maps, out_s.pooled),
                              [tuple(t.shape[-2:]) for t in teacher_levels])
        review = hcl_loss(outputs, teacher_levels)
        return out_s.logits, {
            "ce": c.ce_weight * F.cross_entropy(out_s.logits, y),
            "reviewkd": c.reviewkd_weight * self.ramp(epoch) * review,
        }

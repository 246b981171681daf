"""SDKD, Student-Driven Knowledge Distillation (Qi et al., ICME 2025).

The proxy teacher is the student's own architecture *and weights*, run from fusion stage j on
the output of a Feature Fusion Block that mixes the student's stage-j map with the teacher's:

    h   = FFB([f_s[j].detach(), resize(f_t[j'])])            only the FFB learns from L_PT
    z_p = student.forward_from(j, h) with detached weights   the proxy's own BatchNorm statistics

    L_PT = CE(z_p, y) + KL_T(z_p||z_t) + L1(f_p, f_s) + lambda * KL_T(z_p||z_s)
    L_S  = CE(z_s, y) + KL_T(z_s||z_t) + k * [L1(f_s, f_p) + KL_T(z_s||z_p)]

k is 0 before the phase boundary and 1 after; targets are detached, so L_PT reaches only the
FFB and L_S only the student, and one backward of their sum trains both.

CE and KL_T are the task's supervised loss and distillation term (`sdkd_core.tasks`), so the
same SDKD runs on segmentation and depth, where the proxy is the student's network from the
fusion stage on: its remaining backbone stages and its decoder.

The proxy normalises with batch statistics in training and keeps running statistics of its own
(`sdkd_core.proxy_stats`) for every evaluation and explanation of it: the student's describe the
student's maps, not the FFB's output. A proxy pass never touches the student's statistics.
"""

from __future__ import annotations

import copy
from typing import ClassVar, Literal

import torch
from pydantic import Field
from torch import nn
from torch.func import functional_call

from sdkd_core.claims import (
    AttendsLikeTeacher,
    BeatsTunedBaselines,
    HeadCloserToTeacher,
    SettingBeats,
)
from sdkd_core.config import MethodConfig
from sdkd_core.distillers.base import Distiller, cam_layer, teacher_stage
from sdkd_core.errors import UserError
from sdkd_core.ffb import FeatureFusionBlock
from sdkd_core.losses import feature_l1, resize_to
from sdkd_core.models import ModelOutput, StagedNet
from sdkd_core.proxy_stats import ProxyStatistics


class SDKDConfig(MethodConfig):
    lam: float = Field(1.0, ge=0, alias="lambda")
    phase_boundary: float = Field(0.5, ge=0, le=1)  # fraction of the epochs before k = 1
    ffb_depth: int = Field(1, ge=1)
    fuse_stage: int | None = None  # student stage index; default: the second-to-last stage
    proxy_weights: Literal["live", "snapshot"] = "live"
    proxy_arch: Literal["student", "teacher"] = "student"
    use_teacher_feats: bool = True
    temperature: float = Field(4.0, gt=0)
    # Per-term weights: the student's loss ...
    ce_weight: float = Field(1.0, ge=0)
    kd_weight: float = Field(1.0, ge=0)
    proxy_feat_weight: float = Field(1.0, ge=0)
    proxy_kd_weight: float = Field(1.0, ge=0)
    # ... and the proxy teacher's.
    pt_ce_weight: float = Field(1.0, ge=0)
    pt_kd_weight: float = Field(1.0, ge=0)
    pt_feat_weight: float = Field(1.0, ge=0)


def fusable_stages(student: StagedNet) -> range:
    """Stages after which a proxy still has at least one stage of its own to run."""
    return range(0, student.num_stages)


class _ForwardFrom(nn.Module):
    """Lets torch.func.functional_call run `forward_from` with substituted weights."""

    def __init__(self, net: StagedNet):
        super().__init__()
        self.net = net

    def forward(self, i: int, h: torch.Tensor) -> ModelOutput:
        return self.net.forward_from(i, h)


def fuse_stage(config: SDKDConfig, student: StagedNet) -> int:
    return config.fuse_stage if config.fuse_stage is not None else student.num_stages - 1


class SDKD(Distiller):
    name = "sdkd"
    label = "SDKD"
    Config = SDKDConfig
    heads: ClassVar[dict[str, str]] = {"proxy": "SDKD proxy teacher"}
    claims = (
        BeatsTunedBaselines("SDKD (tuned) beats each tuned baseline, on every pair"),
        AttendsLikeTeacher("SDKD's student attends like the teacher at least as closely as "
                           "DML's, and more closely than SHAKE's (Grad-CAM++)",
                           at_least_as=("dml",), more_than=("shake",)),
        HeadCloserToTeacher("SDKD's proxy teacher attends more like the pretrained teacher "
                            "than SDKD's student does (Grad-CAM++)", head="proxy"),
        SettingBeats("A student-shaped proxy teacher beats a teacher-shaped one",
                     key="sdkd.proxy_arch", better="student", worse="teacher"),
    )
    k = 0.0  # set per epoch by begin_epoch
    # Any task: L_PT and L_S are written with the task's supervised loss and distillation term
    # (CE and KL_T for classification; per pixel for segmentation; regression for depth). On a
    # dense model the proxy runs the student's later backbone stages and its decoder.
    requires = frozenset()

    @classmethod
    def check_pair(cls, config, teacher, student):
        j, valid = fuse_stage(config, student), fusable_stages(student)
        if j not in valid:
            raise UserError(f"sdkd.fuse_stage={j} but {student.name} can fuse at stages "
                            f"{valid.start}..{valid.stop - 1}; choose one of those")

    @classmethod
    def first_epoch_configured(cls, config, epochs):
        # Before k turns 1 the student trains on labels and the teacher alone: nothing the
        # proxy's settings choose reaches it.
        return round(config.phase_boundary * epochs)

    @classmethod
    def schedule_marks(cls, config, epochs):
        # k turns 1 at the first epoch >= phase_boundary * epochs (see begin_epoch)
        return {"SDKD phase boundary": round(config.phase_boundary * epochs)}

    def __init__(self, student, teacher=None, config=None):
        super().__init__(student, teacher, config)
        c = self.config
        j = fuse_stage(c, student)  # checked by check_pair in Distiller.__init__
        self.j = j
        self.jt = min(teacher_stage(j, student, self.teacher), self.teacher.num_stages - 1)
        c_s, c_t = student.stage_channels[j], self.teacher.stage_channels[self.jt]
        teacher_in = c_t if c.use_teacher_feats else 0
        if c.proxy_arch == "student":
            self.ffb = FeatureFusionBlock(c_s, teacher_in, c.ffb_depth)
            self.connector = nn.Identity()
        else:  # a teacher-shaped proxy: fuse at the teacher's size, run the teacher's stages
            self.ffb = FeatureFusionBlock(c_s, teacher_in, c.ffb_depth, out_channels=c_t)
            self.connector = nn.Conv2d(self.teacher.stage_channels[-1],
                                       student.stage_channels[-1], 1, bias=False)
        if c.proxy_weights == "snapshot":
            self.snapshot = copy.deepcopy(student).requires_grad_(False)
            self.register_buffer("snapshot_taken", torch.zeros((), dtype=torch.bool))
        # Unregistered views (lists), so the student is not saved or wrapped twice.
        self._views = [_ForwardFrom(student)]
        if c.proxy_weights == "snapshot":
            self._views.append(_ForwardFrom(self.snapshot))
        # A teacher-shaped proxy runs the frozen teacher in eval mode: no statistics to keep.
        self.proxy_stats = ProxyStatistics(student if c.proxy_arch == "student" else None, j)

    # ------------------------------------------------------------ schedule

    def begin_epoch(self, epoch, epochs, steps_per_epoch=1):
        self.k = 1.0 if epoch >= round(self.config.phase_boundary * epochs) else 0.0
        if self.config.proxy_weights == "snapshot" and self.k and not self.snapshot_taken:
            self.snapshot.load_state_dict(self.student.state_dict())
            self.snapshot_taken.fill_(True)

    def epoch_metrics(self):
        return {"k": self.k}

    def optim_groups(self):
        return {"student": list(self.student.parameters()),
                "ffb": [*self.ffb.parameters(), *self.connector.parameters()]}

    # ------------------------------------------------------------ proxy teacher

    def proxy(self, student_feats, teacher_feats) -> ModelOutput:
        """The proxy teacher's output; gradients reach the FFB (and connector) only."""
        if self.config.proxy_arch == "teacher":
            return self.fused_pass(student_feats, teacher_feats, self.teacher)  # frozen, eval
        use_snapshot = self.config.proxy_weights == "snapshot" and bool(self.snapshot_taken)
        view = self._views[1] if use_snapshot else self._views[0]
        # Detached weights: no gradient to the student. Buffers: the proxy's own statistics for
        # the BatchNorm layers it runs (updated there in training mode, used in eval mode), copies
        # for the rest, so the student's running statistics stay exactly as they are.
        own = self.proxy_stats.by_name("net.")
        state = {name: p.detach() for name, p in view.named_parameters()}
        state.update({name: own[name] if name in own else b.clone()
                      for name, b in view.named_buffers()})
        return self.fused_pass(student_feats, teacher_feats,
                               lambda i, h: functional_call(view, state, (i, h)))

    def proxy_body(self) -> StagedNet:
        """The network whose later stages the proxy runs: the student, its snapshot, or the
        (frozen) teacher."""
        if self.config.proxy_arch == "teacher":
            return self.teacher
        if self.config.proxy_weights == "snapshot" and bool(self.snapshot_taken):
            return self.snapshot
        return self.student

    def fused_pass(self, student_feats, teacher_feats, body) -> ModelOutput:
        """FFB(student map j, teacher map j') run through `body` from the fusion stage on;
        `body` is a StagedNet or a `forward_from`-like callable (i, h) -> ModelOutput."""
        c = self.config
        forward_from = body.forward_from if isinstance(body, StagedNet) else body
        f_t = teacher_feats[self.jt] if c.use_teacher_feats else None
        if c.proxy_arch == "teacher":
            size = tuple(teacher_feats[self.jt].shape[-2:])
            return forward_from(self.jt, self.ffb(student_feats[self.j].detach(), f_t,
                                                  size=size))
        return forward_from(self.j, self.ffb(student_feats[self.j].detach(), f_t))

    def extra_network(self, key):
        return ProxyTeacher(self)

    def _proxy_feature(self, out: ModelOutput, like: torch.Tensor) -> torch.Tensor:
        f_p = self.connector(out.feats[-1])
        return resize_to(f_p, tuple(like.shape[-2:]))

    def eval_logits(self, x):
        out_t = self.teacher_output(x)
        out_s = self.student(x)
        return {"student": out_s.logits, "proxy": self.proxy(out_s.feats, out_t.feats).logits}

    # ------------------------------------------------------------ losses

    def forward(self, x, y, epoch):
        c, t = self.config, self.config.temperature
        out_t = self.teacher_output(x)
        z_t = out_t.logits
        out_s = self.student(x)
        z_s, f_s = out_s.logits, out_s.feats[-1]
        out_p = self.proxy(out_s.feats, out_t.feats)
        z_p, f_p = out_p.logits, self._proxy_feature(out_p, f_s)
        supervised, distill = self.task.supervised_loss, self.task.distill_loss
        losses = {
            "ce": c.ce_weight * supervised(z_s, y),
            "kd": c.kd_weight * distill(z_s, z_t, t),
            "pt_ce": c.pt_ce_weight * supervised(z_p, y),
            "pt_kd": c.pt_kd_weight * distill(z_p, z_t, t),
            "pt_feat": c.pt_feat_weight * feature_l1(f_p, f_s.detach()),
            "pt_student_kd": c.lam * distill(z_p, z_s.detach(), t),
        }
        if self.k:
            losses["proxy_feat"] = self.k * c.proxy_feat_weight * feature_l1(f_s, f_p.detach())
            losses["proxy_kd"] = self.k * c.proxy_kd_weight * distill(z_s, z_p.detach(), t)
        return z_s, losses


class ProxyTeacher(nn.Module):
    """SDKD's proxy teacher as a network of its own: images in, `ModelOutput` out.

    `SDKD.fused_pass` on a copy of the method, run through a copy of the network the proxy
    uses holding the proxy's own BatchNorm statistics, so hooks on that copy's layers (Grad-CAM,
    `cam_layer`: its last stage) see the proxy's pass alone and never the student's.
    """

    def __init__(self, sdkd: SDKD):
        super().__init__()
        self.method = copy.deepcopy(sdkd)
        self.body = copy.deepcopy(sdkd.proxy_body())
        sdkd.proxy_stats.copy_into(self.body)  # normalise as the proxy does, not as the student
        self.cam_layer = cam_layer(self.body)
        self.eval()

    def forward(self, x: torch.Tensor) -> ModelOutput:
        with torch.no_grad():  # the FFB's inputs are detached in training too
            f_s = self.method.student(x).feats
            f_t = self.method.teacher_output(x).feats
        return self.method.fused_pass(f_s, f_t, self.body)


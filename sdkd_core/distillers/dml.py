"""Deep Mutual Learning: the student and a peer train together from scratch, each learning
from the other's detached predictions. The peer has the teacher's architecture by default."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field
from torch.nn import functional as F

from sdkd_core.config import MethodConfig
from sdkd_core.distillers.base import Distiller
from sdkd_core.losses import kd_loss
from sdkd_core.models import build_model


class DMLConfig(MethodConfig):
    peer: str | None = None  # a model name; default: the teacher's architecture
    kl_weight: float = Field(1.0, ge=0)
    temperature: float = Field(1.0, gt=0)


class DML(Distiller):
    name = "dml"
    label = "DML"
    Config = DMLConfig
    needs_teacher_weights = False  # the peer takes the teacher's architecture, trained anew
    heads: ClassVar[dict[str, str]] = {"peer": "DML peer"}

    def __init__(self, student, teacher=None, config=None):
        super().__init__(student, teacher, config)
        arch = self.config.peer or self.teacher.name
        self.peer = build_model(arch, student.num_classes, student.in_channels)
        self._frozen.clear()  # only the architecture was needed; the teacher's weights are not

    def optim_groups(self):
        return {"student": list(self.student.parameters()), "peer": list(self.peer.parameters())}

    def extra_network(self, key):
        return self.peer

    def forward(self, x, y, epoch):
        c = self.config
        z_s, z_p = self.student(x).logits, self.peer(x).logits
        return z_s, {
            "ce": F.cross_entropy(z_s, y),
            "kl": c.kl_weight * kd_loss(z_s, z_p.detach(), c.temperature),
            "peer_ce": F.cross_entropy(z_p, y),
            "peer_kl": c.kl_weight * kd_loss(z_p, z_s.detach(), c.temperature),
        }

"""The shape every training method takes: a module whose forward computes named losses.

A method owns the student and whatever else it trains (an FFB, a peer, a shadow head). Its
`forward(x, y, epoch)` returns the student's logits and a dict of named losses; the engine sums
them, steps one optimizer per parameter group, and logs each name. A frozen teacher is kept out
of the module tree so it is neither saved with the method nor wrapped by DDP.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import Tensor, nn

from sdkd_core.config import MethodConfig
from sdkd_core.errors import UserError
from sdkd_core.models import StagedNet


class NoConfig(MethodConfig):
    pass


class Distiller(nn.Module, ABC):
    name = "base"
    Config: type[MethodConfig] = NoConfig
    needs_teacher = True  # a pretrained teacher must be passed in

    def __init__(self, student: StagedNet, teacher: StagedNet | None = None,
                 config: MethodConfig | None = None):
        super().__init__()
        if self.needs_teacher and teacher is None:
            raise UserError(f"method '{self.name}' needs a teacher")
        self.student = student
        self.config = config if config is not None else self.Config()
        self._frozen: list[StagedNet] = []
        if teacher is not None:
            teacher.eval().requires_grad_(False)
            self._frozen.append(teacher)

    @property
    def teacher(self) -> StagedNet | None:
        return self._frozen[0] if self._frozen else None

    def _apply(self, fn, recurse=True):  # keep the unregistered teacher on the same device
        for frozen in self._frozen:
            frozen._apply(fn, recurse)
        return super()._apply(fn, recurse)

    def train(self, mode: bool = True):
        super().train(mode)
        for frozen in self._frozen:
            frozen.eval()  # a teacher never updates its BatchNorm statistics
        return self

    def teacher_output(self, x: Tensor):
        with torch.no_grad():
            return self.teacher(x)

    def optim_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameters per optimizer; each group gets its own optimizer and schedule."""
        return {"student": list(self.student.parameters())}

    def begin_epoch(self, epoch: int, epochs: int, steps_per_epoch: int = 1) -> None:
        """Called before each training epoch (0-based) with the run's length."""

    def epoch_metrics(self) -> dict[str, float]:
        """Extra per-epoch numbers to log (e.g. SDKD's k)."""
        return {}

    def eval_logits(self, x: Tensor) -> dict[str, Tensor]:
        """Logits to score on the test set: the student, plus any extra heads by name."""
        return {"student": self.student(x).logits}

    @abstractmethod
    def forward(self, x: Tensor, y: Tensor, epoch: int) -> tuple[Tensor, dict[str, Tensor]]:
        """The student's logits and the named losses for one training batch."""


def teacher_stage(j: int, student: StagedNet, teacher: StagedNet) -> int:
    """The teacher stage matching student stage j, by relative depth (equal when counts match)."""
    return round(j * teacher.num_stages / student.num_stages)

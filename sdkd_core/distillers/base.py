"""The shape every training method takes: a module whose forward computes named losses.

A method owns the student and whatever else it trains (an FFB, a peer, a shadow head). Its
`forward(x, y, epoch)` returns the student's logits and a dict of named losses; the engine sums
them, steps one optimizer per parameter group, and logs each name. A frozen teacher is kept out
of the module tree so it is neither saved with the method nor wrapped by DDP.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

from torch import Tensor, nn

from sdkd_core.models import StagedNet


class Distiller(nn.Module, ABC):
    name = "base"

    def __init__(self, student: StagedNet, teacher: StagedNet | None = None):
        super().__init__()
        self.student = student
        self._frozen = [teacher] if teacher is not None else []

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

    def optim_groups(self) -> dict[str, list[nn.Parameter]]:
        """Parameters per optimizer; each group gets its own optimizer and schedule."""
        return {"student": list(self.student.parameters())}

    def eval_model(self) -> nn.Module:
        """The model whose test accuracy is reported."""
        return self.student

    @abstractmethod
    def forward(self, x: Tensor, y: Tensor, epoch: int) -> tuple[Tensor, dict[str, Tensor]]:
        """The student's logits and the named losses for one training batch."""

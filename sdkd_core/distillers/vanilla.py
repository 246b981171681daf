"""Plain supervised training: the task's supervised loss (cross-entropy on the labels for
classification). Also trains the teachers."""

from __future__ import annotations

from sdkd_core.distillers.base import Distiller


class Vanilla(Distiller):
    name = "vanilla"
    label = "vanilla"
    needs_teacher = False
    requires = frozenset()  # any task: its supervised loss

    def forward(self, x, y, epoch):
        logits = self.student(x).logits
        return logits, {"ce": self.task.supervised_loss(logits, y)}

"""Plain supervised training: cross-entropy on the labels. Also trains the teachers."""

from __future__ import annotations

from torch.nn import functional as F

from sdkd_core.distillers.base import Distiller


class Vanilla(Distiller):
    name = "vanilla"
    label = "vanilla"
    needs_teacher = False

    def forward(self, x, y, epoch):
        logits = self.student(x).logits
        return logits, {"ce": F.cross_entropy(logits, y)}

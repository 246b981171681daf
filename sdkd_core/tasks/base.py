"""What a task is: its outputs, supervised loss, distillation term, metrics and augmentation.

The engine, the methods and the study speak through a `Task` and never name one: a method
writes its losses with `task.supervised_loss` and `task.distill_loss`, the engine sums each
batch's `task.metric_sums` (additive, so ranks add theirs) and reads `task.metric_values`, and
the search optimises `task.metric` in the direction of `task.mode`.

What a task's outputs support is a set of capabilities (`provides`); a method lists the ones it
needs (`Distiller.requires`), so a method that makes no sense for a task is refused when the
space is validated, without either of them naming the other.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar

import torch
from torch import Tensor

# Capabilities a task's outputs can have, for `Task.provides` and `Distiller.requires`.
CAPABILITIES = {
    "image_logits": "one vector of class scores per image (a classifier head)",
    "class_scores": "scores over classes that a softmax turns into a distribution",
    "dense": "an output per pixel, at the input's resolution",
}


class Task(ABC):
    """One kind of prediction problem. Stateless: one instance serves every run."""

    name: ClassVar[str] = "base"  # the registry key, also a dataset's `task`
    label: ClassVar[str] = ""  # how reports name it
    metric: ClassVar[str] = ""  # the metric the search optimises (a key of metric_values)
    # Display names of every value metric_values returns besides "loss", by key.
    metric_labels: ClassVar[dict[str, str]] = {}
    provides: ClassVar[frozenset[str]] = frozenset()
    # Metrics in percent (shown with a % sign); the others are shown as plain numbers.
    percent: ClassVar[frozenset[str]] = frozenset()
    # Metrics where smaller is better; `mode` follows for `metric`.
    lower_better: ClassVar[frozenset[str]] = frozenset()
    # What Grad-CAM++ explains on this task (`explained`), in words for the report.
    explains: ClassVar[str] = ""
    # The smallest change of `metric` over a run's last epochs that is more than evaluation
    # noise (analysis/convergence.py): half a point of a percentage.
    min_gain: ClassVar[float] = 0.5

    @abstractmethod
    def supervised_loss(self, output: Tensor, target: Tensor) -> Tensor:
        """The loss against the labels, a scalar mean."""

    @abstractmethod
    def distill_loss(self, student: Tensor, teacher: Tensor, temperature: float) -> Tensor:
        """The loss that pulls `student`'s output toward `teacher`'s (the target: pass it
        detached where it should not learn from this term), a scalar mean."""

    @abstractmethod
    def metric_sums(self, output: Tensor, target: Tensor) -> Tensor:
        """Additive statistics of one batch (float64, 1-D): summed over batches and ranks,
        `metric_values` turns them into the metrics."""

    @abstractmethod
    def metric_values(self, sums: Tensor) -> dict[str, float]:
        """The metrics from summed `metric_sums`: every key of `metric_labels`, and "loss"
        (the supervised loss's mean)."""

    @abstractmethod
    def augment(self, x: Tensor, target: Tensor, info, generator: torch.Generator
                ) -> tuple[Tensor, Tensor]:
        """The training augmentation of a chunk of uint8 images [B, C, H, W] and their
        targets on the device, each image its own draw from `generator`; `info` is the
        dataset's `DatasetInfo`."""

    @abstractmethod
    def example_targets(self, n: int, size: tuple[int, int], num_classes: int) -> Tensor:
        """Targets of `n` images of `size` that a cost estimate or a check can train on."""

    @abstractmethod
    def explained(self, output: Tensor, target: Tensor) -> Tensor:
        """The scalar Grad-CAM++ explains for one image, from the network's output for it
        ([C] or [C, H, W]) and its target (what `explains` says)."""

    def explained_class(self, target: Tensor) -> int | None:
        """The class `explained` is about for one image's target (None: no class)."""
        return None

    @property
    def metric_name(self) -> str:
        """The search metric's name without its unit, for a line: `top-1`, `mIoU`, `RMSE`."""
        return self.metric_labels[self.metric].split(" (")[0]

    @property
    def mode(self) -> str:
        """"max" or "min": which way `metric` is better (the search's default direction)."""
        return "min" if self.metric in self.lower_better else "max"

    def sign(self, metric: str | None = None) -> int:
        """+1 where larger values of `metric` (a key of metric_labels) are better, -1 where
        smaller are: multiply a difference by it and positive always means better."""
        return -1 if (metric or self.metric) in self.lower_better else 1

    def digits(self, metric: str | None = None) -> int:
        """Decimals a table shows: 2 for a percentage, 3 for a plain number (an RMSE)."""
        return 2 if (metric or self.metric) in self.percent else 3

    def axis_label(self, metric: str | None = None) -> str:
        """`mIoU (%)`, `RMSE (lower is better)`: how a plot's axis names a metric."""
        metric = metric or self.metric
        label = self.metric_labels[metric]
        return f"{label} (lower is better)" if metric in self.lower_better else label

    def best(self, values) -> float:
        return max(values) if self.mode == "max" else min(values)

    def show(self, value: float, metric: str | None = None) -> str:
        """A metric's value as a line shows it: `71.03%`, `0.412`."""
        metric = metric or self.metric
        return f"{value:.2f}%" if metric in self.percent else f"{value:.4g}"

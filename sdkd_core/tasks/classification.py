"""Image classification: one label per image, cross-entropy, Hinton's KD, top-1 and top-5."""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from sdkd_core.augment import augment_batch
from sdkd_core.losses import kd_loss
from sdkd_core.tasks.base import Task


class Classification(Task):
    name = "classification"
    label = "image classification"
    metric = "acc"
    metric_labels = {"acc": "top-1 (%)", "top5": "top-5 (%)"}
    percent = frozenset({"acc", "top5"})
    provides = frozenset({"image_logits", "class_scores"})
    explains = "the true class's logit"

    def supervised_loss(self, output, target):
        return F.cross_entropy(output.float(), target)

    def distill_loss(self, student, teacher, temperature):
        return kd_loss(student, teacher, temperature)

    def metric_sums(self, output: Tensor, target: Tensor) -> Tensor:
        output = output.detach().float()
        top5 = output.topk(min(5, output.shape[1]), 1).indices
        return torch.stack([
            (top5[:, 0] == target).sum().double(),
            (top5 == target[:, None]).any(1).sum().double(),
            F.cross_entropy(output, target, reduction="sum").double(),
            torch.tensor(float(len(target)), dtype=torch.float64, device=output.device),
        ])

    def metric_values(self, sums):
        correct, top5, loss, count = sums.tolist()
        return {"acc": 100.0 * correct / count, "top5": 100.0 * top5 / count,
                "loss": loss / count}

    def augment(self, x, target, info, generator):
        return augment_batch(x, info.pad, info.flip, generator), target

    def example_targets(self, n, size, num_classes):
        return torch.arange(n) % num_classes

    def explained(self, output, target):
        return output[int(target)]  # pytorch-grad-cam's ClassifierOutputTarget

    def explained_class(self, target):
        return int(target)

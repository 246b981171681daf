"""Semantic segmentation: a class per pixel, `IGNORE` where the labels say nothing.

- Supervised loss: per-pixel cross-entropy averaged over the labelled pixels (ignore_index, as
  CIRKD and torchvision's references train).
- Distillation: Hinton's KL_T at every pixel, over the classes, averaged over all pixels
  (CIRKD's `CriterionKD` on the flattened pixel-by-class logits, `batchmean` over pixels).
- Metrics over a whole split from one confusion matrix: mIoU (%) = the mean, over the classes
  that occur in the labels or the predictions, of TP / (TP + FP + FN) (mmsegmentation's
  nanmean: a class absent from both is not scored; on Cityscapes val every class occurs, so
  this equals CIRKD's mean over all classes); pixel accuracy (%) over the labelled pixels.
- Augmentation: random scale, crop and flip of the image and its label map together.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from sdkd_core.augment import joint_augment
from sdkd_core.losses import kd_loss
from sdkd_core.tasks.base import Task

IGNORE = 255  # the label of unlabelled pixels, as Cityscapes' train ids and VOC mark them


def pixels_by_class(logits: Tensor) -> Tensor:
    """[N, C, H, W] -> [N*H*W, C]."""
    return logits.permute(0, 2, 3, 1).reshape(-1, logits.shape[1])


class Segmentation(Task):
    name = "segmentation"
    label = "semantic segmentation"
    metric = "miou"
    metric_labels = {"miou": "mIoU (%)", "pixel_acc": "pixel accuracy (%)"}
    percent = frozenset({"miou", "pixel_acc"})
    provides = frozenset({"class_scores", "dense"})
    explains = ("the image's largest labelled class other than class 0 (the background of the "
                "scenes and VOC, Cityscapes' road): its logits summed over its true mask "
                "(pytorch-grad-cam's SemanticSegmentationTarget)")

    def supervised_loss(self, output, target):
        return F.cross_entropy(output.float(), target.long(), ignore_index=IGNORE)

    def distill_loss(self, student, teacher, temperature):
        return kd_loss(pixels_by_class(student), pixels_by_class(teacher), temperature)

    def metric_sums(self, output: Tensor, target: Tensor) -> Tensor:
        output = output.detach().float()
        c = output.shape[1]
        target = target.long()
        valid = target != IGNORE
        loss = F.cross_entropy(output, target, ignore_index=IGNORE, reduction="sum")
        pred = output.argmax(1)
        confusion = torch.bincount(target[valid] * c + pred[valid], minlength=c * c)
        return torch.cat([loss.double().view(1), confusion.double()])

    @staticmethod
    def confusion(sums: Tensor) -> Tensor:
        """The [C, C] confusion matrix (rows: labels, columns: predictions) in `sums`."""
        c = int(round((len(sums) - 1) ** 0.5))
        return sums[1:].view(c, c)

    def metric_values(self, sums):
        confusion = self.confusion(sums)
        tp = confusion.diagonal()
        union = confusion.sum(0) + confusion.sum(1) - tp
        scored = union > 0
        labelled = float(confusion.sum())
        return {"miou": 100.0 * float((tp[scored] / union[scored]).mean()),
                "pixel_acc": 100.0 * float(tp.sum()) / labelled,
                "loss": float(sums[0]) / labelled}

    def augment(self, x, target, info, generator):
        return joint_augment(x, target, info.scale, info.flip, generator, fill=IGNORE)

    def example_targets(self, n, size, num_classes):
        return (torch.arange(n * size[0] * size[1]) % num_classes).view(n, *size)

    def explained_class(self, target):
        labelled = target[target != IGNORE].long()
        if labelled.numel() == 0:
            return 0
        counts = torch.bincount(labelled)
        if len(counts) > 1 and counts[1:].sum() > 0:
            counts[0] = 0  # class 0 only where nothing else is labelled
        return int(counts.argmax())

    def explained(self, output, target):
        c = self.explained_class(target)
        return (output[c] * (target == c).to(output.dtype)).sum()

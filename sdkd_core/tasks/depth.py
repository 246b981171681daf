"""Monocular depth estimation: a depth per pixel, 0 where the sensor gave none.

- Supervised loss: L1 between predicted and true depth over the valid pixels. The reported
  metrics are metric-scale (RMSE, AbsRel), so the loss is too: the scale-invariant log loss
  (Eigen et al.) forgives a wrong global scale that RMSE then punishes, and L1 stays robust to
  the sensor's outliers where L2 is not.
- Distillation: regression to the teacher's output, L1 over every pixel (the teacher predicts
  everywhere, also where the sensor is silent).
- Metrics, as the NYU Depth v2 protocol (Eigen et al. 2014) computes them, per image over its
  valid pixels and then averaged over images: RMSE, AbsRel = mean |p - t| / t, and delta_k =
  the fraction of pixels with max(p/t, t/p) < 1.25^k (k = 1, 2, 3). Predictions are clamped to
  `MIN_DEPTH` first, as the protocol clamps to its range.
- Augmentation: random scale, crop and flip of the image and its depth map together (nearest
  neighbour: no invented depths at edges).
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn import functional as F

from sdkd_core.augment import joint_augment
from sdkd_core.tasks.base import Task

MIN_DEPTH = 1e-3


def depth_map(output: Tensor) -> Tensor:
    """The predicted depth [N, H, W] of a model's output [N, 1, H, W]."""
    return output[:, 0].float()


class Depth(Task):
    name = "depth"
    label = "depth estimation"
    metric = "rmse"
    metric_labels = {"rmse": "RMSE", "absrel": "AbsRel", "delta1": "delta<1.25",
                     "delta2": "delta<1.25^2", "delta3": "delta<1.25^3"}
    provides = frozenset({"dense"})
    lower_better = frozenset({"rmse", "absrel"})
    explains = "the mean predicted depth over the pixels with a true depth"
    min_gain = 0.01  # of RMSE, in the depth's unit (metres on NYUv2): a centimetre

    def supervised_loss(self, output, target):
        valid = target > 0
        return (depth_map(output) - target.float()).abs()[valid].mean()

    def distill_loss(self, student, teacher, temperature):
        return F.l1_loss(depth_map(student), depth_map(teacher))

    def metric_sums(self, output: Tensor, target: Tensor) -> Tensor:
        pred = depth_map(output.detach()).double()
        target = target.double()
        valid = target > 0
        n = valid.flatten(1).sum(1)
        scored = n > 0  # an image whose crop kept no valid pixel says nothing
        pixels = n.clamp_min(1)
        err = (pred - target).masked_fill(~valid, 0)
        clamped = pred.clamp_min(MIN_DEPTH)
        safe = target.masked_fill(~valid, 1)
        ratio = torch.maximum(clamped / safe, safe / clamped)

        def per_image(values: Tensor) -> Tensor:
            return (values.masked_fill(~valid, 0).flatten(1).sum(1) / pixels)[scored].sum()

        rmse = (err.pow(2).flatten(1).sum(1) / pixels).sqrt()[scored].sum()
        return torch.stack([
            err.abs().sum(), n.sum().double(), rmse, per_image(err.abs() / safe),
            *(per_image((ratio < 1.25 ** k).double()) for k in (1, 2, 3)),
            scored.sum().double(),
        ])

    def metric_values(self, sums):
        loss, pixels, rmse, absrel, d1, d2, d3, images = sums.tolist()
        images = max(images, 1.0)
        return {"rmse": rmse / images, "absrel": absrel / images, "delta1": d1 / images,
                "delta2": d2 / images, "delta3": d3 / images, "loss": loss / max(pixels, 1.0)}

    def augment(self, x, target, info, generator):
        return joint_augment(x, target, info.scale, info.flip, generator, fill=0)

    def example_targets(self, n, size, num_classes):
        return torch.ones(n, *size)

    def explained(self, output, target):
        valid = (target > 0).to(output.dtype)
        return (output[0] * valid).sum() / valid.sum().clamp_min(1)

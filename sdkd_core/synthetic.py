"""Generated datasets (`synthetic`, `synthetic_cifar100`): learnable without any download."""

from __future__ import annotations

import torch
from torch.nn import functional as F

from sdkd_core.datasets import DatasetInfo


def synthetic_images(info: DatasetInfo):
    """Learnable generated images, `info.n_train` and `info.n_test` of them: each class a smooth
    random template, plus noise and jitter."""
    gen = torch.Generator().manual_seed(1234)  # the dataset is fixed; `seed` only picks subsets
    size, c = info.image_size, info.in_channels
    coarse = torch.rand(info.num_classes, c, 7, 7, generator=gen)
    templates = F.interpolate(coarse, size=(size, size), mode="bilinear", align_corners=False)

    def draw(n: int):
        y = torch.arange(n) % info.num_classes
        x = torch.empty(n, c, size, size, dtype=torch.uint8)
        for start in range(0, n, 5000):  # in chunks: float images of 50k would take 600 MB
            part = y[start:start + 5000]
            noise = torch.randn(len(part), c, size, size, generator=gen) * 0.25
            x[start:start + 5000] = ((templates[part] + noise).clamp(0, 1) * 255).to(torch.uint8)
        return x, y

    train_x, train_y = draw(info.n_train)
    test_x, test_y = draw(info.n_test)
    return train_x, train_y, test_x, test_y

"""The run's test images as a network takes them, and a network as a plain function of them:
what the report's figures, its claims and the export share."""

from __future__ import annotations

from itertools import zip_longest

import torch
from torch import nn

from analysis.run import Run
from sdkd_core.data import load_dataset
from sdkd_core.distillers.base import output_logits
from sdkd_core.file_data import FileSplits
from sdkd_core.image_views import load_views


def test_images(run: Run, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(raw uint8, normalised float, labels) of n test images, balanced over the classes (a
    dense task's first n: each image holds several classes)."""
    d = dict(run.space["dataset"])
    d.pop("decode_cpus", None)
    data = load_dataset(**d, seed=int(run.space["seeds"][0]))
    info = data.info
    if info.dense:
        picked = list(range(min(n, len(data.test_y))))
    else:
        by_class = [torch.nonzero(data.test_y == c).flatten().tolist() for c in
                    range(info.num_classes)]
        # One image of each class in turn: the first of every class, then the second, ...
        picked = [i for turn in zip_longest(*by_class) for i in turn if i is not None][:n]
    if isinstance(data, FileSplits):  # streamed: decode just the picked files' eval views
        views, ok = load_views(data.test.subset(picked), info)
        picked = [i for i, good in zip(picked, ok, strict=True) if good]
        raw = torch.from_numpy(views[ok])
    else:
        raw = data.test_x[picked]
    mean = torch.tensor(info.mean).view(1, -1, 1, 1) * 255
    std = torch.tensor(info.std).view(1, -1, 1, 1) * 255
    return raw, (raw.float() - mean) / std, data.test_y[picked]


class Logits(nn.Module):
    """A network as grad-cam and an export see it: images in, logits (its outputs) out."""

    def __init__(self, net: nn.Module):
        super().__init__()
        self.net = net

    def forward(self, x):
        return output_logits(self.net(x))

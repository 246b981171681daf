"""Datasets of image files, held in memory or streamed: which path a dataset takes, and its splits.

The rule (docs/data.md): a file dataset is held in memory when its training crop is `pad` (the
crop the in-memory loader makes on the device) and its decoded training images take at most
`MEMORY_LIMIT_BYTES`; otherwise it streams (`FileSplits`, read through Ray Data by the study's
`StreamedLoader`). `dataset.stream: true | false` overrides the rule; a `resized` crop cannot
be held in memory. Tiny-ImageNet (1.2 GB decoded) takes the in-memory path, ImageNet streams.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor

from sdkd_core.datasets import DatasetInfo
from sdkd_core.errors import UserError
from sdkd_core.image_files import FileDataset, ImageListing
from sdkd_core.image_views import load_views

MEMORY_LIMIT_BYTES = 4 << 30
CROPS = ("pad", "resized")


@dataclass(frozen=True)
class FileSplits:
    """A streamed dataset: each split a list of files (training, validation, test)."""

    name: str
    info: DatasetInfo
    train: ImageListing
    test: ImageListing
    val: ImageListing | None = None
    ignored: int = 0  # files left out at listing: not images by their extension

    @property
    def train_y(self) -> Tensor:
        return torch.tensor(self.train.labels, dtype=torch.long)

    @property
    def test_y(self) -> Tensor:
        return torch.tensor(self.test.labels, dtype=torch.long)

    @property
    def val_y(self) -> Tensor | None:
        return None if self.val is None else torch.tensor(self.val.labels, dtype=torch.long)

    @property
    def has_val(self) -> bool:
        return self.val is not None and len(self.val) > 0

    @property
    def num_classes(self) -> int:
        return self.info.num_classes

    @property
    def in_channels(self) -> int:
        return self.info.in_channels


def files_info(base: DatasetInfo, files: FileDataset | None, image_size: int | None = None,
               crop: str | None = None, pad: int | None = None) -> DatasetInfo:
    """The dataset's info with its classes and counts from the files (None: the table's, for
    a plan made without the files), and the size, crop and padding asked over its defaults."""
    info = base
    if files is not None:
        if len(files.classes) < 2:
            raise UserError(f"'{files.root}' has {len(files.classes)} class folder; a "
                            "classifier needs at least two")
        info = dataclasses.replace(base, num_classes=len(files.classes),
                                   n_train=len(files.train), n_test=len(files.test))
    if image_size is not None:
        info = dataclasses.replace(info, image_size=image_size)
    if crop is not None:
        if crop not in CROPS:
            raise UserError(f"crop '{crop}' is unknown; use one of {', '.join(CROPS)}")
        # The CIFAR recipe's padding scales with the image (4 of 32); the eval view is the image.
        pad_px = (info.pad or max(1, info.image_size // 8)) if crop == "pad" else 0
        info = dataclasses.replace(info, crop=crop, pad=pad_px,
                                   eval_crop=1.0 if crop == "pad" else 0.875)
    if pad is not None:
        info = dataclasses.replace(info, pad=pad)
    return info


def streams(info: DatasetInfo, n_images: int, stream: bool | None) -> bool:
    """Whether a file dataset streams (the module's rule)."""
    if stream is False and info.crop == "resized":
        raise UserError("stream: false needs crop: pad (a resized crop is made per file as "
                        "it is read); set crop: pad or leave stream out")
    if stream is not None:
        return stream
    decoded = n_images * info.in_channels * info.image_size ** 2
    return info.crop == "resized" or decoded > MEMORY_LIMIT_BYTES


def into_memory(name: str, info: DatasetInfo, listing: ImageListing, what: str,
                log=None) -> tuple[Tensor, Tensor, int]:
    """Decode `listing` into uint8 tensors of evaluation views: (x, y, files skipped)."""
    if log is not None:
        log(f"decoding {len(listing)} {what} images of {name} into memory")
    views, ok = load_views(listing, info)
    mask = torch.from_numpy(ok)
    y = torch.tensor(listing.labels, dtype=torch.long)
    return torch.from_numpy(views)[mask].contiguous(), y[mask].contiguous(), int((~mask).sum())

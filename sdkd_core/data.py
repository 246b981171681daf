"""Datasets as in-memory uint8 tensors, loaded whole or as subsets.

What each dataset is lives in `sdkd_core.datasets` (`DATASET_INFO`, also importable from here);
the files are read by `sdkd_core.data_files`, the generated sets made by `sdkd_core.synthetic`,
and `sdkd_core.loader.BatchLoader` turns the tensors into augmented batches on the device.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

from sdkd_core.data_files import read_cifar, read_fashion_mnist
from sdkd_core.datasets import DATASET_INFO, DATASETS, DatasetInfo
from sdkd_core.dense_decode import check_fits, decode_pairs, dense_info
from sdkd_core.dense_files import DENSE_LISTERS, DenseFiles, PairListing
from sdkd_core.errors import UserError, unknown_choice
from sdkd_core.file_data import FileSplits, files_info, into_memory, streams
from sdkd_core.image_files import FileDataset, ImageListing, list_dataset
from sdkd_core.loader import BatchLoader
from sdkd_core.scenes import fashion_scenes
from sdkd_core.synthetic import synthetic_images

VAL_SEED = 0  # one validation split per dataset and size, whatever the trial's seed


@dataclass
class ImageData:
    """A dataset held in memory: uint8 images [N, C, H, W] and int64 labels [N] (a dense
    task's: a map per image [N, H, W], class ids as uint8 or depths as float). `val_x`,
    `val_y`: the validation images, held out of the training images (empty without a split).
    """

    name: str
    info: DatasetInfo
    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor
    val_x: Tensor | None = None
    val_y: Tensor | None = None
    # Datasets of files: files that could not be decoded, and files that are not images.
    skipped: int = 0
    ignored: int = 0
    notes: tuple[str, ...] = ()  # which files were read, where a dataset chooses among them

    @property
    def has_val(self) -> bool:
        return self.val_y is not None and len(self.val_y) > 0

    @property
    def num_classes(self) -> int:
        return self.info.num_classes

    def loader(self, split: str, **options) -> BatchLoader:
        """Batches of one split ("train", "val" or "test"); `options` as BatchLoader takes."""
        x, y = {"train": (self.train_x, self.train_y), "val": (self.val_x, self.val_y),
                "test": (self.test_x, self.test_y)}[split]
        return BatchLoader(x, y, info=self.info, train=split == "train", **options)

    @property
    def in_channels(self) -> int:
        return self.info.in_channels


def load_dataset(
    name: str,
    root: str | Path | None = None,
    n_train: int | None = None,
    n_test: int | None = None,
    seed: int = 0,
    download: bool = True,
    val_split: float | int | None = None,
    image_size: int | None = None,
    crop: str | None = None,
    pad: int | None = None,
    stream: bool | None = None,
    files: FileDataset | DenseFiles | None = None,
) -> ImageData | FileSplits:
    """Load `name` into memory, optionally as stratified subsets of n_train / n_test images.

    `root` is a folder holding the files; without it Fashion-MNIST is looked up in the Debian
    package's folder, then in the data cache (`$SDKD_DATA`, default ~/.cache/sdkd/data), where
    torchvision downloads it when online. The subsets depend only on `seed`.

    `val_split` (a fraction in (0, 1) or a count of the training images) holds a stratified
    validation set out of the training images before `n_train` is drawn from the rest. It is
    fixed by `VAL_SEED`, not `seed`: every trial of every method validates on the same images
    and none trains on them.

    A dataset of image files (`imagefolder`, `imagenet`, `tiny_imagenet`) is listed from `root`
    (or `files`, listed before), takes `image_size`, `crop` and `pad` over its defaults, and is
    either decoded into memory or returned as `FileSplits` to stream (`sdkd_core.file_data`).
    A dense dataset of files (a layout of `sdkd_core.dense_files`) takes `image_size` (the
    views' height) and is decoded into memory with its label maps (`sdkd_core.dense_decode`).
    """
    if name not in DATASET_INFO:
        raise unknown_choice("dataset", name, DATASETS)
    base = DATASET_INFO[name]
    if base.from_files:
        files = files or list_files(base.layout, root)
        info = file_info(base, files, image_size, crop, pad)
        read = _dense_from_files if base.dense else _from_files
        return read(name, info, files, n_train, n_test, seed, val_split, stream)
    info = sized_info(base, image_size)
    if base.any_size:
        image_size = None
    for key, value in (("image_size", image_size), ("crop", crop), ("pad", pad),
                       ("stream", stream)):
        if value is not None:
            named = ", ".join(n for n, i in DATASET_INFO.items() if i.from_files
                              or (key == "image_size" and i.any_size))
            raise UserError(f"{key} applies to datasets of image files ({named}); {name} has "
                            f"its own; remove {key}")
    if root is not None and not Path(root).is_dir():
        raise UserError(
            f"data folder '{root}' does not exist; pass an existing folder (--data-root) "
            "or leave it out to use the default locations"
        )
    # Generated sets are made at `info` (their size); real ones read from their files.
    loaders = {
        "fashion_mnist": read_fashion_mnist,
        "cifar10": read_cifar,
        "cifar100": read_cifar,
        "synthetic": lambda *_: synthetic_images(info),
        "synthetic_cifar100": lambda *_: synthetic_images(info),
        "fashion_scenes": lambda _, root, download: _scenes(info, root, download),
        "fashion_depth": lambda _, root, download: _scenes(info, root, download),
    }
    train_x, train_y, test_x, test_y = loaders[name](name, root, download)
    data = ImageData(name, info, train_x, train_y, test_x, test_y)
    if val_split is not None:
        held = validation_indices(train_y, val_split, name, data.num_classes)
        rest = torch.ones(len(train_y), dtype=torch.bool)
        rest[held] = False
        data.val_x, data.val_y = train_x[held].contiguous(), train_y[held].contiguous()
        data.train_x, data.train_y = train_x[rest].contiguous(), train_y[rest].contiguous()
    data.train_x, data.train_y = _subset(data.train_x, data.train_y, n_train, "n_train", name, seed)
    data.test_x, data.test_y = _subset(data.test_x, data.test_y, n_test, "n_test", name, seed)
    return data


def list_files(layout: str, root: str | Path | None) -> FileDataset | DenseFiles:
    """A file dataset's listing: a dense layout's pairs of image and label map, or images."""
    if layout in DENSE_LISTERS:
        return DENSE_LISTERS[layout](root)
    return list_dataset(layout, root)


def file_info(base: DatasetInfo, files: FileDataset | DenseFiles | None,
              image_size: int | None = None, crop: str | None = None, pad: int | None = None
              ) -> DatasetInfo:
    """A file dataset's info with its counts from `files` (None: the table's) and the options
    asked over its defaults."""
    return (dense_info if base.dense else files_info)(base, files, image_size, crop, pad)


def _dense_from_files(name: str, info: DatasetInfo, files: DenseFiles, n_train, n_test, seed,
                      val_split, stream) -> ImageData:
    """The pairs drawn as the in-memory maps would be (validation, then subsets), then
    decoded: only the images a trial uses are read."""
    if stream:
        raise UserError(f"stream: true is not built for dense datasets yet ({name} is decoded "
                        "into memory); leave stream out")
    train, val = files.train, None
    if val_split is not None:
        held = validation_indices(_unread_maps(len(train)), val_split, name, info.num_classes)
        rest = torch.ones(len(train), dtype=torch.bool)
        rest[held] = False
        train, val = train.subset(rest.nonzero().flatten()), train.subset(held)
    train = _subset_pairs(train, n_train, "n_train", name, seed)
    test = _subset_pairs(files.test, n_test, "n_test", name, seed)
    check_fits(name, info, len(train))
    train_x, train_y, skipped = decode_pairs(train, info)
    test_x, test_y, skipped_test = decode_pairs(test, info)
    data = ImageData(name, info, train_x, train_y, test_x, test_y,
                     skipped=skipped + skipped_test, notes=files.notes)
    if val is not None:
        data.val_x, data.val_y, skipped_val = decode_pairs(val, info)
        data.skipped += skipped_val
    return data


def _unread_maps(n: int) -> Tensor:
    """n maps without their pixels ([n, 0, 0]): the validation and subset draws of maps depend
    only on their count, so the listing gets the draws its decoded maps would."""
    return torch.empty(n, 0, 0)


def _subset_pairs(listing: PairListing, n: int | None, what: str, name: str, seed: int):
    idx = _subset_indices(_unread_maps(len(listing)), n, what, name, seed)
    return listing if idx is None else listing.subset(idx)


def _from_files(name: str, info: DatasetInfo, files: FileDataset, n_train, n_test, seed,
                val_split, stream) -> ImageData | FileSplits:
    train, val = files.train, None
    if val_split is not None:
        labels = torch.tensor(train.labels, dtype=torch.long)
        held = validation_indices(labels, val_split, name, info.num_classes)
        rest = torch.ones(len(labels), dtype=torch.bool)
        rest[held] = False
        train, val = train.subset(rest.nonzero().flatten()), train.subset(held)
    train = _subset_files(train, n_train, "n_train", name, seed)
    test = _subset_files(files.test, n_test, "n_test", name, seed)
    if streams(info, len(train), stream):
        return FileSplits(name, info, train, test, val, files.ignored)
    train_x, train_y, skipped = into_memory(name, info, train, "training")
    test_x, test_y, skipped_test = into_memory(name, info, test, "test")
    data = ImageData(name, info, train_x, train_y, test_x, test_y,
                     skipped=skipped + skipped_test, ignored=files.ignored)
    if val is not None:
        data.val_x, data.val_y, skipped_val = into_memory(name, info, val, "validation")
        data.skipped += skipped_val
    return data


def _subset_files(listing: ImageListing, n: int | None, what: str, name: str, seed: int):
    idx = _subset_indices(torch.tensor(listing.labels, dtype=torch.long), n, what, name, seed)
    return listing if idx is None else listing.subset(idx)


def validation_count(val_split: float | int, n: int) -> int:
    """How many of n training images `val_split` (a fraction or a count) holds out."""
    return round(val_split * n) if isinstance(val_split, float) else int(val_split)


def validation_indices(labels: Tensor, val_split: float | int, name: str,
                       num_classes: int) -> Tensor:
    """The held-out validation images' indices: stratified, at least one image per class."""
    n = len(labels)
    count = validation_count(val_split, n)
    given = f"val_split={val_split}" + (f" ({count} images)" if isinstance(val_split, float)
                                        else "")
    if not 0 < count < n:
        raise UserError(f"{given} must leave images on both sides of {name}'s {n} training "
                        "images; give a fraction in (0, 1) or a count below that")
    if labels.dim() > 1:  # maps: a seeded draw of whole images
        return random_indices(n, count, VAL_SEED)
    idx = stratified_indices(labels, count, VAL_SEED)
    missing = num_classes - len(labels[idx].unique())
    if missing:
        smallest = math.ceil(n / int(labels.bincount().min()))  # 1 for the rarest class
        raise UserError(f"{given} leaves {missing} of {name}'s {num_classes} classes without a "
                        f"validation image; give at least {min(smallest, n - 1)} images "
                        f"(or a fraction of at least {min(smallest, n - 1) / n:.4f})")
    return idx


def _subset(x: Tensor, y: Tensor, n: int | None, what: str, name: str, seed: int):
    idx = _subset_indices(y, n, what, name, seed)
    return (x, y) if idx is None else (x[idx].contiguous(), y[idx].contiguous())


def _subset_indices(y: Tensor, n: int | None, what: str, name: str, seed: int
                    ) -> Tensor | None:
    """The stratified subset of n of the labels `y` (None: all of them), n checked first."""
    if n is None or n == len(y):
        return None
    if n <= 0:
        raise UserError(f"{what}={n} must be a positive number of images")
    if n > len(y):
        raise UserError(
            f"{what}={n} is larger than the {len(y)} images {name} has; "
            f"use at most {len(y)} or leave {what} out for all of them"
        )
    return stratified_indices(y, n, seed) if y.dim() == 1 else random_indices(len(y), n, seed)


def random_indices(total: int, n: int, seed: int) -> Tensor:
    """n of `total` indices drawn by `seed`, sorted: the subsets of datasets whose labels are
    maps, which have no one class per image to stratify by."""
    gen = torch.Generator().manual_seed(seed)
    return torch.randperm(total, generator=gen)[:n].sort().values


def stratified_indices(labels: Tensor, n: int, seed: int) -> Tensor:
    """n indices whose class proportions match `labels` (largest remainders), sorted."""
    gen = torch.Generator().manual_seed(seed)
    classes, counts = labels.unique(return_counts=True)
    exact = counts.double() * n / len(labels)
    quota = exact.floor().long()
    # Hand the rounding leftovers to the classes with the largest fractional parts.
    leftover = n - int(quota.sum())
    quota[torch.argsort(exact - quota, descending=True)[:leftover]] += 1
    picked = []
    for c, q in zip(classes.tolist(), quota.tolist(), strict=True):
        members = (labels == c).nonzero().flatten()
        picked.append(members[torch.randperm(len(members), generator=gen)[:q]])
    return torch.cat(picked).sort().values


def sized_info(base: DatasetInfo, image_size: int | None) -> DatasetInfo:
    """A generated set's info at `image_size` (`any_size` sets: multiples of 8 from 16 up to
    their own size); the table's for the others and without a size."""
    if not base.any_size or image_size is None:
        return base
    if not (16 <= image_size <= base.image_size and image_size % 8 == 0):
        raise UserError(f"image_size={image_size}: this generated set is made at multiples of "
                        f"8 from 16 to {base.image_size}; use e.g. 32")
    return dataclasses.replace(base, image_size=image_size)


def _scenes(info: DatasetInfo, root, download: bool):
    """Fashion-MNIST scenes from the real items (`sdkd_core.scenes`) at `info.image_size`; the
    dataset's task picks the class maps or the depth maps."""
    train, test = _composed(root, download, info.n_train, info.n_test, info.image_size)
    pick = 1 if info.task == "segmentation" else 2
    # Copies: the composed scenes stay as made for the next load in this process.
    return train[0].clone(), train[pick].clone(), test[0].clone(), test[pick].clone()


@functools.lru_cache(maxsize=1)  # one set of scenes (both tasks share it)
def _composed(root, download: bool, n_train: int, n_test: int, size: int):
    """The scenes, composed once per process (a second or two each time): a reused trial
    process, or a segmentation and a depth run, load the same ones again."""
    items = read_fashion_mnist("fashion_mnist", root, download)
    return fashion_scenes(*items, n_train, n_test, size=size)

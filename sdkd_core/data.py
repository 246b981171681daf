"""Datasets as in-memory uint8 tensors, and a loader that augments whole batches on the device.

Images stay uint8 until the last moment: padding uses the image background (0), then the crop,
the flip and the normalisation run on a whole batch at once, on the training device. That is both
faster than a per-sample PIL pipeline and faithful to the test images (no grey borders).
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import os
import shutil
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor
from torch.nn import functional as F

from sdkd_core.errors import UserError, unknown_choice

DEBIAN_FASHION_MNIST = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "test_x": "t10k-images-idx3-ubyte",
    "test_y": "t10k-labels-idx1-ubyte",
}


@dataclass(frozen=True)
class DatasetInfo:
    """What a model and the augmentation need to know about a dataset."""

    num_classes: int
    in_channels: int
    image_size: int
    mean: tuple[float, ...]  # per channel, on the [0, 1] scale
    std: tuple[float, ...]
    pad: int  # random-crop padding in pixels (0: no crop)
    flip: bool  # random horizontal flip


DATASET_INFO: dict[str, DatasetInfo] = {
    "fashion_mnist": DatasetInfo(10, 1, 28, (0.2860,), (0.3530,), pad=2, flip=True),
    "cifar10": DatasetInfo(
        10, 3, 32, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), pad=4, flip=True
    ),
    "cifar100": DatasetInfo(
        100, 3, 32, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), pad=4, flip=True
    ),
    # Generated, for tests: 10 classes of noisy smooth templates, 1x28x28.
    "synthetic": DatasetInfo(10, 1, 28, (0.5,), (0.25,), pad=2, flip=True),
    # Generated in CIFAR-100's shape and size (3x32x32, 100 classes, 50k/10k): GPU runs of the
    # CIFAR recipe where the real files cannot be downloaded.
    "synthetic_cifar100": DatasetInfo(
        100, 3, 32, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), pad=4, flip=True
    ),
}
DATASETS = tuple(DATASET_INFO)
SYNTHETIC_SIZES = {"synthetic": (2000, 500), "synthetic_cifar100": (50000, 10000)}
CHUNK_BATCHES = 32  # batches augmented together


@dataclass
class ImageData:
    """A dataset held in memory: uint8 images [N, C, H, W] and int64 labels [N]."""

    name: str
    info: DatasetInfo
    train_x: Tensor
    train_y: Tensor
    test_x: Tensor
    test_y: Tensor

    @property
    def num_classes(self) -> int:
        return self.info.num_classes

    @property
    def in_channels(self) -> int:
        return self.info.in_channels


def default_data_root() -> Path:
    return Path(os.environ.get("SDKD_DATA", Path.home() / ".cache" / "sdkd" / "data"))


def load_dataset(
    name: str,
    root: str | Path | None = None,
    n_train: int | None = None,
    n_test: int | None = None,
    seed: int = 0,
    download: bool = True,
) -> ImageData:
    """Load `name` into memory, optionally as stratified subsets of n_train / n_test images.

    `root` is a folder holding the files; without it Fashion-MNIST is looked up in the Debian
    package's folder, then in the data cache (`$SDKD_DATA`, default ~/.cache/sdkd/data), where
    torchvision downloads it when online. The subsets depend only on `seed`.
    """
    if name not in DATASET_INFO:
        raise unknown_choice("dataset", name, DATASETS)
    if root is not None and not Path(root).is_dir():
        raise UserError(
            f"data folder '{root}' does not exist; pass an existing folder (--data-root) "
            "or leave it out to use the default locations"
        )
    loaders = {
        "fashion_mnist": _fashion_mnist,
        "cifar10": _cifar,
        "cifar100": _cifar,
        "synthetic": _synthetic,
        "synthetic_cifar100": _synthetic,
    }
    train_x, train_y, test_x, test_y = loaders[name](name, root, download)
    data = ImageData(name, DATASET_INFO[name], train_x, train_y, test_x, test_y)
    data.train_x, data.train_y = _subset(data.train_x, data.train_y, n_train, "n_train", name, seed)
    data.test_x, data.test_y = _subset(data.test_x, data.test_y, n_test, "n_test", name, seed)
    return data


def _subset(x: Tensor, y: Tensor, n: int | None, what: str, name: str, seed: int):
    if n is None or n == len(y):
        return x, y
    if n <= 0:
        raise UserError(f"{what}={n} must be a positive number of images")
    if n > len(y):
        raise UserError(
            f"{what}={n} is larger than the {len(y)} images {name} has; "
            f"use at most {len(y)} or leave {what} out for all of them"
        )
    idx = stratified_indices(y, n, seed)
    return x[idx].contiguous(), y[idx].contiguous()


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


# ---------------------------------------------------------------- sources


def read_idx(path: Path) -> Tensor:
    """Read an IDX file of unsigned bytes (gzipped or not) into a uint8 tensor."""
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as err:
        raise UserError(f"cannot read '{path}' ({err}); reinstall or re-download it") from None
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] != 0x08:
        raise UserError(f"'{path}' is not an IDX file of bytes; reinstall or re-download it")
    ndim = raw[3]
    dims = struct.unpack(f">{ndim}I", raw[4 : 4 + 4 * ndim])
    body = raw[4 + 4 * ndim :]
    if len(body) != int(torch.tensor(dims).prod()):
        raise UserError(f"'{path}' is truncated or corrupted; reinstall or re-download it")
    return torch.frombuffer(bytearray(body), dtype=torch.uint8).reshape(dims)


def _find_idx(folder: Path) -> dict[str, Path] | None:
    """The four Fashion-MNIST IDX files in `folder` (or torchvision's layout under it)."""
    for base in (folder, folder / "FashionMNIST" / "raw"):
        found = {}
        for key, stem in FASHION_MNIST_FILES.items():
            for candidate in (base / stem, base / f"{stem}.gz"):
                if candidate.is_file():
                    found[key] = candidate
                    break
        if len(found) == len(FASHION_MNIST_FILES):
            return found
    return None


def _fashion_mnist(name: str, root, download: bool):
    folders = [Path(root)] if root is not None else [DEBIAN_FASHION_MNIST, default_data_root()]
    for folder in folders:
        files = _find_idx(folder)
        if files:
            x = {k: read_idx(p) for k, p in files.items()}
            return (
                x["train_x"].unsqueeze(1),
                x["train_y"].long(),
                x["test_x"].unsqueeze(1),
                x["test_y"].long(),
            )
    reason = "downloading was not allowed"
    if root is not None:  # checked at once: no slow download attempt into the user's folder
        reason = "a given data folder is used as it is (leave it out to download)"
    elif download:
        target = default_data_root()
        # What a failed download leaves behind (folders, partial archives) is removed again.
        leftovers = [p for p in (target / "FashionMNIST", target, *target.parents)
                     if not p.exists()]
        try:
            from torchvision.datasets import FashionMNIST

            train = FashionMNIST(str(target), train=True, download=True)
            test = FashionMNIST(str(target), train=False, download=True)
            return (
                train.data.unsqueeze(1),
                train.targets.long(),
                test.data.unsqueeze(1),
                test.targets.long(),
            )
        except Exception as err:  # noqa: BLE001 - any download failure means the same to the user
            reason = f"torchvision could not download it ({type(err).__name__})"
            if leftovers:
                shutil.rmtree(leftovers[0], ignore_errors=True)
            for folder in leftovers[1:]:
                with contextlib.suppress(OSError):
                    folder.rmdir()
    looked = ", ".join(str(f) for f in folders)
    raise UserError(
        f"Fashion-MNIST not found in {looked} and {reason}: install the Debian package "
        "(apt-get install dataset-fashion-mnist), pass --data-root to a folder with its IDX "
        "files, or run once online so torchvision downloads it"
    )


def _cifar(name: str, root, download: bool):
    from torchvision.datasets import CIFAR10, CIFAR100

    cls = CIFAR10 if name == "cifar10" else CIFAR100
    target = str(root if root is not None else default_data_root())
    try:
        splits = [cls(target, train=t, download=False) for t in (True, False)]
    except RuntimeError:
        if not download:
            raise UserError(
                f"{name} not found in '{target}'; pass --data-root or allow downloading"
            ) from None
        try:
            splits = [cls(target, train=t, download=True) for t in (True, False)]
        except Exception as err:  # noqa: BLE001
            raise UserError(
                f"{name} not found in '{target}' and torchvision could not download it "
                f"({type(err).__name__}): run once online, or pass --data-root to a folder "
                "holding the extracted python version of the dataset"
            ) from None
    out = []
    for split in splits:
        out.append(torch.from_numpy(split.data).permute(0, 3, 1, 2).contiguous())
        out.append(torch.tensor(split.targets, dtype=torch.long))
    return tuple(out)


def _synthetic(name: str, root, download: bool):
    """Learnable generated images: each class a smooth random template, plus noise and jitter."""
    info = DATASET_INFO[name]
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

    n_train, n_test = SYNTHETIC_SIZES[name]
    train_x, train_y = draw(n_train)
    test_x, test_y = draw(n_test)
    return train_x, train_y, test_x, test_y


# ---------------------------------------------------------------- batches


def derive_seed(*parts: object) -> int:
    """A stable 63-bit seed from any parts (seed, epoch, rank, ...), the same on every machine."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def augment_batch(x: Tensor, pad: int, flip: bool, generator: torch.Generator) -> Tensor:
    """Random crop (after padding with 0) and horizontal flip, a different one per image."""
    b, _, h, w = x.shape
    dev = x.device
    if pad:
        dy = torch.randint(0, 2 * pad + 1, (b,), generator=generator, device=dev)
        dx = torch.randint(0, 2 * pad + 1, (b,), generator=generator, device=dev)
        # Every crop of every image as a view [B, C, 2p+1, 2p+1, H, W]; pick one per image.
        windows = F.pad(x, (pad, pad, pad, pad)).unfold(2, h, 1).unfold(3, w, 1)
        x = windows[torch.arange(b, device=dev), :, dy, dx]  # 0 is the uint8 background
    else:
        x = x.clone()
    if flip:
        flipped = torch.rand(b, generator=generator, device=dev) < 0.5
        x[flipped] = x[flipped].flip(-1)
    return x


class BatchLoader:
    """Batches of (normalised float images, labels) from uint8 tensors kept on `device`.

    Training order and augmentation depend only on (seed, epoch, rank), so a resumed run sees
    exactly the batches an uninterrupted one would. With world_size > 1 each rank gets a
    disjoint shard; training shards have equal length so DDP ranks step together. `batch_size`
    is this rank's: with a global batch B split as B // world_size, the ranks' i-th batches
    together hold exactly the images of one rank's i-th batch of size B (the order is shared
    and dealt round-robin), so one and several ranks take the same steps over the same images.
    """

    def __init__(
        self,
        x: Tensor,
        y: Tensor,
        info: DatasetInfo,
        batch_size: int,
        device: torch.device | str = "cpu",
        train: bool = False,
        seed: int = 0,
        rank: int = 0,
        world_size: int = 1,
        channels_last: bool = False,
    ):
        if batch_size < 1:
            raise UserError(f"batch_size={batch_size} must be at least 1")
        self.device = torch.device(device)
        self.x, self.y = x.to(self.device), y.to(self.device)
        self.info, self.batch_size, self.train = info, batch_size, train
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.channels_last = channels_last
        shape = (1, -1, 1, 1)
        self.mean = torch.tensor(info.mean, device=self.device).view(shape) * 255
        self.std = torch.tensor(info.std, device=self.device).view(shape) * 255
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _shard_size(self) -> int:
        n = len(self.y)
        return n // self.world_size if self.train else len(range(self.rank, n, self.world_size))

    def _indices(self) -> Tensor:
        n = len(self.y)
        if not self.train:
            return torch.arange(n)[self.rank :: self.world_size]
        order = torch.randperm(n, generator=torch.Generator().manual_seed(self._seed("order")))
        return order[self.rank :: self.world_size][: self._shard_size()]

    def _seed(self, stream: str) -> int:
        rank = self.rank if stream == "augment" else 0  # the order is shared by all ranks
        return derive_seed(self.seed, self.epoch, rank, stream)

    def __len__(self) -> int:
        n = self._shard_size()
        # Training drops the last partial batch: a batch of one would break BatchNorm.
        return n // self.batch_size if self.train else -(-n // self.batch_size)

    @property
    def num_images(self) -> int:
        """Images one pass yields on this rank."""
        n = self._shard_size()
        return len(self) * self.batch_size if self.train else n

    def normalise(self, x: Tensor) -> Tensor:
        x = (x.float() - self.mean) / self.std
        return x.contiguous(memory_format=torch.channels_last) if self.channels_last else x

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        # One host-to-device copy per epoch; training drops the last partial batch.
        idx = self._indices()[: len(self) * self.batch_size].to(self.device)
        augment = self.train and (self.info.pad or self.info.flip)
        gen = None
        if augment:
            gen = torch.Generator(device=self.device).manual_seed(self._seed("augment"))
        # Augment and normalise CHUNK_BATCHES batches at once: a few large ops instead of
        # many small ones per batch, then hand out views.
        bs, span = self.batch_size, self.batch_size * CHUNK_BATCHES
        for start in range(0, len(idx), span):
            chunk = idx[start : start + span]
            x = self.x[chunk]
            if augment:
                x = augment_batch(x, self.info.pad, self.info.flip, gen)
            x, y = self.normalise(x), self.y[chunk]
            for i in range(0, len(chunk), bs):
                yield x[i : i + bs], y[i : i + bs]

"""Batches from in-memory uint8 images, augmented a whole chunk at once on the device.

Images stay uint8 until the last moment: padding uses the image background (0), then the crop,
the flip and the normalisation run on a whole batch at once, on the training device. That is both
faster than a per-sample PIL pipeline and faithful to the test images (no grey borders).
"""

from __future__ import annotations

import hashlib
from abc import ABC, abstractmethod
from collections.abc import Iterator

import torch
from torch import Tensor

from sdkd_core.augment import augment_batch
from sdkd_core.datasets import DatasetInfo
from sdkd_core.errors import UserError
from sdkd_core.tasks import get_task

CHUNK_BATCHES = 32  # batches augmented together
# What a training batch can carry besides (images, labels), for a method's `batch_inputs`.
BATCH_INPUTS = {
    "index": "each image's position in the training set (a memory bank's key)",
    "strong_view": "a strongly augmented copy of each image: its own crop and flip, then "
                   "RandAugment (2 ops, magnitude 10), normalised as the images",
}


def example_inputs(x: Tensor, index: Tensor) -> dict[str, Tensor]:
    """A value of every batch input for images `x` at training-set positions `index`: what a
    cost estimate or a check of a method outside the engine gives its `forward`."""
    return {"index": index, "strong_view": torch.randn_like(x)}


# MLKD's strong view (Jin-Ying/Multi-Level-Logit-Distillation, dataset/cifar100.py):
# RandAugment(2, 10) after the crop and flip; here torchvision's RandAugment with those numbers.
STRONG_OPS, STRONG_MAGNITUDE = 2, 10


def derive_seed(*parts: object) -> int:
    """A stable 63-bit seed from any parts (seed, epoch, rank, ...), the same on every machine."""
    digest = hashlib.sha256("/".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "little") & ((1 << 63) - 1)


def rand_augment(x: Tensor, num_ops: int = STRONG_OPS, magnitude: int = STRONG_MAGNITUDE
                 ) -> Tensor:
    """torchvision's RandAugment (transforms.v2, 31 magnitude bins) on each uint8 image of
    x [B, C, H, W], on the CPU. The draws come from torch's global RNG in the order
    RandAugment.forward makes them image after image, so the result equals calling it on each
    image in turn; each drawn op then runs once on all the images that drew it (tens of times
    faster than image by image, whose many tiny ops also thrash torch's threads)."""
    from torchvision.transforms import v2  # 1.7 s to import: paid only where a method asks
    augment = v2.RandAugment(num_ops, magnitude)
    space = augment._AUGMENTATION_SPACE  # op -> (magnitudes by bin, signed); private but stable
    names = list(space)
    h, w = x.shape[-2:]
    strength = {}
    for name, (magnitudes, _) in space.items():
        values = magnitudes(augment.num_magnitude_bins, h, w)
        strength[name] = 0.0 if values is None else float(values[magnitude])
    draws = []  # per image, per op: (name, signed magnitude)
    for _ in range(len(x)):
        ops = []
        for _ in range(num_ops):
            name = names[int(torch.randint(len(names), ()))]
            value = strength[name]
            if space[name][1] and torch.rand(()) <= 0.5:  # signed ops: a random sign
                value = -value
            ops.append((name, value))
        draws.append(ops)
    x = x.clone()
    for step in range(num_ops):
        groups: dict[tuple[str, float], list[int]] = {}
        for i, ops in enumerate(draws):
            groups.setdefault(ops[step], []).append(i)
        for (name, value), members in groups.items():
            if name != "Identity":
                idx = torch.tensor(members)
                x[idx] = augment._apply_image_or_video_transform(
                    x[idx], name, value, interpolation=augment.interpolation, fill=augment._fill)
    return x


class EpochLoader(ABC):
    """What every loader shares: one seeded order per epoch dealt round-robin to the ranks
    (equal shares for training, whose last partial batch is dropped: a batch of one would break
    BatchNorm), the batch count, and normalisation on the device. A subclass yields batches of
    `epoch_indices()` from its own store (tensors here; files in the study's StreamedLoader).
    """

    def __init__(self, n: int, info: DatasetInfo, batch_size: int,
                 device: torch.device | str = "cpu", train: bool = False, seed: int = 0,
                 rank: int = 0, world_size: int = 1, channels_last: bool = False,
                 inputs: tuple[str, ...] = ()):
        if batch_size < 1:
            raise UserError(f"batch_size={batch_size} must be at least 1")
        self.n, self.info, self.batch_size, self.train = n, info, batch_size, train
        self.device = torch.device(device)
        self.seed, self.rank, self.world_size = seed, rank, world_size
        self.channels_last, self.inputs = channels_last, tuple(inputs)
        shape = (1, -1, 1, 1)
        self.mean = torch.tensor(info.mean, device=self.device).view(shape) * 255
        self.std = torch.tensor(info.std, device=self.device).view(shape) * 255
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def _shard_size(self) -> int:
        n = self.n
        return n // self.world_size if self.train else len(range(self.rank, n, self.world_size))

    def epoch_indices(self) -> Tensor:
        """This rank's images of this epoch, in order (training: whole batches only)."""
        if not self.train:
            return torch.arange(self.n)[self.rank :: self.world_size]
        gen = torch.Generator().manual_seed(derive_seed(self.seed, self.epoch, 0, "order"))
        order = torch.randperm(self.n, generator=gen)  # shared by all ranks
        return order[self.rank :: self.world_size][: len(self) * self.batch_size]

    def __len__(self) -> int:
        n = self._shard_size()
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
        for x, y, _ in self.batches():
            yield x, y

    @abstractmethod
    def batches(self) -> Iterator[tuple[Tensor, Tensor, dict[str, Tensor]]]:
        """(images, labels, {name: tensor} for each of `inputs`), batch by batch."""


class BatchLoader(EpochLoader):
    """Batches of (normalised float images, labels) from uint8 tensors kept on `device`; a
    dense task's labels are maps [N, H, W], augmented with their images by the task.

    Training order and augmentation depend only on (seed, epoch, rank), so a resumed run sees
    exactly the batches an uninterrupted one would. With world_size > 1 each rank gets a
    disjoint shard; training shards have equal length so DDP ranks step together. `batch_size`
    is this rank's: with a global batch B split as B // world_size, the ranks' i-th batches
    together hold exactly the images of one rank's i-th batch of size B (the order is shared
    and dealt round-robin), so one and several ranks take the same steps over the same images.
    """

    def __init__(self, x: Tensor, y: Tensor, info: DatasetInfo, batch_size: int,
                 device: torch.device | str = "cpu", **options):
        super().__init__(len(y), info, batch_size, device, **options)
        self.x, self.y = x.to(self.device), y.to(self.device)

    def _seed(self, stream: str, *more: object) -> int:
        return derive_seed(self.seed, self.epoch, self.rank, stream, *more)

    def strong_view(self, x: Tensor, start: int) -> Tensor:
        """A strong view of uint8 images x (the chunk at `start` of this epoch's order): a crop
        and flip of its own, then RandAugment. Made on the CPU, so every device sees the same
        images, from a seed of (seed, epoch, rank, "strong", start), so a resumed run too."""
        threads = torch.get_num_threads()
        # Hundreds of tiny ops: on one thread they ran 60x faster than on two (48 CIFAR
        # images: 0.03 s against 2 s), where every op waited for a busy core.
        torch.set_num_threads(1)
        try:
            with torch.random.fork_rng(devices=[]):  # RandAugment draws from the global RNG
                torch.manual_seed(self._seed("strong", start))
                x = x.cpu()
                if self.info.pad or self.info.flip:
                    x = augment_batch(x, self.info.pad, self.info.flip, torch.default_generator)
                x = rand_augment(x)
        finally:
            torch.set_num_threads(threads)
        return x.to(self.device)

    def batches(self) -> Iterator[tuple[Tensor, Tensor, dict[str, Tensor]]]:
        """(images, labels, {name: tensor} for each of `inputs`), batch by batch."""
        # One host-to-device copy per epoch; training drops the last partial batch.
        idx = self.epoch_indices().to(self.device)
        augment = self.train and self.info.augments
        task = get_task(self.info.task)
        gen = None
        if augment:
            gen = torch.Generator(device=self.device).manual_seed(self._seed("augment"))
        # Augment and normalise CHUNK_BATCHES batches at once: a few large ops instead of
        # many small ones per batch, then hand out views.
        bs, span = self.batch_size, self.batch_size * CHUNK_BATCHES
        for start in range(0, len(idx), span):
            chunk = idx[start : start + span]
            x, y = self.x[chunk], self.y[chunk]
            if augment:  # the task's: an image alone, or an image and its map together
                x, y = task.augment(x, y, self.info, gen)
            x = self.normalise(x)
            extras = {"index": chunk} if "index" in self.inputs else {}
            if "strong_view" in self.inputs:
                extras["strong_view"] = self.normalise(self.strong_view(self.x[chunk], start))
            for i in range(0, len(chunk), bs):
                yield x[i : i + bs], y[i : i + bs], {k: v[i : i + bs] for k, v in extras.items()}

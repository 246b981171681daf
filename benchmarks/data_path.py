"""The data path: its images/s against a torchvision PIL DataLoader, and its share of a step.

1. Throughput. The batched, on-device augmentation path and a PIL DataLoader do the same work
   per image (pad-crop, horizontal flip, to float, normalise) on the same Fashion-MNIST images,
   measured side by side in one run; the ratio is what matters.
2. Share of a training step. For KD and SDKD (resnet20 -> resnet8), one epoch of the engine's
   own training loader alone, against one training epoch that consumes the same batches;
   rounds interleaved, median of the ratios.

    python benchmarks/data_path.py [--images 20000] [--batch-size 64] [--device auto]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch
from common import Result, Target, cuda_sync, machine
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from sdkd_core.data import load_dataset
from sdkd_core.distillers import build_distiller
from sdkd_core.engine import Engine, select_device
from sdkd_core.loader import BatchLoader
from sdkd_core.models import build_model
from sdkd_core.recipe import Recipe

SHARE_GOAL = 0.05


class PILImages(Dataset):
    """What torchvision's FashionMNIST does per item: a PIL image through a transform."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor, transform):
        self.x, self.y, self.transform = x, y, transform

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i):
        image = Image.fromarray(self.x[i, 0].numpy(), mode="L")
        return self.transform(image), int(self.y[i])


def images_per_second(batches, limit: int) -> float:
    seen, start = 0, time.perf_counter()
    for x, _ in batches:
        seen += len(x)
        if seen >= limit:
            break
    cuda_sync()
    return seen / (time.perf_counter() - start)


def step_share(data, method: str, batch_size: int, device, rounds: int) -> float:
    """Median over rounds of (one epoch of the training loader) / (one training epoch)."""
    torch.manual_seed(0)
    student = build_model("resnet8", data.num_classes, data.in_channels)
    teacher = build_model("resnet20", data.num_classes, data.in_channels)
    engine = Engine(build_distiller(method, student, teacher), data,
                    Recipe(epochs=100, batch_size=batch_size), device=device)
    engine.train_epoch()  # warm-up
    engine.epoch += 1
    shares = []
    for _ in range(rounds):
        engine.train_loader.set_epoch(engine.epoch)
        start = time.perf_counter()
        for _ in engine.train_loader:
            pass
        cuda_sync()
        loader_s = time.perf_counter() - start
        shares.append(loader_s / engine.train_epoch()["train_s"])
        engine.epoch += 1
    return statistics.median(shares)


def measure(args) -> Result:
    data = load_dataset("fashion_mnist", n_train=args.images)
    info = data.info
    device = select_device(args.device)
    batched = BatchLoader(data.train_x, data.train_y, info, args.batch_size, device=device,
                          train=True)
    images_per_second(batched, 2000)  # warm-up
    fast = images_per_second(batched, args.images)

    transform = transforms.Compose([
        transforms.RandomCrop(info.image_size, padding=info.pad),
        transforms.RandomHorizontalFlip(),
        transforms.ToTensor(),
        transforms.Normalize(info.mean, info.std),
    ])
    pil = PILImages(data.train_x, data.train_y, transform)
    slow = {}
    for workers in (0, 2):
        loader = DataLoader(pil, batch_size=args.batch_size, shuffle=True, num_workers=workers,
                            persistent_workers=workers > 0)
        images_per_second(loader, 2000)
        slow[workers] = images_per_second(loader, args.images)
    best_workers = max(slow, key=slow.get)
    ratio = fast / slow[best_workers]

    step_data = load_dataset("fashion_mnist", n_train=args.share_images,
                             n_test=args.batch_size * 2)
    shares = {m: step_share(step_data, m, args.batch_size, device, args.rounds)
              for m in ("kd", "sdkd")}

    lines = [f"Machine: {machine()}; batched path on {device}.", "",
             "| path | images/s |", "|---|---|",
             f"| batched on-device augmentation (`sdkd_core.loader.BatchLoader`) | {fast:,.0f} |"]
    lines += [f"| torchvision PIL transforms, DataLoader num_workers={w} | {r:,.0f} |"
              for w, r in slow.items()]
    lines += ["", f"**Ratio batched / best PIL loader (num_workers={best_workers}): "
                  f"{ratio:.1f}x**", "",
              f"Share of a training step (resnet20 -> resnet8, batch {args.batch_size}, "
              f"{args.share_images:,} images per epoch, median of {args.rounds} rounds): "
              "the training loader's epoch alone over a training epoch.", "",
              "| method | data path / training step |", "|---|---|"]
    lines += [f"| {m} | {100 * s:.2f} % |" for m, s in shares.items()]
    worst = max(shares.values())
    return Result("\n".join(lines), [
        Target("data path share of a training step (worst of KD, SDKD)", f"{100 * worst:.2f} %",
               f"<= {100 * SHARE_GOAL:.0f} %", worst <= SHARE_GOAL),
    ])


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=20000, help="images per throughput measurement")
    p.add_argument("--share-images", type=int, default=2560,
                   help="training images per epoch in the share measurement")
    p.add_argument("--rounds", type=int, default=5, help="rounds of the share measurement")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="auto", help="device of the batched path and the step")
    return p.parse_args(argv)


def main(argv=None) -> int:
    print(measure(parse(argv)).markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())

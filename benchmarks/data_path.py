"""Images/s of the batched, on-device augmentation path against a torchvision PIL DataLoader.

Both do the same work per image (pad-crop, horizontal flip, to float, normalise) on the same
Fashion-MNIST images, measured side by side in one run; the ratio is what matters.

    python benchmarks/data_path.py [--images 20000] [--batch-size 64] [--device auto]
"""

from __future__ import annotations

import argparse
import platform
import time

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from sdkd_core.data import BatchLoader, load_dataset
from sdkd_core.engine import select_device


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
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return seen / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=20000, help="images per measurement")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", default="auto", help="device of the batched path")
    args = p.parse_args()

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

    print(f"machine: {platform.processor() or platform.machine()}, "
          f"{torch.get_num_threads()} threads, torch {torch.__version__}, batched on {device}")
    print("| path | images/s |")
    print("|---|---|")
    print(f"| batched on-device augmentation (sdkd_core.data.BatchLoader) | {fast:,.0f} |")
    for workers, rate in slow.items():
        print(f"| torchvision PIL transforms, DataLoader num_workers={workers} | {rate:,.0f} |")
    print(f"\nratio batched / best PIL loader (num_workers={best_workers}): "
          f"{fast / slow[best_workers]:.1f}x")


if __name__ == "__main__":
    main()

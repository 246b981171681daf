"""One CIFAR-100 SDKD epoch, resnet32x4 -> resnet8x4, timed, and the 240-epoch run it implies.

The paper's recipe (batch 64, 240 epochs) on images of CIFAR-100's shape and size: 50,000
training and 10,000 test images, 3x32x32, 100 classes. The images are generated (no download
needed); a step costs the same whatever the pixels are. The teacher is untrained: SDKD's step
does the same work with any frozen teacher weights. With `--variants` the epoch is also timed
with each speed switch flipped.

    python benchmarks/cifar_epoch.py [--images 50000] [--device auto] [--variants]
"""

from __future__ import annotations

import argparse
import sys
import time

import torch
from common import Result, Target, machine

from sdkd_core.data import ImageData
from sdkd_core.datasets import DATASET_INFO
from sdkd_core.distillers import build_distiller
from sdkd_core.engine import Engine, select_device
from sdkd_core.models import build_model
from sdkd_core.recipe import Recipe

EPOCHS = 240
GOAL_S = 20 * 60  # the 240-epoch run on one H100


def generated_cifar100(n_train: int, n_test: int) -> ImageData:
    g = torch.Generator().manual_seed(0)

    def draw(n):
        return (torch.randint(0, 256, (n, 3, 32, 32), dtype=torch.uint8, generator=g),
                torch.randint(0, 100, (n,), generator=g))

    (train_x, train_y), (test_x, test_y) = draw(n_train), draw(n_test)
    return ImageData("cifar100", DATASET_INFO["cifar100"], train_x, train_y, test_x, test_y)


def time_epoch(data: ImageData, device, **switches) -> dict[str, float]:
    torch.manual_seed(0)
    distiller = build_distiller("sdkd", build_model("resnet8x4", 100, 3),
                                build_model("resnet32x4", 100, 3))
    engine = Engine(distiller, data, Recipe(epochs=EPOCHS, batch_size=64, lr=0.05),
                    device=device, **switches)
    first = time.perf_counter()
    engine.train_epoch()  # warm-up: cuDNN autotuning, allocator, torch.compile
    engine.epoch += 1
    first = time.perf_counter() - first
    stats = engine.train_epoch()
    evaluation = engine.evaluate()
    return {"first_s": first, "train_s": stats["train_s"], "eval_s": evaluation["eval_s"],
            "images_per_s": stats["images_per_s"], "amp": engine.use_amp,
            "channels_last": engine.channels_last, "compile": engine.compile}


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=50000,
                   help="training images per epoch (default 50,000, CIFAR-100's); the 240-epoch "
                        "figure is scaled to 50,000")
    p.add_argument("--device", default="auto")
    p.add_argument("--variants", action="store_true",
                   help="also time the epoch with torch.compile on, and bf16/channels_last off")
    return p.parse_args(argv)


def measure(args) -> Result:
    device = select_device(args.device)
    data = generated_cifar100(args.images, max(64, args.images // 5))
    settings = [{}]
    if args.variants:
        settings += [{"compile": True}, {"amp": device.type != "cuda"},
                     {"channels_last": False}]
    lines = [f"Machine: {machine()}; {device}.", "",
             f"SDKD resnet32x4 -> resnet8x4, batch 64, {args.images:,} generated 3x32x32 "
             f"training images and {len(data.test_y):,} test images, second epoch timed.", "",
             "| bf16 autocast | channels_last | torch.compile | images/s | train epoch | eval | "
             f"{EPOCHS} epochs of 50,000 (implied) |", "|---|---|---|---|---|---|---|"]
    runs = []
    for switches in settings:
        r = time_epoch(data, device, **switches)
        scale = 50000 / args.images
        total = EPOCHS * (r["train_s"] + r["eval_s"]) * scale
        runs.append((r, total))
        lines.append(f"| {'on' if r['amp'] else 'off'} | {'on' if r['channels_last'] else 'off'} "
                     f"| {'on' if r['compile'] else 'off'} | {r['images_per_s']:,.0f} | "
                     f"{r['train_s'] * scale:.1f} s | {r['eval_s'] * scale:.1f} s | "
                     f"{total / 60:.1f} min |")
    best = min(total for _, total in runs)
    on_gpu = device.type == "cuda"
    return Result("\n".join(lines), [Target(
        f"CIFAR-100 resnet32x4 -> resnet8x4 SDKD, {EPOCHS} epochs implied (one GPU)",
        f"{best / 60:.1f} min" + ("" if on_gpu else " on the CPU"), "< 20 min on one H100",
        best < GOAL_S if on_gpu else None)])


def main(argv=None) -> int:
    print(measure(parse(argv)).markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())

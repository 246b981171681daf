"""Training-step cost of every method relative to KD, measured side by side in one run.

Each round trains every method for one short epoch (the same images, batch and pair) through the
real engine; methods are interleaved round by round so machine drift hits them alike, and the
median over rounds is reported.

    python benchmarks/step_cost.py [--teacher resnet20 --student resnet8 --images 1280 --rounds 5]
"""

from __future__ import annotations

import argparse
import platform
import statistics

import torch

from sdkd_core.data import load_dataset
from sdkd_core.distillers import METHODS, build_distiller
from sdkd_core.engine import Engine, Recipe
from sdkd_core.models import build_model


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--teacher", default="resnet20")
    p.add_argument("--student", default="resnet8")
    p.add_argument("--dataset", default="fashion_mnist")
    p.add_argument("--images", type=int, default=1280, help="training images per round")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--device", default="auto")
    args = p.parse_args()

    data = load_dataset(args.dataset, n_train=args.images, n_test=args.batch_size * 2)
    methods = args.methods.split(",")
    engines = {}
    for name in methods:
        torch.manual_seed(0)
        student = build_model(args.student, data.num_classes, data.in_channels)
        teacher = build_model(args.teacher, data.num_classes, data.in_channels)
        method = build_distiller(name, student, teacher)
        engines[name] = Engine(method, data, Recipe(epochs=100, batch_size=args.batch_size),
                               device=args.device)
    rates: dict[str, list[float]] = {name: [] for name in methods}
    peak: dict[str, float] = {}
    for r in range(args.rounds + 1):
        for name, engine in engines.items():
            if engine.cuda:
                torch.cuda.reset_peak_memory_stats()
            stats = engine.train_epoch()
            engine.epoch += 1
            if r > 0:  # round 0 warms up allocators and kernels
                rates[name].append(stats["images_per_s"])
            if engine.cuda:
                peak[name] = torch.cuda.max_memory_allocated() / 2**20
    median = {name: statistics.median(v) for name, v in rates.items()}
    device = next(iter(engines.values())).device
    print(f"{args.teacher} -> {args.student} on {args.dataset}, batch {args.batch_size}, "
          f"{args.images} images x {args.rounds} rounds, {device}, "
          f"{platform.machine()}, torch {torch.__version__}, {torch.get_num_threads()} threads")
    header = "| method | images/s (median) | step cost / KD |" + (" peak MiB |" if peak else "")
    print(header)
    print("|---" * (header.count("|") - 1) + "|")
    for name in methods:
        ratio = median["kd"] / median[name] if "kd" in median else float("nan")
        row = f"| {name} | {median[name]:,.0f} | {ratio:.2f} |"
        print(row + (f" {peak[name]:,.0f} |" if peak else ""))


if __name__ == "__main__":
    main()

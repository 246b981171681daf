"""Trials sharing one GPU: aggregate images/s of N trials at gpus_per_trial 1/N against one trial.

Small students leave most of a big GPU idle; Ray Tune packs several trials on it when each asks
for a fraction. Both runs are Ray Tune experiments whose trials train SDKD resnet20 -> resnet8
on generated CIFAR-100-shaped images for `--seconds` after a warm-up epoch: first one trial with
the whole GPU, then N trials at once with 1/N each. Aggregate images/s of the packed run is the
sum over its trials (they run side by side for the same time).

    python benchmarks/gpu_packing.py [--trials 4] [--seconds 60]
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time

import torch
from cifar_epoch import generated_cifar100
from common import Result, Target, machine

GOAL = 2.5  # packed aggregate / one trial


def train_for(config):
    from ray import tune

    from sdkd_core.distillers import build_distiller
    from sdkd_core.engine import Engine
    from sdkd_core.models import build_model
    from sdkd_core.recipe import Recipe

    data = generated_cifar100(config["images"], 640)
    torch.manual_seed(0)
    engine = Engine(build_distiller("sdkd", build_model("resnet8", 100, 3),
                                    build_model("resnet20", 100, 3)),
                    data, Recipe(epochs=1000, batch_size=64), device=config["device"])
    engine.train_epoch()  # warm-up
    engine.epoch += 1
    images, seconds, start = 0, 0.0, time.perf_counter()
    while time.perf_counter() - start < config["seconds"]:
        stats = engine.train_epoch()
        engine.epoch += 1
        images += engine.train_loader.num_images
        seconds += stats["train_s"]
    tune.report({"images": images, "seconds": seconds, "images_per_s": images / seconds})


def run_packed(n: int, args, tmp: str) -> list[float]:
    from ray import tune

    gpu = args.device == "cuda"
    resources = {"gpu": 1 / n, "cpu": 1} if gpu else {"cpu": 1 / n}
    tuner = tune.Tuner(
        tune.with_resources(train_for, resources),
        param_space={"images": args.images, "seconds": args.seconds, "device": args.device,
                     "trial": tune.grid_search(list(range(n)))},
        tune_config=tune.TuneConfig(max_concurrent_trials=n),
        run_config=tune.RunConfig(name=f"packed-{n}", storage_path=tmp, verbose=0),
    )
    results = tuner.fit()
    errors = [r.error for r in results if r.error]
    if errors:
        raise RuntimeError(f"a packing trial failed: {errors[0]}")
    return [r.metrics["images_per_s"] for r in results]


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--trials", type=int, default=4, help="trials sharing the GPU (default 4)")
    p.add_argument("--seconds", type=float, default=60, help="training time per trial")
    p.add_argument("--images", type=int, default=10000, help="generated images per epoch")
    p.add_argument("--device", default="auto",
                   help="cuda, or cpu to try the plumbing on a machine without a GPU")
    return p.parse_args(argv)


def measure(args) -> Result:
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "none"
    name = f"{args.trials} trials at gpus_per_trial {1 / args.trials:g} vs 1 trial per GPU"
    if args.device == "none":
        return Result(f"Not measured: no CUDA GPU on this machine ({machine()}). Run "
                      "`python benchmarks/run.py --only gpu_packing` on one.",
                      [Target(name, "-", f">= {GOAL}x aggregate images/s", None)])
    import ray

    ray.init(num_cpus=max(2, args.trials), include_dashboard=False, log_to_driver=False,
             _node_ip_address="127.0.0.1", logging_level="ERROR")
    try:
        with tempfile.TemporaryDirectory(prefix="gpu-packing-") as tmp:
            alone = run_packed(1, args, tmp)[0]
            packed = run_packed(args.trials, args, tmp)
    finally:
        ray.shutdown()
    ratio = sum(packed) / alone
    lines = [f"Machine: {machine()}; {args.device}.", "",
             f"SDKD resnet20 -> resnet8, batch 64, generated 3x32x32 images, 100 classes, "
             f"{args.seconds:g} s of training per trial after a warm-up epoch.", "",
             "| run | images/s per trial | aggregate images/s |", "|---|---|---|",
             f"| 1 trial, gpus_per_trial 1 | {alone:,.0f} | {alone:,.0f} |",
             f"| {args.trials} trials, gpus_per_trial {1 / args.trials:g} | "
             f"{', '.join(f'{r:,.0f}' for r in packed)} | {sum(packed):,.0f} |", "",
             f"**Aggregate ratio: {ratio:.2f}x**"]
    on_gpu = args.device == "cuda"
    return Result("\n".join(lines), [Target(name, f"{ratio:.2f}x" + ("" if on_gpu else
                                                                     " (CPU plumbing run)"),
                                            f">= {GOAL}x aggregate images/s",
                                            ratio >= GOAL if on_gpu else None)])


def main(argv=None) -> int:
    print(measure(parse(argv)).markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Training-step cost of every method relative to KD, and its peak memory, in one run.

Each round trains every method for one short epoch (the same images, batch and pair) through the
real engine; methods are interleaved round by round so machine drift hits them alike, and the
median over rounds is reported. `--variants` adds KD and SDKD with each speed switch flipped
(channels_last, bf16 autocast, torch.compile), measured in the same rounds.

Peak memory: on a GPU, torch's peak allocation during an epoch of each method. On the CPU, each
method runs in a process of its own, and the figure is the rise of the resident set's high-water
mark (reset just before training, via /proc/self/clear_refs) over the set-up's resident size:
weights' gradients, optimizer state and activations.

    python benchmarks/step_cost.py [--teacher resnet20 --student resnet8 --images 1280 --rounds 5]
    python benchmarks/step_cost.py --dataset fashion_scenes --teacher deeplabv3_resnet14 \
        --student deeplabv3_resnet8 --methods vanilla,kd,cwd,sdkd --variants "" --batch-size 16
"""

from __future__ import annotations

import argparse
import gc
import json
import statistics
import subprocess
import sys
from pathlib import Path

import torch
from common import Result, Target, machine

from sdkd_core.data import load_dataset
from sdkd_core.distillers import METHODS, build_distiller
from sdkd_core.engine import Engine
from sdkd_core.models import build_model
from sdkd_core.recipe import Recipe

DEFAULT_METHODS = ("vanilla", "kd", "dml", "shake", "dkd", "sdkd")
SDKD_GOAL = 1.35  # SDKD step / KD step
# Engine switch -> (the attribute holding its resolved value, its name in the table).
SWITCHES = {"channels_last": ("channels_last", "channels_last"),
            "amp": ("use_amp", "bf16 autocast"),
            "compile": ("compile", "torch.compile")}


def build_engine(args, data, method: str, **switches) -> Engine:
    torch.manual_seed(0)
    student = build_model(args.student, data.num_classes, data.in_channels)
    teacher = build_model(args.teacher, data.num_classes, data.in_channels)
    distiller = build_distiller(method, student, teacher, task=data.info.task)
    # A long recipe keeps the lr schedule flat over the few epochs measured.
    return Engine(distiller, data, Recipe(epochs=100, batch_size=args.batch_size),
                  device=args.device, **switches)


def variant_name(method: str, flipped: str, engine: Engine) -> str:
    attr, label = SWITCHES[flipped]
    return f"{method} {'+' if getattr(engine, attr) else '-'}{label}"


def measure_rates(args, data) -> tuple[dict[str, float], dict[str, float], str]:
    engines: dict[str, Engine] = {}
    for name in args.methods:
        engines[name] = build_engine(args, data, name)
    default = next(iter(engines.values()))
    for method in args.variants:
        for flipped in SWITCHES:
            value = not getattr(default, SWITCHES[flipped][0])
            engine = build_engine(args, data, method, **{flipped: value})
            engines[variant_name(method, flipped, engine)] = engine
    rates: dict[str, list[float]] = {name: [] for name in engines}
    peak: dict[str, float] = {}
    warmup = 2  # allocators, kernels, and torch.compile's first and dynamic-shape compiles
    for r in range(args.rounds + warmup):
        for name, engine in engines.items():
            if engine.cuda:
                torch.cuda.synchronize()
                before = torch.cuda.memory_allocated()
                torch.cuda.reset_peak_memory_stats()
            stats = engine.train_epoch()
            engine.epoch += 1
            if r >= warmup:
                rates[name].append(stats["images_per_s"])
            if engine.cuda:
                peak[name] = (torch.cuda.max_memory_allocated() - before) / 2**20
    median = {name: statistics.median(v) for name, v in rates.items()}
    return median, peak, str(default.device)


def rss_memory_of(args, method: str) -> float:
    """MiB the resident set grows by while `method` trains (run in a fresh process)."""
    cmd = [sys.executable, __file__, "--memory-of", method, "--teacher", args.teacher,
           "--student", args.student, "--dataset", args.dataset, "--images", str(args.images),
           "--batch-size", str(args.batch_size), "--device", args.device]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])["mib"]


def _status_kib(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def memory_child(args, data) -> None:
    engine = build_engine(args, data, args.memory_of)
    gc.collect()
    base = _status_kib("VmRSS")
    Path("/proc/self/clear_refs").write_text("5")  # high-water mark := current resident size
    for _ in range(2):  # the first epoch allocates the optimizer state
        engine.train_epoch()
        engine.epoch += 1
    print(json.dumps({"mib": (_status_kib("VmHWM") - base) / 1024}))


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--teacher", default="resnet20")
    p.add_argument("--student", default="resnet8")
    p.add_argument("--dataset", default="fashion_mnist")
    p.add_argument("--images", type=int, default=1280, help="training images per round")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--rounds", type=int, default=5, help="measured rounds (after 2 warm-ups)")
    p.add_argument("--methods", default=",".join(DEFAULT_METHODS),
                   help=f"comma-separated, of {', '.join(METHODS)} (kd is the reference)")
    p.add_argument("--variants", default="kd,sdkd",
                   help="methods also measured with each speed switch flipped ('' for none)")
    p.add_argument("--no-memory", action="store_true", help="skip the peak-memory column")
    p.add_argument("--device", default="auto")
    p.add_argument("--memory-of", default=None, help=argparse.SUPPRESS)  # the child process
    args = p.parse_args(argv)
    args.methods = [m for m in args.methods.split(",") if m]
    args.variants = [m for m in args.variants.split(",") if m]
    for m in (*args.methods, *args.variants):
        if m not in METHODS:
            p.error(f"unknown method '{m}'; choose from {', '.join(METHODS)}")
    if "kd" not in args.methods:
        args.methods.insert(0, "kd")
    return args


def measure(args) -> Result:
    data = load_dataset(args.dataset, n_train=args.images, n_test=args.batch_size * 2)
    median, peak, device = measure_rates(args, data)
    if not peak and not args.no_memory and Path("/proc/self/clear_refs").exists():
        peak = {m: rss_memory_of(args, m) for m in args.methods}
    what = "GPU peak allocated" if device.startswith("cuda") else "CPU resident-set rise"
    lines = [f"Machine: {machine()}; {device}.", "",
             f"{args.teacher} -> {args.student} on {args.dataset}, batch {args.batch_size}, "
             f"{args.images:,} images per round, median of {args.rounds} rounds after 2 warm-ups.",
             "", f"| method | images/s | step cost / KD | {what}, MiB |", "|---|---|---|---|"]
    for name in median:
        ratio = median["kd"] / median[name]
        mib = f"{peak[name]:,.0f}" if name in peak else "-"
        bold = "**" if name == "sdkd" else ""
        lines.append(f"| {name} | {median[name]:,.0f} | {bold}{ratio:.2f}{bold} | {mib} |")
    targets = []
    if "sdkd" in median:
        ratio = median["kd"] / median["sdkd"]
        targets.append(Target(f"SDKD step / KD step ({device.split(':')[0].upper()})",
                              f"{ratio:.2f}", f"<= {SDKD_GOAL}", ratio <= SDKD_GOAL))
    return Result("\n".join(lines), targets)


def main(argv=None) -> int:
    args = parse(argv)
    if args.memory_of:
        data = load_dataset(args.dataset, n_train=args.images, n_test=args.batch_size * 2)
        memory_child(args, data)
        return 0
    print(measure(args).markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())

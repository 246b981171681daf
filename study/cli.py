"""Pieces every command-line tool shares: one-line usage errors, recipe flags, progress lines."""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sdkd_core.cli import check_output_folder, clock
from sdkd_core.data import DATASETS
from sdkd_core.engine import select_device
from sdkd_core.errors import UserError, unknown_choice
from sdkd_core.recipe import MAX_SEED, PRECISIONS, RECIPE_RULES, Recipe
from sdkd_core.tasks import task_of


def fraction_list(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"'{text}' is not a comma-separated list of numbers like 0.5,0.75") from None


def add_data_args(p: argparse.ArgumentParser, n_train_default: int | None = None) -> None:
    p.add_argument("--dataset", default="fashion_mnist",
                   help=f"one of {', '.join(DATASETS)} (default fashion_mnist; docs/data.md)")
    p.add_argument("--data-root", default=None,
                   help="folder holding the dataset files (default: Debian package folder, "
                        "then $SDKD_DATA or ~/.cache/sdkd/data); image files: the folder "
                        "holding train/ and val/")
    p.add_argument("--image-size", type=int, default=None,
                   help="image files: the side of the square views; dense datasets: the "
                        "views' height (default: the dataset's)")
    p.add_argument("--crop", choices=["pad", "resized"], default=None,
                   help="image files: training crop, pad (pad and crop, as CIFAR) or resized "
                        "(RandomResizedCrop, as ImageNet) (default: the dataset's)")
    p.add_argument("--stream", choices=["auto", "true", "false"], default="auto",
                   help="image files: stream through Ray Data (true), decode into memory "
                        "(false), or the rule of docs/data.md (auto, the default)")
    what = "all of it" if n_train_default is None else str(n_train_default)
    p.add_argument("--n-train", type=int, default=n_train_default,
                   help=f"stratified subset of the training set, a positive count "
                        f"(default: {what})")
    p.add_argument("--n-test", type=int, default=None,
                   help="stratified subset of the test set, a positive count (default: all)")
    p.add_argument("--seed", type=int, default=0,
                   help=f"seed for weights, subsets and batches, 0..{MAX_SEED} (default 0)")


def data_section(args, **fields):
    """The dataset section the data flags describe (`fields` over them)."""
    # pydantic and the dataset schema load only for the commands that build a section.
    from pydantic import ValidationError

    from study.sections import DatasetSection

    stream = {"auto": None, "true": True, "false": False}[args.stream]
    try:
        return DatasetSection(**{"name": args.dataset, "root": args.data_root,
                                 "n_train": args.n_train, "n_test": args.n_test,
                                 "image_size": args.image_size, "crop": args.crop,
                                 "stream": stream, **fields})
    except ValidationError as err:
        first = err.errors()[0]
        flag = "--" + str(first["loc"][0]).replace("_", "-")
        raise UserError(f"{flag}: {first['msg']} (got {first.get('input')!r})") from None


def add_recipe_args(p: argparse.ArgumentParser) -> None:
    d = Recipe()
    p.add_argument("--epochs", type=int, default=d.epochs, help=f"at least 1 (default {d.epochs})")
    p.add_argument("--lr", type=float, default=d.lr,
                   help=f"SGD learning rate, positive (default {d.lr})")
    p.add_argument("--momentum", type=float, default=d.momentum,
                   help=f"in [0, 1) (default {d.momentum})")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay,
                   help=f"0 or more (default {d.weight_decay})")
    p.add_argument("--batch-size", type=int, default=d.batch_size,
                   help=f"at least 2 (default {d.batch_size})")
    p.add_argument("--schedule", choices=["step", "cosine", "poly"], default=d.schedule,
                   help="learning-rate decay: cosine (default), step (at --milestones) or poly "
                        "((1 - progress)^0.9, the segmentation recipe)")
    p.add_argument("--milestones", type=fraction_list, default=d.milestones,
                   help="step decay points: increasing fractions of the epochs in (0, 1), "
                        "each once (default 0.5,0.75)")
    p.add_argument("--gamma", type=float, default=d.gamma,
                   help="step decay factor in (0, 1] (default 0.1)")
    p.add_argument("--warmup-epochs", type=float, default=d.warmup_epochs,
                   help="linear learning-rate warm-up, in epochs, below --epochs (default 0)")
    p.add_argument("--precision", choices=PRECISIONS, default=d.precision,
                   help="auto (default): bf16 autocast on GPUs, fp32 on the CPU; fp32: the "
                        "references' numerics everywhere")


def add_runtime_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--cache-dir", default=None,
                   help="teacher cache folder, made if absent (default $SDKD_CACHE or "
                        "~/.cache/sdkd)")
    p.add_argument("--device", default="auto", help="auto (default), cpu, cuda or cuda:N")


def recipe_from_args(args: argparse.Namespace) -> Recipe:
    return Recipe(epochs=args.epochs, lr=args.lr, momentum=args.momentum,
                  weight_decay=args.weight_decay, batch_size=args.batch_size,
                  schedule=args.schedule, milestones=args.milestones, gamma=args.gamma,
                  warmup_epochs=args.warmup_epochs, precision=args.precision)


_IMAGES = (lambda v, _: v is None or v >= 1, "a positive number of images, or left out for all")

# What each number flag must be, as (test, requirement): the recipe's own rules and the rest.
# A flag a command lacks is skipped.
FLAG_RULES: dict[str, tuple[Callable[[Any, Any], bool], str]] = {
    **RECIPE_RULES,
    "teacher_epochs": (lambda v, _: v >= 1, "at least 1, like 4"),
    "n_train": _IMAGES,
    "n_test": _IMAGES,
    "teacher_n_train": _IMAGES,
    "seed": (lambda v, _: 0 <= v <= MAX_SEED, f"in 0..{MAX_SEED}, like 0"),
}


def check_flag_values(args: argparse.Namespace) -> None:
    """Every number flag, so that nan, inf, 0 or a repeated milestone fail before any work."""
    for name, (ok, must) in FLAG_RULES.items():
        if hasattr(args, name) and not ok(value := getattr(args, name), args):
            shown = ",".join(f"{v:g}" for v in value) if isinstance(value, tuple) else value
            raise UserError(f"--{name.replace('_', '-')} {shown}: must be {must}")


def check_common(args: argparse.Namespace) -> None:
    """Checks that need no data: every number flag, dataset name, folders, device."""
    check_flag_values(args)
    if args.dataset not in DATASETS:
        raise unknown_choice("dataset", args.dataset, DATASETS)
    if args.data_root is not None and not Path(args.data_root).is_dir():
        raise UserError(f"data folder '{args.data_root}' does not exist; pass an existing "
                        "folder with --data-root or leave it out")
    if args.cache_dir is not None:
        check_output_folder("--cache-dir", args.cache_dir)
    select_device(args.device)


def progress_line(row: dict[str, float], epochs: int, start: float,
                  method_metrics: tuple[str, ...] = ()) -> str:
    """One epoch's line: losses, the task's metric (each head's too), the method's own per-epoch
    values (`Distiller.epoch_metrics`, e.g. SDKD's phase flag k), speed and ETA."""
    done = int(row["epoch"])
    elapsed = time.perf_counter() - start
    eta = elapsed / done * (epochs - done)
    task = task_of(row)
    m, show = task.metric, task.show
    extra = "".join(f"  {k.removeprefix(f'test_{m}_')} {show(v)}" for k, v in row.items()
                    if k.startswith(f"test_{m}_") and k != f"test_{m}_best")
    extra += "".join(f"  {k} {row[k]:.4g}" for k in method_metrics if k in row)
    val = f"  val {show(row[f'val_{m}'])}" if f"val_{m}" in row else ""
    return (f"epoch {done:>3}/{epochs}  loss {row['train_loss']:.4f}  "
            f"train {show(row[f'train_{m}'])}{val}  test {show(row[f'test_{m}'])}{extra}  "
            f"{row['images_per_s']:7.0f} img/s  elapsed {clock(elapsed)}  ETA {clock(eta)}")

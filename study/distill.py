"""Train one student with one method, the teacher coming from the cache (pretrained if missing).

    python study/distill.py --method sdkd --teacher resnet20 --student resnet8 \
        --dataset fashion_mnist --set sdkd.lambda=2

Writes `<output>/epochs.csv` (one row per epoch, the columns a sweep writes) and
`<output>/result.json`.
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any

import torch

from sdkd_core.cli import OneLineParser, check_output_folder, run_main
from sdkd_core.config import parse_overrides
from sdkd_core.data import DatasetInfo
from sdkd_core.distillers import METHODS, Distiller, build_distiller
from sdkd_core.engine import Engine
from sdkd_core.errors import UserError
from sdkd_core.files import write_csv, write_json
from sdkd_core.models import MODEL_NAMES, StagedNet, build_model
from sdkd_core.models.published import load_teacher_checkpoint
from sdkd_core.plugins import load_plugins
from sdkd_core.recipe import TEACHER_EPOCHS, Recipe
from sdkd_core.tasks import task_of
from study.cli import (
    add_data_args,
    add_recipe_args,
    add_runtime_args,
    check_common,
    data_section,
    progress_line,
    recipe_from_args,
)
from study.runfolder.trials import PlannedTrial
from study.sections import DatasetSection
from study.teachers import TeacherCache, TeacherSpec, card_score


def build_method(trial: PlannedTrial, info: DatasetInfo) -> tuple[Distiller, StagedNet]:
    """The trial's method with an untrained teacher: every setting is validated before any
    training."""
    torch.manual_seed(trial.seed)
    student = build_model(trial.student, info.num_classes, info.in_channels)
    teacher = build_model(trial.teacher, info.num_classes, info.in_channels)
    return build_distiller(trial.method, student, teacher, trial.params, task=info.task), teacher


def prepare(trial: PlannedTrial, data: DatasetSection, recipe: Recipe,
            teacher: TeacherSpec | None, cache: TeacherCache, device: str = "auto", log=print,
            rank: int = 0, world_size: int = 1, wrap=None, compile: bool = False) -> Engine:
    """The engine of `trial` on `data` under `recipe`: images loaded, teacher from the cache
    (trained now if missing; None: the method needs no pretrained teacher)."""
    method, network = build_method(trial, data.info())  # fail fast on bad keys
    images = data.load(trial.seed)
    if teacher is not None and method.needs_teacher and method.needs_teacher_weights:
        trained, card, cached = cache.get(teacher, device=device, log=log)
        network.load_state_dict(trained.state_dict())
        how = "cached" if cached else "measured now" if teacher.checkpoint else "trained now"
        log(f"teacher {trial.teacher}: {card_score(card)} on {card['n_test']} test images "
            f"({how})")
    return Engine(method, images, recipe, device=device, seed=trial.seed, rank=rank,
                  world_size=world_size, wrap=wrap, compile=compile)


def run(trial: PlannedTrial, data: DatasetSection, recipe: Recipe, teacher: TeacherSpec | None,
        cache: TeacherCache, device: str = "auto", log=print, on_epoch=None,
        compile: bool = False) -> list[dict[str, Any]]:
    """Train the student; returns the per-epoch rows (trial identity + metrics)."""
    engine = prepare(trial, data, recipe, teacher, cache, device=device, log=log,
                     compile=compile)
    identity = {"trial_id": trial.name, "method": trial.method, "teacher": trial.teacher,
                "student": trial.student, "seed": trial.seed, **trial.params}
    log(f"{trial.method}: {trial.pair} on {data.name} "
        f"({len(engine.data.train_y)} train / {len(engine.data.test_y)} test images, "
        f"{recipe.epochs} epochs, {engine.device})"
        + "".join(f"; {note}" for note in getattr(engine.data, "notes", ())))
    rows: list[dict[str, Any]] = []
    own_metrics = tuple(engine.method.epoch_metrics())
    start = time.perf_counter()

    def record(stats):
        rows.append({**identity, **stats})
        log(progress_line(stats, recipe.epochs, start, own_metrics))
        if on_epoch is not None:
            on_epoch(rows)

    engine.fit(on_epoch=record)
    return rows


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog="distill.py", description="Train one student with one method.")
    p.add_argument("--method", default="sdkd",
                   help=f"one of {', '.join(METHODS)} (default sdkd), or a method of a --plugin")
    p.add_argument("--plugin", action="append", default=[], metavar="MODULE",
                   help="import MODULE (from the working directory or PYTHONPATH) first; its "
                        "@sdkd_core.distillers.register methods become --method choices "
                        "(repeatable)")
    p.add_argument("--teacher", default="resnet20", help=f"teacher model: {', '.join(MODEL_NAMES)}")
    p.add_argument("--student", default="resnet8", help="student model (default resnet8)")
    add_data_args(p, n_train_default=10000)
    add_recipe_args(p)
    p.add_argument("--teacher-epochs", type=int, default=TEACHER_EPOCHS,
                   help=f"epochs of the teacher's pretraining, at least 1 "
                        f"(default {TEACHER_EPOCHS})")
    p.add_argument("--teacher-n-train", type=int, default=None,
                   help="training images of the teacher, a positive count (default: all)")
    p.add_argument("--teacher-checkpoint", default=None, metavar="PATH",
                   help="a published teacher instead of training one: this project's weights, "
                        "a RepDistiller/mdistiller checkpoint (a dict with key 'model'), or "
                        "torchvision's weights (resnet18/34/50) of the --teacher architecture")
    p.add_argument("--val-split", type=fraction_or_count, default=None, metavar="F|N",
                   help="hold out validation images from the training images: a fraction in "
                        "(0, 1) or a count; each epoch then reports val_acc too")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a method setting, e.g. sdkd.lambda=2 or temperature=3 (repeatable, "
                        "once per key; numbers finite)")
    add_runtime_args(p)
    p.add_argument("--compile", action="store_true",
                   help="torch.compile the training step (see docs/benchmarks.md for when it "
                        "pays: it costs a compile at the start)")
    p.add_argument("--output", default=None,
                   help="folder for epochs.csv and result.json, not a file (default "
                        "runs/distill/<trial id>)")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)

    def body() -> int:
        load_plugins(args.plugin)
        check_common(args)
        if args.teacher_checkpoint is not None:
            check_teacher_checkpoint(args)
        trial = PlannedTrial(args.method, args.teacher, args.student, args.seed,
                             parse_overrides(args.set))
        data = data_section(args, val_split=args.val_split)
        teacher = TeacherSpec(data.model_copy(update={"n_train": args.teacher_n_train}),
                              args.teacher, Recipe(epochs=args.teacher_epochs),
                              checkpoint=args.teacher_checkpoint)
        output = Path(args.output or Path("runs") / "distill" / trial.name)
        check_output_folder("--output", output)
        rows = run(trial, data, recipe_from_args(args), teacher, TeacherCache(args.cache_dir),
                   device=args.device, compile=args.compile,
                   on_epoch=lambda rows: write_csv(output / "epochs.csv", rows))
        last = rows[-1]
        write_json(output / "result.json", last)
        task = task_of(last)
        score = f"test_{task.metric}"
        print(f"{trial.name}: test {task.metric_name} {task.show(last[score])} (last epoch), "
              f"{task.show(last[f'{score}_best'])} (best epoch); rows in "
              f"{output / 'epochs.csv'}")
        return 0

    return run_main("distill.py", body)


def fraction_or_count(text: str) -> float | int:
    """--val-split: a count (digits) or a fraction in (0, 1)."""
    value = int(text) if text.isdigit() else float(text)
    if isinstance(value, int) and value > 0 or 0 < value < 1 and math.isfinite(value):
        return value
    raise ValueError(text)


def check_teacher_checkpoint(args) -> None:
    """--teacher-checkpoint fits --teacher on --dataset, before anything is written."""
    if not Path(args.teacher_checkpoint).is_file():
        raise UserError(f"--teacher-checkpoint {args.teacher_checkpoint}: not a file; give the "
                        "path of the teacher's checkpoint")
    info = data_section(args).info()
    try:
        load_teacher_checkpoint(args.teacher_checkpoint, args.teacher, info.num_classes,
                                info.in_channels)
    except UserError as err:
        raise UserError(f"--teacher-checkpoint: {err}") from None


if __name__ == "__main__":
    sys.exit(main())

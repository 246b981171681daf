"""Every method on one pair under one recipe and the same seeds: mean +- std of test accuracy.

Runs are resumable: a finished run (its result.json) is read back, not trained again. A method
may carry settings, `kd+kd.logit_standardize=true` (several joined by `+`): a row of its own.
A row whose runs were still improving at their last epoch is marked † (the rule of
analysis/convergence.py: the mean gain over the last quarter of the epochs beyond both 0.5
points and the seeds' spread), with that gain in its own column.

    python benchmarks/compare_methods.py [--seeds 0,1,2 --epochs 8 --n-train 10000 \
        --teacher resnet20 --student resnet8 --output runs/compare \
        --methods vanilla,kd,kd+kd.logit_standardize=true,...]
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from analysis.convergence import MARK, cell_trend
from sdkd_core.config import parse_overrides
from sdkd_core.distillers import METHODS
from sdkd_core.files import write_csv
from sdkd_core.recipe import Recipe
from sdkd_core.stats import summarize
from study.distill import run
from study.runfolder.trials import PlannedTrial
from study.sections import DatasetSection
from study.teachers import TeacherCache, TeacherSpec


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--teacher", default="resnet20")
    p.add_argument("--student", default="resnet8")
    p.add_argument("--dataset", default="fashion_mnist")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--n-train", type=int, default=10000)
    p.add_argument("--n-test", type=int, default=None, help="test images (default: all)")
    p.add_argument("--teacher-n-train", type=int, default=None,
                   help="the teacher's training images (default: all)")
    p.add_argument("--output", default="runs/compare")
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--device", default="auto")
    args = p.parse_args()

    cache = TeacherCache(args.cache_dir)
    results: dict[str, list[dict]] = {}
    curves: dict[str, list[pd.DataFrame]] = {}
    data = DatasetSection(name=args.dataset, n_train=args.n_train, n_test=args.n_test)
    recipe = Recipe(epochs=args.epochs)
    # The teacher of every run: pretrained once (cached), on every training image by default.
    teacher = TeacherSpec(DatasetSection(name=args.dataset, n_train=args.teacher_n_train),
                          args.teacher)
    for seed in (int(s) for s in args.seeds.split(",")):
        for row in args.methods.split(","):
            method, *settings = row.split("+")
            trial = PlannedTrial(method, args.teacher, args.student, seed,
                                 parse_overrides(settings))
            folder = Path(args.output) / "+".join([trial.name, *settings])
            done = folder / "result.json"
            if not done.exists():
                rows = run(trial, data, recipe, teacher, cache, device=args.device,
                           on_epoch=lambda rows, f=folder: write_csv(f / "epochs.csv", rows))
                done.write_text(json.dumps(rows[-1], indent=2) + "\n")
            results.setdefault(row, []).append(json.loads(done.read_text()))
            curves.setdefault(row, []).append(
                pd.read_csv(folder / "epochs.csv").assign(trial_id=folder.name))

    teacher_card = cache.get(teacher, device=args.device)[1]
    print(f"\n{args.teacher} (teacher: {teacher_card['test_acc']:.2f}%) -> {args.student}, "
          f"{args.dataset}, {args.n_train} training images, "
          f"{args.n_test or 'all'} test images, "
          f"{args.epochs} epochs, seeds {args.seeds}")
    print("| method | last epoch (mean ± std) | best epoch (mean ± std) | n | late gain |")
    print("|---|---|---|---|---|")
    for method, rows in results.items():
        last = [r["test_acc"] for r in rows]
        best = [r["test_acc_best"] for r in rows]
        epochs = pd.concat(curves[method])
        trend = cell_trend(epochs, list(dict.fromkeys(epochs["trial_id"])), last)
        mark = f" {MARK}" if trend.improving else ""
        print(f"| {method} | {summarize(last)}{mark} | {summarize(best)} | {len(rows)} | "
              f"{trend.mean_gain:+.2f} |")
    print(f"\n{MARK}: still improving at the last epoch; the budget decided that row.")


if __name__ == "__main__":
    main()

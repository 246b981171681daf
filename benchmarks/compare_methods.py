"""Every method on one pair under one recipe and the same seeds: mean +- std of test accuracy.

Runs are resumable: a finished run (its result.json) is read back, not trained again.

    python benchmarks/compare_methods.py [--seeds 0,1,2 --epochs 8 --n-train 10000 \
        --teacher resnet20 --student resnet8 --output runs/compare]
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from sdkd_core.distillers import METHODS
from sdkd_core.engine import Recipe
from study.distill import DistillRun, run
from study.records import write_csv
from study.teachers import TeacherCache


def mean_std(values: list[float]) -> str:
    std = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):.2f} ± {std:.2f}"


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--teacher", default="resnet20")
    p.add_argument("--student", default="resnet8")
    p.add_argument("--dataset", default="fashion_mnist")
    p.add_argument("--methods", default=",".join(METHODS))
    p.add_argument("--seeds", default="0,1,2")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--n-train", type=int, default=10000)
    p.add_argument("--output", default="runs/compare")
    p.add_argument("--cache-dir", default=None)
    p.add_argument("--device", default="auto")
    args = p.parse_args()

    cache = TeacherCache(args.cache_dir)
    results: dict[str, list[dict]] = {}
    for seed in (int(s) for s in args.seeds.split(",")):
        for method in args.methods.split(","):
            spec = DistillRun(method, args.teacher, args.student, args.dataset,
                              Recipe(epochs=args.epochs), seed=seed, n_train=args.n_train)
            folder = Path(args.output) / spec.trial_id
            done = folder / "result.json"
            if not done.exists():
                rows = run(spec, cache, device=args.device,
                           on_epoch=lambda rows, f=folder: write_csv(f / "epochs.csv", rows))
                done.write_text(json.dumps(rows[-1], indent=2) + "\n")
            results.setdefault(method, []).append(json.loads(done.read_text()))

    teacher_card = cache.get(DistillRun("kd", args.teacher, args.student, args.dataset,
                                        Recipe()).teacher_spec())[1]
    print(f"\n{args.teacher} (teacher: {teacher_card['test_acc']:.2f}%) -> {args.student}, "
          f"{args.dataset}, {args.n_train} training images, full test set, "
          f"{args.epochs} epochs, seeds {args.seeds}")
    print("| method | last epoch (mean ± std) | best epoch (mean ± std) | n |")
    print("|---|---|---|---|")
    for method, rows in results.items():
        last = [r["test_acc"] for r in rows]
        best = [r["test_acc_best"] for r in rows]
        print(f"| {method} | {mean_std(last)} | {mean_std(best)} | {len(rows)} |")


if __name__ == "__main__":
    main()

"""How much of a sweep's wall time is spent outside the training loops (Ray, Tune, start-up).

    python benchmarks/ray_share.py                       # the default space, ablations.yaml

Runs the sweep as a user would, with its teachers pretrained first (teacher training is a
training loop, not overhead, so it is kept out of both sides), then compares, in that one run:

    loop time   = sum over trials and epochs of (train_s + eval_s), divided by the number of
                  trials that run at once (each holds one slot of the machine)
    sweep time  = wall time of the whole `study/sweep.py` command

share outside the loops = 1 - loop time / sweep time. It counts everything that is not a
training or evaluation pass: Ray's start, trial start-up (data, teacher, model), per-epoch
checkpoints and reports, Tune's bookkeeping, and slots left idle while the last trials finish.
"""

from __future__ import annotations

import argparse
import csv
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--space", default="ablations.yaml")
    p.add_argument("--cache-dir", default=None, help="teacher cache (default: the usual one)")
    args = p.parse_args()
    sys.path.insert(0, str(ROOT))
    from study.space import load_space

    space = load_space(ROOT / args.space)
    slots = space.resources.max_concurrent
    cache = ["--cache-dir", args.cache_dir] if args.cache_dir else []
    with tempfile.TemporaryDirectory(prefix="ray-share-") as tmp:
        out = Path(tmp) / "run"
        base = [sys.executable, "study/sweep.py", "--space", args.space, *cache]
        # Teachers first (a dry run of zero trials would not train them): a one-trial sweep.
        subprocess.run([*base, "--output", str(Path(tmp) / "warm"), "--max-trials", "1"],
                       cwd=ROOT, check=True, capture_output=True)
        start = time.perf_counter()
        subprocess.run([*base, "--output", str(out)], cwd=ROOT, check=True,
                       capture_output=True)
        wall = time.perf_counter() - start
        with open(out / "epochs.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        with open(out / "results.csv", newline="") as f:
            trials = list(csv.DictReader(f))
    loop = sum(float(r["train_s"]) + float(r["eval_s"]) for r in rows)
    reported = sum(float(t["wall_s"]) for t in trials)
    share = 1 - loop / slots / wall
    print(f"space {space.name}: {len(trials)} trials, {len(rows)} epochs, {slots} at a time")
    print(f"sweep wall time                 {wall:8.1f} s")
    print(f"training + evaluation loops     {loop:8.1f} s  ({loop / slots:.1f} s per slot)")
    print(f"trial time between reports      {reported:8.1f} s  (loops + checkpoints, per trial)")
    print(f"share outside the loops         {100 * share:8.1f} %")
    return 0


if __name__ == "__main__":
    sys.exit(main())

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

import yaml
from common import ROOT, Result, Target, machine, quick_document

GOAL = 0.15


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--space", default="ablations.yaml")
    p.add_argument("--cache-dir", default=None, help="teacher cache (default: the usual one)")
    p.add_argument("--quick", action="store_true",
                   help="the space on 1,000 images, 2 epochs, 4 drawn trials per tuned method: "
                        "a smoke run (its share is larger than the default sweep's: shorter "
                        "trials)")
    return p.parse_args(argv)


def measure(args) -> Result:
    from study.load import load_study_file

    with tempfile.TemporaryDirectory(prefix="ray-share-") as tmp:
        space_file = ROOT / args.space
        if args.quick:
            doc = quick_document(yaml.safe_load(space_file.read_text()))
            doc["search"] = {**doc.get("search", {}), "num_samples": 4}
            space_file = Path(tmp) / "quick.yaml"
            space_file.write_text(yaml.safe_dump(doc, sort_keys=False))
        slots = load_study_file(space_file).resources.max_concurrent
        cache = ["--cache-dir", args.cache_dir] if args.cache_dir else []
        out = Path(tmp) / "run"
        base = [sys.executable, "study/sweep.py", "--space", str(space_file), *cache]
        # Teachers first (a dry run of zero trials would not train them): a one-trial sweep.
        print("ray share: teachers (a one-trial sweep)", flush=True)
        subprocess.run([*base, "--output", str(Path(tmp) / "warm"), "--max-trials", "1",
                        "--no-report"], cwd=ROOT, check=True, capture_output=True)
        print("ray share: the sweep, timed", flush=True)
        start = time.perf_counter()
        subprocess.run([*base, "--output", str(out)], cwd=ROOT, check=True,
                       capture_output=True)
        wall = time.perf_counter() - start
        with open(out / "epochs.csv", newline="") as f:
            rows = list(csv.DictReader(f))
        with open(out / "results.csv", newline="") as f:
            trials = list(csv.DictReader(f))
    loop = sum(float(r["train_s"]) + float(r["eval_s"]) for r in rows)
    share = 1 - loop / slots / wall
    name = args.space + (" (quick)" if args.quick else "")
    lines = [
        f"Machine: {machine()}.", "",
        f"`python study/sweep.py --space {args.space}`{' shrunk by --quick' if args.quick else ''}"
        f", teachers cached: {len(trials)} trials, {len(rows)} epochs, {slots} at a time.", "",
        "| measured in one run | |", "|---|---|",
        f"| sweep wall time (the whole command, report included) | {wall:.1f} s |",
        f"| training + evaluation loops, all trials | {loop:.1f} s = {loop / slots:.1f} s per "
        f"slot ({slots} slots) |",
        f"| **share outside the loops** | **{100 * share:.1f} %** |",
    ]
    return Result("\n".join(lines), [Target(f"Ray's share of the sweep's wall time ({name})",
                                             f"{100 * share:.1f} %", f"<= {100 * GOAL:.0f} %",
                                             share <= GOAL)])


def main(argv=None) -> int:
    print(measure(parse(argv)).markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())

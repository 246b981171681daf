"""Search efficiency: the epochs a searcher spends to come within 0.5 points of a full grid's best.

    python benchmarks/search_efficiency.py [--space ablations.yaml] [--quick] [--seeds 10]

1. The grid. Every continuous axis of the space gets `--points` values (log-spaced for
   loguniform), choices keep their values, and every pair is included. The grid runs as a real
   sweep (`study/sweep.py`, grid sampler, no ASHA, no baselines) into `--grid-dir`; a finished
   grid is reused and a killed one resumed. Its best last-epoch accuracy sets the target.
2. The searches. TPE+ASHA (the sweep's own searcher and scheduler classes, in Ray Tune) is
   run over the same grid points with `--seeds` sampler seeds; so are TPE alone, random+ASHA
   and random alone. A trial's curve is read from the grid's epochs.csv instead of being
   trained again: training is deterministic for a given config and seed (tests/
   test_determinism.py), so a retrained trial would report exactly these numbers, and a
   search costs seconds instead of hours, which is what lets it be repeated over seeds.
   Epochs spent are counted in the order Tune received the reports, up to the first trial that
   finishes its last epoch within `--tolerance` points of the grid's best.

Prints a Markdown table; benchmarks/run.py puts it in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import csv
import itertools
import math
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml
from common import ROOT, Result, Target, machine, quick_document, search_metric, subject

STRATEGIES = ("tpe+asha", "random+asha", "tpe", "random")
TICK_S = 0.01  # per reported epoch in a replayed trial: keeps concurrent trials interleaved


def grid_axis(dist: dict[str, Any], points: int) -> list[Any]:
    kind = dist["type"]
    if kind == "choice":
        return list(dist["values"])
    low, high = dist["low"], dist["high"]
    if kind == "int":
        return list(range(low, high + 1)) if high - low < points else \
            sorted({round(low + (high - low) * i / (points - 1)) for i in range(points)})
    if kind == "loguniform":
        return [float(f"{low * (high / low) ** (i / (points - 1)):.4g}") for i in range(points)]
    return [float(f"{low + (high - low) * i / (points - 1):.4g}") for i in range(points)]


def grid_document(base: dict[str, Any], points: int, quick: bool) -> dict[str, Any]:
    doc = quick_document(base) if quick else dict(base)
    method = subject(base)
    doc["name"] = f"{base['name']}-grid"
    doc["baselines"] = []
    doc["space"] = {key: {"type": "choice", "values": grid_axis(d, points)}
                    for key, d in base["space"].items() if key.startswith(f"{method}.")}
    # Every point once, on the search's seed: the searches replay exactly these curves.
    doc["search"] = {**(doc.get("search") or {}), "methods": [method], "sampler": "grid",
                     "scheduler": "none", "confirm_top": 0}
    return doc


def config_key(teacher: str, student: str, params: dict[str, Any], keys: list[str]) -> tuple:
    return (teacher, student, *(f"{float(params[k]):.6g}" for k in keys))


def run_grid(doc: dict[str, Any], grid_dir: Path, cache_dir: str | None) -> Path:
    """The grid's run folder, finished (reused when it already is)."""
    run = grid_dir / "run"
    space_file = grid_dir / "grid.yaml"
    text = yaml.safe_dump(doc, sort_keys=False)
    if space_file.exists() and space_file.read_text() != text:
        raise SystemExit(f"{grid_dir} holds a different grid; pass another --grid-dir")
    grid_dir.mkdir(parents=True, exist_ok=True)
    space_file.write_text(text)
    if _finished(run, doc):
        print(f"grid: reusing the finished grid in {run}", flush=True)
        return run
    cmd = [sys.executable, "study/sweep.py", "--space", str(space_file), "--output", str(run),
           "--no-report", *(["--resume"] if (run / "space.yaml").exists() else []),
           *(["--cache-dir", cache_dir] if cache_dir else [])]
    print("grid: " + " ".join(cmd[1:]), flush=True)
    start = time.perf_counter()
    subprocess.run(cmd, cwd=ROOT, check=True)
    print(f"grid: {time.perf_counter() - start:.0f} s", flush=True)
    return run


def _finished(run: Path, doc: dict[str, Any]) -> bool:
    results = run / "results.csv"
    if not results.exists():
        return False
    with open(results, newline="") as f:
        rows = list(csv.DictReader(f))
    size = math.prod(len(d["values"]) for d in doc["space"].values()) * len(doc["pairs"])
    return len(rows) == size and all(r["status"] == "completed" for r in rows)


def read_table(run: Path, keys: list[str], metric: str) -> dict[tuple, list[float]]:
    """config -> `metric` after each epoch."""
    curves: dict[tuple, dict[int, float]] = {}
    with open(run / "epochs.csv", newline="") as f:
        for row in csv.DictReader(f):
            key = config_key(row["teacher"], row["student"], row, keys)
            curves.setdefault(key, {})[int(row["epoch"])] = float(row[metric])
    return {k: [v[e] for e in sorted(v)] for k, v in curves.items()}


def replay(doc: dict[str, Any], table: dict[tuple, list[float]], strategy: str, seed: int,
           target: float, tmp: Path) -> dict[str, Any]:
    """One search over the grid's points; the epochs it spent until a trial reached `target`."""
    # Here, not at the top: run.py and its tests import this module without loading Ray.
    from ray import tune

    from study.asha import DrawnTrialsASHA
    from study.load import load_study_file
    from study.runfolder import RunFolder
    from study.search import StudySearcher
    from study.study_object import make_study

    sampler, _, scheduler = strategy.partition("+")
    budget = len(table) * 2  # a searcher may draw a point twice; each draw is trained again
    run_doc = {**doc, "search": {**doc["search"], "sampler": sampler, "seed": seed,
                                 "scheduler": scheduler or "none", "num_samples": budget}}
    name = f"{strategy.replace('+', '-')}-s{seed}"
    space_file = tmp / f"{name}.yaml"
    space_file.write_text(yaml.safe_dump(run_doc, sort_keys=False))
    # The sweep's own study object over a run folder of its own: Optuna's studies live in its
    # optuna.db, ASHA records its stops in its ended/, Tune's experiment is its tune/.
    folder = RunFolder(tmp / name)
    folder.root.mkdir(parents=True, exist_ok=True)
    study = make_study(load_study_file(space_file, local_gpu_check=False), folder,
                       tmp / "teachers")
    assert study.draws == {subject(doc): budget}, study.draws
    keys, metric, epochs = list(study.file.space), study.metric, study.epochs

    def trainable(config):
        curve = table[config_key(config["teacher"], config["student"], config["params"], keys)]
        for epoch, acc in enumerate(curve, 1):
            time.sleep(TICK_S)
            tune.report({"epoch": epoch, metric: acc, "at": time.monotonic()})

    def reached(epoch, acc) -> bool:
        return epoch >= epochs and acc >= target

    scheduler = DrawnTrialsASHA(study) if study.first_rung is not None else None
    tuner = tune.Tuner(
        tune.with_resources(trainable, {"cpu": 0.01}),
        tune_config=tune.TuneConfig(search_alg=StudySearcher(study), scheduler=scheduler,
                                    num_samples=budget,
                                    max_concurrent_trials=study.file.resources.max_concurrent,
                                    reuse_actors=True),
        run_config=tune.RunConfig(name=folder.tune_dir.name,
                                  storage_path=str(folder.root.resolve()), verbose=0,
                                  stop=stop_all_when(
                                      lambda r: reached(r["epoch"], r[metric]))),
    )
    reports = []
    for result in tuner.fit():
        frame = result.metrics_dataframe
        if frame is not None:
            reports += [(r["at"], r["epoch"], r[metric]) for _, r in frame.iterrows()]
    reports.sort()
    spent = 0
    for _, epoch, acc in reports:
        spent += 1  # each report is one trained epoch
        if reached(epoch, acc):
            return {"epochs": spent, "reached": True, "trials": _count_trials(reports, epochs)}
    return {"epochs": spent, "reached": False, "trials": _count_trials(reports, epochs)}


def _count_trials(reports, epochs) -> int:
    return sum(1 for _, e, _ in reports if e == 1)


def stop_all_when(test):
    """A Tune stopper that ends the whole experiment once any result satisfies `test`."""
    from ray.tune import Stopper  # here: the module is imported without Ray by run.py's tests

    class StopAll(Stopper):
        hit = False

        def __call__(self, trial_id, result):
            self.hit = self.hit or test(result)
            return False

        def stop_all(self):
            return self.hit

    return StopAll()


def summarise(runs: dict[str, list[dict[str, Any]]], grid_epochs: int) -> list[dict[str, Any]]:
    rows = []
    for strategy, outcomes in runs.items():
        fractions = [o["epochs"] / grid_epochs if o["reached"] else math.inf for o in outcomes]
        finite = [f for f in fractions if math.isfinite(f)]
        rows.append({
            "strategy": strategy,
            "median": statistics.median(fractions),
            "mean": statistics.fmean(finite) if finite else math.inf,
            "worst": max(fractions),
            "reached": sum(o["reached"] for o in outcomes),
            "seeds": len(outcomes),
            "within_40": sum(f <= 0.40 for f in fractions),
        })
    return rows


def parse(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--space", default="ablations.yaml", help="the default space (a YAML file)")
    p.add_argument("--points", type=int, default=3,
                   help="grid values per continuous axis (default 3; choices keep theirs)")
    p.add_argument("--seeds", type=int, default=10, help="sampler seeds per strategy")
    p.add_argument("--tolerance", type=float, default=0.5,
                   help="points below the grid's best that count as found (default 0.5)")
    p.add_argument("--grid-dir", default=None,
                   help="where the grid's sweep lives (default runs/bench-search-grid[-quick])")
    p.add_argument("--cache-dir", default=None, help="teacher cache (default: the usual one)")
    p.add_argument("--quick", action="store_true",
                   help="2 points per axis, 2 epochs on 1,000 images, 3 seeds: a smoke run")
    args = p.parse_args(argv)
    if args.quick:
        args.points, args.seeds = 2, min(args.seeds, 3)
    return args


def measure(args) -> Result:
    base = yaml.safe_load((ROOT / args.space).read_text())
    doc = grid_document(base, args.points, args.quick)
    grid_dir = Path(args.grid_dir or ROOT / f"runs/bench-search-grid{'-quick' * args.quick}")
    run = run_grid(doc, grid_dir, args.cache_dir)
    keys, metric = list(doc["space"]), search_metric(doc)
    table = read_table(run, keys, metric)
    epochs = doc["recipe"]["epochs"]
    grid_epochs = sum(len(c) for c in table.values())
    best_key, best_curve = max(table.items(), key=lambda kv: kv[1][-1])
    best = best_curve[-1]
    target = best - args.tolerance
    near = sum(c[-1] >= target for c in table.values())
    print(f"grid: {len(table)} configurations x {epochs} epochs = {grid_epochs} epochs; best "
          f"{best:.2f} ({best_key}); {near} within {args.tolerance} points", flush=True)

    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
             _node_ip_address="127.0.0.1", logging_level="ERROR")
    runs: dict[str, list[dict[str, Any]]] = {s: [] for s in STRATEGIES}
    try:
        with tempfile.TemporaryDirectory(prefix="search-eff-") as tmp:
            for strategy, seed in itertools.product(STRATEGIES, range(args.seeds)):
                outcome = replay(doc, table, strategy, seed, target, Path(tmp))
                runs[strategy].append(outcome)
                print(f"  {strategy:12s} seed {seed}: {outcome['epochs']:4d} epochs "
                      f"({outcome['epochs'] / grid_epochs:6.1%}), {outcome['trials']} trials"
                      f"{'' if outcome['reached'] else ', target not reached'}", flush=True)
    finally:
        ray.shutdown()
    rows = summarise(runs, grid_epochs)
    sizes = " x ".join(str(len(d["values"])) for d in doc["space"].values())
    shown = run.relative_to(ROOT) if run.is_relative_to(ROOT) else run
    best_params = ", ".join(f"{k}={v}" for k, v in zip(keys, best_key[2:], strict=True))
    lines = [
        f"Machine: {machine()}.", "",
        f"Grid of {subject(doc)}'s keys: {len(table)} configurations ({sizes} x "
        f"{len(doc['pairs'])} pair(s)) x {epochs} "
        f"epochs = **{grid_epochs} epochs**, run as a sweep in `{shown}`. "
        f"Best last-epoch {metric} **{best:.2f}** ({best_key[0]} -> {best_key[1]}, "
        f"{best_params}); {near} of {len(table)} configurations are within {args.tolerance:g} "
        "points of it.", "",
        f"Epochs a searcher spends until a trial ends within {args.tolerance:g} points of that, "
        f"as a fraction of the grid's epochs, over {args.seeds} sampler seeds "
        f"({doc['resources'].get('max_concurrent', 1)} trials at a time, as in the sweep):", "",
        "| searcher | median | mean | worst | seeds reaching it | seeds at <= 40 % |",
        "|---|---|---|---|---|---|",
    ]

    def pct(x):
        return "not reached" if not math.isfinite(x) else f"{100 * x:.1f} %"

    for r in rows:
        bold = "**" if r["strategy"] == "tpe+asha" else ""
        lines.append(f"| {r['strategy']} | {bold}{pct(r['median'])}{bold} | {pct(r['mean'])} | "
                     f"{pct(r['worst'])} | {r['reached']}/{r['seeds']} | "
                     f"{r['within_40']}/{r['seeds']} |")
    tpe = next(r for r in rows if r["strategy"] == "tpe+asha")
    return Result("\n".join(lines), [Target(
        f"TPE+ASHA epochs to within {args.tolerance:g} pt of the grid's best (median of "
        f"{args.seeds} seeds)", pct(tpe["median"]), "<= 40 % of the grid's epochs",
        tpe["median"] <= 0.40)])


def main(argv=None) -> int:
    print(measure(parse(argv)).markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())

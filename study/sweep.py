"""Run a study described by one YAML space file.

    python study/sweep.py --space ablations.yaml

validate -> check the data -> pretrain every teacher needed (once, cached) -> run the baselines
on every pair and seed and the Optuna-drawn trials in one Ray Tune sweep (ASHA stops weak drawn
trials) -> the best drawn configurations of each pair again on the other seeds (a second,
short experiment) -> results.csv, epochs.csv, optuna.db and space.yaml in the run folder ->
analysis.

A killed sweep continues with `--resume`: finished trials are kept, running ones continue from
their last epoch's checkpoint.
"""

from __future__ import annotations

import argparse
import importlib.util
import math
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from sdkd_core.distillers import get_method
from sdkd_core.errors import UserError
from sdkd_core.plugins import plugin_paths
from study.cli import OneLineParser, clock, run_main
from study.cluster import check_address, ray_environment, split_address, start_ray
from study.estimate import (
    CPU_GFLOPS_PER_CORE,
    FULL_SIZES,
    GPU_TFLOPS,
    teacher_flops,
    trial_flops,
)
from study.interrupt import Interruption, SweepInterrupted, resume_command
from study.plan import CONFIRM, confirm_seeds, confirm_trials, confirmed_trial
from study.runfolder import RunFolder, write_tables
from study.space import Space, load_space
from study.teachers import TeacherCache, default_cache_dir
from study.trial import TrialContext

PROG = "sweep.py"


def build_parser() -> argparse.ArgumentParser:
    p = OneLineParser(prog=PROG, description="Run a distillation study from a space file.")
    p.add_argument("--space", default=None,
                   help="the study's YAML space file (e.g. ablations.yaml); with --resume it "
                        "may be left out and the run folder's space.yaml is used")
    p.add_argument("--output", default=None,
                   help="run folder (default runs/<space name>)")
    p.add_argument("--resume", action="store_true",
                   help="continue the sweep in the run folder: finished trials are kept, "
                        "interrupted ones continue from their last checkpoint")
    p.add_argument("--dry-run", action="store_true",
                   help="print the trial plan and the estimated cost; start nothing")
    p.add_argument("--max-trials", type=int, default=None,
                   help="run at most this many trials (baselines first, then drawn trials)")
    p.add_argument("--address", default=None,
                   help="address of a running Ray cluster (e.g. 10.0.0.5:6379); default: "
                        "start Ray on this machine, on loopback")
    p.add_argument("--num-cpus", type=int, default=None,
                   help="CPUs the local Ray may use (default: all)")
    p.add_argument("--num-gpus", type=int, default=None,
                   help="GPUs the local Ray may use (default: all visible)")
    p.add_argument("--cache-dir", default=None,
                   help=f"teacher cache (default $SDKD_CACHE or {default_cache_dir()})")
    p.add_argument("--gpu-tflops", type=float, default=GPU_TFLOPS,
                   help=f"effective TFLOP/s of one GPU for --dry-run's estimate "
                        f"(default {GPU_TFLOPS:g})")
    p.add_argument("--no-report", action="store_true",
                   help="skip the HTML report at the end (build it later with "
                        "python -m analysis.report <run folder>)")
    return p


# ---------------------------------------------------------------- plan


def plan(space: Space, max_trials: int | None) -> tuple[list[dict[str, Any]], int]:
    """(fixed trials, number of drawn trials), capped at max_trials in that order."""
    from study.plan import fixed_trials, search_trial_count

    fixed, n_search = fixed_trials(space), search_trial_count(space)
    if max_trials is not None:
        fixed = fixed[:max_trials]
        n_search = max(0, min(n_search, max_trials - len(fixed)))
    return fixed, n_search


def teacher_archs(space: Space) -> list[str]:
    methods = [*space.baselines, space.search.method] if space.space or len(space.pairs) > 1 \
        else list(space.baselines)
    # A method that takes only the teacher's architecture (DML's peer) needs no pretraining.
    if not any(get_method(m).needs_teacher and get_method(m).needs_teacher_weights
               for m in methods):
        return []
    return list(dict.fromkeys(p.teacher for p in space.pairs))


def teacher_spec(context: TrialContext, arch: str):
    """The cache entry a trial with teacher `arch` loads (built the way the trial builds it)."""
    return context.distill_run({"method": "kd", "teacher": arch, "student": arch, "seed": 0,
                                "params": {}}).teacher_spec()


def make_context(space: Space, folder: RunFolder, cache_dir: str) -> TrialContext:
    r = space.resources
    return TrialContext(
        dataset=space.dataset.name, data_root=space.dataset.root, n_train=space.dataset.n_train,
        n_test=space.dataset.n_test, recipe=space.recipe_obj().to_dict(),
        teacher_epochs=space.teacher.epochs, teacher_n_train=space.teacher.n_train,
        cache_dir=cache_dir, train_storage=str(folder.train_dir.resolve()),
        num_workers=r.num_workers, use_gpu=r.use_gpu, cpus_per_worker=r.cpus_per_worker,
        gpus_per_trial=r.gpus_per_trial, max_failures=r.max_failures,
        executor=r.resolved_executor(), compile=r.compile, sync_batchnorm=r.sync_batchnorm,
        plugins=tuple(space.plugins), plugin_paths=tuple(plugin_paths(space.plugins)),
    )


def print_plan(space: Space, fixed, n_search: int, cache: TeacherCache, context, args) -> None:
    from collections import Counter

    ds = space.dataset.name
    full_train, full_test = FULL_SIZES[ds]
    n_train = space.dataset.n_train or full_train
    n_test = space.dataset.n_test or full_test
    epochs = space.recipe.epochs
    print(f"space {space.name}: {ds} ({n_train} train / {n_test} test images), "
          f"{epochs} epochs per trial, seeds {space.seeds}")
    counts = Counter((t["method"], f"{t['teacher']}->{t['student']}") for t in fixed)
    print(f"fixed trials: {len(fixed)}")
    for (method, pair), n in counts.items():
        print(f"  {method:<8} {pair:<24} x{n}")
    dims = ", ".join(space.space) + (", pair" if len(space.pairs) > 1 else "")
    print(f"drawn trials: {n_search} ({space.search.method}; {space.search.sampler} over "
          f"{dims or 'nothing'}; scheduler {space.search.scheduler})")
    other_seeds = confirm_seeds(space)
    n_confirm = (space.search.confirm_top * len(space.pairs) * len(other_seeds)
                 if n_search and args.max_trials is None else 0)
    if n_confirm:
        print(f"confirming trials: up to {n_confirm} (the best {space.search.confirm_top} "
              f"drawn configuration(s) of each pair again on seeds {other_seeds})")
    total = len(fixed) + n_search + n_confirm
    print(f"total trials: {total}")

    flops = sum(trial_flops(t, ds, n_train, n_test, epochs) for t in fixed)
    drawn = [{"method": space.search.method, "teacher": p.teacher, "student": p.student,
              "params": {}} for p in space.pairs]
    if n_search and drawn:
        flops += (n_search + n_confirm) * statistics.mean(
            trial_flops(t, ds, n_train, n_test, epochs) for t in drawn)
    teacher_train = space.teacher.n_train or full_train
    for arch in teacher_archs(space):
        spec = teacher_spec(context, arch)
        state = "cached" if cache.load(spec) is not None else "to train"
        if state == "to train":
            flops += teacher_flops(arch, ds, teacher_train, full_test, space.teacher.epochs)
        print(f"teacher {arch}: {space.teacher.epochs} epochs on {teacher_train} images "
              f"({state})")
    r = space.resources
    print(f"resources: {r.num_workers} worker(s) per trial, {r.cpus_per_worker:g} CPU each, "
          f"{'GPU ' + format(r.gpus_per_trial, 'g') + ' per trial' if r.use_gpu else 'no GPU'}"
          f", up to {r.max_concurrent} trials at once ({context.executor}"
          f"{', SyncBatchNorm' if r.sync_batchnorm else ''})")
    pflop = flops / 1e15
    if r.use_gpu:
        hours = flops / (args.gpu_tflops * 1e12) / 3600
        print(f"estimated work: {pflop:.1f} PFLOP = {hours:.1f} GPU-hours at "
              f"{args.gpu_tflops:g} effective TFLOP/s per GPU (--gpu-tflops); "
              f"ASHA stops some drawn trials early, so this is an upper bound")
    else:
        hours = flops / (CPU_GFLOPS_PER_CORE * 1e9) / 3600
        print(f"estimated work: {pflop:.3f} PFLOP = {hours:.2f} CPU-core-hours at "
              f"{CPU_GFLOPS_PER_CORE:g} GFLOP/s per core (measured, docs/benchmarks.md); "
              f"an upper bound when ASHA stops drawn trials")
    print("dry run: nothing was started or written")


# ---------------------------------------------------------------- run


def resolve(args) -> tuple[Space, RunFolder]:
    gpu_here = not (args.dry_run or args.address)
    if args.resume:
        if args.output is None and args.space is None:
            raise UserError("--resume needs the run folder: pass --output DIR (or --space)")
        root = Path(args.output) if args.output else \
            Path("runs") / load_space(args.space, local_gpu_check=False).name
        folder = RunFolder(root)
        if not folder.space_yaml.exists():
            raise UserError(f"{root}: no sweep to resume here (no space.yaml); run without "
                            "--resume to start one")
        space = load_space(folder.space_yaml, local_gpu_check=gpu_here)
        if args.space is not None:
            given = load_space(args.space, local_gpu_check=False)
            if given.model_dump() != space.model_dump():
                raise UserError(f"{args.space} differs from {folder.space_yaml}; resume "
                                "without --space, or start a new run with --output DIR")
        return space, folder
    if args.space is None:
        raise UserError("--space is required, e.g. --space ablations.yaml")
    space = load_space(args.space, local_gpu_check=gpu_here)
    folder = RunFolder(Path(args.output) if args.output else Path("runs") / space.name)
    if folder.space_yaml.exists() and not args.dry_run:
        held = load_space(folder.space_yaml, local_gpu_check=False)
        if held.model_dump() != space.model_dump():
            raise UserError(f"{args.space}: --output {folder.root} holds a different sweep "
                            f"({held.name}); pass --output DIR for a new run folder")
        raise UserError(f"{folder.root} already holds this sweep; pass --resume to continue "
                        "it, or --output DIR for a new one")
    return space, folder


def pretrain_teachers(space: Space, context: TrialContext, cache: TeacherCache,
                      folder: RunFolder) -> None:
    """Train (or find) every teacher, and keep a copy in the run folder for the analysis."""
    for arch in teacher_archs(space):
        spec = teacher_spec(context, arch)
        start = time.perf_counter()
        model, card, cached = cache.get(spec, data_root=space.dataset.root,
                                        log=lambda line, a=arch: print(f"  teacher {a}: {line}",
                                                                       flush=True))
        how = "cached" if cached else f"trained in {time.perf_counter() - start:.0f} s"
        print(f"teacher {arch}: {card['test_acc']:.2f}% on {card['n_test']} test images "
              f"({how})", flush=True)
        folder.keep_teacher(arch, cache.paths(spec)[0], card)


def make_tuner(space: Space, folder: RunFolder, context: TrialContext, fixed, n_search,
               resume: bool, experiment: Path, earlier: dict[str, str] | None = None):
    """The Tuner of one experiment in the run folder (tune/, or confirm/ after it); restored
    when resuming one that exists. `earlier`: final statuses of the experiment before."""
    from ray import tune

    from study.monitor import SweepMonitor
    from study.reaper import TrainReaper
    from study.search import StudySearcher, make_optuna_search, make_scheduler
    from study.trial import tune_trial
    from study.watchdog import StallWatchdog

    trainable = tune.with_resources(tune.with_parameters(tune_trial, context=context),
                                    context.trial_resources())
    if resume and tune.Tuner.can_restore(str(experiment.resolve())):
        return tune.Tuner.restore(str(experiment.resolve()), trainable=trainable,
                                  resume_unfinished=True, resume_errored=True)
    optuna = make_optuna_search(space, folder.optuna_url) if n_search else None
    searcher = StudySearcher(space, fixed, optuna, n_search)
    total = len(fixed) + n_search
    monitor = SweepMonitor(folder, total, space.recipe.epochs, space.search.metric,
                           space.search.mode, earlier=earlier)
    train = context.executor == "ray_train"
    callbacks = [monitor, StallWatchdog(context.worker_resources() if train else None,
                                        context.num_workers)]
    if train:
        callbacks.append(TrainReaper(Path(context.train_storage)))
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=searcher,
            scheduler=make_scheduler(space, str(experiment.resolve())) if n_search else None,
            num_samples=total,
            max_concurrent_trials=space.resources.max_concurrent,
            trial_name_creator=trial_name, trial_dirname_creator=trial_name,
            # A new trial in a warm process skips re-importing torch; a Ray Train trial's actor
            # cannot be reset while its controller winds down, so it gets a fresh one.
            reuse_actors=context.executor == "in_trial",
        ),
        run_config=tune.RunConfig(
            name=experiment.name, storage_path=str(experiment.parent.resolve()),
            callbacks=callbacks, verbose=0,
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            failure_config=tune.FailureConfig(max_failures=space.resources.max_failures),
        ),
    )


def fit(tuner) -> dict[str, str]:
    """Run an experiment (to its end, unless interrupted); every trial's Tune status."""
    grid = tuner.fit()
    # Tune's own states: after an interruption some trials are still RUNNING or PENDING.
    return {t.config["trial_name"]: t.status for t in grid._experiment_analysis.trials}


def trial_name(trial) -> str:
    return trial.config["trial_name"]


def finish_optuna(folder: RunFolder) -> None:
    """Mark Optuna trials left RUNNING by a killed sweep as FAIL, so the study reads true."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for summary in optuna.get_all_study_summaries(folder.optuna_url):
        study = optuna.load_study(study_name=summary.study_name, storage=folder.optuna_url)
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            study.tell(t.number, state=optuna.trial.TrialState.FAIL)


def summary(space: Space, rows: list[dict[str, Any]]) -> str:
    """The best drawn configurations per pair, and every method's mean over seeds."""
    metric = space.search.metric
    lines = []
    drawn = [r for r in rows if r["role"] == "search" and r["status"] in ("completed", "stopped")
             and _finite(r[metric])]
    keys = list(space.space)
    if drawn:
        label = get_method(space.search.method).label
        lines.append(f"Best drawn {label} configurations ({metric}, last epoch unless *_best):")
        for pair in dict.fromkeys(f"{r['teacher']}->{r['student']}" for r in drawn):
            mine = [r for r in drawn if f"{r['teacher']}->{r['student']}" == pair]
            mine.sort(key=lambda r: r[metric], reverse=space.search.mode == "max")
            for r in mine[:3]:
                params = "  ".join(f"{k}={_fmt(r.get(k))}" for k in keys)
                lines.append(f"  {pair:<22} {r['trial_id']:<18} {r[metric]:6.2f}%  "
                             f"{r['epochs']} ep  {params}")
    fixed = [r for r in rows if r["role"] == "fixed" and r["status"] == "completed"
             and _finite(r["test_acc"])]
    if fixed:
        lines.append("Baselines, mean ± std over seeds (test_acc last epoch / best epoch):")
        groups: dict[tuple[str, str], list[dict]] = {}
        for r in fixed:
            groups.setdefault((f"{r['teacher']}->{r['student']}", r["method"]), []).append(r)
        for (pair, method), rs in groups.items():
            last = [r["test_acc"] for r in rs]
            best = [r["test_acc_best"] for r in rs]
            label = get_method(method).label
            lines.append(f"  {pair:<22} {label:<8} {_mean_std(last)} / {_mean_std(best)}"
                         f"  (n={len(rs)})")
    confirmed = [r for r in rows if r["role"] == CONFIRM and r["status"] == "completed"
                 and _finite(r["test_acc"])]
    if confirmed:
        lines.append("Best drawn configurations on every seed, mean ± std (test_acc last "
                     "epoch / best epoch):")
        by_id = {r["trial_id"]: r for r in rows}
        for drawn_id in dict.fromkeys(confirmed_trial(r["trial_id"]) for r in confirmed):
            rs = [by_id[drawn_id], *(r for r in confirmed
                                     if confirmed_trial(r["trial_id"]) == drawn_id)]
            pair = f"{rs[0]['teacher']}->{rs[0]['student']}"
            lines.append(f"  {pair:<22} {drawn_id:<18} {_mean_std([r['test_acc'] for r in rs])}"
                         f" / {_mean_std([r['test_acc_best'] for r in rs])}  (n={len(rs)})")
    diverged = [f"{r['trial_id']} (epoch {r['diverged_epoch']})" for r in rows
                if r["status"] == "diverged"]
    if diverged:
        lines.append(f"Diverged (loss NaN or infinite, left out above): {', '.join(diverged)}")
    return "\n".join(lines) if lines else "no finished trials yet"


def _finite(x) -> bool:
    return isinstance(x, int | float) and math.isfinite(x)


def _fmt(v) -> str:
    return f"{v:.4g}" if isinstance(v, float) else str(v)


def _mean_std(values: list[float]) -> str:
    sd = statistics.stdev(values) if len(values) > 1 else 0.0
    return f"{statistics.mean(values):6.2f} ± {sd:4.2f}"


def run_analysis(folder: RunFolder) -> str | None:
    """The analysis package's report, once it exists; None when there is none to run."""
    if importlib.util.find_spec("analysis.report") is None:
        return None
    from analysis.report import build_report

    try:
        return str(build_report(folder.root))
    except Exception as err:  # noqa: BLE001 - the sweep's results are safe; the report is extra
        print(f"warning: the report failed ({type(err).__name__}: {err}); rebuild it with "
              f"python -m analysis.report {folder.root}", file=sys.stderr)
        return None


def check_flags(args) -> None:
    """Every flag's value, before anything is read, written or started."""
    if args.max_trials is not None and args.max_trials < 1:
        raise UserError(f"--max-trials {args.max_trials}: give a positive number")
    if args.num_cpus is not None and args.num_cpus < 1:
        raise UserError(f"--num-cpus {args.num_cpus}: give at least 1")
    if args.num_gpus is not None and args.num_gpus < 0:
        raise UserError(f"--num-gpus {args.num_gpus}: give 0 or more")
    if args.address and (args.num_cpus is not None or args.num_gpus is not None):
        raise UserError("--num-cpus and --num-gpus size the Ray started here; a cluster "
                        "(--address) has its own: leave them out")
    if not (math.isfinite(args.gpu_tflops) and args.gpu_tflops > 0):
        raise UserError(f"--gpu-tflops {args.gpu_tflops}: give a positive number like 10")
    if args.address is not None and not args.address.strip():
        raise UserError("--address is empty: give the cluster's HOST:PORT, or leave it out")
    if args.address and args.address != "auto":
        split_address(args.address)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    interruption = Interruption()

    def body() -> int:
        check_flags(args)
        ray_environment(args.address)
        interruption.install()
        started = time.monotonic()
        space, folder = resolve(args)
        cache_dir = str(Path(args.cache_dir or default_cache_dir()).resolve())
        cache = TeacherCache(cache_dir)
        context = make_context(space, folder, cache_dir)
        fixed, n_search = plan(space, args.max_trials)
        if args.dry_run:
            print_plan(space, fixed, n_search, cache, context, args)
            return 0
        if args.address:
            check_address(args.address)
        from sdkd_core.data import load_dataset

        try:
            data = load_dataset(space.dataset.name, space.dataset.root, space.dataset.n_train,
                                space.dataset.n_test, seed=space.seeds[0])
        except UserError as err:
            raise UserError(f"{args.space or folder.space_yaml}: dataset: {err}") from None
        folder.check_writable()
        print(f"{space.name}: {len(fixed)} fixed + {n_search} drawn trials on "
              f"{space.dataset.name} ({len(data.train_y)} train / {len(data.test_y)} test "
              f"images, {space.recipe.epochs} epochs); run folder {folder.root}", flush=True)
        del data
        folder.write_space(space.model_dump(mode="json"))
        pretrain_teachers(space, context, cache, folder)
        start_ray(args.address, args.num_cpus, args.num_gpus, folder.root / "ray.log")
        interruption.install()  # again: ray.init's core took SIGTERM
        import ray

        try:
            interruption.fitting = True
            statuses = fit(make_tuner(space, folder, context, fixed, n_search, args.resume,
                                      folder.tune_dir))
            rows = write_tables(folder, statuses, space.recipe.epochs)
            if n_search and not interruption.signum:
                finish_optuna(folder)
            confirm = confirm_trials(space, rows) if n_search and args.max_trials is None \
                and not interruption.signum else []
            if confirm:
                print(f"confirming the best {space.search.confirm_top} drawn configuration(s) "
                      f"of each pair on the other seeds: {len(confirm)} trials", flush=True)
                statuses |= fit(make_tuner(space, folder, context, confirm, 0, args.resume,
                                           folder.confirm_dir, earlier=statuses))
                rows = write_tables(folder, statuses, space.recipe.epochs)
        finally:
            interruption.fitting = False
            ray.shutdown()
        print(summary(space, rows))
        report = None if args.no_report else run_analysis(folder)
        if interruption.signum:
            finished = sum(r["status"] in ("completed", "stopped", "diverged") for r in rows)
            total = max(len(rows), len(fixed) + n_search)
            print(f"interrupted by {interruption.name()}: {finished} of {total} trials "
                  f"finished{f'; report {report}' if report else ''}; resume with: "
                  f"{resume_command(str(folder.root))}", file=sys.stderr, flush=True)
            return interruption.exit_code
        print(f"done in {clock(time.monotonic() - started)}: {len(rows)} trials")
        print(f"  results  {folder.results_csv}\n  epochs   {folder.epochs_csv}")
        if n_search:
            print(f"  optuna   {folder.optuna_db}  (optuna-dashboard {folder.optuna_url})")
        print(f"  tune     {folder.tune_dir}")
        if report:
            print(f"  report   {report}")
        return 0

    try:
        return run_main(PROG, body)
    except (SweepInterrupted, KeyboardInterrupt):
        # Before the trials (data, teachers) or at a second signal: nothing to finish.
        print(f"{PROG}: interrupted by {interruption.name() or 'SIGINT'} before any trial "
              "ran; run the same command again to start over", file=sys.stderr)
        return interruption.exit_code if interruption.signum else 130


if __name__ == "__main__":
    sys.exit(main())

"""Run a study described by one YAML space file, then its report.

    python study/sweep.py --space ablations.yaml

In order: the flags -> the study object (the file validated, everything derived from it once)
-> the data, checked -> every teacher the trials need (pretrained once, cached) -> the first
Tune experiment (every baseline on every pair and seed, and each tuned method's Optuna draws,
ASHA stopping weak draws) -> the chosen drawn configurations again on the other seeds (a second,
short experiment) -> results.csv and epochs.csv -> the report (the analysis package, reading
the run folder alone).

A killed sweep continues with `--resume`: finished trials are kept, running ones continue from
their last epoch's checkpoint.
"""

from __future__ import annotations

import sys
import time
from typing import Any

from sdkd_core.cli import clock, run_main
from sdkd_core.errors import UserError
from sdkd_core.tasks import get_task
from study.cluster import check_address, ray_environment
from study.interrupt import Interruption, SweepInterrupted, resume_command
from study.plan import confirm_trials
from study.runfolder import RunFolder
from study.runfolder.tables import write_tables
from study.study_object import Study, open_study
from study.summary import summary
from study.sweep_args import PROG, build_parser, check_flags
from study.teachers import TeacherCache, card_score
from study.tracking.trackers import Trackers, activate, active


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    interruption = Interruption()

    def body() -> int:
        check_flags(args)
        ray_environment(args.address)
        interruption.install()
        started = time.monotonic()
        study = open_study(args)
        if args.dry_run:
            from study.dry_run import print_plan  # FLOP counting: a second of imports

            print_plan(study, args.gpu_tflops)
            return 0
        if args.address:
            check_address(args.address, given=args.address_given)
        streamed = check_data(study, args.space)
        study.folder.check_writable()
        tracked = open_trackers(study, args.space)
        activate(tracked)
        try:
            study.folder.write_space(study.file.model_dump(mode="json"))
            study.folder.write_study(study.record())
            code = run_study(study, args, interruption, tracked, started, streamed)
        except BaseException:
            tracked.close(interrupted=True)
            raise
        tracked.close(interrupted=bool(interruption.signum))
        return code

    try:
        return run_main(PROG, body)
    except (SweepInterrupted, KeyboardInterrupt):
        # Before the trials (data, teachers) or at a second signal: nothing to finish.
        print(f"{PROG}: interrupted by {interruption.name() or 'SIGINT'} before any trial "
              "ran; run the same command again to start over", file=sys.stderr)
        return interruption.exit_code if interruption.signum else 130


def open_trackers(study: Study, given: str | None) -> Trackers:
    """The study's trackers, open: a refused login or a silent server is one line now,
    before the sweep writes anything."""
    try:
        return Trackers.open(study)
    except UserError as err:
        raise UserError(f"{given or study.folder.space_yaml}: {err}") from None


def run_study(study: Study, args, interruption: Interruption, tracked: Trackers,
              started: float, streamed: bool) -> int:
    """Teachers, trials, summary, report and closing lines, with the trackers open."""
    if streamed:  # Ray Data reads the teachers' images too: the sweep's Ray, started now
        start_sweep_ray(study, args)
        interruption.install()  # again: ray.init's core took SIGTERM
    pretrain_teachers(study)
    rows = run_experiments(study, args, interruption)
    print(summary(study, rows))
    report = None if args.no_report else run_analysis(study)
    if report:
        tracked.add_report(study.folder.report_dir)
    return closing_lines(study, rows, started, interruption, report, tracked)


def check_data(study: Study, given: str | None) -> bool:
    """The images load (a bad folder or split is one line now, not in every trial); whether
    they stream."""
    file = study.file
    try:
        data = file.dataset.load(file.seeds[0])
    except UserError as err:
        raise UserError(f"{given or study.folder.space_yaml}: dataset: {err}") from None
    held = f"{len(data.val_y)} validation / " if data.has_val else ""
    print(f"{study.name}: {len(study.baselines)} baseline + {study.n_drawn} drawn trials on "
          f"{file.dataset.name} ({len(data.train_y)} train / {held}{len(data.test_y)} test "
          f"images, {study.epochs} epochs); run folder {study.folder.root}", flush=True)
    if data.info.from_files:
        how = "streamed through Ray Data" if hasattr(data, "splits") else "decoded into memory"
        odd = [f"{n} {what}" for n, what in ((data.ignored, "files not images, left out"),
                                             (data.skipped, "files not decodable, skipped"))
               if n] + list(getattr(data, "notes", ()))
        info = data.info
        h, w = info.view_shape
        if info.dense:
            lo, hi = info.scale
            plural = "s" if info.num_classes > 1 else ""
            what = (f"{get_task(info.task).label} at {h}x{w} ({info.num_classes} output "
                    f"channel{plural}), random scale {lo:g}-{hi:g} with crop and flip")
        else:
            what = f"{info.num_classes} classes at {h}x{w}, {info.crop} crop"
        print(f"  {what}, {how}" + (f"; {', '.join(odd)}" if odd else ""), flush=True)
    if study.first_rung_note:
        print(study.first_rung_note, flush=True)
    return hasattr(data, "splits")


def start_sweep_ray(study: Study, args) -> None:
    """Start (or join) the sweep's Ray once: its log lines go to the run folder's ray.log."""
    # Ray takes about a second to import: only once the study and its data are found good.
    import ray

    from study.ray_start import start_ray

    if not ray.is_initialized():
        start_ray(args.address, args.num_cpus, args.num_gpus, study.folder.root / "ray.log")


def pretrain_teachers(study: Study) -> None:
    """Train (or find) every teacher, and keep a copy in the run folder for the analysis."""
    cache = TeacherCache(study.cache_dir)
    for arch, spec in study.teachers.items():
        start = time.perf_counter()
        model, card, cached = cache.get(spec, log=lambda line, a=arch: print(
            f"  teacher {a}: {line}", flush=True))
        how = "cached" if cached else "published, measured now" if spec.checkpoint \
            else f"trained in {time.perf_counter() - start:.0f} s"
        print(f"teacher {arch}: {card_score(card)} on {card['n_test']} test images ({how})",
              flush=True)
        study.folder.keep_teacher(arch, cache.paths(spec)[0], card)


def run_experiments(study: Study, args, interruption: Interruption) -> list[dict[str, Any]]:
    """The baselines and draws (tune/), then the confirming trials (confirm/); results.csv's
    rows."""
    # Ray takes about a second to import: only once the study and its data are found good
    # (a bad space file is refused without it, tests/test_space.py).
    import ray

    from study.search import settle_draws
    from study.tuner import fit, make_tuner

    folder = study.folder
    start_sweep_ray(study, args)
    interruption.install()  # again: ray.init's core took SIGTERM
    try:
        interruption.fitting = True
        errors = fit(make_tuner(study, folder.tune_dir, args.resume))
        rows = tabulate(folder, errors)
        if interruption.signum:
            return rows
        settle_draws(study)
        confirming = confirm_trials(study.file, rows) if study.n_drawn and not study.limited \
            else []
        if confirming:
            print(f"confirming the best {study.file.search.confirm_top} drawn configuration(s) "
                  f"of each pair on the other seeds: {len(confirming)} trials", flush=True)
            errors |= fit(make_tuner(study, folder.confirm_dir, args.resume, confirming, errors))
            rows = tabulate(folder, errors)
        return rows
    finally:
        interruption.fitting = False
        ray.shutdown()


def tabulate(folder: RunFolder, errors: set[str]) -> list[dict[str, Any]]:
    """results.csv and epochs.csv once an experiment has ended, and the trackers given them;
    results.csv's rows."""
    tables = write_tables(folder, errors=errors)
    active().sync(tables.results, tables.epochs)
    return tables.results


def run_analysis(study: Study) -> str | None:
    """The run's HTML report; None when it failed (the sweep's results are safe either way)."""
    try:
        from analysis.report import build_report  # imported when a report is due

        return str(build_report(study.folder.root))
    except Exception as err:  # noqa: BLE001 - the report is extra; say how to rebuild it
        print(f"warning: the report failed ({type(err).__name__}: {err}); rebuild it with "
              f"python -m analysis.report {study.folder.root}", file=sys.stderr)
        return None


def closing_lines(study: Study, rows: list[dict[str, Any]], started: float,
                  interruption: Interruption, report: str | None, tracked: Trackers) -> int:
    """Where everything is, or how to resume; the exit code."""
    folder = study.folder
    if interruption.signum:
        finished = sum(r["status"] in ("completed", "stopped", "diverged") for r in rows)
        total = max(len(rows), len(study.baselines) + study.n_drawn)
        print(f"interrupted by {interruption.name()}: {finished} of {total} trials "
              f"finished{f'; report {report}' if report else ''}; resume with: "
              f"{resume_command(str(folder.root))}", file=sys.stderr, flush=True)
        return interruption.exit_code
    print(f"done in {clock(time.monotonic() - started)}: {len(rows)} trials")
    print(f"  results  {folder.results_csv}\n  epochs   {folder.epochs_csv}")
    if study.n_drawn:
        print(f"  optuna   {folder.optuna_db}  (optuna-dashboard {folder.optuna_url})")
    print(f"  tune     {folder.tune_dir}")
    for line in tracked.lines():
        print(line)
    if report:
        print(f"  report   {report}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A whole sweep, in order: validate -> check the data -> pretrain every teacher needed (once,
cached) -> the baselines on every pair and seed and the Optuna-drawn trials in one Tune
experiment (ASHA stops weak drawn trials) -> the best drawn configurations of each pair again
on the other seeds (a second, short experiment) -> results.csv and epochs.csv.

The analysis is not run here: `study/sweep.py` runs it after (study never imports analysis).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sdkd_core.cli import clock
from sdkd_core.errors import UserError
from study.cluster import check_address, ray_environment, start_ray
from study.dry_run import print_plan
from study.experiment import (
    finish_optuna,
    fit,
    make_context,
    make_tuner,
    pretrain_teachers,
    resolve,
)
from study.interrupt import Interruption, resume_command
from study.plan import asha_grace_period, confirm_trials, plan
from study.runfolder import RunFolder
from study.runfolder.tables import write_tables
from study.summary import summary
from study.sweep_args import check_flags
from study.teachers import TeacherCache, default_cache_dir


@dataclass
class SweepOutcome:
    """What a finished (or interrupted) sweep leaves for its last lines."""

    folder: RunFolder
    planned: int  # fixed + drawn trials
    n_search: int
    started: float
    rows: list[dict[str, Any]] = field(default_factory=list)

    def finish(self, interruption: Interruption, report: str | None) -> int:
        """The closing lines (where everything is, or how to resume); the exit code."""
        folder, rows = self.folder, self.rows
        if interruption.signum:
            finished = sum(r["status"] in ("completed", "stopped", "diverged") for r in rows)
            total = max(len(rows), self.planned)
            print(f"interrupted by {interruption.name()}: {finished} of {total} trials "
                  f"finished{f'; report {report}' if report else ''}; resume with: "
                  f"{resume_command(str(folder.root))}", file=sys.stderr, flush=True)
            return interruption.exit_code
        print(f"done in {clock(time.monotonic() - self.started)}: {len(rows)} trials")
        print(f"  results  {folder.results_csv}\n  epochs   {folder.epochs_csv}")
        if self.n_search:
            print(f"  optuna   {folder.optuna_db}  (optuna-dashboard {folder.optuna_url})")
        print(f"  tune     {folder.tune_dir}")
        if report:
            print(f"  report   {report}")
        return 0


def run_sweep(args, interruption: Interruption) -> SweepOutcome | None:
    """The sweep `args` ask for; None after a dry run (which starts nothing)."""
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
        return None
    if args.address:
        check_address(args.address)
    from sdkd_core.data import load_dataset

    try:
        data = load_dataset(space.dataset.name, space.dataset.root, space.dataset.n_train,
                            space.dataset.n_test, seed=space.seeds[0],
                            val_split=space.dataset.val_split)
    except UserError as err:
        raise UserError(f"{args.space or folder.space_yaml}: dataset: {err}") from None
    folder.check_writable()
    print(f"{space.name}: {len(fixed)} fixed + {n_search} drawn trials on "
          f"{space.dataset.name} ({len(data.train_y)} train / {val_text(data)}"
          f"{len(data.test_y)} test images, {space.recipe.epochs} epochs); run folder "
          f"{folder.root}", flush=True)
    del data
    if n_search and space.search.scheduler == "asha" and (moved := asha_grace_period(space)[1]):
        print(moved, flush=True)
    folder.write_space(space.model_dump(mode="json"))
    folder.write_protocol({"metric": space.metric, "search_seed": space.search_seed,
                           "asha_first_rung": asha_grace_period(space)[0]
                           if space.search.scheduler == "asha" else None})
    pretrain_teachers(space, context, cache, folder)
    start_ray(args.address, args.num_cpus, args.num_gpus, folder.root / "ray.log")
    interruption.install()  # again: ray.init's core took SIGTERM
    import ray

    outcome = SweepOutcome(folder, len(fixed) + n_search, n_search, started)
    try:
        interruption.fitting = True
        statuses = fit(make_tuner(space, folder, context, fixed, n_search, args.resume,
                                  folder.tune_dir))
        outcome.rows = write_tables(folder, statuses, space.recipe.epochs)
        if n_search and not interruption.signum:
            finish_optuna(folder)
        confirm = confirm_trials(space, outcome.rows) if n_search and args.max_trials is None \
            and not interruption.signum else []
        if confirm:
            print(f"confirming the best {space.search.confirm_top} drawn configuration(s) "
                  f"of each pair on the other seeds: {len(confirm)} trials", flush=True)
            statuses |= fit(make_tuner(space, folder, context, confirm, 0, args.resume,
                                       folder.confirm_dir, earlier=statuses))
            outcome.rows = write_tables(folder, statuses, space.recipe.epochs)
    finally:
        interruption.fitting = False
        ray.shutdown()
    print(summary(space, outcome.rows))
    return outcome


def val_text(data) -> str:
    return f"{len(data.val_y)} validation / " if data.has_val else ""

"""A sweep's parts: its run folder and space (new or resumed), its teachers, and the Tune
experiments it runs (tune/, then confirm/)."""

from __future__ import annotations

import time
from pathlib import Path

from sdkd_core.distillers import get_method
from sdkd_core.errors import UserError
from sdkd_core.plugins import plugin_paths
from study.runfolder import RunFolder
from study.runfolder.trials import Pair, PlannedTrial
from study.space import Space, load_space
from study.teachers import TeacherCache
from study.trial import TrialContext


def teacher_archs(space: Space) -> list[str]:
    # A method that takes only the teacher's architecture (DML's peer) needs no pretraining.
    if not any(get_method(m).needs_teacher and get_method(m).needs_teacher_weights
               for m in space.trained_methods()):
        return []
    return list(dict.fromkeys(p.teacher for p in space.pairs))


def teacher_spec(context: TrialContext, arch: str):
    """The cache entry a trial with teacher `arch` loads (built the way the trial builds it)."""
    from sdkd_core.distillers.vanilla import Vanilla  # how every teacher is trained

    return context.distill_run(PlannedTrial(Vanilla.name, Pair(arch, arch))).teacher_spec()


def make_context(space: Space, folder: RunFolder, cache_dir: str) -> TrialContext:
    r = space.resources
    return TrialContext(
        dataset=space.dataset.name, data_root=space.dataset.root, n_train=space.dataset.n_train,
        n_test=space.dataset.n_test, recipe=space.recipe_obj().to_dict(),
        teacher_recipe=space.teacher.recipe_dict(), teacher_n_train=space.teacher.n_train,
        teacher_checkpoints=tuple(space.teacher.checkpoints.items()),
        val_split=space.dataset.val_split,
        cache_dir=cache_dir, train_storage=str(folder.train_dir.resolve()),
        num_workers=r.num_workers, use_gpu=r.use_gpu, cpus_per_worker=r.cpus_per_worker,
        gpus_per_trial=r.gpus_per_trial, max_failures=r.max_failures,
        executor=r.resolved_executor(), compile=r.compile, sync_batchnorm=r.sync_batchnorm,
        plugins=tuple(space.plugins), plugin_paths=tuple(plugin_paths(space.plugins)),
    )


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
        how = "cached" if cached else "published, measured now" if spec.checkpoint \
            else f"trained in {time.perf_counter() - start:.0f} s"
        print(f"teacher {arch}: {card['test_acc']:.2f}% on {card['n_test']} test images "
              f"({how})", flush=True)
        folder.keep_teacher(arch, cache.paths(spec)[0], card)


def make_tuner(space: Space, folder: RunFolder, context: TrialContext, fixed, n_search,
               resume: bool, experiment: Path, earlier: dict[str, str] | None = None):
    """The Tuner of one experiment in the run folder (tune/, or confirm/ after it); restored
    when resuming one that exists. `earlier`: final statuses of the experiment before."""
    from ray import tune

    from study.asha import make_scheduler
    from study.monitor import SweepMonitor
    from study.plan import draws_per_method
    from study.reaper import TrainReaper
    from study.search import StudySearcher, make_optuna_searches
    from study.trial import tune_trial
    from study.watchdog import StallWatchdog

    trainable = tune.with_resources(tune.with_parameters(tune_trial, context=context),
                                    context.trial_resources())
    if resume and tune.Tuner.can_restore(str(experiment.resolve())):
        return tune.Tuner.restore(str(experiment.resolve()), trainable=trainable,
                                  resume_unfinished=True, resume_errored=True)
    budget = draws_per_method(space, n_search)
    searcher = StudySearcher(space, fixed, make_optuna_searches(space, folder.optuna_url, budget),
                             budget)
    total = len(fixed) + n_search
    monitor = SweepMonitor(folder, total, space.recipe.epochs, space.metric,
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

"""The Tune wiring of a sweep: one experiment in the run folder (tune/, then confirm/), built
from the study object, run, and read back through Tune's public API."""

from __future__ import annotations

from pathlib import Path

from ray import tune

from study.asha import DrawnTrialsASHA
from study.monitor import SweepMonitor
from study.reaper import TrainReaper
from study.runfolder.trials import PlannedTrial
from study.search import StudySearcher
from study.study_object import Study
from study.trial import tune_trial
from study.watchdog import StallWatchdog


class ConfirmingTrials(StudySearcher):
    """A searcher that hands out the given trials only (the confirming experiment)."""

    def __init__(self, study: Study, trials: list[PlannedTrial]):
        super().__init__(study)
        self.trials = trials
        self.drawn = {}  # nothing is drawn here

    def suggest(self, trial_id: str):
        if self.next_baseline < len(self.trials):
            self.next_baseline += 1
            return self.trials[self.next_baseline - 1].to_config()
        return StudySearcher.FINISHED


def make_tuner(study: Study, experiment: Path, resume: bool,
               confirming: list[PlannedTrial] | None = None,
               earlier_errors=()) -> tune.Tuner:
    """The Tuner of one experiment: the baselines and draws (tune/), or `confirming` trials
    (confirm/); restored when resuming one that exists. `earlier_errors`: the trials of the
    experiment before that failed (for the live tables)."""
    trainable = tune.with_resources(tune.with_parameters(tune_trial, study=study),
                                    study.trial_resources())
    path = str(experiment.resolve())
    if resume and tune.Tuner.can_restore(path):
        return tune.Tuner.restore(path, trainable=trainable, resume_unfinished=True,
                                  resume_errored=True)
    if confirming is None:
        searcher, total = StudySearcher(study), len(study.baselines) + study.n_drawn
        scheduler = DrawnTrialsASHA(study) if study.first_rung is not None else None
    else:
        searcher, total, scheduler = ConfirmingTrials(study, confirming), len(confirming), None
    ray_train = study.executor == "ray_train"
    callbacks = [SweepMonitor(study, total, earlier_errors),
                 StallWatchdog(study.worker_resources() if ray_train else None,
                               study.file.resources.num_workers)]
    if ray_train:
        callbacks.append(TrainReaper(study.folder.train_dir.resolve()))
    return tune.Tuner(
        trainable,
        tune_config=tune.TuneConfig(
            search_alg=searcher, scheduler=scheduler, num_samples=total,
            max_concurrent_trials=study.file.resources.max_concurrent,
            trial_name_creator=trial_name, trial_dirname_creator=trial_name,
            # A new trial in a warm process skips re-importing torch; a Ray Train trial's actor
            # cannot be reset while its controller winds down, so it gets a fresh one.
            reuse_actors=not ray_train,
        ),
        run_config=tune.RunConfig(
            name=experiment.name, storage_path=str(experiment.parent.resolve()),
            callbacks=callbacks, verbose=0,
            checkpoint_config=tune.CheckpointConfig(num_to_keep=1),
            failure_config=tune.FailureConfig(max_failures=study.file.resources.max_failures),
        ),
    )


def fit(tuner: tune.Tuner) -> set[str]:
    """Run an experiment (to its end, unless interrupted); the trials that failed with an
    error (every other end is recorded in the run folder)."""
    return {r.config["trial_name"] for r in tuner.fit() if r.error is not None}


def trial_name(trial) -> str:
    return trial.config["trial_name"]

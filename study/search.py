"""A validated space turned into Tune's parts: the trial plan, the Optuna searcher, ASHA.

A sweep is one Tuner. Its first trials are fixed (every baseline on every pair and seed); the
rest are drawn by Optuna over the `space` distributions and the teacher/student pair. Only the
drawn trials teach Optuna and face ASHA: a baseline always runs to its last epoch, and its
accuracy never steers the search.
"""

from __future__ import annotations

import math
import pickle
from pathlib import Path
from typing import Any

from ray.tune.schedulers import ASHAScheduler, TrialScheduler
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from study.plan import PAIR_KEY, asha_grace_period, grid_values, on_its_pair, optuna_space
from study.runfolder import is_diverged
from study.runfolder.trials import FULL_LENGTH, Pair, PlannedTrial
from study.space import Space


def make_sampler(space: Space):
    import optuna.samplers as os_

    seed = space.search_seed
    match space.search.sampler:
        case "tpe":
            return os_.TPESampler(seed=seed)
        case "random":
            return os_.RandomSampler(seed=seed)
        case "grid":
            return os_.GridSampler(grid_values(space), seed=seed)
        case "cmaes":
            return os_.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    raise AssertionError(space.search.sampler)


def make_optuna_search(space: Space, storage_url: str) -> OptunaSearch:
    import optuna
    from optuna.storages import RDBStorage

    optuna.logging.set_verbosity(optuna.logging.WARNING)

    return OptunaSearch(
        space=optuna_space(space), metric=space.metric, mode=space.search.mode,
        sampler=make_sampler(space), study_name=space.name, storage=RDBStorage(storage_url),
    )


class StudySearcher(Searcher):
    """Hands out the fixed trials first, then asks Optuna for `n_search` more.

    Its state (how far through the plan, and Optuna's own) is pickled by Tune with the
    experiment, so a resumed sweep neither repeats nor skips a trial.
    """

    def __init__(self, space: Space, fixed: list[PlannedTrial], optuna: OptunaSearch | None,
                 n_search: int):
        super().__init__(metric=space.metric, mode=space.search.mode)
        self.space = space
        self.fixed = fixed
        self.optuna = optuna
        self.n_search = n_search
        self.next_fixed = 0
        self.drawn = 0
        self.pairs = {pair.label: pair for pair in (Pair(p.teacher, p.student)
                                                     for p in space.pairs)}
        self.method = space.search.method
        self.search_seed = space.search_seed
        self.search_ids: dict[str, dict[str, Any]] = {}  # Tune trial id -> Optuna params

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return True  # the searcher carries its own space and metric

    def suggest(self, trial_id: str):
        if self.next_fixed < len(self.fixed):
            self.next_fixed += 1
            return self.fixed[self.next_fixed - 1].to_config()
        if self.optuna is None or self.drawn >= self.n_search:
            return Searcher.FINISHED
        params = self.optuna.suggest(trial_id)
        if params is None or params == Searcher.FINISHED:
            return params
        self.drawn += 1
        self.search_ids[trial_id] = dict(params)
        params = dict(params)
        pair = self.pairs[params.pop(PAIR_KEY)] if PAIR_KEY in params \
            else next(iter(self.pairs.values()))
        return on_its_pair(self.space, PlannedTrial.drawn(
            self.method, pair, self.search_seed, params, self.drawn)).to_config()

    def _running_in_optuna(self, trial_id: str) -> bool:
        """Whether Optuna still waits for this trial's outcome. A sweep killed after Optuna
        recorded an outcome but before Tune's next snapshot reruns the trial on --resume;
        the outcome first recorded stands."""
        import optuna

        ot_trial = self.optuna._ot_trials.get(trial_id)
        if ot_trial is None:
            return False
        state = ot_trial.storage.get_trial(ot_trial._trial_id).state
        return state == optuna.trial.TrialState.RUNNING

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self.search_ids and not is_diverged(result) \
                and self._running_in_optuna(trial_id):
            self.optuna.on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        if trial_id not in self.search_ids:
            return
        error = error or is_diverged(result)  # Optuna records a diverged trial as FAIL
        if trial_id in self.optuna._ot_trials:
            if self._running_in_optuna(trial_id):
                self.optuna.on_trial_complete(trial_id, result, error)
        elif result and self.metric in result:
            # Drawn just before a crash that lost Optuna's handle: record the outcome anyway.
            self.optuna.add_evaluated_point(self.search_ids[trial_id], result[self.metric],
                                            error=error)

    def save(self, checkpoint_path: str) -> None:
        # One file: Tune moves only `checkpoint_path` into place after writing it.
        state = {**self.__dict__, "optuna": None}
        optuna_state = self.optuna.__dict__.copy() if self.optuna is not None else None
        with open(checkpoint_path, "wb") as f:
            pickle.dump({"searcher": state, "optuna": optuna_state}, f)

    def restore(self, checkpoint_path: str) -> None:
        optuna = self.optuna
        with open(checkpoint_path, "rb") as f:
            saved = pickle.load(f)
        self.__dict__.update(saved["searcher"])
        self.optuna = optuna
        if optuna is not None and saved["optuna"] is not None:
            optuna.__dict__.update(saved["optuna"])
            self._queue_lost_draws()

    def _queue_lost_draws(self) -> None:
        """Draws Optuna handed out after Tune's last snapshot died with the killed sweep: Tune
        will neither resume nor know them. Each is failed in the study and queued again, so the
        resumed sweep draws what an uninterrupted one would, under the same names. (Left to
        the sampler, a grid would hand out a point still running and never the lost one.)"""
        import optuna

        study = self.optuna._ot_study
        known = {t.number for t in self.optuna._ot_trials.values()}
        for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
            if t.number not in known:
                params = self._whole_draw(t)
                if params:
                    study.enqueue_trial(params, skip_if_exists=False)
                study.tell(t.number, state=optuna.trial.TrialState.FAIL)

    def _whole_draw(self, t) -> dict[str, Any]:
        """The parameters of a lost draw. A sweep killed inside Optuna's `ask` leaves a draw
        with only some of them stored; a grid draw is completed from its grid point (the grid
        sampler refuses a partial one, and failing it would skip that point for good). A
        draw of another sampler keeps what it has and the rest is sampled again."""
        import optuna

        sampler = self.optuna._ot_study.sampler
        if set(t.params) >= set(self.optuna._space) or "grid_id" not in t.system_attrs \
                or not isinstance(sampler, optuna.samplers.GridSampler):
            return dict(t.params)
        point = sampler._all_grids[t.system_attrs["grid_id"]]
        return dict(zip(sampler._param_names, point, strict=True))


class SearchOnlyASHA(ASHAScheduler):
    """ASHA over the drawn trials only; baselines and confirmations always run to the end.

    Tune does not save a scheduler with the experiment: a resumed sweep would start with empty
    rungs, keep weak trials an uninterrupted sweep stops, and spend another budget. So, once
    per process, the rungs are refilled from the drawn trials' own records in `experiment_dir`
    (result.json, keyed by Tune's trial id, which a restored trial keeps).
    """

    def __init__(self, *args, experiment_dir: str | None = None, **kwargs):
        super().__init__(*args, **kwargs)
        self.experiment_dir = experiment_dir
        self.replayed = False

    @staticmethod
    def _fixed(trial) -> bool:
        return trial.config.get("role") in FULL_LENGTH

    def replay(self) -> None:
        self.replayed = True
        if self.experiment_dir is None or len(self._brackets) != 1:
            return
        from types import SimpleNamespace

        from study.runfolder.tables import trial_records

        for config, results in trial_records(Path(self.experiment_dir)).values():
            if config.get("role") in FULL_LENGTH:
                continue
            for r in results:
                value, epoch = r.get(self._metric), r.get(self._time_attr)
                if is_diverged(r) or value is None or epoch is None or "trial_id" not in r \
                        or not math.isfinite(value):
                    continue
                self._brackets[0].on_result(SimpleNamespace(trial_id=r["trial_id"]), epoch,
                                            self._metric_op * value)

    def on_trial_add(self, tune_controller, trial):
        if not self.replayed:
            self.replay()
        if not self._fixed(trial):
            super().on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller, trial, result):
        if self._fixed(trial) or is_diverged(result):  # a diverged trial ends by itself
            return TrialScheduler.CONTINUE
        return super().on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller, trial, result):
        if self._fixed(trial):
            return
        if is_diverged(result):  # its NaN must not enter a rung's cutoff
            super().on_trial_remove(tune_controller, trial)
        else:
            super().on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller, trial):
        if not self._fixed(trial):
            super().on_trial_remove(tune_controller, trial)


def make_scheduler(space: Space, experiment_dir: str | None = None):
    s = space.search
    if s.scheduler == "none":
        return None
    return SearchOnlyASHA(experiment_dir=experiment_dir, time_attr="epoch", metric=space.metric,
                          mode=s.mode, max_t=space.recipe.epochs,
                          grace_period=asha_grace_period(space)[0],
                          reduction_factor=s.reduction_factor)

"""A validated space turned into Tune's parts: the trial plan, the Optuna searcher, ASHA.

A sweep is one Tuner. Its first trials are fixed (every baseline on every pair and seed); the
rest are drawn by Optuna over the `space` distributions and the teacher/student pair. Only the
drawn trials teach Optuna and face ASHA: a baseline always runs to its last epoch, and its
accuracy never steers the search.
"""

from __future__ import annotations

import pickle
from typing import Any

from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from study.plan import PAIR_KEY, grid_values, on_its_pair, optuna_space
from study.runfolder import is_diverged
from study.runfolder.trials import Pair, PlannedTrial
from study.space import Space


def make_sampler(space: Space, method: str):
    import optuna.samplers as os_

    seed = space.search_seed
    match space.search.sampler:
        case "tpe":
            return os_.TPESampler(seed=seed)
        case "random":
            return os_.RandomSampler(seed=seed)
        case "grid":
            return os_.GridSampler(grid_values(space, method), seed=seed)
        case "cmaes":
            return os_.CmaEsSampler(seed=seed, warn_independent_sampling=False)
    raise AssertionError(space.search.sampler)


def study_name(space: Space, method: str) -> str:
    """The Optuna study of one tuned method: the space's name (one tuned method), or
    `<name>-<method>` (several, one study each in the same optuna.db)."""
    return space.name if len(space.tuned_methods) == 1 else f"{space.name}-{method}"


def make_optuna_search(space: Space, storage_url: str, method: str) -> OptunaSearch:
    import optuna
    from optuna.storages import RDBStorage

    optuna.logging.set_verbosity(optuna.logging.WARNING)

    return OptunaSearch(
        space=optuna_space(space, method), metric=space.metric, mode=space.search.mode,
        sampler=make_sampler(space, method), study_name=study_name(space, method),
        storage=RDBStorage(storage_url),
    )


def make_optuna_searches(space: Space, storage_url: str,
                         budget: dict[str, int]) -> dict[str, OptunaSearch]:
    return {m: make_optuna_search(space, storage_url, m) for m, n in budget.items() if n}


class StudySearcher(Searcher):
    """Hands out the fixed trials first, then each tuned method's draws from its own Optuna
    study, in turn (the method with the fewest draws so far, then the space's order), up to
    its `budget`. Each drawn trial's outcome goes back to its own method's study only.

    Its state (how far through the plan, and Optuna's own) is pickled by Tune with the
    experiment, so a resumed sweep neither repeats nor skips a trial.
    """

    def __init__(self, space: Space, fixed: list[PlannedTrial],
                 optunas: dict[str, OptunaSearch], budget: dict[str, int]):
        super().__init__(metric=space.metric, mode=space.search.mode)
        self.space = space
        self.fixed = fixed
        self.optunas = optunas
        self.budget = {m: n for m, n in budget.items() if m in optunas}
        self.next_fixed = 0
        self.drawn = dict.fromkeys(self.budget, 0)
        self.pairs = {pair.label: pair for pair in (Pair(p.teacher, p.student)
                                                     for p in space.pairs)}
        self.search_seed = space.search_seed
        # Tune trial id -> (method, Optuna's params)
        self.search_ids: dict[str, tuple[str, dict[str, Any]]] = {}

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return True  # the searcher carries its own space and metric

    def _next_method(self) -> str | None:
        open_ = [m for m in self.budget if self.drawn[m] < self.budget[m]]
        return min(open_, key=lambda m: self.drawn[m]) if open_ else None

    def suggest(self, trial_id: str):
        if self.next_fixed < len(self.fixed):
            self.next_fixed += 1
            return self.fixed[self.next_fixed - 1].to_config()
        method = self._next_method()
        if method is None:
            return Searcher.FINISHED
        params = self.optunas[method].suggest(trial_id)
        if params is None:
            return None
        if params == Searcher.FINISHED:  # its grid is spent: nothing more for this method
            self.budget[method] = self.drawn[method]
            return self.suggest(trial_id)
        self.drawn[method] += 1
        self.search_ids[trial_id] = (method, dict(params))
        params = dict(params)
        pair = self.pairs[params.pop(PAIR_KEY)] if PAIR_KEY in params \
            else next(iter(self.pairs.values()))
        return on_its_pair(self.space, PlannedTrial.drawn(
            method, pair, self.search_seed, params, self.drawn[method])).to_config()

    def _optuna_of(self, trial_id: str) -> OptunaSearch:
        return self.optunas[self.search_ids[trial_id][0]]

    def _running_in_optuna(self, trial_id: str) -> bool:
        """Whether Optuna still waits for this trial's outcome. A sweep killed after Optuna
        recorded an outcome but before Tune's next snapshot reruns the trial on --resume;
        the outcome first recorded stands."""
        import optuna

        ot_trial = self._optuna_of(trial_id)._ot_trials.get(trial_id)
        if ot_trial is None:
            return False
        state = ot_trial.storage.get_trial(ot_trial._trial_id).state
        return state == optuna.trial.TrialState.RUNNING

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self.search_ids and not is_diverged(result) \
                and self._running_in_optuna(trial_id):
            self._optuna_of(trial_id).on_trial_result(trial_id, result)

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        if trial_id not in self.search_ids:
            return
        optuna, (_, params) = self._optuna_of(trial_id), self.search_ids[trial_id]
        error = error or is_diverged(result)  # Optuna records a diverged trial as FAIL
        if trial_id in optuna._ot_trials:
            if self._running_in_optuna(trial_id):
                optuna.on_trial_complete(trial_id, result, error)
        elif result and self.metric in result:
            # Drawn just before a crash that lost Optuna's handle: record the outcome anyway.
            optuna.add_evaluated_point(params, result[self.metric], error=error)

    def save(self, checkpoint_path: str) -> None:
        # One file: Tune moves only `checkpoint_path` into place after writing it.
        state = {**self.__dict__, "optunas": None}
        optunas = {m: o.__dict__.copy() for m, o in self.optunas.items()}
        with open(checkpoint_path, "wb") as f:
            pickle.dump({"searcher": state, "optunas": optunas}, f)

    def restore(self, checkpoint_path: str) -> None:
        optunas = self.optunas
        with open(checkpoint_path, "rb") as f:
            saved = pickle.load(f)
        self.__dict__.update(saved["searcher"])
        self.optunas = optunas
        for method, optuna in optunas.items():
            if method in saved["optunas"]:
                optuna.__dict__.update(saved["optunas"][method])
                _queue_lost_draws(optuna)


def _queue_lost_draws(search: OptunaSearch) -> None:
    """Draws Optuna handed out after Tune's last snapshot died with the killed sweep: Tune
    will neither resume nor know them. Each is failed in the study and queued again, so the
    resumed sweep draws what an uninterrupted one would, under the same names. (Left to the
    sampler, a grid would hand out a point still running and never the lost one.)"""
    import optuna

    study = search._ot_study
    known = {t.number for t in search._ot_trials.values()}
    for t in study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.RUNNING,)):
        if t.number not in known:
            params = _whole_draw(search, t)
            if params:
                study.enqueue_trial(params, skip_if_exists=False)
            study.tell(t.number, state=optuna.trial.TrialState.FAIL)


def _whole_draw(search: OptunaSearch, t) -> dict[str, Any]:
    """The parameters of a lost draw. A sweep killed inside Optuna's `ask` leaves a draw with
    only some of them stored; a grid draw is completed from its grid point (the grid sampler
    refuses a partial one, and failing it would skip that point for good). A draw of another
    sampler keeps what it has and the rest is sampled again."""
    import optuna

    sampler = search._ot_study.sampler
    if set(t.params) >= set(search._space) or "grid_id" not in t.system_attrs \
            or not isinstance(sampler, optuna.samplers.GridSampler):
        return dict(t.params)
    point = sampler._all_grids[t.system_attrs["grid_id"]]
    return dict(zip(sampler._param_names, point, strict=True))

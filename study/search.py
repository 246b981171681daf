"""The sweep's searcher: the baselines first, then each tuned method's draws from its own Optuna
study, through Optuna's public ask/tell API and Tune's public `Searcher` interface.

optuna.db is the record of what was drawn and what came back: each draw carries its trial name
(a user attribute, stored right after Optuna's `ask`), and each study is told a trial's outcome
once. So a sweep killed at any moment resumes exactly:

- a draw Optuna stored after Tune's last snapshot (lost to Tune) is found by its name and
  handed out again, with the same parameters, under the same name, in the same order;
- a draw killed inside `ask`, before its name was stored, is marked failed and drawn again;
  each draw's sampler is seeded from the search seed and the draw's number, so the redraw
  is the draw an uninterrupted sweep would have made (a grid's points are enumerated here, in
  an order fixed by the seed, and fed to Optuna with `enqueue_trial`);
- an outcome already told stands: a trial that Tune runs again is not told twice.

Only drawn trials teach Optuna; a baseline always runs to its last epoch and never steers it.
"""

from __future__ import annotations

import itertools
import math
import os
import pickle
import random
import signal
import zlib
from typing import Any

import optuna
from optuna.trial import TrialState
from ray.tune.search import Searcher

from study.plan import PAIR_KEY, grid_values, on_its_pair, optuna_space
from study.runfolder.trials import DRAWN, PlannedTrial, drawn_name
from study.study_object import Study

NAME_ATTR = "trial_name"  # the user attribute naming a draw's trial
# Fault injection for the resume tests: SIGKILL the sweep right after Optuna stored the draw
# of this trial name, before Tune saves its experiment.
KILL_AFTER_DRAW_ENV = "SDKD_KILL_AFTER_DRAW"


def study_name(study: Study, method: str) -> str:
    """The Optuna study of one tuned method: the study's name (one tuned method), or
    `<name>-<method>` (several, one study each in the same optuna.db)."""
    return study.name if len(study.tuned_methods) == 1 else f"{study.name}-{method}"


def draw_seed(study: Study, method: str, number: int) -> int:
    """The sampler seed of `method`'s `number`-th draw: the same on every (re)run."""
    return zlib.crc32(f"{study.search_seed}/{method}/{number}".encode())


def make_sampler(study: Study, method: str, number: int) -> optuna.samplers.BaseSampler:
    seed = draw_seed(study, method, number)
    match study.file.search.sampler:
        case "tpe":
            return optuna.samplers.TPESampler(seed=seed)
        case "cmaes":
            return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False)
        case _:  # random, and grid (its points are enqueued, so the sampler is never asked)
            return optuna.samplers.RandomSampler(seed=seed)


def grid_points(study: Study, method: str) -> list[dict[str, Any]]:
    """Every point of `method`'s grid once, in an order fixed by the search seed."""
    values = grid_values(study.file, method)
    points = [dict(zip(values, combo, strict=True))
              for combo in itertools.product(*values.values())]
    random.Random(study.search_seed).shuffle(points)
    return points


def open_optuna_study(study: Study, method: str) -> optuna.Study:
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(
        study_name=study_name(study, method), storage=study.folder.optuna_url,
        direction="maximize" if study.mode == "max" else "minimize", load_if_exists=True)


def fail_unnamed_draws(ot: optuna.Study) -> None:
    """Draws killed inside Optuna's `ask` (no name stored): failed, to be drawn again."""
    for t in ot.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
        if NAME_ATTR not in t.user_attrs:
            ot.tell(t.number, state=TrialState.FAIL)


class StudySearcher(Searcher):
    """Hands out the baselines first, then each tuned method's draws in turn (the method with
    the fewest draws so far, then the file's order), up to `study.draws`. Each drawn trial's
    outcome goes back to its own method's Optuna study only.

    Its own state (how far through the plan, and which Tune trial is which draw) is saved
    with Tune's experiment; everything else is in optuna.db and the run folder.
    """

    def __init__(self, study: Study):
        super().__init__(metric=study.metric, mode=study.mode)
        self.study = study
        self.next_baseline = 0
        self.drawn = {m: 0 for m, n in study.draws.items() if n}
        # Tune trial id -> (method, Optuna's trial number, trial name)
        self.handed: dict[str, tuple[str, int, str]] = {}
        self._optuna: dict[str, optuna.Study] = {}

    def __getstate__(self):
        # Tune pickles the searcher with the experiment; Optuna's handles reopen on demand.
        state = vars(self).copy()
        state["_optuna"] = {}
        return state

    def optuna_study(self, method: str) -> optuna.Study:
        if method not in self._optuna:
            self._optuna[method] = ot = open_optuna_study(self.study, method)
            fail_unnamed_draws(ot)
        return self._optuna[method]

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        return True  # the searcher carries its own space and metric

    def _next_method(self) -> str | None:
        open_ = [m for m in self.drawn if self.drawn[m] < self.study.draws[m]]
        return min(open_, key=lambda m: self.drawn[m]) if open_ else None

    def suggest(self, trial_id: str):
        if self.next_baseline < len(self.study.baselines):
            self.next_baseline += 1
            return self.study.baselines[self.next_baseline - 1].to_config()
        method = self._next_method()
        if method is None:
            return Searcher.FINISHED
        number = self.drawn[method] + 1
        name = drawn_name(method, number)
        optuna_number, params = self._draw(method, number, name)
        self.drawn[method] = number
        self.handed[trial_id] = (method, optuna_number, name)
        pair = params.pop(PAIR_KEY, None)
        p = next(p for p in self.study.file.pairs
                 if pair is None or f"{p.teacher}->{p.student}" == pair)
        trial = PlannedTrial(method, p.teacher, p.student, self.study.search_seed, params,
                             DRAWN, name)
        return on_its_pair(self.study.file, trial).to_config()

    def _draw(self, method: str, number: int, name: str) -> tuple[int, dict[str, Any]]:
        """(Optuna's trial number, parameters) of the draw named `name`: the one optuna.db
        holds already (drawn before a kill), else a new one."""
        ot = self.optuna_study(method)
        for t in ot.get_trials(deepcopy=False):
            if t.user_attrs.get(NAME_ATTR) == name:
                return t.number, dict(t.params)
        if self.study.file.search.sampler == "grid" and \
                not ot.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            ot.enqueue_trial(grid_points(self.study, method)[number - 1])
        ot.sampler = make_sampler(self.study, method, number)
        trial = ot.ask(optuna_space(self.study.file, method))
        trial.set_user_attr(NAME_ATTR, name)
        if os.environ.get(KILL_AFTER_DRAW_ENV) == name:
            os.kill(os.getpid(), signal.SIGKILL)
        return trial.number, dict(trial.params)

    def on_trial_complete(self, trial_id: str, result: dict | None = None,
                          error: bool = False) -> None:
        if trial_id not in self.handed:
            return
        method, number, name = self.handed[trial_id]
        # The run folder's record of the end, where there is one: a trial that Tune restarts
        # after it ended returns at once, and Tune then passes on an older result.
        end = self.study.folder.end_of(name)
        tell_outcome(self.optuna_study(method), number, self.metric, end or result,
                     error and end is None)

    def save(self, checkpoint_path: str) -> None:
        state = {"next_baseline": self.next_baseline, "drawn": self.drawn,
                 "handed": self.handed}
        with open(checkpoint_path, "wb") as f:
            pickle.dump(state, f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "rb") as f:
            state = pickle.load(f)
        self.next_baseline = state["next_baseline"]
        self.drawn = state["drawn"]
        self.handed = state["handed"]


def tell_outcome(ot: optuna.Study, number: int, metric: str, result: dict | None,
                 error: bool = False) -> None:
    """Tell the study a draw's outcome, unless it was told already (the first verdict
    stands). A diverged or failed trial, or one with no finite metric, is a FAIL."""
    if ot.get_trials(deepcopy=False)[number].state != TrialState.RUNNING:
        return
    value = (result or {}).get(metric)
    if error or not result or result.get("diverged") or not isinstance(value, int | float) \
            or not math.isfinite(value):
        ot.tell(number, state=TrialState.FAIL)
    else:
        ot.tell(number, value)


def settle_draws(study: Study) -> None:
    """After a sweep: each draw Optuna still holds open gets the outcome the run folder
    recorded (a sweep killed between a trial's end and Tune's next snapshot leaves one), or
    fails when the trial never ended."""
    ends = study.folder.ends()
    for method, n in study.draws.items():
        if not n:
            continue
        ot = open_optuna_study(study, method)
        for t in ot.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            end = ends.get(t.user_attrs.get(NAME_ATTR, ""))
            tell_outcome(ot, t.number, study.metric, end, error=end is None)

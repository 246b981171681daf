"""ASHA over the drawn trials only, one set of rungs per tuned method.

Baselines and confirmations always run to their last epoch. Each tuned method's drawn trials
meet in rungs of their own: a method's configurations are ranked against each other, never
against another method's, so each gets the same epochs before ASHA (same grace period and
reduction factor) whatever the others score.
"""

from __future__ import annotations

import math
from pathlib import Path
from types import SimpleNamespace

from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, TrialScheduler

from study.plan import asha_grace_period
from study.runfolder import is_diverged
from study.runfolder.trials import FULL_LENGTH
from study.space import Space


class SearchOnlyASHA(FIFOScheduler):
    """An `ASHAScheduler` per tuned method, fed only that method's drawn trials.

    Tune does not save a scheduler with the experiment: a resumed sweep would start with empty
    rungs, keep weak trials an uninterrupted sweep stops, and spend another budget. So, once
    per process, the rungs are refilled from the drawn trials' own records in `experiment_dir`
    (result.json, keyed by Tune's trial id, which a restored trial keeps).
    """

    def __init__(self, methods: list[str], experiment_dir: str | None = None, **asha):
        super().__init__()
        self.asha = {m: ASHAScheduler(**asha) for m in methods}
        self._metric, self._mode = asha["metric"], asha["mode"]  # TrialScheduler's own
        self.metric_op = 1.0 if asha["mode"] == "max" else -1.0
        self.time_attr = asha["time_attr"]
        self.experiment_dir = experiment_dir
        self.replayed = False

    def _of(self, trial) -> ASHAScheduler | None:
        """The method's scheduler, or None for a trial that always runs to its end."""
        if trial.config.get("role") in FULL_LENGTH:
            return None
        return self.asha.get(trial.config.get("method"))

    def replay(self) -> None:
        self.replayed = True
        if self.experiment_dir is None:
            return
        from study.runfolder.tables import trial_records

        for config, results in trial_records(Path(self.experiment_dir)).values():
            asha = self.asha.get(config.get("method"))
            if config.get("role") in FULL_LENGTH or asha is None or len(asha._brackets) != 1:
                continue
            for r in results:
                value, epoch = r.get(self._metric), r.get(self.time_attr)
                if is_diverged(r) or value is None or epoch is None or "trial_id" not in r \
                        or not math.isfinite(value):
                    continue
                asha._brackets[0].on_result(SimpleNamespace(trial_id=r["trial_id"]), epoch,
                                            self.metric_op * value)

    def on_trial_add(self, tune_controller, trial):
        if not self.replayed:
            self.replay()
        if (asha := self._of(trial)) is not None:
            asha.on_trial_add(tune_controller, trial)

    def on_trial_result(self, tune_controller, trial, result):
        asha = self._of(trial)
        if asha is None or is_diverged(result):  # a diverged trial ends by itself
            return TrialScheduler.CONTINUE
        return asha.on_trial_result(tune_controller, trial, result)

    def on_trial_complete(self, tune_controller, trial, result):
        if (asha := self._of(trial)) is None:
            return
        if is_diverged(result):  # its NaN must not enter a rung's cutoff
            asha.on_trial_remove(tune_controller, trial)
        else:
            asha.on_trial_complete(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller, trial):
        if (asha := self._of(trial)) is not None:
            asha.on_trial_remove(tune_controller, trial)

    def debug_string(self) -> str:
        return "; ".join(f"{m}: {a.debug_string()}" for m, a in self.asha.items())


def make_scheduler(space: Space, experiment_dir: str | None = None):
    s = space.search
    if s.scheduler == "none":
        return None
    return SearchOnlyASHA(space.tuned_methods, experiment_dir=experiment_dir,
                          time_attr="epoch", metric=space.metric, mode=s.mode,
                          max_t=space.recipe.epochs, grace_period=asha_grace_period(space)[0],
                          reduction_factor=s.reduction_factor)

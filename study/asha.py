"""ASHA over the drawn trials only, one set of rungs per tuned method, through Tune's public
scheduler interface.

Baselines and confirming trials always run to their last epoch. Each tuned method's drawn
trials meet in rungs of their own: a method's configurations are ranked against each other,
never against another method's, so each gets the same epochs before ASHA (the same first rung
and reduction factor) whatever the others score.

The rule is asynchronous successive halving as Ray's `ASHAScheduler` applies it with one
bracket: rungs at first_rung * rf**k below the last epoch; a trial reaching a rung it has not
passed is stopped when its value is below the (1 - 1/rf) quantile of the values recorded there
before it. The rungs live here, as plain data: Tune saves no scheduler with the experiment, so
a resumed sweep refills them from the drawn trials' histories in the run folder (keyed by trial
name, which a resumed trial keeps), and each decision to stop is recorded in the run folder
(`ended/`) before Tune acts on it.
"""

from __future__ import annotations

import math

import numpy as np
from ray.tune.schedulers import FIFOScheduler, TrialScheduler

from study.runfolder import is_diverged
from study.runfolder.tables import trial_records
from study.runfolder.trials import DRAWN
from study.study_object import Study


def rung_epochs(first: int, reduction_factor: float, epochs: int) -> list[int]:
    """The rungs' epochs, highest first (as Ray's ASHA lays out one bracket; a rung at epoch
    2.5 is reached at epoch 3)."""
    count = int(math.log(epochs / first) / math.log(reduction_factor) + 1)
    return list(dict.fromkeys(math.ceil(first * reduction_factor**k - 1e-9)
                              for k in reversed(range(count))))


class Rungs:
    """One method's rungs: {epoch: {trial name: value, larger is better}}."""

    def __init__(self, epochs: list[int], reduction_factor: float):
        self.recorded: dict[int, dict[str, float]] = {e: {} for e in epochs}
        self.quantile = (1 - 1 / reduction_factor) * 100

    def judge(self, trial: str, epoch: int, value: float) -> bool:
        """Record the value at the highest rung `epoch` reaches that the trial has not passed;
        True when it falls below that rung's cutoff."""
        for rung, recorded in self.recorded.items():
            if epoch < rung or trial in recorded:
                continue
            below = bool(recorded) and value < np.nanpercentile(list(recorded.values()),
                                                                self.quantile)
            recorded[trial] = value
            return below
        return False


class DrawnTrialsASHA(FIFOScheduler):
    """ASHA for each tuned method's drawn trials; every other trial runs to its end."""

    def __init__(self, study: Study):
        super().__init__()
        search = study.file.search
        epochs = rung_epochs(study.first_rung, search.reduction_factor, study.epochs)
        self.study = study
        self.rungs = {m: Rungs(epochs, search.reduction_factor) for m in study.tuned_methods}
        self.sign = 1.0 if study.mode == "max" else -1.0
        self.replayed = False

    def _rungs_of(self, config: dict) -> Rungs | None:
        return self.rungs.get(config.get("method")) if config.get("role") == DRAWN else None

    def _value(self, result: dict) -> float | None:
        value, epoch = result.get(self.study.metric), result.get("epoch")
        if is_diverged(result) or epoch is None or not isinstance(value, int | float) \
                or not math.isfinite(value):
            return None
        return self.sign * value

    def replay(self) -> None:
        """Refill the rungs from the drawn trials' records (a resumed sweep), once."""
        self.replayed = True
        for name, (config, history) in trial_records(self.study.folder).items():
            rungs = self._rungs_of(config)
            for r in history if rungs is not None else ():
                if (value := self._value(r)) is not None:
                    rungs.judge(name, int(r["epoch"]), value)

    def on_trial_add(self, tune_controller, trial):
        if not self.replayed:
            self.replay()

    def on_trial_result(self, tune_controller, trial, result):
        rungs = self._rungs_of(trial.config)
        value = self._value(result)
        if rungs is None or value is None:  # a diverged trial ends by itself
            return TrialScheduler.CONTINUE
        epoch = int(result["epoch"])
        name = trial.config["trial_name"]
        if rungs.judge(name, epoch, value) and epoch < self.study.epochs:
            self.study.folder.record_end(name, "stopped", result)
            return TrialScheduler.STOP
        return TrialScheduler.CONTINUE

    def debug_string(self) -> str:
        return "; ".join(f"{m}: rungs at {list(r.recorded)}" for m, r in self.rungs.items())

"""A Tune callback in the sweep's process: progress lines, and the run folder's tables kept
current while trials run (so a crash leaves tables at most one trial behind, and --resume
rebuilds them exactly), and the sweep's trackers (MLflow, W&B) filled from them."""

from __future__ import annotations

import math
import time
from typing import Any

from ray.tune import Callback

from sdkd_core.cli import clock
from study.runfolder import is_diverged
from study.runfolder.tables import write_tables
from study.study_object import Study
from study.tracking import trackers

PRINT_EVERY_S = 20.0


class SweepMonitor(Callback):
    def __init__(self, study: Study, total_trials: int, earlier_errors=()):
        self.folder = study.folder
        self.errors = set(earlier_errors)  # trials of an earlier experiment that failed
        self.total = total_trials
        self.epochs = study.epochs
        self.metric = study.metric
        self.mode = study.mode
        self._reset()

    def _reset(self):
        self.start = time.monotonic()
        self.epochs_done = 0
        self.last_print = 0.0
        self.best: tuple[float, str] | None = None

    def setup(self, **info):
        self._reset()

    # ------------------------------------------------------------ events

    def on_trial_result(self, iteration, trials, trial, result, **info):
        self.epochs_done += 1
        value = result.get(self.metric)
        if value is not None and math.isfinite(value):
            better = self.best is None or (value > self.best[0] if self.mode == "max"
                                           else value < self.best[0])
            if better:
                self.best = (value, trial.config.get("trial_name", str(trial)))
        if time.monotonic() - self.last_print > PRINT_EVERY_S:
            self._write(trials)
            self._print(trials)

    def on_trial_complete(self, iteration, trials, trial, **info):
        self._write(trials)
        name, last = trial.config.get("trial_name"), trial.last_result
        if is_diverged(last):
            self._print(trials, f"{name} diverged in epoch {last['epoch']} (loss "
                                f"{last['train_loss']}); the sweep goes on")
        else:
            self._print(trials, f"{name} finished")

    def on_trial_error(self, iteration, trials, trial, **info):
        self._write(trials)
        self._print(trials, f"{trial.config.get('trial_name')} failed (see its error.txt "
                            f"in {self.folder.tune_dir})")

    def on_experiment_end(self, trials, **info):
        self._write(trials)

    # ------------------------------------------------------------ output

    def _write(self, trials) -> None:
        live = {t.config.get("trial_name"): t.status for t in trials}
        errors = self.errors | {name for name, status in live.items() if status == "ERROR"}
        configs = {t.config.get("trial_name"): t.config for t in trials}
        tables = write_tables(self.folder, live, configs, errors)
        trackers.active().sync(tables.results, tables.epochs)

    def _print(self, trials, event: str = "") -> None:
        self.last_print = time.monotonic()
        states = [t.status for t in trials]
        done = sum(s in ("TERMINATED", "ERROR") for s in states)
        running = states.count("RUNNING")
        left = self.total - done - running
        epochs_left = sum(self.epochs - _epochs_of(t) for t in trials
                          if t.status not in ("TERMINATED", "ERROR"))
        epochs_left += max(0, self.total - len(trials)) * self.epochs
        elapsed = time.monotonic() - self.start
        rate = self.epochs_done / elapsed if elapsed > 0 else 0.0
        eta = f"ETA {clock(epochs_left / rate)} (at most)" if rate > 0 else "ETA -"
        best = (f"best {self.best[1]} {self.metric} {self.best[0]:.2f}"
                if self.best else "best -")
        line = (f"[{clock(elapsed)}] trials {done}/{self.total} done, {running} running, "
                f"{left} left | {best} | {eta}")
        if event:
            line += f" | {event}"
        print(line, flush=True)


def _epochs_of(trial: Any) -> int:
    last = getattr(trial, "last_result", None) or {}
    return int(last.get("epoch", 0))

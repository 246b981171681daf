"""Whether a run was still learning when its budget ended: a cell the budget, not the method,
decided.

The rule, read from epochs.csv:

- a run's **late gain** is its score at its last epoch minus its score `window` epochs
  earlier, window = a quarter of its epochs, at least two, signed so that a gain is an
  improvement (the curve is the task's metric, accuracy, mIoU or RMSE, on the validation split
  where the run holds one, else on the test set). One epoch is too
  short a look: a single epoch's change is within the evaluation's noise, and a cosine
  schedule's last epoch runs at almost no learning rate, so its curve flattens there whatever
  more epochs would do (the demo's SHAKE runs: +7.9 and +9.3 points over their last two of
  four epochs, +1.1 and -0.9 over the last one);
- a run is **still improving** when its late gain exceeds the task's `min_gain` (`MIN_GAIN`,
  half a point, for accuracy and mIoU);
- a cell (a column's runs on one pair) is **still improving** when the mean late gain of its
  runs exceeds the larger of `min_gain` and the cell's seed-to-seed spread (the sample
  standard deviation of its runs' reported scores): more than the noise between seeds
  could explain, so more epochs would likely move the cell.

Tables mark such a cell, the claims refuse a verdict that rests on one, and the learning-curve
plot marks such runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from sdkd_core.stats import mean_std
from sdkd_core.tasks import TASKS, Task

CLASSIFICATION = TASKS["classification"]
MIN_GAIN = CLASSIFICATION.min_gain  # accuracy points: below this a late gain is noise
MARK = "†"


def rule(task: Task = CLASSIFICATION) -> str:
    """The rule in one sentence, as tables and claims print it."""
    return (f"{MARK} still improving: its runs' mean gain in {task.metric_name} over their "
            "last quarter of epochs (at least two epochs, on the validation split where held "
            f"out) exceeds both {task.min_gain:g} and the cell's seed-to-seed standard "
            "deviation; the budget, not the method, decided it: give it more epochs")


RULE = rule()


def window(epochs: int) -> int:
    """Epochs the late gain looks back over: a quarter of the run's epochs, at least two."""
    return max(2, epochs // 4)


def curve_column(epochs: pd.DataFrame, task: Task = CLASSIFICATION) -> str:
    """The score a curve follows: the task's metric on the validation split where the run
    held one, else on the test set."""
    val = f"val_{task.metric}"
    if val in epochs.columns and epochs[val].notna().any():
        return val
    return f"test_{task.metric}"


def late_gain(epochs: pd.DataFrame, trial_id: str, task: Task = CLASSIFICATION) -> float:
    """The trial's late gain (an improvement is positive, also for an RMSE); NaN for a trial
    with a single recorded epoch."""
    column = curve_column(epochs, task)
    rows = epochs[epochs["trial_id"] == trial_id].sort_values("epoch")
    values = rows[column].astype(float).tolist()
    if len(values) < 2:
        return math.nan
    back = min(window(len(values)), len(values) - 1)
    return task.sign() * (values[-1] - values[-1 - back])


def run_improving(gain: float, task: Task = CLASSIFICATION) -> bool:
    return not math.isnan(gain) and gain > task.min_gain


@dataclass(frozen=True)
class CellTrend:
    """A cell's late gains (one per run) against its seed-to-seed spread."""

    gains: tuple[float, ...]
    spread: float
    task: Task = CLASSIFICATION

    @property
    def mean_gain(self) -> float:
        known = [g for g in self.gains if not math.isnan(g)]
        return sum(known) / len(known) if known else math.nan

    @property
    def threshold(self) -> float:
        return max(self.task.min_gain, self.spread)

    @property
    def improving(self) -> bool:
        return not math.isnan(self.mean_gain) and self.mean_gain > self.threshold

    def describe(self, name: str) -> str:
        return describe(name, self.mean_gain, self.threshold, self.task)

    @staticmethod
    def describe_row(name: str, row, task: Task = CLASSIFICATION) -> str:
        """The same sentence from a comparison table's row (`late_gain`, `gain_threshold`)."""
        return describe(name, row["late_gain"], row["gain_threshold"], task)


def describe(name: str, gain: float, threshold: float, task: Task = CLASSIFICATION) -> str:
    def amount(value: float) -> str:  # "9.7 points" of a percentage, "0.042" of an RMSE
        return f"{value:.1f} points" if task.metric in task.percent else f"{value:.3g}"

    return (f"{name}'s runs were still gaining {amount(gain)} of {task.metric_name} over "
            f"their last epochs (more than {amount(threshold)}, the larger of the seeds' "
            f"spread and {task.min_gain:g}); give it more epochs")


def cell_trend(epochs: pd.DataFrame, trial_ids: list[str], finals: list[float],
               task: Task = CLASSIFICATION) -> CellTrend:
    """The trend of the cell made of `trial_ids`, whose reported scores are `finals`."""
    spread = mean_std(finals)[1] if finals else 0.0
    return CellTrend(tuple(late_gain(epochs, t, task) for t in trial_ids), spread, task)

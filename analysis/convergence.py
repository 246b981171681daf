"""Whether a run was still learning when its budget ended: a cell the budget, not the method,
decided.

The rule, read from epochs.csv:

- a run's **late gain** is its accuracy at its last epoch minus its accuracy `window` epochs
  earlier, window = a quarter of its epochs, at least two (the curve is the validation
  accuracy where the run holds a validation split, else the test accuracy). One epoch is too
  short a look: a single epoch's change is within the evaluation's noise, and a cosine
  schedule's last epoch runs at almost no learning rate, so its curve flattens there whatever
  more epochs would do (the demo's SHAKE runs: +7.9 and +9.3 points over their last two of
  four epochs, +1.1 and -0.9 over the last one);
- a run is **still improving** when its late gain exceeds `MIN_GAIN` points;
- a cell (a column's runs on one pair) is **still improving** when the mean late gain of its
  runs exceeds the larger of `MIN_GAIN` and the cell's seed-to-seed spread (the sample
  standard deviation of its runs' reported accuracies): more than the noise between seeds
  could explain, so more epochs would likely move the cell.

Tables mark such a cell, the claims refuse a verdict that rests on one, and the learning-curve
plot marks such runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import pandas as pd

from sdkd_core.stats import mean_std

MIN_GAIN = 0.5  # accuracy points: below this a late gain is noise on any budget
MARK = "†"
RULE = (f"{MARK} still improving: its runs' mean gain over their last quarter of epochs (at "
        f"least two epochs, validation accuracy where held out) exceeds both {MIN_GAIN} points "
        "and the cell's seed-to-seed standard deviation; the budget, not the method, decided "
        "it: give it more epochs")


def window(epochs: int) -> int:
    """Epochs the late gain looks back over: a quarter of the run's epochs, at least two."""
    return max(2, epochs // 4)


def curve_column(epochs: pd.DataFrame) -> str:
    """The accuracy a curve follows: validation where the run held some, else test."""
    if "val_acc" in epochs.columns and epochs["val_acc"].notna().any():
        return "val_acc"
    return "test_acc"


def late_gain(epochs: pd.DataFrame, trial_id: str) -> float:
    """The trial's late gain in points; NaN for a trial with a single recorded epoch."""
    column = curve_column(epochs)
    rows = epochs[epochs["trial_id"] == trial_id].sort_values("epoch")
    values = rows[column].astype(float).tolist()
    if len(values) < 2:
        return math.nan
    back = min(window(len(values)), len(values) - 1)
    return values[-1] - values[-1 - back]


def run_improving(gain: float) -> bool:
    return not math.isnan(gain) and gain > MIN_GAIN


@dataclass(frozen=True)
class CellTrend:
    """A cell's late gains (one per run) against its seed-to-seed spread."""

    gains: tuple[float, ...]
    spread: float

    @property
    def mean_gain(self) -> float:
        known = [g for g in self.gains if not math.isnan(g)]
        return sum(known) / len(known) if known else math.nan

    @property
    def threshold(self) -> float:
        return max(MIN_GAIN, self.spread)

    @property
    def improving(self) -> bool:
        return not math.isnan(self.mean_gain) and self.mean_gain > self.threshold

    def describe(self, name: str) -> str:
        return describe(name, self.mean_gain, self.threshold)

    @staticmethod
    def describe_row(name: str, row) -> str:
        """The same sentence from a comparison table's row (`late_gain`, `gain_threshold`)."""
        return describe(name, row["late_gain"], row["gain_threshold"])


def describe(name: str, gain: float, threshold: float) -> str:
    return (f"{name}'s runs were still gaining {gain:.1f} points over their last epochs (more "
            f"than {threshold:.1f}, the larger of the seeds' spread and {MIN_GAIN}); give it "
            "more epochs")


def cell_trend(epochs: pd.DataFrame, trial_ids: list[str], finals: list[float]) -> CellTrend:
    """The trend of the cell made of `trial_ids`, whose reported accuracies are `finals`."""
    spread = mean_std(finals)[1] if finals else 0.0
    return CellTrend(tuple(late_gain(epochs, t) for t in trial_ids), spread)

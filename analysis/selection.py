"""Which trials stand for a method: the one selection rule every table, figure and claim uses.

A tuned method is its drawn configuration with the best mean validation score of the task's
metric over its seeds (validation accuracy, mIoU, RMSE: in the task's direction; the test score
only where the run held out no validation split, and then the reports say so); an untuned one
is its baseline trials at their defaults. The test set never chooses.
"""

from __future__ import annotations

import pandas as pd

from analysis.run import Run, metric_key
from sdkd_core.tasks import TASKS, Task
from study.runfolder.trials import BASELINE, CONFIRMING, DRAWN

CLASSIFICATION = TASKS["classification"]


def selection_metric(frame: pd.DataFrame, metric: str, task: Task = CLASSIFICATION) -> str:
    """What picks the tuned configuration for a table of `metric`: the validation score of
    the task's metric (val_acc for test_acc and test_acc_best) wherever the trials measured
    one, so the test set only reports."""
    # The other metrics (top-5, pixel accuracy, AbsRel) are reported of the configuration the
    # task's metric chose: one choice, several reports.
    own = metric_key(metric) == task.metric
    if not own:
        metric = f"test_{task.metric}"
    twin = metric.replace("test_", "val_", 1)
    if twin in frame.columns and frame[twin].notna().all():
        return twin
    return metric


def tuned_config(search: pd.DataFrame, metric: str, param_cols: list[str],
                 task: Task = CLASSIFICATION) -> pd.DataFrame:
    """The trials of the drawn configuration with the best mean (all its seeds) of
    `selection_metric`, in the task's direction: validation accuracy where there is a split.

    Once the sweep has run its best configurations again on the other seeds (role `confirming`),
    only those compete: a single lucky draw would otherwise beat every seed-averaged mean.
    """
    select = selection_metric(search, metric, task)
    if not param_cols:
        return search.nlargest(1, select) if task.mode == "max" else search.nsmallest(1, select)
    keyed = search.assign(_key=search[param_cols].astype(str).agg("|".join, axis=1))
    confirmed = keyed.loc[keyed["role"] == CONFIRMING, "_key"]
    if not confirmed.empty:
        keyed = keyed[keyed["_key"].isin(set(confirmed))]
    means = keyed.groupby("_key")[select].mean()
    best = means.idxmax() if task.mode == "max" else means.idxmin()
    return keyed[keyed["_key"] == best].drop(columns="_key")


def method_params(run: Run, method: str, frame: pd.DataFrame) -> list[str]:
    """The swept keys of `method` that `frame` has columns for."""
    return [c for c in run.search_space if c in frame.columns and c.rpartition(".")[0] == method]


def on_pair(run: Run, teacher: str, student: str, metric: str | None = None) -> pd.DataFrame:
    """The pair's trials that ran every epoch and measured `metric` (the run's score)."""
    metric = metric or run.score
    done = run.completed
    done = done[(done["teacher"] == teacher) & (done["student"] == student)]
    return done[done[metric].notna()]


def tuned_trials(run: Run, method: str, teacher: str, student: str,
                 metric: str | None = None) -> pd.DataFrame:
    """`method`'s tuned configuration on the pair, one row per seed (empty if not drawn)."""
    done = on_pair(run, teacher, student, metric)
    search = done[done["role"].isin([DRAWN, CONFIRMING]) & (done["method"] == method)]
    if search.empty:
        return search
    return tuned_config(search, metric or run.score, method_params(run, method, search), run.task)


def default_trials(run: Run, method: str, teacher: str, student: str,
                   metric: str | None = None) -> pd.DataFrame:
    """`method` run as a baseline at its defaults on the pair, one row per seed."""
    done = on_pair(run, teacher, student, metric)
    return done[(done["role"] == BASELINE) & (done["method"] == method)]


def chosen_trials(run: Run, method: str, teacher: str, student: str,
                  metric: str | None = None) -> pd.DataFrame:
    """What stands for `method` on the pair: its tuned configuration where the run tuned it,
    else its defaults."""
    tuned = tuned_trials(run, method, teacher, student, metric)
    return tuned if not tuned.empty else default_trials(run, method, teacher, student, metric)

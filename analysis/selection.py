"""Which trials stand for a method: the one selection rule every table, figure and claim uses.

A tuned method is its drawn configuration with the best mean validation accuracy over its
seeds (test accuracy only where the run held out no validation split, and then the reports say
so); an untuned one is its baseline trials at their defaults. The test set never chooses.
"""

from __future__ import annotations

import pandas as pd

from analysis.run import Run
from study.runfolder.trials import BASELINE, CONFIRMING, DRAWN


def selection_metric(frame: pd.DataFrame, metric: str) -> str:
    """What picks the tuned configuration for a table of `metric`: its validation twin
    (val_acc for test_acc) wherever the trials measured one, so the test set only reports."""
    # Top-5 is reported of the configuration top-1 chose: one choice, several reports.
    twin = "val_acc" if metric == "test_top5" else metric.replace("test_", "val_", 1)
    if metric == "test_top5" and twin not in frame.columns:
        twin = "test_acc"
    if twin in frame.columns and frame[twin].notna().all():
        return twin
    return metric


def tuned_config(search: pd.DataFrame, metric: str, param_cols: list[str]) -> pd.DataFrame:
    """The trials of the drawn configuration with the best mean (all its seeds) of
    `selection_metric`: validation accuracy where there is a split.

    Once the sweep has run its best configurations again on the other seeds (role `confirming`),
    only those compete: a single lucky draw would otherwise beat every seed-averaged mean.
    """
    select = selection_metric(search, metric)
    if not param_cols:
        return search.nlargest(1, select)
    keyed = search.assign(_key=search[param_cols].astype(str).agg("|".join, axis=1))
    confirmed = keyed.loc[keyed["role"] == CONFIRMING, "_key"]
    if not confirmed.empty:
        keyed = keyed[keyed["_key"].isin(set(confirmed))]
    best = keyed.groupby("_key")[select].mean().idxmax()
    return keyed[keyed["_key"] == best].drop(columns="_key")


def method_params(run: Run, method: str, frame: pd.DataFrame) -> list[str]:
    """The swept keys of `method` that `frame` has columns for."""
    return [c for c in run.search_space if c in frame.columns and c.rpartition(".")[0] == method]


def on_pair(run: Run, teacher: str, student: str, metric: str = "test_acc") -> pd.DataFrame:
    """The pair's trials that ran every epoch and measured `metric`."""
    done = run.completed
    done = done[(done["teacher"] == teacher) & (done["student"] == student)]
    return done[done[metric].notna()]


def tuned_trials(run: Run, method: str, teacher: str, student: str,
                 metric: str = "test_acc") -> pd.DataFrame:
    """`method`'s tuned configuration on the pair, one row per seed (empty if not drawn)."""
    done = on_pair(run, teacher, student, metric)
    search = done[done["role"].isin([DRAWN, CONFIRMING]) & (done["method"] == method)]
    if search.empty:
        return search
    return tuned_config(search, metric, method_params(run, method, search))


def default_trials(run: Run, method: str, teacher: str, student: str,
                   metric: str = "test_acc") -> pd.DataFrame:
    """`method` run as a baseline at its defaults on the pair, one row per seed."""
    done = on_pair(run, teacher, student, metric)
    return done[(done["role"] == BASELINE) & (done["method"] == method)]


def chosen_trials(run: Run, method: str, teacher: str, student: str,
                  metric: str = "test_acc") -> pd.DataFrame:
    """What stands for `method` on the pair: its tuned configuration where the run tuned it,
    else its defaults."""
    tuned = tuned_trials(run, method, teacher, student, metric)
    return tuned if not tuned.empty else default_trials(run, method, teacher, student, metric)
